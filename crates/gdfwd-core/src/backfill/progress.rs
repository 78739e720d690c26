//! The backfill engine's progress observer: the engine calls [`Progress`], the CLI renders it
//! (bars on a terminal, log lines otherwise; `gdfwd-cli/src/render/progress.rs`), so the engine
//! carries no terminal code.
//!
//! A listing gives no totals, so a rendering measures how far through the requested `updatedAt`
//! range a region's listing is (findings are listed oldest first): `start` gives the range,
//! `update` the `updatedAt` reached.

use gdfwd_model::Timestamp;

/// Counters of one region, as the engine reports them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RegionCounts {
    pub listed: u64,
    pub fetched: u64,
    pub sent: u64,
    pub duplicates: u64,
    pub failed: u64,
}

pub trait Progress: Send + Sync + std::fmt::Debug {
    /// A region starts; its listing covers `updatedAt` in `[from, to)`.
    fn start(&self, region: &str, from: Timestamp, to: Timestamp);
    /// The region's counters and the `updatedAt` reached so far.
    fn update(&self, region: &str, counts: RegionCounts, reached: Option<Timestamp>);
    /// The region is done (`error` when it stopped on one).
    fn finish(&self, region: &str, counts: RegionCounts, error: Option<&str>);
}

/// Reports nothing (tests, `--quiet`).
#[derive(Debug, Default, Clone, Copy)]
pub struct NoProgress;

impl Progress for NoProgress {
    fn start(&self, _: &str, _: Timestamp, _: Timestamp) {}
    fn update(&self, _: &str, _: RegionCounts, _: Option<Timestamp>) {}
    fn finish(&self, _: &str, _: RegionCounts, _: Option<&str>) {}
}
