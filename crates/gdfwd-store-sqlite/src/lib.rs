//! The SQLite state store: the CLI's embedded dedup store and audit log.
//!
//! One file (default `$XDG_STATE_HOME/gdfwd/state.db`, see [`default_path`]) holds three tables:
//! `findings` (one row per finding: the latest version, its status and lease, counters), `history`
//! (one row per claim outcome, commit and release, for `audit show`) and `kv` (alias cache,
//! backfill checkpoints). The semantics are the port's ([`gdfwd_core::store`]) and are checked by
//! the shared contract suite; `docs/state-store.md` explains the decisions.
//!
//! Why it is shaped so:
//! - rusqlite is synchronous, so every operation runs in `spawn_blocking` on one connection behind
//!   a mutex: in-process callers queue on the mutex, other processes on SQLite's file lock.
//! - Every write runs in a `BEGIN IMMEDIATE` transaction, which takes the file's write lock before
//!   reading, so the read-decide-write of a claim is atomic across processes too; WAL mode lets
//!   `audit` readers run while a forwarder writes.
//! - A lock held longer than the busy timeout is reported as [`StoreError::Unavailable`] naming
//!   the file: the pipeline then fails the batch as retryable instead of sending without dedup.
//! - The store reads "now" from the [`Clock`] it is given, so leases and TTLs are testable
//!   without sleeping.

mod error;
mod ops;
mod schema;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use gdfwd_core::store::{
    ClaimOutcome, ClaimRequest, Delivery, FindingHistory, FindingRecord, Finish, KvStore,
    ListQuery, Owner, StateStore, VersionKey,
};
use gdfwd_core::{Clock, StoreError};
use gdfwd_model::Timestamp;
use rusqlite::{Connection, TransactionBehavior};

pub use error::SqliteStoreError;
pub use schema::CURRENT_VERSION as SCHEMA_VERSION;

/// Default retention of finding records and their history after their last update.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(90 * 24 * 3600);
/// Default time a write waits for another connection's lock before failing as unavailable.
pub const DEFAULT_BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The default database path: `$XDG_STATE_HOME/gdfwd/state.db`, falling back to
/// `$HOME/.local/state/gdfwd/state.db` (the XDG base directory default).
pub fn default_path() -> Result<PathBuf, SqliteStoreError> {
    default_path_from(std::env::var_os("XDG_STATE_HOME"), std::env::var_os("HOME"))
}

/// [`default_path`] from explicit variable values (testable without touching the environment).
/// Per the XDG spec a relative `XDG_STATE_HOME` is ignored.
pub fn default_path_from(
    xdg_state_home: Option<std::ffi::OsString>,
    home: Option<std::ffi::OsString>,
) -> Result<PathBuf, SqliteStoreError> {
    let base = match xdg_state_home.map(PathBuf::from) {
        Some(p) if p.is_absolute() => p,
        _ => match home.map(PathBuf::from) {
            Some(h) if !h.as_os_str().is_empty() => h.join(".local").join("state"),
            _ => return Err(SqliteStoreError::NoStateDir),
        },
    };
    Ok(base.join("gdfwd").join("state.db"))
}

/// Tunables of [`SqliteStore::open_with`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SqliteOptions {
    /// Records expire this long after their last update.
    pub retention: Duration,
    /// How long a write waits for another connection's lock.
    pub busy_timeout: Duration,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        Self {
            retention: DEFAULT_RETENTION,
            busy_timeout: DEFAULT_BUSY_TIMEOUT,
        }
    }
}

/// What [`SqliteStore::purge_expired`] deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PurgeStats {
    pub findings: u64,
    pub history: u64,
    pub kv: u64,
}

pub(crate) struct Inner {
    pub(crate) path: PathBuf,
    pub(crate) conn: Mutex<Connection>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) retention_ms: i64,
    pub(crate) busy_timeout: Duration,
}

impl Inner {
    pub(crate) fn now(&self) -> Timestamp {
        self.clock.now()
    }

    pub(crate) fn sql_err(&self, operation: &'static str, e: rusqlite::Error) -> SqliteStoreError {
        SqliteStoreError::sql(&self.path, operation, self.busy_timeout, e)
    }

    /// Runs `f` in a `BEGIN IMMEDIATE` transaction (the write lock is held from the start).
    pub(crate) fn write<T>(
        &self,
        conn: &mut Connection,
        operation: &'static str,
        f: impl FnOnce(&rusqlite::Transaction<'_>, Timestamp) -> Result<T, SqliteStoreError>,
    ) -> Result<T, SqliteStoreError> {
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| self.sql_err(operation, e))?;
        // "Now" is read once the lock is held, so leases granted by two processes are ordered.
        let now = self.now();
        let out = f(&tx, now)?;
        tx.commit().map_err(|e| self.sql_err(operation, e))?;
        Ok(out)
    }

    /// Runs `f` in a read transaction (a consistent snapshot; does not block writers in WAL).
    pub(crate) fn read<T>(
        &self,
        conn: &mut Connection,
        operation: &'static str,
        f: impl FnOnce(&rusqlite::Transaction<'_>, Timestamp) -> Result<T, SqliteStoreError>,
    ) -> Result<T, SqliteStoreError> {
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Deferred)
            .map_err(|e| self.sql_err(operation, e))?;
        let now = self.now();
        let out = f(&tx, now)?;
        tx.commit().map_err(|e| self.sql_err(operation, e))?;
        Ok(out)
    }
}

/// The SQLite-backed [`StateStore`]. Cheap to clone (shares one connection).
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.inner.path)
            .field("retention_ms", &self.inner.retention_ms)
            .field("busy_timeout", &self.inner.busy_timeout)
            .finish_non_exhaustive()
    }
}

fn duration_ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl SqliteStore {
    /// Opens (creating it and its parent directories if needed) the database at `path` with the
    /// default busy timeout, records expiring `retention` after their last update.
    pub fn open(
        path: &Path,
        clock: Arc<dyn Clock>,
        retention: Duration,
    ) -> Result<Self, SqliteStoreError> {
        Self::open_with(
            path,
            clock,
            SqliteOptions {
                retention,
                ..SqliteOptions::default()
            },
        )
    }

    /// [`SqliteStore::open`] with every tunable.
    pub fn open_with(
        path: &Path,
        clock: Arc<dyn Clock>,
        options: SqliteOptions,
    ) -> Result<Self, SqliteStoreError> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            create_private_dir_all(parent).map_err(|source| SqliteStoreError::CreateDir {
                path: parent.to_path_buf(),
                source,
            })?;
        }
        let open_err = |source| SqliteStoreError::Open {
            path: path.to_path_buf(),
            source,
        };
        let mut conn = Connection::open(path).map_err(open_err)?;
        conn.busy_timeout(options.busy_timeout).map_err(open_err)?;
        // WAL: readers (audit) never block the forwarder, and a write is one append, no rollback
        // journal copy. Some filesystems (network mounts) refuse it; SQLite then keeps its
        // rollback journal, which is slower but equally safe.
        let mode: String = conn
            .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))
            .map_err(|e| SqliteStoreError::sql(path, "enable WAL", options.busy_timeout, e))?;
        if !mode.eq_ignore_ascii_case("wal") {
            tracing::warn!(path = %path.display(), mode, "state database is not in WAL mode; concurrent readers will wait for writers");
        }
        // NORMAL in WAL mode: an application crash loses nothing; a power loss may lose the last
        // commits, which at worst re-sends a version (event ids are deterministic).
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(|e| SqliteStoreError::sql(path, "set synchronous", options.busy_timeout, e))?;
        schema::migrate(&mut conn, path, options.busy_timeout)?;
        let store = Self {
            inner: Arc::new(Inner {
                path: path.to_path_buf(),
                conn: Mutex::new(conn),
                clock,
                retention_ms: duration_ms(options.retention),
                busy_timeout: options.busy_timeout,
            }),
        };
        // Expired rows are invisible anyway; deleting them keeps the file small. Another process
        // holding the lock must not stop us from opening.
        if let Err(e) = store.purge_expired_blocking() {
            tracing::warn!(path = %path.display(), error = %e, "could not purge expired state; will retry on next open");
        }
        Ok(store)
    }

    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Deletes expired findings (with their history) and expired key/value entries.
    pub async fn purge_expired(&self) -> Result<PurgeStats, StoreError> {
        self.run("purge", |inner, conn| {
            inner.write(conn, "purge", |tx, now| ops::purge_all(inner, tx, now))
        })
        .await
    }

    fn purge_expired_blocking(&self) -> Result<PurgeStats, SqliteStoreError> {
        let mut conn = lock(&self.inner.conn);
        self.inner.write(&mut conn, "purge", |tx, now| {
            ops::purge_all(&self.inner, tx, now)
        })
    }

    /// Runs `f` with the connection on the blocking pool, converting errors for the port.
    async fn run<T, F>(&self, operation: &'static str, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Inner, &mut Connection) -> Result<T, SqliteStoreError> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        let joined = tokio::task::spawn_blocking(move || {
            let mut conn = lock(&inner.conn);
            f(&inner, &mut conn)
        })
        .await;
        let result = match joined {
            Ok(r) => r,
            Err(e) => Err(SqliteStoreError::Task {
                path: self.inner.path.clone(),
                operation,
                message: e.to_string(),
            }),
        };
        result.map_err(|e| e.into_store_error(self.describe(), operation))
    }
}

/// A panic while holding the lock leaves the connection usable (the open transaction is rolled
/// back when dropped), so a poisoned mutex is simply taken over.
fn lock(m: &Mutex<Connection>) -> std::sync::MutexGuard<'_, Connection> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The database holds finding titles and account ids: directories we create are private.
fn create_private_dir_all(dir: &Path) -> std::io::Result<()> {
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        b.mode(0o700);
    }
    b.create(dir)
}

#[async_trait]
impl StateStore for SqliteStore {
    fn describe(&self) -> String {
        format!("sqlite:{}", self.inner.path.display())
    }

    async fn claim(&self, req: &ClaimRequest, lease: Duration) -> Result<ClaimOutcome, StoreError> {
        let req = req.clone();
        let lease_ms = duration_ms(lease);
        self.run("claim", move |inner, conn| {
            inner.write(conn, "claim", |tx, now| {
                ops::claim(inner, tx, now, &req, lease_ms)
            })
        })
        .await
    }

    async fn claim_many(
        &self,
        reqs: &[ClaimRequest],
        lease: Duration,
    ) -> Result<Vec<ClaimOutcome>, StoreError> {
        if reqs.is_empty() {
            return Ok(Vec::new());
        }
        let reqs = reqs.to_vec();
        let lease_ms = duration_ms(lease);
        // One transaction: one lock acquisition and one WAL commit for the whole batch.
        self.run("claim_many", move |inner, conn| {
            inner.write(conn, "claim_many", |tx, now| {
                reqs.iter()
                    .map(|r| ops::claim(inner, tx, now, r, lease_ms))
                    .collect()
            })
        })
        .await
    }

    async fn commit(
        &self,
        key: &VersionKey,
        owner: Owner,
        delivery: &Delivery,
    ) -> Result<(), StoreError> {
        let key = key.clone();
        let delivery = delivery.clone();
        self.run("commit", move |inner, conn| {
            inner.write(conn, "commit", |tx, now| {
                ops::commit(inner, tx, now, &key, owner, &delivery)
            })
        })
        .await
    }

    async fn release(
        &self,
        key: &VersionKey,
        owner: Owner,
        reason: &str,
    ) -> Result<(), StoreError> {
        let key = key.clone();
        let reason = reason.to_owned();
        self.run("release", move |inner, conn| {
            inner.write(conn, "release", |tx, now| {
                ops::release(inner, tx, now, &key, owner, &reason)
            })
        })
        .await
    }

    /// One transaction for the batch (one lock, one WAL commit, as `claim_many`); each item in
    /// a savepoint, so an item that fails (a version never claimed) is rolled back alone and the
    /// others are still recorded.
    async fn finish_many(
        &self,
        items: &[(VersionKey, Owner, Finish)],
    ) -> Vec<Result<(), StoreError>> {
        const OP: &str = "finish_many";
        if items.is_empty() {
            return Vec::new();
        }
        let owned = items.to_vec();
        let n = owned.len();
        let done = self
            .run(OP, move |inner, conn| {
                inner.write(conn, OP, |tx, now| {
                    let mut out = Vec::with_capacity(owned.len());
                    for (key, owner, finish) in &owned {
                        tx.execute_batch("SAVEPOINT finish_item")
                            .map_err(|e| inner.sql_err(OP, e))?;
                        let r = match finish {
                            Finish::Commit(d) => ops::commit(inner, tx, now, key, *owner, d),
                            Finish::Release(reason) => {
                                ops::release(inner, tx, now, key, *owner, reason)
                            }
                        };
                        let end = if r.is_ok() {
                            "RELEASE finish_item"
                        } else {
                            "ROLLBACK TO finish_item; RELEASE finish_item"
                        };
                        tx.execute_batch(end).map_err(|e| inner.sql_err(OP, e))?;
                        let op = if matches!(finish, Finish::Commit(_)) {
                            "commit"
                        } else {
                            "release"
                        };
                        out.push(r.map_err(|e| (e, op)));
                    }
                    Ok(out)
                })
            })
            .await;
        match done {
            Ok(results) => results
                .into_iter()
                .map(|r| r.map_err(|(e, op)| e.into_store_error(self.describe(), op)))
                .collect(),
            // The batch's transaction failed as a whole (lock, disk): nothing was recorded.
            Err(e) => {
                let message = e.to_string();
                (0..n)
                    .map(|_| {
                        Err(StoreError::Unavailable {
                            backend: self.describe(),
                            operation: OP,
                            source: message.clone().into(),
                        })
                    })
                    .collect()
            }
        }
    }

    async fn history(&self, finding_id: &str) -> Result<Option<FindingHistory>, StoreError> {
        let id = finding_id.to_owned();
        self.run("history", move |inner, conn| {
            inner.read(conn, "history", |tx, now| ops::history(inner, tx, now, &id))
        })
        .await
    }

    async fn list(&self, query: &ListQuery) -> Result<Vec<FindingRecord>, StoreError> {
        let query = query.clone();
        self.run("list", move |inner, conn| {
            inner.read(conn, "list", |tx, now| ops::list(inner, tx, now, &query))
        })
        .await
    }

    fn kv(self: Arc<Self>) -> Option<Arc<dyn KvStore>> {
        Some(self)
    }
}

#[async_trait]
impl KvStore for SqliteStore {
    async fn kv_get(&self, namespace: &str, key: &str) -> Result<Option<String>, StoreError> {
        let (ns, key) = (namespace.to_owned(), key.to_owned());
        self.run("kv_get", move |inner, conn| {
            inner.read(conn, "kv_get", |tx, now| {
                ops::kv_get(inner, tx, now, &ns, &key)
            })
        })
        .await
    }

    async fn kv_put(
        &self,
        namespace: &str,
        key: &str,
        value: &str,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let (ns, key, value) = (namespace.to_owned(), key.to_owned(), value.to_owned());
        let ttl_ms = duration_ms(ttl);
        self.run("kv_put", move |inner, conn| {
            inner.write(conn, "kv_put", |tx, now| {
                ops::kv_put(inner, tx, now, &ns, &key, &value, ttl_ms)
            })
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_path_prefers_absolute_xdg_state_home() {
        assert_eq!(
            default_path_from(Some("/x/state".into()), Some("/home/u".into())).expect("path"),
            PathBuf::from("/x/state/gdfwd/state.db")
        );
        // A relative XDG_STATE_HOME is invalid per the spec and ignored.
        assert_eq!(
            default_path_from(Some("rel".into()), Some("/home/u".into())).expect("path"),
            PathBuf::from("/home/u/.local/state/gdfwd/state.db")
        );
        assert_eq!(
            default_path_from(None, Some("/home/u".into())).expect("path"),
            PathBuf::from("/home/u/.local/state/gdfwd/state.db")
        );
        assert!(matches!(
            default_path_from(None, None),
            Err(SqliteStoreError::NoStateDir)
        ));
        assert!(matches!(
            default_path_from(Some("".into()), Some("".into())),
            Err(SqliteStoreError::NoStateDir)
        ));
    }
}
