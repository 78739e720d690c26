//! `gdfwd audit gaps`: the finding versions a source holds (GuardDuty's API, through the same
//! [`FindingPages`] port as the backfill) that the store never recorded as sent, with the reason
//! when the store knows one, and `backfill --only-gaps` to send exactly those.
//!
//! GuardDuty keeps only the latest version of each finding, so a gap is "the store has no `sent`
//! record for this `updatedAt` or a newer one". The reason comes from the finding's store
//! history: never seen at all, seen only in older versions, failed (with the last error),
//! pending under a lease, or suppressed as stale.
//!
//! This returns the gaps as data; the CLI prints them (`gdfwd-cli/src/render/gaps.rs`).

use std::collections::HashSet;
use std::sync::Arc;

use futures::StreamExt;
use gdfwd_model::{Finding, Item, Timestamp, Verdict, parse_value};
use serde::Serialize;
use serde_json::Value;

use super::listing::follow;
use super::{BackfillError, StopFn};
use crate::pipeline::{Pipeline, Summary};
use crate::source::{FindingPages, FindingQuery};
use crate::store::{FindingHistory, HistoryKind, StateStore, Status};

/// Findings `--only-gaps` sends per batch: a backfill page's worth (GuardDuty's 50).
const SEND_BATCH: usize = 50;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum GapReason {
    /// The store has no record of the finding.
    NeverSeen,
    /// The store knows older versions only.
    VersionNeverSeen,
    /// Sending this version failed (released with a reason).
    Failed,
    /// Claimed under a lease, not committed (in flight, or a killed run).
    Pending,
    /// Suppressed because a newer version was claimed, which was not sent either.
    Stale,
}

impl GapReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NeverSeen => "never seen",
            Self::VersionNeverSeen => "version never seen",
            Self::Failed => "failed",
            Self::Pending => "pending",
            Self::Stale => "stale",
        }
    }
}

/// One unsent finding version.
#[derive(Debug, Clone)]
pub struct Gap {
    pub finding: Finding,
    pub reason: GapReason,
    /// The store's detail: last error, lease end, newest version seen.
    pub detail: Option<String>,
}

/// What a gaps scan found.
#[derive(Debug, Clone, Default)]
pub struct GapsReport {
    pub gaps: Vec<Gap>,
    /// Findings GuardDuty returned for the query.
    pub checked: u64,
    /// Of those, already sent.
    pub covered: u64,
    /// (region, error) for regions that could not be scanned completely.
    pub errors: Vec<(String, String)>,
    pub interrupted: bool,
}

/// Classifies GuardDuty's version `version` of a finding against its store history;
/// `None` when that version (or a newer one) was sent.
pub fn classify(
    history: Option<&FindingHistory>,
    version: Timestamp,
) -> Option<(GapReason, Option<String>)> {
    let Some(h) = history else {
        return Some((GapReason::NeverSeen, None));
    };
    let r = &h.record;
    let sent = h
        .entries
        .iter()
        .any(|e| matches!(e.kind, HistoryKind::Sent { .. }) && e.version >= version)
        || (r.status == Status::Sent && r.latest_version >= version);
    if sent {
        return None;
    }
    if r.latest_version == version {
        match r.status {
            Status::Pending => {
                return Some((
                    GapReason::Pending,
                    r.lease_until.map(|t| format!("lease until {t}")),
                ));
            }
            Status::Failed => return Some((GapReason::Failed, r.last_error.clone())),
            Status::Sent => {}
        }
    }
    let last_for_version = h.entries.iter().rev().find(|e| e.version == version);
    match last_for_version.map(|e| &e.kind) {
        Some(HistoryKind::Failed { reason }) => Some((GapReason::Failed, Some(reason.clone()))),
        Some(HistoryKind::Stale { newest }) => Some((
            GapReason::Stale,
            Some(format!("newer version {newest} was claimed but not sent")),
        )),
        Some(HistoryKind::Claimed | HistoryKind::Duplicate | HistoryKind::InFlight { .. }) => {
            Some((GapReason::Pending, None))
        }
        Some(HistoryKind::Sent { .. }) => None,
        None if r.latest_version > version => Some((
            GapReason::Stale,
            Some(format!(
                "store saw newer version {} ({})",
                r.latest_version,
                r.status.as_str()
            )),
        )),
        None => Some((
            GapReason::VersionNeverSeen,
            Some(format!("store last saw version {}", r.latest_version)),
        )),
    }
}

/// One region's gaps, findings checked, findings covered.
type RegionScan = (Vec<Gap>, u64, u64);

/// Lists the query's findings in `regions` and classifies each against the store.
pub async fn find_gaps(
    source: Arc<dyn FindingPages>,
    store: Arc<dyn StateStore>,
    query: &FindingQuery,
    regions: &[String],
    concurrency: usize,
    stop: StopFn,
) -> GapsReport {
    let per_region: Vec<(String, Result<RegionScan, BackfillError>)> =
        futures::stream::iter(regions.to_vec())
            .map(|region| {
                let source = source.clone();
                let store = store.clone();
                let stop = stop.clone();
                async move {
                    let r = scan_region(&*source, &store, query, &region, stop).await;
                    (region, r)
                }
            })
            .buffer_unordered(concurrency.max(1))
            .collect()
            .await;
    let mut report = GapsReport {
        interrupted: stop(),
        ..GapsReport::default()
    };
    let mut per_region = per_region;
    per_region.sort_by(|a, b| a.0.cmp(&b.0));
    for (region, r) in per_region {
        match r {
            Ok((gaps, checked, covered)) => {
                report.gaps.extend(gaps);
                report.checked += checked;
                report.covered += covered;
            }
            Err(e) => report.errors.push((region, e.to_string())),
        }
    }
    report
}

async fn scan_region(
    source: &dyn FindingPages,
    store: &Arc<dyn StateStore>,
    query: &FindingQuery,
    region: &str,
    stop: StopFn,
) -> Result<RegionScan, BackfillError> {
    let mut scan: RegionScan = (Vec::new(), 0, 0);
    for partition in source.partitions(region).await? {
        let mut token: Option<String> = None;
        let mut seen = HashSet::new();
        loop {
            if stop() {
                return Ok(scan);
            }
            let page = source
                .page(region, &partition, query, query.since, token.as_deref())
                .await?;
            for m in page.findings {
                check(store, query, Value::Object(m), &mut scan).await?;
            }
            let names = source.names();
            token = follow(&mut seen, page.next_token, names, region, &partition)?;
            if token.is_none() {
                break;
            }
        }
    }
    scan.0.sort_by_key(|g| g.finding.updated_at);
    Ok(scan)
}

/// Classifies one fetched finding the filter keeps against the store: covered, or a gap.
async fn check(
    store: &Arc<dyn StateStore>,
    query: &FindingQuery,
    json: Value,
    (gaps, checked, covered): &mut RegionScan,
) -> Result<(), BackfillError> {
    for item in parse_value(json) {
        let Ok(Item::Finding(f)) = item else { continue };
        // What the filter drops is not sent on purpose: not a gap.
        if query.filter.verdict(&f) != Verdict::Keep {
            continue;
        }
        *checked += 1;
        let history = store.history(&f.id).await?;
        match classify(history.as_ref(), f.updated_at) {
            None => *covered += 1,
            Some((reason, detail)) => gaps.push(Gap {
                finding: *f,
                reason,
                detail,
            }),
        }
    }
    Ok(())
}

/// Sends the gaps' findings through the pipeline (claims still decide: a gap another process
/// filled meanwhile is a duplicate). Stops between batches when `stop` says so. The pipeline
/// bounds each batch's sending by its claims' lease.
pub async fn send_gaps(pipeline: &Pipeline, gaps: &[Gap], stop: StopFn) -> (Summary, bool) {
    let mut summary = Summary::default();
    let findings: Vec<Finding> = gaps.iter().map(|g| g.finding.clone()).collect();
    for chunk in findings.chunks(SEND_BATCH) {
        if stop() {
            return (summary, true);
        }
        let report = pipeline.process(chunk, None).await;
        summary.merge(&report.summary);
    }
    (summary, false)
}
