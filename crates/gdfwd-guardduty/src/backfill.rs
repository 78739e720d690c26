//! The backfill engine: lists the findings GuardDuty holds and drives them through the same
//! [`Pipeline`] as the Lambda, so overlap with live delivery, a re-run or a concurrent backfill
//! sends nothing twice.
//!
//! Per region (regions run concurrently, bounded): `ListDetectors`, then per detector one listing
//! of `ListFindings` sorted by `updatedAt` ascending, 50 ids a page, each page fetched with
//! `GetFindings` and processed as one batch. Listing and fetching run one page ahead of processing
//! (a channel of one page), so GuardDuty latency overlaps sending.
//!
//! The query's filter is the pipeline's ([`Backfill::new`] hands it over), so a backfill drops
//! what the Lambda and `gdfwd forward` drop, counted as `filtered` in the summary; the listing
//! criteria only narrow what is fetched (see [`crate::query`]).
//!
//! Checkpoints (see [`crate::query`]) advance only after a page's findings are settled: sent,
//! already sent, superseded, filtered out, or definitively rejected. A finding that failed retryably, or whose
//! version is claimed by someone else under a live lease (a killed run, or the Lambda sending it
//! right now), caps the checkpoint at its `updatedAt`, so the next run lists it again. Two more
//! rules keep the checkpoint honest:
//! - `GetFindings` may return a newer version than `ListFindings` sorted by (a finding updated
//!   mid-run); such a version's `updatedAt` says nothing about the listing position. Versions
//!   updated after the run started (less a clock-skew margin) therefore never advance it.
//! - a repeated page token stops the listing with an error instead of looping.
//!
//! Interruption: the stop callback is polled between pages; the page in flight finishes
//! (its sends complete, or fail and release their claims), its checkpoint is saved, and the run
//! reports `interrupted`. A killed run leaves claims pending until their lease ends; the next run
//! reports them ([`PendingClaims`]) and keeps its checkpoint below them.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use gdfwd_core::pipeline::{Outcome, Pipeline, Summary};
use gdfwd_core::store::KvStore;
use gdfwd_model::{Finding, Item, Timestamp, parse_value};
use serde::Serialize;
use serde_json::{Map, Value};
use tokio::sync::mpsc;

use crate::client::{ApiStats, GuardDutyClient};
use crate::error::GuardDutyError;
use crate::progress::{NoProgress, Progress, RegionCounts};
use crate::query::{CHECKPOINT_NAMESPACE, Checkpoint, FindingQuery};

/// Polled between pages: `true` asks the run to stop cleanly.
pub type StopFn = Arc<dyn Fn() -> bool + Send + Sync>;

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
    /// between GuardDuty and us).
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
    pub detectors: Vec<String>,
    /// Finding ids listed by `ListFindings`.
    pub listed: u64,
    /// Findings returned by `GetFindings`.
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

/// One fetched page.
#[derive(Debug)]
struct Page {
    listed: usize,
    findings: Vec<Map<String, Value>>,
}

/// The wired engine.
pub struct Backfill {
    client: Arc<GuardDutyClient>,
    pipeline: Pipeline,
    config: BackfillConfig,
    progress: Arc<dyn Progress>,
    stop: StopFn,
}

impl std::fmt::Debug for Backfill {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backfill")
            .field("client", &self.client)
            .field("pipeline", &self.pipeline)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Backfill {
    /// `pipeline` gets the query's filter: what the listing criteria push down and what the
    /// pipeline applies are one filter, so they cannot disagree.
    pub fn new(client: Arc<GuardDutyClient>, pipeline: Pipeline, config: BackfillConfig) -> Self {
        let pipeline = pipeline.with_filter(config.query.filter.clone());
        Self {
            client,
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
            api: self.client.stats(),
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
        let detectors = match self.client.list_detectors(&region).await {
            Ok(d) => d,
            Err(e) => {
                rep.error = Some(e.to_string());
                self.progress
                    .finish(&region, rep.counts(), rep.error.as_deref());
                return rep;
            }
        };
        if detectors.is_empty() {
            rep.note = Some("no GuardDuty detector in this region".to_owned());
        }
        rep.detectors = detectors.clone();
        for detector in detectors {
            if (self.stop)() {
                break;
            }
            if let Err(e) = self.run_listing(&region, &detector, settle, &mut rep).await {
                rep.error = Some(e.to_string());
                break;
            }
        }
        self.progress
            .finish(&region, rep.counts(), rep.error.as_deref());
        rep
    }

    /// Where checkpoints live: the store's key/value space (none without a store, or with a
    /// store that has none: then nothing resumes).
    fn checkpoints(&self) -> Option<Arc<dyn KvStore>> {
        self.pipeline.store().and_then(|s| Arc::clone(s).kv())
    }

    async fn load_checkpoint(&self, key: &str) -> Result<Option<Checkpoint>, GuardDutyError> {
        let Some(store) = self.checkpoints() else {
            return Ok(None);
        };
        let Some(text) = store.kv_get(CHECKPOINT_NAMESPACE, key).await? else {
            return Ok(None);
        };
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| GuardDutyError::Checkpoint {
                key: key.to_owned(),
                message: format!("{e}: {text:.200}"),
            })
    }

    async fn save_checkpoint(&self, key: &str, cp: Checkpoint) -> Result<(), GuardDutyError> {
        let Some(store) = self.checkpoints() else {
            return Ok(());
        };
        if !self.config.save_checkpoints {
            return Ok(());
        }
        let text = serde_json::to_string(&cp).map_err(|e| GuardDutyError::Checkpoint {
            key: key.to_owned(),
            message: e.to_string(),
        })?;
        store
            .kv_put(CHECKPOINT_NAMESPACE, key, &text, self.config.checkpoint_ttl)
            .await?;
        Ok(())
    }

    async fn run_listing(
        &self,
        region: &str,
        detector: &str,
        settle: Timestamp,
        rep: &mut RegionReport,
    ) -> Result<(), GuardDutyError> {
        let query = &self.config.query;
        let key = query.checkpoint_key(region, detector);
        let stored = if self.config.resume {
            self.load_checkpoint(&key).await?
        } else {
            None
        };
        let mut cp = Checkpoint::resume_from(stored, query.since);
        if cp.through > query.since {
            tracing::info!(region, detector, from = %cp.through, "resuming after checkpoint");
        }
        rep.checkpoint = Some(cp.through);
        // A retryably failed or foreign-pending version caps the checkpoint for the rest of the run.
        let mut cap: Option<Timestamp> = None;
        let mut failed_pages = 0u32;

        let (tx, mut rx) = mpsc::channel::<Result<Page, GuardDutyError>>(1);
        let producer = tokio::spawn(produce(
            self.client.clone(),
            region.to_owned(),
            detector.to_owned(),
            query.criteria(cp.through),
            tx,
            self.stop.clone(),
        ));
        // Dropping the receiver on an early return ends the producer at its next send.
        let _abort = AbortOnDrop(producer);

        while let Some(page) = rx.recv().await {
            let page = page?;
            if (self.stop)() {
                // This page was fetched but not processed: its findings stay after the checkpoint.
                break;
            }
            rep.listed += page.listed as u64;
            rep.fetched += page.findings.len() as u64;
            let findings = self.parse_page(region, page, rep);
            let mut candidate: Option<Timestamp> = None;
            if !findings.is_empty() {
                // The pipeline bounds sending by its claims' lease.
                let report = self.pipeline.process(&findings, None).await;
                rep.summary.merge(&report.summary);
                let mut any_sent_failure = false;
                for (f, o) in findings.iter().zip(&report.outcomes) {
                    let settled = match o {
                        Outcome::Forwarded { .. } | Outcome::Stale { .. } => true,
                        // Not wanted (the pipeline logged why): settled like a sent one.
                        Outcome::Filtered { .. } => true,
                        Outcome::Failed { retryable, reason } => {
                            tracing::warn!(region, finding = %f.id, version = %f.updated_at, reason, retryable, "finding not delivered");
                            any_sent_failure |= *retryable;
                            !*retryable
                        }
                        Outcome::Duplicate => true,
                        // Never sendable as it is: reported, and not worth holding the
                        // checkpoint for (like a definitive failure).
                        Outcome::Invalid { reason } => {
                            tracing::warn!(region, finding = %f.id, version = %f.updated_at, reason, "finding refused as invalid");
                            true
                        }
                        // Another sender holds it: not settled until that sender commits (or
                        // its lease ends and a later run sends it).
                        Outcome::InFlight { lease_until } => {
                            rep.pending.add(Some(*lease_until));
                            false
                        }
                    };
                    if settled {
                        if f.updated_at < settle {
                            candidate = candidate.max(Some(f.updated_at));
                        }
                    } else {
                        cap = Some(cap.map_or(f.updated_at, |c| c.min(f.updated_at)));
                    }
                }
                if any_sent_failure {
                    failed_pages += 1;
                } else {
                    failed_pages = 0;
                }
            }
            if let Some(mut c) = candidate {
                if let Some(cap) = cap {
                    c = c.min(cap);
                }
                if c > cp.through {
                    cp.through = c;
                    self.save_checkpoint(&key, cp).await?;
                    rep.checkpoint = Some(c);
                }
            }
            self.progress.update(region, rep.counts(), rep.checkpoint);
            if failed_pages >= self.config.max_failed_pages.max(1) {
                return Err(GuardDutyError::Config(format!(
                    "sending failed on {failed_pages} pages in a row; stopped listing detector {detector} (re-run to continue from the checkpoint)"
                )));
            }
        }
        Ok(())
    }

    /// Parses a page; findings sorted by `updatedAt` (the pipeline filters them).
    fn parse_page(&self, region: &str, page: Page, rep: &mut RegionReport) -> Vec<Finding> {
        let mut out = Vec::with_capacity(page.findings.len());
        for m in page.findings {
            for item in parse_value(Value::Object(m)) {
                match item {
                    Ok(Item::Finding(f)) => out.push(*f),
                    Ok(Item::Skipped { reason }) => {
                        rep.summary.received += 1;
                        rep.summary.skipped += 1;
                        tracing::warn!(region, reason, "GetFindings returned a non-finding");
                    }
                    Err(e) => {
                        rep.summary.received += 1;
                        rep.summary.invalid += 1;
                        tracing::warn!(region, error = %e, "GetFindings returned a finding we cannot parse");
                    }
                }
            }
        }
        out.sort_by_key(|f| f.updated_at);
        out
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Lists and fetches pages, one ahead of processing, until the listing ends or fails.
async fn produce(
    client: Arc<GuardDutyClient>,
    region: String,
    detector: String,
    criteria: Value,
    tx: mpsc::Sender<Result<Page, GuardDutyError>>,
    stop: StopFn,
) {
    let mut token: Option<String> = None;
    let mut seen: HashSet<String> = HashSet::new();
    loop {
        if stop() {
            return;
        }
        let page = match client
            .list_findings(&region, &detector, &criteria, true, token.as_deref())
            .await
        {
            Ok(p) => p,
            Err(e) => {
                let _ = tx.send(Err(e)).await;
                return;
            }
        };
        let findings = if page.ids.is_empty() {
            Vec::new()
        } else {
            match client.get_findings(&region, &detector, &page.ids).await {
                Ok(f) => f,
                Err(e) => {
                    let _ = tx.send(Err(e)).await;
                    return;
                }
            }
        };
        let next = page.next_token;
        if tx
            .send(Ok(Page {
                listed: page.ids.len(),
                findings,
            }))
            .await
            .is_err()
        {
            return;
        }
        match next {
            None => return,
            Some(t) => {
                if !seen.insert(t.clone()) {
                    let _ = tx
                        .send(Err(GuardDutyError::RepeatedPageToken {
                            region,
                            detector,
                            token: t,
                        }))
                        .await;
                    return;
                }
                token = Some(t);
            }
        }
    }
}
