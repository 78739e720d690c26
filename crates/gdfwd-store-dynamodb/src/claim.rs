//! Claims: the single claim's decision loop, and `claim_many`'s batch (one transaction for the
//! first claim of each finding, the single path for the rest).
//!
//! A claim is decided by ONE conditional write and no read: the condition ([`expr::claim_write`])
//! says when the claim wins, and a lost condition returns the record, which tells Duplicate,
//! InFlight and Stale apart by the port's own rule ([`judge_claim`]). Each round of
//! [`DynamoStore::decide_claim`] is a [`Step`]; a round that finds the record changed under it
//! (a lease ended, a claim released, an expired record replaced) runs again from the record it
//! got back, at most [`MAX_CLAIM_LOOPS`] times.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use futures::StreamExt;
use gdfwd_core::store::{ClaimOutcome, ClaimRequest, HistoryKind, Owner, judge_claim};
use gdfwd_model::Timestamp;

use crate::expr;
use crate::item::{self, Item};
use crate::table::PK;
use crate::transaction::{ClaimVerdict, MAX_TX_CLAIMS, TxRun, claim_verdict};
use crate::write::{PendingHistory, Written};
use crate::{DynamoStore, DynamoStoreError};

/// How many findings of one `claim_many` are claimed concurrently.
const CLAIM_CONCURRENCY: usize = 16;
/// How often a claim (or a finish) re-runs when a concurrent writer changed the record under it.
pub(crate) const MAX_CLAIM_LOOPS: usize = 5;

/// A decided claim: its outcome and the history entry to write.
type Decided = (ClaimOutcome, PendingHistory);

type GroupResult = Result<Vec<(usize, ClaimOutcome, PendingHistory)>, DynamoStoreError>;

/// What a batch's claim transaction decided: claims won, claims left to the single path, and for
/// some of those the record as it was when their condition failed.
struct TxClaims {
    /// With the owner token each won claim carries.
    won: Vec<(usize, Owner)>,
    single: Vec<usize>,
    /// With the claim token the cancelled write carried.
    known: Vec<(usize, Item)>,
}

/// One round of a claim decision: the request and the round's clock readings.
struct Round<'r> {
    req: &'r ClaimRequest,
    now: Timestamp,
    expires: Timestamp,
    lease_ms: i64,
}

impl Round<'_> {
    fn id(&self) -> &str {
        &self.req.key.finding_id
    }

    /// The history entry of this round's decision, numbered `slot`.
    fn entry(&self, kind: HistoryKind, slot: item::Slot) -> PendingHistory {
        PendingHistory {
            id: self.id().to_owned(),
            slot,
            at: self.now,
            version: self.req.key.version,
            kind,
            expires: self.expires,
        }
    }

    /// The claim won with `token`.
    fn won(&self, token: &str, slot: item::Slot) -> Decided {
        let owner = item::owner_of(token);
        (
            ClaimOutcome::New { owner },
            self.entry(HistoryKind::Claimed, slot),
        )
    }
}

/// Where a round of a claim decision got to.
enum Step {
    /// Decided.
    Done(Decided),
    /// The record is this one: decide from it.
    Found(Item),
    /// There is no record (it expired and was deleted): run again expecting none.
    Absent,
    /// Run again from the same expectation (the record changed, or read mid-write).
    Again,
}

/// How a claim that did not win is answered and counted, by what [`judge_claim`] says: `None`
/// when it says New (the record changed since the condition failed: decide again). An answer in
/// flight is not final (the caller tries again), so it counts nothing.
fn suppression(judged: ClaimOutcome) -> Option<(ClaimOutcome, Option<&'static str>)> {
    match judged {
        ClaimOutcome::New { .. } => None,
        stale @ ClaimOutcome::Stale { .. } => Some((stale, Some(item::STALE))),
        in_flight @ ClaimOutcome::InFlight { .. } => Some((in_flight, None)),
        other => Some((other, Some(item::DUPLICATES))),
    }
}

/// The history entry of a claim that did not win.
fn suppressed_kind(outcome: &ClaimOutcome) -> HistoryKind {
    match *outcome {
        ClaimOutcome::Stale { newest } => HistoryKind::Stale { newest },
        ClaimOutcome::InFlight { lease_until } => HistoryKind::InFlight { lease_until },
        _ => HistoryKind::Duplicate,
    }
}

/// Splits `ids` (in input order) into the first occurrence of each and the repeats: a
/// transaction cannot touch one item twice, so only the firsts go into it.
pub(crate) fn firsts_and_repeats<'a>(
    ids: impl Iterator<Item = &'a str>,
) -> (Vec<usize>, Vec<usize>) {
    let mut seen = HashSet::new();
    let (mut firsts, mut repeats) = (Vec::new(), Vec::new());
    for (i, id) in ids.enumerate() {
        if seen.insert(id) {
            firsts.push(i);
        } else {
            repeats.push(i);
        }
    }
    (firsts, repeats)
}

/// The indexes `idxs` (sorted) grouped by finding, each group in input order, groups in order
/// of first appearance.
fn group_by_finding(reqs: &[ClaimRequest], idxs: &[usize]) -> Vec<Vec<usize>> {
    let mut groups: Vec<Vec<usize>> = Vec::new();
    let mut index: HashMap<&str, usize> = HashMap::new();
    for &i in idxs {
        let id = reqs[i].key.finding_id.as_str();
        match index.get(id) {
            Some(&g) => groups[g].push(i),
            None => {
                index.insert(id, groups.len());
                groups.push(vec![i]);
            }
        }
    }
    groups
}

fn lease_millis(lease: Duration) -> i64 {
    i64::try_from(lease.as_millis()).unwrap_or(i64::MAX)
}

impl DynamoStore {
    /// `claim`: decides the claim, then writes its history entry.
    pub(crate) async fn claim_single(
        &self,
        req: &ClaimRequest,
        lease: Duration,
    ) -> Result<ClaimOutcome, DynamoStoreError> {
        let (outcome, h) = self.decide_claim(req, lease, None).await?;
        self.write_history(vec![h]).await;
        Ok(outcome)
    }

    /// `claim_many`: the first request of each finding goes into one `TransactWriteItems` per
    /// [`MAX_TX_CLAIMS`] (the record updates with their history entries): one request for a
    /// batch whose claims all win. The rest take the single-claim path afterwards, findings
    /// concurrently, each finding's requests in input order: claims that lost in the
    /// transaction (its single claim decides Duplicate/Stale/expired exactly as `claim` does)
    /// and a finding's later requests in the batch (a transaction cannot touch an item twice).
    /// So the result equals claiming one by one in order. History entries of the single path
    /// are then written with `BatchWriteItem`.
    pub(crate) async fn claim_batch(
        &self,
        reqs: &[ClaimRequest],
        lease: Duration,
    ) -> Result<Vec<ClaimOutcome>, DynamoStoreError> {
        let mut outcomes: Vec<Option<ClaimOutcome>> = vec![None; reqs.len()];
        let (mut firsts, mut rest) =
            firsts_and_repeats(reqs.iter().map(|r| r.key.finding_id.as_str()));
        if !self.transactions {
            rest.append(&mut firsts);
        }
        let mut known = HashMap::new();
        for chunk in firsts.chunks(MAX_TX_CLAIMS) {
            let tx = self
                .claim_transaction(reqs, chunk, lease_millis(lease))
                .await?;
            for (i, owner) in tx.won {
                outcomes[i] = Some(ClaimOutcome::New { owner });
            }
            rest.extend(tx.single);
            known.extend(tx.known);
        }
        rest.sort_unstable();
        self.claim_rest(reqs, &rest, lease, &known, &mut outcomes)
            .await?;
        outcomes
            .into_iter()
            .enumerate()
            .map(|(i, o)| {
                o.ok_or_else(|| {
                    self.corrupt(
                        "claim_many",
                        &reqs[i].key.finding_id,
                        "no outcome was recorded".to_owned(),
                    )
                })
            })
            .collect()
    }

    /// The single path of `claim_many` for `rest` (sorted): findings concurrently, each
    /// finding's requests in order; then their history entries, in input order. The first
    /// error, after every finding had its turn.
    async fn claim_rest(
        &self,
        reqs: &[ClaimRequest],
        rest: &[usize],
        lease: Duration,
        known: &HashMap<usize, Item>,
        outcomes: &mut [Option<ClaimOutcome>],
    ) -> Result<(), DynamoStoreError> {
        let tasks: Vec<_> = group_by_finding(reqs, rest)
            .into_iter()
            .map(|idxs| self.claim_group(reqs, idxs, lease, known))
            .collect();
        let results: Vec<GroupResult> = futures::stream::iter(tasks)
            .buffer_unordered(CLAIM_CONCURRENCY)
            .collect()
            .await;
        let mut history = Vec::with_capacity(rest.len());
        let mut first_err = None;
        for r in results {
            match r {
                Ok(done) => {
                    for (i, o, h) in done {
                        outcomes[i] = Some(o);
                        history.push((i, h));
                    }
                }
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        // Input order, so entries of one finding keep their order in the history sort keys...
        history.sort_by_key(|(i, _)| *i);
        // ...which are assigned when the items are built, i.e. now, in this order.
        self.write_history(history.into_iter().map(|(_, h)| h).collect())
            .await;
        first_err.map_or(Ok(()), Err)
    }

    /// Claims distinct findings (`idxs` into `reqs`, no finding twice: a transaction cannot
    /// touch one item twice) in one transaction: each claim's record update with its history
    /// entry. Returns the claims won (all in the transaction) and those left to the single
    /// path: the ones whose condition failed (Duplicate, Stale, or an expired record to
    /// replace: the single path decides which, exactly as for `claim`), and, when the
    /// transaction kept being cancelled for other reasons, the rest.
    async fn claim_transaction(
        &self,
        reqs: &[ClaimRequest],
        idxs: &[usize],
        lease_ms: i64,
    ) -> Result<TxClaims, DynamoStoreError> {
        const OP: &str = "claim_many";
        let guards = self
            .lock_stripes(idxs.iter().filter_map(|&i| reqs.get(i)).map(|r| &r.key))
            .await;
        let run = self
            .transact_batch(OP, idxs, |i, now, expires| {
                let r = &reqs[i];
                let id = r.key.finding_id.as_str();
                let token = item::new_token();
                let (w, slot) =
                    expr::claim_write(r, now, lease_ms, expires, &token, self.guess(id));
                let kind = HistoryKind::Claimed;
                let h = item::history_item(id, slot, now, r.key.version, &kind, expires);
                Ok((
                    self.tx_update(OP, id, w)?,
                    self.tx_put(OP, h)?,
                    (token, slot),
                ))
            })
            .await?;
        drop(guards);
        Ok(self.settle_claims(reqs, run))
    }

    /// What a claim transaction's run comes to: the claims applied, and those whose condition
    /// failed by their [`claim_verdict`]; remembers the records written.
    fn settle_claims(&self, reqs: &[ClaimRequest], run: TxRun<(String, item::Slot)>) -> TxClaims {
        let mut claims = TxClaims {
            won: Vec::with_capacity(run.applied.len()),
            single: run.single,
            known: Vec::new(),
        };
        for (i, (token, slot)) in run.applied {
            self.wrote(&reqs[i].key.finding_id, slot);
            claims.won.push((i, item::owner_of(&token)));
        }
        for (i, (token, slot), old, _) in run.condition_failed {
            match claim_verdict(old, reqs[i].key.version, &token) {
                ClaimVerdict::Won => {
                    self.wrote(&reqs[i].key.finding_id, slot);
                    claims.won.push((i, item::owner_of(&token)));
                }
                ClaimVerdict::Decide(old) => {
                    claims.single.push(i);
                    claims.known.push((i, old));
                }
                ClaimVerdict::Single => claims.single.push(i),
            }
        }
        claims
    }

    /// One finding's requests of a batch, in order.
    async fn claim_group(
        &self,
        reqs: &[ClaimRequest],
        idxs: Vec<usize>,
        lease: Duration,
        known: &HashMap<usize, Item>,
    ) -> GroupResult {
        let mut done = Vec::with_capacity(idxs.len());
        for i in idxs {
            let Some(r) = reqs.get(i) else { continue };
            let (o, h) = self.decide_claim(r, lease, known.get(&i).cloned()).await?;
            done.push((i, o, h));
        }
        Ok(done)
    }

    /// Decides one claim (the record writes), returning the outcome and the history entry to write.
    /// `known_old`: the record as a batch transaction found it when this claim's condition
    /// failed; the first round then starts from it instead of repeating the failed write.
    async fn decide_claim(
        &self,
        req: &ClaimRequest,
        lease: Duration,
        mut known_old: Option<Item>,
    ) -> Result<Decided, DynamoStoreError> {
        let id = req.key.finding_id.as_str();
        let _serial = self.stripe(id).lock().await;
        // Every claim token this decision wrote (or tried to), with the entry it numbered: a
        // record holding one of them is our own claim, applied although its answer was lost.
        let mut tokens: Vec<(String, item::Slot)> = Vec::new();
        let mut expect = self.guess(id);
        for _ in 0..MAX_CLAIM_LOOPS {
            let now = self.clock.now();
            let round = Round {
                req,
                now,
                expires: self.expiry(now),
                lease_ms: lease_millis(lease),
            };
            let step = match known_old.take() {
                Some(old) => Step::Found(old),
                None => self.try_claim(&round, expect, &mut tokens).await?,
            };
            let step = match step {
                Step::Found(old) => {
                    self.decide_from(&round, old, &mut expect, &mut tokens)
                        .await?
                }
                other => other,
            };
            match step {
                Step::Done(decided) => return Ok(decided),
                Step::Found(old) => known_old = Some(old),
                Step::Absent => expect = item::Expect::Absent,
                Step::Again => {}
            }
        }
        Err(self.contended("claim", id))
    }

    /// Step 1: the winning claim, as an upsert on an absent or live record.
    async fn try_claim(
        &self,
        round: &Round<'_>,
        expect: item::Expect,
        tokens: &mut Vec<(String, item::Slot)>,
    ) -> Result<Step, DynamoStoreError> {
        let token = item::new_token();
        let (w, slot) = expr::claim_write(
            round.req,
            round.now,
            round.lease_ms,
            round.expires,
            &token,
            expect,
        );
        let step = match self.update_record("claim", round.id(), w).await? {
            Written::Ok => {
                self.wrote(round.id(), slot);
                Step::Done(round.won(&token, slot))
            }
            Written::ConditionFailed(Some(old)) => Step::Found(old),
            // No record: it expired and was deleted (our guess was stale); re-run.
            Written::ConditionFailed(None) => Step::Absent,
        };
        tokens.push((token, slot));
        Ok(step)
    }

    /// Steps 2 to 4: the claim did not win against `old`; `expect` becomes what `old` holds.
    async fn decide_from(
        &self,
        round: &Round<'_>,
        old: Item,
        expect: &mut item::Expect,
        tokens: &mut Vec<(String, item::Slot)>,
    ) -> Result<Step, DynamoStoreError> {
        // An old item without the attributes every record write sets cannot come from
        // DynamoDB (writes are atomic there); emulators that apply an update attribute by
        // attribute can show one mid-write. Re-run rather than fail (bounded by the loop).
        let (Ok(is_expired), Ok(was)) = (item::expired(&old, round.now), item::Expect::of(&old))
        else {
            return Ok(Step::Again);
        };
        *expect = was;
        // 2. Expired but not yet deleted by DynamoDB: replace it with a fresh record.
        if is_expired {
            return self.renew(round, tokens).await;
        }
        // 3. Our own claim, applied by an attempt whose answer was lost (a timeout or a 5xx
        //    after the write) and refused to the SDK's retry: we hold the lease.
        if let Some(decided) = self.own_claim(round, &old, tokens) {
            return Ok(Step::Done(decided));
        }
        // 4. The claim lost: the old record says why, by the rule the condition encodes.
        //    New means it changed since (a lease ended, a claim was released, or only its
        //    history count moved): re-run from it.
        let Ok(record) = item::record_from(&old) else {
            return Ok(Step::Again);
        };
        match suppression(judge_claim(Some(&record), round.req.key.version, round.now)) {
            None => Ok(Step::Again),
            Some((outcome, counter)) => self.suppress(round, outcome, counter, *expect).await,
        }
    }

    /// Step 2: replaces the expired record with a fresh one; runs again when another writer got
    /// there first.
    async fn renew(
        &self,
        round: &Round<'_>,
        tokens: &mut Vec<(String, item::Slot)>,
    ) -> Result<Step, DynamoStoreError> {
        let token = item::new_token();
        let fresh = self.put_fresh(round, &token).await;
        let slot = item::Expect::Absent.next(round.now);
        let step = if fresh? {
            self.wrote(round.id(), slot);
            Step::Done(round.won(&token, slot))
        } else {
            Step::Again
        };
        tokens.push((token, slot));
        Ok(step)
    }

    /// Step 3: the claim `old` holds when it is one this decision wrote.
    fn own_claim(
        &self,
        round: &Round<'_>,
        old: &Item,
        tokens: &[(String, item::Slot)],
    ) -> Option<Decided> {
        let names: Vec<String> = tokens.iter().map(|(t, _)| t.clone()).collect();
        if !item::is_own_claim(old, round.req.key.version, &names) {
            return None;
        }
        let mine = item::get_s(old, item::CLAIM_TOKEN).unwrap_or_default();
        let (token, slot) = tokens.iter().find(|(t, _)| t == mine)?;
        self.wrote(round.id(), *slot);
        Some(round.won(token, *slot))
    }

    /// Step 4: records the lost claim's `outcome` on the record `expect` describes (its sighting,
    /// and `counter`); when the record changed in between, decides again from what it is now.
    async fn suppress(
        &self,
        round: &Round<'_>,
        outcome: ClaimOutcome,
        counter: Option<&str>,
        expect: item::Expect,
    ) -> Result<Step, DynamoStoreError> {
        let (w, slot) = expr::suppress_write(round.id(), round.now, round.expires, counter, expect);
        Ok(match self.update_record("claim", round.id(), w).await? {
            Written::Ok => {
                self.wrote(round.id(), slot);
                let kind = suppressed_kind(&outcome);
                Step::Done((outcome, round.entry(kind, slot)))
            }
            Written::ConditionFailed(Some(old)) => Step::Found(old),
            Written::ConditionFailed(None) => Step::Absent,
        })
    }

    /// Replaces an expired record with a fresh one (counters at zero); false when another writer
    /// got there first.
    async fn put_fresh(&self, round: &Round<'_>, token: &str) -> Result<bool, DynamoStoreError> {
        let it = expr::fresh_record(round.req, round.now, round.lease_ms, round.expires, token);
        let res = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(it))
            .condition_expression("attribute_not_exists(#pk) OR #exp <= :now")
            .expression_attribute_names("#pk", PK)
            .expression_attribute_names("#exp", item::EXPIRES_MS)
            .expression_attribute_values(":now", item::ts(round.now))
            .send()
            .await;
        match res {
            Ok(_) => Ok(true),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_conditional_check_failed_exception()) =>
            {
                Ok(false)
            }
            Err(e) => Err(self.call_err("claim", e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lost_claim_counts_what_it_was_except_an_answer_in_flight() {
        let t = Timestamp::from_millis(42);
        assert!(suppression(ClaimOutcome::New { owner: Owner::NONE }).is_none());
        let judged = [
            (
                ClaimOutcome::Duplicate,
                Some(item::DUPLICATES),
                HistoryKind::Duplicate,
            ),
            (
                ClaimOutcome::Stale { newest: t },
                Some(item::STALE),
                HistoryKind::Stale { newest: t },
            ),
            (
                ClaimOutcome::InFlight { lease_until: t },
                None,
                HistoryKind::InFlight { lease_until: t },
            ),
        ];
        for (outcome, counter, kind) in judged {
            let (o, c) = suppression(outcome).expect("not New");
            assert_eq!((&o, c), (&outcome, counter));
            assert_eq!(suppressed_kind(&o), kind);
        }
    }

    #[test]
    fn a_batch_splits_into_each_findings_first_request_and_the_repeats() {
        let ids = ["a", "b", "a", "c", "b", "a"];
        let (firsts, repeats) = firsts_and_repeats(ids.into_iter());
        assert_eq!(firsts, [0, 1, 3]);
        assert_eq!(repeats, [2, 4, 5]);
    }

    #[test]
    fn the_single_path_groups_by_finding_in_input_order() {
        let reqs: Vec<ClaimRequest> = ["a", "b", "a", "c", "b", "a"]
            .into_iter()
            .map(|id| crate::test_request(id, Timestamp::from_millis(1)))
            .collect();
        let groups = group_by_finding(&reqs, &[1, 2, 3, 4, 5]);
        assert_eq!(groups, [vec![1, 4], vec![2, 5], vec![3]]);
    }
}
