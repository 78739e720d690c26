//! The dedup state store port: decides, atomically, whether a version of a finding must be sent.
//!
//! Contract (both backends pass the same suite, `gdfwd_core::contract` (feature `contract`) in the SQLite crate's
//! and DynamoDB crate's tests):
//! - key: the finding id; version: normalised `updatedAt` (ms);
//! - `claim` decides as [`judge_claim`] does on the finding's record: [`ClaimOutcome::Stale`]
//!   only when a newer version was **delivered**; [`ClaimOutcome::Duplicate`] when this exact
//!   version was delivered; [`ClaimOutcome::InFlight`] when this version or a newer one is
//!   under another live lease (recorded in the history but counted nowhere: not a final answer,
//!   its holder may still fail); otherwise [`ClaimOutcome::New`] (never seen, newer than every claim, or
//!   the claim that stood in its way was released or its lease ended). A claim that failed or
//!   was refused therefore never blocks an older version;
//! - every winning claim carries a random [`Owner`] token; `commit` (marks the version sent)
//!   and `release` (frees it at once and records why) are applied only for the claim's current
//!   owner, as [`judge_finish`] decides: a sender whose lease ran out and whose version another
//!   sender re-claimed gets [`StoreError::StaleOwner`], and nothing is written;
//! - every history entry carries a per-finding sequence number the store increments in the same
//!   write (transaction) that records the event, so the history is ordered by the store, not by
//!   the writers' clocks;
//! - records expire `retention` after their last update; expired records read as absent;
//! - a small key/value space (alias cache, backfill checkpoints) lives beside the findings.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use gdfwd_model::{FindingMeta, Timestamp};
use serde::{Deserialize, Serialize};

use crate::error::StoreError;

/// One version of one finding.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct VersionKey {
    pub finding_id: String,
    pub version: Timestamp,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ClaimRequest {
    pub key: VersionKey,
    pub meta: FindingMeta,
}

/// The token of one winning claim (random per claim). Only the claim's owner may commit or
/// release it: a sender whose lease ran out, and whose version another sender then claimed,
/// holds a stale token, and its late commit or release is refused instead of overwriting what
/// the new owner does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Owner(pub u128);

impl Owner {
    /// The owner of claims made without a store (`--dry-run`, `--no-dedup`): never committed.
    pub const NONE: Owner = Owner(0);
}

impl std::fmt::Display for Owner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

impl std::str::FromStr for Owner {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        u128::from_str_radix(s, 16)
            .map(Owner)
            .map_err(|e| format!("owner token {s:?} is not 32 hex digits: {e}"))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimOutcome {
    /// The caller holds a lease on this version and must send it, then commit or release it
    /// as `owner`.
    New { owner: Owner },
    /// This exact version was sent.
    Duplicate,
    /// This exact version, or a newer one, is being sent under another live lease, which ends
    /// at `lease_until` (for a newer one: a retry after the lease finds it delivered, and is
    /// Stale, or released, and is sent).
    /// Not sent by this caller and not known delivered: if the holder fails without releasing,
    /// the version is claimable again only after the lease. A caller that must not lose it (an
    /// SQS message, a backfill checkpoint) retries after `lease_until` instead of dropping it.
    InFlight { lease_until: Timestamp },
    /// A newer version (`newest`) was already delivered.
    Stale { newest: Timestamp },
}

/// The claim decision every backend makes, from the finding's live record (`None`: never seen
/// or expired) at `now`; the backends apply it atomically (SQLite in a write transaction,
/// DynamoDB as a conditional write whose condition is this rule). Stale is judged against the
/// newest version **delivered**, never against a claim: a version that failed, was refused or
/// whose sender died must not keep older versions from being sent.
pub fn judge_claim(record: Option<&FindingRecord>, v: Timestamp, now: Timestamp) -> ClaimOutcome {
    let new = ClaimOutcome::New { owner: Owner::NONE };
    let Some(r) = record else {
        return new;
    };
    // A record written before `sent_version` existed: its latest version, when sent, is the
    // newest delivered one as far as it can tell.
    let sent = r
        .sent_version
        .or((r.status == Status::Sent).then_some(r.latest_version));
    match sent {
        Some(newest) if v < newest => return ClaimOutcome::Stale { newest },
        Some(newest) if v == newest => return ClaimOutcome::Duplicate,
        _ => {}
    }
    if v > r.latest_version {
        return new;
    }
    // This version, or an older one than the last claimed: only a live claim stands in the
    // way. A sent latest version is `sent` above; a released one or an ended lease frees it.
    match (r.status, r.lease_until) {
        (Status::Pending, Some(lease_until)) if lease_until > now => {
            ClaimOutcome::InFlight { lease_until }
        }
        // A pending claim without a lease cannot come from our writes: the conservative answer.
        (Status::Pending, None) | (Status::Sent, _) => ClaimOutcome::Duplicate,
        (Status::Pending | Status::Failed, _) => new,
    }
}

impl ClaimOutcome {
    /// The owner token of a winning claim; `None` for every other outcome.
    pub fn owner(&self) -> Option<Owner> {
        match self {
            Self::New { owner } => Some(*owner),
            _ => None,
        }
    }

    pub fn is_new(&self) -> bool {
        matches!(self, Self::New { .. })
    }
}

/// How a `commit` or `release` of `key` by `owner` applies to the finding's live record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FinishCheck {
    /// The latest version, claimed by this owner: the status changes.
    Latest,
    /// An older version than the latest (a newer one was claimed since): recorded (counters,
    /// history) without changing the newer version's status. The record keeps only the latest
    /// claim's owner, so an older version's owner cannot be checked.
    Older,
    /// The latest version, but its current claim is another owner's (this sender's lease ran
    /// out and another sender claimed it): refused, nothing written.
    StaleOwner,
    /// Never claimed (unknown finding, expired record, or newer than every claim): refused.
    NotClaimed(&'static str),
}

/// The finish decision every backend makes (SQLite in its write transaction, DynamoDB as the
/// write's condition, then from the old record the failed condition returns).
pub fn judge_finish(record: Option<&FindingRecord>, key: &VersionKey, owner: Owner) -> FinishCheck {
    match record {
        None => FinishCheck::NotClaimed("the finding was never claimed (or its record expired)"),
        Some(r) if key.version > r.latest_version => FinishCheck::NotClaimed(
            "this version is newer than every claimed version, so it was never claimed",
        ),
        Some(r) if key.version < r.latest_version => FinishCheck::Older,
        Some(r) if r.owner == Some(owner) => FinishCheck::Latest,
        Some(_) => FinishCheck::StaleOwner,
    }
}

/// What Dynatrace accepted for a committed version.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Delivery {
    pub event_ids: Vec<String>,
    /// The request id(s) Dynatrace answered with, when any.
    pub request_id: Option<String>,
}

/// How a claimed version ended, for [`StateStore::finish_many`].
#[derive(Debug, Clone, PartialEq)]
pub enum Finish {
    /// Delivered: [`StateStore::commit`].
    Commit(Delivery),
    /// Not delivered, for this reason: [`StateStore::release`].
    Release(String),
}

/// Status of a finding's latest version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Claimed under a lease, not yet committed or released.
    Pending,
    Sent,
    /// Released after a failure; claimable again.
    Failed,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Sent => "sent",
            Self::Failed => "failed",
        }
    }
}

/// One line of a finding's audit history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum HistoryKind {
    Claimed,
    Sent {
        event_ids: Vec<String>,
        request_id: Option<String>,
    },
    Duplicate,
    /// The version (or a newer one) was being sent under another live claim: not a final
    /// answer (the caller tries again later), so no counter records it.
    #[serde(rename = "in_flight")]
    InFlight {
        lease_until: Timestamp,
    },
    Stale {
        newest: Timestamp,
    },
    Failed {
        reason: String,
    },
}

impl HistoryKind {
    /// The kind's name, as serialised in `kind` (`claimed`, `sent`, `in_flight`, ...).
    pub fn name(&self) -> &'static str {
        match self {
            Self::Claimed => "claimed",
            Self::Sent { .. } => "sent",
            Self::Duplicate => "duplicate",
            Self::InFlight { .. } => "in_flight",
            Self::Stale { .. } => "stale",
            Self::Failed { .. } => "failed",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// The entry's place in the finding's history, counted by the store in the write that
    /// recorded it: 1, 2, 3... per record (a record that expired and started afresh counts from
    /// 1 again). `None` for an entry written before sequence numbers existed (DynamoDB items of
    /// an older gdfwd; SQLite numbers its old entries when it migrates).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    /// When it happened, by the writer's clock (shown beside the order; never used to order).
    pub at: Timestamp,
    /// Which version of the finding it concerned.
    pub version: Timestamp,
    #[serde(flatten)]
    pub kind: HistoryKind,
}

/// The per-finding record audit queries return.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FindingRecord {
    pub finding_id: String,
    /// Account, region, type, severity, title of the latest version seen.
    pub meta: FindingMeta,
    /// The version claimed last: normally the newest claimed, but an older version claimed after
    /// a newer one was released (or its lease ended) takes its place.
    pub latest_version: Timestamp,
    /// The newest version delivered (committed), which is what makes older versions stale.
    /// `None` when no version was delivered (or, on a record written before this field
    /// existed, when its latest version was not the one delivered).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sent_version: Option<Timestamp>,
    pub status: Status,
    /// For `Pending`: when the lease runs out.
    pub lease_until: Option<Timestamp>,
    pub first_seen: Timestamp,
    pub last_seen: Timestamp,
    pub versions_sent: u64,
    pub duplicates: u64,
    pub stale: u64,
    pub failures: u64,
    pub last_error: Option<String>,
    /// When the record expires (TTL).
    pub expires_at: Timestamp,
    /// The owner token of the latest claim (`None` on a record whose latest claim an older
    /// gdfwd made).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<Owner>,
    /// History entries written to this record so far: the sequence number of the last one.
    #[serde(default)]
    pub seq: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FindingHistory {
    pub record: FindingRecord,
    /// Oldest first.
    pub entries: Vec<HistoryEntry>,
}

/// `audit list --status`: `duplicate` and `stale` select findings with that counter above zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusFilter {
    Sent,
    Duplicate,
    Stale,
    Failed,
    Pending,
}

impl std::str::FromStr for StatusFilter {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "sent" => Self::Sent,
            "duplicate" => Self::Duplicate,
            "stale" => Self::Stale,
            "failed" => Self::Failed,
            "pending" => Self::Pending,
            other => {
                return Err(format!(
                    "unknown status {other:?}: expected sent, duplicate, stale, failed or pending"
                ));
            }
        })
    }
}

/// Filters of `audit list` (all optional; `since`/`until` apply to `last_seen`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ListQuery {
    pub account: Option<String>,
    pub since: Option<Timestamp>,
    pub until: Option<Timestamp>,
    pub status: Option<StatusFilter>,
    /// Finding type prefix, e.g. `Recon:EC2`.
    pub finding_type: Option<String>,
    pub limit: Option<usize>,
}

impl ListQuery {
    /// Whether a record passes every filter; backends may pre-filter with indexes, then apply this.
    pub fn matches(&self, r: &FindingRecord) -> bool {
        self.account
            .as_ref()
            .is_none_or(|a| &r.meta.account_id == a)
            && self.since.is_none_or(|t| r.last_seen >= t)
            && self.until.is_none_or(|t| r.last_seen < t)
            && self.finding_type.as_ref().is_none_or(|p| {
                r.meta
                    .finding_type
                    .as_deref()
                    .is_some_and(|t| t.starts_with(p.as_str()))
            })
            && self.status.is_none_or(|s| match s {
                StatusFilter::Sent => r.versions_sent > 0,
                StatusFilter::Duplicate => r.duplicates > 0,
                StatusFilter::Stale => r.stale > 0,
                StatusFilter::Failed => r.failures > 0 && r.status == Status::Failed,
                StatusFilter::Pending => r.status == Status::Pending,
            })
    }
}

/// An auxiliary key/value space whose values expire: the enrichment cache (namespace `alias`)
/// and run checkpoints (`checkpoint`). Apart from [`StateStore`] because nothing in it is about
/// dedup: both backends offer it (through [`StateStore::kv`]), a future one may not.
#[async_trait]
pub trait KvStore: Send + Sync + std::fmt::Debug {
    /// Reads `namespace`/`key`; expired values read as `None`.
    async fn kv_get(&self, namespace: &str, key: &str) -> Result<Option<String>, StoreError>;

    /// Writes `namespace`/`key`, expiring after `ttl`.
    async fn kv_put(
        &self,
        namespace: &str,
        key: &str,
        value: &str,
        ttl: Duration,
    ) -> Result<(), StoreError>;
}

#[async_trait]
pub trait StateStore: Send + Sync + std::fmt::Debug {
    /// Human-readable description for logs and errors, e.g. `sqlite:/path/state.db`.
    fn describe(&self) -> String;

    /// Why this store could never record `req` (a key or item over the backend's limits), or
    /// `None`. The pipeline asks before claiming and refuses such a finding alone as invalid,
    /// so one poison finding does not fail the claim of its whole batch. Default: none.
    fn refuses(&self, _req: &ClaimRequest) -> Option<String> {
        None
    }

    /// Claims one version under a lease of `lease`. Counts duplicates and stale suppressions
    /// (final answers; an answer in flight is only recorded in the history).
    async fn claim(&self, req: &ClaimRequest, lease: Duration) -> Result<ClaimOutcome, StoreError>;

    /// Claims several versions; outcomes in input order. Backends may batch the writes, but the
    /// result must equal claiming them one by one in order.
    async fn claim_many(
        &self,
        reqs: &[ClaimRequest],
        lease: Duration,
    ) -> Result<Vec<ClaimOutcome>, StoreError> {
        let mut out = Vec::with_capacity(reqs.len());
        for r in reqs {
            out.push(self.claim(r, lease).await?);
        }
        Ok(out)
    }

    /// Marks a version `owner` claimed as sent. Committing a version that is no longer the
    /// latest (a newer one was claimed meanwhile) records the delivery without moving
    /// `latest_version` back. [`StoreError::StaleOwner`] when another claim replaced `owner`'s
    /// ([`judge_finish`]); nothing is written then.
    async fn commit(
        &self,
        key: &VersionKey,
        owner: Owner,
        delivery: &Delivery,
    ) -> Result<(), StoreError>;

    /// Frees a version `owner` claimed at once (a retry may claim it again) and records
    /// `reason`; refused as `commit` is.
    async fn release(&self, key: &VersionKey, owner: Owner, reason: &str)
    -> Result<(), StoreError>;

    /// Commits or releases several claimed versions: one result per input, in input order.
    /// Backends may batch the writes (the Lambda's per-finding cost is mostly per request), but
    /// the result must equal calling [`commit`](Self::commit) / [`release`](Self::release) one
    /// by one in order, and one item's failure must not keep the others from being recorded.
    async fn finish_many(
        &self,
        items: &[(VersionKey, Owner, Finish)],
    ) -> Vec<Result<(), StoreError>> {
        let mut out = Vec::with_capacity(items.len());
        for (key, owner, finish) in items {
            out.push(match finish {
                Finish::Commit(d) => self.commit(key, *owner, d).await,
                Finish::Release(reason) => self.release(key, *owner, reason).await,
            });
        }
        out
    }

    /// The finding's record and full history; `None` when unknown or expired.
    async fn history(&self, finding_id: &str) -> Result<Option<FindingHistory>, StoreError>;

    /// Records passing `query`, most recently seen first.
    async fn list(&self, query: &ListQuery) -> Result<Vec<FindingRecord>, StoreError>;

    /// The store's key/value space ([`KvStore`]: enrichment's cache, run checkpoints), when it
    /// has one. Default: none, so a dedup-only backend need not implement it; enrichment then
    /// caches in memory only and runs keep no checkpoints.
    fn kv(self: Arc<Self>) -> Option<Arc<dyn KvStore>> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_history_kind_is_named_as_it_is_serialised() {
        let t = Timestamp::from_millis(1);
        for kind in [
            HistoryKind::Claimed,
            HistoryKind::Sent {
                event_ids: vec![],
                request_id: None,
            },
            HistoryKind::Duplicate,
            HistoryKind::InFlight { lease_until: t },
            HistoryKind::Stale { newest: t },
            HistoryKind::Failed {
                reason: "x".to_owned(),
            },
        ] {
            let json = serde_json::to_value(&kind).expect("serialise");
            assert_eq!(json["kind"], kind.name(), "{kind:?}");
        }
    }
}
