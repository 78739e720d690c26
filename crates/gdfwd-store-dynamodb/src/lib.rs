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
//!
//! Where things are: `expr` builds every record write's update and condition expressions (pure);
//! `claim` and `finish` decide claims and commits/releases, single and batched; `transaction` runs
//! `TransactWriteItems` and reads a cancelled one's reasons as verdicts (pure, unit-tested);
//! `write` holds the plain conditional update and the history writes; `query` the audit reads; `kv`
//! the key/value cache; `local` the process's claim stripes and record guesses; `item` the item
//! layout; `table` the table definition and its creation; `config` the SDK client. This file keeps
//! the type and the port's implementation.

mod claim;
mod config;
mod error;
mod expr;
mod finish;
mod item;
mod kv;
mod local;
mod query;
mod table;
mod transaction;
mod write;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use gdfwd_core::store::{
    ClaimOutcome, ClaimRequest, Delivery, FindingHistory, FindingRecord, Finish, KvStore,
    ListQuery, Owner, StateStore, VersionKey,
};
use gdfwd_core::{Clock, StoreError};
use gdfwd_model::Timestamp;

pub use config::{
    ATTEMPT_TIMEOUT, DEFAULT_INITIAL_BACKOFF, DEFAULT_MAX_ATTEMPTS, client, client_with_retries,
};
pub use error::DynamoStoreError;
pub use table::{
    AttributeDef, CreateOutcome, GSI1, GSI1_PK, GSI1_SK, IndexDef, KeyElement, PK, ProjectionDef,
    SK, TTL_ATTRIBUTE, TableDefinition, TtlDef, create_table, describe_definition,
    table_definition, validate_table_name,
};

use finish::Finishing;

/// Default retention of finding records after their last update.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(90 * 24 * 3600);

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
    known: Arc<local::Known>,
}

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
            stripes: local::new_stripes(),
            transactions: true,
            known: Arc::new(local::Known::new(HashMap::new())),
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

    /// The table name.
    pub fn table(&self) -> &str {
        &self.table
    }

    /// When a record written at `now` expires.
    fn expiry(&self, now: Timestamp) -> Timestamp {
        now.saturating_add_millis(self.retention_ms)
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
        Ok(self.claim_single(req, lease).await?)
    }

    /// One `TransactWriteItems` for the first claims of a batch's findings, the single path
    /// for the rest (see `claim_batch`).
    async fn claim_many(
        &self,
        reqs: &[ClaimRequest],
        lease: Duration,
    ) -> Result<Vec<ClaimOutcome>, StoreError> {
        Ok(self.claim_batch(reqs, lease).await?)
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
        let results = self.finish_each(items).await;
        results
            .into_iter()
            .map(|r| r.map_err(StoreError::from))
            .collect()
    }

    async fn history(&self, finding_id: &str) -> Result<Option<FindingHistory>, StoreError> {
        Ok(self.read_history(finding_id).await?)
    }

    async fn list(&self, query: &ListQuery) -> Result<Vec<FindingRecord>, StoreError> {
        Ok(self.list_records(query).await?)
    }

    fn kv(self: Arc<Self>) -> Option<Arc<dyn KvStore>> {
        Some(self)
    }
}

#[async_trait]
impl KvStore for DynamoStore {
    async fn kv_get(&self, namespace: &str, key: &str) -> Result<Option<String>, StoreError> {
        Ok(self.read_kv(namespace, key).await?)
    }

    async fn kv_put(
        &self,
        namespace: &str,
        key: &str,
        value: &str,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        Ok(self.write_kv(namespace, key, value, ttl).await?)
    }
}

/// What the unit tests of several modules claim: a bare finding `id` at `version`.
#[cfg(test)]
pub(crate) fn test_request(id: &str, version: gdfwd_model::Timestamp) -> ClaimRequest {
    ClaimRequest {
        key: VersionKey {
            finding_id: id.to_owned(),
            version,
        },
        meta: gdfwd_model::FindingMeta {
            account_id: "111122223333".into(),
            region: "eu-west-1".into(),
            finding_type: None,
            severity: None,
            title: None,
        },
    }
}
