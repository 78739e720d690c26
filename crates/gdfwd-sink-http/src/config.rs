//! The sender's configuration as a plain struct, shared by the CLI (built from [`crate::SenderArgs`])
//! and the Lambda (built from its environment by `gdfwd_lambda::config::Config::sink_config`).
//!
//! Validation lives here, not in the CLI layer, so both entry points refuse the same things: an
//! `http://` endpoint that is not loopback, limits of zero, a CA file without certificates.

use std::num::NonZeroU32;
use std::path::PathBuf;
use std::time::Duration;

use reqwest::Url;

use crate::error::SinkHttpError;
use crate::secret::Secret;
use crate::token::{DEFAULT_MIN_REFRESH_INTERVAL, DEFAULT_SECRET_KEY_NAME};

pub const DEFAULT_MAX_BATCH_BYTES: usize = 1_000_000;
pub const DEFAULT_MAX_BATCH_EVENTS: usize = 1000;
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
pub const DEFAULT_MAX_IN_FLIGHT: usize = 4;
/// More batches in flight than this buys nothing under any sane rate limit (and the semaphore
/// behind it has a hard maximum).
pub const MAX_IN_FLIGHT_LIMIT: usize = 1024;

/// Environment variable names the issue fixes (shared by the CLI flags and the Lambda).
pub mod env {
    pub const ENDPOINT: &str = "DYNATRACE_OPENPIPELINE_SECURITY_ENDPOINT";
    pub const CA_FILE: &str = "GDFWD_CA_FILE";
    pub const SECRET_ARN: &str = "AWS_SECRET_ARN";
    pub const SECRET_KEY_NAME: &str = "AWS_SECRET_KEY_NAME";
    pub const API_TOKEN: &str = "DT_API_TOKEN";
}

/// How the token is presented.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AuthScheme {
    /// `Authorization: Api-Token <token>` (classic access tokens).
    #[default]
    ApiToken,
    /// `Authorization: Bearer <token>` (platform tokens).
    Bearer,
}

impl AuthScheme {
    pub fn prefix(self) -> &'static str {
        match self {
            Self::ApiToken => "Api-Token",
            Self::Bearer => "Bearer",
        }
    }
}

impl std::str::FromStr for AuthScheme {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "api-token" | "apitoken" | "api_token" => Ok(Self::ApiToken),
            "bearer" => Ok(Self::Bearer),
            other => Err(format!(
                "unknown auth scheme {other:?} (expected api-token or bearer)"
            )),
        }
    }
}

/// Where the token comes from (see [`crate::build_token_source`]).
#[derive(Debug, Clone)]
pub struct TokenConfig {
    /// Secrets Manager secret ARN (or name); preferred when set.
    pub secret_arn: Option<String>,
    /// JSON key inside the secret.
    pub secret_key_name: String,
    /// `DT_API_TOKEN`.
    pub static_token: Option<Secret>,
    /// Minimum time between two secret reads triggered by 401 answers.
    pub min_refresh_interval: Duration,
}

impl Default for TokenConfig {
    fn default() -> Self {
        Self {
            secret_arn: None,
            secret_key_name: DEFAULT_SECRET_KEY_NAME.to_owned(),
            static_token: None,
            min_refresh_interval: DEFAULT_MIN_REFRESH_INTERVAL,
        }
    }
}

/// Backoff for retryable answers: exponential with full jitter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryConfig {
    /// Upper bound of the first wait.
    pub initial_backoff: Duration,
    /// Cap of any computed wait.
    pub max_backoff: Duration,
    /// Attempts per batch in total (first one included); protects runs without a deadline.
    pub max_attempts: u32,
    /// A `Retry-After` longer than this ends retrying (the events are left retryable).
    pub max_retry_after: Duration,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(20),
            max_attempts: 10,
            max_retry_after: Duration::from_secs(120),
        }
    }
}

#[derive(Debug, Clone)]
pub struct HttpSinkConfig {
    /// The validated ingest URL.
    pub endpoint: Url,
    pub auth: AuthScheme,
    /// Extra trusted CA certificates (PEM file).
    pub ca_file: Option<PathBuf>,
    pub max_batch_bytes: usize,
    pub max_batch_events: usize,
    /// Gzip request bodies.
    pub compress: bool,
    /// Per-attempt timeout.
    pub timeout: Duration,
    pub connect_timeout: Duration,
    /// Global limits (shared by `max_concurrency` processes); `None`: unlimited.
    pub max_events_per_second: Option<NonZeroU32>,
    pub max_requests_per_second: Option<NonZeroU32>,
    /// How many processes share the global limits (each takes `1/N`).
    pub max_concurrency: NonZeroU32,
    /// Batches in flight at once in this process.
    pub max_in_flight: usize,
    pub retry: RetryConfig,
    pub token: TokenConfig,
}

impl HttpSinkConfig {
    /// Defaults for everything but the endpoint, which is validated (see [`validate_endpoint`]).
    pub fn new(endpoint: &str, allow_insecure_loopback: bool) -> Result<Self, SinkHttpError> {
        Ok(Self {
            endpoint: validate_endpoint(endpoint, allow_insecure_loopback)?,
            auth: AuthScheme::default(),
            ca_file: None,
            max_batch_bytes: DEFAULT_MAX_BATCH_BYTES,
            max_batch_events: DEFAULT_MAX_BATCH_EVENTS,
            compress: false,
            timeout: DEFAULT_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            max_events_per_second: None,
            max_requests_per_second: None,
            max_concurrency: NonZeroU32::MIN,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            retry: RetryConfig::default(),
            token: TokenConfig::default(),
        })
    }

    /// Checks the numeric options.
    pub fn validate(&self) -> Result<(), SinkHttpError> {
        if self.max_batch_bytes < 2 {
            return Err(SinkHttpError::Config(format!(
                "max batch bytes {} is too small (at least 2: \"[]\")",
                self.max_batch_bytes
            )));
        }
        if self.max_batch_events == 0 {
            return Err(SinkHttpError::Config(
                "max batch events must be at least 1".into(),
            ));
        }
        if !(1..=MAX_IN_FLIGHT_LIMIT).contains(&self.max_in_flight) {
            return Err(SinkHttpError::Config(format!(
                "max in flight {} is out of range: 1..={MAX_IN_FLIGHT_LIMIT} batches",
                self.max_in_flight
            )));
        }
        if self.timeout.is_zero() || self.connect_timeout.is_zero() {
            return Err(SinkHttpError::Config(
                "timeouts must be longer than zero".into(),
            ));
        }
        if self.retry.max_attempts == 0 {
            return Err(SinkHttpError::Config(
                "max attempts must be at least 1".into(),
            ));
        }
        Ok(())
    }
}

/// Accepts `https://` URLs, and `http://` ones only for a loopback host with the explicit opt-in.
///
/// Refused, because whatever they hold would end up in logs, errors and the store's `last_error`:
/// credentials (`user:password@`), a query string (Dynatrace's ingest endpoint takes none; a
/// `?api-token=` belongs in `DT_API_TOKEN` or the secret) and a fragment. Error messages show the
/// endpoint redacted ([`gdfwd_aws_error::redact_url`]), never what was refused.
pub fn validate_endpoint(
    endpoint: &str,
    allow_insecure_loopback: bool,
) -> Result<Url, SinkHttpError> {
    let err = |reason: String| SinkHttpError::Endpoint {
        endpoint: gdfwd_aws_error::redact_url(endpoint.trim()),
        reason,
    };
    let url = Url::parse(endpoint.trim()).map_err(|e| err(format!("not a URL: {e}")))?;
    // `https:///path` parses with `path` as the host (the URL standard is forgiving there).
    if endpoint
        .trim()
        .split_once("://")
        .is_none_or(|(_, rest)| rest.starts_with('/'))
    {
        return Err(err("no host".into()));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(err(
            "credentials (user:password@) in the URL are not allowed: they would be logged; pass the token as DT_API_TOKEN or in the secret".into(),
        ));
    }
    if url.query().is_some() {
        return Err(err(
            "a query string (?...) is not allowed: the ingest endpoint takes none, and a token in it would be logged; pass the token as DT_API_TOKEN or in the secret".into(),
        ));
    }
    if url.fragment().is_some() {
        return Err(err("a fragment (#...) is not allowed".into()));
    }
    match url.scheme() {
        "https" => {}
        "http" => {
            let loopback = match url.host() {
                Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
                Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
                Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
                None => false,
            };
            if !loopback {
                return Err(err(
                    "http:// is only allowed for loopback hosts; use https://".into(),
                ));
            }
            if !allow_insecure_loopback {
                return Err(err(
                    "http:// to a loopback host needs --allow-insecure-loopback".into(),
                ));
            }
        }
        other => return Err(err(format!("unsupported scheme {other:?}; use https://"))),
    }
    if url.host().is_none() {
        return Err(err("no host".into()));
    }
    Ok(url)
}

/// Durations of the sender's flags and variables, in the one grammar every flag uses.
pub use gdfwd_core::timespec::parse_duration;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        for ok in [
            "https://abc12345.live.dynatrace.com/platform/ingest/v1/security.events",
            "https://abc.apps.dynatrace.com/platform/ingest/v1/events.security",
            "https://abc.apps.dynatrace.com/platform/ingest/custom/security.events/guardduty",
        ] {
            assert!(validate_endpoint(ok, false).is_ok(), "{ok}");
        }
        assert!(validate_endpoint("http://example.com/x", true).is_err());
        assert!(validate_endpoint("http://127.0.0.1:8080/x", false).is_err());
        assert!(validate_endpoint("http://127.0.0.1:8080/x", true).is_ok());
        assert!(validate_endpoint("http://localhost:8080/x", true).is_ok());
        assert!(validate_endpoint("http://[::1]:8080/x", true).is_ok());
        assert!(validate_endpoint("ftp://localhost/x", true).is_err());
        assert!(validate_endpoint("not a url", false).is_err());
        assert!(validate_endpoint("https:///platform/x", false).is_err());
    }

    /// Credentials, a query or a fragment in the endpoint are refused, and the message shows
    /// neither them nor anything else that could be a secret.
    #[test]
    fn secrets_in_the_endpoint_are_refused_without_repeating_them() {
        for (bad, why) in [
            ("https://user:pw0SECRET@example.com/x", "credentials"),
            ("https://dt0c01.SECRET@example.com/x", "credentials"),
            (
                "https://example.com/x?api-token=dt0c01.SECRET",
                "query string",
            ),
            ("https://example.com/x?dt0c01.SECRET", "query string"),
            ("https://example.com/x#dt0c01.SECRET", "fragment"),
            ("https://u:SE CRET@exa mple.com/x?t=SECRET", "not a URL"),
        ] {
            let e = validate_endpoint(bad, false).expect_err(bad).to_string();
            assert!(e.contains(why), "{bad}: {e}");
            assert!(!e.contains("SECRET"), "{bad}: {e}");
            assert!(!e.contains("pw0"), "{bad}: {e}");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10").ok(), Some(Duration::from_secs(10)));
        assert_eq!(
            parse_duration("500ms").ok(),
            Some(Duration::from_millis(500))
        );
        assert_eq!(parse_duration("2m").ok(), Some(Duration::from_secs(120)));
        assert_eq!(
            parse_duration("1.5s").ok(),
            Some(Duration::from_millis(1500))
        );
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("5y").is_err());
    }
}
