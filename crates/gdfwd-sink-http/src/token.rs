//! Where the API token comes from: the environment, or AWS Secrets Manager with rotation.
//!
//! The sink asks its [`TokenSource`] for the token before every attempt (a cheap clone of a cached
//! value) and calls [`TokenSource::refresh`] after a 401, so a rotated secret is picked up without
//! a restart. Refreshes hit Secrets Manager at most once per `min_refresh_interval` (one minute by
//! default): a misconfigured token answered 401 by every request must not turn into a flood of
//! `GetSecretValue` calls.
//!
//! A token is checked where it is read ([`check_token`]): one with a line break or another control
//! character inside could never go into an `Authorization` header, and finding that out request
//! by request would fail every event as a refusal. Read from the secret, it is a
//! [`SinkHttpError::SecretContent`] (the Lambda's readiness check fails naming the secret and key,
//! and leaves the messages in the queue); from `DT_API_TOKEN`, a [`SinkHttpError::StaticToken`].
//!
//! The refresh interval is measured on an injectable [`Clock`], so tests step over it instead of
//! sleeping.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use gdfwd_core::model::Timestamp;
use gdfwd_core::{Clock, SystemClock};

use crate::config::TokenConfig;
use crate::error::SinkHttpError;
use crate::secret::Secret;

/// The JSON key Dynatrace's AWS setup stores the token under.
pub const DEFAULT_SECRET_KEY_NAME: &str = "DYNATRACE_OPENPIPELINE_INGEST_API_TOKEN";

/// Default minimum time between two reads of the secret triggered by 401s.
pub const DEFAULT_MIN_REFRESH_INTERVAL: Duration = Duration::from_secs(60);

/// What a [`TokenSource::refresh`] call did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refresh {
    /// The token was read again (it may or may not have changed).
    Reloaded,
    /// The last read is more recent than the minimum interval; nothing was read.
    TooSoon,
    /// This source cannot change (a token from the environment).
    Fixed,
}

#[async_trait]
pub trait TokenSource: Send + Sync + std::fmt::Debug {
    /// The current token (cached; the first call may read it).
    async fn token(&self) -> Result<Secret, SinkHttpError>;
    /// Reads the token again after the endpoint rejected it, if allowed now.
    async fn refresh(&self) -> Result<Refresh, SinkHttpError>;
}

/// A token fixed for the process's life (`DT_API_TOKEN`).
#[derive(Debug, Clone)]
pub struct StaticToken(Secret);

impl StaticToken {
    pub fn new(token: Secret) -> Self {
        Self(token)
    }
}

#[async_trait]
impl TokenSource for StaticToken {
    async fn token(&self) -> Result<Secret, SinkHttpError> {
        Ok(self.0.clone())
    }
    async fn refresh(&self) -> Result<Refresh, SinkHttpError> {
        Ok(Refresh::Fixed)
    }
}

#[derive(Debug)]
struct Cached {
    token: Secret,
    fetched: Timestamp,
}

/// A token read from a Secrets Manager secret: a JSON object with the token under `key_name`, or a
/// SecretString that is the bare token.
#[derive(Debug)]
pub struct SecretsManagerToken {
    client: aws_sdk_secretsmanager::Client,
    arn: String,
    key_name: String,
    min_refresh_interval: Duration,
    clock: Arc<dyn Clock>,
    // A tokio mutex: held across the `GetSecretValue` call so concurrent 401s cause one read.
    cached: tokio::sync::Mutex<Option<Cached>>,
}

impl SecretsManagerToken {
    pub fn new(
        client: aws_sdk_secretsmanager::Client,
        arn: impl Into<String>,
        key_name: impl Into<String>,
    ) -> Self {
        Self {
            client,
            arn: arn.into(),
            key_name: key_name.into(),
            min_refresh_interval: DEFAULT_MIN_REFRESH_INTERVAL,
            clock: Arc::new(SystemClock),
            cached: tokio::sync::Mutex::new(None),
        }
    }

    pub fn from_sdk_config(
        sdk_config: &aws_config::SdkConfig,
        arn: impl Into<String>,
        key_name: impl Into<String>,
    ) -> Self {
        Self::new(
            aws_sdk_secretsmanager::Client::new(sdk_config),
            arn,
            key_name,
        )
    }

    /// Changes the minimum time between two refreshes (tests use a short one).
    #[must_use]
    pub fn with_min_refresh_interval(mut self, interval: Duration) -> Self {
        self.min_refresh_interval = interval;
        self
    }

    /// Measures the refresh interval on `clock` instead of the wall clock.
    #[must_use]
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    pub fn arn(&self) -> &str {
        &self.arn
    }

    async fn fetch(&self) -> Result<Secret, SinkHttpError> {
        let out = self
            .client
            .get_secret_value()
            .secret_id(&self.arn)
            .send()
            .await
            .map_err(|e| {
                let arn = self.arn.clone();
                let reason = gdfwd_aws_error::describe(&e);
                if gdfwd_aws_error::has_code(&e, SECRET_REFUSALS) {
                    SinkHttpError::SecretRefused { arn, reason }
                } else {
                    SinkHttpError::SecretRead { arn, reason }
                }
            })?;
        let Some(s) = out.secret_string() else {
            return Err(SinkHttpError::SecretContent {
                arn: self.arn.clone(),
                reason: "has no SecretString (binary secrets are not supported)".to_owned(),
            });
        };
        parse_secret_string(s, &self.key_name).map_err(|reason| SinkHttpError::SecretContent {
            arn: self.arn.clone(),
            reason,
        })
    }
}

/// The time from `then` to `now` (zero if the clock went back).
fn since(then: Timestamp, now: Timestamp) -> Duration {
    Duration::from_millis(u64::try_from(now.millis() - then.millis()).unwrap_or(0))
}

/// `GetSecretValue` error codes that refuse the caller rather than report an outage.
const SECRET_REFUSALS: &[&str] = &[
    "ResourceNotFoundException",
    "AccessDeniedException",
    "DecryptionFailure",
    "InvalidRequestException",
    "InvalidParameterException",
    "UnrecognizedClientException",
];

#[async_trait]
impl TokenSource for SecretsManagerToken {
    async fn token(&self) -> Result<Secret, SinkHttpError> {
        let mut cached = self.cached.lock().await;
        if let Some(c) = cached.as_ref() {
            return Ok(c.token.clone());
        }
        let token = self.fetch().await?;
        tracing::debug!(secret = %self.arn, "read the Dynatrace API token from Secrets Manager");
        *cached = Some(Cached {
            token: token.clone(),
            fetched: self.clock.now(),
        });
        Ok(token)
    }

    async fn refresh(&self) -> Result<Refresh, SinkHttpError> {
        let mut cached = self.cached.lock().await;
        if let Some(c) = cached.as_ref()
            && since(c.fetched, self.clock.now()) < self.min_refresh_interval
        {
            return Ok(Refresh::TooSoon);
        }
        let token = self.fetch().await?;
        let changed = cached.as_ref().is_none_or(|c| c.token != token);
        tracing::info!(secret = %self.arn, changed, "re-read the Dynatrace API token after a 401");
        *cached = Some(Cached {
            token,
            fetched: self.clock.now(),
        });
        Ok(Refresh::Reloaded)
    }
}

/// Whether `token` (already trimmed) can be an API token: printable ASCII without spaces, as every
/// Dynatrace token is, and what an HTTP header can carry. The reason says what is wrong and
/// where, never any part of the value.
pub fn check_token(token: &str) -> Result<(), String> {
    let Some((at, c)) = token
        .chars()
        .enumerate()
        .find(|(_, c)| !c.is_ascii_graphic())
    else {
        return if token.is_empty() {
            Err("the token is empty".to_owned())
        } else {
            Ok(())
        };
    };
    let what = match c {
        '\n' | '\r' => "a line break",
        c if c.is_control() => "a control character",
        c if c.is_whitespace() => "a space",
        _ => "a non-ASCII character",
    };
    Err(format!(
        "the token holds {what} at character {} (a token is printable ASCII without spaces); store it again without it",
        at + 1
    ))
}

/// Extracts the token from a SecretString: `{"<key_name>": "<token>", ...}` as Dynatrace's setup
/// writes it, or the bare token. Errors never quote the secret's content.
pub fn parse_secret_string(s: &str, key_name: &str) -> Result<Secret, String> {
    let trimmed = s.trim();
    if trimmed.is_empty() {
        return Err("SecretString is empty".to_owned());
    }
    if trimmed.starts_with('{') {
        let v: serde_json::Map<String, serde_json::Value> = serde_json::from_str(trimmed)
            .map_err(|_| "SecretString starts with '{' but is not a JSON object".to_owned())?;
        return match v.get(key_name) {
            Some(serde_json::Value::String(t)) if !t.trim().is_empty() => check_token(t.trim())
                .map(|()| Secret::new(t.trim()))
                .map_err(|reason| format!("JSON key {key_name:?}: {reason}")),
            Some(_) => Err(format!("JSON key {key_name:?} is not a non-empty string")),
            None => {
                let keys: Vec<&str> = v.keys().map(String::as_str).collect();
                Err(format!(
                    "JSON key {key_name:?} not found (keys present: {keys:?})"
                ))
            }
        };
    }
    if trimmed.chars().any(char::is_whitespace) {
        return Err("SecretString is neither a JSON object nor a single token".to_owned());
    }
    check_token(trimmed).map_err(|reason| format!("SecretString: {reason}"))?;
    Ok(Secret::new(trimmed))
}

/// Builds the configured token source: Secrets Manager when a secret ARN is set (with the given SDK
/// config, or the default AWS config chain when `None`), else the static token, else an error.
pub async fn build_token_source(
    cfg: &TokenConfig,
    sdk_config: Option<&aws_config::SdkConfig>,
) -> Result<Arc<dyn TokenSource>, SinkHttpError> {
    if let Some(arn) = cfg.secret_arn.as_deref().filter(|a| !a.trim().is_empty()) {
        let src = match sdk_config {
            Some(c) => SecretsManagerToken::from_sdk_config(c, arn.trim(), &cfg.secret_key_name),
            None => {
                let c = aws_config::defaults(aws_config::BehaviorVersion::latest())
                    .load()
                    .await;
                SecretsManagerToken::from_sdk_config(&c, arn.trim(), &cfg.secret_key_name)
            }
        }
        .with_min_refresh_interval(cfg.min_refresh_interval);
        return Ok(Arc::new(src));
    }
    match &cfg.static_token {
        Some(t) if !t.expose().trim().is_empty() => {
            let token = t.expose().trim();
            check_token(token).map_err(|reason| SinkHttpError::StaticToken {
                var: crate::config::env::API_TOKEN,
                reason,
            })?;
            Ok(Arc::new(StaticToken::new(Secret::new(token))))
        }
        _ => Err(SinkHttpError::NoToken),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_secret_with_the_default_key() {
        let t = parse_secret_string(
            r#"{"DYNATRACE_OPENPIPELINE_INGEST_API_TOKEN":"dt0c01.AAA.BBB","other":"x"}"#,
            DEFAULT_SECRET_KEY_NAME,
        )
        .expect("token");
        assert_eq!(t.expose(), "dt0c01.AAA.BBB");
    }

    #[test]
    fn bare_secret_string() {
        let t = parse_secret_string(" dt0c01.AAA.BBB\n", DEFAULT_SECRET_KEY_NAME).expect("token");
        assert_eq!(t.expose(), "dt0c01.AAA.BBB");
    }

    #[test]
    fn missing_key_names_the_key_not_the_values() {
        let e = parse_secret_string(r#"{"token":"dt0c01.SECRETVALUE"}"#, "MY_KEY")
            .expect_err("must fail");
        assert!(e.contains("MY_KEY") && e.contains("token"), "{e}");
        assert!(!e.contains("SECRETVALUE"), "{e}");
    }

    #[test]
    fn broken_json_does_not_echo_content() {
        let e = parse_secret_string(r#"{"K": "dt0c01.SECRETVALUE""#, "K").expect_err("must fail");
        assert!(!e.contains("SECRETVALUE"), "{e}");
        let e = parse_secret_string("", "K").expect_err("must fail");
        assert!(e.contains("empty"));
        let e = parse_secret_string(r#"{"K": 5}"#, "K").expect_err("must fail");
        assert!(e.contains("non-empty string"), "{e}");
    }

    /// A token with a line break or another control character inside is refused where it is
    /// read, naming the key or variable and never the value (it could not go into a header, and
    /// every request would fail as a refusal).
    #[tokio::test]
    async fn a_token_with_a_control_character_is_refused_where_it_is_read() {
        for bad in [
            "dt0c01.AAA\nSECRETPART",
            "dt0c01.AAA\rSECRETPART",
            "dt0c01.AAA\u{7}SECRETPART",
            "dt0c01.AAA SECRETPART",
            "dt0c01.AAAé SECRETPART",
        ] {
            let json = serde_json::json!({ "K": bad }).to_string();
            let e = parse_secret_string(&json, "K").expect_err(bad);
            assert!(e.contains("\"K\"") && e.contains("character 11"), "{e}");
            assert!(!e.contains("SECRETPART") && !e.contains("dt0c01"), "{e}");

            let cfg = TokenConfig {
                static_token: Some(Secret::new(bad)),
                ..TokenConfig::default()
            };
            let e = build_token_source(&cfg, None).await.expect_err(bad);
            assert!(e.is_refusal(), "{e}");
            let e = e.to_string();
            assert!(e.starts_with("DT_API_TOKEN: "), "{e}");
            assert!(!e.contains("SECRETPART") && !e.contains("dt0c01"), "{e}");
        }
        let e = parse_secret_string("dt0c01.AAA\u{1b}SECRETPART", "K").expect_err("bare");
        assert!(e.contains("control character"), "{e}");
        assert!(!e.contains("SECRETPART"), "{e}");
        // Surrounding whitespace is not part of the token.
        let t = parse_secret_string("{\"K\": \" dt0c01.AAA.BBB\\n\"}", "K").expect("trimmed");
        assert_eq!(t.expose(), "dt0c01.AAA.BBB");
    }

    #[tokio::test]
    async fn build_prefers_the_secret_then_the_static_token() {
        let none = TokenConfig::default();
        assert!(matches!(
            build_token_source(&none, None).await,
            Err(SinkHttpError::NoToken)
        ));
        let stat = TokenConfig {
            static_token: Some(Secret::new("dt0c01.X")),
            ..TokenConfig::default()
        };
        let src = build_token_source(&stat, None).await.expect("static");
        assert_eq!(src.token().await.expect("token").expose(), "dt0c01.X");
        assert_eq!(src.refresh().await.expect("refresh"), Refresh::Fixed);
        let sdk = aws_config::SdkConfig::builder()
            .behavior_version(aws_config::BehaviorVersion::latest())
            .build();
        let both = TokenConfig {
            secret_arn: Some("arn:aws:secretsmanager:us-east-1:123456789012:secret:x".into()),
            ..stat
        };
        let src = build_token_source(&both, Some(&sdk)).await.expect("secret");
        assert!(format!("{src:?}").contains("SecretsManagerToken"));
    }
}
