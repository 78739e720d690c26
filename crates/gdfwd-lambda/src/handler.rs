//! The invocation handler: one Lambda payload in, a response (or an error) and metrics out.
//!
//! One function serves both triggers of `cloudformation/forwarder.yaml`:
//! - `direct`: EventBridge invokes the function asynchronously with one event. Any finding not
//!   delivered makes the invocation fail, so Lambda retries it and finally hands it to the
//!   on-failure destination;
//! - `sqs`: the event source mapping delivers a batch (`ReportBatchItemFailures`). The answer names
//!   exactly the messages to redeliver; the others are deleted. A message that can never succeed
//!   (not JSON, not a valid finding, refused by Dynatrace with a definitive 4xx) is reported as
//!   failed on every receive, so SQS moves it to the dead-letter queue after `maxReceiveCount`.
//!
//! The payload is taken as a `serde_json::Value` and parsed here, never by the runtime's
//! deserialiser: malformed input must be counted and reported per message, not fail the batch.
//! The answer is typed ([`Answer`]) and serialised by the runtime: there is no JSON built by hand
//! and so no fallback that could ever tell SQS that every message was done. Both triggers judge a
//! message's findings with one function ([`judge`]); they differ only in what the judgement
//! becomes (a failed batch item, or the invocation's error).
//!
//! The handler knows nothing of the runtime or AWS: it is built from the core ports, so it is
//! tested with in-process fakes; `main` wires the real adapters.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use gdfwd_core::enrich::{AccountResolver, EnrichStats};
use gdfwd_core::pipeline::{Outcome, Pipeline, Summary};
use gdfwd_core::sink::Sink;
use gdfwd_core::store::StateStore;
use gdfwd_model::{Finding, Format, Item, parse_value};
use serde::Serialize;
use serde_json::Value;

use crate::metrics::{InvocationMetrics, MeteredSink};

/// What the runtime tells us about one invocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invocation {
    pub request_id: String,
    /// `Lambda-Runtime-Deadline-Ms`; `None` when unknown (then nothing is cut short).
    pub deadline: Option<SystemTime>,
}

/// Which trigger the payload came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// One EventBridge event (asynchronous invocation).
    Direct,
    /// An SQS event source mapping batch.
    SqsBatch,
}

impl Shape {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Direct => "direct",
            Self::SqsBatch => "sqs",
        }
    }
}

/// A successful invocation's answer, serialised by the runtime as the JSON the trigger expects.
/// Untagged: each variant is exactly its own JSON object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Answer {
    /// `{"batchItemFailures":[{"itemIdentifier":"…"}]}`: the messages SQS must redeliver.
    Sqs(SqsBatchResponse),
    /// `{"forwarded":1,"duplicates":0,"stale":0,"filtered":0,"skipped":0}`: a direct event that
    /// needs no retry.
    Direct(DirectAnswer),
}

/// What a direct invocation that needs no retry did (informational: Lambda only records it).
/// Field order is the JSON's key order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DirectAnswer {
    pub forwarded: u64,
    pub duplicates: u64,
    pub stale: u64,
    pub filtered: u64,
    pub skipped: u64,
}

impl DirectAnswer {
    fn new(s: &Summary) -> Self {
        Self {
            forwarded: s.forwarded,
            duplicates: s.duplicates,
            stale: s.stale,
            filtered: s.filtered,
            skipped: s.skipped,
        }
    }
}

/// The `ReportBatchItemFailures` answer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SqsBatchResponse {
    pub batch_item_failures: Vec<BatchItemFailure>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BatchItemFailure {
    pub item_identifier: String,
}

/// A direct invocation that did not deliver everything. Returned to the runtime as the
/// invocation's error, so Lambda retries the event and then dead-letters it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandlerError {
    /// Some finding may be delivered by a retry (Dynatrace or DynamoDB unavailable, deadline).
    #[error("{failed} of {total} findings not delivered, will be retried: {reason}")]
    Retryable {
        failed: u64,
        total: u64,
        reason: String,
    },
    /// The event can never be delivered as it is (invalid, or refused by Dynatrace).
    #[error("event rejected: {reason}")]
    Rejected { reason: String },
    /// AWS refused the configuration (table, secret); nothing was touched. The message starts
    /// with the variable to fix.
    #[error("{0}")]
    NotReady(String),
}

impl HandlerError {
    /// The `errorType` Lambda records.
    pub fn error_type(&self) -> &'static str {
        match self {
            Self::Retryable { .. } => "gdfwd.Retryable",
            Self::Rejected { .. } => "gdfwd.Rejected",
            Self::NotReady(_) => "Runtime.ConfigError",
        }
    }
}

impl From<HandlerError> for lambda_runtime::Diagnostic {
    fn from(e: HandlerError) -> Self {
        Self {
            error_type: e.error_type().to_owned(),
            error_message: e.to_string(),
        }
    }
}

/// The handler's answer and what it did.
#[derive(Debug, Clone, PartialEq)]
pub struct Handled {
    pub shape: Shape,
    /// The runtime's answer: for SQS always `Ok` (the batch response); for direct, `Ok` with a
    /// small summary, or the error that makes Lambda retry or dead-letter the event.
    pub response: Result<Answer, HandlerError>,
    pub metrics: InvocationMetrics,
}

/// How long before the invocation deadline sending stops: a tenth of the remaining time, at least
/// 500 ms and at most 5 s. What is left covers releasing unsent claims and answering the runtime.
pub fn send_margin(remaining: Duration) -> Duration {
    (remaining / 10).clamp(Duration::from_millis(500), Duration::from_secs(5))
}

/// The pipeline plus the handles the handler reads metrics from. Built once per process.
#[derive(Debug)]
pub struct Handler {
    pipeline: Pipeline,
    sink: Arc<MeteredSink>,
    resolver: Option<Arc<dyn AccountResolver>>,
}

/// One SQS message while the batch is processed.
#[derive(Debug)]
struct Message {
    id: String,
    /// Indices into the batch's finding list.
    findings: Vec<usize>,
    /// Set when the message can never succeed (logged once, with this reason).
    rejected: Option<String>,
}

impl Handler {
    /// `store: None` only for tests and dry runs: the Lambda always dedups.
    pub fn new(
        store: Option<Arc<dyn StateStore>>,
        sink: Arc<dyn Sink>,
        resolver: Option<Arc<dyn AccountResolver>>,
        format: Format,
        lease: Duration,
    ) -> Self {
        let sink = Arc::new(MeteredSink::new(sink));
        let pipeline = Pipeline::new(store, Arc::clone(&sink) as Arc<dyn Sink>, format)
            .with_resolver(resolver.clone())
            .with_lease(lease);
        Self {
            pipeline,
            sink,
            resolver,
        }
    }

    /// The filter every finding passes before it is claimed (`Config::filter`).
    #[must_use]
    pub fn with_filter(mut self, filter: gdfwd_model::FindingFilter) -> Self {
        self.pipeline = self.pipeline.with_filter(filter);
        self
    }

    pub fn pipeline(&self) -> &Pipeline {
        &self.pipeline
    }

    /// Handles one payload. Never panics and never fails on malformed input: that is counted and
    /// reported in the answer.
    pub async fn handle(&self, payload: Value, inv: &Invocation) -> Handled {
        let started = Instant::now();
        let sink_before = self.sink.meter();
        let enrich_before = self.enrich_stats();
        let deadline = inv.deadline.map(send_deadline);

        let (shape, response, summary, item_failures) = if is_sqs_batch(&payload) {
            let (resp, summary) = self.handle_batch(payload, inv, deadline).await;
            let n = resp.batch_item_failures.len() as u64;
            (Shape::SqsBatch, Ok(Answer::Sqs(resp)), summary, n)
        } else {
            let (resp, summary) = self.handle_direct(payload, inv, deadline).await;
            (Shape::Direct, resp, summary, 0)
        };

        let sink_after = self.sink.meter();
        let enrich_after = self.enrich_stats();
        let metrics = InvocationMetrics {
            summary,
            batch_item_failures: item_failures,
            enrich: EnrichStats {
                cache_hits: enrich_after
                    .cache_hits
                    .saturating_sub(enrich_before.cache_hits),
                cache_misses: enrich_after
                    .cache_misses
                    .saturating_sub(enrich_before.cache_misses),
                failures: enrich_after.failures.saturating_sub(enrich_before.failures),
            },
            send_latency_ms: sink_after
                .busy_micros
                .saturating_sub(sink_before.busy_micros)
                / 1000,
            duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        };
        Handled {
            shape,
            response,
            metrics,
        }
    }

    fn enrich_stats(&self) -> EnrichStats {
        self.resolver
            .as_ref()
            .map(|r| r.stats())
            .unwrap_or_default()
    }

    /// Runs the batch's findings through the pipeline; the summary includes `extra` (the
    /// records that never became findings).
    async fn process(
        &self,
        findings: &[Finding],
        extra: &Summary,
        deadline: Option<Instant>,
    ) -> (Vec<Outcome>, Summary) {
        let report = if findings.is_empty() {
            Default::default()
        } else {
            self.pipeline.process(findings, deadline).await
        };
        let mut summary = report.summary;
        summary.merge(extra);
        summary.received += extra.skipped + extra.invalid;
        (report.outcomes, summary)
    }

    async fn handle_batch(
        &self,
        payload: Value,
        inv: &Invocation,
        deadline: Option<Instant>,
    ) -> (SqsBatchResponse, Summary) {
        let mut extra = Summary::default();
        let mut findings: Vec<Finding> = Vec::new();
        let messages = read_records(payload, inv, &mut findings, &mut extra);
        let (outcomes, summary) = self.process(&findings, &extra, deadline).await;

        let mut failures = Vec::new();
        let mut reported = std::collections::HashSet::new();
        for msg in &messages {
            let judged = judge(msg, &findings, &outcomes);
            // Either way the message is reported; a rejected one is logged as such, so the
            // dead-lettered message's reason is on record.
            if let Some(reason) = judged.rejected {
                tracing::error!(request_id = %inv.request_id, message_id = %msg.id, %reason, "message can never be delivered; reported as failed until SQS dead-letters it");
            } else if let Some(reason) = judged.retry {
                tracing::warn!(request_id = %inv.request_id, message_id = %msg.id, %reason, "message not delivered; SQS will redeliver it");
            } else {
                continue;
            }
            // SQS never repeats a message id within a batch; a hand-made payload may, and the
            // answer names each message once all the same.
            if !reported.insert(msg.id.as_str()) {
                continue;
            }
            failures.push(BatchItemFailure {
                item_identifier: msg.id.clone(),
            });
        }
        (
            SqsBatchResponse {
                batch_item_failures: failures,
            },
            summary,
        )
    }

    async fn handle_direct(
        &self,
        payload: Value,
        inv: &Invocation,
        deadline: Option<Instant>,
    ) -> (Result<Answer, HandlerError>, Summary) {
        let mut extra = Summary::default();
        let mut findings = Vec::new();
        let mut msg = Message {
            id: inv.request_id.clone(),
            findings: Vec::new(),
            rejected: None,
        };
        collect_items(payload, &mut findings, &mut msg, &mut extra);
        let (outcomes, summary) = self.process(&findings, &extra, deadline).await;

        let judged = judge(&msg, &findings, &outcomes);
        let response = if let Some(reason) = judged.retry {
            // Retryable wins over rejected: a retry may still deliver the retryable findings, and
            // the rejected ones are re-rejected without being sent twice (their claims are free).
            tracing::warn!(request_id = %inv.request_id, %reason, "event not delivered; Lambda will retry it");
            Err(HandlerError::Retryable {
                failed: judged.retryable,
                total: findings.len() as u64,
                reason,
            })
        } else if let Some(reason) = judged.rejected {
            tracing::error!(request_id = %inv.request_id, %reason, "event can never be delivered; failing so Lambda dead-letters it");
            Err(HandlerError::Rejected { reason })
        } else {
            Ok(Answer::Direct(DirectAnswer::new(&summary)))
        };
        (response, summary)
    }
}

/// Why a message (or a direct event) is not done: the first reason a finding may succeed on a
/// retry, how many such findings there are, and the first reason it never can (its own, such
/// as an invalid body, first). Both `None`: done.
#[derive(Debug, Default)]
struct Judgement {
    retry: Option<String>,
    retryable: u64,
    rejected: Option<String>,
}

/// Judges `msg` by its findings' `outcomes` (indexed like `findings`; a missing outcome counts
/// as done, as it always has). The one rule both triggers share.
fn judge(msg: &Message, findings: &[Finding], outcomes: &[Outcome]) -> Judgement {
    let mut judged = Judgement {
        rejected: msg.rejected.clone(),
        ..Judgement::default()
    };
    for &i in &msg.findings {
        let Some((retryable, reason)) = outcomes.get(i).and_then(Outcome::undone) else {
            continue;
        };
        let f = &findings[i];
        let why = format!("finding {} ({}): {reason}", f.id, f.updated_at);
        if retryable {
            judged.retryable += 1;
            judged.retry.get_or_insert(why);
        } else {
            judged.rejected.get_or_insert(why);
        }
    }
    judged
}

/// The messages of an SQS batch payload, their findings appended to `findings`.
fn read_records(
    payload: Value,
    inv: &Invocation,
    findings: &mut Vec<Finding>,
    extra: &mut Summary,
) -> Vec<Message> {
    let records = match payload {
        Value::Object(mut o) => match o.remove("Records") {
            Some(Value::Array(r)) => r,
            _ => Vec::new(),
        },
        _ => Vec::new(),
    };
    records
        .into_iter()
        .enumerate()
        .filter_map(|(n, record)| read_record(record, n + 1, inv, findings, extra))
        .collect()
}

/// Record `number` (1-based) of an SQS batch as a message. A record that cannot be named in the
/// answer (not an object, no `messageId`) is counted invalid, logged, and is `None`; a message
/// whose body is not a JSON string is rejected.
fn read_record(
    record: Value,
    number: usize,
    inv: &Invocation,
    findings: &mut Vec<Finding>,
    extra: &mut Summary,
) -> Option<Message> {
    let Value::Object(mut record) = record else {
        extra.invalid += 1;
        tracing::error!(request_id = %inv.request_id, record = number, "SQS record is not an object; it cannot be reported as failed");
        return None;
    };
    let Some(id) = record
        .get("messageId")
        .and_then(Value::as_str)
        .map(str::to_owned)
    else {
        extra.invalid += 1;
        tracing::error!(request_id = %inv.request_id, record = number, "SQS record has no messageId; it cannot be reported as failed");
        return None;
    };
    let mut msg = Message {
        id,
        findings: Vec::new(),
        rejected: None,
    };
    match record.remove("body") {
        Some(Value::String(body)) => match serde_json::from_str::<Value>(&body) {
            Ok(value) => collect_items(value, findings, &mut msg, extra),
            Err(e) => {
                extra.invalid += 1;
                msg.rejected = Some(format!("message body is not JSON: {e}"));
            }
        },
        _ => {
            extra.invalid += 1;
            msg.rejected = Some("message has no string body".to_owned());
        }
    }
    Some(msg)
}

/// An SQS batch is an object whose `Records` are SQS messages (`eventSource: aws:sqs`). Anything
/// else is treated as a direct event (and judged by the finding parser).
fn is_sqs_batch(payload: &Value) -> bool {
    payload
        .get("Records")
        .and_then(Value::as_array)
        .is_some_and(|records| {
            records.iter().any(|r| {
                r.get("eventSource").and_then(Value::as_str) == Some("aws:sqs")
                    || r.get("messageId").is_some()
            })
        })
}

/// Parses one message body (or direct payload) into the batch's findings.
fn collect_items(
    value: Value,
    findings: &mut Vec<Finding>,
    msg: &mut Message,
    extra: &mut Summary,
) {
    let items = parse_value(value);
    if items.is_empty() {
        // `[]` or `{"findings": []}`: well-formed, nothing to forward.
        extra.skipped += 1;
        tracing::debug!(message_id = %msg.id, "message holds no records; skipped");
        return;
    }
    for item in items {
        match item {
            Ok(Item::Finding(f)) => {
                msg.findings.push(findings.len());
                findings.push(*f);
            }
            Ok(Item::Skipped { reason }) => {
                extra.skipped += 1;
                tracing::info!(message_id = %msg.id, %reason, "not a GuardDuty finding; skipped");
            }
            Err(e) => {
                extra.invalid += 1;
                msg.rejected.get_or_insert(format!("invalid finding: {e}"));
            }
        }
    }
}

/// The instant sending must stop for a runtime deadline.
fn send_deadline(deadline: SystemTime) -> Instant {
    let remaining = deadline
        .duration_since(SystemTime::now())
        .unwrap_or(Duration::ZERO);
    Instant::now() + remaining.saturating_sub(send_margin(remaining))
}
