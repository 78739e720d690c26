//! The DynamoDB state store (`--store dynamodb:TABLE`): the Lambda's dedup store and audit log.
//!
//! Semantics are the port's ([`gdfwd_core::store`]), checked by the shared contract suite; the
//! item layout and every access pattern are in `docs/state-store.md` ("DynamoDB").
//!
//! Why it is shaped so:
//! - A claim is decided by ONE conditional `UpdateItem` on the finding's record and no read: the
//!   condition says when the claim wins; when it loses, `ReturnValuesOnConditionCheckFailure =
//!   ALL_OLD` hands back the record, which tells Duplicate from Stale without a read. The loser
//!   then bumps its counter (one more write) — suppressions pay for their own bookkeeping.
//! - The update is an upsert (`if_not_exists` for first_seen and counters), so a never-seen
//!   finding also costs one write. Only a record that is expired but not yet deleted by
//!   DynamoDB's TTL needs a second, conditional `PutItem` to start it afresh.
//! - Batches: `claim_many` claims a batch's findings in one `TransactWriteItems` (each claim's
//!   conditional update and its history entry), and `commit`/`release` write record and
//!   history in one transaction, because the Lambda's CPU time goes into per-request SDK
//!   overhead: a batch of new findings is one request, a commit one instead of two. Claims
//!   whose condition failed are cancelled out of the transaction and decided by the single
//!   path, so results equal claiming one by one. Transactional writes cost twice the write
//!   units; [`DynamoStore::with_transactions`] turns them off.
//! - History entries are separate small items (not a list on the record) so the record stays
//!   ~1 KB: DynamoDB bills writes per KB of the whole item, and a growing list would make every
//!   claim dearer and eventually hit the 400 KB item limit. Each outcome writes one entry.
//! - "Now" comes only from the [`Clock`]: expiry is decided by `expires_at_ms` against the clock
//!   (DynamoDB's TTL deletion, on `expires_at` in epoch seconds, is only garbage collection).
//! - Errors after the SDK's retries (configured by [`client`]) become
//!   [`StoreError::Unavailable`] naming the table, so the pipeline fails the batch as retryable
//!   and never sends without dedup.

mod error;
mod item;
mod table;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{
    AttributeValue, CancellationReason, Put, PutRequest, ReturnValuesOnConditionCheckFailure,
    TransactWriteItem, Update, WriteRequest,
};
use futures::StreamExt;
use gdfwd_core::store::{
    ClaimOutcome, ClaimRequest, Delivery, FindingHistory, FindingRecord, Finish, FinishCheck,
    HistoryKind, ListQuery, Owner, StateStore, Status, StatusFilter, VersionKey, judge_claim,
    judge_finish,
};
use gdfwd_core::{Clock, StoreError};
use gdfwd_model::Timestamp;

pub use error::DynamoStoreError;
pub use table::{
    AttributeDef, CreateOutcome, GSI1, GSI1_PK, GSI1_SK, IndexDef, KeyElement, PK, ProjectionDef,
    SK, TTL_ATTRIBUTE, TableDefinition, TtlDef, create_table, describe_definition,
    table_definition, validate_table_name,
};

use item::Item;

/// Default retention of finding records after their last update.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(90 * 24 * 3600);
/// SDK attempts per call (1 + retries) for throttling and transient errors.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 5;
/// First retry backoff; the SDK doubles it per attempt, with jitter.
pub const DEFAULT_INITIAL_BACKOFF: Duration = Duration::from_millis(100);
/// Bound of one DynamoDB call attempt (a timed-out attempt is retried like a 5xx). DynamoDB
/// answers in milliseconds; moto, in tests, takes seconds for big transactions.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// How many findings of one `claim_many` are claimed concurrently.
const CLAIM_CONCURRENCY: usize = 16;
/// How often a claim re-runs when a concurrent writer changed the record under it.
const MAX_CLAIM_LOOPS: usize = 5;

/// A DynamoDB client for the store: `sdk`'s settings with standard retries
/// ([`DEFAULT_MAX_ATTEMPTS`], [`DEFAULT_INITIAL_BACKOFF`]) for throttling and transient errors,
/// and each attempt bounded by [`ATTEMPT_TIMEOUT`] instead of the SDK's stalled-stream
/// protection: that guard re-checks the throughput of every response body every 100 ms, which
/// costs CPU all the time a call waits (docs/performance.md), and for DynamoDB's small
/// responses a plain timeout says the same.
pub fn client(sdk: &aws_config::SdkConfig) -> Client {
    client_with_retries(sdk, DEFAULT_MAX_ATTEMPTS, DEFAULT_INITIAL_BACKOFF)
}

/// Like [`client`] with explicit retry settings (tests use short ones).
pub fn client_with_retries(
    sdk: &aws_config::SdkConfig,
    max_attempts: u32,
    initial_backoff: Duration,
) -> Client {
    let retry = aws_config::retry::RetryConfig::standard()
        .with_max_attempts(max_attempts.max(1))
        .with_initial_backoff(initial_backoff)
        .with_max_backoff(Duration::from_secs(5));
    // Keeps the connect timeout and anything else `sdk` sets.
    let timeouts = sdk
        .timeout_config()
        .map_or_else(
            aws_sdk_dynamodb::config::timeout::TimeoutConfig::builder,
            |t| t.to_builder(),
        )
        .operation_attempt_timeout(ATTEMPT_TIMEOUT)
        .build();
    let conf = aws_sdk_dynamodb::config::Builder::from(sdk)
        .retry_config(retry)
        .timeout_config(timeouts)
        .stalled_stream_protection(
            aws_sdk_dynamodb::config::StalledStreamProtectionConfig::disabled(),
        )
        .build();
    Client::from_conf(conf)
}

/// Claims per `TransactWriteItems` (each is two items, record and history; DynamoDB allows 100).
const MAX_TX_CLAIMS: usize = 50;
/// How often a batch's transaction is re-run after cancellations not caused by its conditions.
const MAX_TX_ATTEMPTS: u32 = 4;
/// The cancellation reason code of an item whose condition failed.
const CONDITION_FAILED: &str = "ConditionalCheckFailed";

/// Lock stripes serialising this process's claims of one finding (see [`DynamoStore::stripe`]).
const STRIPES: usize = 64;

/// The DynamoDB-backed [`StateStore`]. Clones share the client and the claim stripes.
#[derive(Debug, Clone)]
pub struct DynamoStore {
    client: Client,
    table: String,
    clock: Arc<dyn Clock>,
    retention_ms: i64,
    stripes: Arc<[tokio::sync::Mutex<()>]>,
    transactions: bool,
    /// The record state this process last wrote per finding (incarnation and history count):
    /// the first guess of the next write's condition, so a commit after a claim needs no read.
    /// Only a guess: a wrong one fails the condition, which returns the record to go on from.
    known: Arc<std::sync::Mutex<HashMap<String, item::Expect>>>,
}

/// Entries of [`DynamoStore::known`] kept before it is emptied (it is only a cache).
const KNOWN_MAX: usize = 4096;

/// Expression attribute names and values, recorded as they are used (DynamoDB rejects unused ones).
#[derive(Default)]
struct Expr {
    names: HashMap<String, String>,
    values: HashMap<String, AttributeValue>,
}

impl Expr {
    /// `#attr`; every attribute goes through a placeholder, so reserved words (`status`,
    /// `region`, ...) never matter.
    fn n(&mut self, attr: &str) -> String {
        let k = format!("#{attr}");
        self.names.insert(k.clone(), attr.to_owned());
        k
    }
    fn v(&mut self, name: &str, value: AttributeValue) -> String {
        let k = format!(":{name}");
        self.values.insert(k.clone(), value);
        k
    }
}

/// What a conditional write did.
enum Written {
    Ok,
    /// The condition failed; the old item when it existed.
    ConditionFailed(Option<Item>),
}

/// A history entry decided by an operation, written after it.
struct PendingHistory {
    id: String,
    slot: item::Slot,
    at: Timestamp,
    version: Timestamp,
    kind: HistoryKind,
    expires: Timestamp,
}

/// What a batch's claim transaction decided: claims won, claims left to the single path, and for
/// some of those the record as it was when their condition failed.
struct TxClaims {
    /// With the owner token each won claim carries.
    won: Vec<(usize, Owner)>,
    single: Vec<usize>,
    /// With the claim token the cancelled write carried.
    known: Vec<(usize, Item)>,
}

/// What [`DynamoStore::transact_batch`] did with each index, with the tag its build returned.
struct TxRun<T> {
    /// Written by the (last, successful) transaction.
    applied: Vec<(usize, T)>,
    /// The record's condition failed: the old record when it existed, and the attempt's "now".
    condition_failed: Vec<(usize, T, Option<Item>, Timestamp)>,
    /// Left to the single path: cancelled for other reasons, or an unexpected answer shape.
    single: Vec<usize>,
}

/// A commit or a release, borrowed, as the finish path needs it.
#[derive(Clone, Copy)]
enum Finishing<'a> {
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
}

/// What a cancelled transaction's reasons say about one of its record-plus-history pairs.
enum TxVerdict {
    /// Cancelled because of another item, contention or throttling: try again.
    Retry,
    /// The record's condition failed; the old record when it existed.
    ConditionFailed(Option<Item>),
    /// Anything else: the single path decides it, and reports real errors.
    Single,
}

/// The verdict for pair `k` (items `2k`, `2k + 1`) of a cancelled transaction.
fn tx_item_verdict(reasons: &[CancellationReason], k: usize) -> TxVerdict {
    let code = |j: usize| reasons.get(j).and_then(|r| r.code()).unwrap_or("None");
    match (code(2 * k), code(2 * k + 1)) {
        (a, b)
            if [a, b].iter().all(|c| {
                matches!(
                    *c,
                    "None"
                        | "TransactionConflict"
                        | "ThrottlingError"
                        | "ProvisionedThroughputExceeded"
                )
            }) =>
        {
            TxVerdict::Retry
        }
        (CONDITION_FAILED, _) => {
            TxVerdict::ConditionFailed(reasons.get(2 * k).and_then(|r| r.item()).cloned())
        }
        _ => TxVerdict::Single,
    }
}

type GroupResult = Result<Vec<(usize, ClaimOutcome, PendingHistory)>, DynamoStoreError>;

impl DynamoStore {
    /// A store on `table` (which must exist: see [`create_table`]); "now" comes from `clock`;
    /// records expire `retention` after their last update.
    pub fn new(
        client: Client,
        table: impl Into<String>,
        clock: Arc<dyn Clock>,
        retention: Duration,
    ) -> DynamoStore {
        DynamoStore {
            client,
            table: table.into(),
            clock,
            retention_ms: i64::try_from(retention.as_millis()).unwrap_or(i64::MAX),
            stripes: (0..STRIPES).map(|_| tokio::sync::Mutex::new(())).collect(),
            transactions: true,
            known: Arc::default(),
        }
    }

    /// Whether `claim_many` and `commit`/`release` use `TransactWriteItems` (the default):
    /// fewer requests (a batch of new claims is one request, a commit one instead of two), but
    /// DynamoDB bills two write units per transactional write, so the writes cost twice as
    /// much. `false`: one conditional `UpdateItem` per claim (concurrently) and separate history
    /// writes. Both give the same results (the contract suite runs on both).
    pub fn with_transactions(mut self, on: bool) -> DynamoStore {
        self.transactions = on;
        self
    }

    /// The lock stripe of a finding. Claims of one finding from this process run one at a time:
    /// across processes the conditional write alone decides (DynamoDB applies it atomically), but
    /// within a process queuing spares the losers' failed writes — and moto, which applies
    /// concurrent updates of one item non-atomically, then gives the same answers as DynamoDB.
    fn stripe(&self, id: &str) -> &tokio::sync::Mutex<()> {
        let i = Self::stripe_index(id);
        // `stripes` always has STRIPES entries; index 0 is the (unreachable) fallback.
        self.stripes.get(i).unwrap_or(&self.stripes[0])
    }

    /// Holds the stripes of `keys`' findings like a single write does, taken in stripe order
    /// so that two batches never wait for each other crosswise. Never held across a call that
    /// takes a stripe itself.
    async fn lock_stripes<'k>(
        &self,
        keys: impl Iterator<Item = &'k VersionKey>,
    ) -> Vec<tokio::sync::MutexGuard<'_, ()>> {
        let mut stripes: Vec<usize> = keys.map(|k| Self::stripe_index(&k.finding_id)).collect();
        stripes.sort_unstable();
        stripes.dedup();
        let mut guards = Vec::with_capacity(stripes.len());
        for s in stripes {
            if let Some(m) = self.stripes.get(s) {
                guards.push(m.lock().await);
            }
        }
        guards
    }

    fn stripe_index(id: &str) -> usize {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        id.hash(&mut h);
        usize::try_from(h.finish() % STRIPES as u64).unwrap_or(0)
    }

    /// The table name.
    pub fn table(&self) -> &str {
        &self.table
    }

    /// Checks that the table exists and has this crate's key schema (one `DescribeTable`). The
    /// Lambda's readiness check calls it before the first event, so a wrong `DEDUP_TABLE_NAME` or
    /// a missing permission fails with one clear message instead of inside every batch.
    pub async fn check(&self) -> Result<(), DynamoStoreError> {
        let out = self
            .client
            .describe_table()
            .table_name(&self.table)
            .send()
            .await
            .map_err(|e| self.call_err("describe_table", e))?;
        let got = table::key_schema(out.table().map_or(&[], |t| t.key_schema()));
        let want = table_definition().key_schema;
        if got == want {
            Ok(())
        } else {
            Err(DynamoStoreError::Mismatch {
                table: self.table.clone(),
                message: format!("key schema is {got:?}, expected {want:?}"),
            })
        }
    }

    fn call_err<E, R>(&self, operation: &'static str, e: SdkError<E, R>) -> DynamoStoreError
    where
        E: std::error::Error + aws_sdk_dynamodb::error::ProvideErrorMetadata + 'static,
        R: std::fmt::Debug + 'static,
    {
        if e.as_service_error()
            .and_then(|s| s.code())
            .is_some_and(|c| c == "ResourceNotFoundException")
        {
            return DynamoStoreError::NoTable {
                table: self.table.clone(),
                operation,
            };
        }
        if gdfwd_aws_error::has_code(&e, &["ValidationException"]) {
            return DynamoStoreError::Refused {
                table: self.table.clone(),
                operation,
                message: gdfwd_aws_error::describe(&e),
            };
        }
        if gdfwd_aws_error::has_code(&e, error::REFUSAL_CODES) {
            return DynamoStoreError::Denied {
                table: self.table.clone(),
                operation,
                message: gdfwd_aws_error::describe(&e),
            };
        }
        DynamoStoreError::Call {
            table: self.table.clone(),
            operation,
            message: gdfwd_aws_error::describe(&e),
        }
    }

    fn corrupt(&self, operation: &'static str, key: &str, message: String) -> DynamoStoreError {
        DynamoStoreError::Corrupt {
            table: self.table.clone(),
            operation,
            key: key.to_owned(),
            message,
        }
    }

    fn not_claimed(
        &self,
        operation: &'static str,
        key: &VersionKey,
        message: &'static str,
    ) -> DynamoStoreError {
        DynamoStoreError::NotClaimed {
            table: self.table.clone(),
            operation,
            finding_id: key.finding_id.clone(),
            version: key.version,
            message,
        }
    }

    fn expiry(&self, now: Timestamp) -> Timestamp {
        now.saturating_add_millis(self.retention_ms)
    }

    fn known_lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, item::Expect>> {
        self.known
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The guess for the next write of `id` (see [`DynamoStore::known`]); none: no record.
    fn guess(&self, id: &str) -> item::Expect {
        self.known_lock()
            .get(id)
            .copied()
            .unwrap_or(item::Expect::Absent)
    }

    /// Remembers that this process wrote entry `slot` of `id`.
    fn wrote(&self, id: &str, slot: item::Slot) {
        let mut known = self.known_lock();
        if known.len() >= KNOWN_MAX {
            known.clear();
        }
        known.insert(
            id.to_owned(),
            item::Expect::At {
                first_seen: slot.first_seen,
                seq: slot.seq,
            },
        );
    }

    /// The condition that the record is as `expect` says, and the update that counts entry
    /// `slot` (`expect`'s next); both go with the write that records the event.
    fn expect_clause(
        e: &mut Expr,
        sets: &mut Vec<String>,
        expect: item::Expect,
        slot: item::Slot,
    ) -> String {
        sets.push(format!(
            "{} = {}",
            e.n(item::SEQ_NO),
            e.v("nseq", item::n(slot.seq))
        ));
        match expect {
            item::Expect::Absent => format!("attribute_not_exists({})", e.n(PK)),
            item::Expect::At { first_seen, seq } => {
                let sq = e.n(item::SEQ_NO);
                let sv = e.v("eseq", item::n(seq));
                // A record of an older gdfwd has no count yet: it counts from 0.
                let count = if seq == 0 {
                    format!("(attribute_not_exists({sq}) OR {sq} = {sv})")
                } else {
                    format!("{sq} = {sv}")
                };
                format!(
                    "attribute_exists({}) AND {} = {} AND {count}",
                    e.n(PK),
                    e.n(item::FIRST_SEEN),
                    e.v("efs", item::ts(first_seen))
                )
            }
        }
    }

    /// Sets both expiry attributes (exact ms for reads, rounded-up seconds for DynamoDB TTL).
    fn set_expiry(e: &mut Expr, sets: &mut Vec<String>, expires: Timestamp) {
        sets.push(format!(
            "{} = {}",
            e.n(item::EXPIRES_MS),
            e.v("exp_ms", item::ts(expires))
        ));
        sets.push(format!(
            "{} = {}",
            e.n(TTL_ATTRIBUTE),
            e.v("exp_s", item::n(item::ttl_seconds(expires)))
        ));
    }

    /// One conditional `UpdateItem` on a finding record.
    async fn update_record(
        &self,
        operation: &'static str,
        id: &str,
        e: Expr,
        update: String,
        condition: String,
    ) -> Result<Written, DynamoStoreError> {
        let res = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(PK, item::s(item::finding_pk(id)))
            .key(SK, item::s(item::RECORD_SK))
            .update_expression(update)
            .condition_expression(condition)
            .set_expression_attribute_names(Some(e.names))
            .set_expression_attribute_values(Some(e.values))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match res {
            Ok(_) => Ok(Written::Ok),
            Err(err) => match err.as_service_error() {
                Some(aws_sdk_dynamodb::operation::update_item::UpdateItemError::ConditionalCheckFailedException(c)) => {
                    Ok(Written::ConditionFailed(c.item().cloned()))
                }
                _ => Err(self.call_err(operation, err)),
            },
        }
    }

    /// One conditional `Update` of a finding record, as a transaction item.
    fn tx_update(
        &self,
        operation: &'static str,
        id: &str,
        e: Expr,
        update: String,
        condition: String,
    ) -> Result<TransactWriteItem, DynamoStoreError> {
        let u = Update::builder()
            .table_name(&self.table)
            .key(PK, item::s(item::finding_pk(id)))
            .key(SK, item::s(item::RECORD_SK))
            .update_expression(update)
            .condition_expression(condition)
            .set_expression_attribute_names(Some(e.names))
            .set_expression_attribute_values(Some(e.values))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .build()
            .map_err(|err| self.build_err(operation, &err))?;
        Ok(TransactWriteItem::builder().update(u).build())
    }

    /// An unconditional `Put` (a history entry), as a transaction item.
    fn tx_put(
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

    fn build_err(
        &self,
        operation: &'static str,
        err: &aws_sdk_dynamodb::error::BuildError,
    ) -> DynamoStoreError {
        DynamoStoreError::Call {
            table: self.table.clone(),
            operation,
            message: format!("building the request failed: {err}"),
        }
    }

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

    /// A record update and its history entry in one transaction. `Some(Ok)` when both were
    /// written, `Some(ConditionFailed(old))` when the update's condition failed (nothing was
    /// written), `None` when the transaction was cancelled for another reason (a conflict with
    /// a concurrent transaction, throttling): the caller then takes the separate writes.
    async fn update_with_history(
        &self,
        operation: &'static str,
        id: &str,
        e: Expr,
        update: String,
        condition: String,
        history: Item,
    ) -> Result<Option<Written>, DynamoStoreError> {
        let items = vec![
            self.tx_update(operation, id, e, update, condition)?,
            self.tx_put(operation, history)?,
        ];
        let Some(reasons) = self.transact(operation, items).await? else {
            return Ok(Some(Written::Ok));
        };
        match reasons.first() {
            Some(r) if r.code() == Some(CONDITION_FAILED) => {
                Ok(Some(Written::ConditionFailed(r.item().cloned())))
            }
            _ => Ok(None),
        }
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
                let (e, u, c, slot) =
                    Self::claim_write(r, now, lease_ms, expires, &token, self.guess(id));
                let h = item::history_item(
                    id,
                    slot,
                    now,
                    r.key.version,
                    &HistoryKind::Claimed,
                    expires,
                );
                Ok((
                    self.tx_update(OP, id, e, u, c)?,
                    self.tx_put(OP, h)?,
                    (token, slot),
                ))
            })
            .await?;
        drop(guards);
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
            match old {
                // Our own claim: an attempt was applied but its answer lost, and the SDK's
                // retry (where DynamoDB did not treat it as the same transaction) failed its
                // conditions against it. The claim and its history entry are written.
                Some(old)
                    if item::is_own_claim(
                        &old,
                        reqs[i].key.version,
                        std::slice::from_ref(&token),
                    ) =>
                {
                    self.wrote(&reqs[i].key.finding_id, slot);
                    claims.won.push((i, item::owner_of(&token)));
                }
                // The claim lost (or the record expired): the single path decides which,
                // starting from the old record the reason carries (no second failed write).
                Some(old) => {
                    claims.single.push(i);
                    claims.known.push((i, old));
                }
                None => claims.single.push(i),
            }
        }
        Ok(claims)
    }

    /// Writes the records `idxs` stand for with `TransactWriteItems`, each as the record update
    /// and history entry `build(i, now, expires)` returns (with a tag kept for the caller, e.g.
    /// the claim token). A transaction is all or nothing: when DynamoDB cancels it, the items
    /// whose condition failed leave it, and the rest are re-run without them (at most
    /// [`MAX_TX_ATTEMPTS`] times, backing off when the cancellation was contention alone).
    /// Errors of the call itself, after the SDK's retries, are returned.
    async fn transact_batch<T>(
        &self,
        operation: &'static str,
        idxs: &[usize],
        build: impl Fn(
            usize,
            Timestamp,
            Timestamp,
        ) -> Result<(TransactWriteItem, TransactWriteItem, T), DynamoStoreError>,
    ) -> Result<TxRun<T>, DynamoStoreError> {
        let mut run = TxRun {
            applied: Vec::new(),
            condition_failed: Vec::new(),
            single: Vec::new(),
        };
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
            if reasons.len() != 2 * batch.len() {
                // Not the documented shape: let the single path decide every item.
                run.single.extend(batch.into_iter().map(|(i, _)| i));
                return Ok(run);
            }
            let attempted = batch.len();
            let mut retry = Vec::new();
            for (k, (i, tag)) in batch.into_iter().enumerate() {
                match tx_item_verdict(&reasons, k) {
                    TxVerdict::Retry => retry.push(i),
                    TxVerdict::ConditionFailed(old) => {
                        run.condition_failed.push((i, tag, old, now))
                    }
                    TxVerdict::Single => run.single.push(i),
                }
            }
            if retry.len() == attempted {
                // Nothing failed its condition, so the cancellation was contention: back off.
                tokio::time::sleep(Duration::from_millis(20 << attempt)).await;
            }
            pending = retry;
        }
        run.single.extend(pending);
        Ok(run)
    }

    /// Writes history entries; a failure is logged, not returned: the decision they record is
    /// already durable, and failing the batch would only delay delivery (history is audit only).
    async fn write_history(&self, entries: Vec<PendingHistory>) {
        let items: Vec<Item> = entries
            .iter()
            .map(|h| item::history_item(&h.id, h.slot, h.at, h.version, &h.kind, h.expires))
            .collect();
        if let [one] = items.as_slice() {
            let res = self
                .client
                .put_item()
                .table_name(&self.table)
                .set_item(Some(one.clone()))
                .send()
                .await;
            if let Err(e) = res {
                tracing::warn!(table = %self.table, error = %gdfwd_aws_error::describe(&e), "writing a history entry failed; the audit history misses it");
            }
            return;
        }
        for chunk in items.chunks(25) {
            let mut pending: Vec<WriteRequest> = Vec::with_capacity(chunk.len());
            for it in chunk {
                match PutRequest::builder().set_item(Some(it.clone())).build() {
                    Ok(p) => pending.push(WriteRequest::builder().put_request(p).build()),
                    Err(e) => {
                        tracing::warn!(table = %self.table, error = %e, "building a history write failed");
                    }
                }
            }
            // BatchWriteItem may leave items unprocessed under load: resend those, with backoff.
            for attempt in 0..5u32 {
                if pending.is_empty() {
                    break;
                }
                let res = self
                    .client
                    .batch_write_item()
                    .request_items(self.table.clone(), std::mem::take(&mut pending))
                    .send()
                    .await;
                match res {
                    Ok(out) => {
                        pending = out
                            .unprocessed_items()
                            .and_then(|m| m.get(&self.table))
                            .cloned()
                            .unwrap_or_default();
                        if !pending.is_empty() {
                            tokio::time::sleep(Duration::from_millis(50 << attempt)).await;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(table = %self.table, error = %gdfwd_aws_error::describe(&e), "writing history entries failed; the audit history misses them");
                        pending.clear();
                    }
                }
            }
            if !pending.is_empty() {
                tracing::warn!(table = %self.table, unprocessed = pending.len(), "history entries left unprocessed");
            }
        }
    }

    /// The winning claim's write: an upsert of the record, conditioned on the record being absent,
    /// or live with no newer-or-equal version delivered and either an older latest version or a
    /// latest claim released or whose lease ran out ([`gdfwd_core::store::judge_claim`]'s New).
    /// The single claim and the batched (transactional) claim use the same write.
    fn claim_write(
        req: &ClaimRequest,
        now: Timestamp,
        lease_ms: i64,
        expires: Timestamp,
        token: &str,
        expect: item::Expect,
    ) -> (Expr, String, String, item::Slot) {
        let id = req.key.finding_id.as_str();
        let v = req.key.version;
        let mut e = Expr::default();
        let mut sets = Vec::new();
        sets.push(format!(
            "{} = {}",
            e.n(item::CLAIM_TOKEN),
            e.v("tok", item::s(token))
        ));
        let mut removes = Vec::new();
        let m = &req.meta;
        sets.push(format!(
            "{} = {}",
            e.n(item::FINDING_ID),
            e.v("id", item::s(id))
        ));
        sets.push(format!(
            "{} = {}",
            e.n(item::ACCOUNT),
            e.v("acc", item::s(&m.account_id))
        ));
        sets.push(format!(
            "{} = {}",
            e.n(item::REGION),
            e.v("reg", item::s(&m.region))
        ));
        match &m.finding_type {
            Some(t) => sets.push(format!(
                "{} = {}",
                e.n(item::FINDING_TYPE),
                e.v("ft", item::s(t))
            )),
            None => removes.push(e.n(item::FINDING_TYPE)),
        }
        match m.severity.filter(|s| s.is_finite()) {
            Some(sev) => sets.push(format!(
                "{} = {}",
                e.n(item::SEVERITY),
                e.v("sev", item::n(sev))
            )),
            None => removes.push(e.n(item::SEVERITY)),
        }
        match &m.title {
            Some(t) => sets.push(format!(
                "{} = {}",
                e.n(item::TITLE),
                e.v("title", item::s(t))
            )),
            None => removes.push(e.n(item::TITLE)),
        }
        let vv = e.v("v", item::ts(v));
        let nowv = e.v("now", item::ts(now));
        let zero = e.v("zero", item::n(0));
        let pending = e.v("pending", item::s(Status::Pending.as_str()));
        sets.push(format!("{} = {vv}", e.n(item::LATEST)));
        sets.push(format!("{} = {pending}", e.n(item::STATUS)));
        sets.push(format!(
            "{} = {}",
            e.n(item::LEASE_UNTIL),
            e.v("lease", item::ts(now.saturating_add_millis(lease_ms)))
        ));
        let first = e.n(item::FIRST_SEEN);
        sets.push(format!("{first} = if_not_exists({first}, {nowv})"));
        sets.push(format!("{} = {nowv}", e.n(item::LAST_SEEN)));
        sets.push(format!("{} = {nowv}", e.n(item::UPDATED_AT)));
        Self::set_expiry(&mut e, &mut sets, expires);
        sets.push(format!(
            "{} = {}",
            e.n(GSI1_PK),
            e.v("g1pk", item::s(item::account_pk(&m.account_id)))
        ));
        sets.push(format!(
            "{} = {}",
            e.n(GSI1_SK),
            e.v("g1sk", item::s(item::gsi1_sk(now, id)))
        ));
        for c in [
            item::VERSIONS_SENT,
            item::DUPLICATES,
            item::STALE,
            item::FAILURES,
        ] {
            let c = e.n(c);
            sets.push(format!("{c} = if_not_exists({c}, {zero})"));
        }
        let slot = expect.next(now);
        let expected = Self::expect_clause(&mut e, &mut sets, expect, slot);
        let mut update = format!("SET {}", sets.join(", "));
        if !removes.is_empty() {
            update.push_str(&format!(" REMOVE {}", removes.join(", ")));
        }
        // A record without `sent_version` whose latest version is sent fails here (`st` is
        // neither failed nor pending) and is judged against that version.
        // A first claim expects no record; any other expects the record it was decided from
        // (or guessed: a wrong guess fails and returns the record to decide from).
        let condition = match expect {
            item::Expect::Absent => expected,
            item::Expect::At { .. } => format!(
                "{expected} AND {exp} > {nowv} AND (attribute_not_exists({sent}) OR {sent} < {vv}) AND ({lat} < {vv} OR {st} = {failed} OR ({st} = {pending} AND {lease} <= {nowv}))",
                exp = e.n(item::EXPIRES_MS),
                sent = e.n(item::SENT),
                lat = e.n(item::LATEST),
                st = e.n(item::STATUS),
                lease = e.n(item::LEASE_UNTIL),
                failed = e.v("failed", item::s(Status::Failed.as_str())),
            ),
        };
        (e, update, condition, slot)
    }

    /// Decides one claim (the record writes), returning the outcome and the history entry to write.
    /// `known_old`: the record as a batch transaction found it when this claim's condition
    /// failed; the first round then starts from it instead of repeating the failed write.
    async fn decide_claim(
        &self,
        req: &ClaimRequest,
        lease: Duration,
        mut known_old: Option<Item>,
    ) -> Result<(ClaimOutcome, PendingHistory), DynamoStoreError> {
        const OP: &str = "claim";
        let id = req.key.finding_id.as_str();
        let v = req.key.version;
        let lease_ms = i64::try_from(lease.as_millis()).unwrap_or(i64::MAX);
        let _serial = self.stripe(id).lock().await;
        // Every claim token this decision wrote (or tried to), with the entry it numbered: a
        // record holding one of them is our own claim, applied although its answer was lost.
        let mut tokens: Vec<(String, item::Slot)> = Vec::new();
        let mut expect = self.guess(id);
        for _ in 0..MAX_CLAIM_LOOPS {
            let now = self.clock.now();
            let expires = self.expiry(now);
            let hist = |kind, slot| PendingHistory {
                id: id.to_owned(),
                slot,
                at: now,
                version: v,
                kind,
                expires,
            };
            // 1. The winning claim, as an upsert on an absent or live record.
            let old = if let Some(old) = known_old.take() {
                old
            } else {
                let token = item::new_token();
                let (e, update, condition, slot) =
                    Self::claim_write(req, now, lease_ms, expires, &token, expect);
                let owner = item::owner_of(&token);
                tokens.push((token, slot));
                match self.update_record(OP, id, e, update, condition).await? {
                    Written::Ok => {
                        self.wrote(id, slot);
                        return Ok((
                            ClaimOutcome::New { owner },
                            hist(HistoryKind::Claimed, slot),
                        ));
                    }
                    Written::ConditionFailed(Some(old)) => old,
                    // No record: it expired and was deleted (our guess was stale); re-run.
                    Written::ConditionFailed(None) => {
                        expect = item::Expect::Absent;
                        continue;
                    }
                }
            };
            // An old item without the attributes every record write sets cannot come from
            // DynamoDB (writes are atomic there); emulators that apply an update attribute by
            // attribute can show one mid-write. Re-run rather than fail (bounded by the loop).
            let (Ok(is_expired), Ok(was)) = (item::expired(&old, now), item::Expect::of(&old))
            else {
                continue;
            };
            expect = was;
            // 2. Expired but not yet deleted by DynamoDB: replace it with a fresh record.
            if is_expired {
                let token = item::new_token();
                let fresh = self.put_fresh(req, now, lease_ms, &token).await;
                let owner = item::owner_of(&token);
                let slot = item::Expect::Absent.next(now);
                tokens.push((token, slot));
                if fresh? {
                    self.wrote(id, slot);
                    return Ok((
                        ClaimOutcome::New { owner },
                        hist(HistoryKind::Claimed, slot),
                    ));
                }
                continue;
            }
            // 3. Our own claim, applied by an attempt whose answer was lost (a timeout or a 5xx
            //    after the write) and refused to the SDK's retry: we hold the lease.
            let names: Vec<String> = tokens.iter().map(|(t, _)| t.clone()).collect();
            if item::is_own_claim(&old, v, &names) {
                let mine = item::get_s(&old, item::CLAIM_TOKEN).unwrap_or_default();
                if let Some((token, slot)) = tokens.iter().find(|(t, _)| t == mine) {
                    self.wrote(id, *slot);
                    let owner = item::owner_of(token);
                    return Ok((
                        ClaimOutcome::New { owner },
                        hist(HistoryKind::Claimed, *slot),
                    ));
                }
            }
            // 4. The claim lost: the old record says why, by the rule the condition encodes.
            //    New means it changed since (a lease ended, a claim was released, or only its
            //    history count moved): re-run from it.
            let Ok(record) = item::record_from(&old) else {
                continue;
            };
            // An answer in flight is not final (the caller tries again): no counter.
            let (outcome, counter) = match judge_claim(Some(&record), v, now) {
                ClaimOutcome::New { .. } => continue,
                stale @ ClaimOutcome::Stale { .. } => (stale, Some(item::STALE)),
                in_flight @ ClaimOutcome::InFlight { .. } => (in_flight, None),
                other => (other, Some(item::DUPLICATES)),
            };
            let mut e = Expr::default();
            let mut sets = Vec::new();
            let nowv = e.v("now", item::ts(now));
            sets.push(format!("{} = {nowv}", e.n(item::LAST_SEEN)));
            sets.push(format!("{} = {nowv}", e.n(item::UPDATED_AT)));
            Self::set_expiry(&mut e, &mut sets, expires);
            sets.push(format!(
                "{} = {}",
                e.n(GSI1_SK),
                e.v("g1sk", item::s(item::gsi1_sk(now, id)))
            ));
            let slot = expect.next(now);
            let expected = Self::expect_clause(&mut e, &mut sets, expect, slot);
            let mut update = format!("SET {}", sets.join(", "));
            if let Some(counter) = counter {
                update.push_str(&format!(" ADD {} {}", e.n(counter), e.v("one", item::n(1))));
            }
            let condition = format!("{expected} AND {} > {nowv}", e.n(item::EXPIRES_MS));
            match self.update_record(OP, id, e, update, condition).await? {
                Written::Ok => {
                    self.wrote(id, slot);
                    let kind = match outcome {
                        ClaimOutcome::Stale { newest } => HistoryKind::Stale { newest },
                        ClaimOutcome::InFlight { lease_until } => {
                            HistoryKind::InFlight { lease_until }
                        }
                        _ => HistoryKind::Duplicate,
                    };
                    return Ok((outcome, hist(kind, slot)));
                }
                // Changed (or expired) in between: decide again from what it is now.
                Written::ConditionFailed(Some(old)) => known_old = Some(old),
                Written::ConditionFailed(None) => expect = item::Expect::Absent,
            }
        }
        Err(DynamoStoreError::Contended {
            table: self.table.clone(),
            operation: OP,
            finding_id: id.to_owned(),
        })
    }

    /// Replaces an expired record with a fresh one (counters at zero); false when another writer
    /// got there first.
    async fn put_fresh(
        &self,
        req: &ClaimRequest,
        now: Timestamp,
        lease_ms: i64,
        token: &str,
    ) -> Result<bool, DynamoStoreError> {
        const OP: &str = "claim";
        let id = req.key.finding_id.as_str();
        let m = &req.meta;
        let expires = self.expiry(now);
        let mut it: Item = HashMap::from([
            (item::CLAIM_TOKEN.to_owned(), item::s(token)),
            (PK.to_owned(), item::s(item::finding_pk(id))),
            (SK.to_owned(), item::s(item::RECORD_SK)),
            (item::FINDING_ID.to_owned(), item::s(id)),
            (item::ACCOUNT.to_owned(), item::s(&m.account_id)),
            (item::REGION.to_owned(), item::s(&m.region)),
            (item::LATEST.to_owned(), item::ts(req.key.version)),
            (item::STATUS.to_owned(), item::s(Status::Pending.as_str())),
            (
                item::LEASE_UNTIL.to_owned(),
                item::ts(now.saturating_add_millis(lease_ms)),
            ),
            (item::FIRST_SEEN.to_owned(), item::ts(now)),
            (item::LAST_SEEN.to_owned(), item::ts(now)),
            (item::UPDATED_AT.to_owned(), item::ts(now)),
            (item::VERSIONS_SENT.to_owned(), item::n(0)),
            (item::DUPLICATES.to_owned(), item::n(0)),
            (item::STALE.to_owned(), item::n(0)),
            (item::FAILURES.to_owned(), item::n(0)),
            // A new incarnation (first_seen = now) numbers its history from 1.
            (item::SEQ_NO.to_owned(), item::n(1)),
            (item::EXPIRES_MS.to_owned(), item::ts(expires)),
            (
                TTL_ATTRIBUTE.to_owned(),
                item::n(item::ttl_seconds(expires)),
            ),
            (GSI1_PK.to_owned(), item::s(item::account_pk(&m.account_id))),
            (GSI1_SK.to_owned(), item::s(item::gsi1_sk(now, id))),
        ]);
        if let Some(t) = &m.finding_type {
            it.insert(item::FINDING_TYPE.to_owned(), item::s(t));
        }
        if let Some(sev) = m.severity.filter(|s| s.is_finite()) {
            it.insert(item::SEVERITY.to_owned(), item::n(sev));
        }
        if let Some(t) = &m.title {
            it.insert(item::TITLE.to_owned(), item::s(t));
        }
        let res = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(it))
            .condition_expression("attribute_not_exists(#pk) OR #exp <= :now")
            .expression_attribute_names("#pk", PK)
            .expression_attribute_names("#exp", item::EXPIRES_MS)
            .expression_attribute_values(":now", item::ts(now))
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
            Err(e) => Err(self.call_err(OP, e)),
        }
    }

    /// The record write of a commit (`reason: None`) or a release. `latest_only`: the write that
    /// applies when `v` is the latest version (sets the status, ends the lease); otherwise the
    /// counters-only write for an older version.
    fn finish_write(
        v: Timestamp,
        now: Timestamp,
        expires: Timestamp,
        reason: Option<&str>,
        latest_only: Option<Owner>,
        token: &str,
        expect: item::Expect,
    ) -> (Expr, String, String, item::Slot) {
        let mut e = Expr::default();
        let mut sets = Vec::new();
        let slot = expect.next(now);
        let expected = Self::expect_clause(&mut e, &mut sets, expect, slot);
        let nowv = e.v("now", item::ts(now));
        let vv = e.v("v", item::ts(v));
        sets.push(format!("{} = {nowv}", e.n(item::UPDATED_AT)));
        let ft = e.n(item::FINISH_TOKEN);
        let ftok = e.v("ftok", item::s(token));
        sets.push(format!("{ft} = {ftok}"));
        Self::set_expiry(&mut e, &mut sets, expires);
        let counter = match reason {
            Some(r) => {
                sets.push(format!(
                    "{} = {}",
                    e.n(item::LAST_ERROR),
                    e.v("err", item::s(r))
                ));
                item::FAILURES
            }
            None => item::VERSIONS_SENT,
        };
        // Never twice the same write: a retry of an applied write fails here and finds its token.
        let mut condition = format!(
            "{expected} AND {} > {nowv} AND (attribute_not_exists({ft}) OR {ft} <> {ftok})",
            e.n(item::EXPIRES_MS)
        );
        let mut remove = String::new();
        if let Some(owner) = latest_only {
            let new_status = if reason.is_some() {
                Status::Failed
            } else {
                Status::Sent
            };
            let st = e.n(item::STATUS);
            sets.push(format!(
                "{st} = {}",
                e.v("st", item::s(new_status.as_str()))
            ));
            remove = format!(" REMOVE {}", e.n(item::LEASE_UNTIL));
            if reason.is_none() {
                // The latest claimed version is never older than the newest delivered one.
                sets.push(format!("{} = {vv}", e.n(item::SENT)));
            }
            condition.push_str(&format!(" AND {} = {vv}", e.n(item::LATEST)));
            // Only the claim's current owner (issue #20).
            condition.push_str(&format!(
                " AND {} = {}",
                e.n(item::CLAIM_TOKEN),
                e.v("owner", item::s(owner.to_string()))
            ));
            if reason.is_some() {
                // Only a pending claim is freed: a sent version never becomes claimable.
                condition.push_str(&format!(
                    " AND {} = {}",
                    e.n(item::STATUS),
                    e.v("pending", item::s(Status::Pending.as_str()))
                ));
            }
        } else if reason.is_some() {
            condition.push_str(&format!(" AND {} >= {vv}", e.n(item::LATEST)));
        } else {
            condition.push_str(&format!(" AND {} > {vv}", e.n(item::LATEST)));
        }
        let update = format!(
            "SET {}{remove} ADD {} {}",
            sets.join(", "),
            e.n(counter),
            e.v("one", item::n(1))
        );
        (e, update, condition, slot)
    }

    /// After a delivery of `v` that was not the latest claim: the newest delivered version
    /// becomes `v` unless a newer one was delivered already (a condition, since an update
    /// expression cannot take a maximum). Losing that condition is the expected answer.
    async fn raise_sent_version(
        &self,
        id: &str,
        v: Timestamp,
        now: Timestamp,
    ) -> Result<(), DynamoStoreError> {
        let mut e = Expr::default();
        let sent = e.n(item::SENT);
        let vv = e.v("v", item::ts(v));
        let update = format!("SET {sent} = {vv}");
        let condition = format!(
            "attribute_exists({}) AND {} > {} AND (attribute_not_exists({sent}) OR {sent} < {vv})",
            e.n(PK),
            e.n(item::EXPIRES_MS),
            e.v("now", item::ts(now)),
        );
        self.update_record("commit", id, e, update, condition)
            .await
            .map(|_| ())
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

    /// `commit`/`release`: the write that applies when the version is the latest and `owner`'s
    /// claim (with its history entry, in one transaction when transactions are on), or, when
    /// the record it returns shows an older version was meant, the counters-only write. Every
    /// write expects the record's history count it was decided from; when another writer moved
    /// it, the finish is decided again from the record the failed condition returns.
    async fn finish(
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
        let op = finish.op();
        let id = key.finding_id.as_str();
        let v = key.version;
        let never = "the finding was never claimed (or its record expired)";
        // Writes of one finding from this process queue here, as claims do: each would only
        // fail the other's history-count condition (and moto applies concurrent conditional
        // updates of one item non-atomically).
        let _serial = self.stripe(id).lock().await;
        for _ in 0..MAX_CLAIM_LOOPS {
            let now = self.clock.now();
            let expires = self.expiry(now);
            let (found, token) = match old.take() {
                Some(found) => found,
                None => {
                    if expect == item::Expect::Absent {
                        return Err(self.not_claimed(op, key, never));
                    }
                    // The common case (the version is the latest) in ONE request.
                    let token = item::new_token();
                    let write = || {
                        Self::finish_write(
                            v,
                            now,
                            expires,
                            finish.reason(),
                            Some(owner),
                            &token,
                            expect,
                        )
                    };
                    let (e, u, c, slot) = write();
                    let hist = item::history_item(id, slot, now, v, &finish.kind(), expires);
                    let (written, with_history) = if self.transactions {
                        match self.update_with_history(op, id, e, u, c, hist).await? {
                            Some(w) => (w, true),
                            None => {
                                let (e, u, c, _) = write();
                                (self.update_record(op, id, e, u, c).await?, false)
                            }
                        }
                    } else {
                        (self.update_record(op, id, e, u, c).await?, false)
                    };
                    match written {
                        Written::ConditionFailed(None) => {
                            return Err(self.not_claimed(op, key, never));
                        }
                        Written::ConditionFailed(Some(found))
                            if !item::is_own_finish(&found, &token) =>
                        {
                            (found, token)
                        }
                        // Applied (perhaps by an attempt whose answer was lost: counted once).
                        _ => {
                            self.finished(id, slot, now, v, finish, expires, with_history)
                                .await;
                            return Ok(());
                        }
                    }
                }
            };
            // A batch's write that was applied before its answer was lost: done, history too.
            if item::is_own_finish(&found, &token) {
                return Ok(());
            }
            let corrupt = |m| self.corrupt(op, &item::finding_pk(id), m);
            if item::expired(&found, now).map_err(corrupt)? {
                return Err(self.not_claimed(op, key, never));
            }
            let record = item::record_from(&found).map_err(corrupt)?;
            expect = item::Expect::of(&found).map_err(corrupt)?;
            match judge_finish(Some(&record), key, owner) {
                FinishCheck::NotClaimed(message) => {
                    return Err(self.not_claimed(op, key, message));
                }
                FinishCheck::StaleOwner => {
                    return Err(DynamoStoreError::StaleOwner {
                        table: self.table.clone(),
                        operation: op,
                        finding_id: key.finding_id.clone(),
                        version: key.version,
                    });
                }
                // Only the history count moved under it: the latest write again, from now.
                FinishCheck::Latest
                    if finish.reason().is_none() || record.status == Status::Pending =>
                {
                    continue;
                }
                // An older version, or a release of the latest version once it was sent
                // (never made claimable again): counters and history only.
                FinishCheck::Latest | FinishCheck::Older => {}
            }
            let token = item::new_token();
            let (e, u, c, slot) =
                Self::finish_write(v, now, expires, finish.reason(), None, &token, expect);
            match self.update_record(op, id, e, u, c).await? {
                Written::ConditionFailed(None) => return Err(self.not_claimed(op, key, never)),
                Written::ConditionFailed(Some(found)) if !item::is_own_finish(&found, &token) => {
                    old = Some((found, token));
                }
                _ => {
                    if finish.reason().is_none() {
                        self.raise_sent_version(id, v, now).await?;
                    }
                    self.finished(id, slot, now, v, finish, expires, false)
                        .await;
                    return Ok(());
                }
            }
        }
        Err(DynamoStoreError::Contended {
            table: self.table.clone(),
            operation: op,
            finding_id: id.to_owned(),
        })
    }

    /// After a finish's record write numbered entry `slot`: remembers it, and writes the
    /// history entry unless it went with the record (`with_history`).
    #[allow(clippy::too_many_arguments)]
    async fn finished(
        &self,
        id: &str,
        slot: item::Slot,
        at: Timestamp,
        version: Timestamp,
        finish: Finishing<'_>,
        expires: Timestamp,
        with_history: bool,
    ) {
        self.wrote(id, slot);
        if !with_history {
            self.write_history(vec![PendingHistory {
                id: id.to_owned(),
                slot,
                at,
                version,
                kind: finish.kind(),
                expires,
            }])
            .await;
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
        const OP: &str = "finish_many";
        let mut results: Vec<Option<Result<(), DynamoStoreError>>> =
            (0..items.len()).map(|_| None).collect();
        let mut seen = std::collections::HashSet::new();
        let (mut firsts, mut single) = (Vec::new(), Vec::new());
        for (i, (key, _, _)) in items.iter().enumerate() {
            if seen.insert(key.finding_id.as_str()) {
                firsts.push(i);
            } else {
                single.push(i);
            }
        }
        // (index, (finish token, entry), old record, the attempt's "now"), as `TxRun` has them.
        type Failed = (usize, (String, item::Slot), Option<Item>, Timestamp);
        let mut failed_condition: Vec<Failed> = Vec::new();
        for chunk in firsts.chunks(MAX_TX_CLAIMS) {
            let guards = self
                .lock_stripes(chunk.iter().filter_map(|&i| items.get(i)).map(|it| &it.0))
                .await;
            let run = self
                .transact_batch(OP, chunk, |i, now, expires| {
                    let (key, owner, finish) = &items[i];
                    let finish = Finishing::from(finish);
                    let id = key.finding_id.as_str();
                    let token = item::new_token();
                    let (e, u, c, slot) = Self::finish_write(
                        key.version,
                        now,
                        expires,
                        finish.reason(),
                        Some(*owner),
                        &token,
                        self.guess(id),
                    );
                    let h = item::history_item(id, slot, now, key.version, &finish.kind(), expires);
                    Ok((
                        self.tx_update(OP, id, e, u, c)?,
                        self.tx_put(OP, h)?,
                        (token, slot),
                    ))
                })
                .await;
            drop(guards);
            match run {
                Ok(run) => {
                    for (i, (_, slot)) in run.applied {
                        self.wrote(&items[i].0.finding_id, slot);
                        results[i] = Some(Ok(()));
                    }
                    failed_condition.extend(run.condition_failed);
                    single.extend(run.single);
                }
                // DynamoDB refused the transaction's data as a whole (one item it cannot hold)
                // and wrote nothing: each item alone, so only that one fails (issue #16).
                Err(DynamoStoreError::Refused { .. }) if chunk.len() > 1 => {
                    single.extend_from_slice(chunk);
                }
                // The call failed after the SDK's retries: the single path would only fail
                // the same way, once per item.
                Err(e) => {
                    for &i in chunk {
                        results[i] = Some(Err(e.clone()));
                    }
                }
            }
        }
        failed_condition.sort_by_key(|(i, _, _, _)| *i);
        for (i, (token, slot), old, _) in failed_condition {
            let (key, owner, finish) = &items[i];
            let r = match old {
                None => Err(self.not_claimed(
                    "finish_many",
                    key,
                    "the finding was never claimed (or its record expired)",
                )),
                // Applied before its answer was lost: the history entry went with it.
                Some(old) if item::is_own_finish(&old, &token) => {
                    self.wrote(&key.finding_id, slot);
                    Ok(())
                }
                Some(old) => {
                    self.finish_from(
                        key,
                        *owner,
                        finish.into(),
                        item::Expect::Absent,
                        Some((old, token)),
                    )
                    .await
                }
            };
            results[i] = Some(r);
        }
        single.sort_unstable();
        for i in single {
            let (key, owner, finish) = &items[i];
            results[i] = Some(self.finish(key, *owner, finish.into()).await);
        }
        results
            .into_iter()
            .enumerate()
            .map(|(i, r)| {
                r.unwrap_or_else(|| {
                    Err(self.corrupt(
                        OP,
                        &items[i].0.finding_id,
                        "no result was recorded".to_owned(),
                    ))
                })
            })
            .collect()
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

    async fn history_impl(&self, id: &str) -> Result<Option<FindingHistory>, DynamoStoreError> {
        const OP: &str = "history";
        let now = self.clock.now();
        let mut record = None;
        let mut raw_entries = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let out = self
                .client
                .query()
                .table_name(&self.table)
                .consistent_read(true)
                .key_condition_expression("#pk = :pk")
                .expression_attribute_names("#pk", PK)
                .expression_attribute_values(":pk", item::s(item::finding_pk(id)))
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| self.call_err(OP, e))?;
            for it in out.items() {
                let sk = item::get_s(it, SK).map_err(|m| self.corrupt(OP, id, m))?;
                if sk == item::RECORD_SK {
                    record = Some(it.clone());
                } else if sk.starts_with(item::HISTORY_PREFIX) {
                    raw_entries.push(it.clone());
                }
            }
            match out.last_evaluated_key() {
                Some(k) if !k.is_empty() => start = Some(k.clone()),
                _ => break,
            }
        }
        let key = item::finding_pk(id);
        let Some(rec) = record else {
            return Ok(None);
        };
        if item::expired(&rec, now).map_err(|m| self.corrupt(OP, &key, m))? {
            return Ok(None);
        }
        let record = item::record_from(&rec).map_err(|m| self.corrupt(OP, &key, m))?;
        let mut entries = Vec::with_capacity(raw_entries.len());
        // This incarnation's numbered entries: an earlier, expired incarnation of the record
        // (not yet deleted by TTL) numbered its own under its own `first_seen`.
        let ours = item::history_prefix(record.first_seen);
        let numbered = format!("{}S", item::HISTORY_PREFIX);
        for it in &raw_entries {
            let sk = item::get_s(it, SK).map_err(|m| self.corrupt(OP, &key, m))?;
            let e = item::history_from(it).map_err(|m| self.corrupt(OP, &key, m))?;
            let keep = if sk.starts_with(&numbered) {
                sk.starts_with(&ours)
            } else {
                // An older gdfwd's entry (time-ordered key, no number): the time cut-off it
                // was written for.
                e.at >= record.first_seen
            };
            if keep {
                entries.push(e);
            }
        }
        Ok(Some(FindingHistory { record, entries }))
    }

    async fn list_impl(&self, q: &ListQuery) -> Result<Vec<FindingRecord>, DynamoStoreError> {
        const OP: &str = "list";
        if q.limit == Some(0) {
            return Ok(Vec::new());
        }
        let now = self.clock.now();
        let mut out = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let mut e = Expr::default();
            let nowv = e.v("now", item::ts(now));
            let mut filter = vec![format!("{} > {nowv}", e.n(item::EXPIRES_MS))];
            match q.status {
                None => {}
                Some(
                    counted @ (StatusFilter::Sent | StatusFilter::Duplicate | StatusFilter::Stale),
                ) => {
                    let counter = match counted {
                        StatusFilter::Sent => item::VERSIONS_SENT,
                        StatusFilter::Duplicate => item::DUPLICATES,
                        _ => item::STALE,
                    };
                    filter.push(format!("{} > {}", e.n(counter), e.v("zero", item::n(0))));
                }
                Some(StatusFilter::Failed) => {
                    filter.push(format!(
                        "{} > {} AND {} = {}",
                        e.n(item::FAILURES),
                        e.v("zero", item::n(0)),
                        e.n(item::STATUS),
                        e.v("st", item::s(Status::Failed.as_str()))
                    ));
                }
                Some(StatusFilter::Pending) => {
                    filter.push(format!(
                        "{} = {}",
                        e.n(item::STATUS),
                        e.v("st", item::s(Status::Pending.as_str()))
                    ));
                }
            }
            if let Some(p) = &q.finding_type {
                filter.push(format!(
                    "begins_with({}, {})",
                    e.n(item::FINDING_TYPE),
                    e.v("ftp", item::s(p))
                ));
            }
            let page = if let Some(acc) = &q.account {
                // The audit index: one account's records, newest sighting first.
                let mut kc = format!(
                    "{} = {}",
                    e.n(GSI1_PK),
                    e.v("g1pk", item::s(item::account_pk(acc)))
                );
                match (q.since, q.until) {
                    (Some(a), Some(b)) => kc.push_str(&format!(
                        " AND {} BETWEEN {} AND {}",
                        e.n(GSI1_SK),
                        e.v("lo", item::s(item::ms15(a))),
                        // `<ms15(until)` exclusive: every key of an earlier ms sorts before it.
                        e.v("hi", item::s(item::ms15(b.saturating_add_millis(-1)) + "$"))
                    )),
                    (Some(a), None) => {
                        kc.push_str(&format!(
                            " AND {} >= {}",
                            e.n(GSI1_SK),
                            e.v("lo", item::s(item::ms15(a)))
                        ));
                    }
                    (None, Some(b)) => {
                        kc.push_str(&format!(
                            " AND {} < {}",
                            e.n(GSI1_SK),
                            e.v("hi", item::s(item::ms15(b)))
                        ));
                    }
                    (None, None) => {}
                }
                let res = self
                    .client
                    .query()
                    .table_name(&self.table)
                    .index_name(GSI1)
                    .key_condition_expression(kc)
                    .filter_expression(filter.join(" AND "))
                    .scan_index_forward(false)
                    .set_expression_attribute_names(Some(e.names))
                    .set_expression_attribute_values(Some(e.values))
                    .set_exclusive_start_key(start.take())
                    .send()
                    .await
                    .map_err(|err| self.call_err(OP, err))?;
                (res.items().to_vec(), res.last_evaluated_key().cloned())
            } else {
                // No account: a filtered Scan of the records (audit only, never a hot path).
                filter.push(format!(
                    "{} = {}",
                    e.n(SK),
                    e.v("r", item::s(item::RECORD_SK))
                ));
                if let Some(a) = q.since {
                    filter.push(format!(
                        "{} >= {}",
                        e.n(item::LAST_SEEN),
                        e.v("since", item::ts(a))
                    ));
                }
                if let Some(b) = q.until {
                    filter.push(format!(
                        "{} < {}",
                        e.n(item::LAST_SEEN),
                        e.v("until", item::ts(b))
                    ));
                }
                let res = self
                    .client
                    .scan()
                    .table_name(&self.table)
                    .filter_expression(filter.join(" AND "))
                    .set_expression_attribute_names(Some(e.names))
                    .set_expression_attribute_values(Some(e.values))
                    .set_exclusive_start_key(start.take())
                    .send()
                    .await
                    .map_err(|err| self.call_err(OP, err))?;
                (res.items().to_vec(), res.last_evaluated_key().cloned())
            };
            for it in &page.0 {
                let key = item::get_s(it, PK).unwrap_or("?").to_owned();
                let r = item::record_from(it).map_err(|m| self.corrupt(OP, &key, m))?;
                // The port's own predicate, as a guard against the filters drifting apart.
                if q.matches(&r) {
                    out.push(r);
                }
            }
            match page.1 {
                Some(k) if !k.is_empty() => start = Some(k),
                _ => break,
            }
        }
        out.sort_by(|a, b| {
            b.last_seen
                .cmp(&a.last_seen)
                .then_with(|| a.finding_id.cmp(&b.finding_id))
        });
        if let Some(n) = q.limit {
            out.truncate(n);
        }
        Ok(out)
    }
}

#[async_trait]
impl StateStore for DynamoStore {
    fn describe(&self) -> String {
        format!("dynamodb:{}", self.table)
    }

    fn refuses(&self, req: &ClaimRequest) -> Option<String> {
        item::refusal(req)
    }

    async fn claim(&self, req: &ClaimRequest, lease: Duration) -> Result<ClaimOutcome, StoreError> {
        let (outcome, h) = self.decide_claim(req, lease, None).await?;
        self.write_history(vec![h]).await;
        Ok(outcome)
    }

    /// The first request of each finding goes into one `TransactWriteItems` per
    /// [`MAX_TX_CLAIMS`] (the record updates with their history entries): one request for a
    /// batch whose claims all win. The rest take the single-claim path afterwards, findings
    /// concurrently, each finding's requests in input order: claims that lost in the
    /// transaction (its single claim decides Duplicate/Stale/expired exactly as `claim` does)
    /// and a finding's later requests in the batch (a transaction cannot touch an item twice).
    /// So the result equals claiming one by one in order. History entries of the single path
    /// are then written with `BatchWriteItem`.
    async fn claim_many(
        &self,
        reqs: &[ClaimRequest],
        lease: Duration,
    ) -> Result<Vec<ClaimOutcome>, StoreError> {
        let lease_ms = i64::try_from(lease.as_millis()).unwrap_or(i64::MAX);
        let mut outcomes: Vec<Option<ClaimOutcome>> = vec![None; reqs.len()];
        let mut seen: std::collections::HashSet<&str> = std::collections::HashSet::new();
        let (mut firsts, mut rest) = (Vec::new(), Vec::new());
        for (i, r) in reqs.iter().enumerate() {
            if seen.insert(r.key.finding_id.as_str()) {
                firsts.push(i);
            } else {
                rest.push(i);
            }
        }
        if !self.transactions {
            rest.append(&mut firsts);
        }
        let mut known = HashMap::new();
        for chunk in firsts.chunks(MAX_TX_CLAIMS) {
            let tx = self.claim_transaction(reqs, chunk, lease_ms).await?;
            for (i, owner) in tx.won {
                outcomes[i] = Some(ClaimOutcome::New { owner });
            }
            rest.extend(tx.single);
            known.extend(tx.known);
        }
        rest.sort_unstable();
        // Each finding's remaining requests, in input order; findings in order of first appearance.
        let mut groups: Vec<Vec<usize>> = Vec::new();
        let mut index: HashMap<&str, usize> = HashMap::new();
        for &i in &rest {
            let id = reqs[i].key.finding_id.as_str();
            match index.get(id) {
                Some(&g) => groups[g].push(i),
                None => {
                    index.insert(id, groups.len());
                    groups.push(vec![i]);
                }
            }
        }
        let tasks: Vec<_> = groups
            .into_iter()
            .map(|idxs| self.claim_group(reqs, idxs, lease, &known))
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
        if let Some(e) = first_err {
            return Err(e.into());
        }
        outcomes
            .into_iter()
            .enumerate()
            .map(|(i, o)| {
                o.ok_or_else(|| {
                    StoreError::from(self.corrupt(
                        "claim_many",
                        &reqs[i].key.finding_id,
                        "no outcome was recorded".to_owned(),
                    ))
                })
            })
            .collect()
    }

    async fn commit(
        &self,
        key: &VersionKey,
        owner: Owner,
        delivery: &Delivery,
    ) -> Result<(), StoreError> {
        Ok(self.finish(key, owner, Finishing::Commit(delivery)).await?)
    }

    async fn release(
        &self,
        key: &VersionKey,
        owner: Owner,
        reason: &str,
    ) -> Result<(), StoreError> {
        Ok(self.finish(key, owner, Finishing::Release(reason)).await?)
    }

    /// One `TransactWriteItems` for a batch whose versions are all the latest (see
    /// `finish_batch`); without transactions, or for one item, the single path.
    async fn finish_many(
        &self,
        items: &[(VersionKey, Owner, Finish)],
    ) -> Vec<Result<(), StoreError>> {
        let results = if self.transactions && items.len() > 1 {
            self.finish_batch(items).await
        } else {
            let mut out = Vec::with_capacity(items.len());
            for (key, owner, finish) in items {
                out.push(self.finish(key, *owner, finish.into()).await);
            }
            out
        };
        results
            .into_iter()
            .map(|r| r.map_err(StoreError::from))
            .collect()
    }

    async fn history(&self, finding_id: &str) -> Result<Option<FindingHistory>, StoreError> {
        Ok(self.history_impl(finding_id).await?)
    }

    async fn list(&self, query: &ListQuery) -> Result<Vec<FindingRecord>, StoreError> {
        Ok(self.list_impl(query).await?)
    }

    async fn kv_get(&self, namespace: &str, key: &str) -> Result<Option<String>, StoreError> {
        const OP: &str = "kv_get";
        let now = self.clock.now();
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .consistent_read(true)
            .key(PK, item::s(item::kv_pk(namespace)))
            .key(SK, item::s(key))
            .send()
            .await
            .map_err(|e| self.call_err(OP, e))?;
        let Some(it) = out.item() else {
            return Ok(None);
        };
        let k = format!("{}/{key}", item::kv_pk(namespace));
        if item::expired(it, now).map_err(|m| self.corrupt(OP, &k, m))? {
            return Ok(None);
        }
        Ok(Some(
            item::get_s(it, item::VALUE)
                .map_err(|m| self.corrupt(OP, &k, m))?
                .to_owned(),
        ))
    }

    async fn kv_put(
        &self,
        namespace: &str,
        key: &str,
        value: &str,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        const OP: &str = "kv_put";
        let now = self.clock.now();
        let expires = now.saturating_add_millis(i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX));
        self.client
            .put_item()
            .table_name(&self.table)
            .item(PK, item::s(item::kv_pk(namespace)))
            .item(SK, item::s(key))
            .item(item::VALUE, item::s(value))
            .item(item::EXPIRES_MS, item::ts(expires))
            .item(TTL_ATTRIBUTE, item::n(item::ttl_seconds(expires)))
            .send()
            .await
            .map_err(|e| self.call_err(OP, e))?;
        Ok(())
    }
}
