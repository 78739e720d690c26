//! `SenderArgs`: the sender's command-line flags, for `#[command(flatten)]` into the CLI's
//! `forward` and `backfill` commands. Behind the `cli` feature so the Lambda does not link clap.
//!
//! The token itself is not a flag: a flag would be visible in `ps` and shell history, and clap
//! would print an env-provided value in `--help`. It is read from `DT_API_TOKEN` in
//! [`SenderArgs::into_config`].

use std::num::NonZeroU32;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use crate::config::{AuthScheme, HttpSinkConfig, env, parse_duration};
use crate::error::SinkHttpError;
use crate::secret::Secret;
use crate::token::DEFAULT_SECRET_KEY_NAME;

#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Sending to Dynatrace")]
pub struct SenderArgs {
    /// OpenPipeline security events endpoint, e.g.
    /// https://<env>.live.dynatrace.com/platform/ingest/v1/security.events (also the legacy
    /// /platform/ingest/v1/events.security or a custom /platform/ingest/custom/security.events/<name>).
    /// Credentials (user:password@), a query string and a fragment are refused: whatever they hold
    /// would be logged; the token goes in DT_API_TOKEN or the secret.
    #[arg(long, env = env::ENDPOINT, value_name = "URL")]
    pub endpoint: Option<String>,

    /// Allow an http:// endpoint on a loopback address (tests only; never for a real tenant).
    #[arg(long)]
    pub allow_insecure_loopback: bool,

    /// Extra trusted CA certificates (PEM), e.g. for a TLS-intercepting proxy.
    #[arg(long, env = env::CA_FILE, value_name = "PEM")]
    pub ca_file: Option<PathBuf>,

    /// How the token is sent: api-token (Authorization: Api-Token) or bearer (platform tokens).
    #[arg(long, default_value = "api-token", value_parser = ["api-token", "bearer"])]
    pub auth: String,

    /// Secrets Manager secret (ARN or name) holding the token; takes precedence over DT_API_TOKEN.
    #[arg(long, env = env::SECRET_ARN, value_name = "ARN")]
    pub token_secret_arn: Option<String>,

    /// JSON key of the token inside the secret (a secret that is the bare token also works).
    #[arg(long, env = env::SECRET_KEY_NAME, default_value = DEFAULT_SECRET_KEY_NAME, value_name = "KEY")]
    pub token_secret_key: String,

    /// Largest request body, in bytes (uncompressed JSON array).
    #[arg(long, default_value_t = crate::config::DEFAULT_MAX_BATCH_BYTES, value_name = "BYTES")]
    pub max_batch_bytes: usize,

    /// Most events per request.
    #[arg(long, default_value_t = crate::config::DEFAULT_MAX_BATCH_EVENTS, value_name = "N", value_parser = at_least_one)]
    pub max_batch_events: usize,

    /// Gzip request bodies (Content-Encoding: gzip).
    #[arg(long)]
    pub compress: bool,

    /// Timeout of one HTTP attempt (e.g. 10s, 500ms).
    #[arg(long, default_value = "10s", value_parser = parse_duration, value_name = "DURATION")]
    pub request_timeout: Duration,

    /// Timeout for opening a connection.
    #[arg(long, default_value = "5s", value_parser = parse_duration, value_name = "DURATION")]
    pub connect_timeout: Duration,

    /// Global limit of events per second across --max-concurrency processes (default: unlimited).
    #[arg(long, value_name = "N", value_parser = rate)]
    pub max_events_per_second: Option<NonZeroU32>,

    /// Global limit of HTTP requests per second across --max-concurrency processes, retries
    /// included (default: unlimited).
    #[arg(long, value_name = "N", value_parser = rate)]
    pub max_requests_per_second: Option<NonZeroU32>,

    /// Number of processes sharing the global rate limits; each takes 1/N of them.
    #[arg(long, default_value = "1", value_name = "N", value_parser = processes)]
    pub max_concurrency: NonZeroU32,

    /// Batches in flight at once in this process (1..=1024).
    #[arg(long, default_value_t = crate::config::DEFAULT_MAX_IN_FLIGHT, value_name = "N", value_parser = in_flight)]
    pub max_in_flight: usize,
}

// Range checks as clap parsers: a bad value is a usage error (exit 2) that names the flag and
// says what is accepted, before anything runs.

fn whole(s: &str) -> Result<u64, String> {
    s.trim()
        .parse::<u64>()
        .map_err(|_| format!("{s:?} is not a whole number"))
}

fn at_least_one(s: &str) -> Result<usize, String> {
    match whole(s)? {
        0 => Err("must be at least 1".to_owned()),
        n => usize::try_from(n).map_err(|_| format!("{n} is too large")),
    }
}

fn in_flight(s: &str) -> Result<usize, String> {
    let n = at_least_one(s)?;
    if n > crate::config::MAX_IN_FLIGHT_LIMIT {
        return Err(format!(
            "{n} is too large: at most {} batches",
            crate::config::MAX_IN_FLIGHT_LIMIT
        ));
    }
    Ok(n)
}

fn nonzero_u32(s: &str, zero: &str) -> Result<NonZeroU32, String> {
    let n = whole(s)?;
    let n = u32::try_from(n).map_err(|_| format!("{n} is too large (at most {})", u32::MAX))?;
    NonZeroU32::new(n).ok_or_else(|| zero.to_owned())
}

fn rate(s: &str) -> Result<NonZeroU32, String> {
    nonzero_u32(
        s,
        "must be at least 1 per second (leave the option out for no limit)",
    )
}

fn processes(s: &str) -> Result<NonZeroU32, String> {
    let range = gdfwd_core::limits::MAX_CONCURRENCY;
    let n = nonzero_u32(
        s,
        "must be at least 1 (the number of processes sharing the limits)",
    )?;
    if range.contains(n.get()) {
        Ok(n)
    } else {
        Err(format!("must be from {} to {}", range.min, range.max))
    }
}

impl SenderArgs {
    /// Validates the flags and reads `DT_API_TOKEN` from the environment.
    pub fn into_config(self) -> Result<HttpSinkConfig, SinkHttpError> {
        self.into_config_with_env(|k| std::env::var(k).ok())
    }

    /// As [`Self::into_config`], with the environment lookup injected (tests).
    pub fn into_config_with_env(
        self,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<HttpSinkConfig, SinkHttpError> {
        let endpoint = self
            .endpoint
            .filter(|e| !e.trim().is_empty())
            .ok_or_else(|| SinkHttpError::Endpoint {
                endpoint: String::new(),
                reason: format!("no endpoint: pass --endpoint or set {}", env::ENDPOINT),
            })?;
        let mut c = HttpSinkConfig::new(&endpoint, self.allow_insecure_loopback)?;
        c.auth = self
            .auth
            .parse::<AuthScheme>()
            .map_err(SinkHttpError::Config)?;
        c.ca_file = self.ca_file;
        c.token.secret_arn = self.token_secret_arn.filter(|a| !a.trim().is_empty());
        c.token.secret_key_name = self.token_secret_key;
        c.token.static_token = lookup(env::API_TOKEN)
            .filter(|t| !t.trim().is_empty())
            .map(Secret::new);
        c.max_batch_bytes = self.max_batch_bytes;
        c.max_batch_events = self.max_batch_events;
        c.compress = self.compress;
        c.timeout = self.request_timeout;
        c.connect_timeout = self.connect_timeout;
        c.max_events_per_second = self.max_events_per_second;
        c.max_requests_per_second = self.max_requests_per_second;
        c.max_concurrency = self.max_concurrency;
        c.max_in_flight = self.max_in_flight;
        c.validate()?;
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        sender: SenderArgs,
    }

    #[test]
    fn parses_and_converts() {
        let cli = Cli::try_parse_from([
            "x",
            "--endpoint",
            "http://127.0.0.1:9/platform/ingest/v1/security.events",
            "--allow-insecure-loopback",
            "--auth",
            "bearer",
            "--compress",
            "--request-timeout",
            "3s",
            "--max-events-per-second",
            "500",
            "--max-concurrency",
            "5",
        ])
        .expect("parse");
        let c = cli
            .sender
            .into_config_with_env(|k| (k == env::API_TOKEN).then(|| "dt0c01.T".to_owned()))
            .expect("config");
        assert_eq!(c.auth, AuthScheme::Bearer);
        assert!(c.compress);
        assert_eq!(c.timeout, Duration::from_secs(3));
        assert_eq!(c.max_concurrency.get(), 5);
        assert_eq!(
            c.token.static_token.as_ref().map(Secret::expose),
            Some("dt0c01.T")
        );
    }

    #[test]
    fn refuses_plain_http_without_opt_in_and_missing_endpoint() {
        let cli = Cli::try_parse_from(["x", "--endpoint", "http://127.0.0.1:9/x"]).expect("parse");
        let e = cli
            .sender
            .into_config_with_env(|_| None)
            .expect_err("must fail");
        assert!(e.to_string().contains("--allow-insecure-loopback"), "{e}");
        let cli = Cli::try_parse_from(["x"]).expect("parse");
        if std::env::var_os(env::ENDPOINT).is_none() {
            assert!(cli.sender.into_config_with_env(|_| None).is_err());
        }
        // Out-of-range numbers are usage errors at parse time, naming the flag.
        for (flag, value) in [
            ("--max-batch-events", "0"),
            ("--max-in-flight", "0"),
            ("--max-in-flight", "100000"),
            ("--max-events-per-second", "0"),
            ("--max-concurrency", "0"),
            ("--max-requests-per-second", "ten"),
        ] {
            let e = Cli::try_parse_from(["x", "--endpoint", "https://a.b/x", flag, value])
                .expect_err(flag);
            assert_eq!(e.kind(), clap::error::ErrorKind::ValueValidation, "{flag}");
            assert!(e.to_string().contains(flag), "{e}");
        }
    }
}
