//! A fault-injecting, request-counting HTTP proxy in front of moto.
//!
//! Tests point an SDK client at [`FaultProxy::endpoint`]; the proxy forwards every request to the
//! upstream (moto) unchanged — including the `Host` header, so SigV4 signatures stay as signed —
//! unless a fault rule matches, in which case it answers itself with the error AWS would send
//! (throttling, 500, 503) in the request's protocol (JSON for `X-Amz-Target` services such as
//! DynamoDB, Organizations, Secrets Manager; XML for query services such as STS and IAM).
//!
//! Requests are counted by *operation*: the `X-Amz-Target` header when present (e.g.
//! `DynamoDB_20120810.PutItem`), else `<service>.<Action>` from the SigV4 credential scope and the
//! form body (e.g. `sts.AssumeRole`), else `<service>.<Operation>` from a Smithy RPC v2 path, else
//! `<METHOD> <path>`. [`FaultProxy::count`] sums the operations containing a substring, so
//! `count("UpdateItem")` or `count("AssumeRole")` work whatever the protocol.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::Response;
use tokio::task::JoinHandle;

/// An error the proxy answers with instead of forwarding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// HTTP 400 `ThrottlingException` (JSON protocols) or `Throttling` (query protocols).
    Throttling,
    /// HTTP 400 DynamoDB `ProvisionedThroughputExceededException`.
    ProvisionedThroughputExceeded,
    /// HTTP 500 `InternalServerError` / `InternalFailure`.
    InternalError,
    /// HTTP 503 `ServiceUnavailable`.
    ServiceUnavailable,
    /// HTTP 403 `AccessDeniedException` (JSON protocols) or `AccessDenied` (query protocols): a
    /// permission the caller lacks.
    AccessDenied,
    /// Forwarded and answered with the upstream's status and headers, but the body stops after
    /// this many bytes and the connection breaks: a download cut mid-body.
    CutBody(usize),
}

impl Fault {
    fn status_and_code(&self, dynamodb: bool, json: bool) -> (StatusCode, &'static str) {
        match self {
            Self::Throttling if dynamodb => (StatusCode::BAD_REQUEST, "ThrottlingException"),
            Self::Throttling => (StatusCode::BAD_REQUEST, "Throttling"),
            Self::ProvisionedThroughputExceeded => (
                StatusCode::BAD_REQUEST,
                "ProvisionedThroughputExceededException",
            ),
            Self::InternalError if dynamodb => {
                (StatusCode::INTERNAL_SERVER_ERROR, "InternalServerError")
            }
            Self::InternalError => (StatusCode::INTERNAL_SERVER_ERROR, "InternalFailure"),
            Self::ServiceUnavailable => (StatusCode::SERVICE_UNAVAILABLE, "ServiceUnavailable"),
            Self::AccessDenied if json => (StatusCode::FORBIDDEN, "AccessDeniedException"),
            Self::AccessDenied => (StatusCode::FORBIDDEN, "AccessDenied"),
            // Never answered with an error document (see `cut`); a 500 if it were.
            Self::CutBody(_) => (StatusCode::INTERNAL_SERVER_ERROR, "InternalFailure"),
        }
    }
}

#[derive(Debug)]
struct Rule {
    fault: Fault,
    /// Only requests whose operation contains this substring.
    only: Option<String>,
    /// How many more requests this rule answers; `None` = forever.
    remaining: Option<u64>,
    /// Forward the request first (it takes effect upstream), then answer with the fault: an
    /// answer lost after the write, as a timeout or a 5xx after commit looks to a client.
    after_forward: bool,
    /// Only requests whose body contains this text (e.g. one account id in an AssumeRole).
    body: Option<String>,
}

#[derive(Debug, Default)]
struct Counters {
    by_operation: BTreeMap<String, u64>,
    faulted_by_operation: BTreeMap<String, u64>,
}

#[derive(Debug)]
struct Inner {
    upstream: String,
    client: reqwest::Client,
    rules: Mutex<Vec<Rule>>,
    counters: Mutex<Counters>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panicking test thread must not make every later assertion panic too.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A running proxy; stops when dropped. Must be created inside the test's tokio runtime.
#[derive(Debug)]
pub struct FaultProxy {
    addr: SocketAddr,
    inner: Arc<Inner>,
    task: JoinHandle<()>,
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FaultProxy {
    /// A proxy in front of this process's moto ([`crate::endpoint`]).
    pub async fn start_moto() -> Self {
        Self::start(crate::endpoint()).await
    }

    /// A proxy on `127.0.0.1:0` forwarding to `upstream` (e.g. `http://127.0.0.1:5000`).
    ///
    /// # Panics
    /// When it cannot bind a local port or build its HTTP client.
    pub async fn start(upstream: impl Into<String>) -> Self {
        let upstream = upstream.into().trim_end_matches('/').to_owned();
        let client = reqwest::Client::builder()
            // Bytes pass through untouched: the SDK checks DynamoDB's x-amz-crc32 over them.
            .no_gzip()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("FaultProxy: building the forwarding HTTP client");
        let inner = Arc::new(Inner {
            upstream,
            client,
            rules: Mutex::new(Vec::new()),
            counters: Mutex::new(Counters::default()),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("FaultProxy: binding 127.0.0.1:0");
        let addr = listener
            .local_addr()
            .expect("FaultProxy: reading the bound address");
        let app = Router::new().fallback(handle).with_state(inner.clone());
        let task = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!(error = %e, "FaultProxy server stopped");
            }
        });
        Self { addr, inner, task }
    }

    /// The URL to give an SDK client (`http://127.0.0.1:PORT`).
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Answers the next `n` requests whose operation contains `only` (all requests when `None`)
    /// with `fault`.
    pub fn fail_next(&self, n: u64, fault: Fault, only: Option<&str>) {
        lock(&self.inner.rules).push(Rule {
            fault,
            only: only.map(str::to_owned),
            remaining: Some(n),
            after_forward: false,
            body: None,
        });
    }

    /// Forwards the next `n` requests whose operation contains `only` to the upstream, where
    /// they take effect, but answers them with `fault`: the write happened, its answer was lost.
    pub fn lose_next_answers(&self, n: u64, fault: Fault, only: Option<&str>) {
        lock(&self.inner.rules).push(Rule {
            fault,
            only: only.map(str::to_owned),
            remaining: Some(n),
            after_forward: true,
            body: None,
        });
    }

    /// Cuts the bodies of the next `n` answers whose operation contains `only` after `after`
    /// bytes ([`Fault::CutBody`]); e.g. `only = "GET /bucket/"` for S3 downloads.
    pub fn cut_next_bodies(&self, n: u64, after: usize, only: &str) {
        self.lose_next_answers(n, Fault::CutBody(after), Some(only));
    }

    /// Answers every request whose operation contains `only` (all when `None`) with `fault`,
    /// until [`FaultProxy::clear_faults`].
    pub fn fail_always(&self, fault: Fault, only: Option<&str>) {
        lock(&self.inner.rules).push(Rule {
            fault,
            only: only.map(str::to_owned),
            remaining: None,
            after_forward: false,
            body: None,
        });
    }

    /// Like [`FaultProxy::fail_always`], only for requests of operation `only` whose body
    /// contains `body` (as sent: form bodies are URL-encoded), e.g. the AssumeRole of one account.
    pub fn fail_always_matching(&self, fault: Fault, only: &str, body: &str) {
        lock(&self.inner.rules).push(Rule {
            fault,
            only: Some(only.to_owned()),
            remaining: None,
            after_forward: false,
            body: Some(body.to_owned()),
        });
    }

    /// Removes every fault rule; requests are forwarded again.
    pub fn clear_faults(&self) {
        lock(&self.inner.rules).clear();
    }

    /// Requests received (forwarded or faulted) whose operation contains `op`.
    pub fn count(&self, op: &str) -> u64 {
        lock(&self.inner.counters)
            .by_operation
            .iter()
            .filter(|(k, _)| k.contains(op))
            .map(|(_, v)| v)
            .sum()
    }

    /// Requests answered with a fault whose operation contains `op`.
    pub fn faulted(&self, op: &str) -> u64 {
        lock(&self.inner.counters)
            .faulted_by_operation
            .iter()
            .filter(|(k, _)| k.contains(op))
            .map(|(_, v)| v)
            .sum()
    }

    /// Every request received, by operation.
    pub fn counts(&self) -> BTreeMap<String, u64> {
        lock(&self.inner.counters).by_operation.clone()
    }

    /// All requests received.
    pub fn total(&self) -> u64 {
        lock(&self.inner.counters).by_operation.values().sum()
    }

    /// Forgets the counts (fault rules stay).
    pub fn reset_counts(&self) {
        *lock(&self.inner.counters) = Counters::default();
    }
}

/// The SigV4 credential scope's service (`Credential=AKID/DATE/REGION/SERVICE/aws4_request`).
fn signed_service(headers: &HeaderMap) -> Option<String> {
    let auth = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let cred = auth.split("Credential=").nth(1)?;
    let scope = cred.split([',', ' ']).next()?;
    scope.split('/').nth(3).map(str::to_owned)
}

fn form_action(body: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(body).ok()?;
    text.split('&')
        .find_map(|kv| kv.strip_prefix("Action="))
        .map(str::to_owned)
}

fn operation(method: &str, path: &str, headers: &HeaderMap, body: &[u8]) -> String {
    if let Some(t) = headers.get("x-amz-target").and_then(|v| v.to_str().ok()) {
        return t.to_owned();
    }
    let service = signed_service(headers);
    if let Some(action) = form_action(body) {
        return format!("{}.{action}", service.as_deref().unwrap_or("unknown"));
    }
    // Smithy RPC v2: /service/<Service>/operation/<Operation>
    let parts: Vec<&str> = path.split('/').collect();
    if let [_, "service", svc, "operation", op, ..] = parts.as_slice() {
        return format!("{svc}.{op}");
    }
    format!("{method} {path}")
}

const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
];

fn is_hop_by_hop(name: &HeaderName) -> bool {
    HOP_BY_HOP.contains(&name.as_str())
}

fn plain(status: StatusCode, msg: String) -> Response {
    let mut r = Response::new(Body::from(msg));
    *r.status_mut() = status;
    r
}

async fn handle(State(inner): State<Arc<Inner>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let body = match axum::body::to_bytes(body, 256 * 1024 * 1024).await {
        Ok(b) => b,
        Err(e) => {
            return plain(
                StatusCode::BAD_REQUEST,
                format!("FaultProxy: reading the request body: {e}"),
            );
        }
    };
    let path_and_query = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    let op = operation(
        parts.method.as_str(),
        parts.uri.path(),
        &parts.headers,
        &body,
    );
    *lock(&inner.counters)
        .by_operation
        .entry(op.clone())
        .or_default() += 1;

    let fault = {
        let mut rules = lock(&inner.rules);
        let text = String::from_utf8_lossy(&body);
        let hit = rules.iter_mut().find(|r| {
            r.remaining != Some(0)
                && r.only.as_deref().is_none_or(|s| op.contains(s))
                && r.body.as_deref().is_none_or(|b| text.contains(b))
        });
        hit.map(|r| {
            if let Some(n) = r.remaining.as_mut() {
                *n -= 1;
            }
            (r.fault.clone(), r.after_forward)
        })
    };
    if let Some((fault, after_forward)) = &fault {
        *lock(&inner.counters)
            .faulted_by_operation
            .entry(op.clone())
            .or_default() += 1;
        if !after_forward {
            return fault_response(fault, &parts.headers, &op);
        }
    }

    let url = format!("{}{path_and_query}", inner.upstream);
    let mut fwd = inner.client.request(parts.method.clone(), &url);
    for (name, value) in &parts.headers {
        if !is_hop_by_hop(name) {
            fwd = fwd.header(name, value);
        }
    }
    let resp = match fwd.body(body).send().await {
        Ok(r) => r,
        Err(e) => {
            return plain(
                StatusCode::BAD_GATEWAY,
                format!("FaultProxy: forwarding {op} to {url}: {e}"),
            );
        }
    };
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = match resp.bytes().await {
        Ok(b) => b,
        Err(e) => {
            return plain(
                StatusCode::BAD_GATEWAY,
                format!("FaultProxy: reading {op}'s response from {url}: {e}"),
            );
        }
    };
    let (body, length) = match &fault {
        Some((Fault::CutBody(after), _)) => (cut(&bytes, *after), Some(bytes.len() as u64)),
        Some((fault, true)) => return fault_response(fault, &parts.headers, &op),
        _ => (Body::from(bytes), None),
    };
    let mut out = Response::new(body);
    *out.status_mut() = status;
    for (name, value) in &headers {
        if !is_hop_by_hop(name) {
            out.headers_mut().append(name, value.clone());
        }
    }
    if let Some(n) = length {
        // The full length is announced, so the client sees the cut as a broken body.
        out.headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from(n));
    }
    out
}

/// A body that yields the first `after` bytes of `bytes` and then fails, which makes the server
/// drop the connection mid-body (the caller announces the full length). The failure comes a
/// moment after the bytes, so the server has flushed them (and the head) before it drops the
/// connection; otherwise the client could see no answer at all instead of a broken one.
fn cut(bytes: &bytes::Bytes, after: usize) -> Body {
    use futures::StreamExt;
    let head = bytes.slice(..after.min(bytes.len()));
    let sent = futures::stream::once(async move { Ok::<_, std::io::Error>(head) });
    let broken = futures::stream::once(async {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        Err(std::io::Error::other("FaultProxy: body cut"))
    });
    Body::from_stream(sent.chain(broken))
}

fn fault_response(fault: &Fault, headers: &HeaderMap, op: &str) -> Response {
    let json = headers.contains_key("x-amz-target");
    let dynamodb = op.starts_with("DynamoDB");
    let (status, code) = fault.status_and_code(dynamodb, json);
    let message = format!("injected by FaultProxy ({code} for {op})");
    let (content_type, body) = if json {
        let ty = if dynamodb {
            format!("com.amazonaws.dynamodb.v20120810#{code}")
        } else {
            code.to_owned()
        };
        (
            "application/x-amz-json-1.0",
            format!(r#"{{"__type":"{ty}","message":"{message}"}}"#),
        )
    } else {
        let kind = if status.is_server_error() {
            "Receiver"
        } else {
            "Sender"
        };
        (
            "text/xml",
            format!(
                "<ErrorResponse><Error><Type>{kind}</Type><Code>{code}</Code><Message>{message}</Message></Error>\
                 <RequestId>fault-proxy</RequestId></ErrorResponse>"
            ),
        )
    };
    let mut r = Response::new(Body::from(body));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r.headers_mut().insert(
        HeaderName::from_static("x-amzn-requestid"),
        HeaderValue::from_static("fault-proxy"),
    );
    if json {
        r.headers_mut().insert(
            HeaderName::from_static("x-amzn-errortype"),
            HeaderValue::from_str(code).unwrap_or(HeaderValue::from_static("Unknown")),
        );
    }
    r
}
