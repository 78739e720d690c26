//! Claims per second against moto: single claims (New and Duplicate paths) and `claim_many` of 10.
//!
//! moto is not DynamoDB: it is a single Python process, so absolute numbers say little about
//! DynamoDB (where a conditional write takes a few ms and claims of different findings scale
//! out). The relative numbers show what batching buys per round trip. Run with
//! `cargo bench -p gdfwd-store-dynamodb --bench claims`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use gdfwd_core::ManualClock;
use gdfwd_core::store::{ClaimRequest, StateStore, VersionKey};
use gdfwd_model::{FindingMeta, Timestamp};
use gdfwd_store_dynamodb::{DEFAULT_RETENTION, DynamoStore, client, create_table};

const LEASE: Duration = Duration::from_secs(300);

fn req(id: String) -> ClaimRequest {
    ClaimRequest {
        key: VersionKey {
            finding_id: id,
            version: Timestamp::from_millis(1_740_000_000_000),
        },
        meta: FindingMeta {
            account_id: "111122223333".into(),
            region: "eu-west-1".into(),
            finding_type: Some("Recon:EC2/Portscan".into()),
            severity: Some(5.0),
            title: Some("Portscan".into()),
        },
    }
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let store = rt.block_on(async {
        let c = client(&gdfwd_testkit_moto::sdk_config().await);
        let table = gdfwd_testkit_moto::unique_name("gdfwd-bench");
        create_table(&c, &table).await.expect("create table");
        DynamoStore::new(
            c,
            table,
            Arc::new(ManualClock::new(Timestamp::from_millis(1_800_000_000_000))),
            DEFAULT_RETENTION,
        )
    });
    let n = AtomicU64::new(0);
    let next = || format!("f{}", n.fetch_add(1, Ordering::Relaxed));

    let mut g = c.benchmark_group("dynamodb_claims_moto");
    g.sample_size(20).measurement_time(Duration::from_secs(10));
    g.throughput(Throughput::Elements(1));
    g.bench_function("claim_new", |b| {
        b.to_async(&rt)
            .iter(|| async { store.claim(&req(next()), LEASE).await.expect("claim") });
    });
    let dup = req("dup".to_owned());
    rt.block_on(store.claim(&dup, LEASE)).expect("first claim");
    g.bench_function("claim_duplicate", |b| {
        b.to_async(&rt)
            .iter(|| async { store.claim(&dup, LEASE).await.expect("claim") });
    });
    g.throughput(Throughput::Elements(10));
    g.bench_function("claim_many_10_new", |b| {
        b.to_async(&rt).iter(|| async {
            let batch: Vec<_> = (0..10).map(|_| req(next())).collect();
            store.claim_many(&batch, LEASE).await.expect("claim_many")
        });
    });
    g.bench_function("claim_10_sequential_new", |b| {
        b.to_async(&rt).iter(|| async {
            for _ in 0..10 {
                store.claim(&req(next()), LEASE).await.expect("claim");
            }
        });
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
