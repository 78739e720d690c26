//! A Lambda Runtime API driver: a fake Lambda service on `127.0.0.1` port 0 that a custom-runtime
//! `bootstrap` binary polls for invocations, as it would inside Lambda.
//!
//! [`RuntimeApi::start`] serves the four endpoints a runtime uses (`GET .../invocation/next`, `POST
//! .../invocation/{id}/response`, `POST .../invocation/{id}/error`, `POST .../init/error`).
//! Tests enqueue payloads ([`RuntimeApi::enqueue`]) and await what the function answered
//! ([`RuntimeApi::await_result`]); [`Bootstrap::spawn`] runs the binary with
//! `AWS_LAMBDA_RUNTIME_API` pointed here and the environment Lambda sets for a function, and keeps
//! its stdout/stderr lines for assertions (EMF metrics, log lines).
//!
//! Why shaped so:
//! - the binary under test is the real one (`env!("CARGO_BIN_EXE_bootstrap")`), unmodified, so
//!   init, config errors, the runtime client and process death (`kill -9`) are all exercised;
//! - `/next` is a long poll like Lambda's: the runtime waits until something is enqueued, and each
//!   invocation's deadline (`Lambda-Runtime-Deadline-Ms`) starts when it is handed out;
//! - the deadline is enforced as Lambda enforces it: an invocation not answered by then is
//!   [`InvocationResult::TimedOut`] (a failed invocation: for SQS the whole batch comes back), and
//!   the execution environment is reset, i.e. every process spawned against this API is killed
//!   (`SIGKILL`). An answer posted after the deadline is refused and does not replace the timeout,
//!   so a function that finishes late can never pass for one that finished in time;
//! - every arrival of `/next` is timestamped, so a benchmark measures init time (spawn to first
//!   `/next`) from the server side;
//! - like `gdfwd-testkit-moto`, it panics with clear messages instead of returning errors: every
//!   caller is a test.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

/// The region every invocation's ARN and the spawned environment name.
pub const REGION: &str = "us-east-1";
/// The function name in the spawned environment and the invoked ARN.
pub const FUNCTION_NAME: &str = "gdfwd-forwarder-test";

/// What the function answered for one invocation.
#[derive(Debug, Clone, PartialEq)]
pub enum InvocationResult {
    /// `POST .../response`: the body, as JSON when it parses (else as a JSON string).
    Response(Value),
    /// `POST .../error`: the `Lambda-Runtime-Function-Error-Type` header and the body.
    Error {
        error_type: Option<String>,
        body: Value,
    },
    /// No answer by the deadline (`Sandbox.Timedout` in Lambda): the invocation failed, and the
    /// process was killed.
    TimedOut {
        /// The invocation's timeout.
        after: Duration,
    },
}

impl InvocationResult {
    pub fn response(&self) -> Option<&Value> {
        match self {
            Self::Response(v) => Some(v),
            Self::Error { .. } | Self::TimedOut { .. } => None,
        }
    }

    /// Whether the invocation failed (an error answer or a timeout).
    pub fn is_error(&self) -> bool {
        matches!(self, Self::Error { .. } | Self::TimedOut { .. })
    }

    pub fn is_timeout(&self) -> bool {
        matches!(self, Self::TimedOut { .. })
    }
}

#[derive(Debug)]
struct Pending {
    id: String,
    payload: Vec<u8>,
    timeout: Duration,
}

#[derive(Debug, Default)]
struct Inner {
    queue: VecDeque<Pending>,
    handed_out: HashMap<String, Instant>,
    results: HashMap<String, InvocationResult>,
    init_error: Option<(Option<String>, Value)>,
    next_polls: Vec<Instant>,
    /// When each handed-out invocation's deadline passes, and its timeout.
    deadlines: HashMap<String, (Instant, Duration)>,
    /// Answers posted after their invocation's deadline (refused).
    late_answers: Vec<String>,
    /// Process ids of the running processes spawned against this API (the execution
    /// environment a timeout resets).
    sandbox: Vec<u32>,
}

#[derive(Debug, Default)]
struct Shared {
    inner: Mutex<Inner>,
    enqueued: Notify,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The running fake Runtime API. Dropping it stops the server.
#[derive(Debug)]
pub struct RuntimeApi {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl Drop for RuntimeApi {
    fn drop(&mut self) {
        self.task.abort();
    }
}

const BASE: &str = "/2018-06-01/runtime";

impl RuntimeApi {
    /// Binds `127.0.0.1:0` and serves until dropped.
    pub async fn start() -> Self {
        let shared = Arc::new(Shared::default());
        let app = Router::new()
            .route(&format!("{BASE}/invocation/next"), get(next))
            .route(
                &format!("{BASE}/invocation/{{id}}/response"),
                post(response),
            )
            .route(&format!("{BASE}/invocation/{{id}}/error"), post(error))
            .route(&format!("{BASE}/init/error"), post(init_error))
            .with_state(Arc::clone(&shared));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding 127.0.0.1:0 for the fake Lambda Runtime API");
        let addr = listener
            .local_addr()
            .expect("local address of the fake Runtime API");
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { addr, shared, task }
    }

    /// `127.0.0.1:PORT`, the value of `AWS_LAMBDA_RUNTIME_API`.
    pub fn address(&self) -> String {
        self.addr.to_string()
    }

    /// Queues an invocation with this payload; its deadline is `timeout` after it is handed out.
    /// Returns the request id.
    pub fn enqueue(&self, payload: &Value, timeout: Duration) -> String {
        self.enqueue_bytes(payload.to_string().into_bytes(), timeout)
    }

    /// Like [`RuntimeApi::enqueue`] with a raw body (e.g. one that is not JSON).
    pub fn enqueue_bytes(&self, payload: Vec<u8>, timeout: Duration) -> String {
        let id = uuid::Uuid::new_v4().to_string();
        self.shared.lock().queue.push_back(Pending {
            id: id.clone(),
            payload,
            timeout,
        });
        self.shared.enqueued.notify_waiters();
        id
    }

    /// Answers the function posted after their invocation's deadline, by request id (refused:
    /// the invocation had already timed out).
    pub fn late_answers(&self) -> Vec<String> {
        self.shared.lock().late_answers.clone()
    }

    /// How many invocations the function has answered (response or error) or timed out.
    pub fn answered(&self) -> usize {
        self.shared.lock().results.len()
    }

    /// The result of invocation `id`, once the function has answered.
    pub fn result(&self, id: &str) -> Option<InvocationResult> {
        self.shared.lock().results.get(id).cloned()
    }

    /// Waits up to `wait` for invocation `id`'s answer; `None` if it did not come.
    pub async fn await_result(&self, id: &str, wait: Duration) -> Option<InvocationResult> {
        let until = Instant::now() + wait;
        loop {
            if let Some(r) = self.result(id) {
                return Some(r);
            }
            if Instant::now() >= until {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Enqueues `payload` and waits (up to `timeout` plus 30 s of slack) for the answer; panics,
    /// naming the request id, when none comes.
    pub async fn invoke(&self, payload: &Value, timeout: Duration) -> InvocationResult {
        let id = self.enqueue(payload, timeout);
        self.await_result(&id, timeout + Duration::from_secs(30))
            .await
            .unwrap_or_else(|| panic!("invocation {id} got no response or error"))
    }

    /// Whether invocation `id` was handed to a runtime by `/next`.
    pub fn handed_out(&self, id: &str) -> bool {
        self.shared.lock().handed_out.contains_key(id)
    }

    /// Waits up to `wait` until invocation `id` is handed out.
    pub async fn await_handed_out(&self, id: &str, wait: Duration) -> bool {
        let until = Instant::now() + wait;
        while Instant::now() < until {
            if self.handed_out(id) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        self.handed_out(id)
    }

    /// What the runtime posted to `/init/error`: (error type header, body).
    pub fn init_error(&self) -> Option<(Option<String>, Value)> {
        self.shared.lock().init_error.clone()
    }

    /// When each `GET /next` arrived, in order.
    pub fn next_polls(&self) -> Vec<Instant> {
        self.shared.lock().next_polls.clone()
    }

    /// Waits up to `wait` for the first `GET /next`; its arrival time.
    pub async fn await_first_poll(&self, wait: Duration) -> Option<Instant> {
        let until = Instant::now() + wait;
        loop {
            if let Some(t) = self.shared.lock().next_polls.first().copied() {
                return Some(t);
            }
            if Instant::now() >= until {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
}

async fn next(State(shared): State<Arc<Shared>>) -> Response {
    shared.lock().next_polls.push(Instant::now());
    let pending = loop {
        // Created before looking at the queue, so an enqueue in between is not missed.
        let notified = shared.enqueued.notified();
        if let Some(p) = shared.lock().queue.pop_front() {
            break p;
        }
        notified.await;
    };
    let handed_out = Instant::now();
    {
        let mut inner = shared.lock();
        inner.handed_out.insert(pending.id.clone(), handed_out);
        inner.deadlines.insert(
            pending.id.clone(),
            (handed_out + pending.timeout, pending.timeout),
        );
    }
    tokio::spawn(enforce_deadline(
        Arc::clone(&shared),
        pending.id.clone(),
        handed_out + pending.timeout,
    ));
    let deadline = SystemTime::now() + pending.timeout;
    let deadline_ms = deadline
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let mut headers = HeaderMap::new();
    let mut put = |name: &'static str, value: String| {
        if let Ok(v) = HeaderValue::from_str(&value) {
            headers.insert(name, v);
        }
    };
    put("lambda-runtime-aws-request-id", pending.id.clone());
    put("lambda-runtime-deadline-ms", deadline_ms.to_string());
    put(
        "lambda-runtime-invoked-function-arn",
        format!("arn:aws:lambda:{REGION}:123456789012:function:{FUNCTION_NAME}"),
    );
    let trace = pending.id.replace('-', "");
    put(
        "lambda-runtime-trace-id",
        format!(
            "Root=1-{:08x}-{};Parent={};Sampled=0",
            deadline_ms as u32,
            trace.get(..24).unwrap_or_default(),
            trace.get(..16).unwrap_or_default()
        ),
    );
    put("content-type", "application/json".to_owned());
    (StatusCode::OK, headers, pending.payload).into_response()
}

/// At `deadline`, times invocation `id` out unless it was answered, and resets the environment.
async fn enforce_deadline(shared: Arc<Shared>, id: String, deadline: Instant) {
    tokio::time::sleep_until(deadline.into()).await;
    let pids = {
        let mut inner = shared.lock();
        if inner.results.contains_key(&id) {
            return;
        }
        time_out(&mut inner, &id);
        std::mem::take(&mut inner.sandbox)
    };
    for pid in pids {
        // `kill` rather than the `Child` handle, which the test's `Bootstrap` owns. The pid is
        // still ours: a `Bootstrap` deregisters it before it reaps the process.
        let _ = tokio::process::Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status()
            .await;
    }
}

/// Records invocation `id` as timed out.
fn time_out(inner: &mut Inner, id: &str) {
    let after = inner.deadlines.get(id).map_or(Duration::ZERO, |d| d.1);
    inner
        .results
        .insert(id.to_owned(), InvocationResult::TimedOut { after });
}

/// Records an answer unless its invocation is past its deadline (then refuses it, as the Runtime
/// API refuses a request id it no longer serves).
fn record_answer(shared: &Shared, id: String, result: InvocationResult) -> Response {
    let mut inner = shared.lock();
    let late = inner.results.contains_key(&id)
        || inner
            .deadlines
            .get(&id)
            .is_some_and(|(deadline, _)| Instant::now() > *deadline);
    if late {
        if !inner.results.contains_key(&id) {
            time_out(&mut inner, &id);
        }
        inner.late_answers.push(id);
        return (
            StatusCode::BAD_REQUEST,
            r#"{"errorMessage":"Invalid request ID","errorType":"InvalidRequestID"}"#,
        )
            .into_response();
    }
    inner.results.insert(id, result);
    (StatusCode::ACCEPTED, r#"{"status":"OK"}"#).into_response()
}

fn json_or_string(body: &[u8]) -> Value {
    serde_json::from_slice(body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(body).into_owned()))
}

async fn response(
    State(shared): State<Arc<Shared>>,
    UrlPath(id): UrlPath<String>,
    body: Bytes,
) -> Response {
    record_answer(
        &shared,
        id,
        InvocationResult::Response(json_or_string(&body)),
    )
}

fn error_type(headers: &HeaderMap) -> Option<String> {
    headers
        .get("lambda-runtime-function-error-type")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

async fn error(
    State(shared): State<Arc<Shared>>,
    UrlPath(id): UrlPath<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let result = InvocationResult::Error {
        error_type: error_type(&headers),
        body: json_or_string(&body),
    };
    record_answer(&shared, id, result)
}

async fn init_error(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> impl IntoResponse {
    shared.lock().init_error = Some((error_type(&headers), json_or_string(&body)));
    (StatusCode::ACCEPTED, r#"{"status":"OK"}"#)
}

/// Captured output lines of a child process.
type Lines = Arc<Mutex<Vec<String>>>;

/// A running `bootstrap` process.
#[derive(Debug)]
pub struct Bootstrap {
    child: tokio::process::Child,
    pid: u32,
    /// The API's state, to leave its execution environment when the process is reaped.
    api: Arc<Shared>,
    spawned: Instant,
    stdout: Lines,
    stderr: Lines,
    readers: Vec<JoinHandle<()>>,
}

/// The environment Lambda gives a `provided.al2023` function (minus credentials, which the
/// caller passes with the rest of its settings).
pub fn lambda_env(api: &RuntimeApi) -> Vec<(String, String)> {
    [
        ("AWS_LAMBDA_RUNTIME_API", api.address()),
        ("AWS_LAMBDA_FUNCTION_NAME", FUNCTION_NAME.to_owned()),
        ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128".to_owned()),
        ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST".to_owned()),
        ("AWS_LAMBDA_INITIALIZATION_TYPE", "on-demand".to_owned()),
        (
            "AWS_LAMBDA_LOG_GROUP_NAME",
            format!("/aws/lambda/{FUNCTION_NAME}"),
        ),
        (
            "AWS_LAMBDA_LOG_STREAM_NAME",
            "2026/01/01/[$LATEST]0123456789abcdef0123456789abcdef".to_owned(),
        ),
        ("AWS_REGION", REGION.to_owned()),
        ("AWS_DEFAULT_REGION", REGION.to_owned()),
        ("LAMBDA_TASK_ROOT", "/var/task".to_owned()),
        ("LAMBDA_RUNTIME_DIR", "/var/runtime".to_owned()),
        ("_HANDLER", "bootstrap".to_owned()),
        ("TZ", ":UTC".to_owned()),
        ("LANG", "en_US.UTF-8".to_owned()),
        ("PATH", "/usr/local/bin:/usr/bin:/bin".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

impl Bootstrap {
    /// Spawns `binary` with a cleared environment: [`lambda_env`] for `api`, then `env` (which
    /// may override any of it).
    pub fn spawn(binary: &Path, api: &RuntimeApi, env: &[(String, String)]) -> Self {
        let mut cmd = tokio::process::Command::new(binary);
        cmd.env_clear()
            .envs(lambda_env(api))
            .envs(env.iter().cloned())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let spawned = Instant::now();
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {}: {e}", binary.display()));
        let pid = child.id().unwrap_or(0);
        api.shared.lock().sandbox.push(pid);
        let stdout: Lines = Arc::default();
        let stderr: Lines = Arc::default();
        let mut readers = Vec::new();
        if let Some(out) = child.stdout.take() {
            readers.push(tokio::spawn(collect(out, Arc::clone(&stdout))));
        }
        if let Some(err) = child.stderr.take() {
            readers.push(tokio::spawn(collect(err, Arc::clone(&stderr))));
        }
        Self {
            child,
            pid,
            api: Arc::clone(&api.shared),
            spawned,
            stdout,
            stderr,
            readers,
        }
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// When the process was spawned (for init-time measurements against
    /// [`RuntimeApi::await_first_poll`]).
    pub fn spawned_at(&self) -> Instant {
        self.spawned
    }

    pub fn stdout_lines(&self) -> Vec<String> {
        self.stdout
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub fn stderr_lines(&self) -> Vec<String> {
        self.stderr
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Stdout lines that are JSON objects with an `_aws` member (EMF metric lines).
    pub fn emf_lines(&self) -> Vec<Value> {
        parse_json_lines(&self.stdout_lines())
            .into_iter()
            .filter(|v| v.get("_aws").is_some())
            .collect()
    }

    /// Stderr lines that are JSON objects (structured log records).
    pub fn log_records(&self) -> Vec<Value> {
        parse_json_lines(&self.stderr_lines())
    }

    /// Takes the process out of the API's execution environment (before it is reaped, so a
    /// deadline never signals a reused pid).
    fn leave_sandbox(&self) {
        self.api.lock().sandbox.retain(|p| *p != self.pid);
    }

    /// `SIGKILL`s the process (as `kill -9` would) and waits for it.
    pub async fn kill(&mut self) {
        self.leave_sandbox();
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }

    /// Waits up to `wait` for the process to exit on its own; then lets the output readers
    /// finish, so every line it wrote is captured.
    pub async fn wait_exit(&mut self, wait: Duration) -> Option<ExitStatus> {
        let status = tokio::time::timeout(wait, self.child.wait())
            .await
            .ok()?
            .ok()?;
        self.leave_sandbox();
        for r in self.readers.drain(..) {
            let _ = tokio::time::timeout(Duration::from_secs(5), r).await;
        }
        Some(status)
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        let running = matches!(self.child.try_wait(), Ok(None));
        if !running {
            self.leave_sandbox();
        }
        running
    }
}

impl Drop for Bootstrap {
    fn drop(&mut self) {
        self.leave_sandbox();
        let _ = self.child.start_kill();
        if std::thread::panicking() {
            let err = self.stderr_lines();
            let tail = err.len().saturating_sub(40);
            eprintln!(
                "---- bootstrap (pid {}) stderr, last {} lines ----",
                self.pid,
                err.len() - tail
            );
            for l in &err[tail..] {
                eprintln!("{l}");
            }
        }
    }
}

fn parse_json_lines(lines: &[String]) -> Vec<Value> {
    lines
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(Value::is_object)
        .collect()
}

async fn collect(stream: impl tokio::io::AsyncRead + Unpin, into: Lines) {
    let mut lines = BufReader::new(stream).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        into.lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(line);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal runtime client over raw HTTP/1.1, standing in for a real `bootstrap`.
    async fn http(
        addr: &str,
        method: &str,
        path: &str,
        body: &str,
        extra: &str,
    ) -> (u16, String, String) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\nConnection: close\r\n{extra}\r\n{body}",
            body.len()
        );
        s.write_all(req.as_bytes()).await.expect("write");
        let mut out = String::new();
        s.read_to_string(&mut out).await.expect("read");
        let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        (status, head.to_owned(), body.to_owned())
    }

    fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
        head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }

    #[tokio::test]
    async fn next_long_polls_then_hands_out_in_order_with_lambda_headers() {
        let api = RuntimeApi::start().await;
        let addr = api.address();
        let poll = tokio::spawn({
            let addr = addr.clone();
            async move { http(&addr, "GET", "/2018-06-01/runtime/invocation/next", "", "").await }
        });
        // The poll is waiting (nothing queued yet) when the first invocation arrives.
        assert!(api.await_first_poll(Duration::from_secs(5)).await.is_some());
        let a = api.enqueue(&serde_json::json!({"n": 1}), Duration::from_secs(3));
        let b = api.enqueue(&serde_json::json!({"n": 2}), Duration::from_secs(3));
        let (status, head, body) = poll.await.expect("poll task");
        assert_eq!(status, 200);
        assert_eq!(
            header(&head, "lambda-runtime-aws-request-id"),
            Some(a.as_str())
        );
        let deadline: u128 = header(&head, "lambda-runtime-deadline-ms")
            .and_then(|v| v.parse().ok())
            .expect("deadline header");
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock")
            .as_millis();
        assert!(
            deadline > now && deadline <= now + 3000,
            "deadline {deadline} now {now}"
        );
        assert!(
            header(&head, "lambda-runtime-invoked-function-arn")
                .is_some_and(|v| v.ends_with(FUNCTION_NAME))
        );
        assert!(header(&head, "lambda-runtime-trace-id").is_some_and(|v| v.starts_with("Root=1-")));
        assert_eq!(
            serde_json::from_str::<Value>(&body).expect("json"),
            serde_json::json!({"n": 1})
        );
        assert!(api.handed_out(&a));
        assert!(!api.handed_out(&b));

        let (status, head, _) =
            http(&addr, "GET", "/2018-06-01/runtime/invocation/next", "", "").await;
        assert_eq!(status, 200);
        assert_eq!(
            header(&head, "lambda-runtime-aws-request-id"),
            Some(b.as_str())
        );

        let (status, _, _) = http(
            &addr,
            "POST",
            &format!("/2018-06-01/runtime/invocation/{a}/response"),
            r#"{"ok":true}"#,
            "",
        )
        .await;
        assert_eq!(status, 202);
        let (status, _, _) = http(
            &addr,
            "POST",
            &format!("/2018-06-01/runtime/invocation/{b}/error"),
            r#"{"errorMessage":"boom","errorType":"X"}"#,
            "Lambda-Runtime-Function-Error-Type: X.Y\r\n",
        )
        .await;
        assert_eq!(status, 202);
        assert_eq!(
            api.await_result(&a, Duration::from_secs(5)).await,
            Some(InvocationResult::Response(serde_json::json!({"ok": true})))
        );
        match api.await_result(&b, Duration::from_secs(5)).await {
            Some(InvocationResult::Error { error_type, body }) => {
                assert_eq!(error_type.as_deref(), Some("X.Y"));
                assert_eq!(body["errorMessage"], "boom");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(api.next_polls().len(), 2);
    }

    /// A shell script at a fresh path; the "function" of a test.
    fn script(name: &str, body: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "gdfwd-testkit-lambda-{}-{name}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("bootstrap.sh");
        std::fs::write(&path, body).expect("write script");
        let mut perm = std::fs::metadata(&path).expect("meta").permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perm, 0o755);
        std::fs::set_permissions(&path, perm).expect("chmod");
        path
    }

    #[tokio::test]
    async fn an_answer_after_the_deadline_is_a_timeout_and_the_process_is_killed() {
        let api = RuntimeApi::start().await;
        // The "function" hangs; the test plays its runtime client.
        let mut p = Bootstrap::spawn(&script("hang", "#!/bin/sh\nexec sleep 600\n"), &api, &[]);
        let addr = api.address();
        let id = api.enqueue(&serde_json::json!({"n": 1}), Duration::from_millis(300));
        let (status, _, _) =
            http(&addr, "GET", "/2018-06-01/runtime/invocation/next", "", "").await;
        assert_eq!(status, 200);
        assert!(
            api.result(&id).is_none(),
            "not timed out before the deadline"
        );
        let r = api
            .await_result(&id, Duration::from_secs(10))
            .await
            .expect("a result at the deadline");
        assert_eq!(
            r,
            InvocationResult::TimedOut {
                after: Duration::from_millis(300)
            }
        );
        assert!(r.is_error() && r.is_timeout());
        let status = p
            .wait_exit(Duration::from_secs(10))
            .await
            .expect("the process is killed at the deadline");
        assert!(!status.success());

        // The late answer is refused and does not turn the timeout into a success.
        let (status, _, body) = http(
            &addr,
            "POST",
            &format!("/2018-06-01/runtime/invocation/{id}/response"),
            r#"{"ok":true}"#,
            "",
        )
        .await;
        assert_eq!(status, 400, "{body}");
        assert!(body.contains("InvalidRequestID"), "{body}");
        assert_eq!(api.late_answers(), vec![id.clone()]);
        assert!(api.result(&id).is_some_and(|r| r.is_timeout()));
    }

    #[tokio::test]
    async fn an_answer_racing_the_deadline_is_judged_by_the_clock() {
        let api = RuntimeApi::start().await;
        let addr = api.address();
        let id = api.enqueue(&serde_json::json!({}), Duration::from_millis(200));
        http(&addr, "GET", "/2018-06-01/runtime/invocation/next", "", "").await;
        tokio::time::sleep(Duration::from_millis(250)).await;
        // Whether or not the deadline task ran yet, the answer is past the deadline.
        let (status, _, _) = http(
            &addr,
            "POST",
            &format!("/2018-06-01/runtime/invocation/{id}/error"),
            r#"{"errorMessage":"late"}"#,
            "",
        )
        .await;
        assert_eq!(status, 400);
        assert!(api.result(&id).is_some_and(|r| r.is_timeout()));
    }

    #[tokio::test]
    async fn init_errors_are_recorded() {
        let api = RuntimeApi::start().await;
        assert_eq!(api.init_error(), None);
        let (status, _, _) = http(
            &api.address(),
            "POST",
            "/2018-06-01/runtime/init/error",
            r#"{"errorMessage":"X is not set","errorType":"Config"}"#,
            "Lambda-Runtime-Function-Error-Type: Runtime.Config\r\n",
        )
        .await;
        assert_eq!(status, 202);
        let (kind, body) = api.init_error().expect("recorded");
        assert_eq!(kind.as_deref(), Some("Runtime.Config"));
        assert_eq!(body["errorMessage"], "X is not set");
    }

    #[tokio::test]
    async fn spawned_processes_get_the_lambda_environment_and_their_output_is_kept() {
        let api = RuntimeApi::start().await;
        let cmd_env = vec![("GDFWD_PROBE".to_owned(), "probe".to_owned())];
        let dir = std::env::temp_dir().join(format!("gdfwd-testkit-lambda-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let script = dir.join("bootstrap.sh");
        std::fs::write(
            &script,
            "#!/bin/sh\necho \"{\\\"_aws\\\":{},\\\"api\\\":\\\"$AWS_LAMBDA_RUNTIME_API\\\",\\\"probe\\\":\\\"$GDFWD_PROBE\\\",\\\"fn\\\":\\\"$AWS_LAMBDA_FUNCTION_NAME\\\"}\"\necho '{\"level\":\"INFO\"}' >&2\necho plain\n",
        )
        .expect("write script");
        let mut perm = std::fs::metadata(&script).expect("meta").permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perm, 0o755);
        std::fs::set_permissions(&script, perm).expect("chmod");
        let mut p = Bootstrap::spawn(&script, &api, &cmd_env);
        let status = p.wait_exit(Duration::from_secs(10)).await.expect("exits");
        assert!(status.success());
        let emf = p.emf_lines();
        assert_eq!(emf.len(), 1, "{:?}", p.stdout_lines());
        assert_eq!(emf[0]["api"], api.address());
        assert_eq!(emf[0]["probe"], "probe");
        assert_eq!(emf[0]["fn"], FUNCTION_NAME);
        assert_eq!(p.stdout_lines().len(), 2);
        assert_eq!(p.log_records(), vec![serde_json::json!({"level": "INFO"})]);
    }
}
