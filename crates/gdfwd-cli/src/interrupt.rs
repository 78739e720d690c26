//! SIGINT/SIGTERM handling for long-running commands: the first signal asks the command to stop
//! taking new work (it finishes or releases what is in flight), a second one exits at once.
//!
//! "What is in flight" is bounded: the sender gets [`Interrupt::subscribe`] as its stop signal
//! (`HttpSink::with_stop`), which ends its waits (slots, rate limits, backoff, `Retry-After`) at
//! once while requests already on the wire finish, so an interrupted run against a refusing or
//! throttling endpoint stops within a request timeout, not after its lease budget, and a batch
//! Dynatrace accepted is still committed.

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
                "gdfwd: interrupted, finishing the requests in flight, then releasing what is unsent (interrupt again to exit at once)"
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

    /// A receiver that turns `true` at the first signal (a sender's stop signal).
    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.tx.subscribe()
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
