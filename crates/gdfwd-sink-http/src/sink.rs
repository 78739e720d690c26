//! [`HttpSink`]: the [`Sink`] that delivers events to OpenPipeline.
//!
//! Per batch, in this order: wait for a slot among `max_in_flight` (shared by every `send` call
//! on this sink), then loop over attempts; each attempt first waits for the rate limiters (so
//! retries consume the same budget as first attempts), then POSTs with the per-attempt timeout
//! (shortened to the deadline). The pure [`RetryPolicy`] decides what follows each answer; a 413
//! (too large) or a 400 (OpenPipeline refuses the whole request for one invalid event) splits the
//! batch in halves, which are sent in turn under the same slot, so one bad event fails alone.
//!
//! A stop signal ([`HttpSink::with_stop`], the CLI's interrupt) ends every wait at once (the
//! in-flight slot, the rate limiters, a retry's backoff or `Retry-After`) as the deadline would,
//! but never a request already on the wire: its answer is still recorded, so an accepted batch is
//! committed, not released and sent again by the next run.
//!
//! Every input event gets exactly one outcome: batches are contiguous ranges of the input, each
//! range's future returns one outcome per event of the range, and the ranges are joined in order.

use std::collections::VecDeque;
use std::future::Future;
use std::num::NonZeroU32;
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
use crate::request::{gzip, halves, json_array, plan_batches};
use crate::retry::{Attempt, BatchState, Decision, RetryPolicy, SplitCause};
use crate::service::Service;
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
    /// event does not take its batch-mates down with it).
    ///
    /// Halves are sent level by level (breadth first). While nothing of the range has been
    /// accepted and every part of a level at quarter size or below was refused, the refusal may
    /// not be about particular events (a wrong payload format, a pipeline change), or invalid
    /// events may sit in every part (every other event invalid). Only single events can tell:
    /// the other parts are set aside and one part is halved down to single events, two requests a
    /// level. If anything is accepted on the way, the parts set aside come back and halving goes on
    /// to single events everywhere, each event decided for itself. If everything down to single
    /// events is refused, the refusal is about the payload and the parts set aside are refused
    /// without further requests: 1 + 2 + 4 requests, then 2 per level below quarters (15 for 64
    /// events, about 21 for 1000) instead of 2n - 1.
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
        // (range, level): level 0 is the planned batch, level k its parts of 1/2^k.
        let mut work = VecDeque::from([(range, 0usize)]);
        // Per level: parts tried, and parts refused (400 split or definitive failure).
        let mut levels: Vec<(usize, usize)> = Vec::new();
        let mut any_sent = false;
        // Parts set aside while one part is halved down to single events (see above), and
        // whether that probe ended without a verdict (then halving simply goes on).
        let mut parked: Vec<(Range<usize>, usize)> = Vec::new();
        let mut inconclusive = false;
        // The level and size of the last part sent.
        let mut last = (0usize, usize::MAX);
        loop {
            // Whether the next part starts a level deeper than the last one sent.
            let deeper = work.front().is_some_and(|(_, level)| *level > last.0);
            let suspected = !any_sent
                && !inconclusive
                && deeper
                && work
                    .front()
                    .is_some_and(|(_, level)| systemic_refusal(&levels, *level).is_some());
            if suspected {
                // Keep the first part and its sibling; set the rest aside.
                parked.extend(work.drain(2.min(work.len())..));
            } else if !parked.is_empty() && (any_sent || deeper) {
                // Something was accepted, or a level was not refused as a whole: not systemic.
                inconclusive |= !any_sent;
                work.extend(parked.drain(..));
            }
            let Some((r, level)) = work.pop_front() else {
                if parked.is_empty() {
                    break;
                }
                let (level, size) = last;
                let all_refused = levels.get(level).is_some_and(|&(t, f)| t > 0 && t == f);
                if any_sent || !all_refused {
                    inconclusive |= !any_sent;
                    work.extend(parked.drain(..));
                    continue;
                }
                let reason = format!(
                    "not sent: Dynatrace refused every part of this batch it was sent, down to parts of {size} event(s); the refusal is not about particular events"
                );
                for (rest, _) in parked.drain(..) {
                    for slot in &mut out[rest.start - base..rest.end - base] {
                        *slot = Some(EventOutcome::Definitive {
                            reason: reason.clone(),
                        });
                    }
                }
                break;
            };
            if levels.len() <= level {
                levels.resize(level + 1, (0, 0));
            }
            levels[level].0 += 1;
            last = (level, r.len());
            match self.send_batch(&events[r.clone()], deadline, stats).await {
                Batch::Done(outcome) => {
                    match outcome {
                        EventOutcome::Definitive { .. } => levels[level].1 += 1,
                        EventOutcome::Sent { .. } => any_sent = true,
                        EventOutcome::Retryable { .. } => {}
                    }
                    for slot in &mut out[r.start - base..r.end - base] {
                        *slot = Some(outcome.clone());
                    }
                }
                Batch::Split(cause) => {
                    if cause == SplitCause::Refused {
                        levels[level].1 += 1;
                    }
                    let (a, b) = halves(&r);
                    work.push_back((a, level + 1));
                    work.push_back((b, level + 1));
                }
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

    /// Sends one batch with retries, or says to split it.
    async fn send_batch(
        &self,
        batch: &[OutEvent],
        deadline: Option<Instant>,
        stats: &Counters,
    ) -> Batch {
        let plain = json_array(batch);
        let (payload, gz) = if self.cfg.compress {
            match gzip(&plain) {
                Ok(z) => (Bytes::from(z), true),
                Err(e) => {
                    tracing::warn!(error = %e, "gzip failed; sending uncompressed");
                    (Bytes::from(plain), false)
                }
            }
        } else {
            (Bytes::from(plain), false)
        };
        let n = batch.len();
        let mut attempts: u32 = 0;
        let mut token_refreshed = false;
        let mut last: Option<String> = None;
        let past_deadline = |last: &Option<String>| {
            Batch::Done(EventOutcome::Retryable {
                reason: self.cut_reason(last.as_deref()),
            })
        };
        loop {
            if deadline.is_some_and(|d| Instant::now() >= d) || self.is_stopped() {
                return past_deadline(&last);
            }
            if !self.acquire(n, deadline).await {
                return past_deadline(&last);
            }
            // Reading the token can wait on Secrets Manager (and on other batches reading it).
            let Some(token) = self.until_cut(deadline, self.tokens.token()).await else {
                return past_deadline(&last);
            };
            let token = match token {
                Ok(t) => t,
                Err(e) => {
                    return Batch::Done(EventOutcome::Retryable {
                        reason: format!("getting the API token: {e}"),
                    });
                }
            };
            let timeout = match deadline {
                Some(d) => self
                    .cfg
                    .timeout
                    .min(d.saturating_duration_since(Instant::now())),
                None => self.cfg.timeout,
            };
            // The last moment to not start a request: after this, its answer is awaited.
            if timeout.is_zero() || self.is_stopped() {
                return past_deadline(&last);
            }
            attempts += 1;
            stats.requests.fetch_add(1, Ordering::Relaxed);
            if attempts > 1 {
                stats.retries.fetch_add(1, Ordering::Relaxed);
            }
            let answer = self
                .service
                .post(payload.clone(), gz, &token, timeout)
                .await;
            if matches!(answer.attempt, Attempt::Status { status: 429, .. }) {
                stats.throttled.fetch_add(1, Ordering::Relaxed);
            }
            let state = BatchState {
                attempts,
                events: n,
                token_refreshed,
            };
            let decision = self.policy.decide(
                &answer.attempt,
                state,
                SystemTime::now(),
                rand::random::<f64>(),
            );
            match decision {
                Decision::Sent => {
                    stats.events_sent.fetch_add(n as u64, Ordering::Relaxed);
                    tracing::debug!(events = n, bytes = payload.len(), attempts, request_id = ?answer.request_id, "batch accepted");
                    return Batch::Done(EventOutcome::Sent {
                        request_id: answer.request_id,
                    });
                }
                Decision::Retry { wait, reason } => {
                    if deadline.is_some_and(|d| Instant::now() + wait >= d) {
                        tracing::warn!(events = n, attempts, %reason, "not retrying: the deadline comes first");
                        return past_deadline(&Some(reason));
                    }
                    tracing::warn!(events = n, attempts, wait_ms = wait.as_millis() as u64, %reason, "retrying batch");
                    last = Some(reason);
                    if self
                        .until_cut(None, tokio::time::sleep(wait))
                        .await
                        .is_none()
                    {
                        tracing::warn!(events = n, attempts, "not retrying: stopped");
                        return past_deadline(&last);
                    }
                }
                Decision::RefreshToken { reason } => {
                    token_refreshed = true;
                    let reread = async {
                        let refreshed = self.tokens.refresh().await;
                        (refreshed, self.tokens.token().await)
                    };
                    let Some((refreshed, current)) = self.until_cut(deadline, reread).await else {
                        return past_deadline(&Some(reason));
                    };
                    match (refreshed, current) {
                        (Ok(r), Ok(new)) if new != token => {
                            tracing::info!(refresh = ?r, "{reason}: retrying with the re-read token");
                            last = Some(reason);
                        }
                        (Ok(Refresh::TooSoon), Ok(_)) => {
                            // A rotation may have happened since the last read; the next run (or
                            // a retry after the interval) can read it: not a definitive failure.
                            tracing::warn!(
                                events = n,
                                "{reason}: the token was re-read less than the minimum interval ago"
                            );
                            return Batch::Done(EventOutcome::Retryable {
                                reason: format!(
                                    "{reason}: the token was re-read less than the minimum interval ago; will re-read later"
                                ),
                            });
                        }
                        (Ok(r), Ok(_)) => {
                            let why = if r == Refresh::Fixed {
                                "the token comes from DT_API_TOKEN and cannot change"
                            } else {
                                "the re-read token is the same"
                            };
                            tracing::error!(events = n, "{reason}: {why}");
                            return Batch::Done(EventOutcome::Definitive {
                                reason: format!("{reason}: {why}; check the token and its scope"),
                            });
                        }
                        (Err(e), _) | (_, Err(e)) => {
                            tracing::error!(events = n, error = %e, "{reason}: re-reading the token failed");
                            return Batch::Done(EventOutcome::Retryable {
                                reason: format!("{reason}; re-reading the token failed: {e}"),
                            });
                        }
                    }
                }
                Decision::Split { reason, cause } => {
                    tracing::info!(events = n, "{reason}: splitting the batch");
                    return Batch::Split(cause);
                }
                Decision::GiveUp { retryable, reason } => {
                    tracing::warn!(events = n, attempts, retryable, %reason, "giving up on batch");
                    return Batch::Done(if retryable {
                        EventOutcome::Retryable { reason }
                    } else {
                        EventOutcome::Definitive { reason }
                    });
                }
            }
        }
    }
}

/// What [`HttpSink::send_batch`] made of a batch.
enum Batch {
    /// One outcome for every event of the batch.
    Done(EventOutcome),
    /// Send it again in halves.
    Split(SplitCause),
}

/// The level whose parts were all refused, as the fraction's denominator (4 for quarters), when
/// that holds for a level of quarters or smaller: then a systemic refusal is suspected (see
/// [`HttpSink::send_range`]). Halves alone are not enough: two invalid events, one in each half,
/// refuse both.
fn systemic_refusal(levels: &[(usize, usize)], next: usize) -> Option<usize> {
    let last = next.checked_sub(1)?;
    let (tried, refused) = *levels.get(last)?;
    (last >= 2 && tried > 0 && refused == tried).then(|| 1usize << last.min(63))
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
