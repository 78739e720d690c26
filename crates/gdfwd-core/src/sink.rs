//! The sink port: delivers serialised payload events and says, per event, what happened.
//!
//! A sink never "fails and forgets": every event it is handed comes back as exactly one
//! [`EventOutcome`], so the pipeline can commit what was sent and release the rest.

use std::io::Write;
use std::sync::Mutex;
use std::time::Instant;

use async_trait::async_trait;

/// One payload event, serialised once by the pipeline so the sink can size batches exactly.
#[derive(Debug, Clone, PartialEq)]
pub struct OutEvent {
    /// The deterministic event id (32 hex).
    pub id: String,
    /// The event as compact JSON.
    pub json: String,
}

#[derive(Debug, Clone, PartialEq)]
pub enum EventOutcome {
    /// Accepted (HTTP 202); `request_id` from the answer when present.
    Sent { request_id: Option<String> },
    /// Not delivered, may succeed later (429/5xx/timeouts/deadline): release and retry later.
    Retryable { reason: String },
    /// Will never succeed as is (400/403/404/413 for one event): release with reason, dead-letter.
    Definitive { reason: String },
}

impl EventOutcome {
    pub fn is_sent(&self) -> bool {
        matches!(self, Self::Sent { .. })
    }
}

/// Counters a sink reports for one `send` call.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SendStats {
    /// HTTP requests made (including retries).
    pub requests: u64,
    /// Attempts beyond the first for some batch.
    pub retries: u64,
    /// Answers with status 429.
    pub throttled: u64,
    /// Events accepted.
    pub events_sent: u64,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct SendReport {
    /// One outcome per input event, in input order.
    pub outcomes: Vec<EventOutcome>,
    pub stats: SendStats,
}

impl SendReport {
    /// The report of a sink that made one request for all of `outcomes` (no retries): what the
    /// test sinks of several crates answer.
    pub fn one_request(outcomes: Vec<EventOutcome>) -> Self {
        let events_sent = outcomes.iter().filter(|o| o.is_sent()).count() as u64;
        Self {
            outcomes,
            stats: SendStats {
                requests: 1,
                events_sent,
                ..SendStats::default()
            },
        }
    }
}

#[async_trait]
pub trait Sink: Send + Sync + std::fmt::Debug {
    /// Delivers `events`, retrying as its policy allows but not past `deadline`.
    async fn send(&self, events: &[OutEvent], deadline: Option<Instant>) -> SendReport;
}

/// Writes each event as one NDJSON line to a writer (stdout for `--dry-run`). Always "sends".
#[derive(Debug)]
pub struct WriterSink<W: Write + Send + std::fmt::Debug> {
    out: Mutex<W>,
}

impl<W: Write + Send + std::fmt::Debug> WriterSink<W> {
    pub fn new(out: W) -> Self {
        Self {
            out: Mutex::new(out),
        }
    }

    pub fn into_inner(self) -> W {
        self.out
            .into_inner()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[async_trait]
impl<W: Write + Send + std::fmt::Debug> Sink for WriterSink<W> {
    async fn send(&self, events: &[OutEvent], _deadline: Option<Instant>) -> SendReport {
        let mut out = self
            .out
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut outcomes = Vec::with_capacity(events.len());
        let mut sent = 0;
        for e in events {
            let r = out
                .write_all(e.json.as_bytes())
                .and_then(|()| out.write_all(b"\n"));
            outcomes.push(match r {
                Ok(()) => {
                    sent += 1;
                    EventOutcome::Sent { request_id: None }
                }
                // A closed stdout (e.g. `| head`) is not Dynatrace's fault; retrying won't help.
                Err(e) => EventOutcome::Definitive {
                    reason: format!("writing event: {e}"),
                },
            });
        }
        let _ = out.flush();
        SendReport {
            outcomes,
            stats: SendStats {
                events_sent: sent,
                ..SendStats::default()
            },
        }
    }
}
