//! The handler without the runtime: real SQLite state store in a temp dir, an in-test sink that
//! records what it was given and fails what a test tells it to, and an in-test account resolver.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use gdfwd_core::SystemClock;
use gdfwd_core::enrich::{AccountResolver, EnrichStats};
use gdfwd_core::sink::{EventOutcome, OutEvent, SendReport, SendStats, Sink};
use gdfwd_core::store::StateStore;
use gdfwd_lambda::handler::send_margin;
use gdfwd_lambda::{
    Answer, DirectAnswer, Handled, Handler, HandlerError, Invocation, Shape, SqsBatchResponse,
};
use gdfwd_model::{Enrichment, FilterInput, FindingFilter, Format};
use gdfwd_store_sqlite::SqliteStore;
use serde_json::{Value, json};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/guardduty")
}

/// The generated EventBridge events, one per line (60 findings in 2 versions, with redeliveries).
fn eventbridge_lines() -> Vec<Value> {
    let text = std::fs::read_to_string(
        fixtures().join("generated/eventbridge-60-findings-with-updates.ndjson"),
    )
    .expect("fixture");
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("fixture line is JSON"))
        .collect()
}

fn finding_id(event: &Value) -> String {
    event["detail"]["id"]
        .as_str()
        .expect("detail.id")
        .to_owned()
}

/// Distinct (finding id, updatedAt) events, first occurrence of each, newest versions only after
/// older ones: the first `n` distinct versions in file order.
fn distinct_events(n: usize) -> Vec<Value> {
    let mut seen = HashSet::new();
    let mut ids = HashSet::new();
    let mut out = Vec::new();
    for e in eventbridge_lines() {
        let key = (finding_id(&e), e["detail"]["updatedAt"].to_string());
        // One version per finding, so "stale" never enters tests that do not ask for it.
        if ids.contains(&key.0) || !seen.insert(key.clone()) {
            continue;
        }
        ids.insert(key.0);
        out.push(e);
        if out.len() == n {
            break;
        }
    }
    out
}

fn sqs_record(id: &str, body: &str) -> Value {
    json!({
        "messageId": id,
        "receiptHandle": format!("rh-{id}"),
        "body": body,
        "attributes": {"ApproximateReceiveCount": "1", "SentTimestamp": "1700000000000"},
        "messageAttributes": {},
        "md5OfBody": "",
        "eventSource": "aws:sqs",
        "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:gdfwd-findings",
        "awsRegion": "us-east-1"
    })
}

fn sqs_batch(records: &[(String, String)]) -> Value {
    json!({"Records": records.iter().map(|(id, body)| sqs_record(id, body)).collect::<Vec<_>>()})
}

/// The handler's answer as the runtime puts it on the wire (it serialises the typed answer).
fn wire(h: &Handled) -> Result<Value, HandlerError> {
    h.response
        .clone()
        .map(|a| serde_json::to_value(a).expect("an answer always serialises"))
}

fn failures(resp: &Value) -> Vec<String> {
    let mut v: Vec<String> = resp["batchItemFailures"]
        .as_array()
        .expect("batchItemFailures array")
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

#[derive(Debug, Default)]
struct FakeSink {
    sent: Mutex<Vec<OutEvent>>,
    /// Events whose JSON contains the key get this outcome instead of being sent.
    fail: Mutex<HashMap<String, EventOutcome>>,
    deadlines: Mutex<Vec<Option<Instant>>>,
}

impl FakeSink {
    fn fail(&self, needle: &str, outcome: EventOutcome) {
        self.fail
            .lock()
            .expect("lock")
            .insert(needle.to_owned(), outcome);
    }
    fn heal(&self) {
        self.fail.lock().expect("lock").clear();
    }
    fn sent(&self) -> Vec<OutEvent> {
        self.sent.lock().expect("lock").clone()
    }
    fn sent_containing(&self, needle: &str) -> usize {
        self.sent()
            .iter()
            .filter(|e| e.json.contains(needle))
            .count()
    }
}

#[async_trait]
impl Sink for FakeSink {
    async fn send(&self, events: &[OutEvent], deadline: Option<Instant>) -> SendReport {
        self.deadlines.lock().expect("lock").push(deadline);
        let fail = self.fail.lock().expect("lock").clone();
        let mut outcomes = Vec::new();
        let mut stats = SendStats {
            requests: 1,
            ..SendStats::default()
        };
        for e in events {
            if deadline.is_some_and(|d| Instant::now() >= d) {
                outcomes.push(EventOutcome::Retryable {
                    reason: "deadline reached before sending".to_owned(),
                });
                continue;
            }
            match fail.iter().find(|(k, _)| e.json.contains(k.as_str())) {
                Some((_, o)) => outcomes.push(o.clone()),
                None => {
                    self.sent.lock().expect("lock").push(e.clone());
                    stats.events_sent += 1;
                    outcomes.push(EventOutcome::Sent { request_id: None });
                }
            }
        }
        SendReport { outcomes, stats }
    }
}

#[derive(Debug, Default)]
struct FakeResolver {
    calls: Mutex<u64>,
}

#[async_trait]
impl AccountResolver for FakeResolver {
    async fn resolve(&self, account_id: &str) -> Enrichment {
        *self.calls.lock().expect("lock") += 1;
        Enrichment {
            account_name: Some(format!("name-{account_id}")),
            account_alias: None,
            fields: Vec::new(),
        }
    }
    fn stats(&self) -> EnrichStats {
        EnrichStats {
            cache_hits: 0,
            cache_misses: *self.calls.lock().expect("lock"),
            failures: 0,
        }
    }
}

struct Rig {
    handler: Handler,
    sink: Arc<FakeSink>,
    store: Arc<SqliteStore>,
    _dir: tempfile::TempDir,
}

/// The filter of the tests that are about something else: the fixture has archived findings,
/// which the default filter drops (see `every_filter_variable_...` for the filters themselves).
fn archived_included() -> FindingFilter {
    let mut f = FindingFilter::default();
    f.apply(FilterInput::Archived, "include", "ARCHIVED_FINDINGS")
        .expect("valid");
    f
}

fn rig(format: Format) -> Rig {
    rig_with(format, archived_included())
}

fn rig_with(format: Format, filter: FindingFilter) -> Rig {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(
        SqliteStore::open(
            &dir.path().join("state.db"),
            Arc::new(SystemClock),
            Duration::from_secs(86_400),
        )
        .expect("open store"),
    );
    let sink = Arc::new(FakeSink::default());
    let handler = Handler::new(
        Some(Arc::clone(&store) as Arc<dyn StateStore>),
        Arc::clone(&sink) as Arc<dyn Sink>,
        Some(Arc::new(FakeResolver::default()) as Arc<dyn AccountResolver>),
        format,
        Duration::from_secs(300),
    )
    .with_filter(filter);
    Rig {
        handler,
        sink,
        store,
        _dir: dir,
    }
}

fn inv(id: &str) -> Invocation {
    Invocation {
        request_id: id.to_owned(),
        deadline: Some(SystemTime::now() + Duration::from_secs(60)),
    }
}

#[tokio::test]
async fn sqs_batch_forwards_good_messages_and_fails_exactly_the_bad_ones() {
    let r = rig(Format::Raw);
    let events = distinct_events(6);
    let not_a_finding = std::fs::read_to_string(
        fixtures().join("real/sumologic__NEGATIVE-cloudtrail-api-call-source-aws-guardduty.json"),
    )
    .expect("negative fixture");
    let mut invalid = events[0].clone();
    invalid["detail"]
        .as_object_mut()
        .expect("detail")
        .remove("updatedAt");
    let mut records: Vec<(String, String)> = events
        .iter()
        .enumerate()
        .map(|(i, e)| (format!("m{i}"), e.to_string()))
        .collect();
    records.push(("bad-json".to_owned(), "{not json".to_owned()));
    records.push(("bad-finding".to_owned(), invalid.to_string()));
    records.push(("other-event".to_owned(), not_a_finding));

    let h = r.handler.handle(sqs_batch(&records), &inv("r1")).await;
    assert_eq!(h.shape, Shape::SqsBatch);
    let resp = wire(&h).expect("SQS batches always answer");
    assert_eq!(failures(&resp), vec!["bad-finding", "bad-json"]);
    for e in &events {
        assert!(
            r.sink.sent_containing(&finding_id(e)) >= 1,
            "finding delivered"
        );
        let hist = r
            .store
            .history(&finding_id(e))
            .await
            .expect("history")
            .expect("recorded");
        assert_eq!(hist.record.versions_sent, 1);
    }
    let s = &h.metrics.summary;
    assert_eq!(s.received, 9);
    assert_eq!(s.forwarded, 6);
    assert_eq!(s.invalid, 2);
    assert_eq!(s.skipped, 1);
    assert_eq!(s.failed, 0);
    assert_eq!(h.metrics.batch_item_failures, 2);
    assert_eq!(s.events as usize, r.sink.sent().len());
    assert!(h.metrics.enrich.cache_misses > 0, "enrichment was asked");
    // aws.account.name came from the resolver.
    assert!(r.sink.sent().iter().all(|e| e.json.contains("name-")));
}

#[tokio::test]
async fn redelivered_batches_are_not_resent_and_bad_messages_fail_every_time() {
    let r = rig(Format::Semantic);
    let events = distinct_events(4);
    let mut records: Vec<(String, String)> = events
        .iter()
        .enumerate()
        .map(|(i, e)| (format!("m{i}"), e.to_string()))
        .collect();
    records.push(("bad".to_owned(), "42".to_owned()));
    let first = r.handler.handle(sqs_batch(&records), &inv("r1")).await;
    let sent_once = r.sink.sent().len();
    assert_eq!(failures(&wire(&first).expect("answer")), vec!["bad"]);

    let again = r.handler.handle(sqs_batch(&records), &inv("r2")).await;
    assert_eq!(failures(&wire(&again).expect("answer")), vec!["bad"]);
    assert_eq!(r.sink.sent().len(), sent_once, "nothing resent");
    assert_eq!(again.metrics.summary.duplicates, 4);
    assert_eq!(again.metrics.summary.forwarded, 0);
    assert_eq!(again.metrics.summary.invalid, 1);
    for e in &events {
        let hist = r
            .store
            .history(&finding_id(e))
            .await
            .expect("history")
            .expect("recorded");
        assert_eq!(hist.record.duplicates, 1);
    }
}

#[tokio::test]
async fn retryable_sink_failures_name_exactly_the_unsent_messages_and_replay_delivers_them() {
    let r = rig(Format::Raw);
    let events = distinct_events(8);
    let records: Vec<(String, String)> = events
        .iter()
        .enumerate()
        .map(|(i, e)| (format!("m{i}"), e.to_string()))
        .collect();
    let down: Vec<usize> = vec![1, 4, 7];
    for &i in &down {
        r.sink.fail(
            &finding_id(&events[i]),
            EventOutcome::Retryable {
                reason: "503".to_owned(),
            },
        );
    }
    let h = r.handler.handle(sqs_batch(&records), &inv("r1")).await;
    let failed = failures(&wire(&h).expect("answer"));
    assert_eq!(failed, vec!["m1", "m4", "m7"]);
    assert_eq!(h.metrics.summary.failed, 3);
    assert_eq!(h.metrics.summary.forwarded, 5);

    // SQS redelivers only the failed messages; Dynatrace is back.
    r.sink.heal();
    let replay: Vec<(String, String)> = records
        .iter()
        .filter(|(id, _)| failed.contains(id))
        .cloned()
        .collect();
    let h = r.handler.handle(sqs_batch(&replay), &inv("r2")).await;
    assert_eq!(failures(&wire(&h).expect("answer")), Vec::<String>::new());
    assert_eq!(h.metrics.summary.forwarded, 3);
    for e in &events {
        assert!(
            r.sink.sent_containing(&finding_id(e)) >= 1,
            "every finding delivered"
        );
    }
    let ids: Vec<String> = r.sink.sent().iter().map(|e| e.id.clone()).collect();
    let unique: HashSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len(), "no event delivered twice");
}

#[tokio::test]
async fn definitive_rejections_fail_the_message_on_every_receive_without_resending_the_rest() {
    let r = rig(Format::Raw);
    let events = distinct_events(3);
    let records: Vec<(String, String)> = events
        .iter()
        .enumerate()
        .map(|(i, e)| (format!("m{i}"), e.to_string()))
        .collect();
    r.sink.fail(
        &finding_id(&events[2]),
        EventOutcome::Definitive {
            reason: "400 Bad Request".to_owned(),
        },
    );
    let mut sent_after_first = None;
    for n in 0..3 {
        let h = r
            .handler
            .handle(sqs_batch(&records), &inv(&format!("r{n}")))
            .await;
        assert_eq!(
            failures(&wire(&h).expect("answer")),
            vec!["m2"],
            "receive {n}"
        );
        assert_eq!(h.metrics.summary.failed, 1);
        let sent = r.sink.sent().len();
        assert_eq!(
            *sent_after_first.get_or_insert(sent),
            sent,
            "the delivered messages are not resent"
        );
    }
    assert!(r.sink.sent_containing(&finding_id(&events[0])) >= 1);
    let hist = r
        .store
        .history(&finding_id(&events[2]))
        .await
        .expect("history")
        .expect("recorded");
    assert_eq!(hist.record.versions_sent, 0);
    assert!(
        hist.record
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("400")),
        "{:?}",
        hist.record.last_error
    );
}

#[tokio::test]
async fn direct_events_succeed_skip_or_fail_so_lambda_retries_them() {
    let r = rig(Format::Raw);
    let events = distinct_events(3);

    let h = r.handler.handle(events[0].clone(), &inv("d1")).await;
    assert_eq!(h.shape, Shape::Direct);
    let ok = wire(&h).expect("delivered");
    assert_eq!(ok["forwarded"], 1);
    // Redelivered by EventBridge: a duplicate, still a success.
    let h = r.handler.handle(events[0].clone(), &inv("d2")).await;
    assert_eq!(wire(&h).expect("duplicate is fine")["duplicates"], 1);

    let negative: Value = serde_json::from_str(
        &std::fs::read_to_string(
            fixtures()
                .join("real/sumologic__NEGATIVE-cloudtrail-api-call-source-aws-guardduty.json"),
        )
        .expect("fixture"),
    )
    .expect("json");
    let h = r.handler.handle(negative, &inv("d3")).await;
    assert_eq!(wire(&h).expect("skipping is a success")["skipped"], 1);
    assert_eq!(h.metrics.summary.skipped, 1);

    let h = r.handler.handle(json!({"detail-type": "GuardDuty Finding", "source": "aws.guardduty", "detail": {"id": "x"}}), &inv("d4")).await;
    assert!(
        matches!(h.response, Err(HandlerError::Rejected { .. })),
        "{:?}",
        h.response
    );
    assert_eq!(h.metrics.summary.invalid, 1);

    r.sink.fail(
        &finding_id(&events[1]),
        EventOutcome::Retryable {
            reason: "503".to_owned(),
        },
    );
    let h = r.handler.handle(events[1].clone(), &inv("d5")).await;
    match &h.response {
        Err(
            e @ HandlerError::Retryable {
                failed: 1,
                total: 1,
                ..
            },
        ) => assert_eq!(e.error_type(), "gdfwd.Retryable"),
        other => panic!("{other:?}"),
    }
    r.sink.heal();
    let h = r.handler.handle(events[1].clone(), &inv("d6")).await;
    assert_eq!(wire(&h).expect("retry delivers")["forwarded"], 1);

    r.sink.fail(
        &finding_id(&events[2]),
        EventOutcome::Definitive {
            reason: "403".to_owned(),
        },
    );
    let h = r.handler.handle(events[2].clone(), &inv("d7")).await;
    assert!(
        matches!(h.response, Err(HandlerError::Rejected { .. })),
        "{:?}",
        h.response
    );
}

#[tokio::test]
async fn sending_stops_before_the_deadline_and_unsent_findings_are_released_for_retry() {
    let r = rig(Format::Raw);
    let events = distinct_events(5);
    let records: Vec<(String, String)> = events
        .iter()
        .enumerate()
        .map(|(i, e)| (format!("m{i}"), e.to_string()))
        .collect();
    // 200 ms left: less than the minimum margin, so the send deadline has already passed.
    let nearly_over = Invocation {
        request_id: "late".to_owned(),
        deadline: Some(SystemTime::now() + Duration::from_millis(200)),
    };
    let h = r.handler.handle(sqs_batch(&records), &nearly_over).await;
    assert_eq!(failures(&wire(&h).expect("answer")).len(), 5);
    assert!(r.sink.sent().is_empty());
    let handed = r.sink.deadlines.lock().expect("lock").clone();
    assert!(
        handed.iter().all(Option::is_some),
        "the sink got a deadline"
    );

    // Released, not left under a lease: the redelivery sends them at once.
    let h = r.handler.handle(sqs_batch(&records), &inv("again")).await;
    assert_eq!(failures(&wire(&h).expect("answer")), Vec::<String>::new());
    assert_eq!(h.metrics.summary.forwarded, 5);
}

#[test]
fn the_send_margin_is_a_tenth_of_the_time_left_within_bounds() {
    assert_eq!(send_margin(Duration::from_secs(60)), Duration::from_secs(5));
    assert_eq!(send_margin(Duration::from_secs(20)), Duration::from_secs(2));
    assert_eq!(
        send_margin(Duration::from_secs(1)),
        Duration::from_millis(500)
    );
    assert_eq!(send_margin(Duration::ZERO), Duration::from_millis(500));
}

#[tokio::test]
async fn payloads_that_are_neither_shape_are_rejected_not_crashed_on() {
    let r = rig(Format::Raw);
    for payload in [
        json!(null),
        json!("text"),
        json!({"Records": "nope"}),
        json!([1, 2]),
    ] {
        let h = r.handler.handle(payload.clone(), &inv("odd")).await;
        assert!(
            matches!(h.response, Err(HandlerError::Rejected { .. })),
            "{payload}: {:?}",
            h.response
        );
    }
    // An SQS record without a body or message id cannot be retried; the rest still goes through.
    let events = distinct_events(1);
    let batch = json!({"Records": [
        {"eventSource": "aws:sqs", "messageId": "nobody"},
        {"eventSource": "aws:sqs", "body": "{}"},
        sqs_record("good", &events[0].to_string()),
    ]});
    let h = r.handler.handle(batch, &inv("mixed")).await;
    assert_eq!(failures(&wire(&h).expect("answer")), vec!["nobody"]);
    assert_eq!(h.metrics.summary.forwarded, 1);
    assert_eq!(h.metrics.summary.invalid, 2);
}

/// A finding another invocation is still sending (its claim's lease is live) is not reported as
/// done: its SQS message fails so SQS redelivers it, and a direct event fails retryably. If that
/// other invocation died, the redelivery sends it once its claim is gone. A second copy of a
/// version in the same batch follows the first.
#[tokio::test]
async fn a_finding_in_flight_elsewhere_is_retried_not_dropped() {
    let r = rig(Format::Raw);
    let events = distinct_events(3);
    let held = match gdfwd_model::parse_value(events[0].clone()).pop() {
        Some(Ok(gdfwd_model::Item::Finding(f))) => gdfwd_core::pipeline::claim_request(&f),
        other => panic!("fixture is not a finding: {other:?}"),
    };
    // Another sender holds the first finding.
    let holder = r
        .store
        .claim(&held, Duration::from_secs(300))
        .await
        .expect("claim")
        .owner()
        .expect("the other sender's claim wins");
    let id0 = finding_id(&events[0]);
    let mut records: Vec<(String, String)> = events
        .iter()
        .enumerate()
        .map(|(i, e)| (format!("m{i}"), e.to_string()))
        .collect();
    records.push(("m1-copy".to_owned(), events[1].to_string()));
    let h = r.handler.handle(sqs_batch(&records), &inv("f1")).await;
    assert_eq!(failures(&wire(&h).expect("answer")), vec!["m0"]);
    assert_eq!(h.metrics.summary.in_flight, 1);
    assert_eq!(h.metrics.summary.forwarded, 2);
    assert_eq!(r.sink.sent_containing(&id0), 0, "held elsewhere: not sent");
    assert_eq!(
        r.sink.sent_containing(&finding_id(&events[1])),
        1,
        "the copy is not sent twice"
    );

    let h = r.handler.handle(events[0].clone(), &inv("f2")).await;
    match &h.response {
        Err(HandlerError::Retryable { reason, .. }) => {
            assert!(reason.contains("another sender"), "{reason}");
        }
        other => panic!("a direct event in flight elsewhere must be retried: {other:?}"),
    }

    // The holder gave up: the redelivered message is sent.
    r.store
        .release(&held.key, holder, "holder failed")
        .await
        .expect("release");
    let h = r.handler.handle(sqs_batch(&records[..1]), &inv("f3")).await;
    assert!(failures(&wire(&h).expect("answer")).is_empty());
    assert_eq!(r.sink.sent_containing(&id0), 1);
}

/// The Organizations answers behind the account fields test: the first account is tagged, the
/// second untagged, any other cannot be looked up.
#[derive(Debug)]
struct TaggedLookup {
    tagged: String,
    untagged: String,
}

#[async_trait]
impl gdfwd_core::enrich::AccountLookup for TaggedLookup {
    async fn lookup(
        &self,
        account_id: &str,
    ) -> Result<gdfwd_core::enrich::AccountInfo, gdfwd_core::error::LookupError> {
        let tags = if account_id == self.tagged {
            [("dt-security-context".to_owned(), "payments".to_owned())].into()
        } else if account_id == self.untagged {
            Default::default()
        } else {
            return Err(gdfwd_core::error::LookupError {
                account_id: account_id.to_owned(),
                message: "AccessDenied".to_owned(),
            });
        };
        Ok(gdfwd_core::enrich::AccountInfo {
            org_name: Some(format!("org-{account_id}")),
            tags: Some(tags),
            looked_up: gdfwd_core::account_fields::ContextNeeds {
                tags: true,
                ..Default::default()
            },
            ..Default::default()
        })
    }
}

/// `ACCOUNT_FIELDS` as the function reads it at init, through the handler: every event of the
/// tagged account carries the field, the untagged and the unresolvable accounts' events do not
/// (and are forwarded all the same, the failed lookup counted).
#[tokio::test]
async fn account_fields_from_the_environment_reach_every_event_of_the_account() {
    let vars: HashMap<String, String> = [
        (
            gdfwd_lambda::config::ENDPOINT,
            "https://abc12345.live.dynatrace.com/platform/ingest/v1/security.events",
        ),
        (
            gdfwd_lambda::config::SECRET_ARN,
            "arn:aws:secretsmanager:us-east-1:123456789012:secret:t-AbCdEf",
        ),
        (gdfwd_lambda::config::DEDUP_TABLE_NAME, "gdfwd-dedup"),
        (
            gdfwd_lambda::config::ACCOUNT_FIELDS,
            "dt.security_context=tag:dt-security-context",
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let config = gdfwd_lambda::config::Config::from_vars(&vars).expect("config");

    let events = distinct_events(9);
    let accounts: Vec<String> = events
        .iter()
        .map(|e| {
            e["detail"]["accountId"]
                .as_str()
                .expect("account")
                .to_owned()
        })
        .collect();
    let distinct: HashSet<&String> = accounts.iter().collect();
    assert!(distinct.len() >= 3, "the fixture has several accounts");
    let tagged = accounts[0].clone();
    let untagged = accounts
        .iter()
        .find(|a| **a != tagged)
        .expect("a second account")
        .clone();
    let resolver = gdfwd_core::enrich::CachingResolver::new(
        Arc::new(TaggedLookup {
            tagged: tagged.clone(),
            untagged: untagged.clone(),
        }),
        None,
        Arc::new(SystemClock),
        gdfwd_core::enrich::CacheConfig::default(),
    )
    .with_account_fields(config.account_fields.clone());

    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(
        SqliteStore::open(
            &dir.path().join("state.db"),
            Arc::new(SystemClock),
            Duration::from_secs(86_400),
        )
        .expect("open store"),
    );
    let sink = Arc::new(FakeSink::default());
    let handler = Handler::new(
        Some(store as Arc<dyn StateStore>),
        Arc::clone(&sink) as Arc<dyn Sink>,
        Some(Arc::new(resolver) as Arc<dyn AccountResolver>),
        Format::Semantic,
        Duration::from_secs(300),
    )
    .with_filter(archived_included());
    let records: Vec<(String, String)> = events
        .iter()
        .enumerate()
        .map(|(i, e)| (format!("m{i}"), e.to_string()))
        .collect();
    let h = handler.handle(sqs_batch(&records), &inv("af")).await;
    assert!(failures(&wire(&h).expect("answer")).is_empty());
    assert_eq!(h.metrics.summary.forwarded, 9);

    let sent: Vec<Value> = sink
        .sent()
        .iter()
        .map(|e| serde_json::from_str(&e.json).expect("event json"))
        .collect();
    assert_eq!(sent.len() as u64, h.metrics.summary.events);
    let mut of_tagged = 0;
    for e in &sent {
        let account = e["aws.account.id"].as_str().expect("account id");
        if account == tagged {
            assert_eq!(e["dt.security_context"], "payments", "{e}");
            of_tagged += 1;
        } else {
            assert!(e.get("dt.security_context").is_none(), "{e}");
        }
    }
    assert!(of_tagged > 0);
    let unresolvable = distinct.len() as u64 - 2;
    assert_eq!(h.metrics.enrich.failures, unresolvable);
}

/// The function's environment for `vars` (the required variables set), as read at init.
fn config_with(vars: &[(&str, &str)]) -> gdfwd_lambda::config::Config {
    let mut all: HashMap<String, String> = [
        (
            gdfwd_lambda::config::ENDPOINT,
            "https://abc12345.live.dynatrace.com/platform/ingest/v1/security.events",
        ),
        (
            gdfwd_lambda::config::SECRET_ARN,
            "arn:aws:secretsmanager:us-east-1:123456789012:secret:t-AbCdEf",
        ),
        (gdfwd_lambda::config::DEDUP_TABLE_NAME, "gdfwd-dedup"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    for (k, v) in vars {
        all.insert((*k).to_owned(), (*v).to_owned());
    }
    gdfwd_lambda::config::Config::from_vars(&all).expect("config")
}

/// Every filter variable, as the function reads it at init, through the handler: what the filter
/// keeps is forwarded; what it drops is counted as filtered (summary and EMF `Filtered`), never
/// claimed (no store record) nor sent, and its message is not failed (SQS deletes it). The
/// expectation is computed here from the fixture's JSON, independently of the filter code.
#[tokio::test]
async fn every_filter_variable_forwards_what_it_keeps_and_counts_what_it_drops() {
    let mut events = distinct_events(60);
    assert_eq!(events.len(), 60);
    // Every fifth finding a GuardDuty sample finding (the fixture has none).
    for e in events.iter_mut().step_by(5) {
        e["detail"]["service"]["additionalInfo"] = json!({"sample": true});
    }
    let d = |e: &Value| e["detail"].clone();
    let first_account = d(&events[0])["accountId"]
        .as_str()
        .expect("account")
        .to_owned();
    let archived = |e: &Value| d(e)["service"]["archived"] == true;
    let kind = |e: &Value, k: &str| -> String {
        let v = d(e);
        match k {
            "type" => v["type"].as_str().unwrap_or_default().to_owned(),
            "account" => v["accountId"].as_str().unwrap_or_default().to_owned(),
            "region" => v["region"].as_str().unwrap_or_default().to_owned(),
            _ => v["resource"]["resourceType"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        }
    };
    type Keep<'a> = Box<dyn Fn(&Value) -> bool + 'a>;
    let cases: Vec<(Vec<(&str, &str)>, Keep)> = vec![
        // The defaults: archived dropped, samples kept.
        (vec![], Box::new(|e| !archived(e))),
        (vec![("ARCHIVED_FINDINGS", "include")], Box::new(|_| true)),
        (
            vec![("SAMPLE_FINDINGS", "exclude")],
            Box::new(|e| !archived(e) && d(e)["service"]["additionalInfo"]["sample"] != true),
        ),
        (
            vec![("INCLUDE_TYPES", "Backdoor:*,*:Kubernetes/*")],
            Box::new(|e| {
                let t = kind(e, "type");
                !archived(e) && (t.starts_with("Backdoor:") || t.contains(":Kubernetes/"))
            }),
        ),
        (
            vec![("EXCLUDE_TYPES", "Execution:*")],
            Box::new(|e| !archived(e) && !kind(e, "type").starts_with("Execution:")),
        ),
        (
            vec![("INCLUDE_ACCOUNTS", first_account.as_str())],
            Box::new(|e| !archived(e) && kind(e, "account") == first_account),
        ),
        (
            vec![("EXCLUDE_ACCOUNTS", first_account.as_str())],
            Box::new(|e| !archived(e) && kind(e, "account") != first_account),
        ),
        (
            vec![("INCLUDE_REGIONS", "eu-west-1,us-east-1")],
            Box::new(|e| {
                !archived(e) && ["eu-west-1", "us-east-1"].contains(&kind(e, "region").as_str())
            }),
        ),
        (
            vec![("EXCLUDE_REGIONS", "us-west-2")],
            Box::new(|e| !archived(e) && kind(e, "region") != "us-west-2"),
        ),
        (
            vec![("INCLUDE_RESOURCE_TYPES", "Instance,Container")],
            Box::new(|e| {
                !archived(e) && ["Instance", "Container"].contains(&kind(e, "resource").as_str())
            }),
        ),
        (
            vec![("EXCLUDE_RESOURCE_TYPES", "EKSCluster")],
            Box::new(|e| !archived(e) && kind(e, "resource") != "EKSCluster"),
        ),
        (
            vec![("MIN_SEVERITY", "7")],
            Box::new(|e| !archived(e) && d(e)["severity"].as_f64().is_some_and(|s| s >= 7.0)),
        ),
        // Include within a kind, AND across kinds, exclude winning.
        (
            vec![
                ("ARCHIVED_FINDINGS", "include"),
                ("INCLUDE_TYPES", "Backdoor:*,Execution:*"),
                ("EXCLUDE_TYPES", "Execution:Runtime/*"),
                ("INCLUDE_REGIONS", "us-west-2,us-east-1"),
            ],
            Box::new(|e| {
                let t = kind(e, "type");
                (t.starts_with("Backdoor:") || t.starts_with("Execution:"))
                    && !t.starts_with("Execution:Runtime/")
                    && ["us-west-2", "us-east-1"].contains(&kind(e, "region").as_str())
            }),
        ),
    ];
    let records: Vec<(String, String)> = events
        .iter()
        .enumerate()
        .map(|(i, e)| (format!("m{i}"), e.to_string()))
        .collect();
    for (vars, keep) in &cases {
        let config = config_with(vars);
        let r = rig_with(Format::Raw, config.filter.clone());
        let h = r.handler.handle(sqs_batch(&records), &inv("f")).await;
        assert!(failures(&wire(&h).expect("answer")).is_empty(), "{vars:?}");
        let kept: Vec<&Value> = events.iter().filter(|e| keep(e)).collect();
        let dropped = events.len() - kept.len();
        assert!(!kept.is_empty(), "{vars:?} keeps something");
        if !vars.contains(&("ARCHIVED_FINDINGS", "include")) || vars.len() > 1 {
            assert!(dropped > 0, "{vars:?} drops something");
        }
        let s = &h.metrics.summary;
        assert_eq!(s.forwarded as usize, kept.len(), "{vars:?}");
        assert_eq!(s.filtered as usize, dropped, "{vars:?}");
        assert_eq!(s.received as usize, events.len(), "{vars:?}");
        let emf = h.metrics.emf("fn", "f", "sqs", 0);
        assert_eq!(emf["Filtered"].as_u64(), Some(dropped as u64), "{vars:?}");
        for e in &events {
            let id = finding_id(e);
            let recorded = r.store.history(&id).await.expect("history").is_some();
            let sent = r.sink.sent_containing(&id) > 0;
            assert_eq!(recorded, keep(e), "{vars:?}: {id} recorded");
            assert_eq!(sent, keep(e), "{vars:?}: {id} sent");
        }
    }

    // A direct event the filter drops is a success (nothing to retry), counted.
    let r = rig_with(Format::Raw, config_with(&[]).filter);
    let archived_event = events
        .iter()
        .find(|e| archived(e))
        .expect("an archived finding");
    let h = r.handler.handle((*archived_event).clone(), &inv("d")).await;
    let answer = wire(&h).expect("filtered is not an error");
    assert_eq!(
        (answer["filtered"].as_u64(), answer["forwarded"].as_u64()),
        (Some(1), Some(0))
    );
    assert!(r.sink.sent().is_empty());
}

/// The answers are typed now; the bytes the runtime sends must stay what the hand-built JSON
/// values were: `{"batchItemFailures":[{"itemIdentifier":…}]}` and the direct summary with its
/// keys in this order.
#[test]
fn answers_serialise_to_the_json_the_triggers_expect() {
    let sqs = Answer::Sqs(SqsBatchResponse {
        batch_item_failures: vec![gdfwd_lambda::handler::BatchItemFailure {
            item_identifier: "m1".to_owned(),
        }],
    });
    assert_eq!(
        serde_json::to_string(&sqs).expect("serialises"),
        r#"{"batchItemFailures":[{"itemIdentifier":"m1"}]}"#
    );
    assert_eq!(
        serde_json::to_string(&Answer::Sqs(SqsBatchResponse::default())).expect("serialises"),
        r#"{"batchItemFailures":[]}"#
    );
    let direct = Answer::Direct(DirectAnswer {
        forwarded: 1,
        duplicates: 2,
        stale: 3,
        filtered: 4,
        skipped: 5,
    });
    assert_eq!(
        serde_json::to_string(&direct).expect("serialises"),
        r#"{"forwarded":1,"duplicates":2,"stale":3,"filtered":4,"skipped":5}"#
    );
}
