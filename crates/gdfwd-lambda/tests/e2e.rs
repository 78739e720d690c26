//! End to end, on the real `bootstrap` binary: driven through a fake Lambda Runtime API
//! (`gdfwd-testkit-lambda`), talking to moto (DynamoDB, STS, IAM, Organizations, Secrets Manager
//! via `AWS_ENDPOINT_URL`) and to the fake OpenPipeline over HTTPS with its own CA
//! (`GDFWD_CA_FILE`).
//!
//! Each test has its own management account (random id), organization, member accounts, table,
//! secret and fake server; moto is never reset. Fixture findings are re-homed into the test's
//! member accounts so `aws.account.name` is resolvable.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_organizations::types::OrganizationFeatureSet;
use gdfwd_core::SystemClock;
use gdfwd_core::store::StateStore;
use gdfwd_model::{Enrichment, Format, Item, Timestamp, map_finding, parse_value};
use gdfwd_store_dynamodb::DynamoStore;
use gdfwd_testkit_lambda::{Bootstrap, InvocationResult, RuntimeApi};
use gdfwd_testkit_moto::{self as moto, Credentials};
use gdfwd_testkit_openpipeline::{FakeOpenPipeline, Fault};
use serde_json::{Value, json};

const TOKEN: &str = "dt0c01.E2ETESTTOKEN.SECRETPART";
/// The function's timeout in `cloudformation/forwarder.yaml`. The driver enforces it as Lambda
/// does: an invocation not answered by then fails and its process is killed.
const TIMEOUT: Duration = Duration::from_secs(60);

fn bootstrap_path() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_bootstrap"))
}

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/guardduty")
}

fn fixture_lines() -> Vec<Value> {
    std::fs::read_to_string(
        fixtures().join("generated/eventbridge-60-findings-with-updates.ndjson"),
    )
    .expect("fixture")
    .lines()
    .filter(|l| !l.trim().is_empty())
    .map(|l| serde_json::from_str(l).expect("JSON line"))
    .collect()
}

/// One test's AWS side and fake Dynatrace.
struct World {
    creds: Credentials,
    sdk: aws_config::SdkConfig,
    table: String,
    secret_arn: String,
    /// Member account id → expected `aws.account.name`.
    names: HashMap<String, String>,
    members: Vec<String>,
    fake: FakeOpenPipeline,
    ca_file: PathBuf,
    _dir: tempfile::TempDir,
}

impl World {
    async fn new() -> Self {
        let admin = moto::random_account_id();
        let creds = moto::assume_account(&admin, "e2e-setup").await;
        let sdk = moto::sdk_config_with_credentials(&moto::endpoint(), creds.clone()).await;

        let org = aws_sdk_organizations::Client::new(&sdk);
        org.create_organization()
            .feature_set(OrganizationFeatureSet::All)
            .send()
            .await
            .expect("CreateOrganization");
        let mut names = HashMap::new();
        let mut members = Vec::new();
        for i in 0..3 {
            let name = moto::unique_name("Member");
            let out = org
                .create_account()
                .account_name(&name)
                .email(format!(
                    "{}@example.com",
                    moto::unique_name("m").to_lowercase()
                ))
                .send()
                .await
                .expect("CreateAccount");
            let id = out
                .create_account_status()
                .and_then(|s| s.account_id())
                .expect("account id")
                .to_owned();
            // The first member has an IAM alias (read through the alias role); the others are
            // named by Organizations.
            let expected = if i == 0 {
                let alias = moto::unique_name("alias").to_lowercase();
                let member = moto::sdk_config_with_credentials(
                    &moto::endpoint(),
                    moto::assume_account(&id, "e2e-setup").await,
                )
                .await;
                aws_sdk_iam::Client::new(&member)
                    .create_account_alias()
                    .account_alias(&alias)
                    .send()
                    .await
                    .expect("CreateAccountAlias");
                alias
            } else {
                name
            };
            names.insert(id.clone(), expected);
            members.push(id);
        }

        let table = moto::unique_name("gdfwd-e2e");
        let ddb = aws_sdk_dynamodb::Client::new(&sdk);
        gdfwd_store_dynamodb::create_table(&ddb, &table)
            .await
            .expect("create the dedup table");

        let secret = aws_sdk_secretsmanager::Client::new(&sdk)
            .create_secret()
            .name(moto::unique_name("dt-token"))
            .secret_string(json!({"DYNATRACE_OPENPIPELINE_INGEST_API_TOKEN": TOKEN}).to_string())
            .send()
            .await
            .expect("CreateSecret");
        let secret_arn = secret.arn().expect("secret ARN").to_owned();

        let fake = FakeOpenPipeline::start(TOKEN)
            .await
            .expect("fake OpenPipeline");
        let dir = tempfile::tempdir().expect("tempdir");
        let ca_file = fake.write_ca_file(dir.path()).expect("CA file");
        Self {
            creds,
            sdk,
            table,
            secret_arn,
            names,
            members,
            fake,
            ca_file,
            _dir: dir,
        }
    }

    fn env(&self, extra: &[(&str, &str)]) -> Vec<(String, String)> {
        let mut env: Vec<(String, String)> = vec![
            ("AWS_ENDPOINT_URL".into(), moto::endpoint()),
            (
                "AWS_ACCESS_KEY_ID".into(),
                self.creds.access_key_id().to_owned(),
            ),
            (
                "AWS_SECRET_ACCESS_KEY".into(),
                self.creds.secret_access_key().to_owned(),
            ),
            (
                "AWS_SESSION_TOKEN".into(),
                self.creds.session_token().unwrap_or_default().to_owned(),
            ),
            (
                "DYNATRACE_OPENPIPELINE_SECURITY_ENDPOINT".into(),
                self.fake.endpoint(),
            ),
            ("AWS_SECRET_ARN".into(), self.secret_arn.clone()),
            ("DEDUP_TABLE_NAME".into(), self.table.clone()),
            ("GDFWD_CA_FILE".into(), self.ca_file.display().to_string()),
            ("MAX_EVENTS_PER_SECOND".into(), "10000".into()),
            ("MAX_REQUESTS_PER_SECOND".into(), "1000".into()),
            ("MAX_CONCURRENCY".into(), "1".into()),
            ("LOG_LEVEL".into(), "info".into()),
            // The fixture holds archived findings, which the default filter drops; these tests
            // are about delivery (the filters have their own test, which overrides this).
            ("ARCHIVED_FINDINGS".into(), "include".into()),
        ];
        for (k, v) in extra {
            env.retain(|(name, _)| name != k);
            env.push(((*k).to_owned(), (*v).to_owned()));
        }
        env
    }

    /// The fixture events, each moved into one of this test's member accounts.
    fn events(&self) -> Vec<Value> {
        fixture_lines()
            .into_iter()
            .map(|mut e| {
                let id = e["detail"]["id"].as_str().expect("id").to_owned();
                let n = id.bytes().map(usize::from).sum::<usize>() % self.members.len();
                let account = self.members[n].clone();
                e["account"] = json!(account);
                e["detail"]["accountId"] = json!(account);
                e
            })
            .collect()
    }

    /// Ten events of distinct findings, and the same as SQS records `m0`..`m9`.
    fn ten_distinct(&self) -> (Vec<Value>, Vec<(String, String)>) {
        let mut seen = HashSet::new();
        let batch: Vec<Value> = self
            .events()
            .into_iter()
            .filter(|e| seen.insert(e["detail"]["id"].as_str().expect("id").to_owned()))
            .take(10)
            .collect();
        let records = batch
            .iter()
            .enumerate()
            .map(|(i, e)| (format!("m{i}"), e.to_string()))
            .collect();
        (batch, records)
    }

    fn store(&self) -> DynamoStore {
        DynamoStore::new(
            aws_sdk_dynamodb::Client::new(&self.sdk),
            self.table.clone(),
            Arc::new(SystemClock),
            Duration::from_secs(86_400),
        )
    }

    async fn spawn(&self, api: &RuntimeApi, extra: &[(&str, &str)]) -> Bootstrap {
        let b = Bootstrap::spawn(&bootstrap_path(), api, &self.env(extra));
        assert!(
            api.await_first_poll(Duration::from_secs(60))
                .await
                .is_some(),
            "bootstrap never asked for an invocation"
        );
        b
    }
}

/// Event ids of the versions that must be delivered, given the order events arrive in: a version
/// is delivered when it is newer than every version of its finding seen before it.
fn expected_ids(events: &[Value], format: Format) -> (HashSet<String>, usize) {
    let mut newest: HashMap<String, Timestamp> = HashMap::new();
    let mut ids = HashSet::new();
    let mut versions = 0;
    for e in events {
        for item in parse_value(e.clone()) {
            let Ok(Item::Finding(f)) = item else { continue };
            if newest.get(&f.id).is_some_and(|t| *t >= f.updated_at) {
                continue;
            }
            newest.insert(f.id.clone(), f.updated_at);
            versions += 1;
            for ev in map_finding(&f, format, &Enrichment::default()) {
                ids.insert(ev.id);
            }
        }
    }
    (ids, versions)
}

fn sqs_batch(records: &[(String, String)]) -> Value {
    json!({"Records": records.iter().map(|(id, body)| json!({
        "messageId": id,
        "receiptHandle": format!("rh-{id}"),
        "body": body,
        "attributes": {"ApproximateReceiveCount": "1"},
        "messageAttributes": {},
        "eventSource": "aws:sqs",
        "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:gdfwd-findings",
        "awsRegion": "us-east-1"
    })).collect::<Vec<_>>()})
}

fn item_failures(r: &InvocationResult) -> Vec<String> {
    let resp = r
        .response()
        .unwrap_or_else(|| panic!("expected a batch response, got {r:?}"));
    let mut v: Vec<String> = resp["batchItemFailures"]
        .as_array()
        .expect("batchItemFailures")
        .iter()
        .map(|f| {
            f["itemIdentifier"]
                .as_str()
                .expect("itemIdentifier")
                .to_owned()
        })
        .collect();
    v.sort();
    v
}

/// Waits until the EMF line of every answered invocation has been read from the process's
/// stdout: the function prints it before answering, but the pipe is read on another thread.
async fn emf_settled(b: &Bootstrap, api: &RuntimeApi) {
    let n = api.answered();
    wait_until("every answered invocation's EMF line", || {
        b.emf_lines().len() >= n
    })
    .await;
}

fn emf_sum(b: &Bootstrap, metric: &str) -> u64 {
    b.emf_lines()
        .iter()
        .map(|l| l[metric].as_u64().unwrap_or(0))
        .sum()
}

/// Polls `cond` every 5 ms for up to a minute; panics naming `what` if it never holds.
async fn wait_until(what: &str, cond: impl Fn() -> bool) {
    let until = std::time::Instant::now() + Duration::from_secs(60);
    while !cond() {
        assert!(
            std::time::Instant::now() < until,
            "waited a minute for {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn assert_no_duplicates(ids: &[String]) {
    let unique: HashSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len(), "some event was delivered twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_events_and_sqs_batches_deliver_every_version_once_with_account_names() {
    let w = World::new().await;
    let api = RuntimeApi::start().await;
    let b = w.spawn(&api, &[("PAYLOAD_FORMAT", "raw")]).await;
    let events = w.events();
    let (want, versions) = expected_ids(&events, Format::Raw);

    // The first five lines as direct EventBridge invocations.
    for e in &events[..5] {
        let r = api.invoke(e, TIMEOUT).await;
        assert!(!r.is_error(), "{r:?}");
    }
    // A direct event that is not a valid finding: the invocation fails (Lambda retries, then DLQ).
    let mut broken = events[0].clone();
    broken["detail"]
        .as_object_mut()
        .expect("detail")
        .remove("id");
    match api.invoke(&broken, TIMEOUT).await {
        InvocationResult::Error { body, .. } => {
            assert_eq!(body["errorType"], "gdfwd.Rejected");
            assert!(
                body["errorMessage"]
                    .as_str()
                    .is_some_and(|m| m.contains("id")),
                "{body}"
            );
        }
        other => panic!("{other:?}"),
    }

    // All lines again as SQS batches of 10 (the first five are redeliveries), plus malformed
    // messages in the first batch that must not affect the rest.
    let mut bad_ids = Vec::new();
    for (n, chunk) in events.chunks(10).enumerate() {
        let mut records: Vec<(String, String)> = chunk
            .iter()
            .enumerate()
            .map(|(i, e)| (format!("b{n}-m{i}"), e.to_string()))
            .collect();
        if n == 0 {
            records.insert(3, ("bad-json".into(), "{\"detail\": ".into()));
            records.push(("bad-finding".into(), broken.to_string()));
            bad_ids = vec!["bad-finding".to_owned(), "bad-json".to_owned()];
        }
        let r = api.invoke(&sqs_batch(&records), TIMEOUT).await;
        let expected: Vec<String> = if n == 0 { bad_ids.clone() } else { Vec::new() };
        assert_eq!(item_failures(&r), expected, "batch {n}");
    }

    let got = w.fake.event_ids();
    assert_no_duplicates(&got);
    let got_set: HashSet<String> = got.iter().cloned().collect();
    assert_eq!(
        got_set, want,
        "exactly the newest-so-far versions are delivered"
    );
    for ev in w.fake.events() {
        let account = ev.body["detail"]["accountId"].as_str().expect("accountId");
        assert_eq!(
            ev.body["aws.account.name"].as_str(),
            Some(w.names[account].as_str()),
            "account name of {account}"
        );
    }

    // Metrics: what was forwarded, suppressed and refused, per the EMF lines.
    emf_settled(&b, &api).await;
    assert_eq!(emf_sum(&b, "Forwarded") as usize, versions);
    assert_eq!(
        emf_sum(&b, "Invalid"),
        3,
        "the broken direct event and two bad messages"
    );
    let suppressed = emf_sum(&b, "Duplicates") + emf_sum(&b, "Stale");
    assert_eq!(suppressed as usize, events.len() + 5 - versions);
    assert!(emf_sum(&b, "EnrichCacheMisses") >= 3);
    assert!(emf_sum(&b, "EnrichCacheHits") > 0);
    assert_eq!(emf_sum(&b, "EventsSent") as usize, want.len());
    // One summary log line per invocation, JSON, no ANSI, no token.
    let summaries = || {
        b.log_records()
            .into_iter()
            .filter(|r| r["message"] == "invocation summary")
            .count()
    };
    wait_until("every invocation's summary line", || {
        summaries() >= api.answered()
    })
    .await;
    assert_eq!(summaries(), b.emf_lines().len());
    assert!(
        b.stderr_lines()
            .iter()
            .all(|l| !l.contains('\u{1b}') && !l.contains(TOKEN))
    );
    assert!(b.stdout_lines().iter().all(|l| !l.contains(TOKEN)));
    let malformed_logs = b
        .log_records()
        .into_iter()
        .filter(|r| r["message_id"] == "bad-json")
        .count();
    assert_eq!(
        malformed_logs, 1,
        "a malformed message is logged once per receive"
    );

    // The dedup table shows the redeliveries and the late older versions.
    let store = w.store();
    let first_id = events[0]["detail"]["id"].as_str().expect("id");
    let hist = store
        .history(first_id)
        .await
        .expect("history")
        .expect("recorded");
    assert!(hist.record.duplicates >= 1, "{:?}", hist.record);
    let (mut stale_seen, mut duplicates_seen) = (0, 0);
    let finding_ids: HashSet<&str> = events
        .iter()
        .map(|e| e["detail"]["id"].as_str().expect("id"))
        .collect();
    let now = gdfwd_model::Timestamp::now();
    for id in finding_ids {
        if let Some(h) = store.history(id).await.expect("history") {
            stale_seen += h.record.stale;
            duplicates_seen += h.record.duplicates;
            // What `gdfwd audit check` checks: no violation in any finding's trail.
            let violations = gdfwd_core::audit_check::check(&h, now);
            assert!(violations.is_empty(), "{violations:?} in {h:?}");
        }
    }
    // The table's counters are the final outcomes the function reported, exactly: a late older
    // version is stale, a redelivered copy of a sent version a duplicate (also one behind its
    // holder in the same batch: it is claimed once the holder is committed); an answer in
    // flight is neither (its message comes back and is counted then).
    assert_eq!(
        (stale_seen, duplicates_seen),
        (emf_sum(&b, "Stale"), emf_sum(&b, "Duplicates")),
        "in flight elsewhere: {}",
        emf_sum(&b, "InFlightElsewhere")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn during_an_outage_item_failures_name_exactly_the_unsent_messages_and_replay_delivers_them()
{
    let w = World::new().await;
    let api = RuntimeApi::start().await;
    // Two events per second, so a batch of ten spans several requests and the outage starts
    // in the middle of it.
    let b = w
        .spawn(
            &api,
            &[
                ("PAYLOAD_FORMAT", "semantic"),
                ("MAX_EVENTS_PER_SECOND", "2"),
                ("MAX_REQUESTS_PER_SECOND", "10"),
            ],
        )
        .await;
    let (batch, records) = w.ten_distinct();
    let (want, _) = expected_ids(&batch, Format::Semantic);

    // A short timeout (enforced): ten events at two per second cannot all go out before it, and
    // the function must answer before it, naming what it did not send.
    let id = api.enqueue(&sqs_batch(&records), Duration::from_secs(8));
    // Once the first request is in, Dynatrace starts answering 503.
    wait_until("the first accepted request", || {
        w.fake.counters().accepted_requests > 0
    })
    .await;
    w.fake
        .push_faults(std::iter::repeat_n(Fault::Status(503), 10_000));
    let r = api
        .await_result(&id, Duration::from_secs(60))
        .await
        .expect("answered");
    let delivered: HashSet<String> = w.fake.event_ids().into_iter().collect();
    let unsent: Vec<String> = {
        let mut v: Vec<String> = batch
            .iter()
            .zip(&records)
            .filter(|(e, _)| {
                let (ids, _) = expected_ids(std::slice::from_ref(*e), Format::Semantic);
                !ids.is_subset(&delivered)
            })
            .map(|(_, (mid, _))| mid.clone())
            .collect();
        v.sort();
        v
    };
    assert!(!unsent.is_empty(), "the outage left something unsent");
    assert!(
        unsent.len() < records.len(),
        "something was sent before the outage"
    );
    assert_eq!(item_failures(&r), unsent);
    emf_settled(&b, &api).await;
    assert!(
        emf_sum(&b, "Retries") > 0,
        "the 503s were retried before the deadline: {:?}",
        b.emf_lines()
    );

    // Dynatrace is back; SQS redelivers exactly the failed messages.
    w.fake.clear_faults();
    let replay: Vec<(String, String)> = records
        .iter()
        .filter(|(m, _)| unsent.contains(m))
        .cloned()
        .collect();
    let r = api
        .invoke(&sqs_batch(&replay), Duration::from_secs(30))
        .await;
    assert_eq!(item_failures(&r), Vec::<String>::new());
    let got = w.fake.event_ids();
    assert_no_duplicates(&got);
    assert_eq!(
        got.into_iter().collect::<HashSet<_>>(),
        want,
        "nothing lost"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_killed_mid_batch_loses_nothing_once_the_lease_has_passed() {
    let w = World::new().await;
    let api = RuntimeApi::start().await;
    let extra = [
        ("DEDUP_LEASE_SECONDS", "2"),
        ("MAX_EVENTS_PER_SECOND", "2"),
        ("ENRICH", "false"),
    ];
    let mut first = w.spawn(&api, &extra).await;
    let (batch, records) = w.ten_distinct();
    let (want, _) = expected_ids(&batch, Format::Raw);

    let id = api.enqueue(&sqs_batch(&records), TIMEOUT);
    wait_until("two accepted events", || w.fake.counters().events >= 2).await;
    first.kill().await;
    assert!(api.result(&id).is_none(), "killed before answering");
    let before = w.fake.event_ids().len();
    assert!(before < want.len(), "killed in the middle of the batch");

    // SQS redelivers after the visibility timeout, which is longer than the lease.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let api2 = RuntimeApi::start().await;
    // The redelivery's own claims get the default lease: with a 2 s lease, sending stops after
    // 1 s (half the lease), and 10 events at 2 per second take 5 s.
    let _second = w.spawn(&api2, &[("ENRICH", "false")]).await;
    let r = api2.invoke(&sqs_batch(&records), TIMEOUT).await;
    assert_eq!(item_failures(&r), Vec::<String>::new());
    let got = w.fake.event_ids();
    assert_eq!(
        got.iter().cloned().collect::<HashSet<_>>(),
        want,
        "every event arrives"
    );
    let mut counts: HashMap<&String, usize> = HashMap::new();
    for g in &got {
        *counts.entry(g).or_default() += 1;
    }
    assert!(
        counts.values().all(|&c| c <= 2),
        "at most one resend, of the batch in flight"
    );
    // The trail is exact: each version committed once (the killed process committed nothing),
    // and `gdfwd audit check`'s rules find nothing wrong.
    let store = w.store();
    let now = gdfwd_model::Timestamp::now();
    let mut sent = 0;
    for e in &batch {
        let id = e["detail"]["id"].as_str().expect("id");
        let h = store.history(id).await.expect("history").expect("record");
        let violations = gdfwd_core::audit_check::check(&h, now);
        assert!(violations.is_empty(), "{violations:?} in {h:?}");
        sent += h.record.versions_sent;
    }
    assert_eq!(sent as usize, want.len(), "one commit per version");
}

/// Runs the bootstrap to its init failure; returns the reported message.
async fn init_failure(env: Vec<(String, String)>, var: &str) -> String {
    let api = RuntimeApi::start().await;
    let mut b = Bootstrap::spawn(&bootstrap_path(), &api, &env);
    let status = b
        .wait_exit(Duration::from_secs(60))
        .await
        .expect("bootstrap exits");
    assert!(!status.success());
    let (kind, body) = api
        .init_error()
        .expect("init error reported to the Runtime API");
    assert_eq!(kind.as_deref(), Some("Runtime.ConfigError"));
    let message = body["errorMessage"].as_str().expect("errorMessage");
    assert!(message.starts_with(var), "{message}");
    assert!(
        b.stderr_lines().iter().any(|l| l.contains(var)),
        "{:?}",
        b.stderr_lines()
    );
    assert!(api.next_polls().is_empty(), "never served");
    message.to_owned()
}

fn base_env() -> Vec<(String, String)> {
    [
        (
            "DYNATRACE_OPENPIPELINE_SECURITY_ENDPOINT",
            "https://abc.live.dynatrace.com/platform/ingest/v1/security.events",
        ),
        (
            "AWS_SECRET_ARN",
            "arn:aws:secretsmanager:us-east-1:123456789012:secret:x",
        ),
        ("DEDUP_TABLE_NAME", "gdfwd-dedup"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

#[tokio::test]
async fn missing_or_bad_configuration_fails_init_naming_the_variable() {
    let mut env = base_env();
    env.retain(|(k, _)| k != "DEDUP_TABLE_NAME");
    init_failure(env, "DEDUP_TABLE_NAME").await;

    let mut env = base_env();
    env.push(("PAYLOAD_FORMAT".into(), "xml".into()));
    init_failure(env, "PAYLOAD_FORMAT").await;

    let mut env = base_env();
    env.push(("GDFWD_CA_FILE".into(), "/nonexistent/ca.pem".into()));
    init_failure(env, "GDFWD_CA_FILE").await;

    let mut env = base_env();
    env.push(("INCLUDE_TYPES".into(), "Recon:*,,Backdoor:*".into()));
    init_failure(env, "INCLUDE_TYPES").await;
}

/// The filter variables on the real function, against the fake OpenPipeline: the default drops
/// archived findings (the variable is blank, as CloudFormation passes an unset parameter), the
/// others drop what they name. What is kept arrives once; what is dropped is counted in the EMF
/// line (`Filtered`), logged with its reason, and never reaches Dynatrace or the table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_from_the_environment_drop_count_and_log_what_they_do_not_forward() {
    let w = World::new().await;
    let api = RuntimeApi::start().await;
    let b = w
        .spawn(
            &api,
            &[
                ("ARCHIVED_FINDINGS", ""),
                ("EXCLUDE_TYPES", "Execution:*"),
                ("MIN_SEVERITY", "4"),
                ("SAMPLE_FINDINGS", "exclude"),
            ],
        )
        .await;
    let mut seen = HashSet::new();
    let mut events: Vec<Value> = w
        .events()
        .into_iter()
        .filter(|e| seen.insert(e["detail"]["id"].as_str().expect("id").to_owned()))
        .collect();
    for e in events.iter_mut().step_by(7) {
        e["detail"]["service"]["additionalInfo"] = json!({"sample": true});
    }
    let keep = |e: &Value| {
        let d = &e["detail"];
        d["service"]["archived"] != true
            && d["service"]["additionalInfo"]["sample"] != true
            && !d["type"].as_str().expect("type").starts_with("Execution:")
            && d["severity"].as_f64().expect("severity") >= 4.0
    };
    let kept: Vec<Value> = events.iter().filter(|e| keep(e)).cloned().collect();
    let dropped = events.len() - kept.len();
    assert!(!kept.is_empty() && dropped > 0);
    for chunk in events.chunks(10) {
        let records: Vec<(String, String)> = chunk
            .iter()
            .enumerate()
            .map(|(i, e)| (format!("m{i}"), e.to_string()))
            .collect();
        let r = api.invoke(&sqs_batch(&records), TIMEOUT).await;
        assert_eq!(item_failures(&r), Vec::<String>::new());
    }
    let (want, versions) = expected_ids(&kept, Format::Raw);
    let got = w.fake.event_ids();
    assert_no_duplicates(&got);
    assert_eq!(got.into_iter().collect::<HashSet<_>>(), want);
    emf_settled(&b, &api).await;
    assert_eq!(emf_sum(&b, "Forwarded") as usize, versions);
    assert_eq!(emf_sum(&b, "Filtered") as usize, dropped);
    let logged: Vec<Value> = b
        .log_records()
        .into_iter()
        .filter(|r| r["message"] == "filtered: not claimed, not sent")
        .collect();
    assert_eq!(logged.len(), dropped);
    assert!(
        logged.iter().all(|r| r["reason"].is_string()
            && r["finding"].is_string()
            && r["version"].is_string())
    );
    let store = w.store();
    for e in &events {
        let id = e["detail"]["id"].as_str().expect("id");
        let recorded = store.history(id).await.expect("history").is_some();
        assert_eq!(recorded, keep(e), "{id}");
    }
}

/// The invocation's `Runtime.ConfigError`, or a panic naming what came instead.
fn config_error(r: &InvocationResult) -> String {
    match r {
        InvocationResult::Error { body, .. } => {
            assert_eq!(body["errorType"], "Runtime.ConfigError", "{body}");
            body["errorMessage"]
                .as_str()
                .expect("errorMessage")
                .to_owned()
        }
        other => panic!("expected a configuration error, got {other:?}"),
    }
}

/// What only AWS can refuse (a table that does not exist, a secret that does not exist, a secret
/// without the token's key) is checked before the first event is touched, without holding up
/// init: the invocation fails with `Runtime.ConfigError` naming the variable, nothing is sent,
/// and once the table exists the same process forwards.
#[tokio::test]
async fn a_wrong_table_or_secret_fails_invocations_naming_the_variable_until_fixed() {
    let w = World::new().await;
    let event = w.events().remove(0);
    let records = vec![("m0".to_owned(), event.to_string())];

    let missing_table = moto::unique_name("gdfwd-missing");
    let api = RuntimeApi::start().await;
    let _b = w
        .spawn(&api, &[("DEDUP_TABLE_NAME", missing_table.as_str())])
        .await;
    for _ in 0..2 {
        let m = config_error(&api.invoke(&sqs_batch(&records), TIMEOUT).await);
        assert!(m.starts_with("DEDUP_TABLE_NAME: "), "{m}");
        assert!(
            m.contains(&missing_table) && m.contains("does not exist"),
            "{m}"
        );
    }
    assert_eq!(w.fake.counters().requests, 0, "nothing sent");
    // Creating the table heals the running process: the check runs again and passes.
    gdfwd_store_dynamodb::create_table(&aws_sdk_dynamodb::Client::new(&w.sdk), &missing_table)
        .await
        .expect("create the table");
    let r = api.invoke(&sqs_batch(&records), TIMEOUT).await;
    assert_eq!(item_failures(&r), Vec::<String>::new());
    let (want, _) = expected_ids(std::slice::from_ref(&event), Format::Semantic);
    assert_eq!(w.fake.event_ids().into_iter().collect::<HashSet<_>>(), want);

    let missing_secret = format!("{}-nope", w.secret_arn);
    let api = RuntimeApi::start().await;
    let _b = w
        .spawn(&api, &[("AWS_SECRET_ARN", missing_secret.as_str())])
        .await;
    let m = config_error(&api.invoke(&sqs_batch(&records), TIMEOUT).await);
    assert!(m.starts_with("AWS_SECRET_ARN: "), "{m}");
    assert!(
        m.contains(&missing_secret) && m.contains("ResourceNotFoundException"),
        "{m}"
    );

    let api = RuntimeApi::start().await;
    let _b = w
        .spawn(&api, &[("AWS_SECRET_KEY_NAME", "NOT_THE_TOKEN_KEY")])
        .await;
    let m = config_error(&api.invoke(&sqs_batch(&records), TIMEOUT).await);
    assert!(m.starts_with("AWS_SECRET_KEY_NAME: "), "{m}");
    assert!(m.contains("NOT_THE_TOKEN_KEY"), "{m}");
    assert!(
        !m.contains(TOKEN),
        "the token never appears in an error: {m}"
    );
}

/// A token with a line break inside could never go into a header: every request would fail as a
/// refusal and every message be dead-lettered. It is a configuration error instead: the
/// invocation fails with `Runtime.ConfigError` naming the secret and the key (never the value),
/// nothing is claimed or sent, and the messages stay in the queue for after the fix.
#[tokio::test]
async fn a_token_with_a_line_break_is_a_configuration_error_not_a_refusal() {
    const BROKEN: &str = "dt0c01.BROKEN\nTOKENSECRETPART";
    let w = World::new().await;
    let secret = aws_sdk_secretsmanager::Client::new(&w.sdk)
        .create_secret()
        .name(moto::unique_name("dt-token-broken"))
        .secret_string(json!({"DYNATRACE_OPENPIPELINE_INGEST_API_TOKEN": BROKEN}).to_string())
        .send()
        .await
        .expect("CreateSecret");
    let broken_arn = secret.arn().expect("secret ARN").to_owned();
    let event = w.events().remove(0);
    let finding_id = event["detail"]["id"].as_str().expect("id").to_owned();
    let records = vec![("m0".to_owned(), event.to_string())];

    let api = RuntimeApi::start().await;
    let _b = w
        .spawn(&api, &[("AWS_SECRET_ARN", broken_arn.as_str())])
        .await;
    for _ in 0..2 {
        let m = config_error(&api.invoke(&sqs_batch(&records), TIMEOUT).await);
        assert!(m.starts_with("AWS_SECRET_KEY_NAME: "), "{m}");
        assert!(
            m.contains(&broken_arn)
                && m.contains("DYNATRACE_OPENPIPELINE_INGEST_API_TOKEN")
                && m.contains("line break"),
            "{m}"
        );
        assert!(
            !m.contains("TOKENSECRETPART") && !m.contains("dt0c01"),
            "{m}"
        );
    }
    assert_eq!(w.fake.counters().requests, 0, "nothing sent");
    assert!(
        w.store()
            .history(&finding_id)
            .await
            .expect("history")
            .is_none(),
        "nothing claimed"
    );
}

/// Dynatrace refuses a whole request for one invalid event (400). Only that event's message is
/// reported, on every receive (so SQS dead-letters it); its batch-mates are delivered once.
#[tokio::test]
async fn an_event_dynatrace_refuses_fails_only_its_own_message() {
    let w = World::new().await;
    let api = RuntimeApi::start().await;
    let _b = w.spawn(&api, &[("PAYLOAD_FORMAT", "semantic")]).await;
    let (batch, records) = w.ten_distinct();
    let (want, _) = expected_ids(&batch, Format::Semantic);
    let (refused, _) = expected_ids(std::slice::from_ref(&batch[4]), Format::Semantic);
    w.fake.refuse_events(refused.iter().cloned());

    for receive in 1..=2 {
        let r = api.invoke(&sqs_batch(&records), TIMEOUT).await;
        assert_eq!(
            item_failures(&r),
            vec!["m4".to_owned()],
            "receive {receive}"
        );
    }
    let got = w.fake.event_ids();
    assert_no_duplicates(&got);
    let got: HashSet<String> = got.into_iter().collect();
    assert_eq!(got, &want - &refused);
    assert!(w.fake.counters().refused > 0);
}

/// Distinct findings as EventBridge events in the test's member accounts: the fixture's first
/// event with `n` different finding ids.
fn distinct_events(w: &World, n: usize) -> Vec<Value> {
    let base = w.events().remove(0);
    (0..n)
        .map(|i| {
            let mut e = base.clone();
            e["detail"]["id"] = json!(format!("{}-{i:03}", moto::unique_name("f").to_lowercase()));
            e
        })
        .collect()
}

/// The template allows SQS batches of 100; the store's batched reads and writes (DynamoDB caps
/// a BatchGetItem at 100 keys and a BatchWriteItem at 25 items) must carry a full one, and a
/// redelivery of it sends nothing twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_of_100_findings_goes_through_dynamodb_once() {
    let w = World::new().await;
    let api = RuntimeApi::start().await;
    let b = w.spawn(&api, &[("PAYLOAD_FORMAT", "raw")]).await;
    let events = distinct_events(&w, 100);
    let (want, versions) = expected_ids(&events, Format::Raw);
    assert_eq!(versions, 100);
    let records: Vec<(String, String)> = events
        .iter()
        .enumerate()
        .map(|(i, e)| (format!("m{i}"), e.to_string()))
        .collect();
    for receive in 1..=2 {
        let r = api.invoke(&sqs_batch(&records), TIMEOUT).await;
        assert_eq!(item_failures(&r), Vec::<String>::new(), "receive {receive}");
    }
    let got = w.fake.event_ids();
    assert_no_duplicates(&got);
    assert_eq!(got.into_iter().collect::<HashSet<_>>(), want);
    emf_settled(&b, &api).await;
    assert_eq!(emf_sum(&b, "Forwarded"), 100);
    assert_eq!(emf_sum(&b, "Duplicates"), 100, "the redelivery");
    let store = w.store();
    for e in &events {
        let id = e["detail"]["id"].as_str().expect("id");
        let h = store.history(id).await.expect("history").expect("recorded");
        assert_eq!(h.record.duplicates, 1, "{id}: {:?}", h.record);
    }
}

/// At `LOG_LEVEL=trace` every library logs what it does (HTTP headers, SDK responses); the token
/// read from Secrets Manager must still appear nowhere in the function's output.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_from_secrets_manager_never_appears_at_trace_level() {
    let w = World::new().await;
    let api = RuntimeApi::start().await;
    let b = w.spawn(&api, &[("LOG_LEVEL", "trace")]).await;
    let (_, records) = w.ten_distinct();
    let r = api.invoke(&sqs_batch(&records), TIMEOUT).await;
    assert_eq!(item_failures(&r), Vec::<String>::new());
    emf_settled(&b, &api).await;
    assert!(
        w.fake.counters().events > 0,
        "something was sent with the token"
    );
    let lines: Vec<String> = b
        .stderr_lines()
        .into_iter()
        .chain(b.stdout_lines())
        .collect();
    assert!(
        lines.len() > 20,
        "trace logging is on: {} lines",
        lines.len()
    );
    let secret_part = TOKEN.rsplit('.').next().expect("secret part");
    let leaks: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains(TOKEN) || l.contains(secret_part))
        .collect();
    assert!(leaks.is_empty(), "the token appears in: {leaks:?}");
}
