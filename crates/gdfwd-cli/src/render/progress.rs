//! The backfill's progress on stderr, the two renderings of `gdfwd_core::backfill::Progress`:
//! [`BarsProgress`] (an `indicatif` bar per region) on a terminal, [`LogProgress`] (a plain line
//! per region every interval) otherwise; `--quiet` takes the engine's `NoProgress`.
//! A listing gives no totals, so a bar measures how far through the requested `updatedAt` range
//! the region's listing is (findings are listed oldest first): that yields an honest ETA without
//! counting findings up front.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use gdfwd_core::backfill::{Progress, RegionCounts};
use gdfwd_model::Timestamp;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

fn line(region: &str, c: RegionCounts) -> String {
    format!(
        "{region}: listed {} fetched {} sent {} duplicates {} failed {}",
        c.listed, c.fetched, c.sent, c.duplicates, c.failed
    )
}

/// Plain log lines on stderr, at most one per region per `every`.
#[derive(Debug)]
pub struct LogProgress {
    every: Duration,
    last: Mutex<HashMap<String, Instant>>,
}

impl LogProgress {
    pub fn new(every: Duration) -> Self {
        Self {
            every,
            last: Mutex::new(HashMap::new()),
        }
    }
}

impl Progress for LogProgress {
    fn start(&self, region: &str, from: Timestamp, to: Timestamp) {
        eprintln!("gdfwd backfill: {region}: listing findings updated from {from} to {to}");
    }

    fn update(&self, region: &str, counts: RegionCounts, reached: Option<Timestamp>) {
        let mut last = self
            .last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = Instant::now();
        let due = last
            .get(region)
            .is_none_or(|t| now.duration_since(*t) >= self.every);
        if due {
            last.insert(region.to_owned(), now);
            let at = reached.map(|t| format!(", at {t}")).unwrap_or_default();
            eprintln!("gdfwd backfill: {}{at}", line(region, counts));
        }
    }

    fn finish(&self, region: &str, counts: RegionCounts, error: Option<&str>) {
        match error {
            Some(e) => eprintln!("gdfwd backfill: {} — stopped: {e}", line(region, counts)),
            None => eprintln!("gdfwd backfill: {} — done", line(region, counts)),
        }
    }
}

/// One `indicatif` bar per region (position: per-mille of the time range listed).
#[derive(Debug)]
pub struct BarsProgress {
    multi: MultiProgress,
    bars: Mutex<HashMap<String, (ProgressBar, Timestamp, Timestamp)>>,
}

impl Default for BarsProgress {
    fn default() -> Self {
        Self::new()
    }
}

impl BarsProgress {
    pub fn new() -> Self {
        Self {
            multi: MultiProgress::with_draw_target(ProgressDrawTarget::stderr()),
            bars: Mutex::new(HashMap::new()),
        }
    }

    fn bars(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<String, (ProgressBar, Timestamp, Timestamp)>> {
        self.bars
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

const BAR_LEN: u64 = 1000;

impl Progress for BarsProgress {
    fn start(&self, region: &str, from: Timestamp, to: Timestamp) {
        let bar = self.multi.add(ProgressBar::new(BAR_LEN));
        let style = ProgressStyle::with_template(
            "{prefix:>15} [{bar:30}] {percent:>3}% {msg} ({per_sec}, ETA {eta})",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
        bar.set_style(style);
        bar.set_prefix(region.to_owned());
        bar.enable_steady_tick(Duration::from_millis(250));
        self.bars().insert(region.to_owned(), (bar, from, to));
    }

    fn update(&self, region: &str, c: RegionCounts, reached: Option<Timestamp>) {
        let bars = self.bars();
        let Some((bar, from, to)) = bars.get(region) else {
            return;
        };
        if let Some(t) = reached {
            let span = (to.millis() - from.millis()).max(1);
            let done = (t.millis() - from.millis()).clamp(0, span);
            let pos = u64::try_from(i128::from(done) * i128::from(BAR_LEN) / i128::from(span))
                .unwrap_or(0);
            bar.set_position(pos.min(BAR_LEN));
        }
        bar.set_message(format!(
            "listed {} fetched {} sent {} dup {} failed {}",
            c.listed, c.fetched, c.sent, c.duplicates, c.failed
        ));
    }

    fn finish(&self, region: &str, c: RegionCounts, error: Option<&str>) {
        let bars = self.bars();
        if let Some((bar, _, _)) = bars.get(region) {
            match error {
                Some(e) => bar.abandon_with_message(format!("{} — stopped: {e}", line(region, c))),
                None => {
                    bar.set_position(BAR_LEN);
                    bar.finish_with_message(format!(
                        "listed {} fetched {} sent {} dup {} failed {} — done",
                        c.listed, c.fetched, c.sent, c.duplicates, c.failed
                    ));
                }
            }
        }
    }
}
