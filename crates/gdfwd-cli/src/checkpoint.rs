//! Resume points of `gdfwd forward` on files, so an interrupted bulk run does not read again
//! what an earlier run already settled.
//!
//! They live in the state store's key/value space, in the namespace backfill uses for its
//! checkpoints (`checkpoint`), under `forward/<uuid of the canonical path>`, and expire with the
//! store's retention. A checkpoint holds the line-boundary [`Position`] up to which every finding
//! of the file is settled (delivered, a duplicate, stale or an invalid record; not a finding the
//! pipeline refused, see `forward::report_undone`) and the file's length and modification time
//! when it was saved: a file that changed since is read from its start (the dedup store still
//! sends nothing twice). Only line-mode files get one (see [`crate::input`]); stdin, the samples
//! and whole JSON documents are always read in full.
//!
//! Objects of GuardDuty's S3 export get an [`ObjectCheckpoint`] instead, under
//! `forward-s3/<uuid of s3://bucket/key>`: export objects never change once written, so a
//! checkpoint only says "every finding of this object (this entity tag) is settled", and a later
//! run skips the object without fetching it. An object interrupted part-way is read again in full
//! (its settled findings are then duplicates the store suppresses): objects are small, and a
//! position inside a gzip stream would save little. A run whose `--since/--until` or
//! `--accounts` left some of an object's findings out stores that selection with it
//! ([`Narrowing`]): the object is then finished only for runs whose selection it covers, so a
//! wider run later reads it again and sends what the first left out.
//!
//! A finding the filter dropped is settled too, so a checkpoint holds for its filter only: a
//! run with another filter must read what this one dropped. The uuid is therefore taken over the
//! path or URL and the filter's settings ([`scope`]); the default filter adds nothing, so
//! checkpoints saved before filters existed (by runs that sent more) still apply.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use gdfwd_core::store::{KvStore, StateStore};
use gdfwd_guardduty::query::CHECKPOINT_NAMESPACE;
use serde::{Deserialize, Serialize};

/// Where checkpoints are kept: the state store's key/value space, and the store's name for
/// messages.
#[derive(Debug, Clone)]
pub struct Checkpoints {
    kv: Arc<dyn KvStore>,
    name: String,
}

impl Checkpoints {
    /// The checkpoint space of `store`; `None` when the store has no key/value space (then
    /// nothing resumes, as without a store).
    pub fn of(store: &Arc<dyn StateStore>) -> Option<Self> {
        Some(Self {
            kv: Arc::clone(store).kv()?,
            name: store.describe(),
        })
    }
}

use crate::input::{Chunk, Position};

/// What identifies the file a position belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct Identity {
    len: u64,
    modified_ns: u64,
}

#[derive(Debug, Serialize, Deserialize)]
struct Stored {
    path: String,
    identity: Identity,
    position: Position,
}

/// One file's checkpoint: where to start, and where to save progress.
#[derive(Debug)]
pub struct FileCheckpoint {
    store: Checkpoints,
    key: String,
    path: String,
    identity: Identity,
    /// Where this run started reading.
    pub start: Position,
    /// What the store holds now (the start when nothing).
    saved: Position,
    /// Set once a chunk of this file was not settled: nothing after it may be marked done.
    capped: bool,
    ttl: Duration,
}

/// A regular file's size and modification time; none for anything else (a named pipe, a
/// device, `/dev/stdin`), which is read as a stream once and never resumed.
fn identity(path: &Path) -> Option<Identity> {
    let meta = std::fs::metadata(path)
        .ok()
        .filter(std::fs::Metadata::is_file)?;
    let modified = meta.modified().ok()?.duration_since(UNIX_EPOCH).ok()?;
    Some(Identity {
        len: meta.len(),
        modified_ns: u64::try_from(modified.as_nanos()).ok()?,
    })
}

/// What a checkpoint's key covers besides its source: the filter's settings that differ from the
/// default (empty for the default filter).
pub fn scope(filter: &gdfwd_model::FindingFilter) -> String {
    filter.to_string()
}

/// The uuid of `source` (a canonical path, an `s3://` URL) within `scope`.
fn scoped_id(ns: uuid::Uuid, source: &str, scope: &str) -> uuid::Uuid {
    if scope.is_empty() {
        uuid::Uuid::new_v5(&ns, source.as_bytes())
    } else {
        uuid::Uuid::new_v5(&ns, format!("{source}\n{scope}").as_bytes())
    }
}

const FILE_NS: uuid::Uuid = uuid::Uuid::from_u128(0x6764_6677_642d_666f_7277_6172_642d_6670);
const OBJECT_NS: uuid::Uuid = uuid::Uuid::from_u128(0x6764_6677_642d_7333_2d6f_626a_6563_7473);

fn key(path: &Path, scope: &str) -> (String, String) {
    let canonical = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let shown = canonical.display().to_string();
    let id = scoped_id(FILE_NS, &shown, scope);
    (format!("forward/{}", id.simple()), shown)
}

impl FileCheckpoint {
    /// The checkpoint of `path` in `store` for the filter `scope`, starting where a stored one
    /// for the unchanged file ends (when `resume`), else at the start. `None` when the file cannot
    /// be inspected (reading it reports why). A stored checkpoint that cannot be read is a
    /// warning, not an error: the file is then read in full.
    pub async fn load(
        store: Checkpoints,
        path: &Path,
        scope: &str,
        resume: bool,
        ttl: Duration,
    ) -> Option<Self> {
        let identity = identity(path)?;
        let (key, shown) = key(path, scope);
        // What the store holds for this file as it is now (a changed file's is as good as none).
        let mut saved = None;
        match store.kv.kv_get(CHECKPOINT_NAMESPACE, &key).await {
            Ok(Some(text)) => match serde_json::from_str::<Stored>(&text) {
                Ok(s) if s.identity == identity => saved = Some(s.position),
                Ok(_) => {
                    tracing::info!(file = %shown, "file changed since its checkpoint; reading it from the start")
                }
                Err(e) => {
                    tracing::warn!(file = %shown, error = %e, "unreadable forward checkpoint; reading the file from the start")
                }
            },
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(file = %shown, error = %e, "reading the forward checkpoint failed; reading the file from the start")
            }
        }
        let start = saved.filter(|_| resume).unwrap_or_default();
        Some(Self {
            store,
            key,
            path: shown,
            identity,
            start,
            saved: saved.unwrap_or_default(),
            capped: false,
            ttl,
        })
    }

    /// Records that everything up to `at` is settled when `settled` (else nothing is recorded
    /// from now on: what follows an unsettled chunk is read again next time). `complete`: the
    /// file was read to its end; once all of it is settled there is nothing to resume, and the
    /// next run reads it again from the start (showing its findings as duplicates), as a run
    /// over a file it has seen always did.
    pub async fn advance(
        &mut self,
        at: Position,
        settled: bool,
        complete: bool,
    ) -> anyhow::Result<()> {
        self.capped |= !settled;
        if self.capped {
            return Ok(());
        }
        let position = if complete { Position::default() } else { at };
        if position == self.saved {
            return Ok(());
        }
        self.saved = position;
        let stored = Stored {
            path: self.path.clone(),
            identity: self.identity,
            position,
        };
        let text = serde_json::to_string(&stored)?;
        self.store
            .kv
            .kv_put(CHECKPOINT_NAMESPACE, &self.key, &text, self.ttl)
            .await
            .map_err(|e| {
                anyhow::anyhow!(
                    "saving the forward checkpoint of {} in {}: {e}",
                    self.path,
                    self.store.name
                )
            })
    }
}

/// An export object settled by an earlier run, as stored.
#[derive(Debug, Serialize, Deserialize)]
struct StoredObject {
    url: String,
    etag: String,
    size: u64,
    /// Set when that run left some of the object's findings out (outside its `--since/--until`,
    /// or of accounts not in its `--accounts`): the object is finished only for a run whose
    /// selection that one covers. Absent: every finding was taken, finished for any run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    narrowed_by: Option<Narrowing>,
}

/// The part of an S3 run's selection that leaves findings out inside an object it reads:
/// `--since/--until` on `updatedAt` (milliseconds) and `--accounts` on `accountId`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Narrowing {
    pub since_ms: Option<i64>,
    pub until_ms: Option<i64>,
    pub accounts: Vec<String>,
}

impl Narrowing {
    /// Whether every finding `other` selects, this selects too (so what a run under this one
    /// settled is all `other` would send).
    fn covers(&self, other: &Self) -> bool {
        let since = match (self.since_ms, other.since_ms) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(mine), Some(theirs)) => mine <= theirs,
        };
        let until = match (self.until_ms, other.until_ms) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(mine), Some(theirs)) => mine >= theirs,
        };
        let accounts = self.accounts.is_empty()
            || (!other.accounts.is_empty()
                && other.accounts.iter().all(|a| self.accounts.contains(a)));
        since && until && accounts
    }
}

/// One S3 export object's checkpoint (see the module documentation).
#[derive(Debug)]
pub struct ObjectCheckpoint {
    store: Checkpoints,
    key: String,
    stored: StoredObject,
    /// This run's selection, stored with the object if it left some of its findings out.
    narrowing: Narrowing,
    /// Set once a chunk of this object was not settled: it is not marked finished.
    capped: bool,
    ttl: Duration,
}

impl ObjectCheckpoint {
    /// The checkpoint of the object at `url` for the filter `scope` ([`scope`]), read under
    /// `narrowing`.
    pub fn new(
        store: Checkpoints,
        object: ObjectId<'_>,
        scope: &str,
        narrowing: Narrowing,
        ttl: Duration,
    ) -> Self {
        let id = scoped_id(OBJECT_NS, object.url, scope);
        Self {
            store,
            key: format!("forward-s3/{}", id.simple()),
            stored: StoredObject {
                url: object.url.to_owned(),
                etag: object.etag.to_owned(),
                size: object.size,
                narrowed_by: None,
            },
            narrowing,
            capped: false,
            ttl,
        }
    }

    /// Whether an earlier run settled this very object (same entity tag and size) for every
    /// finding this run selects. A checkpoint that cannot be read counts as none (the object is
    /// read; the store sends nothing twice).
    pub async fn finished(&self) -> bool {
        match self.store.kv.kv_get(CHECKPOINT_NAMESPACE, &self.key).await {
            Ok(Some(text)) => serde_json::from_str::<StoredObject>(&text).is_ok_and(|s| {
                s.etag == self.stored.etag
                    && s.size == self.stored.size
                    && s.narrowed_by.is_none_or(|n| n.covers(&self.narrowing))
            }),
            Ok(None) => false,
            Err(e) => {
                tracing::warn!(object = %self.stored.url, error = %e, "reading the object's checkpoint failed; reading the object");
                false
            }
        }
    }

    /// Marks the object finished once it was read to its end with every chunk settled.
    /// After a chunk: `narrowed` whether the selection left some of its findings out.
    pub async fn advance(
        &mut self,
        settled: bool,
        narrowed: bool,
        complete: bool,
    ) -> anyhow::Result<()> {
        if narrowed {
            self.stored.narrowed_by = Some(self.narrowing.clone());
        }
        self.capped |= !settled;
        if self.capped || !complete {
            return Ok(());
        }
        let text = serde_json::to_string(&self.stored)?;
        self.store
            .kv
            .kv_put(CHECKPOINT_NAMESPACE, &self.key, &text, self.ttl)
            .await
            .map_err(|e| {
                anyhow::anyhow!(
                    "saving the checkpoint of {} in {}: {e}",
                    self.stored.url,
                    self.store.name
                )
            })
    }
}

/// A source's checkpoint, whichever kind of source it is.
#[derive(Debug)]
pub enum Checkpoint {
    File(FileCheckpoint),
    Object(ObjectCheckpoint),
}

impl Checkpoint {
    /// After `chunk` of the source: `settled` whether every finding in it is settled.
    pub async fn advance(&mut self, chunk: &Chunk, settled: bool) -> anyhow::Result<()> {
        let complete = chunk.last && chunk.complete;
        match (self, chunk.resume_at) {
            (Self::File(f), Some(at)) => f.advance(at, settled, complete).await,
            (Self::File(_), None) => Ok(()),
            (Self::Object(o), _) => o.advance(settled, chunk.narrowed, complete).await,
        }
    }
}

/// What identifies an export object's version: its URL, entity tag and size.
#[derive(Debug, Clone, Copy)]
pub struct ObjectId<'a> {
    pub url: &'a str,
    pub etag: &'a str,
    pub size: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use gdfwd_model::{FilterInput, FindingFilter};

    /// A narrower selection's checkpoint holds for a run selecting no more; a wider run (an
    /// earlier since, a later until, other or all accounts) reads the object again.
    #[test]
    fn a_narrowing_covers_only_runs_selecting_no_more() {
        let n = |since: Option<i64>, until: Option<i64>, accounts: &[&str]| Narrowing {
            since_ms: since,
            until_ms: until,
            accounts: accounts.iter().map(|a| (*a).to_owned()).collect(),
        };
        let first = n(Some(100), Some(200), &["a", "b"]);
        assert!(first.covers(&first));
        assert!(first.covers(&n(Some(150), Some(200), &["a"])));
        assert!(
            !first.covers(&n(Some(50), Some(200), &["a"])),
            "earlier since"
        );
        assert!(
            !first.covers(&n(Some(100), Some(300), &["a"])),
            "later until"
        );
        assert!(!first.covers(&n(None, Some(200), &["a"])), "no since");
        assert!(!first.covers(&n(Some(100), None, &["a"])), "no until");
        assert!(
            !first.covers(&n(Some(100), Some(200), &["c"])),
            "another account"
        );
        assert!(!first.covers(&n(Some(100), Some(200), &[])), "all accounts");
        assert!(
            n(None, None, &[]).covers(&first),
            "a run that selected everything"
        );
    }

    /// The default filter keeps the keys checkpoints had before filters existed; any other
    /// filter has keys of its own, the same for the same settings.
    #[test]
    fn keys_are_per_filter_and_the_default_keeps_the_old_ones() {
        let path = Path::new("/nonexistent/findings.jsonl");
        let old_file = uuid::Uuid::new_v5(&FILE_NS, path.display().to_string().as_bytes());
        let default = scope(&FindingFilter::default());
        assert_eq!(
            key(path, &default).0,
            format!("forward/{}", old_file.simple())
        );
        let url = "s3://bucket/AWSLogs/1/GuardDuty/eu-west-1/2024/03/05/x.jsonl.gz";
        let old_object = uuid::Uuid::new_v5(&OBJECT_NS, url.as_bytes());
        assert_eq!(scoped_id(OBJECT_NS, url, &default), old_object);

        let mut filter = FindingFilter::default();
        filter
            .apply(FilterInput::ExcludeType, "Recon:*", "--exclude-type")
            .expect("valid");
        let other = scope(&filter);
        assert_ne!(key(path, &other).0, key(path, &default).0);
        assert_ne!(scoped_id(OBJECT_NS, url, &other), old_object);
        assert_eq!(key(path, &other), key(path, &scope(&filter.clone())));
    }
}
