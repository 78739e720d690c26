//! A fake Dynatrace OpenPipeline ingest endpoint for tests and benchmarks.
//!
//! [`FakeOpenPipeline::start`] listens on `127.0.0.1` port 0 twice: once with TLS (a CA and a leaf
//! certificate for `127.0.0.1`/`localhost` generated per instance, the CA handed to the client as a
//! PEM file, as a real TLS-intercepting proxy's CA would be) and once in plain HTTP. It behaves like
//! the real endpoint where the sender can observe it: it answers 202 to a valid request and
//! refuses with the status codes of the OpenPipeline ingest API reference:
//! - `POST` only (405), to an ingest path for security events (404 otherwise):
//!   `/platform/ingest/v1/security.events`, the legacy `/platform/ingest/v1/events.security` or a
//!   custom `/platform/ingest/custom/security.events/<name>`;
//! - `Authorization` as configured (401);
//! - `Content-Type: application/json`, parameters such as `charset` allowed (415 otherwise);
//! - bodies over a configurable size (413);
//! - one event object or an array of event objects, optionally gzip-compressed (400 otherwise).
//!
//! Faults are injected on demand, either scripted ([`FakeOpenPipeline::push_faults`]: the next
//! requests get these answers, in order) or at random with a seeded RNG
//! ([`FakeOpenPipeline::set_random_faults`]), so a test run is reproducible. An injected fault never
//! records the request's events: "delivered exactly once" then measures the sender alone. The
//! exception is [`Fault::AcceptThenDrop`], which is what real Dynatrace can produce: the events
//! are accepted, then the answer is lost; a correct sender resends them, so they arrive twice
//! (a duplicate, never a loss).
//!
//! Everything the fake sees is recorded with its own monotonic timestamps ([`RequestRecord`],
//! [`RecordedEvent`]), so tests assert on what the server observed (ordering, rates) rather than
//! on timings measured by the client.
//!
//! It is written against hyper directly (not an axum router) because one fault, the dropped
//! connection, needs the service to fail the connection without answering, which hyper does when the
//! service returns an error.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Frame;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// Setting up the fake failed (certificate generation, binding a port, writing the CA file).
#[derive(Debug, thiserror::Error)]
pub enum FakeError {
    #[error("generating the fake's TLS certificates: {0}")]
    Certificate(String),
    #[error("configuring TLS for the fake: {0}")]
    Tls(String),
    #[error("binding 127.0.0.1 port 0: {0}")]
    Bind(std::io::Error),
    #[error("writing the CA PEM to {path}: {source}")]
    WriteCa {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// How `Retry-After` is stated in an injected 429.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RetryAfter {
    /// `Retry-After: <seconds>`.
    Seconds(u64),
    /// `Retry-After: <HTTP date>`, this far in the future (rounded up to whole seconds by the format).
    HttpDateIn(Duration),
}

/// One injected answer instead of the normal processing of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Answer this status with a short body (500, 503, 400, ...).
    Status(u16),
    /// Answer 429, with or without `Retry-After`.
    TooManyRequests(Option<RetryAfter>),
    /// Close the connection without answering.
    Drop,
    /// Wait this long, then answer 504 (a client with a shorter timeout has given up by then).
    Slow(Duration),
    /// Answer `status` with a body of `bytes` bytes, produced only as fast as the client reads
    /// it; [`Counters::error_body_bytes`] counts what was handed to the connection.
    HugeBody { status: u16, bytes: u64 },
    /// No fault: process normally (to script "fail after N good requests").
    Pass,
    /// Process normally, and when the request is accepted (the 202 is decided and its events are
    /// recorded), close the connection instead of answering: the accepted events' answer is lost.
    /// A refused request is answered as usual.
    AcceptThenDrop,
}

/// What the fake did with one request, in arrival order.
#[derive(Debug, Clone)]
pub struct RequestRecord {
    /// When the request's head arrived (before its body was read).
    pub started: Instant,
    /// When the request's body had been read.
    pub received: Instant,
    /// The same moment on the wall clock (the clock `Retry-After` dates are read against).
    pub received_wall: SystemTime,
    /// When the answer was handed to the connection (for `Drop`: when it was dropped).
    pub answered: Instant,
    /// The status answered; `None` for a dropped connection (`Some(202)` for
    /// [`Fault::AcceptThenDrop`]: the status decided, whose answer was lost).
    pub status: Option<u16>,
    /// The injected fault, if any.
    pub fault: Option<Fault>,
    /// The `Retry-After` the fake stated, as a duration.
    pub retry_after: Option<Duration>,
    /// The wall-clock time before which a client honouring `Retry-After` must not come back.
    pub retry_not_before: Option<SystemTime>,
    /// Body bytes as sent (compressed if gzip).
    pub body_bytes: usize,
    pub gzip: bool,
    /// Events in the body when it parsed (also counted for rejected and faulted requests: a retry
    /// spends the sender's rate budget as much as a first attempt).
    pub events: usize,
    /// The request path.
    pub path: String,
}

/// One accepted event.
#[derive(Debug, Clone)]
pub struct RecordedEvent {
    /// `uuid` (raw format) or `event.id` (semantic format), when present.
    pub id: Option<String>,
    pub body: Value,
    pub received: Instant,
}

/// Totals so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    pub requests: u64,
    pub accepted_requests: u64,
    pub events: u64,
    pub faults: u64,
    pub unauthorized: u64,
    pub too_large: u64,
    /// Requests answered 400 because they held an event [`FakeOpenPipeline::refuse_events`] names.
    pub refused: u64,
    /// Requests refused for their path (404), method (405), `Content-Type` (415) or body (400:
    /// not gzip, not JSON, not an event object or an array of them).
    pub malformed: u64,
    /// Bytes of [`Fault::HugeBody`] bodies handed to connections (what a client read, plus what
    /// socket and flow-control buffers took before it stopped reading).
    pub error_body_bytes: u64,
}

#[derive(Debug)]
struct RandomFaults {
    rate: f64,
    kinds: Vec<Fault>,
    rng: StdRng,
}

#[derive(Debug)]
struct State {
    expected_auth: Option<String>,
    max_body_bytes: Option<usize>,
    scripted: VecDeque<Fault>,
    random: Option<RandomFaults>,
    requests: Vec<RequestRecord>,
    events: Vec<RecordedEvent>,
    counters: Counters,
    next_request_id: u64,
    record_events: bool,
    refuse_ids: std::collections::HashSet<String>,
    /// Shared with the [`HugeBody`] bodies in flight.
    huge_body_bytes: Arc<AtomicU64>,
}

type Shared = Arc<Mutex<State>>;

fn lock(s: &Shared) -> MutexGuard<'_, State> {
    s.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The running fake. Dropping it stops both listeners.
#[derive(Debug)]
pub struct FakeOpenPipeline {
    https: SocketAddr,
    http: SocketAddr,
    ca_pem: String,
    state: Shared,
    tasks: Vec<JoinHandle<()>>,
}

/// The path of the built-in security events endpoint.
pub const SECURITY_EVENTS_PATH: &str = "/platform/ingest/v1/security.events";

impl FakeOpenPipeline {
    /// Starts the fake expecting `Authorization: Api-Token <token>`.
    pub async fn start(token: &str) -> Result<Self, FakeError> {
        Self::start_with_auth(Some(format!("Api-Token {token}"))).await
    }

    /// Starts the fake; `expected_authorization` is the exact `Authorization` value it accepts
    /// (`None`: accept anything).
    pub async fn start_with_auth(
        expected_authorization: Option<String>,
    ) -> Result<Self, FakeError> {
        let (ca_pem, tls) = tls_config()?;
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
        let state: Shared = Arc::new(Mutex::new(State {
            expected_auth: expected_authorization,
            max_body_bytes: None,
            scripted: VecDeque::new(),
            random: None,
            requests: Vec::new(),
            events: Vec::new(),
            counters: Counters::default(),
            next_request_id: 1,
            record_events: true,
            refuse_ids: std::collections::HashSet::new(),
            huge_body_bytes: Arc::new(AtomicU64::new(0)),
        }));
        let https_l = TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(FakeError::Bind)?;
        let http_l = TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(FakeError::Bind)?;
        let https = https_l.local_addr().map_err(FakeError::Bind)?;
        let http = http_l.local_addr().map_err(FakeError::Bind)?;
        let tasks = vec![
            tokio::spawn(accept_loop(https_l, Some(acceptor), state.clone())),
            tokio::spawn(accept_loop(http_l, None, state.clone())),
        ];
        Ok(Self {
            https,
            http,
            ca_pem,
            state,
            tasks,
        })
    }

    /// `https://localhost:<port><path>` (the certificate also covers `127.0.0.1`).
    pub fn https_url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.https.port())
    }

    /// `http://127.0.0.1:<port><path>`.
    pub fn http_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.http.port())
    }

    /// The HTTPS endpoint of the built-in security events API.
    pub fn endpoint(&self) -> String {
        self.https_url(SECURITY_EVENTS_PATH)
    }

    pub fn https_addr(&self) -> SocketAddr {
        self.https
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.http
    }

    /// The CA certificate (PEM) that signed the fake's TLS certificate.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// Writes the CA PEM to `dir/fake-openpipeline-ca.pem` and returns the path.
    pub fn write_ca_file(&self, dir: &Path) -> Result<PathBuf, FakeError> {
        let path = dir.join("fake-openpipeline-ca.pem");
        std::fs::write(&path, &self.ca_pem).map_err(|source| FakeError::WriteCa {
            path: path.clone(),
            source,
        })?;
        Ok(path)
    }

    /// Changes the accepted `Authorization` value (`None`: accept anything). A sender still using
    /// the old token gets 401 from now on.
    pub fn set_expected_authorization(&self, value: Option<String>) {
        lock(&self.state).expected_auth = value;
    }

    /// Bodies larger than this (after gzip decoding) are answered 413.
    /// Answers 400 to every request holding an event with one of these ids (`uuid` or
    /// `event.id`), refusing the whole request as OpenPipeline does with invalid input.
    pub fn refuse_events(&self, ids: impl IntoIterator<Item = String>) {
        lock(&self.state).refuse_ids.extend(ids);
    }

    pub fn set_max_body_bytes(&self, max: Option<usize>) {
        lock(&self.state).max_body_bytes = max;
    }

    /// The next requests get these faults, in order, before any random fault.
    pub fn push_faults(&self, faults: impl IntoIterator<Item = Fault>) {
        lock(&self.state).scripted.extend(faults);
    }

    /// Each request (after the scripted ones) fails with probability `rate` with a fault drawn
    /// uniformly from `kinds`, using an RNG seeded with `seed`.
    pub fn set_random_faults(&self, rate: f64, seed: u64, kinds: Vec<Fault>) {
        lock(&self.state).random = Some(RandomFaults {
            rate,
            kinds,
            rng: StdRng::seed_from_u64(seed),
        });
    }

    /// `false`: count accepted events but do not keep them (benchmarks send millions).
    pub fn set_record_events(&self, record: bool) {
        lock(&self.state).record_events = record;
    }

    pub fn clear_faults(&self) {
        let mut s = lock(&self.state);
        s.scripted.clear();
        s.random = None;
    }

    pub fn counters(&self) -> Counters {
        let s = lock(&self.state);
        Counters {
            error_body_bytes: s.huge_body_bytes.load(Ordering::Relaxed),
            ..s.counters
        }
    }

    /// Every request seen, in arrival order.
    pub fn requests(&self) -> Vec<RequestRecord> {
        lock(&self.state).requests.clone()
    }

    /// Every accepted event, in arrival order.
    pub fn events(&self) -> Vec<RecordedEvent> {
        lock(&self.state).events.clone()
    }

    /// The ids of every accepted event (events without an id are left out), in arrival order.
    pub fn event_ids(&self) -> Vec<String> {
        lock(&self.state)
            .events
            .iter()
            .filter_map(|e| e.id.clone())
            .collect()
    }

    /// Accepted events per whole second since the first accepted event.
    pub fn accepted_per_second(&self) -> Vec<u64> {
        let s = lock(&self.state);
        let Some(first) = s.events.first().map(|e| e.received) else {
            return Vec::new();
        };
        let mut buckets: Vec<u64> = Vec::new();
        for e in &s.events {
            let i = usize::try_from(e.received.duration_since(first).as_secs()).unwrap_or(0);
            if buckets.len() <= i {
                buckets.resize(i + 1, 0);
            }
            buckets[i] += 1;
        }
        buckets
    }

    /// The largest number of events that arrived within any window of length `window`, counting
    /// every request whatever its answer (accepted, refused, faulted): what a sender's events per
    /// second limit must hold, retries included.
    pub fn max_sent_in_window(&self, window: Duration) -> u64 {
        let s = lock(&self.state);
        let arrivals: Vec<(Instant, u64)> = s
            .requests
            .iter()
            .map(|r| (r.received, r.events as u64))
            .collect();
        max_weight_in_window(arrivals, window)
    }

    /// The largest number of requests that arrived within any window of length `window`, whatever
    /// their answer.
    pub fn max_requests_in_window(&self, window: Duration) -> u64 {
        let s = lock(&self.state);
        let arrivals: Vec<(Instant, u64)> = s.requests.iter().map(|r| (r.started, 1)).collect();
        max_weight_in_window(arrivals, window)
    }

    /// The most requests the fake was handling at once (from each request's head arriving to its
    /// answer or drop): what a sender's in-flight limit must hold.
    pub fn max_concurrent_requests(&self) -> usize {
        let s = lock(&self.state);
        // Ends sort before starts at the same instant: back-to-back requests do not overlap.
        let mut edges: Vec<(Instant, i32)> = s
            .requests
            .iter()
            .flat_map(|r| [(r.started, 1), (r.answered, -1)])
            .collect();
        edges.sort();
        let (mut now, mut best) = (0i32, 0i32);
        for (_, d) in edges {
            now += d;
            best = best.max(now);
        }
        usize::try_from(best).unwrap_or(0)
    }

    /// The largest number of events accepted within any window of length `window` (sliding over
    /// the recorded arrival times).
    pub fn max_accepted_in_window(&self, window: Duration) -> u64 {
        let s = lock(&self.state);
        let times: Vec<Instant> = s.events.iter().map(|e| e.received).collect();
        let mut best = 0usize;
        let mut start = 0usize;
        for end in 0..times.len() {
            while times[end].duration_since(times[start]) >= window {
                start += 1;
            }
            best = best.max(end - start + 1);
        }
        best as u64
    }

    /// Time between the first and the last accepted event.
    pub fn accepted_span(&self) -> Duration {
        let s = lock(&self.state);
        match (s.events.first(), s.events.last()) {
            (Some(a), Some(b)) => b.received.duration_since(a.received),
            _ => Duration::ZERO,
        }
    }

    /// Stops accepting connections (ports are released; open connections are dropped).
    pub fn stop(&mut self) {
        for t in self.tasks.drain(..) {
            t.abort();
        }
    }
}

impl Drop for FakeOpenPipeline {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The largest total weight of the `(arrival, weight)` pairs within any window of length `window`.
fn max_weight_in_window(mut arrivals: Vec<(Instant, u64)>, window: Duration) -> u64 {
    arrivals.sort_by_key(|a| a.0);
    let (mut best, mut sum, mut start) = (0u64, 0u64, 0usize);
    for end in 0..arrivals.len() {
        sum += arrivals[end].1;
        while arrivals[end].0.duration_since(arrivals[start].0) >= window {
            sum -= arrivals[start].1;
            start += 1;
        }
        best = best.max(sum);
    }
    best
}

/// Generates a CA and a leaf for 127.0.0.1/localhost; returns the CA PEM and the server config.
fn tls_config() -> Result<(String, rustls::ServerConfig), FakeError> {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    };
    let cert_err = |e: rcgen::Error| FakeError::Certificate(e.to_string());
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(cert_err)?;
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "gdfwd fake OpenPipeline test CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_key = KeyPair::generate().map_err(cert_err)?;
    let ca_cert = ca_params.self_signed(&ca_key).map_err(cert_err)?;
    let issuer = Issuer::new(ca_params, ca_key);

    let mut leaf_params =
        CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .map_err(cert_err)?;
    leaf_params
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    let leaf_key = KeyPair::generate().map_err(cert_err)?;
    let leaf = leaf_params
        .signed_by(&leaf_key, &issuer)
        .map_err(cert_err)?;

    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into());
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| FakeError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(vec![leaf.der().clone(), ca_cert.der().clone()], key)
        .map_err(|e| FakeError::Tls(e.to_string()))?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok((ca_cert.pem(), cfg))
}

async fn accept_loop(listener: TcpListener, tls: Option<tokio_rustls::TlsAcceptor>, state: Shared) {
    loop {
        let Ok((tcp, _peer)) = listener.accept().await else {
            continue;
        };
        let state = state.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| handle(req, state.clone()));
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            match tls {
                Some(acceptor) => {
                    let Ok(stream) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let _ = builder.serve_connection(TokioIo::new(stream), svc).await;
                }
                None => {
                    let _ = builder.serve_connection(TokioIo::new(tcp), svc).await;
                }
            }
        });
    }
}

/// Returned by the service to make hyper drop the connection (the `Drop` fault).
#[derive(Debug, thiserror::Error)]
#[error("fault injected: connection dropped")]
struct DroppedByFault;

/// Every answer's body: a short one in full, or a [`HugeBody`].
type AnswerBody = BoxBody<Bytes, Infallible>;

fn answer(status: u16, body: &str) -> Response<AnswerBody> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_owned())).boxed());
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r
}

async fn handle(
    req: Request<Incoming>,
    state: Shared,
) -> Result<Response<AnswerBody>, DroppedByFault> {
    let started = Instant::now();
    let path = req.uri().path().to_owned();
    let method = req.method().clone();
    let content_type = req
        .headers()
        .get(hyper::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let auth = req
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let gzip = req
        .headers()
        .get(hyper::header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("gzip"));
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return Err(DroppedByFault),
    };
    let received = Instant::now();
    let received_wall = SystemTime::now();

    let fault = {
        let mut s = lock(&state);
        s.counters.requests += 1;
        match s.scripted.pop_front() {
            Some(f) => Some(f),
            None => match &mut s.random {
                Some(r) if !r.kinds.is_empty() => {
                    let hit = r.rng.random_bool(r.rate.clamp(0.0, 1.0));
                    let i = r.rng.random_range(0..r.kinds.len());
                    hit.then(|| r.kinds[i].clone())
                }
                _ => None,
            },
        }
    };

    let fault = fault.filter(|f| *f != Fault::Pass);
    let drop_answer = fault == Some(Fault::AcceptThenDrop);
    let mut rec = RequestRecord {
        started,
        received,
        received_wall,
        retry_not_before: None,
        answered: received,
        status: None,
        fault: fault.clone(),
        retry_after: None,
        body_bytes: body.len(),
        gzip,
        events: 0,
        path,
    };

    if let Some(f) = fault.filter(|f| *f != Fault::AcceptThenDrop) {
        rec.events = decode(&body, gzip).map_or(0, |plain| count_events(&plain));
        let result = match f {
            Fault::Status(code) => {
                rec.status = Some(code);
                Ok(answer(code, "{\"error\":\"fault injected\"}"))
            }
            Fault::TooManyRequests(ra) => {
                rec.status = Some(429);
                let mut r = answer(429, "{\"error\":\"too many requests\"}");
                let value = match ra {
                    None => None,
                    Some(RetryAfter::Seconds(s)) => {
                        rec.retry_after = Some(Duration::from_secs(s));
                        // The client reads the header after this moment, so this is a lower bound.
                        rec.retry_not_before = Some(SystemTime::now() + Duration::from_secs(s));
                        Some(s.to_string())
                    }
                    Some(RetryAfter::HttpDateIn(d)) => {
                        // HTTP dates have whole seconds: state the time rounded up, and record
                        // what the client is entitled to read from it.
                        let now = SystemTime::now();
                        let at = now + d + Duration::from_secs(1);
                        let formatted = httpdate::fmt_http_date(at);
                        let parsed = httpdate::parse_http_date(&formatted).unwrap_or(at);
                        rec.retry_after =
                            Some(parsed.duration_since(now).unwrap_or(Duration::ZERO));
                        rec.retry_not_before = Some(parsed);
                        Some(formatted)
                    }
                };
                if let Some(v) = value
                    && let Ok(hv) = hyper::header::HeaderValue::from_str(&v)
                {
                    r.headers_mut().insert(hyper::header::RETRY_AFTER, hv);
                }
                Ok(r)
            }
            Fault::Drop => Err(DroppedByFault),
            Fault::HugeBody { status, bytes } => {
                rec.status = Some(status);
                let served = lock(&state).huge_body_bytes.clone();
                let mut r = Response::new(
                    HugeBody {
                        left: bytes,
                        served,
                    }
                    .boxed(),
                );
                *r.status_mut() =
                    StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                Ok(r)
            }
            Fault::Slow(d) => {
                tokio::time::sleep(d).await;
                rec.status = Some(504);
                Ok(answer(504, "{\"error\":\"slow answer\"}"))
            }
            Fault::Pass | Fault::AcceptThenDrop => unreachable_pass(),
        };
        rec.answered = Instant::now();
        let mut s = lock(&state);
        s.counters.faults += 1;
        s.requests.push(rec);
        return result;
    }

    let mut s = lock(&state);
    let status;
    let mut resp_body = String::new();
    let mut request_id = None;
    if let Some((code, message)) = check_route(&method, &rec.path) {
        status = code;
        s.counters.malformed += 1;
        resp_body = error_envelope(code, message);
    } else if s
        .expected_auth
        .as_ref()
        .is_some_and(|e| auth.as_ref() != Some(e))
    {
        status = 401;
        s.counters.unauthorized += 1;
        resp_body.push_str(
            "{\"error\":{\"code\":401,\"message\":\"Missing or invalid authorization\"}}",
        );
    } else if !is_json(content_type.as_deref()) {
        status = 415;
        s.counters.malformed += 1;
        resp_body = error_envelope(
            415,
            &format!("Unsupported media type {content_type:?}: application/json is expected"),
        );
    } else {
        match decode(&body, gzip) {
            Err(msg) => {
                status = 400;
                s.counters.malformed += 1;
                resp_body = format!("{{\"error\":{{\"code\":400,\"message\":{msg:?}}}}}");
            }
            Ok(plain) if s.max_body_bytes.is_some_and(|m| plain.len() > m) => {
                status = 413;
                s.counters.too_large += 1;
                rec.events = count_events(&plain);
                resp_body.push_str("{\"error\":{\"code\":413,\"message\":\"Payload too large\"}}");
            }
            Ok(plain) => match serde_json::from_slice::<Value>(&plain) {
                Ok(v) if !is_events(&v) => {
                    status = 400;
                    s.counters.malformed += 1;
                    resp_body = error_envelope(
                        400,
                        "The input is invalid: expected an event object or an array of event objects",
                    );
                }
                Ok(v) => {
                    let events: Vec<Value> = match v {
                        Value::Array(a) => a,
                        other => vec![other],
                    };
                    rec.events = events.len();
                    if let Some(bad) = events
                        .iter()
                        .filter_map(event_id)
                        .find(|id| s.refuse_ids.contains(id))
                    {
                        s.counters.refused += 1;
                        let r = answer(
                            400,
                            &format!(
                                "{{\"error\":{{\"code\":400,\"message\":\"invalid event {bad}\"}}}}"
                            ),
                        );
                        rec.status = Some(400);
                        rec.answered = Instant::now();
                        s.requests.push(rec);
                        return Ok(r);
                    }
                    let keep = if s.record_events { events } else { Vec::new() };
                    for e in keep {
                        let id = event_id(&e);
                        s.events.push(RecordedEvent {
                            id,
                            body: e,
                            received,
                        });
                    }
                    s.counters.events += rec.events as u64;
                    s.counters.accepted_requests += 1;
                    status = 202;
                    let id = s.next_request_id;
                    s.next_request_id += 1;
                    request_id = Some(format!("fake-{id}"));
                }
                Err(e) => {
                    status = 400;
                    s.counters.malformed += 1;
                    resp_body = format!(
                        "{{\"error\":{{\"code\":400,\"message\":{:?}}}}}",
                        e.to_string()
                    );
                }
            },
        }
    }
    let mut r = answer(status, &resp_body);
    if let Some(id) = request_id
        && let Ok(hv) = hyper::header::HeaderValue::from_str(&id)
    {
        r.headers_mut().insert("dt-request-id", hv);
    }
    rec.status = Some(status);
    rec.answered = Instant::now();
    if drop_answer {
        s.counters.faults += 1;
    }
    s.requests.push(rec);
    if drop_answer && status == 202 {
        return Err(DroppedByFault);
    }
    Ok(r)
}

/// Dynatrace's error body: `{"error": {"code": ..., "message": ...}}`.
fn error_envelope(code: u16, message: &str) -> String {
    serde_json::json!({"error": {"code": code, "message": message}}).to_string()
}

/// The refusal for a request that is not a `POST` to a security events ingest path.
fn check_route(method: &hyper::Method, path: &str) -> Option<(u16, &'static str)> {
    let custom = path
        .strip_prefix("/platform/ingest/custom/security.events/")
        .is_some_and(|name| !name.is_empty() && !name.contains('/'));
    let builtin = path == SECURITY_EVENTS_PATH || path == "/platform/ingest/v1/events.security";
    if !(builtin || custom) {
        return Some((404, "Failed. Endpoint not found."));
    }
    (*method != hyper::Method::POST).then_some((405, "Method not allowed"))
}

/// `application/json`, with or without parameters (`; charset=utf-8`), in any case.
fn is_json(content_type: Option<&str>) -> bool {
    content_type.is_some_and(|ct| {
        ct.split(';')
            .next()
            .is_some_and(|media| media.trim().eq_ignore_ascii_case("application/json"))
    })
}

/// One event object, or an array of event objects.
fn is_events(v: &Value) -> bool {
    match v {
        Value::Object(_) => true,
        Value::Array(a) => a.iter().all(Value::is_object),
        _ => false,
    }
}

/// A body of `left` more bytes, made chunk by chunk as the connection asks for them, counting
/// each chunk handed over: a client that stops reading stops the count.
struct HugeBody {
    left: u64,
    served: Arc<AtomicU64>,
}

static FILLER: [u8; 16 * 1024] = [b'x'; 16 * 1024];

impl hyper::body::Body for HugeBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.left == 0 {
            return Poll::Ready(None);
        }
        let n = usize::try_from(self.left).map_or(FILLER.len(), |l| l.min(FILLER.len()));
        self.left -= n as u64;
        self.served.fetch_add(n as u64, Ordering::Relaxed);
        Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(&FILLER[..n])))))
    }
}

/// `Pass` is filtered out before faults are applied.
fn unreachable_pass() -> Result<Response<AnswerBody>, DroppedByFault> {
    Ok(answer(500, "{\"error\":\"internal: Pass fault applied\"}"))
}

fn decode(body: &[u8], gzip: bool) -> Result<Vec<u8>, String> {
    if !gzip {
        return Ok(body.to_vec());
    }
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(body)
        .read_to_end(&mut out)
        .map_err(|e| format!("invalid gzip body: {e}"))?;
    Ok(out)
}

fn count_events(plain: &[u8]) -> usize {
    match serde_json::from_slice::<Value>(plain) {
        Ok(Value::Array(a)) => a.len(),
        Ok(_) => 1,
        Err(_) => 0,
    }
}

/// `uuid` for raw events, `event.id` (flat key, or nested) for semantic ones.
fn event_id(e: &Value) -> Option<String> {
    let s = |v: Option<&Value>| v.and_then(Value::as_str).map(str::to_owned);
    s(e.get("uuid"))
        .or_else(|| s(e.get("event.id")))
        .or_else(|| s(e.get("event").and_then(|ev| ev.get("id"))))
}
