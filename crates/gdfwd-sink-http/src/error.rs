//! The crate's one error type. Per-event delivery failures are outcomes, not errors: these are
//! the things that stop the sender from being built or from getting a token at all.
//!
//! No variant ever carries the token: messages name the input (an endpoint, a file, a secret ARN,
//! a JSON key), never a secret value.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum SinkHttpError {
    /// `--endpoint` / `DYNATRACE_OPENPIPELINE_SECURITY_ENDPOINT` is missing, unparsable or refused.
    #[error("endpoint {endpoint:?}: {reason}")]
    Endpoint { endpoint: String, reason: String },
    /// Some other option is out of range or contradicts another.
    #[error("sender configuration: {0}")]
    Config(String),
    /// The CA file could not be read or holds no certificate.
    #[error("CA file {path}: {reason}")]
    CaFile { path: String, reason: String },
    /// The HTTP client could not be built (TLS setup).
    #[error("building the HTTP client: {0}")]
    Client(String),
    /// No token source is configured.
    #[error(
        "no Dynatrace API token: set --token-secret-arn / AWS_SECRET_ARN (Secrets Manager) or DT_API_TOKEN"
    )]
    NoToken,
    /// Reading the secret failed for a reason a retry may get past (throttling, 5xx, network).
    #[error("reading secret {arn}: {reason}")]
    SecretRead { arn: String, reason: String },
    /// Secrets Manager refused to give the secret (not found, access denied, cannot decrypt).
    #[error("reading secret {arn} refused: {reason}")]
    SecretRefused { arn: String, reason: String },
    /// The secret was read but holds no usable token.
    #[error("secret {arn}: {reason}")]
    SecretContent { arn: String, reason: String },
    /// The token from the environment variable `var` cannot be a token (a control character).
    #[error("{var}: {reason}")]
    StaticToken { var: &'static str, reason: String },
}

impl SinkHttpError {
    /// Whether the configuration is what is wrong (the secret, its key, its permission), as
    /// opposed to an outage a retry may get past.
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            Self::SecretRefused { .. }
                | Self::SecretContent { .. }
                | Self::StaticToken { .. }
                | Self::NoToken
        )
    }
}

impl From<SinkHttpError> for gdfwd_core::SinkError {
    fn from(e: SinkHttpError) -> Self {
        gdfwd_core::SinkError::Config(e.to_string())
    }
}
