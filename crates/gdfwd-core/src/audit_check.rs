//! `gdfwd audit check`: the invariants an auditor relies on, checked over what the store holds.
//!
//! Pure functions over [`FindingHistory`]s (the CLI reads every live record and its history
//! through the [`crate::store::StateStore`] port), so both backends are checked by one rule set
//! and every rule is unit-tested without a store. The rules follow from the store contract
//! (`docs/state-store.md`):
//!
//! - every `sent` entry follows a `claimed` entry of the same version (nothing is sent without a
//!   claim);
//! - no record is left `pending` after its lease ended: its sender died and nobody re-claimed
//!   the version since (its SQS message, backfill or forward run must be retried);
//! - no version is claimed after a newer one was sent and then sent itself (once a newer version
//!   is delivered, older ones are stale);
//! - history sequence numbers, which the store counts in the same write as each event, have no
//!   gap and no duplicate, are in ascending order, and end at the record's count.
//!
//! Entries written before sequence numbers existed (`seq: None`) take part in the ordering rules
//! in the order the store returns them, and are skipped by the sequence rule.
//!
//! A [`Violation`] is data (finding, version, rule); its sentence, CSV row and JSON object are
//! the CLI's (`gdfwd-cli/src/render/audit_check.rs`).

use std::collections::HashSet;

use gdfwd_model::Timestamp;
use serde::Serialize;

use crate::store::{FindingHistory, HistoryKind, Status};

/// Which invariant a [`Violation`] breaks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "rule", rename_all = "snake_case")]
pub enum Rule {
    /// A `sent` entry with no earlier `claimed` entry of its version.
    SentWithoutClaim,
    /// The record is `pending` and its lease ended at `lease_until`.
    PendingPastLease { lease_until: Timestamp },
    /// The version was claimed after `newer` was sent, and then sent.
    OlderSentAfterNewer { newer: Timestamp },
    /// Sequence number `seq` is missing between its neighbours.
    SequenceGap { seq: u64 },
    /// Sequence number `seq` appears more than once, or out of ascending order.
    SequenceDuplicate { seq: u64 },
    /// The last entry's sequence number is not the record's count (`record`).
    SequenceEnd { last: u64, record: u64 },
}

/// One broken invariant, naming the finding and version it concerns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Violation {
    pub finding_id: String,
    pub version: Timestamp,
    #[serde(flatten)]
    pub rule: Rule,
}

/// Every violation in `h` at `now`, in history order (the record's own after its entries').
pub fn check(h: &FindingHistory, now: Timestamp) -> Vec<Violation> {
    let id = &h.record.finding_id;
    let v = |version, rule| Violation {
        finding_id: id.clone(),
        version,
        rule,
    };
    let mut out = Vec::new();
    let mut claimed: HashSet<Timestamp> = HashSet::new();
    // Versions claimed after a newer version was sent: (version → that newer version).
    let mut claimed_late: Vec<(Timestamp, Timestamp)> = Vec::new();
    let mut newest_sent: Option<Timestamp> = None;
    let mut last_seq: Option<u64> = None;
    for e in &h.entries {
        if let Some(seq) = e.seq {
            match last_seq {
                Some(prev) if seq <= prev => {
                    out.push(v(e.version, Rule::SequenceDuplicate { seq }));
                }
                Some(prev) => {
                    for missing in prev + 1..seq {
                        out.push(v(e.version, Rule::SequenceGap { seq: missing }));
                    }
                }
                None => {}
            }
            last_seq = Some(last_seq.map_or(seq, |p| p.max(seq)));
        }
        match &e.kind {
            HistoryKind::Claimed => {
                claimed.insert(e.version);
                claimed_late.retain(|(ver, _)| *ver != e.version);
                if let Some(newer) = newest_sent.filter(|n| *n > e.version) {
                    claimed_late.push((e.version, newer));
                }
            }
            HistoryKind::Sent { .. } => {
                if !claimed.contains(&e.version) {
                    out.push(v(e.version, Rule::SentWithoutClaim));
                }
                if let Some(&(_, newer)) = claimed_late.iter().find(|(ver, _)| *ver == e.version) {
                    out.push(v(e.version, Rule::OlderSentAfterNewer { newer }));
                }
                newest_sent = Some(newest_sent.map_or(e.version, |n| n.max(e.version)));
            }
            HistoryKind::Duplicate
            | HistoryKind::InFlight { .. }
            | HistoryKind::Stale { .. }
            | HistoryKind::Failed { .. } => {}
        }
    }
    let r = &h.record;
    if let Some(last) = last_seq
        && r.seq != 0
        && last != r.seq
    {
        out.push(v(
            r.latest_version,
            Rule::SequenceEnd {
                last,
                record: r.seq,
            },
        ));
    }
    if let (Status::Pending, Some(lease_until)) = (r.status, r.lease_until)
        && lease_until <= now
    {
        out.push(v(r.latest_version, Rule::PendingPastLease { lease_until }));
    }
    out
}

impl Rule {
    /// The rule's name in every output format.
    pub fn name(&self) -> &'static str {
        match self {
            Self::SentWithoutClaim => "sent_without_claim",
            Self::PendingPastLease { .. } => "pending_past_lease",
            Self::OlderSentAfterNewer { .. } => "older_sent_after_newer",
            Self::SequenceGap { .. } => "sequence_gap",
            Self::SequenceDuplicate { .. } => "sequence_duplicate",
            Self::SequenceEnd { .. } => "sequence_end",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::HistoryEntry;

    fn t(ms: i64) -> Timestamp {
        Timestamp::from_millis(ms)
    }

    fn entry(seq: Option<u64>, version: i64, kind: HistoryKind) -> HistoryEntry {
        HistoryEntry {
            seq,
            at: t(0),
            version: t(version),
            kind,
        }
    }

    fn sent() -> HistoryKind {
        HistoryKind::Sent {
            event_ids: vec!["e".into()],
            request_id: None,
        }
    }

    fn history(status: Status, lease: Option<i64>, entries: Vec<HistoryEntry>) -> FindingHistory {
        let seq = entries.iter().filter_map(|e| e.seq).max().unwrap_or(0);
        // The preview's test record: finding `f`, version 2, no delivery.
        let mut record = crate::preview::tests::record(status, 2, lease);
        record.sent_version = None;
        record.seq = seq;
        FindingHistory { record, entries }
    }

    fn rules(h: &FindingHistory, now: i64) -> Vec<(i64, Rule)> {
        check(h, t(now))
            .into_iter()
            .map(|v| (v.version.millis(), v.rule))
            .collect()
    }

    #[test]
    fn a_clean_history_has_no_violation() {
        let h = history(
            Status::Sent,
            None,
            vec![
                entry(Some(1), 1, HistoryKind::Claimed),
                entry(Some(2), 2, HistoryKind::Claimed),
                // The older version's commit lands after the newer one's claim: allowed.
                entry(Some(3), 1, sent()),
                entry(Some(4), 2, sent()),
                entry(Some(5), 1, HistoryKind::Stale { newest: t(2) }),
                entry(Some(6), 2, HistoryKind::Duplicate),
            ],
        );
        assert_eq!(rules(&h, 10), vec![]);
    }

    #[test]
    fn each_rule_names_its_version() {
        let h = history(
            Status::Pending,
            Some(5),
            vec![
                entry(Some(1), 2, sent()),
                entry(Some(2), 2, HistoryKind::Claimed),
                entry(Some(3), 2, sent()),
                entry(Some(5), 1, HistoryKind::Claimed),
                entry(Some(5), 1, sent()),
            ],
        );
        assert_eq!(
            rules(&h, 5),
            vec![
                (2, Rule::SentWithoutClaim),
                (1, Rule::SequenceGap { seq: 4 }),
                (1, Rule::SequenceDuplicate { seq: 5 }),
                (1, Rule::OlderSentAfterNewer { newer: t(2) }),
                (2, Rule::PendingPastLease { lease_until: t(5) }),
            ]
        );
        assert_eq!(rules(&h, 4).len(), 4, "the lease still runs at 4");
    }

    #[test]
    fn entries_without_numbers_are_ordered_as_returned() {
        let mut h = history(
            Status::Sent,
            None,
            vec![
                entry(None, 1, HistoryKind::Claimed),
                entry(None, 1, sent()),
                entry(Some(1), 2, HistoryKind::Claimed),
                entry(Some(2), 2, sent()),
            ],
        );
        assert_eq!(rules(&h, 10), vec![]);
        h.record.seq = 3;
        assert_eq!(
            rules(&h, 10),
            vec![(2, Rule::SequenceEnd { last: 2, record: 3 })]
        );
    }
}
