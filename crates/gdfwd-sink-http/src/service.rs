//! The I/O part: one `reqwest::Client` and one POST per call, turned into a [`retry::Attempt`].
//!
//! The client is built once per sink so connections are reused (HTTP/1.1 keep-alive, HTTP/2 when
//! the server offers it over ALPN). Redirects are not followed: an ingest endpoint that redirects
//! is misconfigured, and following would re-send the token to wherever it points.
//!
//! An error answer's body is read only up to [`gdfwd_aws_error::ERROR_BODY_CAP`] (it is logged at
//! debug level, cut to 500 characters), and transport errors have any URL they quote redacted:
//! what the sender logs or hands back as a reason ends up in the store's `last_error`.
//!
//! [`retry::Attempt`]: crate::retry::Attempt

use std::time::Duration;

use bytes::Bytes;
use reqwest::header::{AUTHORIZATION, CONTENT_ENCODING, CONTENT_TYPE, HeaderValue, RETRY_AFTER};

use crate::config::{AuthScheme, HttpSinkConfig};
use crate::error::SinkHttpError;
use crate::retry::Attempt;
use crate::secret::Secret;

/// Response headers that carry a request id, first match wins. Dynatrace's platform APIs answer
/// with `dt-request-id`; the others cover proxies and gateways in front of it.
const REQUEST_ID_HEADERS: [&str; 4] = [
    "dt-request-id",
    "x-dt-request-id",
    "x-request-id",
    "x-amzn-requestid",
];

#[derive(Debug, Clone)]
pub(crate) struct Service {
    client: reqwest::Client,
    endpoint: reqwest::Url,
    auth: AuthScheme,
}

#[derive(Debug)]
pub(crate) struct Answer {
    pub attempt: Attempt,
    pub request_id: Option<String>,
}

impl Service {
    pub fn new(cfg: &HttpSinkConfig) -> Result<Self, SinkHttpError> {
        let mut b = reqwest::Client::builder()
            .user_agent(concat!("gdfwd/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(cfg.connect_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .pool_idle_timeout(Duration::from_secs(60))
            .tcp_keepalive(Duration::from_secs(30))
            // Our own policy retries; reqwest's default only retries protocol-level refusals
            // (HTTP/2 REFUSED_STREAM), which never reached the server, so it stays on.
            .https_only(cfg.endpoint.scheme() == "https");
        if let Some(path) = &cfg.ca_file {
            let pem = std::fs::read(path).map_err(|e| SinkHttpError::CaFile {
                path: path.display().to_string(),
                reason: e.to_string(),
            })?;
            let certs =
                reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| SinkHttpError::CaFile {
                    path: path.display().to_string(),
                    reason: format!("not a PEM certificate bundle: {e}"),
                })?;
            if certs.is_empty() {
                return Err(SinkHttpError::CaFile {
                    path: path.display().to_string(),
                    reason: "holds no certificate".into(),
                });
            }
            b = b.tls_certs_merge(certs);
        }
        let client = b
            .build()
            .map_err(|e| SinkHttpError::Client(gdfwd_aws_error::chain(&e)))?;
        Ok(Self {
            client,
            endpoint: cfg.endpoint.clone(),
            auth: cfg.auth,
        })
    }

    /// POSTs one prepared body.
    pub async fn post(&self, body: Bytes, gzip: bool, token: &Secret, timeout: Duration) -> Answer {
        let mut auth =
            match HeaderValue::from_str(&format!("{} {}", self.auth.prefix(), token.expose())) {
                Ok(v) => v,
                // The header error names no value; neither does our outcome.
                Err(_) => {
                    return Answer {
                        attempt: Attempt::InvalidToken,
                        request_id: None,
                    };
                }
            };
        auth.set_sensitive(true);
        let mut req = self
            .client
            .post(self.endpoint.clone())
            .header(AUTHORIZATION, auth)
            .header(CONTENT_TYPE, "application/json; charset=utf-8")
            .timeout(timeout)
            .body(body);
        if gzip {
            req = req.header(CONTENT_ENCODING, "gzip");
        }
        match req.send().await {
            Ok(resp) => {
                let status = resp.status().as_u16();
                let headers = resp.headers();
                let retry_after = headers
                    .get(RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                let request_id = REQUEST_ID_HEADERS
                    .iter()
                    .find_map(|h| headers.get(*h).and_then(|v| v.to_str().ok()))
                    .map(str::to_owned);
                if !(200..300).contains(&status) {
                    // Show what the endpoint said; a short body also keeps the connection reusable.
                    let (text, _) =
                        gdfwd_aws_error::read_capped(resp, gdfwd_aws_error::ERROR_BODY_CAP).await;
                    tracing::debug!(status, body = %truncate(&text, 500), "endpoint rejected a batch");
                }
                Answer {
                    attempt: Attempt::Status {
                        status,
                        retry_after,
                    },
                    request_id,
                }
            }
            Err(e) => {
                // Redacted: reqwest quotes the URL (see `gdfwd_aws_error::chain`).
                let msg = gdfwd_aws_error::chain(&e);
                let attempt = if e.is_timeout() {
                    Attempt::Timeout(msg)
                } else if e.is_connect() {
                    Attempt::Connect(msg)
                } else {
                    Attempt::Transport(msg)
                };
                Answer {
                    attempt,
                    request_id: None,
                }
            }
        }
    }
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}
