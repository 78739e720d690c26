//! A read-only view of a state store for `--dry-run`: answers claims as the real store would,
//! without writing anything.
//!
//! A preview must show what a real run would send, including suppression of versions the store
//! has already seen and of duplicates within the same input, yet "`--dry-run` claims nothing".
//! So it reads the real store's records and keeps this run's would-be claims in memory.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use gdfwd_model::Timestamp;

use crate::error::StoreError;
use crate::store::{
    ClaimOutcome, ClaimRequest, Delivery, FindingHistory, FindingRecord, KvStore, ListQuery, Owner,
    StateStore, VersionKey, judge_claim,
};

#[derive(Debug)]
pub struct PreviewStore {
    inner: Arc<dyn StateStore>,
    /// finding id → newest version this run would have claimed.
    claimed: Mutex<HashMap<String, Timestamp>>,
}

impl PreviewStore {
    pub fn new(inner: Arc<dyn StateStore>) -> Self {
        Self {
            inner,
            claimed: Mutex::new(HashMap::new()),
        }
    }
}

#[async_trait]
impl StateStore for PreviewStore {
    fn describe(&self) -> String {
        format!("preview of {}", self.inner.describe())
    }

    fn refuses(&self, req: &ClaimRequest) -> Option<String> {
        self.inner.refuses(req)
    }

    async fn claim(
        &self,
        req: &ClaimRequest,
        _lease: Duration,
    ) -> Result<ClaimOutcome, StoreError> {
        let v = req.key.version;
        let earlier = self
            .claimed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&req.key.finding_id)
            .copied();
        let outcome = match earlier {
            Some(seen) if v == seen => ClaimOutcome::Duplicate,
            Some(seen) if v < seen => ClaimOutcome::Stale { newest: seen },
            _ => {
                let history = self.inner.history(&req.key.finding_id).await?;
                // What the real store's record says, by the store's own rule.
                judge_claim(history.as_ref().map(|h| &h.record), v, Timestamp::now())
            }
        };
        if outcome.is_new() {
            self.claimed
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .insert(req.key.finding_id.clone(), v);
        }
        Ok(outcome)
    }

    async fn commit(
        &self,
        _key: &VersionKey,
        _owner: Owner,
        _delivery: &Delivery,
    ) -> Result<(), StoreError> {
        Ok(())
    }

    async fn release(
        &self,
        key: &VersionKey,
        _owner: Owner,
        _reason: &str,
    ) -> Result<(), StoreError> {
        let mut claimed = self
            .claimed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if claimed.get(&key.finding_id) == Some(&key.version) {
            claimed.remove(&key.finding_id);
        }
        Ok(())
    }

    async fn history(&self, finding_id: &str) -> Result<Option<FindingHistory>, StoreError> {
        self.inner.history(finding_id).await
    }

    async fn list(&self, query: &ListQuery) -> Result<Vec<FindingRecord>, StoreError> {
        self.inner.list(query).await
    }

    /// Reads through to the real store's key/value space, when it has one; writes nothing.
    fn kv(self: Arc<Self>) -> Option<Arc<dyn KvStore>> {
        let inner = Arc::clone(&self.inner).kv()?;
        Some(Arc::new(PreviewKv { inner }))
    }
}

/// The preview's key/value space: reads the real one, writes nothing.
#[derive(Debug)]
struct PreviewKv {
    inner: Arc<dyn KvStore>,
}

#[async_trait]
impl KvStore for PreviewKv {
    async fn kv_get(&self, namespace: &str, key: &str) -> Result<Option<String>, StoreError> {
        self.inner.kv_get(namespace, key).await
    }

    /// Caches (account names) are not state a preview must protect, but "claims nothing" is
    /// simplest to trust when a preview writes nothing at all.
    async fn kv_put(&self, _: &str, _: &str, _: &str, _: Duration) -> Result<(), StoreError> {
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::store::Status;

    /// A record of finding `f` at version `latest` (sent when `status` is), other fields empty.
    pub(crate) fn record(status: Status, latest: i64, lease_until: Option<i64>) -> FindingRecord {
        let t = Timestamp::from_millis;
        FindingRecord {
            finding_id: "f".into(),
            meta: Default::default(),
            latest_version: t(latest),
            sent_version: (status == Status::Sent).then(|| t(latest)),
            status,
            lease_until: lease_until.map(t),
            first_seen: t(0),
            last_seen: t(0),
            versions_sent: 0,
            duplicates: 0,
            stale: 0,
            failures: 0,
            last_error: None,
            expires_at: t(i64::MAX),
            owner: None,
            seq: 0,
        }
    }

    /// The preview answers as the store would at `now`: a live lease is in flight, an ended
    /// one claimable (the dry run then shows what a real run would send).
    #[test]
    fn judge_answers_as_the_store_would() {
        let (v, now) = (Timestamp::from_millis(100), Timestamp::from_millis(1_000));
        let live = record(Status::Pending, 100, Some(2_000));
        assert_eq!(
            judge_claim(Some(&live), v, now),
            ClaimOutcome::InFlight {
                lease_until: Timestamp::from_millis(2_000)
            }
        );
        let ended = record(Status::Pending, 100, Some(1_000));
        assert_eq!(
            judge_claim(Some(&ended), v, now),
            ClaimOutcome::New {
                owner: crate::store::Owner::NONE
            }
        );
        let sent = record(Status::Sent, 100, None);
        assert_eq!(judge_claim(Some(&sent), v, now), ClaimOutcome::Duplicate);
        let failed = record(Status::Failed, 100, None);
        assert_eq!(
            judge_claim(Some(&failed), v, now),
            ClaimOutcome::New {
                owner: crate::store::Owner::NONE
            }
        );
        let newer = record(Status::Sent, 200, None);
        assert_eq!(
            judge_claim(Some(&newer), v, now),
            ClaimOutcome::Stale {
                newest: Timestamp::from_millis(200)
            }
        );
        assert_eq!(
            judge_claim(None, v, now),
            ClaimOutcome::New {
                owner: crate::store::Owner::NONE
            }
        );
    }
}
