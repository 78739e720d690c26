//! The finding source port of the backfill engine ([`crate::backfill`]): a source that lists a
//! query's findings page by page, oldest `updatedAt` first, per region and partition.
//!
//! Shaped after what the engine's guarantees need, and no more:
//! - **Partitions** ([`FindingPages::partitions`]): a region holds independent listings (GuardDuty:
//!   one per detector); each has its own checkpoint, so they are named.
//! - **Pages ordered by `updatedAt`** ([`FindingPages::page`]): a checkpoint is "everything below
//!   this `updatedAt` is settled", which only holds when the listing is sorted that way. A page
//!   carries the findings' JSON as the source returned it, so the engine parses, counts and
//!   refuses them as every other path does.
//! - **Opaque page tokens**: the engine stops a listing that hands back a token it already gave
//!   (a loop), so no source can make a run spin.
//! - **Checkpoint keys are the source's** ([`FindingPages::checkpoint_key`]): keys stored by
//!   earlier versions must still resume byte for byte, and two sources must not share one.
//! - **Names** ([`SourceNames`]) and **call counters** ([`ApiStats`]): messages and the summary
//!   name the source's own operations, so an operator can look them up in its documentation.
//!
//! The query ([`FindingQuery`]) is the source's input as data: the time range and the filter. How
//! a source narrows its listing with it (GuardDuty's `findingCriteria`) is its own business; it
//! may list more than the filter keeps, never less, since the pipeline applies the filter to
//! every fetched finding.

use async_trait::async_trait;
use gdfwd_model::{FilterInput, FindingFilter, Inclusion, Timestamp};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::error::SourceError;

/// The time range and filter of a backfill or gaps run.
#[derive(Debug, Clone, PartialEq)]
pub struct FindingQuery {
    /// Lower bound of `updatedAt` (inclusive).
    pub since: Timestamp,
    /// Upper bound of `updatedAt` (exclusive); `None`: up to now and whatever arrives meanwhile.
    pub until: Option<Timestamp>,
    /// Which findings are sent; the backfill engine gives it to the pipeline.
    pub filter: FindingFilter,
}

impl FindingQuery {
    /// From `since` on, with the default filter.
    pub fn new(since: Timestamp) -> Self {
        Self {
            since,
            until: None,
            filter: FindingFilter::default(),
        }
    }

    /// The filter, canonically, for checkpoint keys: the settings older versions had first, as
    /// they spelled them (so their checkpoints still resume), then every other setting that
    /// differs from the default ([`FindingFilter`]'s `Display`). Every setting counts, not only
    /// those a source can push down: a finding the filter dropped is settled, so a run with
    /// another filter must list it again.
    pub fn fingerprint(&self) -> String {
        let f = &self.filter;
        let accounts = f.list(FilterInput::IncludeAccount);
        let mut rest = f.clone();
        rest.accounts.include.clear();
        rest.min_severity = None;
        rest.archived = FindingFilter::default().archived;
        let rest = rest.to_string();
        format!(
            "accounts={};min_severity={};archived={}{}{rest}",
            if accounts.is_empty() {
                "*".to_owned()
            } else {
                accounts.join(",")
            },
            f.min_severity
                .map_or_else(|| "*".to_owned(), |s| s.to_string()),
            f.archived == Inclusion::Include,
            if rest.is_empty() { "" } else { ";" },
        )
    }
}

/// One page of a listing.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SourcePage {
    /// Finding ids the listing returned (counted as `listed`; a fetch may return fewer).
    pub listed: usize,
    /// The findings' JSON as the source returned it.
    pub findings: Vec<Map<String, Value>>,
    /// Where the listing continues; `None` at its end.
    pub next_token: Option<String>,
}

/// How messages name a source's parts, e.g. GuardDuty, `ListFindings`, `GetFindings`, detector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SourceNames {
    /// The service: "no {source} {partition} in this region".
    pub source: &'static str,
    /// The paged listing call, as the source's documentation names it.
    pub listing: &'static str,
    /// The call that returns the findings' JSON.
    pub fetch: &'static str,
    /// What one partition is.
    pub partition: &'static str,
}

/// Call counters (cumulative over the source's life).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ApiStats {
    pub calls: u64,
    pub retries: u64,
    pub throttled: u64,
}

/// A paged, `updatedAt`-ordered finding source (see the module documentation).
#[async_trait]
pub trait FindingPages: Send + Sync + std::fmt::Debug {
    fn names(&self) -> SourceNames;

    /// The store key of the checkpoint of `query`'s listing of `partition` in `region`; the
    /// same for queries with the same [`FindingQuery::fingerprint`], whatever their time range.
    fn checkpoint_key(&self, query: &FindingQuery, region: &str, partition: &str) -> String;

    /// The partitions of `region`, each listed on its own (none: nothing to list there).
    async fn partitions(&self, region: &str) -> Result<Vec<String>, SourceError>;

    /// One page of `query`'s findings with `from <= updatedAt`, oldest first: the first page
    /// without `token`, the next with the token the previous page returned. `from` is the same
    /// for every page of one listing; the token carries the position.
    async fn page(
        &self,
        region: &str,
        partition: &str,
        query: &FindingQuery,
        from: Timestamp,
        token: Option<&str>,
    ) -> Result<SourcePage, SourceError>;

    /// Calls made so far, retries and throttled answers among them. Default: none counted.
    fn stats(&self) -> ApiStats {
        ApiStats::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apply(q: &mut FindingQuery, input: FilterInput, value: &str) {
        q.filter.apply(input, value, input.name()).expect("valid");
    }

    /// Checkpoints saved before filters existed resume: the settings they had are spelled as
    /// they were.
    #[test]
    fn fingerprints_of_the_old_settings_are_unchanged() {
        let mut q = FindingQuery::new(Timestamp::from_millis(1));
        assert_eq!(q.fingerprint(), "accounts=*;min_severity=*;archived=false");
        apply(
            &mut q,
            FilterInput::IncludeAccount,
            "222222222222,111111111111",
        );
        apply(&mut q, FilterInput::MinSeverity, "5");
        apply(&mut q, FilterInput::Archived, "include");
        assert_eq!(
            q.fingerprint(),
            "accounts=111111111111,222222222222;min_severity=5;archived=true"
        );
        apply(&mut q, FilterInput::ExcludeType, "Recon:*");
        assert_eq!(
            q.fingerprint(),
            "accounts=111111111111,222222222222;min_severity=5;archived=true;exclude-type=Recon:*"
        );
    }
}
