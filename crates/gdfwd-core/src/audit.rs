//! Audit queries over the state store: aggregation (`audit stats`) and rendering (table/json/csv).
//! Pure functions over [`crate::store::FindingRecord`]s so both backends give the same answers.
//!
//! The CLI fetches records with [`crate::store::StateStore::list`] / `history` and hands them
//! here; nothing in this module does I/O, so every output format is unit-tested byte for byte.
//!
//! Output conventions, shared by the three formats:
//! - times are RFC 3339 UTC with milliseconds (`2025-02-25T20:40:06.721Z`), never epoch numbers;
//! - `table` is for terminals: aligned columns, numbers right-aligned, long titles shortened, and
//!   control characters in finding-supplied text escaped (a finding title must not be able to
//!   move the cursor or recolour the terminal);
//! - `csv` is RFC 4180: a header row, fields quoted when they contain `,`, `"`, CR or LF (quotes
//!   doubled), `\n` line ends, values unshortened; control characters other than newline and tab
//!   are escaped as in the table (values starting with `=`, `+`, `-`, `@` are NOT altered: open
//!   exports in a spreadsheet as text);
//! - `json` is a pretty-printed array (an object for one finding's history) with the field names
//!   of the CSV header.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde_json::{Map, Value, json};

use crate::store::{FindingHistory, FindingRecord, HistoryEntry, HistoryKind, Status};
use gdfwd_model::Timestamp;

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

    /// The name of the group column in every output format.
    fn column(self) -> &'static str {
        match self {
            Self::None => "group",
            other => other.as_str(),
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

/// `--output` of the audit commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum OutputFormat {
    #[default]
    Table,
    Json,
    Csv,
}

impl std::str::FromStr for OutputFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "table" => Self::Table,
            "json" => Self::Json,
            "csv" => Self::Csv,
            other => {
                return Err(format!(
                    "unknown output format {other:?}: expected table, json or csv"
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

// ---------------------------------------------------------------------------------------------
// Building blocks

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

fn pretty(v: &Value) -> String {
    // Serialising a `Value` cannot fail (string keys only); fall back to compact just in case.
    let mut s = serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string());
    s.push('\n');
    s
}

/// RFC 4180 field quoting, after escaping control characters other than newline and tab (CSV
/// is usually printed to a terminal first).
fn csv_field(s: &str) -> String {
    let s = escape_controls(s, &['\n', '\t']);
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s
    }
}

/// CSV with a header row (RFC 4180 quoting, control characters escaped). Shared by every
/// command that prints tables (`audit`, `audit gaps`, `accounts`).
pub fn csv(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut out = String::new();
    let line = |out: &mut String, cells: &mut dyn Iterator<Item = String>| {
        let joined: Vec<String> = cells.map(|c| csv_field(&c)).collect();
        out.push_str(&joined.join(","));
        out.push('\n');
    };
    line(&mut out, &mut header.iter().map(|h| (*h).to_owned()));
    for r in rows {
        line(&mut out, &mut r.iter().cloned());
    }
    out
}

/// Escapes control characters so finding-supplied text cannot drive the terminal. Everything that
/// prints text a finding (or a file name, or a server) supplied goes through this: the table
/// renderers here, and the CLI's invalid, failed and error lines.
pub fn printable(s: &str) -> String {
    escape_controls(s, &[])
}

/// Writes control characters except those in `keep` as Rust escapes (`\u{1b}`, `\n`).
fn escape_controls(s: &str, keep: &[char]) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_control() && !keep.contains(&c) {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

fn shorten(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_owned()
    } else {
        let mut t: String = s.chars().take(max.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

/// Aligned columns separated by two spaces; `right[i]` right-aligns column `i` (numbers).
/// Control characters in cells are escaped, so finding-supplied text cannot drive the terminal.
pub fn table(header: &[&str], rows: &[Vec<String>], right: &[bool]) -> String {
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| r.iter().map(|c| printable(c)).collect())
        .collect();
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(c.chars().count());
            }
        }
    }
    let mut out = String::new();
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut l = String::new();
        for (i, c) in cells.enumerate() {
            if i > 0 {
                l.push_str("  ");
            }
            let w = widths.get(i).copied().unwrap_or(0);
            let pad = w.saturating_sub(c.chars().count());
            if right.get(i).copied().unwrap_or(false) {
                l.extend(std::iter::repeat_n(' ', pad));
                l.push_str(c);
            } else {
                l.push_str(c);
                l.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(&mut header.iter().copied());
    for r in &rows {
        line(&mut r.iter().map(String::as_str));
    }
    out
}

fn severity_short(s: Option<f64>) -> String {
    s.map(|s| format!("{s:.1}")).unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------
// Renderers

/// `audit list`: one line/row/object per record, in the order given.
pub fn render_records(records: &[FindingRecord], format: OutputFormat) -> String {
    match format {
        OutputFormat::Json => pretty(&Value::Array(records.iter().map(record_object).collect())),
        OutputFormat::Csv => {
            let rows: Vec<Vec<String>> = records
                .iter()
                .map(|r| record_values(r).iter().map(cell).collect())
                .collect();
            csv(&RECORD_FIELDS, &rows)
        }
        OutputFormat::Table => {
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
                false, false, false, false, true, false, false, false, true, true, true, true,
                false,
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
    }
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

fn event_name(k: &HistoryKind) -> &'static str {
    match k {
        HistoryKind::Claimed => "claimed",
        HistoryKind::Sent { .. } => "sent",
        HistoryKind::Duplicate => "duplicate",
        HistoryKind::InFlight { .. } => "in_flight",
        HistoryKind::Stale { .. } => "stale",
        HistoryKind::Failed { .. } => "failed",
    }
}

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
        Value::String(event_name(&e.kind).to_owned()),
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
pub fn render_history(h: &FindingHistory, format: OutputFormat) -> String {
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
            pretty(&json!({ "record": record_object(&h.record), "entries": entries }))
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
        OutputFormat::Table => {
            let r = &h.record;
            let or_dash = |s: Option<&str>| s.unwrap_or("-").to_owned();
            let mut status = format!("{} (version {})", r.status.as_str(), r.latest_version);
            if let (Status::Pending, Some(t)) = (r.status, r.lease_until) {
                let _ = write!(status, ", lease until {t}");
            }
            let severity = match r.meta.severity {
                Some(s) => format!("{s:.1} ({})", severity_band(Some(s))),
                None => "-".to_owned(),
            };
            let fields: Vec<Vec<String>> = [
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
            .collect();
            // The key/value block reuses the table layout without a header line.
            let block = table(&["", ""], &fields, &[false, false]);
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
                        event_name(&e.kind).to_owned(),
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
    }
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

/// `audit stats`: the group column is named after `by` (`account`, `type`, `severity`, `day`,
/// or `group` for [`GroupBy::None`]). The table adds a `total` line when there are several rows.
pub fn render_stats(rows: &[StatsRow], by: GroupBy, format: OutputFormat) -> String {
    let key_col = by.column();
    match format {
        OutputFormat::Json => pretty(&Value::Array(
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
            let cells: Vec<Vec<String>> = rows
                .iter()
                .map(|r| {
                    std::iter::once(r.key.clone())
                        .chain(stats_numbers(r).iter().map(u64::to_string))
                        .collect()
                })
                .collect();
            csv(&header, &cells)
        }
        OutputFormat::Table => {
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
            let cells: Vec<Vec<String>> = all
                .iter()
                .map(|r| {
                    std::iter::once(r.key.clone())
                        .chain(stats_numbers(r).iter().map(u64::to_string))
                        .collect()
                })
                .collect();
            let mut right = [true; 8];
            right[0] = false;
            table(&header, &cells, &right)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gdfwd_model::FindingMeta;

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
            lease_until: (status == Status::Pending)
                .then(|| last_seen.saturating_add_millis(300_000)),
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

    fn sample() -> Vec<FindingRecord> {
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
    fn parse_group_and_format() {
        assert_eq!("day".parse::<GroupBy>(), Ok(GroupBy::Day));
        assert_eq!("csv".parse::<OutputFormat>(), Ok(OutputFormat::Csv));
        let e = "yaml".parse::<OutputFormat>().expect_err("rejected");
        assert!(e.contains("\"yaml\"") && e.contains("table"), "{e}");
        assert!("week".parse::<GroupBy>().is_err());
    }

    #[test]
    fn csv_quoting_round_trips() {
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("two\nlines"), "\"two\nlines\"");
        let out = render_records(&sample(), OutputFormat::Csv);
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

    /// A minimal RFC 4180 reader for the round-trip check.
    fn parse_csv(s: &str) -> Vec<Vec<String>> {
        let mut rows = Vec::new();
        let mut row = Vec::new();
        let mut field = String::new();
        let mut quoted = false;
        let mut chars = s.chars().peekable();
        while let Some(c) = chars.next() {
            match (quoted, c) {
                (true, '"') if chars.peek() == Some(&'"') => {
                    chars.next();
                    field.push('"');
                }
                (true, '"') => quoted = false,
                (true, c) => field.push(c),
                (false, '"') => quoted = true,
                (false, ',') => row.push(std::mem::take(&mut field)),
                (false, '\n') => {
                    row.push(std::mem::take(&mut field));
                    rows.push(std::mem::take(&mut row));
                }
                (false, c) => field.push(c),
            }
        }
        rows
    }

    #[test]
    fn table_escapes_control_characters() {
        let out = render_records(&sample(), OutputFormat::Table);
        assert!(!out.contains('\u{1b}'), "no raw escape sequences: {out}");
        assert!(out.contains("\\u{1b}[31mred"), "{out}");
        assert_eq!(out.lines().count(), 5, "one line per record plus header");
        let json = render_records(&sample(), OutputFormat::Json);
        let back: Value = serde_json::from_str(&json).expect("valid JSON");
        assert_eq!(back.as_array().map(Vec::len), Some(4));
    }

    #[test]
    fn snapshot_records() {
        let s = sample();
        insta::assert_snapshot!("records_table", render_records(&s, OutputFormat::Table));
        insta::assert_snapshot!("records_csv", render_records(&s, OutputFormat::Csv));
        insta::assert_snapshot!("records_json", render_records(&s[..2], OutputFormat::Json));
        assert_eq!(
            render_records(&[], OutputFormat::Table),
            "no matching findings\n"
        );
        assert_eq!(render_records(&[], OutputFormat::Json), "[]\n");
        assert_eq!(
            render_records(&[], OutputFormat::Csv).lines().count(),
            1,
            "header only"
        );
    }

    fn sample_history() -> FindingHistory {
        let mut record = sample().swap_remove(2);
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

    #[test]
    fn snapshot_history() {
        let h = sample_history();
        insta::assert_snapshot!("history_table", render_history(&h, OutputFormat::Table));
        insta::assert_snapshot!("history_csv", render_history(&h, OutputFormat::Csv));
        insta::assert_snapshot!("history_json", render_history(&h, OutputFormat::Json));
        let rows = parse_csv(&render_history(&h, OutputFormat::Csv));
        assert_eq!(rows.len(), 7);
        assert!(rows.iter().all(|r| r.len() == HISTORY_FIELDS.len()));
    }

    #[test]
    fn snapshot_stats() {
        let by_account = stats(&sample(), GroupBy::Account);
        insta::assert_snapshot!(
            "stats_account_table",
            render_stats(&by_account, GroupBy::Account, OutputFormat::Table)
        );
        insta::assert_snapshot!(
            "stats_account_csv",
            render_stats(&by_account, GroupBy::Account, OutputFormat::Csv)
        );
        insta::assert_snapshot!(
            "stats_severity_json",
            render_stats(
                &stats(&sample(), GroupBy::Severity),
                GroupBy::Severity,
                OutputFormat::Json
            )
        );
        let one = stats(&sample(), GroupBy::None);
        let t = render_stats(&one, GroupBy::None, OutputFormat::Table);
        assert_eq!(t.lines().count(), 2, "a single row gets no total line: {t}");
        assert!(t.starts_with("GROUP"), "{t}");
    }
}
