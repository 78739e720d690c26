//! The writes outside transactions: one conditional `UpdateItem` of a finding record, and the
//! history entries (`PutItem` for one, `BatchWriteItem` for more).
//!
//! A failed condition is an answer, not an error: [`Written::ConditionFailed`] carries the
//! record as it is (`ReturnValuesOnConditionCheckFailure = ALL_OLD`), which is what the next
//! decision starts from, without a read. History writes log their failures instead of
//! returning them: the decision they record is already durable, and the history is audit only.

use std::time::Duration;

use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{PutRequest, ReturnValuesOnConditionCheckFailure, WriteRequest};
use gdfwd_core::store::HistoryKind;
use gdfwd_model::Timestamp;

use crate::expr::RecordUpdate;
use crate::item::{self, Item};
use crate::table::{PK, SK};
use crate::{DynamoStore, DynamoStoreError};

/// What a conditional write did.
#[derive(Debug)]
pub(crate) enum Written {
    Ok,
    /// The condition failed; the old item when it existed.
    ConditionFailed(Option<Item>),
}

/// A history entry decided by an operation, written after it.
#[derive(Debug)]
pub(crate) struct PendingHistory {
    pub(crate) id: String,
    pub(crate) slot: item::Slot,
    pub(crate) at: Timestamp,
    pub(crate) version: Timestamp,
    pub(crate) kind: HistoryKind,
    pub(crate) expires: Timestamp,
}

impl PendingHistory {
    /// The entry as the item to write.
    pub(crate) fn item(&self) -> Item {
        item::history_item(
            &self.id,
            self.slot,
            self.at,
            self.version,
            &self.kind,
            self.expires,
        )
    }
}

/// `BatchWriteItem` takes at most 25 items.
const BATCH_WRITE_MAX: usize = 25;

impl DynamoStore {
    /// One conditional `UpdateItem` on a finding record.
    pub(crate) async fn update_record(
        &self,
        operation: &'static str,
        id: &str,
        w: RecordUpdate,
    ) -> Result<Written, DynamoStoreError> {
        let res = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(PK, item::s(item::finding_pk(id)))
            .key(SK, item::s(item::RECORD_SK))
            .update_expression(w.update)
            .condition_expression(w.condition)
            .set_expression_attribute_names(Some(w.expr.names))
            .set_expression_attribute_values(Some(w.expr.values))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match res {
            Ok(_) => Ok(Written::Ok),
            Err(err) => match err.as_service_error() {
                Some(UpdateItemError::ConditionalCheckFailedException(c)) => {
                    Ok(Written::ConditionFailed(c.item().cloned()))
                }
                _ => Err(self.call_err(operation, err)),
            },
        }
    }

    /// Writes history entries; a failure is logged, not returned: the decision they record is
    /// already durable, and failing the batch would only delay delivery (history is audit only).
    pub(crate) async fn write_history(&self, entries: Vec<PendingHistory>) {
        let items: Vec<Item> = entries.iter().map(PendingHistory::item).collect();
        if let [one] = items.as_slice() {
            self.put_history(one.clone()).await;
            return;
        }
        for chunk in items.chunks(BATCH_WRITE_MAX) {
            self.batch_write_history(chunk).await;
        }
    }

    /// One history entry, with `PutItem`.
    async fn put_history(&self, it: Item) {
        let res = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(it))
            .send()
            .await;
        if let Err(e) = res {
            tracing::warn!(table = %self.table, error = %gdfwd_aws_error::describe(&e), "writing a history entry failed; the audit history misses it");
        }
    }

    /// Up to [`BATCH_WRITE_MAX`] history entries, with `BatchWriteItem`.
    async fn batch_write_history(&self, chunk: &[Item]) {
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
            pending = self.batch_write_once(std::mem::take(&mut pending)).await;
            if !pending.is_empty() {
                tokio::time::sleep(Duration::from_millis(50 << attempt)).await;
            }
        }
        if !pending.is_empty() {
            tracing::warn!(table = %self.table, unprocessed = pending.len(), "history entries left unprocessed");
        }
    }

    /// One `BatchWriteItem`; returns the requests DynamoDB left unprocessed (none when the
    /// call failed: that is logged, and the entries are given up).
    async fn batch_write_once(&self, requests: Vec<WriteRequest>) -> Vec<WriteRequest> {
        let res = self
            .client
            .batch_write_item()
            .request_items(self.table.clone(), requests)
            .send()
            .await;
        match res {
            Ok(out) => out
                .unprocessed_items()
                .and_then(|m| m.get(&self.table))
                .cloned()
                .unwrap_or_default(),
            Err(e) => {
                tracing::warn!(table = %self.table, error = %gdfwd_aws_error::describe(&e), "writing history entries failed; the audit history misses them");
                Vec::new()
            }
        }
    }
}
