//! The key/value cache of the port (`kv_get`/`kv_put`: enrichment's alias cache, checkpoints):
//! one item per key in the namespace's partition, expiring like the records.
//!
//! Expiry is decided against the store's clock on read (`expires_at_ms`), as for the records;
//! DynamoDB's TTL deletion only collects the garbage.

use std::time::Duration;

use crate::item;
use crate::table::{PK, SK, TTL_ATTRIBUTE};
use crate::{DynamoStore, DynamoStoreError};

impl DynamoStore {
    /// `kv_get`: the value under `namespace`/`key`, unless absent or expired.
    pub(crate) async fn read_kv(
        &self,
        namespace: &str,
        key: &str,
    ) -> Result<Option<String>, DynamoStoreError> {
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

    /// `kv_put`: stores `value` under `namespace`/`key` for `ttl`.
    pub(crate) async fn write_kv(
        &self,
        namespace: &str,
        key: &str,
        value: &str,
        ttl: Duration,
    ) -> Result<(), DynamoStoreError> {
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
