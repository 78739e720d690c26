//! A/B of this process's CPU time per finding for the store's two write strategies
//! (`with_transactions(true|false)`): claim_many of batches of 10 new findings, then a commit
//! of each, against moto (direct, no proxy, so only the store's own request machinery is
//! counted; moto runs in its own process). Usage: `ab_cpu [findings]`.
//! CPU is `utime + stime` of `/proc/self/stat` (10 ms ticks: use a few hundred findings).

use std::sync::Arc;
use std::time::Duration;

use gdfwd_core::SystemClock;
use gdfwd_core::store::{ClaimRequest, Delivery, StateStore, VersionKey};
use gdfwd_model::{FindingMeta, Timestamp};
use gdfwd_store_dynamodb::{DEFAULT_RETENTION, DynamoStore, client, create_table};

fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After the command: state is field 3, utime 14, stime 15 (1-based in proc(5)).
    let tick = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (tick(11) + tick(12)) / 100.0
}

fn req(id: String) -> ClaimRequest {
    ClaimRequest {
        key: VersionKey {
            finding_id: id,
            version: Timestamp::from_millis(1_700_000_000_000),
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

#[tokio::main]
async fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(300);
    let sdk = gdfwd_testkit_moto::sdk_config().await;
    println!("| transactions | findings | CPU ms/finding |");
    println!("|---|---|---|");
    for on in [false, true, false, true] {
        let table = gdfwd_testkit_moto::unique_name("gdfwd-ab");
        let c = client(&sdk);
        create_table(&c, &table).await.expect("create table");
        let store = DynamoStore::new(c, table, Arc::new(SystemClock), DEFAULT_RETENTION)
            .with_transactions(on);
        let reqs: Vec<_> = (0..n).map(|i| req(format!("ab-{on}-{i}"))).collect();
        let lease = Duration::from_secs(300);
        let t0 = cpu_seconds();
        for batch in reqs.chunks(10) {
            let got = store.claim_many(batch, lease).await.expect("claim_many");
            for (r, o) in batch.iter().zip(got) {
                let owner = o.owner().expect("every claim of a fresh table wins");
                store
                    .commit(&r.key, owner, &Delivery::default())
                    .await
                    .expect("commit");
            }
        }
        let cpu = cpu_seconds() - t0;
        println!("| {on} | {n} | {:.3} |", cpu * 1e3 / n as f64);
    }
}
