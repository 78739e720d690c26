//! Errors of the model crate: what was wrong with one input record.

use thiserror::Error;

/// Why one record could not be turned into a [`crate::Finding`], or why one filter input
/// ([`crate::filter`]) was refused.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum ModelError {
    #[error("not valid JSON: {0}")]
    Json(String),
    #[error("finding has no `{0}` field")]
    MissingField(&'static str),
    #[error("field `{field}` is not a valid timestamp: {value}")]
    BadTimestamp { field: &'static str, value: String },
    #[error("field `{field}` has the wrong type: expected {expected}")]
    WrongType {
        field: &'static str,
        expected: &'static str,
    },
    #[error("not a GuardDuty finding: {0}")]
    NotAFinding(String),
    /// Well-formed but not believable: a version far in the future would block every real
    /// version of the finding, an epoch number in the wrong unit lands in another millennium.
    #[error("field `{field}` is implausible: {value} ({why})")]
    Implausible {
        field: &'static str,
        value: String,
        why: String,
    },
    /// A filter input (a CLI flag, an environment variable) is unusable. `input` is the name the
    /// caller knows it by (`--include-type`, `INCLUDE_TYPES`), so the message says what to fix.
    #[error("{input}: {value:?}: {why}")]
    Filter {
        input: String,
        value: String,
        why: String,
    },
}
