//! One listing (a region's partition): a producer task lists and fetches pages one ahead of
//! processing; each page is parsed, processed as one batch, its outcomes settled, and the
//! checkpoint advanced to what is settled (the rules are in the parent module's documentation).

use std::collections::HashSet;
use std::sync::Arc;

use gdfwd_model::{Finding, Item, Timestamp, parse_value};
use serde_json::Value;
use tokio::sync::mpsc;

use super::{Backfill, BackfillError, Checkpoint, PendingClaims, RegionReport, StopFn};
use crate::pipeline::Outcome;
use crate::source::{FindingPages, FindingQuery, SourceNames, SourcePage};

/// Where one listing's checkpoint stands and what holds it back.
struct Listing<'a> {
    region: &'a str,
    partition: &'a str,
    key: String,
    cp: Checkpoint,
    /// A retryably failed or foreign-pending version caps the checkpoint for the rest of the run.
    cap: Option<Timestamp>,
    /// Consecutive pages on which a send failed retryably.
    failed_pages: u32,
}

impl Backfill {
    pub(super) async fn run_listing(
        &self,
        region: &str,
        partition: &str,
        settle: Timestamp,
        rep: &mut RegionReport,
    ) -> Result<(), BackfillError> {
        let mut listing = self.open_listing(region, partition, rep).await?;
        let (tx, mut rx) = mpsc::channel::<Result<SourcePage, BackfillError>>(1);
        let producer = tokio::spawn(produce(
            Producer {
                source: self.source.clone(),
                region: region.to_owned(),
                partition: partition.to_owned(),
                query: self.config.query.clone(),
                from: listing.cp.through,
                stop: self.stop.clone(),
            },
            tx,
        ));
        // Dropping the receiver on an early return ends the producer at its next send.
        let _abort = AbortOnDrop(producer);

        while let Some(page) = rx.recv().await {
            let page = page?;
            if (self.stop)() {
                // This page was fetched but not processed: its findings stay after the checkpoint.
                break;
            }
            self.take_page(&mut listing, page, settle, rep).await?;
        }
        Ok(())
    }

    /// The listing's checkpoint: the stored one when the run resumes and its range covers
    /// `--since`, else a fresh one at `--since`.
    async fn open_listing<'a>(
        &self,
        region: &'a str,
        partition: &'a str,
        rep: &mut RegionReport,
    ) -> Result<Listing<'a>, BackfillError> {
        let query = &self.config.query;
        let key = self.source.checkpoint_key(query, region, partition);
        let stored = if self.config.resume {
            self.load_checkpoint(&key).await?
        } else {
            None
        };
        let cp = Checkpoint::resume_from(stored, query.since);
        if cp.through > query.since {
            tracing::info!(region, detector = partition, from = %cp.through, "resuming after checkpoint");
        }
        rep.checkpoint = Some(cp.through);
        Ok(Listing {
            region,
            partition,
            key,
            cp,
            cap: None,
            failed_pages: 0,
        })
    }

    /// Processes one page, advances the checkpoint, and stops the listing when sending has
    /// failed on too many pages in a row.
    async fn take_page(
        &self,
        listing: &mut Listing<'_>,
        page: SourcePage,
        settle: Timestamp,
        rep: &mut RegionReport,
    ) -> Result<(), BackfillError> {
        rep.listed += page.listed as u64;
        rep.fetched += page.findings.len() as u64;
        let findings = parse_page(listing.region, self.source.names().fetch, page, rep);
        let candidate = if findings.is_empty() {
            None
        } else {
            self.settle_page(listing, &findings, settle, rep).await
        };
        self.advance(listing, candidate, rep).await?;
        let region = listing.region;
        self.progress.update(region, rep.counts(), rep.checkpoint);
        let pages = listing.failed_pages;
        if pages >= self.config.max_failed_pages.max(1) {
            return Err(BackfillError::SendingFailed {
                pages,
                kind: self.source.names().partition,
                partition: listing.partition.to_owned(),
            });
        }
        Ok(())
    }

    /// Sends the page's findings and settles each outcome: the newest settled `updatedAt` below
    /// `settle` (a checkpoint candidate); an unsettled one caps the listing's checkpoint.
    async fn settle_page(
        &self,
        listing: &mut Listing<'_>,
        findings: &[Finding],
        settle: Timestamp,
        rep: &mut RegionReport,
    ) -> Option<Timestamp> {
        // The pipeline bounds sending by its claims' lease.
        let report = self.pipeline.process(findings, None).await;
        rep.summary.merge(&report.summary);
        let mut candidate: Option<Timestamp> = None;
        let mut any_sent_failure = false;
        for (f, o) in findings.iter().zip(&report.outcomes) {
            let settled = is_settled(listing.region, f, o, &mut rep.pending);
            any_sent_failure |= matches!(
                o,
                Outcome::Failed {
                    retryable: true,
                    ..
                }
            );
            if settled {
                if f.updated_at < settle {
                    candidate = candidate.max(Some(f.updated_at));
                }
            } else {
                listing.cap = Some(listing.cap.map_or(f.updated_at, |c| c.min(f.updated_at)));
            }
        }
        if any_sent_failure {
            listing.failed_pages += 1;
        } else {
            listing.failed_pages = 0;
        }
        candidate
    }

    /// Moves the checkpoint up to `candidate` (held at the listing's cap) and saves it.
    async fn advance(
        &self,
        listing: &mut Listing<'_>,
        candidate: Option<Timestamp>,
        rep: &mut RegionReport,
    ) -> Result<(), BackfillError> {
        let Some(mut c) = candidate else {
            return Ok(());
        };
        if let Some(cap) = listing.cap {
            c = c.min(cap);
        }
        if c > listing.cp.through {
            listing.cp.through = c;
            self.save_checkpoint(&listing.key, listing.cp).await?;
            rep.checkpoint = Some(c);
        }
        Ok(())
    }
}

/// Whether an outcome settles its finding's version, so the checkpoint may pass it.
fn is_settled(region: &str, f: &Finding, o: &Outcome, pending: &mut PendingClaims) -> bool {
    match o {
        Outcome::Forwarded { .. } | Outcome::Stale { .. } => true,
        // Not wanted (the pipeline logged why): settled like a sent one.
        Outcome::Filtered { .. } => true,
        Outcome::Failed { retryable, reason } => {
            tracing::warn!(region, finding = %f.id, version = %f.updated_at, reason, retryable, "finding not delivered");
            !*retryable
        }
        Outcome::Duplicate => true,
        // Never sendable as it is: reported, and not worth holding the checkpoint for (like a
        // definitive failure).
        Outcome::Invalid { reason } => {
            tracing::warn!(region, finding = %f.id, version = %f.updated_at, reason, "finding refused as invalid");
            true
        }
        // Another sender holds it: not settled until that sender commits (or its lease ends and
        // a later run sends it).
        Outcome::InFlight { lease_until } => {
            pending.add(Some(*lease_until));
            false
        }
    }
}

/// Parses a page; findings sorted by `updatedAt` (the pipeline filters them). `fetch` names the
/// source's call in the warnings.
fn parse_page(region: &str, fetch: &str, page: SourcePage, rep: &mut RegionReport) -> Vec<Finding> {
    let mut out = Vec::with_capacity(page.findings.len());
    for m in page.findings {
        for item in parse_value(Value::Object(m)) {
            match item {
                Ok(Item::Finding(f)) => out.push(*f),
                Ok(Item::Skipped { reason }) => {
                    rep.summary.received += 1;
                    rep.summary.skipped += 1;
                    tracing::warn!(region, reason, "{fetch} returned a non-finding");
                }
                Err(e) => {
                    rep.summary.received += 1;
                    rep.summary.invalid += 1;
                    tracing::warn!(region, error = %e, "{fetch} returned a finding we cannot parse");
                }
            }
        }
    }
    out.sort_by_key(|f| f.updated_at);
    out
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// What the producer task lists, owned: a spawned task may hold no borrow.
struct Producer {
    source: Arc<dyn FindingPages>,
    region: String,
    partition: String,
    query: FindingQuery,
    /// The listing's start (the checkpoint it resumed at).
    from: Timestamp,
    stop: StopFn,
}

/// Lists and fetches pages, one ahead of processing, until the listing ends or fails.
async fn produce(p: Producer, tx: mpsc::Sender<Result<SourcePage, BackfillError>>) {
    let mut token: Option<String> = None;
    let mut seen: HashSet<String> = HashSet::new();
    loop {
        if (p.stop)() {
            return;
        }
        let page = p
            .source
            .page(&p.region, &p.partition, &p.query, p.from, token.as_deref())
            .await;
        let next = match &page {
            Ok(page) => page.next_token.clone(),
            Err(_) => None,
        };
        if tx.send(page.map_err(BackfillError::from)).await.is_err() {
            return;
        }
        let names = p.source.names();
        match follow(&mut seen, next, names, &p.region, &p.partition) {
            Ok(Some(t)) => token = Some(t),
            Ok(None) => return,
            Err(e) => {
                let _ = tx.send(Err(e)).await;
                return;
            }
        }
    }
}

/// The page token to follow next (`None`: the listing ended), or the error that stops a listing
/// handing back a token it gave before (following it would loop forever).
pub(super) fn follow(
    seen: &mut HashSet<String>,
    next: Option<String>,
    names: SourceNames,
    region: &str,
    partition: &str,
) -> Result<Option<String>, BackfillError> {
    match next {
        Some(t) if !seen.insert(t.clone()) => Err(BackfillError::RepeatedPageToken {
            listing: names.listing,
            region: region.to_owned(),
            kind: names.partition,
            partition: partition.to_owned(),
            token: t,
        }),
        next => Ok(next),
    }
}
