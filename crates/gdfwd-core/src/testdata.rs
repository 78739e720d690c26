//! Records and a history for the tests of the audit commands: the aggregation here
//! ([`crate::audit`]) and the CLI's renderings of the same data (its snapshot tests), so both
//! read one fixture. Compiled for this crate's tests and behind the `testdata` feature, which
//! only test builds of other crates turn on.

use gdfwd_model::{FindingMeta, Timestamp};

use crate::store::{FindingHistory, FindingRecord, HistoryEntry, HistoryKind, Status};

const T0: i64 = 1_740_516_006_721; // 2025-02-25T20:40:06.721Z

fn ts(offset_s: i64) -> Timestamp {
    Timestamp::from_millis(T0 + offset_s * 1000)
}

#[allow(clippy::too_many_arguments)]
fn rec(
    id: &str,
    account: &str,
    ty: Option<&str>,
    sev: Option<f64>,
    status: Status,
    last_seen: Timestamp,
    counts: [u64; 4],
    title: Option<&str>,
) -> FindingRecord {
    FindingRecord {
        finding_id: id.to_owned(),
        meta: FindingMeta {
            account_id: account.to_owned(),
            region: "eu-central-1".to_owned(),
            finding_type: ty.map(str::to_owned),
            severity: sev,
            title: title.map(str::to_owned),
        },
        latest_version: ts(-3600),
        sent_version: None,
        status,
        lease_until: (status == Status::Pending).then(|| last_seen.saturating_add_millis(300_000)),
        first_seen: ts(-7200),
        last_seen,
        versions_sent: counts[0],
        duplicates: counts[1],
        stale: counts[2],
        failures: counts[3],
        last_error: (counts[3] > 0).then(|| "HTTP 503, \"retry later\"".to_owned()),
        expires_at: last_seen.saturating_add_millis(90 * 86_400_000),
        owner: None,
        seq: 0,
    }
}

/// Four records: sent, pending, failed (a title with escape sequences and a newline), and one
/// without type, severity or title; two accounts, three days, every severity band but low.
pub fn records() -> Vec<FindingRecord> {
    vec![
        rec(
            "5ecb1a7d1e4f2c3b9a8d7e6f5a4b3c2d",
            "111122223333",
            Some("Recon:EC2/Portscan"),
            Some(5.0),
            Status::Sent,
            ts(0),
            [2, 3, 0, 0],
            Some("Unprotected port on EC2 instance i-0abc is being probed"),
        ),
        rec(
            "a1",
            "111122223333",
            Some("UnauthorizedAccess:IAMUser/TorIPCaller"),
            Some(8.5),
            Status::Pending,
            ts(86_400),
            [0, 1, 1, 0],
            Some("API called from a Tor exit node, title with, comma"),
        ),
        rec(
            "b2",
            "444455556666",
            Some("Recon:EC2/Portscan"),
            Some(9.1),
            Status::Failed,
            ts(86_400 + 60),
            [1, 0, 0, 2],
            Some(
                "evil \u{1b}[31mred\u{1b}[0m title\nsecond line and a very long tail that goes on and on",
            ),
        ),
        rec(
            "c3",
            "444455556666",
            None,
            None,
            Status::Sent,
            ts(2 * 86_400),
            [1, 0, 0, 0],
            None,
        ),
    ]
}

/// The failed record of [`records`] with six history entries: a claim and commit of one
/// version, then a newer version claimed, the older one stale, the newer failed and duplicated.
pub fn history() -> FindingHistory {
    let mut record = records().swap_remove(2);
    record.status = Status::Failed;
    let v1 = ts(-7200);
    let v2 = ts(-3600);
    let entries = vec![
        HistoryEntry {
            seq: Some(1),
            at: ts(-7200),
            version: v1,
            kind: HistoryKind::Claimed,
        },
        HistoryEntry {
            seq: Some(2),
            at: ts(-7190),
            version: v1,
            kind: HistoryKind::Sent {
                event_ids: vec!["ev-1".into(), "ev-2".into()],
                request_id: Some("req-9".into()),
            },
        },
        HistoryEntry {
            seq: Some(3),
            at: ts(-3600),
            version: v2,
            kind: HistoryKind::Claimed,
        },
        HistoryEntry {
            seq: Some(4),
            at: ts(-3500),
            version: v1,
            kind: HistoryKind::Stale { newest: v2 },
        },
        HistoryEntry {
            seq: Some(5),
            at: ts(-3000),
            version: v2,
            kind: HistoryKind::Failed {
                reason: "HTTP 503, \"retry later\"".into(),
            },
        },
        HistoryEntry {
            seq: Some(6),
            at: ts(-2000),
            version: v2,
            kind: HistoryKind::Duplicate,
        },
    ];
    FindingHistory { record, entries }
}
