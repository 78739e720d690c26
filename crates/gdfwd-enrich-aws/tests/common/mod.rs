//! What the moto test binaries of this crate share: the resolver they drive and a sink that
//! records what the pipeline sends.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use gdfwd_core::SystemClock;
use gdfwd_core::enrich::{CacheConfig, CachingResolver};
use gdfwd_core::sink::{EventOutcome, OutEvent, SendReport, SendStats, Sink};
use gdfwd_enrich_aws::AwsAccountLookup;

/// The caching resolver over `lookup`, without a store, with a generous budget.
pub fn resolver(lookup: Arc<AwsAccountLookup>) -> CachingResolver {
    CachingResolver::new(
        lookup,
        None,
        Arc::new(SystemClock),
        CacheConfig {
            // moto on a loaded 2-core machine can be slow; the budget is not what is tested here.
            budget: Duration::from_secs(30),
            ..CacheConfig::default()
        },
    )
}

/// Records what the pipeline sends; every event is accepted.
#[derive(Debug, Default)]
pub struct RecordingSink(pub Mutex<Vec<OutEvent>>);

impl RecordingSink {
    /// The sent events' JSON bodies.
    pub fn bodies(&self) -> Vec<serde_json::Value> {
        self.0
            .lock()
            .expect("sink lock")
            .iter()
            .map(|e| serde_json::from_str(&e.json).expect("event json"))
            .collect()
    }
}

#[async_trait::async_trait]
impl Sink for RecordingSink {
    async fn send(&self, events: &[OutEvent], _deadline: Option<std::time::Instant>) -> SendReport {
        self.0.lock().expect("sink lock").extend_from_slice(events);
        SendReport {
            outcomes: events
                .iter()
                .map(|_| EventOutcome::Sent { request_id: None })
                .collect(),
            stats: SendStats::default(),
        }
    }
}
