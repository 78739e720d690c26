//! The SQLite store's error type, and how it maps onto the port's [`StoreError`].
//!
//! Every variant names the database file, because "database is locked" without a path is useless
//! when two configurations point at different files.

use std::path::PathBuf;
use std::time::Duration;

use gdfwd_core::StoreError;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum SqliteStoreError {
    /// Neither `$XDG_STATE_HOME` nor `$HOME` gives a place for the default database.
    #[error(
        "no default state database location: set XDG_STATE_HOME or HOME, or pass an explicit path (--store sqlite:PATH)"
    )]
    NoStateDir,
    #[error("cannot create directory {path} for the state database: {source}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot open state database {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    /// Another connection (usually another gdfwd process) held the write lock longer than the
    /// busy timeout.
    #[error(
        "state database {path} is locked by another connection (waited {waited:?}) during {operation}"
    )]
    Locked {
        path: PathBuf,
        operation: &'static str,
        waited: Duration,
    },
    /// The file was written by a newer gdfwd with a schema this one does not know.
    #[error(
        "state database {path} has schema version {found}, newer than the {supported} this gdfwd supports; upgrade gdfwd or use another file"
    )]
    SchemaTooNew {
        path: PathBuf,
        found: i64,
        supported: i64,
    },
    #[error("migrating state database {path} to schema version {version} failed: {source}")]
    Migrate {
        path: PathBuf,
        version: i64,
        #[source]
        source: rusqlite::Error,
    },
    #[error("state database {path}: {operation} failed: {source}")]
    Sql {
        path: PathBuf,
        operation: &'static str,
        #[source]
        source: rusqlite::Error,
    },
    /// A row could not be decoded (hand-edited or corrupted file).
    #[error("state database {path}: {operation} read an unusable row: {message}")]
    Corrupt {
        path: PathBuf,
        operation: &'static str,
        message: String,
    },
    /// `commit`/`release` of a version that was never claimed: a caller bug, refused so that
    /// audit never shows deliveries the dedup logic did not decide.
    #[error(
        "state database {path}: {operation} of finding {finding_id:?} version {version}: {message}"
    )]
    NotClaimed {
        path: PathBuf,
        operation: &'static str,
        finding_id: String,
        version: gdfwd_model::Timestamp,
        message: &'static str,
    },
    /// A commit or release by a sender whose claim another sender replaced.
    #[error(
        "state database {path}: {operation} of finding {finding_id:?} version {version} refused: the claim is no longer this sender's"
    )]
    StaleOwner {
        path: PathBuf,
        operation: &'static str,
        finding_id: String,
        version: gdfwd_model::Timestamp,
    },
    /// The blocking task running the query panicked or was cancelled.
    #[error("state database {path}: {operation} did not complete: {message}")]
    Task {
        path: PathBuf,
        operation: &'static str,
        message: String,
    },
}

impl SqliteStoreError {
    /// Classifies a rusqlite error: lock contention becomes [`SqliteStoreError::Locked`].
    pub(crate) fn sql(
        path: &std::path::Path,
        operation: &'static str,
        busy_timeout: Duration,
        source: rusqlite::Error,
    ) -> Self {
        if is_busy(&source) {
            Self::Locked {
                path: path.to_path_buf(),
                operation,
                waited: busy_timeout,
            }
        } else {
            Self::Sql {
                path: path.to_path_buf(),
                operation,
                source,
            }
        }
    }

    /// Converts to the port's error; `backend` is the store's `describe()`.
    pub(crate) fn into_store_error(self, backend: String, operation: &'static str) -> StoreError {
        match self {
            Self::StaleOwner {
                finding_id,
                version,
                ..
            } => StoreError::StaleOwner {
                backend,
                operation,
                finding_id,
                version,
            },
            Self::Corrupt { .. } | Self::NotClaimed { .. } => StoreError::Invalid {
                backend,
                operation,
                message: self.to_string(),
            },
            Self::NoStateDir | Self::SchemaTooNew { .. } => StoreError::Config(self.to_string()),
            other => StoreError::Unavailable {
                backend,
                operation,
                source: Box::new(other),
            },
        }
    }
}

pub(crate) fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
    )
}
