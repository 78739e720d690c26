//! The forwarding pipeline: filter → claim → enrich → map → send → commit/release, for one batch.
//!
//! Every caller (the Lambda per invocation, `gdfwd forward` per chunk of input, backfill per page)
//! hands a batch of parsed findings to [`Pipeline::process`] and gets one [`Outcome`] per finding
//! back, in order, so it can report SQS item failures, advance checkpoints or print summaries.
//!
//! Invariants:
//! - with a store, nothing is sent that was not claimed first; a store that cannot be reached fails
//!   the batch as retryable, it never degrades to sending without dedup;
//! - a finding version is committed only when every one of its events was accepted; otherwise its
//!   claim is released so a retry can send it again (events carry deterministic ids, so a partial
//!   resend is recognisable downstream);
//! - a version another sender is sending is [`Outcome::InFlight`], never reported as done: if
//!   that sender dies, only a caller that tries again after the lease still delivers it;
//! - a finding the filter ([`FindingFilter`]) drops is [`Outcome::Filtered`]: decided before the
//!   claim, so it is never claimed, sent or recorded in the store. Its info log line (finding id,
//!   `updatedAt`, the reason) is its only trail, by design: the store records what was sent;
//! - enrichment is best-effort and cannot fail a finding.

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

use gdfwd_model::{Enrichment, Finding, FindingFilter, Format, Timestamp, Verdict, map_finding};
use serde::{Deserialize, Serialize};

use crate::clock::{Clock, SystemClock};
use crate::enrich::AccountResolver;
use crate::error::StoreError;
use crate::sink::{EventOutcome, OutEvent, SendReport, SendStats, Sink};
use crate::store::{ClaimOutcome, ClaimRequest, Delivery, Finish, Owner, StateStore, VersionKey};

/// Default claim lease: long enough for a slow send with retries, short enough that a crashed
/// sender's findings are picked up again soon (must stay below the SQS visibility timeout).
pub const DEFAULT_LEASE: Duration = Duration::from_secs(300);

/// How long a batch may spend sending under claims with `lease`: the lease less half of it, at
/// most 30 s, which leaves time to commit or release while the claims are still ours.
///
/// Once a lease has ended, another sender may claim the same version and send it. A sender that
/// kept sending (a slow endpoint, a long backoff in a CLI run without deadline) would then deliver
/// it twice, and its release could free the other sender's claim. Stopping before the lease ends
/// releases what was not sent, reported as retryable.
pub fn lease_send_budget(lease: Duration) -> Duration {
    lease.saturating_sub(Duration::from_secs(30).min(lease / 2))
}

/// What happened to one finding version.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Every event of the version was accepted (and committed, with a store).
    Forwarded { events: usize },
    /// Already sent.
    Duplicate,
    /// Being sent by another sender under a claim whose lease ends at `lease_until`: not sent
    /// here and not known delivered. If that sender fails without releasing, the version is
    /// claimable again after `lease_until`; a caller that must not lose it (an SQS message, a
    /// backfill checkpoint) tries again later rather than treating it as done.
    InFlight { lease_until: Timestamp },
    /// A newer version was already delivered.
    Stale { newest: Timestamp },
    /// Not delivered. `retryable`: a later attempt may succeed (the claim was released).
    Failed { retryable: bool, reason: String },
    /// Refused before claiming, alone: an `updatedAt` too far in the future, or values the
    /// state store cannot hold (its [`StateStore::refuses`]). Never sendable as it is.
    Invalid { reason: String },
    /// Dropped by the filter before claiming (never claimed, sent or recorded); `reason` names
    /// the filter input that decided, e.g. `exclude-type Recon:*` or `archived`.
    Filtered { reason: String },
}

impl Outcome {
    /// Why this finding is not done, for callers that report or retry it: `(retryable, reason)`
    /// for a failure or a version in flight elsewhere (retryable: it must be tried again after
    /// the other sender's lease, or it could be lost with that sender); `None` when delivered,
    /// a duplicate of a sent version, stale, or filtered out.
    pub fn undone(&self) -> Option<(bool, String)> {
        match self {
            Self::Forwarded { .. }
            | Self::Duplicate
            | Self::Stale { .. }
            | Self::Filtered { .. } => None,
            Self::Failed { retryable, reason } => Some((*retryable, reason.clone())),
            Self::Invalid { reason } => Some((false, reason.clone())),
            Self::InFlight { lease_until } => Some((
                true,
                format!(
                    "being sent by another sender under a claim until {lease_until}; left for a retry, so it is not lost if that sender fails"
                ),
            )),
        }
    }
}

/// Counts for summaries (`--summary` JSON), log lines and metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    /// Input records read (findings, skipped and invalid ones).
    pub received: u64,
    /// Finding versions delivered.
    pub forwarded: u64,
    /// Well-formed records that are not GuardDuty findings.
    pub skipped: u64,
    /// Records that could not be parsed as findings.
    pub invalid: u64,
    /// Payload events delivered (one finding can yield several).
    pub events: u64,
    pub duplicates: u64,
    /// Versions another sender was sending (see [`Outcome::InFlight`]): left for a retry.
    #[serde(default)]
    pub in_flight: u64,
    pub stale: u64,
    /// Findings the filter dropped (never claimed nor sent; see [`Outcome::Filtered`]).
    #[serde(default)]
    pub filtered: u64,
    pub failed: u64,
    /// HTTP requests made, including retries.
    pub requests: u64,
    pub retries: u64,
    pub throttled: u64,
    /// Commits and releases the store refused because the claim was no longer this sender's
    /// (its lease ran out and another sender claimed the version): never applied.
    #[serde(default)]
    pub stale_owner: u64,
}

impl Summary {
    pub fn merge(&mut self, o: &Summary) {
        self.received += o.received;
        self.forwarded += o.forwarded;
        self.skipped += o.skipped;
        self.invalid += o.invalid;
        self.events += o.events;
        self.duplicates += o.duplicates;
        self.in_flight += o.in_flight;
        self.stale += o.stale;
        self.filtered += o.filtered;
        self.failed += o.failed;
        self.requests += o.requests;
        self.retries += o.retries;
        self.throttled += o.throttled;
        self.stale_owner += o.stale_owner;
    }

    fn count(&mut self, o: &Outcome) {
        match o {
            Outcome::Forwarded { events } => {
                self.forwarded += 1;
                self.events += *events as u64;
            }
            Outcome::Duplicate => self.duplicates += 1,
            Outcome::InFlight { .. } => self.in_flight += 1,
            Outcome::Stale { .. } => self.stale += 1,
            Outcome::Failed { .. } => self.failed += 1,
            Outcome::Invalid { .. } => self.invalid += 1,
            Outcome::Filtered { .. } => self.filtered += 1,
        }
    }

    fn add_send(&mut self, s: &SendStats) {
        self.requests += s.requests;
        self.retries += s.retries;
        self.throttled += s.throttled;
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct BatchReport {
    /// One per input finding, in input order.
    pub outcomes: Vec<Outcome>,
    pub summary: Summary,
}

/// The wired pipeline. Cheap to share: hold it in an `Arc` or clone the parts.
#[derive(Debug, Clone)]
pub struct Pipeline {
    store: Option<Arc<dyn StateStore>>,
    sink: Arc<dyn Sink>,
    resolver: Option<Arc<dyn AccountResolver>>,
    /// Applied before the claim (the default filter unless [`Pipeline::with_filter`]).
    filter: FindingFilter,
    format: Format,
    lease: Duration,
    /// "Now" for judging `updatedAt` (the store has its own clock for leases).
    clock: Arc<dyn Clock>,
}

impl Pipeline {
    /// `store: None` sends without dedup (`--dry-run`, `--no-dedup`).
    pub fn new(store: Option<Arc<dyn StateStore>>, sink: Arc<dyn Sink>, format: Format) -> Self {
        Self {
            store,
            sink,
            resolver: None,
            filter: FindingFilter::default(),
            format,
            lease: DEFAULT_LEASE,
            clock: Arc::new(SystemClock),
        }
    }

    #[must_use]
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    #[must_use]
    pub fn with_resolver(mut self, resolver: Option<Arc<dyn AccountResolver>>) -> Self {
        self.resolver = resolver;
        self
    }

    /// The filter every finding passes before it is claimed (see [`gdfwd_model::filter`]).
    #[must_use]
    pub fn with_filter(mut self, filter: FindingFilter) -> Self {
        self.filter = filter;
        self
    }

    pub fn filter(&self) -> &FindingFilter {
        &self.filter
    }

    #[must_use]
    pub fn with_lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    pub fn format(&self) -> Format {
        self.format
    }

    pub fn store(&self) -> Option<&Arc<dyn StateStore>> {
        self.store.as_ref()
    }

    /// Processes one batch. `deadline` bounds sending and retries; what is not sent by then is
    /// released and reported as retryable. With a store, sending also stops before the claims'
    /// lease ends (see [`lease_send_budget`]).
    ///
    /// The steps below are the batch's whole story; each is a method of its own so this reads
    /// as the order of events, and each step only fills in the outcomes it decides.
    pub async fn process(&self, findings: &[Finding], deadline: Option<Instant>) -> BatchReport {
        let mut outcomes: Vec<Option<Outcome>> = vec![None; findings.len()];
        // Taken before the claim: the store's lease starts no earlier than this.
        let claimed_at = Instant::now();
        let mut summary = Summary {
            received: findings.len() as u64,
            ..Summary::default()
        };

        // 0. Filter, then refuse, alone, what must never be claimed or sent.
        let (valid, reqs) = self.admit(findings, &mut outcomes);

        // 1. Claim. A later copy of a version the batch already asks for (a redelivery, or an
        //    older version behind a newer one) follows its holder's outcome and is claimed in
        //    step 6, so the store counts what it finally was. Without a store all are sent.
        let (copies, valid, reqs) = match &self.store {
            Some(_) => split_copies(findings, valid, reqs),
            None => (Vec::new(), valid, reqs),
        };
        let claims = match self.claim(&valid, &reqs, &mut outcomes).await {
            Ok(claims) => claims,
            Err(reason) => return conclude(summary, outcomes, &reason),
        };
        let (to_send, owners) = claims_won(claims, &mut outcomes);

        // 2. Enrich, once per distinct account, concurrently.
        let enrichments = self.enrich(findings, &to_send).await;

        // 3. Map and serialise; remember which events belong to which finding.
        let (events, ranges) = self.map(findings, &to_send, &enrichments, &mut outcomes);

        // 4. Send.
        let report = self.send(&events, deadline, claimed_at).await;
        summary.add_send(&report.stats);

        // 5. Commit or release every sent finding's claim, in one store call (one request per
        //    batch on DynamoDB, instead of one per finding).
        let finishes = self.judge_sent(findings, &events, ranges, &report, &owners, &mut outcomes);
        if let Some(store) = &self.store {
            summary.stale_owner += finish(store.as_ref(), &finishes).await;
            // 6. Copies follow their holder's outcome.
            self.settle_copies(store.as_ref(), findings, &copies, &mut outcomes)
                .await;
        }

        // 7. Count.
        conclude(summary, outcomes, "internal: no outcome")
    }

    /// Step 0: filters, then refuses, alone, what must never be claimed or sent (issue #16): a
    /// version far in the future would block every real version; values the store cannot hold
    /// would fail the claim of the whole batch. A filtered finding is not judged further: it is
    /// not wanted, whatever its values. Returns the admitted findings and, with a store, their
    /// claim requests (built here once, checked, and claimed in step 1).
    fn admit(
        &self,
        findings: &[Finding],
        outcomes: &mut [Option<Outcome>],
    ) -> (Vec<usize>, Vec<ClaimRequest>) {
        let now = self.clock.now();
        let mut valid: Vec<usize> = Vec::with_capacity(findings.len());
        let mut reqs: Vec<ClaimRequest> = Vec::with_capacity(findings.len());
        for (i, f) in findings.iter().enumerate() {
            if let Verdict::Filtered(reason) = self.filter.verdict(f) {
                // The audit trail of filtered findings: they never reach the store.
                tracing::info!(finding = %f.id, version = %f.updated_at, account = %f.account_id, region = %f.region, reason, "filtered: not claimed, not sent");
                outcomes[i] = Some(Outcome::Filtered { reason });
                continue;
            }
            match self.validate(f, now) {
                Err(reason) => outcomes[i] = Some(Outcome::Invalid { reason }),
                Ok(req) => {
                    valid.push(i);
                    reqs.extend(req);
                }
            }
        }
        (valid, reqs)
    }

    /// A finding's `updatedAt` judged against `now`, then, with a store, its claim request
    /// checked against what the store can hold.
    fn validate(&self, f: &Finding, now: Timestamp) -> Result<Option<ClaimRequest>, String> {
        f.check_version(now).map_err(|e| e.to_string())?;
        match &self.store {
            None => Ok(None),
            Some(s) => {
                let req = claim_request(f);
                s.refuses(&req).map_or(Ok(Some(req)), Err)
            }
        }
    }

    /// Step 1: claims `reqs` (of findings `valid`). Without a store every finding is "new". An
    /// `Err` is a reason that fails every finding not decided yet, retryably.
    async fn claim(
        &self,
        valid: &[usize],
        reqs: &[ClaimRequest],
        outcomes: &mut [Option<Outcome>],
    ) -> Result<Vec<(usize, ClaimOutcome)>, String> {
        let Some(store) = &self.store else {
            return Ok(valid
                .iter()
                .map(|&i| (i, ClaimOutcome::New { owner: Owner::NONE }))
                .collect());
        };
        match store.claim_many(reqs, self.lease).await {
            Ok(c) if c.len() == reqs.len() => Ok(valid.iter().copied().zip(c).collect()),
            Ok(c) => Err(format!(
                "state store returned {} claim results for {} findings",
                c.len(),
                reqs.len()
            )),
            // The store refused the batch's data (a value it cannot hold that `refuses` did
            // not foresee) and wrote nothing: claim one by one, so only the offending finding
            // is refused.
            Err(e @ StoreError::Invalid { .. }) if reqs.len() > 1 => {
                tracing::warn!(store = %store.describe(), error = %e, "the store refused a batch's claims; claiming one by one");
                Ok(self
                    .claim_one_by_one(store.as_ref(), valid, reqs, outcomes)
                    .await)
            }
            Err(e) => {
                tracing::error!(store = %store.describe(), error = %e, "claiming failed; batch will be retried");
                Err(format!("claiming in the state store failed: {e}"))
            }
        }
    }

    /// Step 3: maps and serialises the findings `to_send`. Returns the events and, per finding,
    /// the range of its events. A finding with an event that cannot be serialised fails
    /// definitively and contributes no events.
    fn map(
        &self,
        findings: &[Finding],
        to_send: &[usize],
        enrichments: &HashMap<String, Enrichment>,
        outcomes: &mut [Option<Outcome>],
    ) -> (Vec<OutEvent>, Vec<(usize, Range<usize>)>) {
        let mut events: Vec<OutEvent> = Vec::new();
        let mut ranges: Vec<(usize, Range<usize>)> = Vec::with_capacity(to_send.len());
        for &i in to_send {
            let f = &findings[i];
            let enrichment = enrichments
                .get(f.account_id.as_str())
                .cloned()
                .unwrap_or_default();
            let start = events.len();
            let mut bad = None;
            for ev in map_finding(f, self.format, &enrichment) {
                match serde_json::to_string(&ev.body) {
                    Ok(json) => events.push(OutEvent { id: ev.id, json }),
                    Err(e) => bad = Some(format!("serialising event {}: {e}", ev.id)),
                }
            }
            if let Some(reason) = bad {
                events.truncate(start);
                outcomes[i] = Some(Outcome::Failed {
                    retryable: false,
                    reason,
                });
                continue;
            }
            ranges.push((i, start..events.len()));
        }
        (events, ranges)
    }

    /// Step 4: sends `events`, stopping at `deadline` and, with a store, before the lease of
    /// claims taken at `claimed_at` ends.
    async fn send(
        &self,
        events: &[OutEvent],
        deadline: Option<Instant>,
        claimed_at: Instant,
    ) -> SendReport {
        // `checked_add`: a lease too long for the clock (a huge `--lease`) bounds nothing.
        let lease_end = self
            .store
            .as_ref()
            .and_then(|_| claimed_at.checked_add(lease_send_budget(self.lease)));
        let deadline = deadline.into_iter().chain(lease_end).min();
        if events.is_empty() {
            return SendReport::default();
        }
        self.sink.send(events, deadline).await
    }

    /// Step 5, first half: each sent finding's outcome from its events' outcomes and, with a
    /// store, the commit (delivered) or release (not delivered) of the claim it won.
    fn judge_sent(
        &self,
        findings: &[Finding],
        events: &[OutEvent],
        ranges: Vec<(usize, Range<usize>)>,
        report: &SendReport,
        owners: &HashMap<usize, Owner>,
        outcomes: &mut [Option<Outcome>],
    ) -> Vec<(VersionKey, Owner, Finish)> {
        let mut finishes: Vec<(VersionKey, Owner, Finish)> = Vec::new();
        for (i, range) in ranges {
            let results = report.outcomes.get(range.clone()).unwrap_or(&[]);
            let outcome = event_outcome(results, range.len());
            if self.store.is_some()
                && let (Some(finish), Some(owner)) = (
                    finish_for(&outcome, &events[range], results),
                    owners.get(&i),
                )
            {
                finishes.push((version_key(&findings[i]), *owner, finish));
            }
            outcomes[i] = Some(outcome);
        }
        finishes
    }

    /// Step 6: settles the batch's copies of versions it claimed itself (`(copy, holder)` pairs)
    /// once their holders' outcomes are recorded. A copy of a version that was not delivered
    /// fails retryably without a claim (its retry decides). Every other copy is claimed now, so
    /// the store records what it finally is (a duplicate of the delivered version, or stale
    /// behind it) instead of an answer given while the holder was still sending.
    async fn settle_copies(
        &self,
        store: &dyn StateStore,
        findings: &[Finding],
        copies: &[(usize, usize)],
        outcomes: &mut [Option<Outcome>],
    ) {
        let to_claim = follow_holders(findings, copies, outcomes);
        if to_claim.is_empty() {
            return;
        }
        let reqs: Vec<ClaimRequest> = to_claim
            .iter()
            .map(|&(i, _)| claim_request(&findings[i]))
            .collect();
        match store.claim_many(&reqs, self.lease).await {
            Ok(claims) if claims.len() == reqs.len() => {
                for ((i, _), c) in to_claim.into_iter().zip(claims) {
                    outcomes[i] = Some(match c {
                        ClaimOutcome::New { owner } => {
                            release_copy(store, &findings[i], owner).await
                        }
                        other => claim_answer(other),
                    });
                }
            }
            other => {
                // The copies' outcomes follow their holders' as before; only the audit
                // counters miss them.
                tracing::warn!(store = %store.describe(), result = ?other.map(|c| c.len()), "claiming the batch's copies after their holders failed");
                for (i, settled) in to_claim {
                    outcomes[i] = Some(settled);
                }
            }
        }
    }

    /// Claims `reqs` (of findings `idxs`) one at a time: a claim the store refuses as invalid
    /// makes its finding [`Outcome::Invalid`], another error fails it retryably, and the rest go
    /// on.
    async fn claim_one_by_one(
        &self,
        store: &dyn StateStore,
        idxs: &[usize],
        reqs: &[ClaimRequest],
        outcomes: &mut [Option<Outcome>],
    ) -> Vec<(usize, ClaimOutcome)> {
        let mut claims = Vec::with_capacity(reqs.len());
        for (&i, req) in idxs.iter().zip(reqs) {
            match store.claim(req, self.lease).await {
                Ok(c) => claims.push((i, c)),
                Err(e @ StoreError::Invalid { .. }) => {
                    outcomes[i] = Some(Outcome::Invalid {
                        reason: e.to_string(),
                    });
                }
                Err(e) => {
                    outcomes[i] = Some(Outcome::Failed {
                        retryable: true,
                        reason: format!("claiming in the state store failed: {e}"),
                    });
                }
            }
        }
        claims
    }

    async fn enrich(&self, findings: &[Finding], which: &[usize]) -> HashMap<String, Enrichment> {
        let Some(resolver) = &self.resolver else {
            return HashMap::new();
        };
        let accounts: BTreeMap<&str, ()> = which
            .iter()
            .map(|&i| (findings[i].account_id.as_str(), ()))
            .collect();
        let lookups = accounts
            .keys()
            .map(|a| async move { ((*a).to_owned(), resolver.resolve(a).await) });
        futures::future::join_all(lookups)
            .await
            .into_iter()
            .collect()
    }
}

/// Splits won claims from the rest: returns the findings to send and the owner token of each
/// claim won (for its commit or release); every other claim decides its finding's outcome.
fn claims_won(
    claims: Vec<(usize, ClaimOutcome)>,
    outcomes: &mut [Option<Outcome>],
) -> (Vec<usize>, HashMap<usize, Owner>) {
    let mut to_send = Vec::new();
    let mut owners: HashMap<usize, Owner> = HashMap::new();
    for (i, c) in claims {
        match c {
            ClaimOutcome::New { owner } => {
                owners.insert(i, owner);
                to_send.push(i);
            }
            other => outcomes[i] = Some(claim_answer(other)),
        }
    }
    (to_send, owners)
}

/// What to record for a sent finding with `outcome`, whose events are `events` with send
/// results `results`: a commit of what was delivered, or the release of a claim not delivered.
fn finish_for(outcome: &Outcome, events: &[OutEvent], results: &[EventOutcome]) -> Option<Finish> {
    match outcome {
        Outcome::Forwarded { .. } => Some(Finish::Commit(Delivery {
            event_ids: events.iter().map(|e| e.id.clone()).collect(),
            request_id: results.iter().find_map(|o| match o {
                EventOutcome::Sent { request_id } => request_id.clone(),
                _ => None,
            }),
        })),
        Outcome::Failed { reason, .. } => Some(Finish::Release(reason.clone())),
        Outcome::Duplicate
        | Outcome::InFlight { .. }
        | Outcome::Stale { .. }
        | Outcome::Invalid { .. }
        | Outcome::Filtered { .. } => None,
    }
}

/// Step 5, second half: applies `finishes` in one store call. A failure is logged, never
/// fatal: a commit that failed leaves a delivered version for a possible resend after the lease
/// (with the same event ids), which is better than losing it. Returns how many the store
/// refused because the claim was no longer ours ([`Summary::stale_owner`]).
async fn finish(store: &dyn StateStore, finishes: &[(VersionKey, Owner, Finish)]) -> u64 {
    if finishes.is_empty() {
        return 0;
    }
    let mut stale_owner = 0;
    let results = store.finish_many(finishes).await;
    for (k, (key, _, finish)) in finishes.iter().enumerate() {
        let error = match results.get(k) {
            Some(Ok(())) => continue,
            // Our lease ran out and another sender claimed the version: the store refused to
            // apply our commit or release over its claim (issue #20).
            Some(Err(e @ StoreError::StaleOwner { .. })) => {
                stale_owner += 1;
                tracing::warn!(finding = %key.finding_id, version = %key.version, error = %e, "the claim was no longer ours; the store refused the finish");
                continue;
            }
            Some(Err(e)) => e.to_string(),
            None => format!(
                "the state store returned {} results for {} items",
                results.len(),
                finishes.len()
            ),
        };
        match finish {
            // Delivered but not recorded: after the lease a retry may resend it, with the same
            // event ids. Losing it would be worse.
            Finish::Commit(_) => {
                tracing::warn!(finding = %key.finding_id, version = %key.version, error, "delivered, but committing to the state store failed");
            }
            Finish::Release(_) => {
                tracing::warn!(finding = %key.finding_id, version = %key.version, error, "releasing the claim failed; it frees itself when the lease ends");
            }
        }
    }
    stale_owner
}

/// Step 7: the batch's report. Every finding without an outcome yet fails retryably for
/// `missing` (the reason a failed claim gives to all, or an internal error that cannot happen);
/// every outcome is counted into `summary`.
fn conclude(mut summary: Summary, decided: Vec<Option<Outcome>>, missing: &str) -> BatchReport {
    let outcomes: Vec<Outcome> = decided
        .into_iter()
        .map(|o| {
            o.unwrap_or_else(|| Outcome::Failed {
                retryable: true,
                reason: missing.to_owned(),
            })
        })
        .collect();
    for o in &outcomes {
        summary.count(o);
    }
    BatchReport { outcomes, summary }
}

/// Step 6, first half: what each copy is by its holder's outcome. A copy whose holder was not
/// delivered gets its outcome here; the others are returned with the outcome the holder's
/// implies (the fallback if their claim fails) to be claimed.
fn follow_holders(
    findings: &[Finding],
    copies: &[(usize, usize)],
    outcomes: &mut [Option<Outcome>],
) -> Vec<(usize, Outcome)> {
    let mut to_claim: Vec<(usize, Outcome)> = Vec::new();
    for &(copy, holder) in copies {
        let newer = findings[holder].updated_at;
        let older = findings[copy].updated_at < newer;
        let Some(held) = outcomes[holder].clone() else {
            continue;
        };
        let settled = match held {
            // Behind a newer version delivered now: stale, as the store will say.
            Outcome::Forwarded { .. } if older => Outcome::Stale { newest: newer },
            Outcome::Forwarded { .. } => Outcome::Duplicate,
            // The newer version was not delivered, so the older one may be sent after all: a
            // retry (its claim is free now) decides, whatever stopped the newer one.
            Outcome::Failed { reason, .. } if older => {
                outcomes[copy] = Some(Outcome::Failed {
                    retryable: true,
                    reason: format!(
                        "not sent: waited for the newer version {newer}, which failed: {reason}"
                    ),
                });
                continue;
            }
            other @ (Outcome::Failed { .. } | Outcome::Invalid { .. }) => {
                outcomes[copy] = Some(other);
                continue;
            }
            other => other,
        };
        to_claim.push((copy, settled));
    }
    to_claim
}

/// A copy won its late claim: the holder's claim was given up meanwhile (released, or its
/// commit refused), so this copy holds a claim it did not send with. Frees it and leaves the
/// copy for a retry.
async fn release_copy(store: &dyn StateStore, f: &Finding, owner: Owner) -> Outcome {
    let reason = "claimed after its batch had sent; left for a retry";
    if let Err(e) = store.release(&version_key(f), owner, reason).await {
        tracing::warn!(finding = %f.id, error = %e, "releasing a copy's claim failed; it frees itself when the lease ends");
    }
    Outcome::Failed {
        retryable: true,
        reason: reason.to_owned(),
    }
}

/// The outcome of a claim that was not won.
fn claim_answer(c: ClaimOutcome) -> Outcome {
    match c {
        ClaimOutcome::Duplicate => Outcome::Duplicate,
        ClaimOutcome::InFlight { lease_until } => Outcome::InFlight { lease_until },
        ClaimOutcome::Stale { newest } => Outcome::Stale { newest },
        // Only a caller that holds no owner token for it gets here (a copy's late claim).
        ClaimOutcome::New { .. } => Outcome::Failed {
            retryable: true,
            reason: "claimed without being sent; left for a retry".to_owned(),
        },
    }
}

/// Splits the batch's copies (a version of a finding that an earlier item of the batch asks for
/// too, or an older version behind it) from the findings to claim now. Returns the
/// `(copy, holder)` pairs and the remaining indices with their claim requests.
fn split_copies(
    findings: &[Finding],
    valid: Vec<usize>,
    reqs: Vec<ClaimRequest>,
) -> (Vec<(usize, usize)>, Vec<usize>, Vec<ClaimRequest>) {
    // finding id → (newest version asked for so far, its index).
    let mut newest: HashMap<&str, (Timestamp, usize)> = HashMap::new();
    let mut copies = Vec::new();
    let mut keep = Vec::with_capacity(valid.len());
    let mut keep_reqs = Vec::with_capacity(reqs.len());
    let mut reqs = reqs.into_iter();
    for i in valid {
        let f = &findings[i];
        let req = reqs.next();
        match newest.get(f.id.as_str()) {
            Some(&(held, holder)) if held >= f.updated_at => {
                copies.push((i, holder));
                continue;
            }
            _ => {
                newest.insert(f.id.as_str(), (f.updated_at, i));
            }
        }
        keep.push(i);
        keep_reqs.extend(req);
    }
    (copies, keep, keep_reqs)
}

/// A finding's outcome from its events' send outcomes: forwarded when every one was accepted,
/// else failed, definitively when any event was refused definitively.
fn event_outcome(results: &[EventOutcome], expected: usize) -> Outcome {
    if results.len() != expected {
        return Outcome::Failed {
            retryable: true,
            reason: format!(
                "sink reported {} outcomes for {expected} events",
                results.len()
            ),
        };
    }
    if results.iter().all(EventOutcome::is_sent) {
        return Outcome::Forwarded { events: expected };
    }
    let definitive = results.iter().find_map(|o| match o {
        EventOutcome::Definitive { reason } => Some(reason.clone()),
        _ => None,
    });
    match definitive {
        Some(reason) => Outcome::Failed {
            retryable: false,
            reason,
        },
        None => Outcome::Failed {
            retryable: true,
            reason: results
                .iter()
                .find_map(|o| match o {
                    EventOutcome::Retryable { reason } => Some(reason.clone()),
                    _ => None,
                })
                .unwrap_or_else(|| "not delivered".to_owned()),
        },
    }
}

pub fn version_key(f: &Finding) -> VersionKey {
    VersionKey {
        finding_id: f.id.clone(),
        version: f.updated_at,
    }
}

pub fn claim_request(f: &Finding) -> ClaimRequest {
    ClaimRequest {
        key: version_key(f),
        meta: f.meta(),
    }
}
