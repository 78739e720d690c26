//! One request that proves the endpoint and the token without ingesting anything: `gdfwd doctor
//! --check-endpoint`. It POSTs an empty JSON array `[]` (zero events: nothing appears in Grail)
//! with the configured token, through the same HTTP client the sender uses (TLS, CA file, no
//! redirects), once, without retries.

use bytes::Bytes;

use crate::config::HttpSinkConfig;
use crate::retry::Attempt;
use crate::service::Service;
use crate::token::TokenSource;

/// What is sent, for reports.
pub const PROBE_BODY: &str = "[]";

/// What the probe request got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeAnswer {
    /// The token could not be read (the message names the secret and key, never the token).
    NoToken(String),
    /// No HTTP answer (connection, TLS, timeout), or the token cannot go in a header.
    Unreachable(String),
    /// The HTTP status the endpoint answered with.
    Status(u16),
}

/// POSTs [`PROBE_BODY`] to the configured endpoint once.
pub async fn probe(cfg: &HttpSinkConfig, tokens: &dyn TokenSource) -> ProbeAnswer {
    let token = match tokens.token().await {
        Ok(t) => t,
        Err(e) => return ProbeAnswer::NoToken(e.to_string()),
    };
    let service = match Service::new(cfg) {
        Ok(s) => s,
        Err(e) => return ProbeAnswer::Unreachable(e.to_string()),
    };
    let answer = service
        .post(
            Bytes::from_static(PROBE_BODY.as_bytes()),
            false,
            &token,
            cfg.timeout,
        )
        .await;
    match answer.attempt {
        Attempt::Status { status, .. } => ProbeAnswer::Status(status),
        Attempt::Connect(m) | Attempt::Timeout(m) | Attempt::Transport(m) => {
            ProbeAnswer::Unreachable(m)
        }
        Attempt::InvalidToken => {
            ProbeAnswer::Unreachable("the token cannot be sent in an HTTP header".to_owned())
        }
    }
}
