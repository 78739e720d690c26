//! Readiness: the checks only AWS can answer (does the table exist with our key schema, does the
//! secret hold a token), passed before the first event is touched.
//!
//! Why not at init: those are network round trips, and init (spawn to the first `/next`) is what
//! a cold start waits for. The checks start in the background at init instead, overlapping the
//! wait for the first event, and every invocation waits for them until they have passed once. A
//! failure fails the invocation with `Runtime.ConfigError` and a message starting with the
//! variable to fix, before any claim or send; SQS keeps the messages for redelivery. Only a
//! refusal is a failure (no such table or secret, access denied, wrong key schema or key name);
//! an outage (throttling, 5xx, no answer in time) is inconclusive: the invocation goes on and
//! the next one checks again. A failed check runs again at the next invocation too, so creating
//! the missing table or fixing the secret heals a running environment without a redeploy.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::task::JoinHandle;

/// A configuration AWS refused, as one message starting with the variable to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct NotReady(pub String);

/// What a run of the checks found, when AWS did not refuse the configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Checked {
    /// Everything answered and was right: never checked again.
    Passed,
    /// Some check got no verdict (an outage, no answer in time): go on, check again next time.
    Inconclusive,
}

type CheckFuture = std::pin::Pin<Box<dyn Future<Output = Result<Checked, NotReady>> + Send>>;

/// Runs the checks once more.
pub type Check = Arc<dyn Fn() -> CheckFuture + Send + Sync>;

/// Whether the checks have passed; waits for the run started at init.
pub struct Readiness {
    passed: AtomicBool,
    first: tokio::sync::Mutex<Option<JoinHandle<Result<Checked, NotReady>>>>,
    check: Check,
}

impl std::fmt::Debug for Readiness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Readiness")
            .field("passed", &self.passed.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl Readiness {
    /// Starts `check` in the background (call it inside the runtime, at init).
    pub fn start(check: Check) -> Self {
        let first = tokio::spawn(check());
        Self {
            passed: AtomicBool::new(false),
            first: tokio::sync::Mutex::new(Some(first)),
            check,
        }
    }

    /// `Ok` once the checks have passed (then at no cost); otherwise waits for the run started at
    /// init or runs them again. An inconclusive run is `Ok` too, and the next call checks again.
    pub async fn wait(&self) -> Result<(), NotReady> {
        if self.passed.load(Ordering::Acquire) {
            return Ok(());
        }
        let mut first = self.first.lock().await;
        if self.passed.load(Ordering::Acquire) {
            return Ok(());
        }
        let result = match first.take() {
            // A check that stopped (panicked) is no verdict on the configuration.
            Some(run) => run.await.unwrap_or_else(|e| {
                tracing::error!(error = %e, "the readiness check stopped; checking again at the next invocation");
                Ok(Checked::Inconclusive)
            }),
            None => (self.check)().await,
        };
        match result? {
            Checked::Passed => self.passed.store(true, Ordering::Release),
            Checked::Inconclusive => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// A check that is refused `failures` times, inconclusive `unsure` times, then passes; counts
    /// its runs.
    fn scripted(failures: usize, unsure: usize, runs: Arc<AtomicUsize>) -> Check {
        Arc::new(move || {
            let n = runs.fetch_add(1, Ordering::SeqCst);
            Box::pin(async move {
                if n < failures {
                    Err(NotReady(format!("DEDUP_TABLE_NAME: attempt {n} refused")))
                } else if n < failures + unsure {
                    Ok(Checked::Inconclusive)
                } else {
                    Ok(Checked::Passed)
                }
            })
        })
    }

    fn flaky(failures: usize, runs: Arc<AtomicUsize>) -> Check {
        scripted(failures, 0, runs)
    }

    #[tokio::test]
    async fn an_inconclusive_check_lets_the_invocation_go_on_and_runs_again() {
        let runs = Arc::new(AtomicUsize::new(0));
        let r = Readiness::start(scripted(0, 2, runs.clone()));
        assert_eq!(r.wait().await, Ok(()));
        assert_eq!(r.wait().await, Ok(()));
        assert_eq!(r.wait().await, Ok(()));
        assert_eq!(r.wait().await, Ok(()));
        assert_eq!(
            runs.load(Ordering::SeqCst),
            3,
            "checked until it passed, then not again"
        );
    }

    #[tokio::test]
    async fn a_failed_check_fails_each_wait_until_it_passes_then_never_runs_again() {
        let runs = Arc::new(AtomicUsize::new(0));
        let r = Readiness::start(flaky(2, runs.clone()));
        assert_eq!(
            r.wait().await,
            Err(NotReady("DEDUP_TABLE_NAME: attempt 0 refused".into()))
        );
        assert_eq!(
            r.wait().await,
            Err(NotReady("DEDUP_TABLE_NAME: attempt 1 refused".into()))
        );
        assert_eq!(r.wait().await, Ok(()));
        assert_eq!(r.wait().await, Ok(()));
        assert_eq!(runs.load(Ordering::SeqCst), 3, "not run again once passed");
    }

    #[tokio::test]
    async fn the_run_started_at_init_is_the_one_waited_for() {
        let runs = Arc::new(AtomicUsize::new(0));
        let r = Readiness::start(flaky(0, runs.clone()));
        assert_eq!(r.wait().await, Ok(()));
        assert_eq!(runs.load(Ordering::SeqCst), 1);
    }
}
