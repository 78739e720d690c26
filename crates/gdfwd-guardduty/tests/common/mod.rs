//! Shared wiring of the backfill tests: the fake GuardDuty, a client signed with test keys, a
//! SQLite store in a temp dir, and a recording sink that can fail, stop or "die" on cue.

#![allow(dead_code)]

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use aws_credential_types::Credentials;
use aws_credential_types::provider::SharedCredentialsProvider;
use gdfwd_core::pipeline::Pipeline;
use gdfwd_core::sink::{EventOutcome, OutEvent, SendReport, Sink};
use gdfwd_core::store::StateStore;
use gdfwd_core::{Clock, ManualClock};
use gdfwd_guardduty::{ClientConfig, Endpoint, FindingQuery, GuardDutyClient};
use gdfwd_model::{Format, Timestamp};
use gdfwd_store_sqlite::SqliteStore;
use gdfwd_testkit_guardduty::fixtures::{GenSpec, accounts, generate};
use gdfwd_testkit_guardduty::{FakeGuardDuty, TEST_ACCESS_KEY_ID, TEST_SECRET_ACCESS_KEY};
use serde_json::Value;

pub const REGIONS: [&str; 3] = ["eu-west-1", "us-east-1", "ap-southeast-2"];

/// A client signing with the key the fake accepts from its start.
pub fn client(fake: &FakeGuardDuty, calls_per_second: u32) -> Arc<GuardDutyClient> {
    let creds = Credentials::from_keys(TEST_ACCESS_KEY_ID, TEST_SECRET_ACCESS_KEY, None);
    client_with(fake, calls_per_second, creds)
}

/// A client signing with `creds` (which the fake may or may not accept).
pub fn client_with(
    fake: &FakeGuardDuty,
    calls_per_second: u32,
    creds: Credentials,
) -> Arc<GuardDutyClient> {
    let creds = SharedCredentialsProvider::new(creds);
    let config = ClientConfig {
        max_calls_per_second: calls_per_second,
        max_attempts: 10,
        base_backoff: Duration::from_millis(5),
        max_backoff: Duration::from_millis(50),
        timeout: Duration::from_secs(10),
    };
    Arc::new(
        GuardDutyClient::new(creds, Endpoint::Fixed(fake.endpoint()), config)
            .expect("client builds"),
    )
}

pub fn base_time() -> Timestamp {
    // Well in the past, so every version is "settled" for checkpoints.
    Timestamp::now().saturating_add_millis(-10 * 86_400_000)
}

pub fn query() -> FindingQuery {
    FindingQuery::new(base_time().saturating_add_millis(-3_600_000))
}

pub fn regions() -> Vec<String> {
    REGIONS.iter().map(|r| (*r).to_owned()).collect()
}

/// Generates `n` findings over the three regions and `accounts_n` accounts, ties every 7.
pub async fn fake_with(n: usize, accounts_n: usize, seed: &str) -> (FakeGuardDuty, Vec<Value>) {
    let fake = FakeGuardDuty::start().await.expect("fake starts");
    let mut spec = GenSpec::new(n, &REGIONS, accounts(accounts_n), base_time());
    spec.tie_every = Some(7);
    spec.seed = seed.to_owned();
    let findings = generate(&spec);
    assert_eq!(findings.len(), n, "fixtures produce findings");
    fake.put_findings(findings.clone()).expect("findings load");
    (fake, findings)
}

pub struct Store {
    pub dir: tempfile::TempDir,
    pub clock: ManualClock,
}

impl Store {
    pub fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("tempdir"),
            clock: ManualClock::new(Timestamp::now()),
        }
    }

    /// A new handle on the same database (as a second process would have).
    pub fn open(&self) -> Arc<dyn StateStore> {
        let clock: Arc<dyn Clock> = Arc::new(self.clock.clone());
        Arc::new(
            SqliteStore::open(
                &self.dir.path().join("state.db"),
                clock,
                Duration::from_secs(90 * 86_400),
            )
            .expect("store opens"),
        )
    }
}

/// What the sink should do at its Nth `send` call (1-based).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cue {
    /// Deliver, then raise the stop flag (a Ctrl-C during that send).
    Stop(usize),
    /// Deliver, then never return (the process is killed before committing).
    Die(usize),
}

/// Records every delivered event; fails events of chosen findings; can stop or die on cue.
#[derive(Debug, Default)]
pub struct RecordingSink {
    pub events: Mutex<Vec<(String, Value)>>,
    calls: AtomicUsize,
    pub cue: Mutex<Option<Cue>>,
    pub stop: Arc<AtomicBool>,
    pub fail_findings: Mutex<HashSet<String>>,
    /// Instants of each accepted event (for rate checks).
    pub accepted_at: Mutex<Vec<Instant>>,
}

impl RecordingSink {
    pub fn event_ids(&self) -> Vec<String> {
        self.events
            .lock()
            .expect("lock")
            .iter()
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// Event id → how many times it arrived.
    pub fn id_counts(&self) -> HashMap<String, usize> {
        let mut m = HashMap::new();
        for id in self.event_ids() {
            *m.entry(id).or_insert(0) += 1;
        }
        m
    }

    /// Finding ids of delivered events.
    pub fn finding_ids(&self) -> HashSet<String> {
        self.events
            .lock()
            .expect("lock")
            .iter()
            .filter_map(|(_, body)| body["detail"]["id"].as_str().map(str::to_owned))
            .collect()
    }

    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl Sink for RecordingSink {
    async fn send(&self, events: &[OutEvent], _deadline: Option<Instant>) -> SendReport {
        let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        let fail = self.fail_findings.lock().expect("lock").clone();
        let mut outcomes = Vec::new();
        for e in events {
            let body: Value = serde_json::from_str(&e.json).expect("event is JSON");
            let fid = body["detail"]["id"].as_str().unwrap_or_default().to_owned();
            if fail.contains(&fid) {
                outcomes.push(EventOutcome::Retryable {
                    reason: "test: 503".to_owned(),
                });
                continue;
            }
            self.events.lock().expect("lock").push((e.id.clone(), body));
            self.accepted_at.lock().expect("lock").push(Instant::now());
            outcomes.push(EventOutcome::Sent { request_id: None });
        }
        let cue = *self.cue.lock().expect("lock");
        match cue {
            Some(Cue::Stop(k)) if k == n => self.stop.store(true, Ordering::SeqCst),
            Some(Cue::Die(k)) if k == n => std::future::pending::<()>().await,
            _ => {}
        }
        SendReport::one_request(outcomes)
    }
}

pub fn pipeline(store: Arc<dyn StateStore>, sink: Arc<RecordingSink>) -> Pipeline {
    Pipeline::new(Some(store), sink, Format::Raw)
}

/// The ids of the findings, as strings.
pub fn ids(findings: &[Value]) -> HashSet<String> {
    findings
        .iter()
        .filter_map(|f| f["id"].as_str().map(str::to_owned))
        .collect()
}

/// Asserts every finding arrived and no event arrived twice.
pub fn assert_exactly_once(sink: &RecordingSink, findings: &[Value]) {
    let dup: Vec<(String, usize)> = sink
        .id_counts()
        .into_iter()
        .filter(|(_, n)| *n > 1)
        .collect();
    assert!(dup.is_empty(), "events delivered more than once: {dup:?}");
    let want = ids(findings);
    let got = sink.finding_ids();
    let missing: Vec<&String> = want.difference(&got).collect();
    assert!(
        missing.is_empty(),
        "{} findings never delivered, e.g. {:?}",
        missing.len(),
        missing.iter().take(3).collect::<Vec<_>>()
    );
    assert_eq!(got.len(), want.len(), "no unexpected findings");
}
