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

/// A finding source failed (listing its partitions, or listing or fetching a page). It carries
/// the adapter's error as it is: that names the call, region and input, and the engine reports it
/// per region as text, so nothing here needs to tell one failure from another.
#[derive(Debug)]
pub struct SourceError(Source);

impl SourceError {
    pub fn new(e: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self(Box::new(e))
    }
}

impl std::fmt::Display for SourceError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// Transparent: the adapter's error is this error, so its chain continues below it (a wrapper
/// level repeating the same message would print it twice in a chain).
impl std::error::Error for SourceError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
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
