//! Errors of the GuardDuty adapter: each names the region, operation and input that failed, so a
//! summary line is actionable without a debug log.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum GuardDutyError {
    /// No credentials could be loaded (the default chain found none, or the provider failed).
    #[error("loading AWS credentials for the GuardDuty API: {0}")]
    Credentials(String),

    /// The request could not be signed (bad endpoint URL, bad credentials shape).
    #[error("signing {operation} for {region}: {message}")]
    Signing {
        region: String,
        operation: &'static str,
        message: String,
    },

    /// The request did not get an HTTP answer (connection refused, timeout, TLS) after retries.
    #[error("{operation} in {region} ({url}) failed after {attempts} attempt(s): {message}")]
    Transport {
        region: String,
        operation: &'static str,
        url: String,
        attempts: u32,
        message: String,
    },

    /// GuardDuty answered with an error (after retries, for throttling and 5xx).
    #[error(
        "{operation} in {region} answered {status} {kind}: {message} (after {attempts} attempt(s))"
    )]
    Api {
        region: String,
        operation: &'static str,
        status: u16,
        kind: String,
        message: String,
        attempts: u32,
    },

    /// The answer was not the JSON the operation returns.
    #[error("{operation} in {region}: unexpected response: {message}")]
    Decode {
        region: String,
        operation: &'static str,
        message: String,
    },

    /// A paged listing of the client (detectors, regions, doctor's lists) handed back a
    /// pagination token it had already given: following it would loop forever, so the call stops
    /// with this error. (The engines catch the same of `ListFindings` pages themselves, in
    /// `gdfwd_core::backfill`, with the same message.)
    #[error(
        "ListFindings in {region} (detector {detector}) returned the page token {token:?} a second time; stopped listing to avoid a loop"
    )]
    RepeatedPageToken {
        region: String,
        detector: String,
        token: String,
    },

    #[error("{0}")]
    Config(String),
}

impl GuardDutyError {
    /// The region the error concerns, when it concerns one.
    pub fn region(&self) -> Option<&str> {
        match self {
            Self::Signing { region, .. }
            | Self::Transport { region, .. }
            | Self::Api { region, .. }
            | Self::Decode { region, .. }
            | Self::RepeatedPageToken { region, .. } => Some(region),
            _ => None,
        }
    }
}
