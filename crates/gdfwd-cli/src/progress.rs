//! The progress bar of `gdfwd forward`: bytes read of the input's known size (so the ETA comes
//! from file sizes, compressed sizes for gzip, or the S3 listing's object sizes for an `s3://`
//! input), findings handled and their rate, on stderr.
//!
//! Only on a terminal, and not while a dry run prints its events on the same terminal; otherwise
//! nothing (the one-line summary at the end is printed either way). Messages printed while the bar
//! is shown go through [`Progress::println`] so they do not tear it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

#[derive(Debug)]
pub struct Progress {
    bar: Option<ProgressBar>,
    /// Bytes read so far (shared with the reader).
    read: Arc<AtomicU64>,
    started: Instant,
}

impl Progress {
    /// A bar when `show`; `total`: the input's size when every source's is known.
    pub fn new(show: bool, total: Option<u64>, read: Arc<AtomicU64>) -> Self {
        let bar = show.then(|| {
            let (bar, template) = match total {
                Some(t) => (
                    ProgressBar::with_draw_target(Some(t), ProgressDrawTarget::stderr()),
                    "{elapsed_precise} [{bar:30}] {bytes}/{total_bytes} {msg} ETA {eta}",
                ),
                None => (
                    ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr()),
                    "{spinner} {elapsed_precise} {bytes} read, {msg}",
                ),
            };
            if let Ok(style) = ProgressStyle::with_template(template) {
                bar.set_style(style.progress_chars("=> "));
            }
            bar.enable_steady_tick(Duration::from_millis(250));
            bar
        });
        Self {
            bar,
            read,
            started: Instant::now(),
        }
    }

    /// `findings`: handled so far (whatever their outcome).
    pub fn update(&self, findings: u64) {
        let Some(bar) = &self.bar else { return };
        bar.set_position(self.read.load(Ordering::Relaxed));
        let secs = self.started.elapsed().as_secs_f64().max(0.001);
        bar.set_message(format!(
            "{findings} findings ({:.0}/s)",
            findings as f64 / secs
        ));
    }

    /// Prints a line on stderr above the bar.
    pub fn println(&self, line: &str) {
        match &self.bar {
            Some(bar) => bar.suspend(|| eprintln!("{line}")),
            None => eprintln!("{line}"),
        }
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
