//! Numeric settings that both entry points take: the CLI as flags, the Lambda as environment
//! variables. One definition of each range and default, so `--lease` and `DEDUP_LEASE_SECONDS`
//! (and the others) cannot drift apart. The CloudFormation parameters may narrow a range for the
//! deployment (the lease to 90..300 s, to fit the queue's visibility timeout), never widen it.

/// An inclusive range of whole numbers with its default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    pub min: u32,
    pub max: u32,
    pub default: u32,
}

impl Range {
    pub fn contains(&self, n: u32) -> bool {
        (self.min..=self.max).contains(&n)
    }

    /// The range for clap's `value_parser!(u64).range(..)`.
    pub fn clap(&self) -> std::ops::RangeInclusive<u64> {
        u64::from(self.min)..=u64::from(self.max)
    }
}

/// Claim lease, seconds (`--lease`, `DEDUP_LEASE_SECONDS`): a claim left by a crashed sender is
/// taken over after this long.
pub const LEASE_SECONDS: Range = Range {
    min: 1,
    max: 3600,
    default: 300,
};

/// Days a dedup record is kept after its last update (`--retention-days`, `DEDUP_TTL_DAYS`);
/// GuardDuty keeps findings 90 days.
pub const RETENTION_DAYS: Range = Range {
    min: 1,
    max: 3650,
    default: 90,
};

/// Senders sharing the rate limits (`--max-concurrency`, `MAX_CONCURRENCY`: the event source
/// mapping's maximum concurrency).
pub const MAX_CONCURRENCY: Range = Range {
    min: 1,
    max: 1000,
    default: 2,
};
