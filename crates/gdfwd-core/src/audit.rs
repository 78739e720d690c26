//! Audit aggregation over the state store (`audit stats`): pure functions over
//! [`crate::store::FindingRecord`]s, so both backends give the same answers.
//!
//! The CLI fetches records with [`crate::store::StateStore::list`] / `history` and hands them
//! here; how the records, histories and these rows are printed (table, CSV, JSON) is the CLI's
//! (`gdfwd-cli/src/render/`): this module holds the data, not its presentation.

use crate::store::{FindingRecord, Status};
use gdfwd_model::Timestamp;
use std::collections::BTreeMap;

/// How `audit stats` groups findings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GroupBy {
    Account,
    /// The full finding type, e.g. `Recon:EC2/Portscan`.
    Type,
    /// GuardDuty's bands: critical (9.0–10.0), high (7.0–8.9), medium (4.0–6.9), low (below 4).
    Severity,
    /// The UTC day of `last_seen`.
    Day,
    /// One row for everything.
    None,
}

impl GroupBy {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Account => "account",
            Self::Type => "type",
            Self::Severity => "severity",
            Self::Day => "day",
            Self::None => "none",
        }
    }
}

impl std::str::FromStr for GroupBy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "account" => Self::Account,
            "type" => Self::Type,
            "severity" => Self::Severity,
            "day" => Self::Day,
            "none" => Self::None,
            other => {
                return Err(format!(
                    "unknown grouping {other:?}: expected account, type, severity, day or none"
                ));
            }
        })
    }
}

/// One row of `audit stats`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StatsRow {
    /// The group's value (an account id, a type, `critical`, a day `2025-02-25`, or `all`).
    pub key: String,
    /// Findings in the group.
    pub findings: u64,
    /// Finding versions received, as far as the counters tell: see [`received`].
    pub received: u64,
    /// Versions delivered (commits).
    pub sent: u64,
    pub duplicates: u64,
    pub stale: u64,
    /// Failed delivery attempts (releases).
    pub failed: u64,
    /// Findings whose latest version is claimed but not yet committed or released.
    pub pending: u64,
}

/// Versions of a finding the forwarder received, defined from the counters as
/// `versions_sent + duplicates + stale + failures + (1 if pending)`: every claim ends as exactly
/// one of sent, duplicate, stale, failed, or is still pending (an answer in flight is not an
/// end: its copy comes back and ends as one of those). It over-counts a version that
/// failed and was then sent on retry (one version, two attempts), and under-counts a claim whose
/// lease ran out and was re-claimed (no counter records the abandoned attempt); the store's
/// history has the exact story for one finding.
pub fn received(r: &FindingRecord) -> u64 {
    r.versions_sent
        .saturating_add(r.duplicates)
        .saturating_add(r.stale)
        .saturating_add(r.failures)
        .saturating_add(u64::from(r.status == Status::Pending))
}

/// The severity band of a GuardDuty severity (`unknown` when absent).
pub fn severity_band(severity: Option<f64>) -> &'static str {
    match severity {
        Some(s) if s >= 9.0 => "critical",
        Some(s) if s >= 7.0 => "high",
        Some(s) if s >= 4.0 => "medium",
        Some(s) if s.is_finite() => "low",
        _ => "unknown",
    }
}

fn severity_rank(band: &str) -> u8 {
    match band {
        "critical" => 0,
        "high" => 1,
        "medium" => 2,
        "low" => 3,
        _ => 4,
    }
}

fn day(t: Timestamp) -> String {
    let s = t.to_rfc3339();
    s.get(..10).unwrap_or(&s).to_owned()
}

/// Aggregates `records` by `by`. Rows are ordered by key (accounts, types and days ascending;
/// severities from critical to unknown); an empty input gives no rows.
pub fn stats(records: &[FindingRecord], by: GroupBy) -> Vec<StatsRow> {
    let mut groups: BTreeMap<(u8, String), StatsRow> = BTreeMap::new();
    for r in records {
        let (rank, key) = match by {
            GroupBy::Account => (0, r.meta.account_id.clone()),
            GroupBy::Type => (
                0,
                r.meta
                    .finding_type
                    .clone()
                    .unwrap_or_else(|| "(none)".to_owned()),
            ),
            GroupBy::Severity => {
                let band = severity_band(r.meta.severity);
                (severity_rank(band), band.to_owned())
            }
            GroupBy::Day => (0, day(r.last_seen)),
            GroupBy::None => (0, "all".to_owned()),
        };
        let row = groups
            .entry((rank, key.clone()))
            .or_insert_with(|| StatsRow {
                key,
                ..StatsRow::default()
            });
        add(row, r);
    }
    groups.into_values().collect()
}

fn add(row: &mut StatsRow, r: &FindingRecord) {
    row.findings += 1;
    row.received = row.received.saturating_add(received(r));
    row.sent = row.sent.saturating_add(r.versions_sent);
    row.duplicates = row.duplicates.saturating_add(r.duplicates);
    row.stale = row.stale.saturating_add(r.stale);
    row.failed = row.failed.saturating_add(r.failures);
    row.pending += u64::from(r.status == Status::Pending);
}

/// The sum of `rows` (key `total`).
pub fn total(rows: &[StatsRow]) -> StatsRow {
    rows.iter().fold(
        StatsRow {
            key: "total".to_owned(),
            ..StatsRow::default()
        },
        |mut t, r| {
            t.findings += r.findings;
            t.received = t.received.saturating_add(r.received);
            t.sent = t.sent.saturating_add(r.sent);
            t.duplicates = t.duplicates.saturating_add(r.duplicates);
            t.stale = t.stale.saturating_add(r.stale);
            t.failed = t.failed.saturating_add(r.failed);
            t.pending = t.pending.saturating_add(r.pending);
            t
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testdata::records as sample;

    #[test]
    fn received_is_the_sum_of_outcomes_plus_pending() {
        let s = sample();
        assert_eq!(received(&s[0]), 5);
        assert_eq!(received(&s[1]), 3, "pending counts as one received version");
        assert_eq!(received(&s[2]), 3);
    }

    #[test]
    fn stats_by_account() {
        let rows = stats(&sample(), GroupBy::Account);
        assert_eq!(
            rows,
            vec![
                StatsRow {
                    key: "111122223333".into(),
                    findings: 2,
                    received: 8,
                    sent: 2,
                    duplicates: 4,
                    stale: 1,
                    failed: 0,
                    pending: 1,
                },
                StatsRow {
                    key: "444455556666".into(),
                    findings: 2,
                    received: 4,
                    sent: 2,
                    duplicates: 0,
                    stale: 0,
                    failed: 2,
                    pending: 0,
                },
            ]
        );
        assert_eq!(total(&rows).received, 12);
    }

    #[test]
    fn stats_by_severity_type_day_none() {
        let keys = |by| {
            stats(&sample(), by)
                .into_iter()
                .map(|r| (r.key, r.findings))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            keys(GroupBy::Severity),
            vec![
                ("critical".into(), 1),
                ("high".into(), 1),
                ("medium".into(), 1),
                ("unknown".into(), 1)
            ],
            "most severe first"
        );
        assert_eq!(
            keys(GroupBy::Type),
            vec![
                ("(none)".into(), 1),
                ("Recon:EC2/Portscan".into(), 2),
                ("UnauthorizedAccess:IAMUser/TorIPCaller".into(), 1)
            ]
        );
        assert_eq!(
            keys(GroupBy::Day),
            vec![
                ("2025-02-25".into(), 1),
                ("2025-02-26".into(), 2),
                ("2025-02-27".into(), 1)
            ]
        );
        assert_eq!(keys(GroupBy::None), vec![("all".into(), 4)]);
        assert!(stats(&[], GroupBy::Account).is_empty());
    }

    #[test]
    fn severity_bands_follow_guardduty() {
        for (s, band) in [
            (1.0, "low"),
            (3.9, "low"),
            (4.0, "medium"),
            (6.9, "medium"),
            (7.0, "high"),
            (8.9, "high"),
            (9.0, "critical"),
            (10.0, "critical"),
        ] {
            assert_eq!(severity_band(Some(s)), band, "{s}");
        }
        assert_eq!(severity_band(None), "unknown");
        assert_eq!(severity_band(Some(f64::NAN)), "unknown");
    }

    #[test]
    fn parse_group() {
        assert_eq!("day".parse::<GroupBy>(), Ok(GroupBy::Day));
        assert!("week".parse::<GroupBy>().is_err());
    }
}
