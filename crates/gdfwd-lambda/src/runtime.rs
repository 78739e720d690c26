//! The glue between `lambda_runtime` and the [`Handler`]: logging setup, the per-invocation
//! summary line and EMF metrics, and reporting an init failure to the Runtime API.
//!
//! Logs are JSON lines on stderr (no ANSI: CloudWatch shows escape codes verbatim); the EMF line
//! goes to stdout on its own, so neither tests nor CloudWatch have to pick it out of log records.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lambda_runtime::{LambdaEvent, service_fn};
use serde_json::{Value, json};

use crate::handler::{Handler, HandlerError, Invocation};
use crate::ready::Readiness;

/// Installs the JSON log subscriber at `level` (`RUST_LOG`, when set, takes precedence).
pub fn init_logging(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // A second call (tests) keeps the first subscriber.
    let _ = tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_current_span(false)
        .with_span_list(false)
        .with_ansi(false)
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Serves invocations until the runtime stops: one [`Handler::handle`] per event, then the
/// summary log line and the EMF line.
/// Every invocation first waits for `ready` (see [`crate::ready`]): until AWS has accepted the
/// configuration, invocations fail with `Runtime.ConfigError` without touching their events.
pub async fn serve(
    handler: Arc<Handler>,
    ready: Arc<Readiness>,
    function_name: String,
) -> Result<(), lambda_runtime::Error> {
    let function_name = Arc::new(function_name);
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| {
        let handler = Arc::clone(&handler);
        let ready = Arc::clone(&ready);
        let function_name = Arc::clone(&function_name);
        async move {
            let (payload, ctx) = event.into_parts();
            if let Err(e) = ready.wait().await {
                tracing::error!(request_id = %ctx.request_id, error = %e, "configuration refused by AWS; failing the invocation without touching its events");
                return Err(HandlerError::NotReady(e.0));
            }
            let inv = Invocation {
                request_id: ctx.request_id.clone(),
                deadline: (ctx.deadline > 0).then(|| ctx.deadline()),
            };
            let handled = handler.handle(payload, &inv).await;
            report(&handled, &inv, &function_name);
            handled.response
        }
    }))
    .await
}

fn report(h: &crate::handler::Handled, inv: &Invocation, function_name: &str) {
    let m = &h.metrics;
    let s = &m.summary;
    let outcome = match &h.response {
        Ok(_) => "ok",
        Err(HandlerError::Retryable { .. }) => "retry",
        Err(HandlerError::Rejected { .. }) => "rejected",
        Err(HandlerError::NotReady(_)) => "not_ready",
    };
    tracing::info!(
        request_id = %inv.request_id,
        shape = h.shape.as_str(),
        outcome,
        received = s.received,
        forwarded = s.forwarded,
        duplicates = s.duplicates,
        in_flight = s.in_flight,
        stale = s.stale,
        filtered = s.filtered,
        skipped = s.skipped,
        invalid = s.invalid,
        failed = s.failed,
        batch_item_failures = m.batch_item_failures,
        events_sent = s.events,
        requests = s.requests,
        retries = s.retries,
        throttled = s.throttled,
        enrich_cache_hits = m.enrich.cache_hits,
        enrich_cache_misses = m.enrich.cache_misses,
        send_latency_ms = m.send_latency_ms,
        duration_ms = m.duration_ms,
        "invocation summary"
    );
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    let line = m.emf(function_name, &inv.request_id, h.shape.as_str(), now_ms);
    let mut out = std::io::stdout().lock();
    // Nothing useful to do if stdout is gone; the log line above still carries the numbers.
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Tells the Runtime API (`AWS_LAMBDA_RUNTIME_API`) that init failed, so Lambda reports the
/// message as the init error rather than a bare "Runtime exited". Best effort, bounded to 2 s: the
/// caller exits non-zero right after, which Lambda reports on its own.
///
/// A blocking HTTP/1.1 request on a std socket: `lambda_runtime` does not expose its init-error
/// call, and this runs before any async runtime or client exists.
pub fn report_init_error(
    runtime_api: &str,
    error_type: &str,
    message: &str,
) -> std::io::Result<u16> {
    let body = json!({"errorMessage": message, "errorType": error_type}).to_string();
    let addr = runtime_api.parse::<std::net::SocketAddr>().or_else(|_| {
        use std::net::ToSocketAddrs;
        runtime_api
            .to_socket_addrs()?
            .next()
            .ok_or_else(|| std::io::Error::other(format!("{runtime_api} resolves to nothing")))
    })?;
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    s.set_write_timeout(Some(Duration::from_secs(2)))?;
    write!(
        s,
        "POST /2018-06-01/runtime/init/error HTTP/1.1\r\nHost: {runtime_api}\r\n\
         Content-Type: application/json\r\nLambda-Runtime-Function-Error-Type: {error_type}\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut answer = Vec::new();
    s.read_to_end(&mut answer)?;
    let head = String::from_utf8_lossy(&answer);
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse::<u16>().ok())
        .ok_or_else(|| std::io::Error::other("no HTTP status in the Runtime API's answer"))?;
    Ok(status)
}
