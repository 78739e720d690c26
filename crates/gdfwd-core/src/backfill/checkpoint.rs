//! Where a backfill resumes: one checkpoint per (region, partition, query) in the store's
//! `checkpoint` key/value namespace, under the key the source names
//! ([`FindingPages::checkpoint_key`](crate::source::FindingPages::checkpoint_key)).
//!
//! The value records the covered range `[from, through]`: every finding version of the query
//! with `from <= updatedAt < through` has been committed (or definitively failed). A run resumes
//! at `through` only when its own `--since` lies inside that range; an earlier `--since` starts
//! afresh from there, because the older part was never covered.
//!
//! Resuming lists `updatedAt >= through` (not `>`): findings sharing the checkpoint's `updatedAt`
//! may straddle a page boundary, so the tie is listed again and the store recognises the versions
//! already sent.

use std::sync::Arc;

use gdfwd_model::Timestamp;
use serde::{Deserialize, Serialize};

use super::{Backfill, BackfillError};
use crate::store::KvStore;

/// Store namespace of backfill checkpoints.
pub const CHECKPOINT_NAMESPACE: &str = "checkpoint";

/// A stored checkpoint: `[from, through)` is done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub from: Timestamp,
    pub through: Timestamp,
}

impl Checkpoint {
    /// Where a run with lower bound `since` starts, and the checkpoint it then extends.
    pub fn resume_from(stored: Option<Checkpoint>, since: Timestamp) -> Checkpoint {
        match stored {
            Some(cp) if cp.from <= since && since <= cp.through => cp,
            _ => Checkpoint {
                from: since,
                through: since,
            },
        }
    }
}

impl Backfill {
    /// Where checkpoints live: the store's key/value space (none without a store, or with a
    /// store that has none: then nothing resumes).
    fn checkpoints(&self) -> Option<Arc<dyn KvStore>> {
        self.pipeline.store().and_then(|s| Arc::clone(s).kv())
    }

    pub(super) async fn load_checkpoint(
        &self,
        key: &str,
    ) -> Result<Option<Checkpoint>, BackfillError> {
        let Some(store) = self.checkpoints() else {
            return Ok(None);
        };
        let Some(text) = store.kv_get(CHECKPOINT_NAMESPACE, key).await? else {
            return Ok(None);
        };
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| BackfillError::Checkpoint {
                key: key.to_owned(),
                message: format!("{e}: {text:.200}"),
            })
    }

    pub(super) async fn save_checkpoint(
        &self,
        key: &str,
        cp: Checkpoint,
    ) -> Result<(), BackfillError> {
        let Some(store) = self.checkpoints() else {
            return Ok(());
        };
        if !self.config.save_checkpoints {
            return Ok(());
        }
        let text = serde_json::to_string(&cp).map_err(|e| BackfillError::Checkpoint {
            key: key.to_owned(),
            message: e.to_string(),
        })?;
        store
            .kv_put(CHECKPOINT_NAMESPACE, key, &text, self.config.checkpoint_ttl)
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resume_only_inside_the_covered_range() {
        let t = Timestamp::from_millis;
        let cp = Some(Checkpoint {
            from: t(100),
            through: t(500),
        });
        assert_eq!(Checkpoint::resume_from(cp, t(200)).through, t(500));
        assert_eq!(Checkpoint::resume_from(cp, t(100)).through, t(500));
        // Earlier since: that part was never covered.
        assert_eq!(
            Checkpoint::resume_from(cp, t(50)),
            Checkpoint {
                from: t(50),
                through: t(50)
            }
        );
        // Later than the checkpoint: start at since.
        assert_eq!(Checkpoint::resume_from(cp, t(900)).through, t(900));
        assert_eq!(Checkpoint::resume_from(None, t(7)).from, t(7));
    }
}
