//! SIGINT/SIGTERM handling for long-running commands: the first signal asks the command to stop
//! taking new work (it finishes or releases what is in flight), a second one exits at once.
//!
//! "What is in flight" is bounded: [`InterruptibleSink`] gives requests already on the wire a
//! short grace, then abandons the send (its retries, backoff, `Retry-After` and rate-limit waits),
//! so an interrupted run against a refusing or throttling endpoint stops in seconds, not after
//! its lease budget.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use gdfwd_core::sink::{EventOutcome, OutEvent, SendReport, Sink};
use tokio::sync::watch;

#[derive(Debug, Clone)]
pub struct Interrupt {
    tx: std::sync::Arc<watch::Sender<bool>>,
}

/// Exit status after an interruption (128 + SIGINT).
pub const EXIT_INTERRUPTED: u8 = 130;

impl Interrupt {
    /// Installs the handlers. Must be called inside the tokio runtime.
    pub fn install() -> Self {
        let flag = Self {
            tx: std::sync::Arc::new(watch::channel(false).0),
        };
        let f = flag.clone();
        tokio::spawn(async move {
            wait_for_signal().await;
            tracing::warn!(
                "interrupted: finishing the work in flight; interrupt again to exit at once"
            );
            eprintln!(
                "gdfwd: interrupted, finishing the requests in flight for up to {}s, then releasing what is unsent (interrupt again to exit at once)",
                INTERRUPT_GRACE.as_secs()
            );
            f.tx.send_replace(true);
            wait_for_signal().await;
            eprintln!(
                "gdfwd: interrupted twice, exiting; in-flight claims free themselves when their lease ends"
            );
            std::process::exit(i32::from(EXIT_INTERRUPTED));
        });
        flag
    }

    pub fn is_set(&self) -> bool {
        *self.tx.borrow()
    }

    /// Resolves once the first signal has arrived.
    pub async fn wait(&self) {
        let mut rx = self.tx.subscribe();
        let _ = rx.wait_for(|set| *set).await;
    }
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// How long requests already sent may still complete after an interrupt.
pub const INTERRUPT_GRACE: Duration = Duration::from_secs(5);

/// A sink whose sends end [`INTERRUPT_GRACE`] after an interrupt. Events not confirmed by then
/// are reported retryable ("interrupted"), so the pipeline releases their claims and the next
/// run sends them. A request Dynatrace accepted while it was being abandoned is sent again by
/// that run, with the same event ids (at least once, as after a crash).
#[derive(Debug)]
pub struct InterruptibleSink {
    inner: Arc<dyn Sink>,
    interrupt: Interrupt,
    grace: Duration,
}

impl InterruptibleSink {
    pub fn new(inner: Arc<dyn Sink>, interrupt: Interrupt) -> Self {
        Self {
            inner,
            interrupt,
            grace: INTERRUPT_GRACE,
        }
    }
}

fn interrupted(events: &[OutEvent], why: &str) -> SendReport {
    SendReport {
        outcomes: events
            .iter()
            .map(|_| EventOutcome::Retryable {
                reason: why.to_owned(),
            })
            .collect(),
        stats: Default::default(),
    }
}

#[async_trait]
impl Sink for InterruptibleSink {
    async fn send(&self, events: &[OutEvent], deadline: Option<Instant>) -> SendReport {
        if self.interrupt.is_set() {
            return interrupted(events, "interrupted before sending");
        }
        let stop = async {
            self.interrupt.wait().await;
            tokio::time::sleep(self.grace).await;
        };
        tokio::select! {
            report = self.inner.send(events, deadline) => report,
            () = stop => {
                tracing::warn!(events = events.len(), "interrupted: abandoning the send; its claims are released");
                interrupted(events, "interrupted while sending")
            }
        }
    }
}
