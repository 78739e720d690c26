//! A fake Amazon GuardDuty API for tests and benchmarks: moto has no GuardDuty findings API.
//!
//! It serves the operations backfill and doctor use, over GuardDuty's REST JSON protocol with its
//! camelCase wire names (checked against the botocore service model):
//! - `GET /detector` (`ListDetectors`) → `{"detectorIds": [...]}`;
//! - `POST /detector/{detectorId}/findings` (`ListFindings`) with `findingCriteria.criterion`
//!   (`eq`/`neq`/`equals`/`notEquals` lists, `gt`/`gte`/`lt`/`lte` and the long forms), `sortCriteria
//!   {attributeName, orderBy}`, `maxResults` (≤ 50) and `nextToken`;
//! - `POST /detector/{detectorId}/findings/get` (`GetFindings`, ≤ 50 ids) → `{"findings": [...]}`;
//! - and, in `admin.rs`, the administrator's reads `gdfwd doctor` makes (`GetDetector`,
//!   `ListMembers`, `DescribeOrganizationConfiguration`, `ListOrganizationAdminAccounts`).
//!
//! One server plays every region: the region is read from the SigV4 credential scope of the
//! `Authorization` header, the way the real endpoint's region is implied by its host name, so a
//! client pointed at it through `AWS_ENDPOINT_URL_GUARDDUTY` exercises its real signing code, and
//! the signature is verified against the credentials the fake accepts ([`sigv4`]).
//!
//! Faults a test can inject: throttling (`429 TooManyRequestsException`, the next N requests or a
//! seeded random share), a `ListFindings` page that hands back the token it was given (a client
//! that does not detect it loops forever), per-request latency, and error answers with a huge body
//! made only as fast as the client reads it. Same-`updatedAt` ties across
//! page boundaries are a property of the data: see [`fixtures::GenSpec::tie_every`].
//!
//! Pagination tokens are offsets into the query's result sorted by the sort attribute, then by id
//! (a stable order, so ties are ordered the same way on every call).

mod admin;
pub mod fixtures;
mod sigv4;

pub use sigv4::{TEST_ACCESS_KEY_ID, TEST_SECRET_ACCESS_KEY};

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use gdfwd_model::Timestamp;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Map, Value, json};
use thiserror::Error;

/// Most ids `ListFindings` returns and `GetFindings` accepts at once.
pub const MAX_RESULTS: usize = 50;

#[derive(Debug, Error)]
pub enum FakeError {
    #[error("binding the fake GuardDuty server on 127.0.0.1: {0}")]
    Bind(std::io::Error),
    #[error("finding has no string `{field}`: {finding}")]
    BadFinding {
        field: &'static str,
        finding: String,
    },
}

/// Per-operation request counts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters {
    pub list_detectors: u64,
    pub list_findings: u64,
    pub get_findings: u64,
    /// Requests answered with 429.
    pub throttled: u64,
    /// Requests answered with 400/403/404.
    pub rejected: u64,
    /// Findings returned by `GetFindings`.
    pub findings_returned: u64,
    /// Bytes of [`FakeGuardDuty::huge_error_next`] bodies handed to connections (what a client
    /// read, plus what socket buffers took before it stopped reading).
    pub error_body_bytes: u64,
}

#[derive(Debug, Default)]
struct RegionData {
    detector_id: String,
    findings: HashMap<String, Value>,
}

#[derive(Debug)]
struct Faults {
    throttle_next: u64,
    throttle_rate: f64,
    rng: StdRng,
    /// Answer the Nth `ListFindings` page (1-based, counted over the server's life) with the token
    /// it was called with.
    repeat_token_at: Option<u64>,
    latency: Duration,
    /// The next this many requests are answered 500 with a body of `huge_error_bytes` bytes.
    huge_errors_next: u64,
    huge_error_bytes: u64,
}

impl Default for Faults {
    fn default() -> Self {
        Self {
            throttle_next: 0,
            throttle_rate: 0.0,
            rng: StdRng::seed_from_u64(0),
            repeat_token_at: None,
            latency: Duration::ZERO,
            huge_errors_next: 0,
            huge_error_bytes: 0,
        }
    }
}

#[derive(Debug, Default)]
struct Inner {
    regions: BTreeMap<String, RegionData>,
    faults: Faults,
    counters: Counters,
    /// (region, when) of every request, for rate checks.
    calls: Vec<(String, Instant)>,
}

#[derive(Debug, Default)]
struct Shared(Mutex<Inner>, Arc<AtomicU64>);

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The running fake. Stops when dropped.
#[derive(Debug)]
pub struct FakeGuardDuty {
    addr: SocketAddr,
    shared: Arc<Shared>,
    keys: Arc<sigv4::Keyring>,
    admin: Arc<admin::AdminState>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

impl FakeGuardDuty {
    /// Starts on 127.0.0.1 on a free port. Must be called inside a tokio runtime.
    pub async fn start() -> Result<Self, FakeError> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(FakeError::Bind)?;
        let addr = listener.local_addr().map_err(FakeError::Bind)?;
        let shared = Arc::new(Shared::default());
        let keys = Arc::new(sigv4::Keyring::with_test_key());
        let admin = Arc::new(admin::AdminState::default());
        let app = Router::new()
            .merge(admin::routes(shared.clone(), admin.clone()))
            .route("/detector", get(list_detectors))
            .route("/detector/{detector_id}/findings", post(list_findings))
            .route("/detector/{detector_id}/findings/get", post(get_findings))
            .route("/listRegions", post(list_regions))
            .fallback(not_found)
            .with_state(shared.clone())
            .layer(axum::middleware::from_fn_with_state(
                (shared.clone(), keys.clone()),
                sigv4::verify,
            ));
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let serve = axum::serve(listener, app).with_graceful_shutdown(async move {
                let _ = rx.await;
            });
            if let Err(e) = serve.await {
                tracing::warn!(error = %e, "fake GuardDuty server stopped with an error");
            }
        });
        Ok(Self {
            addr,
            shared,
            keys,
            admin,
            shutdown: Some(tx),
        })
    }

    /// `http://127.0.0.1:PORT`: the value for `AWS_ENDPOINT_URL_GUARDDUTY`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Also accepts requests signed with these credentials (a session token makes them temporary
    /// ones: requests must then carry exactly that token). [`TEST_ACCESS_KEY_ID`] is accepted from
    /// the start.
    pub fn accept_credentials(
        &self,
        access_key_id: &str,
        secret_access_key: &str,
        session_token: Option<&str>,
    ) {
        self.keys
            .insert(access_key_id, secret_access_key, session_token);
    }

    /// Adds a detector to `region` (one per region, as GuardDuty has) and returns its id.
    pub fn ensure_detector(&self, region: &str) -> String {
        let mut inner = self.shared.lock();
        detector_of(&mut inner, region)
    }

    /// The detector id of `region`, if it has one.
    pub fn detector_id(&self, region: &str) -> Option<String> {
        self.shared
            .lock()
            .regions
            .get(region)
            .map(|r| r.detector_id.clone())
    }

    /// Inserts or replaces findings (by `id`) in the region each names, creating detectors.
    pub fn put_findings(
        &self,
        findings: impl IntoIterator<Item = Value>,
    ) -> Result<usize, FakeError> {
        let mut inner = self.shared.lock();
        let mut n = 0;
        for f in findings {
            let region = str_field(&f, "region")?.to_owned();
            let id = str_field(&f, "id")?.to_owned();
            detector_of(&mut inner, &region);
            if let Some(r) = inner.regions.get_mut(&region) {
                r.findings.insert(id, f);
                n += 1;
            }
        }
        Ok(n)
    }

    /// Every finding held, in no particular order.
    pub fn findings(&self) -> Vec<Value> {
        self.shared
            .lock()
            .regions
            .values()
            .flat_map(|r| r.findings.values().cloned())
            .collect()
    }

    /// The next `n` requests are answered `429 TooManyRequestsException`.
    pub fn throttle_next(&self, n: u64) {
        self.shared.lock().faults.throttle_next = n;
    }

    /// A share `rate` (0..=1) of requests is throttled, drawn from a generator seeded with `seed`.
    pub fn set_throttle_rate(&self, rate: f64, seed: u64) {
        let mut inner = self.shared.lock();
        inner.faults.throttle_rate = rate.clamp(0.0, 1.0);
        inner.faults.rng = StdRng::seed_from_u64(seed);
    }

    /// The `nth` (1-based, counted from now) `ListFindings` call that was given a token answers with
    /// that same token.
    pub fn repeat_page_token_at(&self, nth: u64) {
        let mut inner = self.shared.lock();
        let seen = inner.counters.list_findings;
        inner.faults.repeat_token_at = Some(seen + nth);
    }

    /// The next `n` requests are answered `500 InternalServerErrorException` with a body of
    /// `bytes` bytes, produced as the client reads it ([`Counters::error_body_bytes`]).
    pub fn huge_error_next(&self, n: u64, bytes: u64) {
        let mut inner = self.shared.lock();
        inner.faults.huge_errors_next = n;
        inner.faults.huge_error_bytes = bytes;
    }

    /// Every request waits this long before it is answered.
    pub fn set_latency(&self, latency: Duration) {
        self.shared.lock().faults.latency = latency;
    }

    pub fn counters(&self) -> Counters {
        Counters {
            error_body_bytes: self.shared.1.load(Ordering::Relaxed),
            ..self.shared.lock().counters.clone()
        }
    }

    /// The most requests for `region` seen within any window of length `window`.
    pub fn max_calls_in_window(&self, region: &str, window: Duration) -> usize {
        let inner = self.shared.lock();
        let times: Vec<Instant> = inner
            .calls
            .iter()
            .filter(|(r, _)| r == region)
            .map(|(_, t)| *t)
            .collect();
        let mut best = 0;
        let mut lo = 0;
        for hi in 0..times.len() {
            while times[hi].duration_since(times[lo]) >= window {
                lo += 1;
            }
            best = best.max(hi - lo + 1);
        }
        best
    }

    pub fn stop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

impl Drop for FakeGuardDuty {
    fn drop(&mut self) {
        self.stop();
    }
}

fn str_field<'a>(f: &'a Value, field: &'static str) -> Result<&'a str, FakeError> {
    f.get(field)
        .and_then(Value::as_str)
        .ok_or_else(|| FakeError::BadFinding {
            field,
            finding: f.to_string().chars().take(200).collect(),
        })
}

fn detector_of(inner: &mut Inner, region: &str) -> String {
    inner
        .regions
        .entry(region.to_owned())
        .or_insert_with(|| RegionData {
            detector_id: fixtures::hex_id(&format!("detector\n{region}")),
            findings: HashMap::new(),
        })
        .detector_id
        .clone()
}

// ---------------------------------------------------------------------------------------------
// Handlers

fn error(status: StatusCode, kind: &str, message: impl Into<String>) -> Response {
    let message = message.into();
    (
        status,
        [
            ("x-amzn-ErrorType", kind.to_owned()),
            ("content-type", "application/json".to_owned()),
        ],
        json!({"message": message, "__type": kind}).to_string(),
    )
        .into_response()
}

/// A 500 whose body of `bytes` bytes is made 16 KiB at a time as the connection asks for it,
/// each chunk counted in `served`.
fn huge_error(bytes: u64, served: &Arc<AtomicU64>) -> Response {
    static FILLER: [u8; 16 * 1024] = [b'x'; 16 * 1024];
    let served = Arc::clone(served);
    let chunk = FILLER.len() as u64;
    let chunks = (0..bytes.div_ceil(chunk)).map(move |i| {
        let n = chunk.min(bytes - i * chunk);
        served.fetch_add(n, Ordering::Relaxed);
        Ok::<_, std::convert::Infallible>(Bytes::from_static(
            &FILLER[..usize::try_from(n).unwrap_or(FILLER.len())],
        ))
    });
    let body = axum::body::Body::from_stream(futures::stream::iter(chunks));
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        [("x-amzn-ErrorType", "InternalServerErrorException")],
        body,
    )
        .into_response()
}

fn ok(body: Value) -> Response {
    (
        StatusCode::OK,
        [("content-type", "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// The region of the SigV4 credential scope: `Credential=AKID/20250101/REGION/guardduty/aws4_request`.
fn region_of(headers: &HeaderMap) -> Option<String> {
    let auth = headers.get("authorization")?.to_str().ok()?;
    let cred = auth.split("Credential=").nth(1)?;
    let scope = cred.split([',', ' ']).next()?;
    let parts: Vec<&str> = scope.split('/').collect();
    match parts.as_slice() {
        [_, _, region, "guardduty", _] => Some((*region).to_owned()),
        _ => None,
    }
}

/// Common request bookkeeping: auth, region, latency, throttling. `Err` is the response to send.
async fn admit(
    shared: &Shared,
    headers: &HeaderMap,
    count: fn(&mut Counters),
) -> Result<String, Response> {
    let latency = shared.lock().faults.latency;
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let mut inner = shared.lock();
    count(&mut inner.counters);
    let Some(region) = region_of(headers) else {
        inner.counters.rejected += 1;
        return Err(error(
            StatusCode::FORBIDDEN,
            "UnrecognizedClientException",
            "missing or malformed SigV4 Authorization header (no guardduty credential scope)",
        ));
    };
    inner.calls.push((region.clone(), Instant::now()));
    if inner.faults.huge_errors_next > 0 {
        inner.faults.huge_errors_next -= 1;
        return Err(huge_error(inner.faults.huge_error_bytes, &shared.1));
    }
    let throttle = if inner.faults.throttle_next > 0 {
        inner.faults.throttle_next -= 1;
        true
    } else {
        let rate = inner.faults.throttle_rate;
        rate > 0.0 && inner.faults.rng.random_bool(rate)
    };
    if throttle {
        inner.counters.throttled += 1;
        return Err(error(
            StatusCode::TOO_MANY_REQUESTS,
            "TooManyRequestsException",
            "Rate exceeded",
        ));
    }
    Ok(region)
}

fn bad_request(shared: &Shared, message: impl Into<String>) -> Response {
    shared.lock().counters.rejected += 1;
    error(StatusCode::BAD_REQUEST, "BadRequestException", message)
}

async fn not_found(State(shared): State<Arc<Shared>>) -> Response {
    shared.lock().counters.rejected += 1;
    error(
        StatusCode::NOT_FOUND,
        "ResourceNotFoundException",
        "no such operation in the fake GuardDuty",
    )
}

/// `account:ListRegions` (`POST /listRegions`): the regions that have a detector, as enabled.
/// Served here so `--regions all-enabled` can be tested against one fake.
async fn list_regions(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    let signed_for_account = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("/account/aws4_request"));
    if !signed_for_account {
        shared.lock().counters.rejected += 1;
        return error(
            StatusCode::FORBIDDEN,
            "UnrecognizedClientException",
            "ListRegions must be signed for the account service",
        );
    }
    let inner = shared.lock();
    let regions: Vec<Value> = inner
        .regions
        .keys()
        .map(|r| json!({"regionName": r, "regionOptStatus": "ENABLED_BY_DEFAULT"}))
        .collect();
    ok(json!({ "regions": regions }))
}

async fn list_detectors(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    let region = match admit(&shared, &headers, |c| c.list_detectors += 1).await {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    let inner = shared.lock();
    let ids: Vec<String> = inner
        .regions
        .get(&region)
        .map(|r| vec![r.detector_id.clone()])
        .unwrap_or_default();
    ok(json!({ "detectorIds": ids }))
}

fn parse_body(body: &Bytes) -> Result<Map<String, Value>, String> {
    if body.is_empty() {
        return Ok(Map::new());
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err("request body is not a JSON object".to_owned()),
        Err(e) => Err(format!("request body is not valid JSON: {e}")),
    }
}

fn unknown_detector(shared: &Shared, detector_id: &str) -> Response {
    bad_request(
        shared,
        format!(
            "The request is rejected because the input detectorId is not owned by the current account: {detector_id}"
        ),
    )
}

async fn list_findings(
    State(shared): State<Arc<Shared>>,
    Path(detector_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let region = match admit(&shared, &headers, |c| c.list_findings += 1).await {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    let req = match parse_body(&body) {
        Ok(r) => r,
        Err(e) => return bad_request(&shared, e),
    };
    let max_results = match req.get("maxResults") {
        None => MAX_RESULTS,
        Some(v) => match v.as_u64() {
            Some(n @ 1..=50) => usize::try_from(n).unwrap_or(MAX_RESULTS),
            _ => {
                return bad_request(
                    &shared,
                    format!("maxResults must be between 1 and 50, got {v}"),
                );
            }
        },
    };
    let criteria = match req.get("findingCriteria").map(Criteria::parse).transpose() {
        Ok(c) => c.unwrap_or_default(),
        Err(e) => return bad_request(&shared, e),
    };
    let sort = match req.get("sortCriteria").map(SortCriteria::parse).transpose() {
        Ok(s) => s,
        Err(e) => return bad_request(&shared, e),
    };
    let token = req.get("nextToken").and_then(Value::as_str);
    let offset = match token {
        None | Some("") => 0,
        Some(t) => match t
            .strip_prefix("page-")
            .and_then(|n| n.parse::<usize>().ok())
        {
            Some(n) => n,
            None => return bad_request(&shared, format!("invalid nextToken {t:?}")),
        },
    };

    let mut inner = shared.lock();
    let Some(data) = inner.regions.get(&region) else {
        drop(inner);
        return unknown_detector(&shared, &detector_id);
    };
    if data.detector_id != detector_id {
        drop(inner);
        return unknown_detector(&shared, &detector_id);
    }
    let mut matching: Vec<(&String, &Value)> = data
        .findings
        .iter()
        .filter(|(_, f)| criteria.matches(f))
        .collect();
    matching.sort_by(|a, b| {
        let by_attr = sort
            .as_ref()
            .map(|s| s.compare(a.1, b.1))
            .unwrap_or(std::cmp::Ordering::Equal);
        by_attr.then_with(|| a.0.cmp(b.0))
    });
    let ids: Vec<String> = matching
        .iter()
        .skip(offset)
        .take(max_results)
        .map(|(id, _)| (*id).clone())
        .collect();
    let end = offset + ids.len();
    let mut next = (end < matching.len()).then(|| format!("page-{end}"));
    let call_no = inner.counters.list_findings;
    if let Some(t) = token
        && inner.faults.repeat_token_at.is_some_and(|n| call_no >= n)
    {
        inner.faults.repeat_token_at = None;
        next = Some(t.to_owned());
    }
    let mut out = json!({ "findingIds": ids });
    if let (Some(n), Some(obj)) = (next, out.as_object_mut()) {
        obj.insert("nextToken".to_owned(), Value::from(n));
    }
    ok(out)
}

async fn get_findings(
    State(shared): State<Arc<Shared>>,
    Path(detector_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let region = match admit(&shared, &headers, |c| c.get_findings += 1).await {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    let req = match parse_body(&body) {
        Ok(r) => r,
        Err(e) => return bad_request(&shared, e),
    };
    let Some(ids) = req.get("findingIds").and_then(Value::as_array) else {
        return bad_request(&shared, "findingIds is required and must be a list");
    };
    if ids.len() > MAX_RESULTS {
        return bad_request(
            &shared,
            format!("findingIds has {} ids; at most 50 are allowed", ids.len()),
        );
    }
    let mut inner = shared.lock();
    let Some(data) = inner.regions.get(&region) else {
        drop(inner);
        return unknown_detector(&shared, &detector_id);
    };
    if data.detector_id != detector_id {
        drop(inner);
        return unknown_detector(&shared, &detector_id);
    }
    let findings: Vec<Value> = ids
        .iter()
        .filter_map(Value::as_str)
        .filter_map(|id| data.findings.get(id).cloned())
        .collect();
    inner.counters.findings_returned += findings.len() as u64;
    ok(json!({ "findings": findings }))
}

// ---------------------------------------------------------------------------------------------
// Criteria

/// One field's condition (`Condition` in the service model).
#[derive(Debug, Default)]
struct Condition {
    eq: Option<Vec<String>>,
    neq: Option<Vec<String>>,
    gt: Option<f64>,
    gte: Option<f64>,
    lt: Option<f64>,
    lte: Option<f64>,
}

#[derive(Debug, Default)]
struct Criteria(Vec<(String, Condition)>);

fn string_list(v: &Value, what: &str) -> Result<Vec<String>, String> {
    v.as_array()
        .ok_or_else(|| format!("{what} must be a list of strings"))?
        .iter()
        .map(|s| {
            s.as_str()
                .map(str::to_owned)
                .ok_or_else(|| format!("{what} must be a list of strings"))
        })
        .collect()
}

impl Criteria {
    fn parse(v: &Value) -> Result<Self, String> {
        let Some(criterion) = v.get("criterion") else {
            return Ok(Self::default());
        };
        let map = criterion
            .as_object()
            .ok_or("findingCriteria.criterion must be an object")?;
        let mut out = Vec::new();
        for (field, cond) in map {
            let cond = cond
                .as_object()
                .ok_or_else(|| format!("criterion {field} must be an object"))?;
            let mut c = Condition::default();
            for (op, val) in cond {
                let what = format!("criterion {field}.{op}");
                let num = || {
                    val.as_f64()
                        .ok_or_else(|| format!("{what} must be a number"))
                };
                match op.as_str() {
                    "eq" | "equals" => c.eq = Some(string_list(val, &what)?),
                    "neq" | "notEquals" => c.neq = Some(string_list(val, &what)?),
                    "gt" | "greaterThan" => c.gt = Some(num()?),
                    "gte" | "greaterThanOrEqual" => c.gte = Some(num()?),
                    "lt" | "lessThan" => c.lt = Some(num()?),
                    "lte" | "lessThanOrEqual" => c.lte = Some(num()?),
                    other => return Err(format!("unsupported condition {other:?} on {field}")),
                }
            }
            out.push((field.clone(), c));
        }
        Ok(Self(out))
    }

    fn matches(&self, f: &Value) -> bool {
        self.0.iter().all(|(field, c)| {
            let v = path(f, field);
            let s = v.map(as_text);
            let n = v.and_then(|v| as_number(field, v));
            c.eq.as_ref()
                .is_none_or(|l| s.as_ref().is_some_and(|s| l.contains(s)))
                && c.neq
                    .as_ref()
                    .is_none_or(|l| s.as_ref().is_none_or(|s| !l.contains(s)))
                && c.gt.is_none_or(|x| n.is_some_and(|n| n > x))
                && c.gte.is_none_or(|x| n.is_some_and(|n| n >= x))
                && c.lt.is_none_or(|x| n.is_some_and(|n| n < x))
                && c.lte.is_none_or(|x| n.is_some_and(|n| n <= x))
        })
    }
}

/// `service.archived` → the nested value.
fn path<'a>(f: &'a Value, dotted: &str) -> Option<&'a Value> {
    dotted.split('.').try_fold(f, |v, k| v.get(k))
}

fn as_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Time fields compare as epoch milliseconds (what GuardDuty's criteria take); others as numbers.
fn as_number(field: &str, v: &Value) -> Option<f64> {
    if field == "updatedAt" || field == "createdAt" || field.ends_with("At") {
        return Timestamp::from_json(v).map(|t| t.millis() as f64);
    }
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

#[derive(Debug)]
struct SortCriteria {
    attribute: String,
    descending: bool,
}

impl SortCriteria {
    fn parse(v: &Value) -> Result<Self, String> {
        let attribute = v
            .get("attributeName")
            .and_then(Value::as_str)
            .ok_or("sortCriteria.attributeName is required")?
            .to_owned();
        let descending = match v.get("orderBy").and_then(Value::as_str) {
            None | Some("ASC") => false,
            Some("DESC") => true,
            Some(other) => return Err(format!("sortCriteria.orderBy {other:?}: ASC or DESC")),
        };
        Ok(Self {
            attribute,
            descending,
        })
    }

    fn compare(&self, a: &Value, b: &Value) -> std::cmp::Ordering {
        let key = |f: &Value| {
            path(f, &self.attribute).map(|v| {
                (
                    as_number(&self.attribute, v).unwrap_or(f64::NEG_INFINITY),
                    as_text(v),
                )
            })
        };
        let (ka, kb) = (key(a), key(b));
        let ord = match (&ka, &kb) {
            (Some((na, sa)), Some((nb, sb))) => na.total_cmp(nb).then_with(|| sa.cmp(sb)),
            (None, Some(_)) => std::cmp::Ordering::Less,
            (Some(_), None) => std::cmp::Ordering::Greater,
            (None, None) => std::cmp::Ordering::Equal,
        };
        if self.descending { ord.reverse() } else { ord }
    }
}
