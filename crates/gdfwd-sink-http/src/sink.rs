//! [`HttpSink`]: the [`Sink`] that delivers events to OpenPipeline.
//!
//! Per batch, in this order: wait for a slot among `max_in_flight` (shared by every `send` call
//! on this sink), then loop over attempts; each attempt first waits for the rate limiters (so
//! retries consume the same budget as first attempts), then POSTs with the per-attempt timeout
//! (shortened to the deadline). The pure [`RetryPolicy`] decides what follows each answer; a 413
//! (too large) or a 400 (OpenPipeline refuses the whole request for one invalid event) splits the
//! batch in halves, which are sent in turn under the same slot, so one bad event fails alone
//! (the order of the halves: [`crate::halving`]).
//!
//! A stop signal ([`HttpSink::with_stop`], the CLI's interrupt) ends every wait at once (the
//! in-flight slot, the rate limiters, a retry's backoff or `Retry-After`) as the deadline would,
//! but never a request already on the wire: its answer is still recorded, so an accepted batch is
//! committed, not released and sent again by the next run.
//!
//! Every input event gets exactly one outcome: batches are contiguous ranges of the input, each
//! range's future returns one outcome per event of the range, and the ranges are joined in order.

use std::future::Future;
use std::num::NonZeroU32;
use std::ops::ControlFlow;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use gdfwd_core::sink::{EventOutcome, OutEvent, SendReport, SendStats, Sink};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tokio::sync::Semaphore;

use crate::config::HttpSinkConfig;
use crate::error::SinkHttpError;
use crate::halving::{Halving, Step};
use crate::request::{gzip, json_array, plan_batches};
use crate::retry::{Attempt, BatchState, Decision, RetryPolicy, SplitCause};
use crate::secret::Secret;
use crate::service::{Answer, Service};
use crate::token::{Refresh, TokenSource};

pub struct HttpSink {
    service: Service,
    tokens: Arc<dyn TokenSource>,
    policy: RetryPolicy,
    cfg: HttpSinkConfig,
    /// Events per batch after fitting the events limiter's burst.
    max_batch_events: usize,
    events_limiter: Option<DefaultDirectRateLimiter>,
    requests_limiter: Option<DefaultDirectRateLimiter>,
    in_flight: Arc<Semaphore>,
    /// Set to `true` when sending must stop (see the module doc); `None`: never.
    stop: Option<tokio::sync::watch::Receiver<bool>>,
}

impl std::fmt::Debug for HttpSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpSink")
            .field("endpoint", &self.cfg.endpoint.as_str())
            .field("auth", &self.cfg.auth)
            .field("tokens", &self.tokens)
            .field("max_batch_events", &self.max_batch_events)
            .field("max_batch_bytes", &self.cfg.max_batch_bytes)
            .field("max_in_flight", &self.cfg.max_in_flight)
            .field("max_events_per_second", &self.cfg.max_events_per_second)
            .field("max_requests_per_second", &self.cfg.max_requests_per_second)
            .field("max_concurrency", &self.cfg.max_concurrency)
            .finish_non_exhaustive()
    }
}

/// This process's share of a global per-second limit: `global / processes` as a replenish period.
fn per_process_period(global: NonZeroU32, processes: NonZeroU32) -> Duration {
    Duration::from_secs_f64(f64::from(processes.get()) / f64::from(global.get()))
}

impl HttpSink {
    /// Builds the client (reading the CA file) and the limiters. Fails on invalid configuration.
    pub fn new(cfg: HttpSinkConfig, tokens: Arc<dyn TokenSource>) -> Result<Self, SinkHttpError> {
        cfg.validate()?;
        let service = Service::new(&cfg)?;
        let mut max_batch_events = cfg.max_batch_events;
        let events_limiter = cfg.max_events_per_second.map(|global| {
            let period = per_process_period(global, cfg.max_concurrency);
            // A batch must fit in the burst (until_n_ready refuses more), and a burst larger than a
            // second's worth of events would overshoot the limit: cap batches at one second's worth.
            let per_second = (1.0 / period.as_secs_f64()).floor().max(1.0);
            let per_second = u32::try_from(per_second as u64).unwrap_or(u32::MAX);
            max_batch_events = max_batch_events.min(per_second as usize).max(1);
            let burst = NonZeroU32::new(u32::try_from(max_batch_events).unwrap_or(u32::MAX))
                .unwrap_or(NonZeroU32::MIN);
            RateLimiter::direct(
                Quota::with_period(period)
                    .unwrap_or(Quota::per_second(global))
                    .allow_burst(burst),
            )
        });
        let requests_limiter = cfg.max_requests_per_second.map(|global| {
            let period = per_process_period(global, cfg.max_concurrency);
            RateLimiter::direct(Quota::with_period(period).unwrap_or(Quota::per_second(global)))
        });
        Ok(Self {
            service,
            tokens,
            policy: RetryPolicy::new(cfg.retry),
            max_batch_events,
            events_limiter,
            requests_limiter,
            in_flight: Arc::new(Semaphore::new(cfg.max_in_flight)),
            cfg,
            stop: None,
        })
    }

    /// Stops waiting (for a slot, the rate limits, a retry) once `stop` turns `true`; requests
    /// already sent finish. What is not sent then is reported retryable ("stopped").
    #[must_use]
    pub fn with_stop(mut self, stop: tokio::sync::watch::Receiver<bool>) -> Self {
        self.stop = Some(stop);
        self
    }

    fn is_stopped(&self) -> bool {
        self.stop.as_ref().is_some_and(|s| *s.borrow())
    }

    /// Resolves when the stop signal is set; never without one (or once its sender is gone).
    async fn stopped(&self) {
        match &self.stop {
            Some(s) => {
                let mut s = s.clone();
                if s.wait_for(|stop| *stop).await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
            None => std::future::pending().await,
        }
    }

    /// `fut`, unless the deadline or the stop signal comes first (`None`).
    async fn until_cut<T>(
        &self,
        deadline: Option<Instant>,
        fut: impl Future<Output = T>,
    ) -> Option<T> {
        let bounded = async {
            match deadline {
                Some(d) => tokio::time::timeout_at(d.into(), fut).await.ok(),
                None => Some(fut.await),
            }
        };
        tokio::select! {
            // Stop first: when both are ready, a stopped sender does not start more work.
            biased;
            () = self.stopped() => None,
            r = bounded => r,
        }
    }

    /// Why a batch ends unsent: stopped, or the deadline.
    fn cut_reason(&self, last: Option<&str>) -> String {
        let why = if self.is_stopped() {
            "stopped (interrupted)"
        } else {
            "deadline reached"
        };
        match last {
            Some(r) => format!("{why}; last attempt: {r}"),
            None => format!("{why} before the batch could be sent"),
        }
    }

    /// Events per request after fitting the rate limit (at most `max_batch_events`).
    pub fn effective_max_batch_events(&self) -> usize {
        self.max_batch_events
    }

    /// Waits for the rate limiters; `false` if the deadline came first.
    async fn acquire(&self, events: usize, deadline: Option<Instant>) -> bool {
        let wait = async {
            if let Some(l) = &self.events_limiter {
                let mut left = u32::try_from(events).unwrap_or(u32::MAX);
                let chunk = u32::try_from(self.max_batch_events)
                    .unwrap_or(u32::MAX)
                    .max(1);
                // Batches never exceed the burst; chunking only guards a future change of that.
                while let Some(n) = NonZeroU32::new(left.min(chunk)) {
                    if l.until_n_ready(n).await.is_err() {
                        break;
                    }
                    left -= n.get();
                }
            }
            if let Some(l) = &self.requests_limiter {
                l.until_ready().await;
            }
        };
        self.until_cut(deadline, wait).await.is_some()
    }

    /// Sends one contiguous range of the input under one in-flight slot, halving it on 413 (until
    /// the parts fit) and on 400 (to isolate the events OpenPipeline refuses, so one invalid
    /// event does not take its batch-mates down with it), in the order [`Halving`] decides.
    async fn send_range(
        &self,
        events: &[OutEvent],
        range: Range<usize>,
        deadline: Option<Instant>,
        stats: &Counters,
    ) -> Vec<EventOutcome> {
        let permit = self.until_cut(deadline, self.in_flight.acquire()).await;
        let Some(Ok(_permit)) = permit else {
            let reason = self.cut_reason(None);
            return vec![EventOutcome::Retryable { reason }; range.len()];
        };
        let base = range.start;
        let mut out: Vec<Option<EventOutcome>> = vec![None; range.len()];
        let mut set = |r: Range<usize>, outcome: &EventOutcome| {
            out[r.start - base..r.end - base].fill(Some(outcome.clone()));
        };
        let mut halving = Halving::new(range);
        loop {
            match halving.next() {
                Step::Done => break,
                Step::Refuse { parts, reason } => {
                    let refused = EventOutcome::Definitive { reason };
                    for r in parts {
                        set(r, &refused);
                    }
                }
                Step::Send(r) => match self.send_batch(&events[r.clone()], deadline, stats).await {
                    Batch::Done(outcome) => {
                        halving.answered(&outcome);
                        set(r, &outcome);
                    }
                    Batch::Split(cause) => halving.split(cause),
                },
            }
        }
        out.into_iter()
            .map(|o| {
                o.unwrap_or_else(|| EventOutcome::Retryable {
                    reason: "internal: no outcome recorded".into(),
                })
            })
            .collect()
    }

    /// Sends one batch with retries, or says to split it: encodes once, then runs attempts until
    /// the [`RetryPolicy`] reaches a verdict, the deadline comes or the sender is stopped.
    async fn send_batch(
        &self,
        batch: &[OutEvent],
        deadline: Option<Instant>,
        stats: &Counters,
    ) -> Batch {
        let (payload, gz) = self.encode(batch);
        let n = batch.len();
        let mut state = BatchState {
            attempts: 0,
            events: n,
            token_refreshed: false,
        };
        // The last retryable reason, for the outcome when the deadline or a stop ends the loop.
        let mut last: Option<String> = None;
        loop {
            let (token, timeout) = match self.ready_to_send(n, deadline, &last).await {
                Ok(ready) => ready,
                Err(done) => return done,
            };
            state.attempts += 1;
            let (answer, decision) = self
                .attempt(&payload, gz, &token, timeout, state, stats)
                .await;
            let attempt = AttemptCtx {
                events: n,
                bytes: payload.len(),
                attempts: state.attempts,
                token: &token,
                deadline,
            };
            if matches!(decision, Decision::RefreshToken { .. }) {
                state.token_refreshed = true;
            }
            match self.follow(decision, answer, &attempt, stats).await {
                ControlFlow::Break(done) => return done,
                ControlFlow::Continue(reason) => last = Some(reason),
            }
        }
    }

    /// One POST of the encoded batch, counted, and the [`RetryPolicy`]'s verdict on its answer.
    async fn attempt(
        &self,
        payload: &Bytes,
        gz: bool,
        token: &Secret,
        timeout: Duration,
        state: BatchState,
        stats: &Counters,
    ) -> (Answer, Decision) {
        stats.requests.fetch_add(1, Ordering::Relaxed);
        if state.attempts > 1 {
            stats.retries.fetch_add(1, Ordering::Relaxed);
        }
        let answer = self.service.post(payload.clone(), gz, token, timeout).await;
        if matches!(answer.attempt, Attempt::Status { status: 429, .. }) {
            stats.throttled.fetch_add(1, Ordering::Relaxed);
        }
        let decision = self.policy.decide(
            &answer.attempt,
            state,
            SystemTime::now(),
            rand::random::<f64>(),
        );
        (answer, decision)
    }

    /// Carries out a verdict: the batch's end (`Break`), or another attempt after the wait or
    /// the token re-read the verdict asks for (`Continue` with the reason, for the outcome if
    /// the deadline or a stop ends the next wait).
    async fn follow(
        &self,
        decision: Decision,
        answer: Answer,
        at: &AttemptCtx<'_>,
        stats: &Counters,
    ) -> ControlFlow<Batch, String> {
        let (n, attempts) = (at.events, at.attempts);
        match decision {
            Decision::Sent => {
                stats.events_sent.fetch_add(n as u64, Ordering::Relaxed);
                tracing::debug!(events = n, bytes = at.bytes, attempts, request_id = ?answer.request_id, "batch accepted");
                ControlFlow::Break(Batch::Done(EventOutcome::Sent {
                    request_id: answer.request_id,
                }))
            }
            Decision::Retry { wait, reason } => self.back_off(wait, reason, at).await,
            Decision::RefreshToken { reason } => {
                match self.refresh_token(&reason, at.token, n, at.deadline).await {
                    Ok(()) => ControlFlow::Continue(reason),
                    Err(done) => ControlFlow::Break(done),
                }
            }
            Decision::Split { reason, cause } => {
                tracing::info!(events = n, "{reason}: splitting the batch");
                ControlFlow::Break(Batch::Split(cause))
            }
            Decision::GiveUp { retryable, reason } => {
                tracing::warn!(events = n, attempts, retryable, %reason, "giving up on batch");
                ControlFlow::Break(Batch::Done(if retryable {
                    EventOutcome::Retryable { reason }
                } else {
                    EventOutcome::Definitive { reason }
                }))
            }
        }
    }

    /// Waits `wait` before the next attempt, unless the deadline comes first (then not at all)
    /// or a stop ends the wait: then the batch ends retryable with `reason`.
    async fn back_off(
        &self,
        wait: Duration,
        reason: String,
        at: &AttemptCtx<'_>,
    ) -> ControlFlow<Batch, String> {
        let (n, attempts) = (at.events, at.attempts);
        if at.deadline.is_some_and(|d| Instant::now() + wait >= d) {
            tracing::warn!(events = n, attempts, %reason, "not retrying: the deadline comes first");
            return ControlFlow::Break(self.cut(Some(&reason)));
        }
        tracing::warn!(events = n, attempts, wait_ms = wait.as_millis() as u64, %reason, "retrying batch");
        if self
            .until_cut(None, tokio::time::sleep(wait))
            .await
            .is_none()
        {
            tracing::warn!(events = n, attempts, "not retrying: stopped");
            return ControlFlow::Break(self.cut(Some(&reason)));
        }
        ControlFlow::Continue(reason)
    }

    /// The request body: a JSON array, gzipped when configured (uncompressed if gzip fails, which
    /// costs bandwidth, not correctness).
    fn encode(&self, batch: &[OutEvent]) -> (Bytes, bool) {
        let plain = json_array(batch);
        if !self.cfg.compress {
            return (Bytes::from(plain), false);
        }
        match gzip(&plain) {
            Ok(z) => (Bytes::from(z), true),
            Err(e) => {
                tracing::warn!(error = %e, "gzip failed; sending uncompressed");
                (Bytes::from(plain), false)
            }
        }
    }

    /// Everything an attempt waits for before it may start, in order: the rate limiters, then the
    /// token (which can wait on Secrets Manager). Returns the token and the attempt's timeout
    /// (shortened to the deadline), or the batch's outcome when the deadline or a stop comes
    /// first, or the token cannot be read.
    async fn ready_to_send(
        &self,
        n: usize,
        deadline: Option<Instant>,
        last: &Option<String>,
    ) -> Result<(Secret, Duration), Batch> {
        if deadline.is_some_and(|d| Instant::now() >= d) || self.is_stopped() {
            return Err(self.cut(last.as_deref()));
        }
        if !self.acquire(n, deadline).await {
            return Err(self.cut(last.as_deref()));
        }
        let Some(token) = self.until_cut(deadline, self.tokens.token()).await else {
            return Err(self.cut(last.as_deref()));
        };
        let token = token.map_err(|e| {
            Batch::Done(EventOutcome::Retryable {
                reason: format!("getting the API token: {e}"),
            })
        })?;
        let timeout = match deadline {
            Some(d) => self
                .cfg
                .timeout
                .min(d.saturating_duration_since(Instant::now())),
            None => self.cfg.timeout,
        };
        // The last moment to not start a request: after this, its answer is awaited.
        if timeout.is_zero() || self.is_stopped() {
            return Err(self.cut(last.as_deref()));
        }
        Ok((token, timeout))
    }

    /// The batch's outcome when the deadline or a stop ends it unsent.
    fn cut(&self, last: Option<&str>) -> Batch {
        Batch::Done(EventOutcome::Retryable {
            reason: self.cut_reason(last),
        })
    }

    /// After a 401/403: re-reads the token. `Ok` when a different token was read (retry with
    /// it); otherwise the batch's outcome: retryable when a rotation may still come (re-read too
    /// soon, or the read failed), definitive when the token cannot change or did not.
    async fn refresh_token(
        &self,
        reason: &str,
        used: &Secret,
        n: usize,
        deadline: Option<Instant>,
    ) -> Result<(), Batch> {
        let reread = async {
            let refreshed = self.tokens.refresh().await;
            (refreshed, self.tokens.token().await)
        };
        let Some((refreshed, current)) = self.until_cut(deadline, reread).await else {
            return Err(self.cut(Some(reason)));
        };
        let outcome = match (refreshed, current) {
            (Ok(r), Ok(new)) if new != *used => {
                tracing::info!(refresh = ?r, "{reason}: retrying with the re-read token");
                return Ok(());
            }
            (Ok(Refresh::TooSoon), Ok(_)) => {
                // A rotation may have happened since the last read; the next run (or a retry
                // after the interval) can read it: not a definitive failure.
                tracing::warn!(
                    events = n,
                    "{reason}: the token was re-read less than the minimum interval ago"
                );
                EventOutcome::Retryable {
                    reason: format!(
                        "{reason}: the token was re-read less than the minimum interval ago; will re-read later"
                    ),
                }
            }
            (Ok(r), Ok(_)) => {
                let why = if r == Refresh::Fixed {
                    "the token comes from DT_API_TOKEN and cannot change"
                } else {
                    "the re-read token is the same"
                };
                tracing::error!(events = n, "{reason}: {why}");
                EventOutcome::Definitive {
                    reason: format!("{reason}: {why}; check the token and its scope"),
                }
            }
            (Err(e), _) | (_, Err(e)) => {
                tracing::error!(events = n, error = %e, "{reason}: re-reading the token failed");
                EventOutcome::Retryable {
                    reason: format!("{reason}; re-reading the token failed: {e}"),
                }
            }
        };
        Err(Batch::Done(outcome))
    }
}

/// What one attempt of a batch needs to carry out its verdict.
struct AttemptCtx<'a> {
    events: usize,
    bytes: usize,
    attempts: u32,
    /// The token the attempt used (a re-read must differ from it).
    token: &'a Secret,
    deadline: Option<Instant>,
}

/// What [`HttpSink::send_batch`] made of a batch.
enum Batch {
    /// One outcome for every event of the batch.
    Done(EventOutcome),
    /// Send it again in halves.
    Split(SplitCause),
}

#[derive(Debug, Default)]
struct Counters {
    requests: AtomicU64,
    retries: AtomicU64,
    throttled: AtomicU64,
    events_sent: AtomicU64,
}

#[async_trait]
impl Sink for HttpSink {
    async fn send(&self, events: &[OutEvent], deadline: Option<Instant>) -> SendReport {
        let stats = Counters::default();
        let batches = plan_batches(events, self.cfg.max_batch_bytes, self.max_batch_events);
        let per_batch = futures::future::join_all(
            batches
                .into_iter()
                .map(|r| self.send_range(events, r, deadline, &stats)),
        )
        .await;
        let outcomes: Vec<EventOutcome> = per_batch.into_iter().flatten().collect();
        debug_assert_eq!(outcomes.len(), events.len());
        SendReport {
            outcomes,
            stats: SendStats {
                requests: stats.requests.load(Ordering::Relaxed),
                retries: stats.retries.load(Ordering::Relaxed),
                throttled: stats.throttled.load(Ordering::Relaxed),
                events_sent: stats.events_sent.load(Ordering::Relaxed),
            },
        }
    }
}
