//! What one process keeps for itself: the lock stripes that queue its writes of one finding, and
//! the record state it last wrote per finding (the first guess of the next write's condition).
//!
//! Neither is needed for correctness across processes (the conditional writes decide there);
//! both save failed writes within one: queuing spares the losers' writes, and a good guess
//! lets a commit after a claim go out without a read.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

use gdfwd_core::store::VersionKey;

use crate::DynamoStore;
use crate::item;

/// Lock stripes serialising this process's claims of one finding (see [`DynamoStore::stripe`]).
pub(crate) const STRIPES: usize = 64;

/// Entries of the known-record cache kept before it is emptied (it is only a cache).
const KNOWN_MAX: usize = 4096;

/// The record state this process last wrote per finding (incarnation and history count).
pub(crate) type Known = Mutex<HashMap<String, item::Expect>>;

/// [`STRIPES`] fresh stripes.
pub(crate) fn new_stripes() -> std::sync::Arc<[tokio::sync::Mutex<()>]> {
    (0..STRIPES).map(|_| tokio::sync::Mutex::new(())).collect()
}

impl DynamoStore {
    /// The lock stripe of a finding. Claims of one finding from this process run one at a time:
    /// across processes the conditional write alone decides (DynamoDB applies it atomically), but
    /// within a process queuing spares the losers' failed writes — and moto, which applies
    /// concurrent updates of one item non-atomically, then gives the same answers as DynamoDB.
    pub(crate) fn stripe(&self, id: &str) -> &tokio::sync::Mutex<()> {
        let i = stripe_index(id);
        // `stripes` always has STRIPES entries; index 0 is the (unreachable) fallback.
        self.stripes.get(i).unwrap_or(&self.stripes[0])
    }

    /// Holds the stripes of `keys`' findings like a single write does, taken in stripe order
    /// so that two batches never wait for each other crosswise. Never held across a call that
    /// takes a stripe itself.
    pub(crate) async fn lock_stripes<'k>(
        &self,
        keys: impl Iterator<Item = &'k VersionKey>,
    ) -> Vec<tokio::sync::MutexGuard<'_, ()>> {
        let mut stripes: Vec<usize> = keys.map(|k| stripe_index(&k.finding_id)).collect();
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

    fn known_lock(&self) -> MutexGuard<'_, HashMap<String, item::Expect>> {
        self.known.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The guess for the next write of `id` (see [`DynamoStore::known`]); none: no record.
    pub(crate) fn guess(&self, id: &str) -> item::Expect {
        self.known_lock()
            .get(id)
            .copied()
            .unwrap_or(item::Expect::Absent)
    }

    /// Remembers that this process wrote entry `slot` of `id`.
    pub(crate) fn wrote(&self, id: &str, slot: item::Slot) {
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
}

fn stripe_index(id: &str) -> usize {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    id.hash(&mut h);
    usize::try_from(h.finish() % STRIPES as u64).unwrap_or(0)
}
