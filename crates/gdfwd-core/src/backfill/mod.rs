//! The backfill engine: lists the findings a source holds ([`FindingPages`]: the GuardDuty API in
//! `gdfwd-guardduty`) and drives them through the same [`Pipeline`] as the Lambda, so overlap
//! with live delivery, a re-run or a concurrent backfill sends nothing twice.
//!
//! Per region (regions run concurrently, bounded): the source's partitions (GuardDuty: its
//! detectors), then per partition one listing sorted by `updatedAt` ascending, each page
//! processed as one batch. Listing and fetching run one page ahead of processing (a channel of
//! one page), so the source's latency overlaps sending (`listing.rs`).
//!
//! The query's filter is the pipeline's ([`Backfill::new`] hands it over), so a backfill drops
//! what the Lambda and `gdfwd forward` drop, counted as `filtered` in the summary; the source
//! only narrows what it lists with it (see [`crate::source`]).
//!
//! Checkpoints (see [`checkpoint`]) advance only after a page's findings are settled: sent,
//! already sent, superseded, filtered out, or definitively rejected. A finding that failed
//! retryably, or whose version is claimed by someone else under a live lease (a killed run, or
//! the Lambda sending it right now), caps the checkpoint at its `updatedAt`, so the next run lists
//! it again. Two more rules keep the checkpoint honest:
//! - a fetch may return a newer version than the listing sorted by (a finding updated mid-run);
//!   such a version's `updatedAt` says nothing about the listing position. Versions updated
//!   after the run started (less a clock-skew margin) therefore never advance it.
//! - a repeated page token stops the listing with an error instead of looping.
//!
//! Interruption: the stop callback is polled between pages; the page in flight finishes
//! (its sends complete, or fail and release their claims), its checkpoint is saved, and the run
//! reports `interrupted`. A killed run leaves claims pending until their lease ends; the next run
//! reports them ([`PendingClaims`]) and keeps its checkpoint below them.
//!
//! [`gaps`] lists through the same port from `--since`, without checkpoints, and checks each
//! finding against the store instead of sending it (`gdfwd audit gaps`, `backfill --only-gaps`).

pub mod checkpoint;
pub mod gaps;
mod listing;
pub mod progress;

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use gdfwd_model::Timestamp;
use serde::Serialize;
use thiserror::Error;

pub use self::checkpoint::{CHECKPOINT_NAMESPACE, Checkpoint};
pub use self::gaps::{Gap, GapReason, GapsReport, find_gaps, send_gaps};
pub use self::progress::{NoProgress, Progress, RegionCounts};
use crate::error::{SourceError, StoreError};
use crate::pipeline::{Pipeline, Summary};
use crate::source::{ApiStats, FindingPages, FindingQuery};

/// Polled between pages: `true` asks the run to stop cleanly.
pub type StopFn = Arc<dyn Fn() -> bool + Send + Sync>;

/// Why a region's run stopped early (reported per region as text).
#[derive(Debug, Error)]
pub enum BackfillError {
    #[error(transparent)]
    Source(#[from] SourceError),

    /// The listing handed back a page token it had already given: following it would loop
    /// forever, so the listing stops with this error (the checkpoint keeps what was done).
    #[error(
        "{listing} in {region} ({kind} {partition}) returned the page token {token:?} a second time; stopped listing to avoid a loop"
    )]
    RepeatedPageToken {
        listing: &'static str,
        region: String,
        kind: &'static str,
        partition: String,
        token: String,
    },

    /// Sending kept failing (Dynatrace down): listing further would only pile up failures.
    #[error(
        "sending failed on {pages} pages in a row; stopped listing {kind} {partition} (re-run to continue from the checkpoint)"
    )]
    SendingFailed {
        pages: u32,
        kind: &'static str,
        partition: String,
    },

    #[error("state store: {0}")]
    Store(#[from] StoreError),

    /// A checkpoint in the store could not be read.
    #[error("checkpoint {key} in the state store is not valid: {message}")]
    Checkpoint { key: String, message: String },
}

/// How a backfill runs.
#[derive(Debug, Clone)]
pub struct BackfillConfig {
    pub query: FindingQuery,
    pub regions: Vec<String>,
    /// Continue after the stored checkpoint (default) instead of from `--since`.
    pub resume: bool,
    /// Regions processed at once.
    pub region_concurrency: usize,
    /// Write checkpoints (not in `--dry-run` or without a store).
    pub save_checkpoints: bool,
    /// How long a checkpoint is kept.
    pub checkpoint_ttl: Duration,
    /// Versions updated later than (run start − this) never advance a checkpoint (clock skew
    /// between the source and us).
    pub settle_margin: Duration,
    /// Stop a listing after this many consecutive pages where sending failed (Dynatrace down).
    pub max_failed_pages: u32,
}

impl BackfillConfig {
    pub fn new(query: FindingQuery, regions: Vec<String>) -> Self {
        Self {
            query,
            regions,
            resume: true,
            region_concurrency: 4,
            save_checkpoints: true,
            checkpoint_ttl: Duration::from_secs(180 * 86_400),
            settle_margin: Duration::from_secs(300),
            max_failed_pages: 3,
        }
    }
}

/// Claims another process holds under a live lease (a killed run's, or the Lambda's in flight).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PendingClaims {
    pub count: u64,
    /// When the last of those leases ends (then a re-run sends what is still unsent).
    pub until: Option<Timestamp>,
}

impl PendingClaims {
    fn add(&mut self, until: Option<Timestamp>) {
        self.count += 1;
        self.until = match (self.until, until) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
    }

    fn merge(&mut self, o: &PendingClaims) {
        self.count += o.count;
        self.until = match (self.until, o.until) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
    }
}

/// What happened in one region.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RegionReport {
    pub region: String,
    /// The source's partitions in the region (GuardDuty: detector ids).
    pub detectors: Vec<String>,
    /// Finding ids the listing returned.
    pub listed: u64,
    /// Findings the source returned for them.
    pub fetched: u64,
    /// Pipeline counts (received, forwarded, duplicates, stale, filtered, failed, invalid...).
    pub summary: Summary,
    pub pending: PendingClaims,
    /// The checkpoint reached (`updatedAt` everything below which is settled).
    pub checkpoint: Option<Timestamp>,
    /// Why the region stopped early.
    pub error: Option<String>,
    /// E.g. "no GuardDuty detector".
    pub note: Option<String>,
}

impl RegionReport {
    fn counts(&self) -> RegionCounts {
        RegionCounts {
            listed: self.listed,
            fetched: self.fetched,
            sent: self.summary.forwarded,
            duplicates: self.summary.duplicates,
            failed: self.summary.failed,
        }
    }
}

/// The outcome of a run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct BackfillReport {
    pub summary: Summary,
    pub listed: u64,
    pub fetched: u64,
    pub pending: PendingClaims,
    pub interrupted: bool,
    pub regions: Vec<RegionReport>,
    pub api: ApiStats,
}

impl BackfillReport {
    /// Regions that stopped on an error, with the error.
    pub fn errors(&self) -> Vec<(String, String)> {
        self.regions
            .iter()
            .filter_map(|r| r.error.clone().map(|e| (r.region.clone(), e)))
            .collect()
    }
}

/// The wired engine.
pub struct Backfill {
    source: Arc<dyn FindingPages>,
    pipeline: Pipeline,
    config: BackfillConfig,
    progress: Arc<dyn Progress>,
    stop: StopFn,
}

impl std::fmt::Debug for Backfill {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backfill")
            .field("source", &self.source)
            .field("pipeline", &self.pipeline)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Backfill {
    /// `pipeline` gets the query's filter: what the source's listing narrows by and what the
    /// pipeline applies are one filter, so they cannot disagree.
    pub fn new(source: Arc<dyn FindingPages>, pipeline: Pipeline, config: BackfillConfig) -> Self {
        let pipeline = pipeline.with_filter(config.query.filter.clone());
        Self {
            source,
            pipeline,
            config,
            progress: Arc::new(NoProgress),
            stop: Arc::new(|| false),
        }
    }

    #[must_use]
    pub fn with_progress(mut self, progress: Arc<dyn Progress>) -> Self {
        self.progress = progress;
        self
    }

    #[must_use]
    pub fn with_stop(mut self, stop: StopFn) -> Self {
        self.stop = stop;
        self
    }

    /// Runs every region; never fails as a whole (per-region errors are in the report).
    pub async fn run(&self) -> BackfillReport {
        let run_started = Timestamp::now();
        let settle = run_started.saturating_add_millis(
            -i64::try_from(self.config.settle_margin.as_millis()).unwrap_or(i64::MAX),
        );
        let regions: Vec<RegionReport> = futures::stream::iter(self.config.regions.clone())
            .map(|region| async move { self.run_region(region, settle, run_started).await })
            .buffer_unordered(self.config.region_concurrency.max(1))
            .collect()
            .await;
        let mut report = BackfillReport {
            interrupted: (self.stop)(),
            api: self.source.stats(),
            ..BackfillReport::default()
        };
        let mut regions = regions;
        regions.sort_by(|a, b| a.region.cmp(&b.region));
        for r in &regions {
            report.summary.merge(&r.summary);
            report.listed += r.listed;
            report.fetched += r.fetched;
            report.pending.merge(&r.pending);
        }
        report.regions = regions;
        report
    }

    async fn run_region(
        &self,
        region: String,
        settle: Timestamp,
        run_started: Timestamp,
    ) -> RegionReport {
        let mut rep = RegionReport {
            region: region.clone(),
            ..RegionReport::default()
        };
        let to = self.config.query.until.unwrap_or(run_started);
        self.progress.start(&region, self.config.query.since, to);
        let partitions = match self.source.partitions(&region).await {
            Ok(p) => p,
            Err(e) => {
                rep.error = Some(e.to_string());
                self.progress
                    .finish(&region, rep.counts(), rep.error.as_deref());
                return rep;
            }
        };
        if partitions.is_empty() {
            let names = self.source.names();
            rep.note = Some(format!(
                "no {} {} in this region",
                names.source, names.partition
            ));
        }
        rep.detectors = partitions.clone();
        for partition in partitions {
            if (self.stop)() {
                break;
            }
            if let Err(e) = self
                .run_listing(&region, &partition, settle, &mut rep)
                .await
            {
                rep.error = Some(e.to_string());
                break;
            }
        }
        self.progress
            .finish(&region, rep.counts(), rep.error.as_deref());
        rep
    }
}
