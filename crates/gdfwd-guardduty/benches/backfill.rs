//! End-to-end backfill throughput: fake GuardDuty over HTTP with a realistic per-call latency,
//! the real SQLite store, a sink that accepts instantly (unlimited rate), `Format::Raw`.
//! Prints findings/s; see bench/backfill/README.md for recorded numbers.
//!
//! `cargo bench -p gdfwd-guardduty --bench backfill` (env: BENCH_FINDINGS, BENCH_LATENCY_MS).

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use aws_credential_types::Credentials;
use aws_credential_types::provider::SharedCredentialsProvider;
use gdfwd_core::pipeline::Pipeline;
use gdfwd_core::sink::{EventOutcome, OutEvent, SendReport, Sink};
use gdfwd_core::{Clock, SystemClock};
use gdfwd_guardduty::{
    Backfill, BackfillConfig, ClientConfig, Endpoint, FindingQuery, GuardDutyClient,
};
use gdfwd_model::{Format, Timestamp};
use gdfwd_store_sqlite::SqliteStore;
use gdfwd_testkit_guardduty::FakeGuardDuty;
use gdfwd_testkit_guardduty::fixtures::{GenSpec, accounts, generate};

#[derive(Debug)]
struct NullSink;

#[async_trait]
impl Sink for NullSink {
    async fn send(&self, events: &[OutEvent], _: Option<Instant>) -> SendReport {
        SendReport {
            outcomes: events
                .iter()
                .map(|_| EventOutcome::Sent { request_id: None })
                .collect(),
            ..SendReport::default()
        }
    }
}

fn env_num(k: &str, d: u64) -> u64 {
    std::env::var(k)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(d)
}

fn main() {
    let n = env_num("BENCH_FINDINGS", 3_000) as usize;
    let latency = Duration::from_millis(env_num("BENCH_LATENCY_MS", 40));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let regions = ["eu-west-1", "us-east-1", "ap-southeast-2"];
        let fake = FakeGuardDuty::start().await.expect("fake");
        let start = Timestamp::now().saturating_add_millis(-10 * 86_400_000);
        let findings = generate(&GenSpec::new(n, &regions, accounts(20), start));
        fake.put_findings(findings).expect("load");
        fake.set_latency(latency);
        for (label, region_list) in [("1 region", &regions[..1]), ("3 regions", &regions[..])] {
            let dir = tempfile::tempdir().expect("tempdir");
            let clock: Arc<dyn Clock> = Arc::new(SystemClock);
            let store = Arc::new(
                SqliteStore::open(&dir.path().join("s.db"), clock, Duration::from_secs(86_400))
                    .expect("store"),
            );
            let client = Arc::new(
                GuardDutyClient::new(
                    SharedCredentialsProvider::new(Credentials::from_keys(
                        gdfwd_testkit_guardduty::TEST_ACCESS_KEY_ID,
                        gdfwd_testkit_guardduty::TEST_SECRET_ACCESS_KEY,
                        None,
                    )),
                    Endpoint::Fixed(fake.endpoint()),
                    ClientConfig {
                        max_calls_per_second: 0,
                        ..ClientConfig::default()
                    },
                )
                .expect("client"),
            );
            let pipeline = Pipeline::new(Some(store), Arc::new(NullSink), Format::Raw);
            let config = BackfillConfig::new(
                FindingQuery::new(start.saturating_add_millis(-1)),
                region_list.iter().map(|r| (*r).to_owned()).collect(),
            );
            let t = Instant::now();
            let report = Backfill::new(client, pipeline, config).run().await;
            let took = t.elapsed();
            println!(
                "backfill {label}: {} findings forwarded ({} events) in {:.2}s = {:.0} findings/s (GuardDuty latency {} ms/call, {} calls)",
                report.summary.forwarded,
                report.summary.events,
                took.as_secs_f64(),
                report.summary.forwarded as f64 / took.as_secs_f64(),
                latency.as_millis(),
                report.api.calls,
            );
        }
    });
}
