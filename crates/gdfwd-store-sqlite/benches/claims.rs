//! Claims per second of the SQLite store: single claims (new and duplicate versions) and
//! `claim_many` batches of 10 and 100, each against its own database file in a temp dir.
//!
//! Run: `cargo bench -p gdfwd-store-sqlite --bench claims`. Throughput is reported per claim
//! (criterion's "elem/s"), so single and batched numbers compare directly.

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use gdfwd_core::SystemClock;
use gdfwd_core::store::{ClaimRequest, StateStore, VersionKey};
use gdfwd_model::{FindingMeta, Timestamp};
use gdfwd_store_sqlite::{DEFAULT_RETENTION, SqliteStore};

const LEASE: Duration = Duration::from_secs(300);

static SEQ: AtomicU64 = AtomicU64::new(0);

fn req(id: String) -> ClaimRequest {
    ClaimRequest {
        key: VersionKey {
            finding_id: id,
            version: Timestamp::from_millis(1_740_516_006_721),
        },
        meta: FindingMeta {
            account_id: "111122223333".into(),
            region: "eu-central-1".into(),
            finding_type: Some("Recon:EC2/Portscan".into()),
            severity: Some(5.0),
            title: Some("Unprotected port on EC2 instance is being probed".into()),
        },
    }
}

/// A finding id never claimed before (so every claim takes the insert path).
fn fresh() -> String {
    format!("f{:031x}", SEQ.fetch_add(1, Ordering::Relaxed))
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let open = |name: &str| {
        SqliteStore::open(
            &dir.path().join(name),
            Arc::new(SystemClock),
            DEFAULT_RETENTION,
        )
        .expect("open store")
    };

    let mut g = c.benchmark_group("sqlite");
    g.sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));

    let store = open("single.db");
    g.throughput(Throughput::Elements(1));
    g.bench_function("claim_new", |b| {
        b.iter(|| {
            let r = req(fresh());
            black_box(rt.block_on(store.claim(&r, LEASE)).expect("claim"))
        });
    });

    let dup = req("duplicate".into());
    rt.block_on(store.claim(&dup, LEASE)).expect("first claim");
    g.bench_function("claim_duplicate", |b| {
        b.iter(|| black_box(rt.block_on(store.claim(&dup, LEASE)).expect("claim")));
    });

    for n in [10_u64, 100] {
        let store = open(&format!("batch{n}.db"));
        g.throughput(Throughput::Elements(n));
        g.bench_function(format!("claim_many_{n}"), |b| {
            b.iter_batched(
                || (0..n).map(|_| req(fresh())).collect::<Vec<_>>(),
                |reqs| {
                    black_box(
                        rt.block_on(store.claim_many(&reqs, LEASE))
                            .expect("claim_many"),
                    )
                },
                criterion::BatchSize::SmallInput,
            );
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
