//! `TransactWriteItems`: building the record-plus-history pairs, running them, and reading a
//! cancelled transaction's reasons as verdicts.
//!
//! A transaction is all or nothing, and DynamoDB says why it cancelled one as a list of reasons,
//! one per item in item order. Our transactions are pairs (a record update, then its history
//! entry), so the reasons of pair `k` are items `2k` and `2k + 1`. What they say is decided by
//! pure functions ([`pair_verdicts`], [`single_pair`], [`claim_verdict`], [`finish_verdict`]) so
//! every case — a failed condition with or without the old record, a conflict, throttling, no
//! reason, an answer of the wrong shape — is unit-tested without DynamoDB; the async code only
//! runs the requests and acts on the verdicts.

use std::time::Duration;

use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{
    CancellationReason, Put, ReturnValuesOnConditionCheckFailure, TransactWriteItem, Update,
};
use gdfwd_model::Timestamp;

use crate::expr::RecordUpdate;
use crate::item::{self, Item};
use crate::table::{PK, SK};
use crate::write::Written;
use crate::{DynamoStore, DynamoStoreError};

/// Claims per `TransactWriteItems` (each is two items, record and history; DynamoDB allows 100).
pub(crate) const MAX_TX_CLAIMS: usize = 50;
/// How often a batch's transaction is re-run after cancellations not caused by its conditions.
const MAX_TX_ATTEMPTS: u32 = 4;
/// The cancellation reason code of an item whose condition failed.
const CONDITION_FAILED: &str = "ConditionalCheckFailed";
/// Reason codes that say nothing against the pair itself: it was cancelled because of another
/// item ("None"), contention with a concurrent transaction, or throttling.
const RETRYABLE: [&str; 4] = [
    "None",
    "TransactionConflict",
    "ThrottlingError",
    "ProvisionedThroughputExceeded",
];

/// What a cancelled transaction's reasons say about one of its record-plus-history pairs.
#[derive(Debug)]
pub(crate) enum TxVerdict {
    /// Cancelled because of another item, contention or throttling: try again.
    Retry,
    /// The record's condition failed; the old record when it existed.
    ConditionFailed(Option<Item>),
    /// Anything else: the single path decides it, and reports real errors.
    Single,
}

/// The verdict for pair `k` (items `2k`, `2k + 1`) of a cancelled transaction. A missing
/// reason or code reads as "None" (cancelled because of another item).
fn pair_verdict(reasons: &[CancellationReason], k: usize) -> TxVerdict {
    let code = |j: usize| reasons.get(j).and_then(|r| r.code()).unwrap_or("None");
    match (code(2 * k), code(2 * k + 1)) {
        (a, b) if RETRYABLE.contains(&a) && RETRYABLE.contains(&b) => TxVerdict::Retry,
        (CONDITION_FAILED, _) => {
            TxVerdict::ConditionFailed(reasons.get(2 * k).and_then(|r| r.item()).cloned())
        }
        _ => TxVerdict::Single,
    }
}

/// The verdicts of a cancelled transaction of `pairs` pairs, in order; `None` when the reasons
/// are not one per item (not the documented shape: the single path then decides every pair).
pub(crate) fn pair_verdicts(
    reasons: &[CancellationReason],
    pairs: usize,
) -> Option<Vec<TxVerdict>> {
    (reasons.len() == 2 * pairs).then(|| (0..pairs).map(|k| pair_verdict(reasons, k)).collect())
}

/// What a cancelled transaction of ONE pair says about its record write: the failed condition
/// (with the old record when it existed), or `None` when it was cancelled for another reason
/// (a conflict with a concurrent transaction, throttling), so the caller takes separate writes.
pub(crate) fn single_pair(reasons: &[CancellationReason]) -> Option<Written> {
    match reasons.first() {
        Some(r) if r.code() == Some(CONDITION_FAILED) => {
            Some(Written::ConditionFailed(r.item().cloned()))
        }
        _ => None,
    }
}

/// What a batch claim whose condition failed in the transaction comes to.
#[derive(Debug)]
pub(crate) enum ClaimVerdict {
    /// The record is our own pending claim of this version: an attempt was applied but its
    /// answer lost, and the SDK's retry failed its conditions against it. The claim and its
    /// history entry are written.
    Won,
    /// The claim lost (or the record expired): the single path decides which, starting from
    /// this record (no second failed write).
    Decide(Item),
    /// No record came back: the single path decides from scratch.
    Single,
}

/// The verdict on a batch claim of `version`, written with claim `token`, whose condition
/// failed against `old`.
pub(crate) fn claim_verdict(old: Option<Item>, version: Timestamp, token: &str) -> ClaimVerdict {
    match old {
        Some(old) if item::is_own_claim(&old, version, &[token.to_owned()]) => ClaimVerdict::Won,
        Some(old) => ClaimVerdict::Decide(old),
        None => ClaimVerdict::Single,
    }
}

/// What a batch commit/release whose condition failed in the transaction comes to.
#[derive(Debug)]
pub(crate) enum FinishVerdict {
    /// No record: the finding was never claimed (or its record expired).
    NotClaimed,
    /// The record carries this write's finish token: it was applied before its answer was lost,
    /// history entry included.
    Done,
    /// Another state (an older version, another owner, a moved history count): the single
    /// path decides from this record.
    Decide(Item),
}

/// The verdict on a batch finish, written with finish `token`, whose condition failed against
/// `old`.
pub(crate) fn finish_verdict(old: Option<Item>, token: &str) -> FinishVerdict {
    match old {
        None => FinishVerdict::NotClaimed,
        Some(old) if item::is_own_finish(&old, token) => FinishVerdict::Done,
        Some(old) => FinishVerdict::Decide(old),
    }
}

/// What [`DynamoStore::transact_batch`] did with each index, with the tag its build returned.
#[derive(Debug)]
pub(crate) struct TxRun<T> {
    /// Written by the (last, successful) transaction.
    pub(crate) applied: Vec<(usize, T)>,
    /// The record's condition failed: the old record when it existed, and the attempt's "now".
    pub(crate) condition_failed: Vec<(usize, T, Option<Item>, Timestamp)>,
    /// Left to the single path: cancelled for other reasons, or an unexpected answer shape.
    pub(crate) single: Vec<usize>,
}

impl<T> TxRun<T> {
    fn new() -> Self {
        TxRun {
            applied: Vec::new(),
            condition_failed: Vec::new(),
            single: Vec::new(),
        }
    }

    /// Files one attempt's pairs by their verdicts; returns the indexes to try again.
    fn file(
        &mut self,
        batch: Vec<(usize, T)>,
        verdicts: Vec<TxVerdict>,
        now: Timestamp,
    ) -> Vec<usize> {
        let mut retry = Vec::new();
        for ((i, tag), verdict) in batch.into_iter().zip(verdicts) {
            match verdict {
                TxVerdict::Retry => retry.push(i),
                TxVerdict::ConditionFailed(old) => self.condition_failed.push((i, tag, old, now)),
                TxVerdict::Single => self.single.push(i),
            }
        }
        retry
    }
}

/// One pair a batch's build returns: the record update, the history entry, and a tag the
/// caller keeps (e.g. the claim token).
pub(crate) type Pair<T> = (TransactWriteItem, TransactWriteItem, T);

impl DynamoStore {
    /// One `TransactWriteItems`: `None` when it was applied, the cancellation reasons (one per
    /// item, in item order) when DynamoDB cancelled it. A client request token makes the SDK's
    /// retries of a transaction that was applied but whose answer got lost idempotent (they
    /// succeed instead of failing their conditions against our own write).
    async fn transact(
        &self,
        operation: &'static str,
        items: Vec<TransactWriteItem>,
    ) -> Result<Option<Vec<CancellationReason>>, DynamoStoreError> {
        let token = format!("{:032x}", rand::random::<u128>());
        let res = self
            .client
            .transact_write_items()
            .set_transact_items(Some(items))
            .client_request_token(token)
            .send()
            .await;
        match res {
            Ok(_) => Ok(None),
            Err(err) => match err.as_service_error() {
                Some(TransactWriteItemsError::TransactionCanceledException(c)) => {
                    Ok(Some(c.cancellation_reasons().to_vec()))
                }
                _ => Err(self.call_err(operation, err)),
            },
        }
    }

    /// One conditional `Update` of a finding record, as a transaction item.
    pub(crate) fn tx_update(
        &self,
        operation: &'static str,
        id: &str,
        w: RecordUpdate,
    ) -> Result<TransactWriteItem, DynamoStoreError> {
        let u = Update::builder()
            .table_name(&self.table)
            .key(PK, item::s(item::finding_pk(id)))
            .key(SK, item::s(item::RECORD_SK))
            .update_expression(w.update)
            .condition_expression(w.condition)
            .set_expression_attribute_names(Some(w.expr.names))
            .set_expression_attribute_values(Some(w.expr.values))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .build()
            .map_err(|err| self.build_err(operation, &err))?;
        Ok(TransactWriteItem::builder().update(u).build())
    }

    /// An unconditional `Put` (a history entry), as a transaction item.
    pub(crate) fn tx_put(
        &self,
        operation: &'static str,
        it: Item,
    ) -> Result<TransactWriteItem, DynamoStoreError> {
        let p = Put::builder()
            .table_name(&self.table)
            .set_item(Some(it))
            .build()
            .map_err(|err| self.build_err(operation, &err))?;
        Ok(TransactWriteItem::builder().put(p).build())
    }

    /// A record update and its history entry in one transaction. `Some(Ok)` when both were
    /// written, `Some(ConditionFailed(old))` when the update's condition failed (nothing was
    /// written), `None` when the transaction was cancelled for another reason (a conflict with
    /// a concurrent transaction, throttling): the caller then takes the separate writes.
    pub(crate) async fn update_with_history(
        &self,
        operation: &'static str,
        id: &str,
        w: RecordUpdate,
        history: Item,
    ) -> Result<Option<Written>, DynamoStoreError> {
        let items = vec![
            self.tx_update(operation, id, w)?,
            self.tx_put(operation, history)?,
        ];
        match self.transact(operation, items).await? {
            None => Ok(Some(Written::Ok)),
            Some(reasons) => Ok(single_pair(&reasons)),
        }
    }

    /// Writes the records `idxs` stand for with `TransactWriteItems`, each as the record update
    /// and history entry `build(i, now, expires)` returns (with a tag kept for the caller, e.g.
    /// the claim token). A transaction is all or nothing: when DynamoDB cancels it, the items
    /// whose condition failed leave it, and the rest are re-run without them (at most
    /// [`MAX_TX_ATTEMPTS`] times, backing off when the cancellation was contention alone).
    /// Errors of the call itself, after the SDK's retries, are returned.
    pub(crate) async fn transact_batch<T>(
        &self,
        operation: &'static str,
        idxs: &[usize],
        build: impl Fn(usize, Timestamp, Timestamp) -> Result<Pair<T>, DynamoStoreError>,
    ) -> Result<TxRun<T>, DynamoStoreError> {
        let mut run = TxRun::new();
        let mut pending: Vec<usize> = idxs.to_vec();
        for attempt in 0..MAX_TX_ATTEMPTS {
            if pending.is_empty() {
                break;
            }
            let now = self.clock.now();
            let expires = self.expiry(now);
            let mut items = Vec::with_capacity(2 * pending.len());
            let mut batch = Vec::with_capacity(pending.len());
            for &i in &pending {
                let (update, history, tag) = build(i, now, expires)?;
                items.extend([update, history]);
                batch.push((i, tag));
            }
            let Some(reasons) = self.transact(operation, items).await? else {
                run.applied = batch;
                return Ok(run);
            };
            let Some(verdicts) = pair_verdicts(&reasons, batch.len()) else {
                run.single.extend(batch.into_iter().map(|(i, _)| i));
                return Ok(run);
            };
            let attempted = batch.len();
            let retry = run.file(batch, verdicts, now);
            if retry.len() == attempted {
                // Nothing failed its condition, so the cancellation was contention: back off.
                tokio::time::sleep(Duration::from_millis(20 << attempt)).await;
            }
            pending = retry;
        }
        run.single.extend(pending);
        Ok(run)
    }
}

#[cfg(test)]
mod tests {
    use gdfwd_model::Timestamp;

    use super::*;

    const V: Timestamp = Timestamp::from_millis(1_700_000_000_000);
    const NOW: Timestamp = Timestamp::from_millis(1_800_000_000_000);
    const TOKEN: &str = "0000000000000000000000000000abcd";

    fn reason(code: &str, old: Option<Item>) -> CancellationReason {
        CancellationReason::builder()
            .code(code)
            .set_item(old)
            .build()
    }

    fn none() -> CancellationReason {
        reason("None", None)
    }

    /// A record as a claim of version `v` with claim `token` writes it (pending, leased).
    fn claimed(v: Timestamp, token: &str) -> Item {
        let req = crate::test_request("f-1", v);
        crate::expr::fresh_record(&req, NOW, 60_000, NOW.saturating_add_millis(1), token)
    }

    fn with(mut it: Item, attr: &str, value: &str) -> Item {
        it.insert(attr.to_owned(), item::s(value));
        it
    }

    fn verdicts(reasons: &[CancellationReason], pairs: usize) -> Vec<TxVerdict> {
        pair_verdicts(reasons, pairs).expect("one reason per item")
    }

    #[test]
    fn contention_throttling_and_other_items_are_retried() {
        for code in RETRYABLE {
            for (a, b) in [(code, "None"), ("None", code), (code, code)] {
                let v = verdicts(&[reason(a, None), reason(b, None)], 1);
                assert!(matches!(v[..], [TxVerdict::Retry]), "{a}/{b}: {v:?}");
            }
        }
        // A reason without a code says nothing against the pair either.
        let bare = CancellationReason::builder().build();
        let v = verdicts(&[bare, none()], 1);
        assert!(matches!(v[..], [TxVerdict::Retry]), "{v:?}");
    }

    #[test]
    fn a_failed_record_condition_carries_the_old_record_when_there_is_one() {
        let old = claimed(V, TOKEN);
        let v = verdicts(&[reason(CONDITION_FAILED, Some(old.clone())), none()], 1);
        assert!(
            matches!(&v[..], [TxVerdict::ConditionFailed(Some(o))] if *o == old),
            "{v:?}"
        );
        let v = verdicts(&[reason(CONDITION_FAILED, None), none()], 1);
        assert!(matches!(v[..], [TxVerdict::ConditionFailed(None)]), "{v:?}");
    }

    #[test]
    fn anything_else_goes_to_the_single_path() {
        for (a, b) in [
            ("ValidationError", "None"),
            ("None", "ValidationError"),
            ("ItemCollectionSizeLimitExceeded", "None"),
            // The history put has no condition: its failing one is not ours to read.
            ("None", CONDITION_FAILED),
            ("TransactionConflict", "ValidationError"),
        ] {
            let v = verdicts(&[reason(a, None), reason(b, None)], 1);
            assert!(matches!(v[..], [TxVerdict::Single]), "{a}/{b}: {v:?}");
        }
    }

    #[test]
    fn each_pair_is_read_from_its_own_two_reasons() {
        let old = claimed(V, TOKEN);
        let reasons = [
            none(),
            none(),
            reason(CONDITION_FAILED, Some(old)),
            none(),
            reason("TransactionConflict", None),
            none(),
            reason("ValidationError", None),
            none(),
        ];
        let v = verdicts(&reasons, 4);
        assert!(
            matches!(
                v[..],
                [
                    TxVerdict::Retry,
                    TxVerdict::ConditionFailed(Some(_)),
                    TxVerdict::Retry,
                    TxVerdict::Single
                ]
            ),
            "{v:?}"
        );
    }

    #[test]
    fn reasons_not_one_per_item_give_no_verdicts() {
        assert!(pair_verdicts(&[], 1).is_none());
        assert!(pair_verdicts(&[none()], 1).is_none());
        assert!(pair_verdicts(&[none(), none(), none()], 1).is_none());
        assert!(pair_verdicts(&[none(), none()], 2).is_none());
        assert!(pair_verdicts(&[], 0).is_some_and(|v| v.is_empty()));
    }

    #[test]
    fn a_single_pair_reports_only_its_record_condition() {
        let old = claimed(V, TOKEN);
        let w = single_pair(&[reason(CONDITION_FAILED, Some(old.clone())), none()]);
        assert!(
            matches!(&w, Some(Written::ConditionFailed(Some(o))) if *o == old),
            "{w:?}"
        );
        let w = single_pair(&[reason(CONDITION_FAILED, None), none()]);
        assert!(matches!(w, Some(Written::ConditionFailed(None))), "{w:?}");
        for code in [
            "None",
            "TransactionConflict",
            "ThrottlingError",
            "ValidationError",
        ] {
            let w = single_pair(&[reason(code, None), none()]);
            assert!(w.is_none(), "{code}: {w:?}");
        }
        assert!(single_pair(&[]).is_none());
    }

    #[test]
    fn a_failed_batch_claim_is_won_only_when_the_record_is_our_own_pending_claim() {
        let own = claimed(V, TOKEN);
        assert!(matches!(
            claim_verdict(Some(own.clone()), V, TOKEN),
            ClaimVerdict::Won
        ));
        // Another claimant's token, another version, or our claim already finished: the single
        // path decides from the record.
        let other = claimed(V, "0000000000000000000000000000ffff");
        let older = claimed(Timestamp::from_millis(V.millis() - 1), TOKEN);
        let sent = with(own, item::STATUS, "sent");
        for old in [other, older, sent] {
            let verdict = claim_verdict(Some(old.clone()), V, TOKEN);
            assert!(
                matches!(&verdict, ClaimVerdict::Decide(o) if *o == old),
                "{verdict:?}"
            );
        }
        assert!(matches!(
            claim_verdict(None, V, TOKEN),
            ClaimVerdict::Single
        ));
    }

    #[test]
    fn a_failed_batch_finish_is_done_only_when_the_record_carries_its_token() {
        let mine = with(claimed(V, TOKEN), item::FINISH_TOKEN, "ftok");
        assert!(matches!(
            finish_verdict(Some(mine.clone()), "ftok"),
            FinishVerdict::Done
        ));
        let verdict = finish_verdict(Some(mine.clone()), "another");
        assert!(
            matches!(&verdict, FinishVerdict::Decide(o) if *o == mine),
            "{verdict:?}"
        );
        let unfinished = claimed(V, TOKEN);
        let verdict = finish_verdict(Some(unfinished), "ftok");
        assert!(matches!(verdict, FinishVerdict::Decide(_)), "{verdict:?}");
        assert!(matches!(
            finish_verdict(None, "ftok"),
            FinishVerdict::NotClaimed
        ));
    }

    /// From the reasons to the claim's fate, as `claim_transaction` goes: our own claim that
    /// came back in a failed condition is won, another's record is decided from, no record and
    /// contention are left to the single path or retried.
    #[test]
    fn cancelled_claim_transaction_end_to_end() {
        let own = claimed(V, TOKEN);
        let other = claimed(V, "0000000000000000000000000000ffff");
        let reasons = [
            reason(CONDITION_FAILED, Some(own)),
            none(),
            reason(CONDITION_FAILED, Some(other)),
            none(),
            reason(CONDITION_FAILED, None),
            none(),
            reason("ThrottlingError", None),
            none(),
        ];
        let mut run = TxRun::new();
        let batch = (0..4).map(|i| (i, TOKEN.to_owned())).collect();
        let retry = run.file(batch, verdicts(&reasons, 4), NOW);
        assert_eq!(retry, vec![3]);
        assert!(run.applied.is_empty() && run.single.is_empty());
        let fates: Vec<_> = run
            .condition_failed
            .into_iter()
            .map(|(i, token, old, now)| {
                assert_eq!(now, NOW);
                (i, claim_verdict(old, V, &token))
            })
            .collect();
        assert!(
            matches!(
                fates[..],
                [
                    (0, ClaimVerdict::Won),
                    (1, ClaimVerdict::Decide(_)),
                    (2, ClaimVerdict::Single)
                ]
            ),
            "{fates:?}"
        );
    }

    #[test]
    fn filing_keeps_input_order_and_the_attempts_now() {
        let mut run = TxRun::new();
        let batch = vec![(7, 'a'), (2, 'b'), (5, 'c')];
        let v = vec![
            TxVerdict::Single,
            TxVerdict::ConditionFailed(None),
            TxVerdict::Retry,
        ];
        assert_eq!(run.file(batch, v, NOW), vec![5]);
        assert_eq!(run.single, vec![7]);
        assert!(matches!(run.condition_failed[..], [(2, 'b', None, t)] if t == NOW));
    }
}
