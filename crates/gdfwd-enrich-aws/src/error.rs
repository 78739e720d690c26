//! Errors of this crate. Lookups themselves never fail forwarding (they return
//! [`gdfwd_core::error::LookupError`] into the caching resolver); these are for the setup paths the
//! CLI calls directly (`gdfwd accounts`: listing the organization's accounts).

use thiserror::Error;

#[derive(Debug, Error)]
pub enum EnrichError {
    /// An AWS call of the setup path failed; `operation` names the API, `detail` the error code and
    /// message AWS answered with.
    #[error("{operation} failed: {detail}")]
    Aws {
        operation: &'static str,
        detail: String,
    },
    /// A value given on the command line or in the environment is unusable.
    #[error("enrichment configuration: {0}")]
    Config(String),
    /// An account field spec (`--account-field`, `ACCOUNT_FIELDS`) is unusable.
    #[error(transparent)]
    AccountFields(#[from] gdfwd_core::AccountFieldError),
}
