//! Errors crossing the ports. Adapters wrap their own errors in these so the pipeline can decide
//! (retry, fail the batch) without knowing which backend is behind the trait.

use thiserror::Error;

type Source = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A state store operation failed. The pipeline never sends without dedup: any of these fails
/// the affected findings as retryable.
#[derive(Debug, Error)]
pub enum StoreError {
    /// The backend could not be reached or kept failing (throttling, timeouts, locked file).
    #[error("state store {backend} unavailable during {operation}: {source}")]
    Unavailable {
        backend: String,
        operation: &'static str,
        #[source]
        source: Source,
    },
    /// The backend answered but the data or request was not usable (schema, corrupt item).
    #[error("state store {backend} failed {operation}: {message}")]
    Invalid {
        backend: String,
        operation: &'static str,
        message: String,
    },
    /// A commit or release by a sender whose claim is no longer the current one: its lease ran
    /// out and another sender claimed the version. Refused and not applied; counted as
    /// `stale_owner` in summaries.
    #[error(
        "state store {backend} refused {operation} of finding {finding_id:?} version {version}: this sender's claim is stale (its lease ended and another sender claimed the version)"
    )]
    StaleOwner {
        backend: String,
        operation: &'static str,
        finding_id: String,
        version: gdfwd_model::Timestamp,
    },
    /// Configuration (a path, a table name) is wrong.
    #[error("state store configuration: {0}")]
    Config(String),
}

/// The sink could not even attempt delivery (misconfiguration); per-event delivery failures are
/// reported as outcomes, not errors.
#[derive(Debug, Error)]
pub enum SinkError {
    #[error("sink configuration: {0}")]
    Config(String),
    #[error("sink I/O: {0}")]
    Io(#[from] std::io::Error),
}

/// An account lookup failed (role missing, access denied, timeout). Never fails forwarding.
#[derive(Debug, Error)]
#[error("account {account_id}: {message}")]
pub struct LookupError {
    pub account_id: String,
    pub message: String,
}

/// An account field spec (`--account-field`, `ACCOUNT_FIELDS`) is unusable; the message names the
/// entry and says why.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum AccountFieldError {
    #[error("account field {entry:?}: {reason}")]
    Invalid { entry: String, reason: String },
    #[error("{count} account fields configured; at most {max} are allowed")]
    TooMany { count: usize, max: usize },
}
