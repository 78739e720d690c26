//! Per-invocation metrics: counted by the handler, printed as one CloudWatch Embedded Metric
//! Format (EMF) line on stdout.
//!
//! EMF needs no CloudWatch API call and no extension: Lambda ships stdout to CloudWatch Logs, which
//! extracts the metrics from the `_aws` block. One line per invocation keeps the cost at one log
//! line, and the same values are readable by tests and the benchmark from the process's stdout.
//!
//! Send latency and request counts come from [`MeteredSink`], a [`Sink`] decorator, because the
//! pipeline's [`Summary`] counts outcomes, not time.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use async_trait::async_trait;
use gdfwd_core::enrich::EnrichStats;
use gdfwd_core::pipeline::Summary;
use gdfwd_core::sink::{OutEvent, SendReport, Sink};
use serde_json::{Map, Value, json};

/// The CloudWatch namespace of every metric.
pub const NAMESPACE: &str = "gdfwd";

/// What one invocation did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InvocationMetrics {
    /// Outcome counters (received, forwarded, duplicates, in flight elsewhere, stale, filtered,
    /// skipped, invalid, failed, events sent, requests, retries, throttled).
    pub summary: Summary,
    /// SQS messages reported back as failed (0 for a direct invocation).
    pub batch_item_failures: u64,
    pub enrich: EnrichStats,
    /// Time spent in the sink, milliseconds.
    pub send_latency_ms: u64,
    /// Whole invocation, milliseconds.
    pub duration_ms: u64,
}

impl InvocationMetrics {
    /// The EMF document: one `Metrics` directive with the `FunctionName` dimension, plus
    /// `RequestId` and `Shape` as searchable properties that are not dimensions (dimensions
    /// multiply metric cost).
    pub fn emf(
        &self,
        function_name: &str,
        request_id: &str,
        shape: &str,
        timestamp_ms: i64,
    ) -> Value {
        let s = &self.summary;
        let values: [(&str, u64, &str); 20] = [
            ("Received", s.received, "Count"),
            ("Forwarded", s.forwarded, "Count"),
            ("Duplicates", s.duplicates, "Count"),
            ("InFlightElsewhere", s.in_flight, "Count"),
            ("Stale", s.stale, "Count"),
            ("Filtered", s.filtered, "Count"),
            ("Skipped", s.skipped, "Count"),
            ("Invalid", s.invalid, "Count"),
            ("Failed", s.failed, "Count"),
            ("StaleOwner", s.stale_owner, "Count"),
            ("BatchItemFailures", self.batch_item_failures, "Count"),
            ("Retries", s.retries, "Count"),
            ("Throttled", s.throttled, "Count"),
            ("EventsSent", s.events, "Count"),
            ("RequestsSent", s.requests, "Count"),
            ("EnrichCacheHits", self.enrich.cache_hits, "Count"),
            ("EnrichCacheMisses", self.enrich.cache_misses, "Count"),
            ("EnrichFailures", self.enrich.failures, "Count"),
            ("SendLatency", self.send_latency_ms, "Milliseconds"),
            ("Duration", self.duration_ms, "Milliseconds"),
        ];
        let mut doc = Map::new();
        doc.insert(
            "_aws".to_owned(),
            json!({
                "Timestamp": timestamp_ms,
                "CloudWatchMetrics": [{
                    "Namespace": NAMESPACE,
                    "Dimensions": [["FunctionName"]],
                    "Metrics": values
                        .iter()
                        .map(|(name, _, unit)| json!({"Name": name, "Unit": unit}))
                        .collect::<Vec<_>>(),
                }],
            }),
        );
        doc.insert("FunctionName".to_owned(), json!(function_name));
        doc.insert("RequestId".to_owned(), json!(request_id));
        doc.insert("Shape".to_owned(), json!(shape));
        for (name, value, _) in values {
            doc.insert(name.to_owned(), json!(value));
        }
        Value::Object(doc)
    }
}

/// Cumulative counters of a [`MeteredSink`]; the handler subtracts two snapshots.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SinkMeter {
    pub calls: u64,
    pub busy_micros: u64,
}

/// Times every `send` of the wrapped sink.
#[derive(Debug)]
pub struct MeteredSink {
    inner: Arc<dyn Sink>,
    calls: AtomicU64,
    busy_micros: AtomicU64,
}

impl MeteredSink {
    pub fn new(inner: Arc<dyn Sink>) -> Self {
        Self {
            inner,
            calls: AtomicU64::new(0),
            busy_micros: AtomicU64::new(0),
        }
    }

    pub fn meter(&self) -> SinkMeter {
        SinkMeter {
            calls: self.calls.load(Ordering::Relaxed),
            busy_micros: self.busy_micros.load(Ordering::Relaxed),
        }
    }
}

#[async_trait]
impl Sink for MeteredSink {
    async fn send(&self, events: &[OutEvent], deadline: Option<Instant>) -> SendReport {
        let started = Instant::now();
        let report = self.inner.send(events, deadline).await;
        let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        self.calls.fetch_add(1, Ordering::Relaxed);
        self.busy_micros.fetch_add(micros, Ordering::Relaxed);
        report
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emf_declares_every_metric_it_carries() {
        let m = InvocationMetrics {
            summary: Summary {
                received: 10,
                forwarded: 7,
                duplicates: 1,
                in_flight: 3,
                stale: 1,
                filtered: 4,
                skipped: 0,
                invalid: 1,
                failed: 1,
                events: 9,
                requests: 2,
                retries: 1,
                throttled: 1,
                stale_owner: 2,
            },
            batch_item_failures: 1,
            enrich: EnrichStats {
                cache_hits: 5,
                cache_misses: 2,
                failures: 0,
            },
            send_latency_ms: 42,
            duration_ms: 50,
        };
        let doc = m.emf("fn", "req-1", "sqs", 1_700_000_000_000);
        let directive = &doc["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(directive["Namespace"], NAMESPACE);
        assert_eq!(directive["Dimensions"], json!([["FunctionName"]]));
        assert_eq!(doc["_aws"]["Timestamp"], 1_700_000_000_000_i64);
        let declared = directive["Metrics"].as_array().expect("metrics array");
        assert_eq!(declared.len(), 20);
        for d in declared {
            let name = d["Name"].as_str().expect("name");
            assert!(doc[name].is_u64(), "{name} has a numeric value");
        }
        assert_eq!(doc["FunctionName"], "fn");
        assert_eq!(doc["Received"], 10);
        assert_eq!(doc["EventsSent"], 9);
        assert_eq!(doc["EnrichCacheHits"], 5);
        assert_eq!(doc["SendLatency"], 42);
        assert_eq!(doc["BatchItemFailures"], 1);
        assert_eq!(doc["InFlightElsewhere"], 3);
        assert_eq!(doc["StaleOwner"], 2);
        assert_eq!(doc["Filtered"], 4);
    }
}
