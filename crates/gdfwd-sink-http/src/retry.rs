//! The retry policy: pure, so every branch is unit-tested without a server or a clock.
//!
//! The sender describes what one attempt produced ([`Attempt`]) and how far the batch got
//! ([`BatchState`]); [`RetryPolicy::decide`] answers with a [`Decision`] carrying a human-readable
//! reason that ends up in the per-event outcome and in logs. Randomness (jitter) and the current
//! time (for `Retry-After` dates) are parameters, not hidden inputs.

use std::time::{Duration, SystemTime};

use crate::config::RetryConfig;

/// What one HTTP attempt produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    /// An answer with this status and, when present, the `Retry-After` header value.
    Status {
        status: u16,
        retry_after: Option<String>,
    },
    /// The connection could not be made (refused, DNS, TLS handshake).
    Connect(String),
    /// The per-attempt timeout expired.
    Timeout(String),
    /// The connection broke while sending or waiting for the answer.
    Transport(String),
    /// The token cannot be put in an HTTP header (control characters); nothing was sent.
    InvalidToken,
}

/// Where the batch stands when deciding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchState {
    /// Attempts made so far, including the one being judged (1 after the first).
    pub attempts: u32,
    /// Events in the batch.
    pub events: usize,
    /// Whether this batch already had its one token refresh after a 401.
    pub token_refreshed: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Accepted.
    Sent,
    /// Try again after `wait`.
    Retry { wait: Duration, reason: String },
    /// Refresh the token, then retry at once.
    RefreshToken { reason: String },
    /// Split the batch in halves and send each: 413 (too large) or 400 (refused as invalid) for
    /// more than one event.
    Split { reason: String, cause: SplitCause },
    /// Stop. `retryable`: a later run may succeed.
    GiveUp { retryable: bool, reason: String },
}

/// Why a batch is split, which decides when splitting stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SplitCause {
    /// 413: halves get smaller until they fit; a single event that still does not fit is refused.
    TooLarge,
    /// 400: OpenPipeline refuses a whole request for one invalid event. Halving isolates the
    /// refused events so the valid ones are still delivered; the sender stops halving when every
    /// part it tried was refused, since the refusal is then not about particular events.
    Refused,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RetryPolicy {
    cfg: RetryConfig,
}

impl RetryPolicy {
    pub fn new(cfg: RetryConfig) -> Self {
        Self { cfg }
    }

    /// Exponential backoff with full jitter: uniform in `[0, min(cap, initial * 2^(attempts-1))]`.
    /// `jitter` is a sample in `[0, 1)`.
    pub fn backoff(&self, attempts: u32, jitter: f64) -> Duration {
        let exp = attempts.saturating_sub(1).min(30);
        let ceiling = self
            .cfg
            .initial_backoff
            .saturating_mul(1u32 << exp)
            .min(self.cfg.max_backoff);
        ceiling.mul_f64(jitter.clamp(0.0, 1.0))
    }

    /// Decides what to do after an attempt: the answer's verdict when it has one (sent, refresh
    /// the token, split, give up), else a retry unless attempts or `Retry-After` say otherwise.
    pub fn decide(
        &self,
        attempt: &Attempt,
        batch: BatchState,
        now: SystemTime,
        jitter: f64,
    ) -> Decision {
        let (reason, retry_after) = match classify(attempt, batch, now) {
            Ok(retryable) => retryable,
            Err(verdict) => return verdict,
        };
        if batch.attempts >= self.cfg.max_attempts {
            return Decision::GiveUp {
                retryable: true,
                reason: format!("{reason} (gave up after {} attempts)", batch.attempts),
            };
        }
        match retry_after {
            Some(wait) if wait > self.cfg.max_retry_after => Decision::GiveUp {
                retryable: true,
                reason: format!(
                    "{reason} with Retry-After {}s (longer than the {}s we wait)",
                    wait.as_secs(),
                    self.cfg.max_retry_after.as_secs()
                ),
            },
            Some(wait) => Decision::Retry {
                wait,
                reason: format!("{reason} (Retry-After {:.1}s)", wait.as_secs_f64()),
            },
            None => Decision::Retry {
                wait: self.backoff(batch.attempts, jitter),
                reason,
            },
        }
    }
}

/// An attempt's own verdict (`Err`), or why it is worth retrying and the server's `Retry-After`.
fn classify(
    attempt: &Attempt,
    batch: BatchState,
    now: SystemTime,
) -> Result<(String, Option<Duration>), Decision> {
    match attempt {
        Attempt::Status { status, .. } if (200..300).contains(status) => Err(Decision::Sent),
        Attempt::Status { status: 401, .. } => Err(if batch.token_refreshed {
            Decision::GiveUp {
                retryable: false,
                reason: "HTTP 401 Unauthorized, also after re-reading the token: check the token and its scope (openpipeline.events_security)".into(),
            }
        } else {
            Decision::RefreshToken {
                reason: "HTTP 401 Unauthorized".into(),
            }
        }),
        Attempt::Status { status: 413, .. } => Err(if batch.events > 1 {
            Decision::Split {
                reason: format!("HTTP 413 Payload Too Large for {} events", batch.events),
                cause: SplitCause::TooLarge,
            }
        } else {
            Decision::GiveUp {
                retryable: false,
                reason: "HTTP 413 Payload Too Large for a single event".into(),
            }
        }),
        Attempt::Status { status: 400, .. } if batch.events > 1 => Err(Decision::Split {
            reason: format!("HTTP 400 Bad Request for {} events", batch.events),
            cause: SplitCause::Refused,
        }),
        Attempt::Status {
            status,
            retry_after,
        } if is_retryable_status(*status) => {
            let wait = retry_after
                .as_deref()
                .and_then(|v| parse_retry_after(v, now));
            Ok((format!("HTTP {status} {}", status_text(*status)), wait))
        }
        Attempt::Status { status, .. } => Err(Decision::GiveUp {
            retryable: false,
            reason: format!("HTTP {status} {}", status_text(*status)),
        }),
        // The configuration is wrong, not the events: keep them for a run with a good token
        // (token sources refuse such a token where they read it; this is the last guard).
        Attempt::InvalidToken => Err(Decision::GiveUp {
            retryable: true,
            reason: "the API token contains characters not allowed in an HTTP header".into(),
        }),
        Attempt::Connect(e) => Ok((format!("connection failed: {e}"), None)),
        Attempt::Timeout(e) => Ok((format!("timed out: {e}"), None)),
        Attempt::Transport(e) => Ok((format!("connection broken: {e}"), None)),
    }
}

/// Statuses worth retrying: throttling, and server errors other than "not implemented" and
/// "HTTP version not supported", which will not change.
pub fn is_retryable_status(status: u16) -> bool {
    matches!(status, 408 | 429) || ((500..600).contains(&status) && !matches!(status, 501 | 505))
}

/// `Retry-After` as delta-seconds or an HTTP date (a date in the past means "now").
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let v = value.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(v).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

fn status_text(status: u16) -> &'static str {
    reqwest::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy::new(RetryConfig::default())
    }

    fn st(status: u16, retry_after: Option<&str>) -> Attempt {
        Attempt::Status {
            status,
            retry_after: retry_after.map(str::to_owned),
        }
    }

    fn batch(attempts: u32, events: usize) -> BatchState {
        BatchState {
            attempts,
            events,
            token_refreshed: false,
        }
    }

    const NOW: fn() -> SystemTime = SystemTime::now;

    #[test]
    fn success_statuses() {
        for s in [200, 202, 204] {
            assert_eq!(
                policy().decide(&st(s, None), batch(1, 3), NOW(), 0.5),
                Decision::Sent
            );
        }
    }

    #[test]
    fn retryable_statuses_and_transport_errors_back_off() {
        for a in [
            st(429, None),
            st(500, None),
            st(502, None),
            st(503, None),
            st(504, None),
            Attempt::Connect("refused".into()),
            Attempt::Timeout("10s".into()),
            Attempt::Transport("reset".into()),
        ] {
            match policy().decide(&a, batch(1, 3), NOW(), 0.999) {
                Decision::Retry { wait, reason } => {
                    assert!(wait <= Duration::from_millis(200), "{a:?}: {wait:?}");
                    assert!(!reason.is_empty());
                }
                d => panic!("{a:?} gave {d:?}"),
            }
        }
    }

    #[test]
    fn definitive_statuses() {
        for s in [400, 403, 404, 405, 501] {
            // 400 for several events splits the batch (below); for one event it is definitive.
            let events = if s == 400 { 1 } else { 3 };
            match policy().decide(&st(s, None), batch(1, events), NOW(), 0.5) {
                Decision::GiveUp {
                    retryable: false,
                    reason,
                } => {
                    assert!(reason.contains(&s.to_string()), "{reason}")
                }
                d => panic!("{s} gave {d:?}"),
            }
        }
    }

    #[test]
    fn unauthorized_refreshes_once_then_gives_up() {
        assert!(matches!(
            policy().decide(&st(401, None), batch(1, 3), NOW(), 0.5),
            Decision::RefreshToken { .. }
        ));
        let refreshed = BatchState {
            token_refreshed: true,
            ..batch(2, 3)
        };
        assert!(matches!(
            policy().decide(&st(401, None), refreshed, NOW(), 0.5),
            Decision::GiveUp {
                retryable: false,
                ..
            }
        ));
    }

    #[test]
    fn bad_request_splits_until_one_event() {
        assert!(matches!(
            policy().decide(&st(400, None), batch(1, 2), NOW(), 0.5),
            Decision::Split {
                cause: SplitCause::Refused,
                ..
            }
        ));
        // One event alone is the invalid one: definitive, never retried.
        assert!(matches!(
            policy().decide(&st(400, None), batch(1, 1), NOW(), 0.5),
            Decision::GiveUp {
                retryable: false,
                ..
            }
        ));
    }

    #[test]
    fn payload_too_large_splits_until_one_event() {
        assert!(matches!(
            policy().decide(&st(413, None), batch(1, 2), NOW(), 0.5),
            Decision::Split {
                cause: SplitCause::TooLarge,
                ..
            }
        ));
        assert!(matches!(
            policy().decide(&st(413, None), batch(1, 1), NOW(), 0.5),
            Decision::GiveUp {
                retryable: false,
                ..
            }
        ));
    }

    #[test]
    fn backoff_grows_exponentially_and_is_capped() {
        let p = policy();
        let just_below_one = 0.99;
        let ceilings: Vec<u128> = (1..=10)
            .map(|a| p.backoff(a, just_below_one).as_millis())
            .collect();
        assert_eq!(ceilings[..4], [198, 396, 792, 1584]);
        assert!(ceilings.iter().all(|&c| c < 20_000));
        assert_eq!(p.backoff(10, just_below_one).as_millis(), 19_800);
        assert_eq!(p.backoff(50, 0.0), Duration::ZERO);
        assert_eq!(p.backoff(3, 0.5), Duration::from_millis(400));
    }

    #[test]
    fn retry_after_seconds_and_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(parse_retry_after("7", now), Some(Duration::from_secs(7)));
        let date = httpdate::fmt_http_date(now + Duration::from_secs(30));
        assert_eq!(parse_retry_after(&date, now), Some(Duration::from_secs(30)));
        let past = httpdate::fmt_http_date(now - Duration::from_secs(30));
        assert_eq!(parse_retry_after(&past, now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon", now), None);

        match policy().decide(&st(429, Some("3")), batch(1, 1), now, 0.0) {
            Decision::Retry { wait, reason } => {
                assert_eq!(wait, Duration::from_secs(3));
                assert!(
                    reason.contains("429") && reason.contains("Retry-After"),
                    "{reason}"
                );
            }
            d => panic!("{d:?}"),
        }
        assert!(matches!(
            policy().decide(&st(503, Some("3600")), batch(1, 1), now, 0.0),
            Decision::GiveUp {
                retryable: true,
                ..
            }
        ));
    }

    #[test]
    fn attempts_are_bounded() {
        let p = RetryPolicy::new(RetryConfig {
            max_attempts: 3,
            ..RetryConfig::default()
        });
        assert!(matches!(
            p.decide(&st(503, None), batch(2, 1), NOW(), 0.5),
            Decision::Retry { .. }
        ));
        match p.decide(&st(503, None), batch(3, 1), NOW(), 0.5) {
            Decision::GiveUp {
                retryable: true,
                reason,
            } => assert!(reason.contains("3 attempts"), "{reason}"),
            d => panic!("{d:?}"),
        }
    }
}
