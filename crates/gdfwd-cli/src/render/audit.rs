//! `audit list`, `audit show` and `audit stats`: store records, one finding's history and the
//! stats rows of `gdfwd_core::audit::stats`, as table, CSV and JSON.
//!
//! CSV and JSON share field names (the CSV header is the JSON objects' keys); the table shows
//! fewer columns, shortened, for a terminal. JSON is an array (an object for one finding's
//! history).

use std::fmt::Write as _;

use gdfwd_core::audit::{GroupBy, StatsRow, severity_band, total};
use gdfwd_core::store::{FindingHistory, FindingRecord, HistoryEntry, HistoryKind, Status};
use gdfwd_model::Timestamp;
use serde_json::{Map, Value, json};

use super::{OutputFormat, csv, shorten, table};

/// Columns of records in CSV and JSON.
const RECORD_FIELDS: [&str; 17] = [
    "finding_id",
    "account_id",
    "region",
    "type",
    "severity",
    "title",
    "latest_version",
    "status",
    "lease_until",
    "first_seen",
    "last_seen",
    "versions_sent",
    "duplicates",
    "stale",
    "failures",
    "last_error",
    "expires_at",
];

/// A record as JSON values in [`RECORD_FIELDS`] order.
fn record_values(r: &FindingRecord) -> Vec<Value> {
    let time = |t: Timestamp| Value::String(t.to_rfc3339());
    let opt = |s: &Option<String>| s.clone().map_or(Value::Null, Value::String);
    vec![
        Value::String(r.finding_id.clone()),
        Value::String(r.meta.account_id.clone()),
        Value::String(r.meta.region.clone()),
        opt(&r.meta.finding_type),
        r.meta
            .severity
            .and_then(serde_json::Number::from_f64)
            .map_or(Value::Null, Value::Number),
        opt(&r.meta.title),
        time(r.latest_version),
        Value::String(r.status.as_str().to_owned()),
        r.lease_until.map_or(Value::Null, time),
        time(r.first_seen),
        time(r.last_seen),
        json!(r.versions_sent),
        json!(r.duplicates),
        json!(r.stale),
        json!(r.failures),
        opt(&r.last_error),
        time(r.expires_at),
    ]
}

fn record_object(r: &FindingRecord) -> Value {
    Value::Object(
        RECORD_FIELDS
            .iter()
            .map(|k| (*k).to_owned())
            .zip(record_values(r))
            .collect(),
    )
}

/// A JSON scalar as a CSV/table cell (null → empty).
fn cell(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        Value::Array(a) => a.iter().map(cell).collect::<Vec<_>>().join(" "),
        other => other.to_string(),
    }
}

fn severity_short(s: Option<f64>) -> String {
    s.map(|s| format!("{s:.1}")).unwrap_or_default()
}

/// `audit list`: one line/row/object per record, in the order given.
pub fn records(records: &[FindingRecord], format: OutputFormat) -> String {
    match format {
        OutputFormat::Json => {
            super::json(&Value::Array(records.iter().map(record_object).collect()))
        }
        OutputFormat::Csv => {
            let rows: Vec<Vec<String>> = records
                .iter()
                .map(|r| record_values(r).iter().map(cell).collect())
                .collect();
            csv(&RECORD_FIELDS, &rows)
        }
        OutputFormat::Table => records_table(records),
    }
}

fn records_table(records: &[FindingRecord]) -> String {
    if records.is_empty() {
        return "no matching findings\n".to_owned();
    }
    let header = [
        "FINDING",
        "ACCOUNT",
        "REGION",
        "TYPE",
        "SEV",
        "STATUS",
        "VERSION",
        "LAST SEEN",
        "SENT",
        "DUP",
        "STALE",
        "FAIL",
        "TITLE",
    ];
    let right = [
        false, false, false, false, true, false, false, false, true, true, true, true, false,
    ];
    let rows: Vec<Vec<String>> = records
        .iter()
        .map(|r| {
            vec![
                r.finding_id.clone(),
                r.meta.account_id.clone(),
                r.meta.region.clone(),
                r.meta.finding_type.clone().unwrap_or_default(),
                severity_short(r.meta.severity),
                r.status.as_str().to_owned(),
                r.latest_version.to_rfc3339(),
                r.last_seen.to_rfc3339(),
                r.versions_sent.to_string(),
                r.duplicates.to_string(),
                r.stale.to_string(),
                r.failures.to_string(),
                shorten(r.meta.title.as_deref().unwrap_or(""), 60),
            ]
        })
        .collect();
    table(&header, &rows, &right)
}

const HISTORY_FIELDS: [&str; 10] = [
    "finding_id",
    "seq",
    "at",
    "version",
    "event",
    "event_ids",
    "request_id",
    "newest",
    "lease_until",
    "reason",
];

/// An entry as JSON values in [`HISTORY_FIELDS`] order (without `finding_id`).
fn entry_values(e: &HistoryEntry) -> Vec<Value> {
    let time = |t: &Timestamp| Value::String(t.to_rfc3339());
    let (mut ids, mut request, mut newest, mut lease, mut reason) = (
        Value::Null,
        Value::Null,
        Value::Null,
        Value::Null,
        Value::Null,
    );
    match &e.kind {
        HistoryKind::Sent {
            event_ids,
            request_id,
        } => {
            ids = json!(event_ids);
            request = request_id.clone().map_or(Value::Null, Value::String);
        }
        HistoryKind::Stale { newest: n } => newest = time(n),
        HistoryKind::InFlight { lease_until } => lease = time(lease_until),
        HistoryKind::Failed { reason: r } => reason = Value::String(r.clone()),
        HistoryKind::Claimed | HistoryKind::Duplicate => {}
    }
    vec![
        e.seq.map_or(Value::Null, |n| json!(n)),
        Value::String(e.at.to_rfc3339()),
        Value::String(e.version.to_rfc3339()),
        Value::String(e.kind.name().to_owned()),
        ids,
        request,
        newest,
        lease,
        reason,
    ]
}

/// One line of detail for the table view of an entry.
fn entry_detail(k: &HistoryKind) -> String {
    match k {
        HistoryKind::Claimed | HistoryKind::Duplicate => String::new(),
        HistoryKind::Sent {
            event_ids,
            request_id,
        } => {
            let mut s = format!("events {}", event_ids.join(" "));
            if let Some(r) = request_id {
                let _ = write!(s, "; request {r}");
            }
            s
        }
        HistoryKind::Stale { newest } => format!("newer version {newest} already sent"),
        HistoryKind::InFlight { lease_until } => {
            format!("being sent under another claim until {lease_until}")
        }
        HistoryKind::Failed { reason } => reason.clone(),
    }
}

/// `audit show`: the record and its history. JSON is `{"record": {...}, "entries": [...]}`; CSV
/// has one row per history entry (the record's fields are what `audit list --output csv` gives).
pub fn history(h: &FindingHistory, format: OutputFormat) -> String {
    match format {
        OutputFormat::Json => {
            let entries: Vec<Value> = h
                .entries
                .iter()
                .map(|e| {
                    let m: Map<String, Value> = HISTORY_FIELDS[1..]
                        .iter()
                        .map(|k| (*k).to_owned())
                        .zip(entry_values(e))
                        .filter(|(_, v)| !v.is_null())
                        .collect();
                    Value::Object(m)
                })
                .collect();
            super::json(&json!({ "record": record_object(&h.record), "entries": entries }))
        }
        OutputFormat::Csv => {
            let rows: Vec<Vec<String>> = h
                .entries
                .iter()
                .map(|e| {
                    std::iter::once(h.record.finding_id.clone())
                        .chain(entry_values(e).iter().map(cell))
                        .collect()
                })
                .collect();
            csv(&HISTORY_FIELDS, &rows)
        }
        OutputFormat::Table => history_table(h),
    }
}

/// The record as a key/value block, a blank line, then the entries as a table.
fn history_table(h: &FindingHistory) -> String {
    // The key/value block reuses the table layout without a header line.
    let block = table(&["", ""], &record_fields(&h.record), &[false, false]);
    let mut out: String = block.lines().skip(1).fold(String::new(), |mut o, l| {
        o.push_str(l);
        o.push('\n');
        o
    });
    out.push('\n');
    if h.entries.is_empty() {
        out.push_str("no history entries\n");
        return out;
    }
    let rows: Vec<Vec<String>> = h
        .entries
        .iter()
        .map(|e| {
            vec![
                e.seq.map_or_else(|| "-".to_owned(), |n| n.to_string()),
                e.at.to_rfc3339(),
                e.version.to_rfc3339(),
                e.kind.name().to_owned(),
                entry_detail(&e.kind),
            ]
        })
        .collect();
    // SEQ is the store's order (the rows' order); AT is the writer's clock beside it.
    out.push_str(&table(
        &["SEQ", "AT", "VERSION", "EVENT", "DETAIL"],
        &rows,
        &[true, false, false, false, false],
    ));
    out
}

/// The record's `key:`/value lines of the history table.
fn record_fields(r: &FindingRecord) -> Vec<Vec<String>> {
    let or_dash = |s: Option<&str>| s.unwrap_or("-").to_owned();
    let mut status = format!("{} (version {})", r.status.as_str(), r.latest_version);
    if let (Status::Pending, Some(t)) = (r.status, r.lease_until) {
        let _ = write!(status, ", lease until {t}");
    }
    let severity = match r.meta.severity {
        Some(s) => format!("{s:.1} ({})", severity_band(Some(s))),
        None => "-".to_owned(),
    };
    [
        ("finding", r.finding_id.clone()),
        ("account", r.meta.account_id.clone()),
        ("region", r.meta.region.clone()),
        ("type", or_dash(r.meta.finding_type.as_deref())),
        ("severity", severity),
        ("title", or_dash(r.meta.title.as_deref())),
        ("status", status),
        ("first seen", r.first_seen.to_rfc3339()),
        ("last seen", r.last_seen.to_rfc3339()),
        (
            "counters",
            format!(
                "sent {}, duplicates {}, stale {}, failures {}",
                r.versions_sent, r.duplicates, r.stale, r.failures
            ),
        ),
        ("last error", or_dash(r.last_error.as_deref())),
        ("expires", r.expires_at.to_rfc3339()),
    ]
    .into_iter()
    .map(|(k, v)| vec![format!("{k}:"), v])
    .collect()
}

const STATS_FIELDS: [&str; 7] = [
    "findings",
    "received",
    "sent",
    "duplicates",
    "stale",
    "failed",
    "pending",
];

fn stats_numbers(r: &StatsRow) -> [u64; 7] {
    [
        r.findings,
        r.received,
        r.sent,
        r.duplicates,
        r.stale,
        r.failed,
        r.pending,
    ]
}

/// The name of the group column in every output format.
fn group_column(by: GroupBy) -> &'static str {
    match by {
        GroupBy::None => "group",
        other => other.as_str(),
    }
}

/// A stats row's cells: its key, then its numbers.
fn stats_cells(r: &StatsRow) -> Vec<String> {
    std::iter::once(r.key.clone())
        .chain(stats_numbers(r).iter().map(u64::to_string))
        .collect()
}

/// `audit stats`: the group column is named after `by` (`account`, `type`, `severity`, `day`,
/// or `group` for [`GroupBy::None`]). The table adds a `total` line when there are several rows.
pub fn stats(rows: &[StatsRow], by: GroupBy, format: OutputFormat) -> String {
    let key_col = group_column(by);
    match format {
        OutputFormat::Json => super::json(&Value::Array(
            rows.iter()
                .map(|r| {
                    let mut m = Map::new();
                    m.insert(key_col.to_owned(), Value::String(r.key.clone()));
                    for (k, n) in STATS_FIELDS.iter().zip(stats_numbers(r)) {
                        m.insert((*k).to_owned(), json!(n));
                    }
                    Value::Object(m)
                })
                .collect(),
        )),
        OutputFormat::Csv => {
            let header: Vec<&str> = std::iter::once(key_col).chain(STATS_FIELDS).collect();
            let cells: Vec<Vec<String>> = rows.iter().map(stats_cells).collect();
            csv(&header, &cells)
        }
        OutputFormat::Table => stats_table(rows, key_col),
    }
}

fn stats_table(rows: &[StatsRow], key_col: &str) -> String {
    if rows.is_empty() {
        return "no matching findings\n".to_owned();
    }
    let upper: Vec<String> = std::iter::once(key_col)
        .chain(STATS_FIELDS)
        .map(str::to_uppercase)
        .collect();
    let header: Vec<&str> = upper.iter().map(String::as_str).collect();
    let mut all: Vec<&StatsRow> = rows.iter().collect();
    let sum = total(rows);
    if rows.len() > 1 {
        all.push(&sum);
    }
    let cells: Vec<Vec<String>> = all.iter().map(|r| stats_cells(r)).collect();
    let mut right = [true; 8];
    right[0] = false;
    table(&header, &cells, &right)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::tests::parse_csv;
    use gdfwd_core::audit::stats as aggregate;
    use gdfwd_core::testdata::{history as sample_history, records as sample};

    #[test]
    fn csv_quoting_round_trips() {
        let out = records(&sample(), OutputFormat::Csv);
        // Every record is one logical CSV row of 17 fields, even with commas, quotes, newlines.
        let rows = parse_csv(&out);
        assert_eq!(rows.len(), 5);
        assert!(
            rows.iter().all(|r| r.len() == RECORD_FIELDS.len()),
            "{rows:?}"
        );
        assert_eq!(
            rows[2][5],
            "API called from a Tor exit node, title with, comma"
        );
        assert!(
            rows[3][5].contains('\n'),
            "newline kept inside the quoted field"
        );
        assert!(
            rows[3][5].starts_with("evil \\u{1b}[31m"),
            "{:?}",
            rows[3][5]
        );
        assert!(!out.contains('\u{1b}'), "no raw escape sequences in CSV");
    }

    #[test]
    fn table_escapes_control_characters() {
        let out = records(&sample(), OutputFormat::Table);
        assert!(!out.contains('\u{1b}'), "no raw escape sequences: {out}");
        assert!(out.contains("\\u{1b}[31mred"), "{out}");
        assert_eq!(out.lines().count(), 5, "one line per record plus header");
        let json = records(&sample(), OutputFormat::Json);
        let back: Value = serde_json::from_str(&json).expect("valid JSON");
        assert_eq!(back.as_array().map(Vec::len), Some(4));
    }

    #[test]
    fn snapshot_records() {
        let s = sample();
        insta::assert_snapshot!("records_table", records(&s, OutputFormat::Table));
        insta::assert_snapshot!("records_csv", records(&s, OutputFormat::Csv));
        insta::assert_snapshot!("records_json", records(&s[..2], OutputFormat::Json));
        assert_eq!(records(&[], OutputFormat::Table), "no matching findings\n");
        assert_eq!(records(&[], OutputFormat::Json), "[]\n");
        assert_eq!(
            records(&[], OutputFormat::Csv).lines().count(),
            1,
            "header only"
        );
    }

    #[test]
    fn snapshot_history() {
        let h = sample_history();
        insta::assert_snapshot!("history_table", history(&h, OutputFormat::Table));
        insta::assert_snapshot!("history_csv", history(&h, OutputFormat::Csv));
        insta::assert_snapshot!("history_json", history(&h, OutputFormat::Json));
        let rows = parse_csv(&history(&h, OutputFormat::Csv));
        assert_eq!(rows.len(), 7);
        assert!(rows.iter().all(|r| r.len() == HISTORY_FIELDS.len()));
    }

    #[test]
    fn snapshot_stats() {
        let by_account = aggregate(&sample(), GroupBy::Account);
        insta::assert_snapshot!(
            "stats_account_table",
            stats(&by_account, GroupBy::Account, OutputFormat::Table)
        );
        insta::assert_snapshot!(
            "stats_account_csv",
            stats(&by_account, GroupBy::Account, OutputFormat::Csv)
        );
        insta::assert_snapshot!(
            "stats_severity_json",
            stats(
                &aggregate(&sample(), GroupBy::Severity),
                GroupBy::Severity,
                OutputFormat::Json
            )
        );
        let one = aggregate(&sample(), GroupBy::None);
        let t = stats(&one, GroupBy::None, OutputFormat::Table);
        assert_eq!(t.lines().count(), 2, "a single row gets no total line: {t}");
        assert!(t.starts_with("GROUP"), "{t}");
    }
}
