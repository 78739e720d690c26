//! SIGINT/SIGTERM handling for long-running commands: the first signal asks the command to stop
//! taking new work (it finishes or releases what is in flight), a second one exits at once.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

#[derive(Debug, Clone, Default)]
pub struct Interrupt(Arc<AtomicBool>);

/// Exit status after an interruption (128 + SIGINT).
pub const EXIT_INTERRUPTED: u8 = 130;

impl Interrupt {
    /// Installs the handlers. Must be called inside the tokio runtime.
    pub fn install() -> Self {
        let flag = Self::default();
        let f = flag.clone();
        tokio::spawn(async move {
            wait_for_signal().await;
            tracing::warn!(
                "interrupted: finishing the work in flight; interrupt again to exit at once"
            );
            eprintln!(
                "gdfwd: interrupted, finishing the work in flight (interrupt again to exit at once)"
            );
            f.0.store(true, Ordering::SeqCst);
            wait_for_signal().await;
            eprintln!(
                "gdfwd: interrupted twice, exiting; in-flight claims free themselves when their lease ends"
            );
            std::process::exit(i32::from(EXIT_INTERRUPTED));
        });
        flag
    }

    pub fn is_set(&self) -> bool {
        self.0.load(Ordering::SeqCst)
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
