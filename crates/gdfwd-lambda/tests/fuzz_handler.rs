//! Structured fuzzing of the handler on stable Rust (proptest, a bounded number of cases so CI
//! time stays fixed; `PROPTEST_CASES=5000` for a longer local run): arbitrary SQS batches and
//! direct EventBridge payloads, built from arbitrary JSON and from mutated real events, go into
//! the handler without the runtime (a real SQLite store, a sink that accepts, retries or refuses
//! as the case says).
//!
//! Properties, for every payload: no panic; every input record is counted exactly once as
//! forwarded, duplicate, in flight, stale, skipped, invalid or failed (so `received` is their sum,
//! and at least one per SQS record); the SQS answer names only messages of the batch, each once,
//! and none when nothing went wrong; the answer's size is bounded by the input's.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use gdfwd_core::SystemClock;
use gdfwd_core::pipeline::Summary;
use gdfwd_core::sink::{EventOutcome, OutEvent, SendReport, Sink};
use gdfwd_core::store::StateStore;
use gdfwd_lambda::{Handler, Invocation, Shape};
use gdfwd_model::Format;
use gdfwd_store_sqlite::SqliteStore;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use serde_json::{Map, Value, json};

/// What the sink does with the events of one case.
#[derive(Debug, Clone, Copy)]
enum SinkMode {
    Accept,
    Retryable,
    Refuse,
    /// Every other event refused.
    Alternate,
}

#[derive(Debug)]
struct ModeSink(std::sync::Mutex<SinkMode>);

#[async_trait]
impl Sink for ModeSink {
    async fn send(&self, events: &[OutEvent], _deadline: Option<Instant>) -> SendReport {
        let mode = *self.0.lock().expect("lock");
        let outcomes: Vec<EventOutcome> = (0..events.len())
            .map(|i| match mode {
                SinkMode::Accept => EventOutcome::Sent { request_id: None },
                SinkMode::Retryable => EventOutcome::Retryable {
                    reason: "fuzz: later".into(),
                },
                SinkMode::Refuse => EventOutcome::Definitive {
                    reason: "fuzz: refused".into(),
                },
                SinkMode::Alternate if i % 2 == 0 => EventOutcome::Definitive {
                    reason: "fuzz: refused".into(),
                },
                SinkMode::Alternate => EventOutcome::Sent { request_id: None },
            })
            .collect();
        SendReport::one_request(outcomes)
    }
}

/// The real EventBridge events of the shared fixtures (60 findings, with updates).
fn real_events() -> Vec<Value> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(
        "../../tests/fixtures/guardduty/generated/eventbridge-60-findings-with-updates.ndjson",
    );
    std::fs::read_to_string(path)
        .expect("fixture")
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect()
}

/// Arbitrary JSON, with keys drawn partly from the names the handler and the parser look at.
fn arb_json() -> impl Strategy<Value = Value> {
    let key = prop_oneof![
        Just("Records".to_owned()),
        Just("messageId".to_owned()),
        Just("body".to_owned()),
        Just("eventSource".to_owned()),
        Just("detail".to_owned()),
        Just("detail-type".to_owned()),
        Just("source".to_owned()),
        Just("id".to_owned()),
        Just("accountId".to_owned()),
        Just("region".to_owned()),
        Just("updatedAt".to_owned()),
        Just("type".to_owned()),
        Just("severity".to_owned()),
        Just("resource".to_owned()),
        Just("findings".to_owned()),
        ".{0,8}",
    ];
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        ".{0,16}".prop_map(Value::from),
        prop_oneof![
            Just("aws:sqs"),
            Just("aws.guardduty"),
            Just("GuardDuty Finding"),
            Just("2025-02-25T20:40:06.721Z"),
            Just("123456789012"),
            Just("us-east-1"),
        ]
        .prop_map(Value::from),
    ];
    leaf.prop_recursive(5, 48, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::vec((key.clone(), inner), 0..7)
                .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<String, Value>>())),
        ]
    })
}

/// A real event with some of its fields (envelope or finding) removed or replaced.
fn mutated_event(events: Arc<Vec<Value>>) -> impl Strategy<Value = Value> {
    let field = prop_oneof![
        Just(("", "detail")),
        Just(("", "source")),
        Just(("", "detail-type")),
        Just(("", "account")),
        Just(("detail", "id")),
        Just(("detail", "accountId")),
        Just(("detail", "region")),
        Just(("detail", "updatedAt")),
        Just(("detail", "createdAt")),
        Just(("detail", "type")),
        Just(("detail", "severity")),
        Just(("detail", "resource")),
        Just(("detail", "service")),
    ];
    let mutation = (field, prop::option::of(arb_json()));
    (0..events.len(), prop::collection::vec(mutation, 0..4)).prop_map(move |(i, mutations)| {
        let mut e = events[i].clone();
        for ((parent, key), value) in mutations {
            let target = if parent.is_empty() {
                Some(&mut e)
            } else {
                e.get_mut(parent)
            };
            if let Some(Value::Object(o)) = target {
                match value {
                    Some(v) => {
                        o.insert(key.to_owned(), v);
                    }
                    None => {
                        o.remove(key);
                    }
                }
            }
        }
        e
    })
}

/// One payload item: a (possibly mutated) real event, arbitrary JSON, or a real event's array.
fn arb_item(events: Arc<Vec<Value>>) -> impl Strategy<Value = Value> {
    prop_oneof![
        3 => mutated_event(Arc::clone(&events)),
        2 => arb_json(),
        1 => prop::collection::vec(mutated_event(events), 0..3).prop_map(Value::Array),
    ]
}

/// An SQS record: a well-formed one around a body (JSON text or garbage), or arbitrary JSON.
fn arb_record(events: Arc<Vec<Value>>) -> impl Strategy<Value = Value> {
    let body = prop_oneof![
        4 => arb_item(events).prop_map(|v| Value::from(v.to_string())),
        1 => ".{0,24}".prop_map(Value::from),
        1 => arb_json(),
    ];
    prop_oneof![
        6 => ("[a-z0-9-]{1,12}", body).prop_map(|(id, body)| json!({
            "messageId": id,
            "receiptHandle": "rh",
            "body": body,
            "eventSource": "aws:sqs",
            "awsRegion": "us-east-1"
        })),
        1 => arb_json(),
    ]
}

fn arb_payload(events: Arc<Vec<Value>>) -> impl Strategy<Value = Value> {
    prop_oneof![
        2 => arb_item(Arc::clone(&events)),
        3 => prop::collection::vec(arb_record(events), 0..12)
            .prop_map(|records| json!({ "Records": records })),
    ]
}

fn arb_mode() -> impl Strategy<Value = SinkMode> {
    prop_oneof![
        3 => Just(SinkMode::Accept),
        1 => Just(SinkMode::Retryable),
        1 => Just(SinkMode::Refuse),
        1 => Just(SinkMode::Alternate),
    ]
}

fn counted(s: &Summary) -> u64 {
    s.forwarded
        + s.duplicates
        + s.in_flight
        + s.stale
        + s.filtered
        + s.skipped
        + s.invalid
        + s.failed
}

/// The message ids of an SQS payload's records (those that have one).
fn message_ids(payload: &Value) -> Vec<String> {
    payload["Records"]
        .as_array()
        .map(|r| {
            r.iter()
                .filter_map(|m| m.get("messageId").and_then(Value::as_str))
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

fn check(payload: &Value, handled: &gdfwd_lambda::Handled) -> Result<(), TestCaseError> {
    let s = &handled.metrics.summary;
    prop_assert_eq!(s.received, counted(s), "every input counted once: {:?}", s);
    let input_len = payload.to_string().len();
    match handled.shape {
        Shape::SqsBatch => {
            let records = payload["Records"].as_array().map_or(0, Vec::len) as u64;
            prop_assert!(s.received >= records, "each record counted: {:?}", s);
            let response = handled
                .response
                .as_ref()
                .map_err(|e| TestCaseError::fail(format!("an SQS batch never fails: {e}")))
                .and_then(|a| {
                    serde_json::to_value(a).map_err(|e| TestCaseError::fail(e.to_string()))
                })?;
            let failed: Vec<String> = response["batchItemFailures"]
                .as_array()
                .ok_or_else(|| TestCaseError::fail("no batchItemFailures"))?
                .iter()
                .map(|f| f["itemIdentifier"].as_str().unwrap_or_default().to_owned())
                .collect();
            let ids = message_ids(payload);
            for id in &failed {
                prop_assert!(ids.contains(id), "{} is not a message of the batch", id);
            }
            let mut unique = failed.clone();
            unique.sort();
            unique.dedup();
            prop_assert_eq!(unique.len(), failed.len(), "a message reported twice");
            if s.invalid + s.failed + s.in_flight == 0 {
                prop_assert!(failed.is_empty(), "{:?} failed with nothing wrong", failed);
            }
            prop_assert!(response.to_string().len() <= input_len + 64);
        }
        Shape::Direct => {
            prop_assert!(s.received >= 1, "a direct event is counted: {:?}", s);
            let shown = match &handled.response {
                Ok(a) => {
                    serde_json::to_string(a).map_err(|e| TestCaseError::fail(e.to_string()))?
                }
                Err(e) => e.to_string(),
            };
            prop_assert!(
                shown.len() <= 2 * input_len + 1024,
                "answer of {} bytes for {} bytes of input",
                shown.len(),
                input_len
            );
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 128,
        max_shrink_iters: 256,
        ..ProptestConfig::default()
    })]

    #[test]
    fn any_payload_is_answered_and_every_record_counted(
        (payload, mode) in arb_payload(Arc::new(real_events())).prop_flat_map(|p| (Just(p), arb_mode())),
        format in prop_oneof![Just(Format::Raw), Just(Format::Semantic)],
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Arc::new(
            SqliteStore::open(
                &dir.path().join("state.db"),
                Arc::new(SystemClock),
                Duration::from_secs(86_400),
            )
            .expect("store"),
        );
        let sink = Arc::new(ModeSink(std::sync::Mutex::new(mode)));
        let handler = Handler::new(
            Some(store as Arc<dyn StateStore>),
            sink as Arc<dyn Sink>,
            None,
            format,
            Duration::from_secs(300),
        );
        let inv = Invocation {
            request_id: "fuzz".to_owned(),
            deadline: Some(SystemTime::now() + Duration::from_secs(60)),
        };
        let handled = runtime.block_on(handler.handle(payload.clone(), &inv));
        check(&payload, &handled)?;
    }
}
