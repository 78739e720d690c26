//! Commits and releases (`commit`, `release`, `finish_many`): the record write that ends a claim,
//! or only counts an older version, with its history entry.
//!
//! The common case — the version is the latest and the caller's claim — is ONE request: the
//! latest-version write ([`expr::finish_write`] with an owner) and its history entry in one
//! transaction, expecting the record state this process last wrote (no read). Anything else
//! shows in the record the failed condition returns, and is decided from it by the port's rule
//! ([`judge_finish`]): an older version gets the counters-only write, a moved history count the
//! latest write again, a wrong owner or an unclaimed version an error. A batch sends the first
//! finish of each finding in one transaction and continues the rest here, in input order.

use gdfwd_core::store::{
    Delivery, Finish, FinishCheck, HistoryKind, Owner, Status, VersionKey, judge_finish,
};
use gdfwd_model::Timestamp;

use crate::claim::{MAX_CLAIM_LOOPS, firsts_and_repeats};
use crate::expr;
use crate::item::{self, Item};
use crate::table::{PK, SK};
use crate::transaction::{FinishVerdict, MAX_TX_CLAIMS, TxRun, finish_verdict};
use crate::write::{PendingHistory, Written};
use crate::{DynamoStore, DynamoStoreError};

/// Why a finish of a finding without a (live) record fails.
const NEVER: &str = "the finding was never claimed (or its record expired)";

/// A commit or a release, borrowed, as the finish path needs it.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Finishing<'a> {
    Commit(&'a Delivery),
    Release(&'a str),
}

impl<'a> From<&'a Finish> for Finishing<'a> {
    fn from(f: &'a Finish) -> Self {
        match f {
            Finish::Commit(d) => Finishing::Commit(d),
            Finish::Release(r) => Finishing::Release(r),
        }
    }
}

impl<'a> Finishing<'a> {
    fn op(self) -> &'static str {
        match self {
            Finishing::Commit(_) => "commit",
            Finishing::Release(_) => "release",
        }
    }

    /// The release reason; `None` for a commit.
    fn reason(self) -> Option<&'a str> {
        match self {
            Finishing::Commit(_) => None,
            Finishing::Release(r) => Some(r),
        }
    }

    fn kind(self) -> HistoryKind {
        match self {
            Finishing::Commit(d) => HistoryKind::Sent {
                event_ids: d.event_ids.clone(),
                request_id: d.request_id.clone(),
            },
            Finishing::Release(r) => HistoryKind::Failed {
                reason: r.to_owned(),
            },
        }
    }

    /// The history entry of this finish of `key`, numbered `slot`, written at `at`.
    fn entry(
        self,
        key: &VersionKey,
        slot: item::Slot,
        at: Timestamp,
        expires: Timestamp,
    ) -> PendingHistory {
        PendingHistory {
            id: key.finding_id.clone(),
            slot,
            at,
            version: key.version,
            kind: self.kind(),
            expires,
        }
    }
}

/// What the record a finish's write found says to do next.
enum Then {
    /// The latest-version write again (only the history count moved under it).
    Latest,
    /// The counters-only write: an older version, or a release of the latest version once it
    /// was sent.
    Counters,
}

/// A batch item whose transactional write failed its condition: (index, (finish token, entry),
/// old record, the attempt's "now"), as [`TxRun`] has them.
type Failed = (usize, (String, item::Slot), Option<Item>, Timestamp);

/// Where the items of a `finish_many` batch stand while it runs.
struct Batch {
    results: Vec<Option<Result<(), DynamoStoreError>>>,
    failed: Vec<Failed>,
    single: Vec<usize>,
}

impl DynamoStore {
    /// `finish_many`: one `TransactWriteItems` for a batch whose versions are all the latest
    /// (see [`DynamoStore::finish_batch`]); without transactions, or for one item, the single
    /// path.
    pub(crate) async fn finish_each(
        &self,
        items: &[(VersionKey, Owner, Finish)],
    ) -> Vec<Result<(), DynamoStoreError>> {
        if self.transactions && items.len() > 1 {
            return self.finish_batch(items).await;
        }
        let mut out = Vec::with_capacity(items.len());
        for (key, owner, finish) in items {
            out.push(self.finish(key, *owner, finish.into()).await);
        }
        out
    }

    /// `commit`/`release`: the write that applies when the version is the latest and `owner`'s
    /// claim (with its history entry, in one transaction when transactions are on), or, when
    /// the record it returns shows an older version was meant, the counters-only write. Every
    /// write expects the record's history count it was decided from; when another writer moved
    /// it, the finish is decided again from the record the failed condition returns.
    pub(crate) async fn finish(
        &self,
        key: &VersionKey,
        owner: Owner,
        finish: Finishing<'_>,
    ) -> Result<(), DynamoStoreError> {
        let id = key.finding_id.as_str();
        let expect = match self.guess(id) {
            item::Expect::Absent => self.read_expect(id).await?,
            known => known,
        };
        self.finish_from(key, owner, finish, expect, None).await
    }

    /// The record as it is now, for the first write of a finish this process has no guess for.
    async fn read_expect(&self, id: &str) -> Result<item::Expect, DynamoStoreError> {
        const OP: &str = "commit";
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .consistent_read(true)
            .key(PK, item::s(item::finding_pk(id)))
            .key(SK, item::s(item::RECORD_SK))
            .send()
            .await
            .map_err(|e| self.call_err(OP, e))?;
        match out.item() {
            None => Ok(item::Expect::Absent),
            Some(it) => {
                item::Expect::of(it).map_err(|m| self.corrupt(OP, &item::finding_pk(id), m))
            }
        }
    }

    /// [`DynamoStore::finish`] from `expect`, or from `old`: the record a batch transaction's
    /// write of this finish found when its condition failed (with that write's finish token).
    async fn finish_from(
        &self,
        key: &VersionKey,
        owner: Owner,
        finish: Finishing<'_>,
        mut expect: item::Expect,
        mut old: Option<(Item, String)>,
    ) -> Result<(), DynamoStoreError> {
        // Writes of one finding from this process queue here, as claims do: each would only
        // fail the other's history-count condition (and moto applies concurrent conditional
        // updates of one item non-atomically).
        let _serial = self.stripe(&key.finding_id).lock().await;
        for _ in 0..MAX_CLAIM_LOOPS {
            let now = self.clock.now();
            let expires = self.expiry(now);
            let (found, token) = match old.take() {
                Some(found) => found,
                None => match self
                    .finish_latest(key, owner, finish, now, expires, expect)
                    .await?
                {
                    Some(found) => found,
                    None => return Ok(()),
                },
            };
            // A batch's write that was applied before its answer was lost: done, history too.
            if item::is_own_finish(&found, &token) {
                return Ok(());
            }
            let (was, then) = self.judge_found(key, owner, finish, &found, now)?;
            expect = was;
            if let Then::Latest = then {
                continue;
            }
            match self
                .finish_counters(key, finish, now, expires, expect)
                .await?
            {
                Some(found) => old = Some(found),
                None => return Ok(()),
            }
        }
        Err(self.contended(finish.op(), &key.finding_id))
    }

    /// The common case (the version is the latest) in ONE request: the latest-version write,
    /// with its history entry in one transaction when transactions are on (separately when the
    /// transaction was cancelled for another reason than its condition). `None` when it was
    /// applied; the record and this write's finish token when its condition failed.
    async fn finish_latest(
        &self,
        key: &VersionKey,
        owner: Owner,
        finish: Finishing<'_>,
        now: Timestamp,
        expires: Timestamp,
        expect: item::Expect,
    ) -> Result<Option<(Item, String)>, DynamoStoreError> {
        let (op, id) = (finish.op(), key.finding_id.as_str());
        if expect == item::Expect::Absent {
            return Err(self.not_claimed(op, key, NEVER));
        }
        let token = item::new_token();
        let reason = finish.reason();
        let write = || {
            expr::finish_write(
                key.version,
                now,
                expires,
                reason,
                Some(owner),
                &token,
                expect,
            )
        };
        let (w, slot) = write();
        let entry = finish.entry(key, slot, now, expires);
        let (written, with_history) = if self.transactions {
            match self.update_with_history(op, id, w, entry.item()).await? {
                Some(written) => (written, true),
                None => (self.update_record(op, id, write().0).await?, false),
            }
        } else {
            (self.update_record(op, id, w).await?, false)
        };
        match written {
            Written::ConditionFailed(None) => Err(self.not_claimed(op, key, NEVER)),
            Written::ConditionFailed(Some(found)) if !item::is_own_finish(&found, &token) => {
                Ok(Some((found, token)))
            }
            // Applied (perhaps by an attempt whose answer was lost: counted once).
            _ => {
                self.finished(entry, with_history).await;
                Ok(None)
            }
        }
    }

    /// What the record `found` (not written by this finish) says: an error, or the next write,
    /// with the record state it expects.
    fn judge_found(
        &self,
        key: &VersionKey,
        owner: Owner,
        finish: Finishing<'_>,
        found: &Item,
        now: Timestamp,
    ) -> Result<(item::Expect, Then), DynamoStoreError> {
        let op = finish.op();
        let corrupt = |m| self.corrupt(op, &item::finding_pk(&key.finding_id), m);
        if item::expired(found, now).map_err(corrupt)? {
            return Err(self.not_claimed(op, key, NEVER));
        }
        let record = item::record_from(found).map_err(corrupt)?;
        let expect = item::Expect::of(found).map_err(corrupt)?;
        match judge_finish(Some(&record), key, owner) {
            FinishCheck::NotClaimed(message) => Err(self.not_claimed(op, key, message)),
            FinishCheck::StaleOwner => Err(self.stale_owner(op, key)),
            // Only the history count moved under it: the latest write again, from now.
            FinishCheck::Latest
                if finish.reason().is_none() || record.status == Status::Pending =>
            {
                Ok((expect, Then::Latest))
            }
            // An older version, or a release of the latest version once it was sent
            // (never made claimable again): counters and history only.
            FinishCheck::Latest | FinishCheck::Older => Ok((expect, Then::Counters)),
        }
    }

    /// The counters-only write (and, for a commit, the newest delivered version). `None` when
    /// it was applied; the record and this write's finish token when its condition failed.
    async fn finish_counters(
        &self,
        key: &VersionKey,
        finish: Finishing<'_>,
        now: Timestamp,
        expires: Timestamp,
        expect: item::Expect,
    ) -> Result<Option<(Item, String)>, DynamoStoreError> {
        let (op, id, v) = (finish.op(), key.finding_id.as_str(), key.version);
        let token = item::new_token();
        let (w, slot) = expr::finish_write(v, now, expires, finish.reason(), None, &token, expect);
        match self.update_record(op, id, w).await? {
            Written::ConditionFailed(None) => Err(self.not_claimed(op, key, NEVER)),
            Written::ConditionFailed(Some(found)) if !item::is_own_finish(&found, &token) => {
                Ok(Some((found, token)))
            }
            _ => {
                if finish.reason().is_none() {
                    self.raise_sent_version(id, v, now).await?;
                }
                self.finished(finish.entry(key, slot, now, expires), false)
                    .await;
                Ok(None)
            }
        }
    }

    /// After a delivery of `v` that was not the latest claim: the newest delivered version
    /// becomes `v` unless a newer one was delivered already. Losing that condition is the
    /// expected answer.
    async fn raise_sent_version(
        &self,
        id: &str,
        v: Timestamp,
        now: Timestamp,
    ) -> Result<(), DynamoStoreError> {
        self.update_record("commit", id, expr::sent_version_write(v, now))
            .await
            .map(|_| ())
    }

    /// After a finish's record write numbered `entry`: remembers it, and writes the history
    /// entry unless it went with the record (`with_history`).
    async fn finished(&self, entry: PendingHistory, with_history: bool) {
        self.wrote(&entry.id, entry.slot);
        if !with_history {
            self.write_history(vec![entry]).await;
        }
    }

    /// `finish_many` with transactions: the first commit/release of each finding goes into one
    /// `TransactWriteItems` per [`MAX_TX_CLAIMS`] (record update and history entry each), so a
    /// batch whose versions are all the latest is one request. Items whose condition failed (an
    /// older version, a version never claimed) continue on the single path from the old record
    /// their cancellation reason carries; a finding's later items in the batch (a transaction
    /// cannot touch an item twice) and items the transaction kept failing for other reasons
    /// take the single path afterwards, in input order. So the result equals finishing one by
    /// one in order.
    async fn finish_batch(
        &self,
        items: &[(VersionKey, Owner, Finish)],
    ) -> Vec<Result<(), DynamoStoreError>> {
        let (firsts, single) = firsts_and_repeats(items.iter().map(|it| it.0.finding_id.as_str()));
        let mut batch = Batch {
            results: (0..items.len()).map(|_| None).collect(),
            failed: Vec::new(),
            single,
        };
        for chunk in firsts.chunks(MAX_TX_CLAIMS) {
            let run = self.finish_transaction(items, chunk).await;
            self.file_chunk(&mut batch, items, chunk, run);
        }
        batch.failed.sort_by_key(|(i, _, _, _)| *i);
        for (i, (token, slot), old, _) in std::mem::take(&mut batch.failed) {
            batch.results[i] = Some(self.settle_failed(&items[i], token, slot, old).await);
        }
        batch.single.sort_unstable();
        for &i in &batch.single {
            let (key, owner, finish) = &items[i];
            batch.results[i] = Some(self.finish(key, *owner, finish.into()).await);
        }
        batch
            .results
            .into_iter()
            .enumerate()
            .map(|(i, r)| {
                r.unwrap_or_else(|| {
                    Err(self.corrupt(
                        "finish_many",
                        &items[i].0.finding_id,
                        "no result was recorded".to_owned(),
                    ))
                })
            })
            .collect()
    }

    /// The latest-version writes of `chunk` (distinct findings) in one transaction, holding
    /// their stripes.
    async fn finish_transaction(
        &self,
        items: &[(VersionKey, Owner, Finish)],
        chunk: &[usize],
    ) -> Result<TxRun<(String, item::Slot)>, DynamoStoreError> {
        const OP: &str = "finish_many";
        let _guards = self
            .lock_stripes(chunk.iter().filter_map(|&i| items.get(i)).map(|it| &it.0))
            .await;
        self.transact_batch(OP, chunk, |i, now, expires| {
            let (key, owner, finish) = &items[i];
            let finish = Finishing::from(finish);
            let id = key.finding_id.as_str();
            let token = item::new_token();
            let (w, slot) = expr::finish_write(
                key.version,
                now,
                expires,
                finish.reason(),
                Some(*owner),
                &token,
                self.guess(id),
            );
            let h = finish.entry(key, slot, now, expires).item();
            Ok((
                self.tx_update(OP, id, w)?,
                self.tx_put(OP, h)?,
                (token, slot),
            ))
        })
        .await
    }

    /// Files what a chunk's transaction did into `batch`.
    fn file_chunk(
        &self,
        batch: &mut Batch,
        items: &[(VersionKey, Owner, Finish)],
        chunk: &[usize],
        run: Result<TxRun<(String, item::Slot)>, DynamoStoreError>,
    ) {
        match run {
            Ok(run) => {
                for (i, (_, slot)) in run.applied {
                    self.wrote(&items[i].0.finding_id, slot);
                    batch.results[i] = Some(Ok(()));
                }
                batch.failed.extend(run.condition_failed);
                batch.single.extend(run.single);
            }
            // DynamoDB refused the transaction's data as a whole (one item it cannot hold)
            // and wrote nothing: each item alone, so only that one fails (issue #16).
            Err(DynamoStoreError::Refused { .. }) if chunk.len() > 1 => {
                batch.single.extend_from_slice(chunk);
            }
            // The call failed after the SDK's retries: the single path would only fail
            // the same way, once per item.
            Err(e) => {
                for &i in chunk {
                    batch.results[i] = Some(Err(e.clone()));
                }
            }
        }
    }

    /// A batch item whose transactional write (with finish `token`, numbering `slot`) failed
    /// its condition against `old`.
    async fn settle_failed(
        &self,
        (key, owner, finish): &(VersionKey, Owner, Finish),
        token: String,
        slot: item::Slot,
        old: Option<Item>,
    ) -> Result<(), DynamoStoreError> {
        match finish_verdict(old, &token) {
            FinishVerdict::NotClaimed => Err(self.not_claimed("finish_many", key, NEVER)),
            // Applied before its answer was lost: the history entry went with it.
            FinishVerdict::Done => {
                self.wrote(&key.finding_id, slot);
                Ok(())
            }
            FinishVerdict::Decide(old) => {
                self.finish_from(
                    key,
                    *owner,
                    finish.into(),
                    item::Expect::Absent,
                    Some((old, token)),
                )
                .await
            }
        }
    }
}
