//! The options `forward` and `backfill` share (format, store, lease, sender, enrichment) and the
//! one place that turns them into a [`Pipeline`], so both commands deliver, dedup and preview
//! the same way.

use std::sync::Arc;
use std::time::Duration;

use gdfwd_core::Clock;
use gdfwd_core::pipeline::Pipeline;
use gdfwd_core::preview::PreviewStore;
use gdfwd_core::sink::{Sink, WriterSink};
use gdfwd_core::store::StateStore;
use gdfwd_model::Format;

use crate::store::StoreArgs;

#[derive(Debug, clap::Args)]
pub struct PipelineArgs {
    /// Payload format: `raw` (the EventBridge event, for Dynatrace's built-in processing) or
    /// `semantic` (flat Semantic Dictionary fields mapped here).
    #[arg(long, env = "PAYLOAD_FORMAT", default_value = "raw", value_parser = parse_format)]
    pub format: Format,

    /// Print the events that would be sent (NDJSON on stdout) instead of sending. Consults the
    /// store to show what would be suppressed, but claims nothing (and saves no checkpoint). The
    /// default while no endpoint is configured; an endpoint given is checked as a real run would.
    #[arg(long)]
    pub dry_run: bool,

    #[command(flatten)]
    pub store: StoreArgs,

    /// Claim lease in seconds: a claim left by a crashed or killed run is taken over after this
    /// long (1 to 3600).
    #[arg(
        long,
        env = "DEDUP_LEASE_SECONDS",
        default_value_t = u64::from(gdfwd_core::limits::LEASE_SECONDS.default),
        value_name = "SECONDS",
        value_parser = clap::value_parser!(u64).range(gdfwd_core::limits::LEASE_SECONDS.clap())
    )]
    pub lease: u64,

    #[command(flatten)]
    pub sender: gdfwd_sink_http::SenderArgs,

    #[command(flatten)]
    pub enrich: gdfwd_enrich_aws::EnrichArgs,
}

fn parse_format(s: &str) -> Result<Format, String> {
    s.parse()
}

impl PipelineArgs {
    /// `--dry-run`, or no endpoint configured: forwarding means previewing.
    pub fn dry_run(&self) -> bool {
        self.dry_run
            || self
                .sender
                .endpoint
                .as_deref()
                .is_none_or(|e| e.trim().is_empty())
    }

    pub fn lease(&self) -> Duration {
        Duration::from_secs(self.lease)
    }

    /// The dry run's pipeline: the store read through a [`PreviewStore`], events printed on
    /// stdout. A dry run is how a deployer tries a configuration: an endpoint given is checked as
    /// a real run would check it, though nothing is sent to it.
    fn preview(&self, real_store: Option<Arc<dyn StateStore>>) -> anyhow::Result<Pipeline> {
        let given = self
            .sender
            .endpoint
            .as_deref()
            .filter(|e| !e.trim().is_empty());
        if let Some(endpoint) = given {
            gdfwd_sink_http::config::validate_endpoint(
                endpoint,
                self.sender.allow_insecure_loopback,
            )?;
        }
        let store = real_store.map(|s| Arc::new(PreviewStore::new(s)) as Arc<dyn StateStore>);
        let sink: Arc<dyn Sink> = Arc::new(WriterSink::new(std::io::stdout()));
        Ok(Pipeline::new(store, sink, self.format).with_lease(self.lease()))
    }

    /// Wires store, sink and enrichment. `dedup: false` bypasses the store (`--no-dedup`). A dry
    /// run reads the store but writes nothing, prints instead of sending, and makes no AWS calls
    /// for enrichment (`gdfwd accounts` checks names).
    /// `interrupt`: the sender's stop signal (see [`crate::interrupt`]).
    pub async fn build(
        &self,
        dedup: bool,
        clock: Arc<dyn Clock>,
        interrupt: Option<&crate::interrupt::Interrupt>,
    ) -> anyhow::Result<Pipeline> {
        // Checked first, so a bad --account-field fails a dry run too.
        let enrich = self
            .enrich
            .config()
            .map_err(|e| crate::Usage(e.to_string()))?;
        let real_store = if dedup {
            Some(self.store.open(clock.clone()).await?)
        } else {
            None
        };
        if self.dry_run() {
            return self.preview(real_store);
        }
        let config = self.sender.clone().into_config()?;
        let sdk = if config.token.secret_arn.is_some() || self.enrich.enabled() {
            Some(crate::aws::sdk_config().await)
        } else {
            None
        };
        let tokens = gdfwd_sink_http::build_token_source(&config.token, sdk).await?;
        // A secret that refuses to give a token (missing, no such key, a token with a line break
        // or another control character) fails the run here, naming it, before anything is
        // claimed; an outage is left to the sender's retries.
        if let Err(e) = tokens.token().await
            && e.is_refusal()
        {
            return Err(e.into());
        }
        let mut http = gdfwd_sink_http::HttpSink::new(config, tokens)?;
        if let Some(interrupt) = interrupt {
            http = http.with_stop(interrupt.subscribe());
        }
        let sink: Arc<dyn Sink> = Arc::new(http);
        let cache = real_store.clone().and_then(StateStore::kv);
        let resolver = match sdk {
            Some(sdk) => gdfwd_enrich_aws::build_resolver(&enrich, sdk, cache, clock).await,
            None => None,
        };
        Ok(Pipeline::new(real_store, sink, self.format)
            .with_resolver(resolver)
            .with_lease(self.lease()))
    }
}
