//! The GuardDuty API client: REST JSON over reqwest, signed with SigV4.
//!
//! Why not `aws-sdk-guardduty`: the `raw` payload must carry each finding exactly as GuardDuty
//! returned it (the same camelCase JSON the EventBridge event carries). The SDK deserialises into
//! structs whose re-serialisation would have to be proven equal for every one of GuardDuty's
//! hundreds of nested shapes, and unknown (newer) fields would be dropped. Calling the REST JSON
//! API directly makes the response body *be* the payload: findings stay `serde_json` maps from
//! the wire to the sink. It also spares the build one of the largest SDK crates. What we take
//! from the SDK stack is what is hard to get right: credentials (`aws-config`'s default chain,
//! SSO, assumed roles, IMDS) and request signing (`aws-sigv4`).
//!
//! Throttling: every call first waits for a per-region token bucket (`--max-api-calls-per-second`;
//! GuardDuty's quotas are per account and region, so the limit is too), then retries
//! `429`/`TooManyRequestsException`/`ThrottlingException`, 5xx and transport errors with capped
//! exponential backoff and "equal" jitter (a random wait between half and all of the backoff), so
//! clients spread out but every retry still backs off.
//!
//! Endpoints: `AWS_ENDPOINT_URL_GUARDDUTY`, else `AWS_ENDPOINT_URL` / the profile's
//! `endpoint_url` (as the SDK resolves them), else `https://guardduty.{region}.amazonaws.com`.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use rand::Rng;
use serde_json::{Map, Value, json};

use crate::error::GuardDutyError;

/// Most ids per `ListFindings` page and per `GetFindings` call (the API's maximum).
pub const PAGE_SIZE: usize = 50;

/// Tunables of [`GuardDutyClient`].
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// GuardDuty calls per second per region; 0 = unlimited.
    pub max_calls_per_second: u32,
    /// Attempts per call (first try included) for retryable answers.
    pub max_attempts: u32,
    /// First backoff; doubles per retry up to `max_backoff`, then a random half to all of it.
    pub base_backoff: Duration,
    pub max_backoff: Duration,
    /// Per-request timeout.
    pub timeout: Duration,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            max_calls_per_second: 5,
            max_attempts: 8,
            base_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(20),
            timeout: Duration::from_secs(30),
        }
    }
}

/// Where requests go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// `https://guardduty.{region}.amazonaws.com` (`.com.cn` in China).
    Aws,
    /// One URL for every region (a test fake, a VPC endpoint); the region still goes into the
    /// signature's credential scope.
    Fixed(String),
}

impl Endpoint {
    /// From the environment, as the SDK would resolve it for GuardDuty.
    pub fn from_env(sdk_endpoint_url: Option<&str>) -> Self {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        if let Some(url) = var("AWS_ENDPOINT_URL_GUARDDUTY") {
            return Self::Fixed(url);
        }
        match sdk_endpoint_url {
            Some(url) if !url.is_empty() => Self::Fixed(url.to_owned()),
            _ => Self::Aws,
        }
    }

    fn base(&self, region: &str) -> String {
        match self {
            Self::Fixed(url) => url.trim_end_matches('/').to_owned(),
            Self::Aws if region.starts_with("cn-") => {
                format!("https://guardduty.{region}.amazonaws.com.cn")
            }
            Self::Aws => format!("https://guardduty.{region}.amazonaws.com"),
        }
    }
}

/// One page of `ListFindings`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FindingIdsPage {
    pub ids: Vec<String>,
    pub next_token: Option<String>,
}

/// Call counters (cumulative over the client's life), as the backfill report carries them.
pub use gdfwd_core::source::ApiStats;

/// The GuardDuty client. Cheap to share behind an `Arc`.
pub struct GuardDutyClient {
    http: reqwest::Client,
    credentials: SharedCredentialsProvider,
    cached: tokio::sync::Mutex<Option<Credentials>>,
    endpoint: Endpoint,
    config: ClientConfig,
    limiters: Mutex<HashMap<String, Arc<DefaultDirectRateLimiter>>>,
    stats: Mutex<ApiStats>,
}

impl std::fmt::Debug for GuardDutyClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Credentials stay out of Debug output.
        f.debug_struct("GuardDutyClient")
            .field("endpoint", &self.endpoint)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

enum Attempt {
    Done(Value),
    Retry(GuardDutyError, Option<Duration>),
    Fail(GuardDutyError),
}

impl GuardDutyClient {
    /// A client with explicit credentials and endpoint (tests, or a caller with its own config).
    pub fn new(
        credentials: SharedCredentialsProvider,
        endpoint: Endpoint,
        config: ClientConfig,
    ) -> Result<Self, GuardDutyError> {
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .build()
            .map_err(|e| GuardDutyError::Config(format!("building the HTTP client: {e}")))?;
        Ok(Self {
            http,
            credentials,
            cached: tokio::sync::Mutex::new(None),
            endpoint,
            config,
            limiters: Mutex::new(HashMap::new()),
            stats: Mutex::new(ApiStats::default()),
        })
    }

    /// Credentials from the default chain (env, profile, SSO, web identity, IMDS) and the endpoint
    /// from the environment.
    pub async fn from_env(config: ClientConfig) -> Result<Self, GuardDutyError> {
        let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .load()
            .await;
        let credentials = sdk.credentials_provider().ok_or_else(|| {
            GuardDutyError::Credentials(
                "no credentials provider configured (set AWS_PROFILE or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY)"
                    .to_owned(),
            )
        })?;
        Self::new(credentials, Endpoint::from_env(sdk.endpoint_url()), config)
    }

    /// From an already loaded SDK configuration (the CLI loads one per run).
    pub fn from_sdk(
        sdk: &aws_config::SdkConfig,
        config: ClientConfig,
    ) -> Result<Self, GuardDutyError> {
        let credentials = sdk.credentials_provider().ok_or_else(|| {
            GuardDutyError::Credentials(
                "no credentials provider configured (set AWS_PROFILE or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY)"
                    .to_owned(),
            )
        })?;
        Self::new(credentials, Endpoint::from_env(sdk.endpoint_url()), config)
    }

    /// The account's enabled regions (`account:ListRegions`, opted-in and enabled by default),
    /// for `--regions all-enabled`. The endpoint follows `AWS_ENDPOINT_URL_ACCOUNT`, else the
    /// GuardDuty override (a test fake serving both), else the global Account endpoint.
    pub async fn list_enabled_regions(&self) -> Result<Vec<String>, GuardDutyError> {
        let base = std::env::var("AWS_ENDPOINT_URL_ACCOUNT")
            .ok()
            .filter(|v| !v.trim().is_empty())
            .or_else(|| match &self.endpoint {
                Endpoint::Fixed(url) => Some(url.clone()),
                Endpoint::Aws => None,
            })
            .unwrap_or_else(|| "https://account.us-east-1.amazonaws.com".to_owned());
        let url = format!("{}/listRegions", base.trim_end_matches('/'));
        let mut regions = Vec::new();
        let mut token: Option<String> = None;
        let mut seen = std::collections::HashSet::new();
        loop {
            let mut body = json!({
                "maxResults": 50,
                "regionOptStatusContains": ["ENABLED", "ENABLED_BY_DEFAULT"],
            });
            if let (Some(t), Some(o)) = (&token, body.as_object_mut()) {
                o.insert("nextToken".to_owned(), Value::from(t.as_str()));
            }
            let v = self
                .call_url(
                    "us-east-1",
                    "account",
                    "ListRegions",
                    "POST",
                    &url,
                    Some(&body),
                )
                .await?;
            let list = v.get("regions").and_then(Value::as_array).ok_or_else(|| {
                GuardDutyError::Decode {
                    region: "us-east-1".to_owned(),
                    operation: "ListRegions",
                    message: "no regions list".to_owned(),
                }
            })?;
            regions.extend(
                list.iter()
                    .filter_map(|r| r.get("regionName").and_then(Value::as_str))
                    .map(str::to_owned),
            );
            token = v
                .get("nextToken")
                .and_then(Value::as_str)
                .filter(|t| !t.is_empty())
                .map(str::to_owned);
            match &token {
                None => break,
                Some(t) if !seen.insert(t.clone()) => {
                    return Err(GuardDutyError::RepeatedPageToken {
                        region: "us-east-1".to_owned(),
                        detector: "-".to_owned(),
                        token: t.clone(),
                    });
                }
                Some(_) => {}
            }
        }
        regions.sort();
        Ok(regions)
    }

    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    pub fn stats(&self) -> ApiStats {
        self.stats
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn bump(&self, f: impl FnOnce(&mut ApiStats)) {
        f(&mut self
            .stats
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner));
    }

    fn limiter(&self, region: &str) -> Option<Arc<DefaultDirectRateLimiter>> {
        let rate = NonZeroU32::new(self.config.max_calls_per_second)?;
        let mut map = self
            .limiters
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Some(
            map.entry(region.to_owned())
                .or_insert_with(|| {
                    // Burst of one: calls are spaced evenly, so no one-second window holds
                    // more than the limit (plus the one at its edge).
                    Arc::new(RateLimiter::direct(
                        Quota::per_second(rate).allow_burst(NonZeroU32::MIN),
                    ))
                })
                .clone(),
        )
    }

    async fn credentials(&self) -> Result<Credentials, GuardDutyError> {
        let mut cached = self.cached.lock().await;
        let fresh = cached.as_ref().is_some_and(|c| {
            c.expiry().is_none_or(|exp| {
                exp.duration_since(SystemTime::now())
                    .is_ok_and(|left| left > Duration::from_secs(300))
            })
        });
        if !fresh {
            let creds = self
                .credentials
                .provide_credentials()
                .await
                .map_err(|e| GuardDutyError::Credentials(format!("{e}")))?;
            *cached = Some(creds);
        }
        cached
            .clone()
            .ok_or_else(|| GuardDutyError::Credentials("no credentials".to_owned()))
    }

    /// `GET /detector` (all pages): the detector ids of `region` (zero or one in practice).
    pub async fn list_detectors(&self, region: &str) -> Result<Vec<String>, GuardDutyError> {
        let mut ids = Vec::new();
        let mut token: Option<String> = None;
        let mut seen = std::collections::HashSet::new();
        loop {
            let query = match &token {
                Some(t) => format!("?maxResults=50&nextToken={}", url_escape(t)),
                None => "?maxResults=50".to_owned(),
            };
            let v = self
                .call(
                    region,
                    "ListDetectors",
                    "GET",
                    &format!("/detector{query}"),
                    None,
                )
                .await?;
            let page = string_list(&v, "detectorIds").ok_or_else(|| GuardDutyError::Decode {
                region: region.to_owned(),
                operation: "ListDetectors",
                message: "no detectorIds list".to_owned(),
            })?;
            ids.extend(page);
            token = v
                .get("nextToken")
                .and_then(Value::as_str)
                .filter(|t| !t.is_empty())
                .map(str::to_owned);
            match &token {
                None => return Ok(ids),
                Some(t) if !seen.insert(t.clone()) => {
                    return Err(GuardDutyError::RepeatedPageToken {
                        region: region.to_owned(),
                        detector: "-".to_owned(),
                        token: t.clone(),
                    });
                }
                Some(_) => {}
            }
        }
    }

    /// `POST /detector/{id}/findings`: one page of finding ids.
    pub async fn list_findings(
        &self,
        region: &str,
        detector: &str,
        criteria: &Value,
        sort_updated_ascending: bool,
        next_token: Option<&str>,
    ) -> Result<FindingIdsPage, GuardDutyError> {
        let mut body = json!({
            "findingCriteria": criteria,
            "maxResults": PAGE_SIZE,
        });
        if let Some(obj) = body.as_object_mut() {
            if sort_updated_ascending {
                obj.insert(
                    "sortCriteria".to_owned(),
                    json!({"attributeName": "updatedAt", "orderBy": "ASC"}),
                );
            }
            if let Some(t) = next_token {
                obj.insert("nextToken".to_owned(), Value::from(t));
            }
        }
        let path = format!("/detector/{}/findings", url_escape(detector));
        let v = self
            .call(region, "ListFindings", "POST", &path, Some(&body))
            .await?;
        let ids = string_list(&v, "findingIds").ok_or_else(|| GuardDutyError::Decode {
            region: region.to_owned(),
            operation: "ListFindings",
            message: "no findingIds list".to_owned(),
        })?;
        let next_token = v
            .get("nextToken")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
            .map(str::to_owned);
        Ok(FindingIdsPage { ids, next_token })
    }

    /// `POST /detector/{id}/findings/get`: the findings' JSON exactly as returned, in chunks of 50.
    pub async fn get_findings(
        &self,
        region: &str,
        detector: &str,
        ids: &[String],
    ) -> Result<Vec<Map<String, Value>>, GuardDutyError> {
        let path = format!("/detector/{}/findings/get", url_escape(detector));
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(PAGE_SIZE) {
            let body = json!({ "findingIds": chunk });
            let v = self
                .call(region, "GetFindings", "POST", &path, Some(&body))
                .await?;
            let Some(Value::Array(findings)) = v.get("findings").cloned() else {
                return Err(GuardDutyError::Decode {
                    region: region.to_owned(),
                    operation: "GetFindings",
                    message: "no findings list".to_owned(),
                });
            };
            for f in findings {
                match f {
                    Value::Object(m) => out.push(m),
                    other => {
                        return Err(GuardDutyError::Decode {
                            region: region.to_owned(),
                            operation: "GetFindings",
                            message: format!(
                                "a finding is not an object: {:.80}",
                                other.to_string()
                            ),
                        });
                    }
                }
            }
        }
        Ok(out)
    }

    /// One API call with rate limiting and retries; the decoded JSON body.
    pub(crate) async fn call(
        &self,
        region: &str,
        operation: &'static str,
        method: &str,
        path_and_query: &str,
        body: Option<&Value>,
    ) -> Result<Value, GuardDutyError> {
        let url = format!("{}{path_and_query}", self.endpoint.base(region));
        self.call_url(region, "guardduty", operation, method, &url, body)
            .await
    }

    /// [`Self::call`] for any service and URL (`service` is the SigV4 signing name).
    async fn call_url(
        &self,
        region: &str,
        service: &'static str,
        operation: &'static str,
        method: &str,
        url: &str,
        body: Option<&Value>,
    ) -> Result<Value, GuardDutyError> {
        let body_bytes = body.map(Value::to_string).unwrap_or_default().into_bytes();
        let call = Call {
            region,
            service,
            operation,
            method,
            url,
            body: &body_bytes,
        };
        let limiter = self.limiter(region);
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            if let Some(l) = &limiter {
                l.until_ready().await;
            }
            self.bump(|s| s.calls += 1);
            let outcome = self.attempt(&call, attempt).await;
            let (err, wait) = match outcome {
                Attempt::Done(v) => return Ok(v),
                Attempt::Fail(e) => return Err(e),
                Attempt::Retry(e, wait) => (e, wait),
            };
            if attempt >= self.config.max_attempts.max(1) {
                return Err(err);
            }
            let backoff = wait.unwrap_or_else(|| self.backoff(attempt));
            tracing::debug!(region, operation, attempt, error = %err, backoff_ms = backoff.as_millis() as u64, "retrying GuardDuty call");
            self.bump(|s| s.retries += 1);
            tokio::time::sleep(backoff).await;
        }
    }

    fn backoff(&self, attempt: u32) -> Duration {
        let exp = self
            .config
            .base_backoff
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(16));
        let cap = exp.min(self.config.max_backoff);
        // Equal jitter (half to all of the backoff): a storm of clients spreads out, yet each backs off.
        let f: f64 = rand::rng().random_range(0.5..=1.0);
        cap.mul_f64(f)
    }

    /// One signed request and its answer: done, retry (throttling, 5xx, transport) or fail.
    async fn attempt(&self, call: &Call<'_>, attempt: u32) -> Attempt {
        let Call {
            region,
            operation,
            url,
            ..
        } = *call;
        let req = match self.signed_request(call).await {
            Ok(r) => r,
            Err(e) => return Attempt::Fail(e),
        };
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) => {
                let message = gdfwd_aws_error::chain(&e);
                return Attempt::Retry(transport(region, operation, url, attempt, message), None);
            }
        };
        let status = resp.status().as_u16();
        let header_kind = resp
            .headers()
            .get("x-amzn-errortype")
            .and_then(|v| v.to_str().ok())
            .map(|s| s.split(':').next().unwrap_or(s).to_owned());
        if (200..300).contains(&status) {
            // A page of findings is read whole: it is the payload.
            return match resp.text().await {
                Ok(text) => decode_page(call, &text),
                Err(e) => {
                    let message = format!("reading the response: {}", gdfwd_aws_error::chain(&e));
                    Attempt::Retry(transport(region, operation, url, attempt, message), None)
                }
            };
        }
        // An error answer only as far as its message needs, so a huge or endless error body
        // cannot fill memory.
        let text = gdfwd_aws_error::read_capped(resp, gdfwd_aws_error::ERROR_BODY_CAP)
            .await
            .0;
        let answer = ApiError::judge(status, header_kind, &text);
        if answer.throttled {
            self.bump(|s| s.throttled += 1);
        }
        let retry = answer.throttled || status >= 500;
        let err = GuardDutyError::Api {
            region: region.to_owned(),
            operation,
            status,
            kind: answer.kind,
            message: answer.message,
            attempts: attempt,
        };
        if retry {
            Attempt::Retry(err, None)
        } else {
            Attempt::Fail(err)
        }
    }

    /// The request of `call`, signed with SigV4 by the current credentials.
    async fn signed_request(
        &self,
        call: &Call<'_>,
    ) -> Result<reqwest::RequestBuilder, GuardDutyError> {
        let creds = self.credentials().await?;
        let signed = sign(
            &creds,
            call.region,
            call.service,
            call.method,
            call.url,
            call.body,
        )
        .map_err(|message| GuardDutyError::Signing {
            region: call.region.to_owned(),
            operation: call.operation,
            message: gdfwd_aws_error::redact_urls(&message),
        })?;
        let m = if call.method == "GET" {
            reqwest::Method::GET
        } else {
            reqwest::Method::POST
        };
        let mut req = self.http.request(m, call.url);
        if !call.body.is_empty() {
            req = req
                .header("content-type", "application/json")
                .body(call.body.to_vec());
        }
        for (k, v) in signed {
            req = req.header(k, v);
        }
        Ok(req)
    }
}

/// One API call as [`GuardDutyClient::attempt`] makes it (every attempt the same).
#[derive(Debug, Clone, Copy)]
struct Call<'a> {
    region: &'a str,
    service: &'static str,
    operation: &'static str,
    method: &'a str,
    url: &'a str,
    body: &'a [u8],
}

/// A 2xx answer's body: JSON, else a decode failure (not retried: the same answer would come).
fn decode_page(call: &Call<'_>, text: &str) -> Attempt {
    match serde_json::from_str(text) {
        Ok(v) => Attempt::Done(v),
        Err(e) => Attempt::Fail(GuardDutyError::Decode {
            region: call.region.to_owned(),
            operation: call.operation,
            message: format!("body is not JSON ({e}): {:.120}", text),
        }),
    }
}

/// What an error answer says, from its `x-amzn-ErrorType` header or its JSON body.
#[derive(Debug, PartialEq, Eq)]
struct ApiError {
    kind: String,
    message: String,
    /// Throttling, however GuardDuty spells it (429, the error type, or the message).
    throttled: bool,
}

impl ApiError {
    fn judge(status: u16, header_kind: Option<String>, text: &str) -> Self {
        let body: Option<Value> = serde_json::from_str(text).ok();
        let kind = header_kind
            .or_else(|| {
                body.as_ref()
                    .and_then(|b| b.get("__type").or_else(|| b.get("type")))
                    .and_then(Value::as_str)
                    .map(|s| s.rsplit('#').next().unwrap_or(s).to_owned())
            })
            .unwrap_or_else(|| "UnknownError".to_owned());
        let message = body
            .as_ref()
            .and_then(|b| b.get("message").or_else(|| b.get("Message")))
            .and_then(Value::as_str)
            .map(str::to_owned)
            .unwrap_or_else(|| text.chars().take(200).collect());
        let throttled = status == 429
            || kind.contains("TooManyRequests")
            || kind.contains("Throttl")
            || message.contains("Rate exceeded");
        Self {
            kind,
            message,
            throttled,
        }
    }
}

/// A call that got no (complete) answer. The URL and the message are redacted: a fixed endpoint
/// (`AWS_ENDPOINT_URL`) may carry credentials, and the query holds pagination tokens.
fn transport(
    region: &str,
    operation: &'static str,
    url: &str,
    attempts: u32,
    message: String,
) -> GuardDutyError {
    GuardDutyError::Transport {
        region: region.to_owned(),
        operation,
        url: gdfwd_aws_error::redact_url(url),
        attempts,
        message: gdfwd_aws_error::redact_urls(&message),
    }
}

/// Signs a request; the headers to add (`authorization`, `x-amz-date`, `x-amz-security-token`).
fn sign(
    creds: &Credentials,
    region: &str,
    service: &str,
    method: &str,
    url: &str,
    body: &[u8],
) -> Result<Vec<(String, String)>, String> {
    use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
    let identity = creds.clone().into();
    let params = aws_sigv4::sign::v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name(service)
        .time(SystemTime::now())
        .settings(SigningSettings::default())
        .build()
        .map_err(|e| e.to_string())?
        .into();
    let headers: Vec<(&str, &str)> = if body.is_empty() {
        Vec::new()
    } else {
        vec![("content-type", "application/json")]
    };
    let signable =
        SignableRequest::new(method, url, headers.into_iter(), SignableBody::Bytes(body))
            .map_err(|e| e.to_string())?;
    let (instructions, _sig) = sign(signable, &params)
        .map_err(|e| e.to_string())?
        .into_parts();
    Ok(instructions
        .headers()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect())
}

fn string_list(v: &Value, key: &str) -> Option<Vec<String>> {
    v.get(key)?
        .as_array()?
        .iter()
        .map(|s| s.as_str().map(str::to_owned))
        .collect()
}

/// Percent-encodes a path segment or query value (RFC 3986 unreserved characters kept).
pub(crate) fn url_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_answer_is_judged_from_its_header_then_its_body() {
        let header = ApiError::judge(
            400,
            Some("BadRequestException".into()),
            r#"{"message":"detector not found","__type":"Other"}"#,
        );
        assert_eq!(header.kind, "BadRequestException");
        assert_eq!(header.message, "detector not found");
        assert!(!header.throttled);

        let body = ApiError::judge(
            400,
            None,
            r#"{"Message":"slow down","__type":"com.amazonaws#ThrottlingException"}"#,
        );
        assert_eq!(body.kind, "ThrottlingException");
        assert!(body.throttled, "the error type says throttling");

        let text = ApiError::judge(503, None, "<html>Service Unavailable</html>");
        assert_eq!(text.kind, "UnknownError");
        assert_eq!(text.message, "<html>Service Unavailable</html>");
        assert!(!text.throttled);

        assert!(ApiError::judge(429, None, "").throttled);
        assert!(ApiError::judge(400, None, r#"{"message":"Rate exceeded"}"#).throttled);
    }

    #[test]
    fn a_page_that_is_not_json_fails_without_a_retry() {
        let call = Call {
            region: "eu-west-1",
            service: "guardduty",
            operation: "ListFindings",
            method: "POST",
            url: "https://guardduty.eu-west-1.amazonaws.com/detector/d/findings",
            body: b"",
        };
        assert!(matches!(
            decode_page(&call, r#"{"findingIds":[]}"#),
            Attempt::Done(_)
        ));
        match decode_page(&call, "not json") {
            Attempt::Fail(GuardDutyError::Decode {
                region, operation, ..
            }) => {
                assert_eq!((region.as_str(), operation), ("eu-west-1", "ListFindings"));
            }
            _ => panic!("a page that is not JSON must fail"),
        }
    }
}
