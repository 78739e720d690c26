//! The store's operations as synchronous functions over an open transaction.
//!
//! The claim decision is made in Rust after reading the row inside a `BEGIN IMMEDIATE`
//! transaction (the write lock is already held, so nobody can change the row between the read
//! and the write). The rules are the port's contract, spelled out in `docs/state-store.md`.

use gdfwd_core::store::{
    ClaimOutcome, ClaimRequest, Delivery, FindingHistory, FindingRecord, FinishCheck, HistoryEntry,
    HistoryKind, ListQuery, Owner, Status, StatusFilter, VersionKey, judge_claim, judge_finish,
};
use gdfwd_model::{FindingMeta, Timestamp};
use rusqlite::types::Value;
use rusqlite::{OptionalExtension, Row, Transaction, params};

use crate::error::SqliteStoreError;
use crate::{Inner, PurgeStats};

type Result<T> = std::result::Result<T, SqliteStoreError>;

/// The columns [`record_from_row`] decodes (a macro so SQL can be built with `concat!`).
macro_rules! record_columns {
    () => {
        "finding_id, account_id, region, finding_type, severity, title, latest_version, status, \
         lease_until, first_seen, last_seen, versions_sent, duplicates, stale, failures, \
         last_error, expires_at, sent_version, owner, seq"
    };
}

/// `execute` through the statement cache: claims run the same few statements over and over.
fn exec(
    inner: &Inner,
    tx: &Transaction<'_>,
    operation: &'static str,
    sql: &str,
    params: impl rusqlite::Params,
) -> Result<usize> {
    tx.prepare_cached(sql)
        .and_then(|mut st| st.execute(params))
        .map_err(|e| inner.sql_err(operation, e))
}

fn status_from(s: &str) -> Option<Status> {
    match s {
        "pending" => Some(Status::Pending),
        "sent" => Some(Status::Sent),
        "failed" => Some(Status::Failed),
        _ => None,
    }
}

fn count(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

/// Decodes a row selected with `record_columns!()`; `Err(message)` for an unknown status.
fn record_from_row(row: &Row<'_>) -> rusqlite::Result<std::result::Result<FindingRecord, String>> {
    let status: String = row.get(7)?;
    let Some(status) = status_from(&status) else {
        return Ok(Err(format!("unknown status {status:?}")));
    };
    Ok(Ok(FindingRecord {
        finding_id: row.get(0)?,
        meta: FindingMeta {
            account_id: row.get(1)?,
            region: row.get(2)?,
            finding_type: row.get(3)?,
            severity: row.get(4)?,
            title: row.get(5)?,
        },
        latest_version: Timestamp::from_millis(row.get(6)?),
        status,
        lease_until: row.get::<_, Option<i64>>(8)?.map(Timestamp::from_millis),
        first_seen: Timestamp::from_millis(row.get(9)?),
        last_seen: Timestamp::from_millis(row.get(10)?),
        versions_sent: count(row.get(11)?),
        duplicates: count(row.get(12)?),
        stale: count(row.get(13)?),
        failures: count(row.get(14)?),
        last_error: row.get(15)?,
        expires_at: Timestamp::from_millis(row.get(16)?),
        sent_version: row.get::<_, Option<i64>>(17)?.map(Timestamp::from_millis),
        // An owner this build cannot read matches no caller: its commit is refused as stale.
        owner: row
            .get::<_, Option<String>>(18)?
            .and_then(|o| o.parse().ok()),
        seq: count(row.get(19)?),
    }))
}

fn corrupt(inner: &Inner, operation: &'static str, message: String) -> SqliteStoreError {
    SqliteStoreError::Corrupt {
        path: inner.path.clone(),
        operation,
        message,
    }
}

/// The live (unexpired) record of `id`.
fn read_record(
    inner: &Inner,
    tx: &Transaction<'_>,
    now: Timestamp,
    id: &str,
    operation: &'static str,
) -> Result<Option<FindingRecord>> {
    const SQL: &str = concat!(
        "SELECT ",
        record_columns!(),
        " FROM findings WHERE finding_id = ?1 AND expires_at > ?2"
    );
    let row = tx
        .prepare_cached(SQL)
        .and_then(|mut st| {
            st.query_row(params![id, now.millis()], record_from_row)
                .optional()
        })
        .map_err(|e| inner.sql_err(operation, e))?;
    match row {
        None => Ok(None),
        Some(Ok(r)) => Ok(Some(r)),
        Some(Err(m)) => Err(corrupt(inner, operation, format!("finding {id:?}: {m}"))),
    }
}

/// Deletes `id`'s record and history if expired, so a new claim starts from nothing.
fn drop_if_expired(
    inner: &Inner,
    tx: &Transaction<'_>,
    now: Timestamp,
    id: &str,
    operation: &'static str,
) -> Result<()> {
    let n = exec(
        inner,
        tx,
        operation,
        "DELETE FROM findings WHERE finding_id = ?1 AND expires_at <= ?2",
        params![id, now.millis()],
    )?;
    if n > 0 {
        exec(
            inner,
            tx,
            operation,
            "DELETE FROM history WHERE finding_id = ?1",
            params![id],
        )?;
    }
    Ok(())
}

fn add_history(
    inner: &Inner,
    tx: &Transaction<'_>,
    operation: &'static str,
    id: &str,
    at: Timestamp,
    version: Timestamp,
    kind: &HistoryKind,
) -> Result<()> {
    let data = serde_json::to_string(kind)
        .map_err(|e| corrupt(inner, operation, format!("encoding history: {e}")))?;
    let tag = kind.name();
    // The entry's sequence number is counted on the record in this same transaction, so the
    // history is in the order the store applied its events, whatever the writers' clocks say.
    let seq: i64 = tx
        .prepare_cached("UPDATE findings SET seq = seq + 1 WHERE finding_id = ?1 RETURNING seq")
        .and_then(|mut st| st.query_row(params![id], |r| r.get(0)))
        .map_err(|e| inner.sql_err(operation, e))?;
    exec(
        inner,
        tx,
        operation,
        "INSERT INTO history (finding_id, at, version, kind, data, seq) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![id, at.millis(), version.millis(), tag, data, seq],
    )?;
    Ok(())
}

/// One claim; see the module doc and `docs/state-store.md` for the rules.
pub(crate) fn claim(
    inner: &Inner,
    tx: &Transaction<'_>,
    now: Timestamp,
    req: &ClaimRequest,
    lease_ms: i64,
) -> Result<ClaimOutcome> {
    const OP: &str = "claim";
    let id = req.key.finding_id.as_str();
    let v = req.key.version;
    let expires = now.saturating_add_millis(inner.retention_ms).millis();
    let lease_until = now.saturating_add_millis(lease_ms).millis();
    drop_if_expired(inner, tx, now, id, OP)?;
    let existing = read_record(inner, tx, now, id, OP)?;

    let outcome = match judge_claim(existing.as_ref(), v, now) {
        ClaimOutcome::New { .. } => ClaimOutcome::New {
            owner: Owner(rand::random()),
        },
        other => other,
    };

    // Duplicate and Stale only arise from an existing record, so their UPDATEs always hit a row.
    let (counter, kind) = match outcome {
        ClaimOutcome::New { owner } => {
            record_claim(inner, tx, req, now, lease_until, expires, owner)?;
            (None, HistoryKind::Claimed)
        }
        // Not a final answer (the caller tries again later): history only, no counter.
        ClaimOutcome::InFlight { lease_until } => (None, HistoryKind::InFlight { lease_until }),
        ClaimOutcome::Duplicate => (Some("duplicates"), HistoryKind::Duplicate),
        ClaimOutcome::Stale { newest } => (Some("stale"), HistoryKind::Stale { newest }),
    };
    if !matches!(outcome, ClaimOutcome::New { .. }) {
        seen_again(inner, tx, id, now, expires, counter)?;
    }
    add_history(inner, tx, OP, id, now, v, &kind)?;
    Ok(outcome)
}

/// Writes a won claim: the claimed version is now the one the record follows (also an older
/// one whose newer claim was released) and its meta describes the finding; a new row starts its
/// `first_seen` now.
fn record_claim(
    inner: &Inner,
    tx: &Transaction<'_>,
    req: &ClaimRequest,
    now: Timestamp,
    lease_until: i64,
    expires: i64,
    owner: Owner,
) -> Result<()> {
    let m = &req.meta;
    exec(
        inner,
        tx,
        "claim",
        "INSERT INTO findings (finding_id, account_id, region, finding_type, severity, \
         title, latest_version, status, lease_until, first_seen, last_seen, updated_at, \
         expires_at, owner) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'pending', ?8, ?9, ?9, ?9, ?10, ?11) \
         ON CONFLICT (finding_id) DO UPDATE SET account_id = ?2, region = ?3, \
         finding_type = ?4, severity = ?5, title = ?6, latest_version = ?7, \
         status = 'pending', lease_until = ?8, last_seen = ?9, updated_at = ?9, \
         expires_at = ?10, owner = ?11",
        params![
            req.key.finding_id.as_str(),
            m.account_id,
            m.region,
            m.finding_type,
            m.severity,
            m.title,
            req.key.version.millis(),
            lease_until,
            now.millis(),
            expires,
            owner.to_string()
        ],
    )?;
    Ok(())
}

/// A claim that did not win: the record was seen again (and its expiry moves on); `counter`,
/// when given, is the column of final answers to count it in (`duplicates`, `stale`).
fn seen_again(
    inner: &Inner,
    tx: &Transaction<'_>,
    id: &str,
    now: Timestamp,
    expires: i64,
    counter: Option<&'static str>,
) -> Result<()> {
    let count = counter.map_or(String::new(), |c| format!("{c} = {c} + 1, "));
    exec(
        inner,
        tx,
        "claim",
        &format!(
            "UPDATE findings SET {count}last_seen = ?2, updated_at = ?2, expires_at = ?3 \
             WHERE finding_id = ?1"
        ),
        params![id, now.millis(), expires],
    )?;
    Ok(())
}

/// The record a `commit`/`release` of `key` by `owner` applies to, and whether it is the
/// latest version's; or the reason it is refused ([`judge_finish`]).
fn claimed_record(
    inner: &Inner,
    tx: &Transaction<'_>,
    now: Timestamp,
    key: &VersionKey,
    owner: Owner,
    operation: &'static str,
) -> Result<(FindingRecord, bool)> {
    let record = read_record(inner, tx, now, &key.finding_id, operation)?;
    match judge_finish(record.as_ref(), key, owner) {
        FinishCheck::NotClaimed(message) => Err(SqliteStoreError::NotClaimed {
            path: inner.path.clone(),
            operation,
            finding_id: key.finding_id.clone(),
            version: key.version,
            message,
        }),
        FinishCheck::StaleOwner => Err(SqliteStoreError::StaleOwner {
            path: inner.path.clone(),
            operation,
            finding_id: key.finding_id.clone(),
            version: key.version,
        }),
        check => match record {
            Some(r) => Ok((r, check == FinishCheck::Latest)),
            None => Err(corrupt(inner, operation, "record vanished".to_owned())),
        },
    }
}

pub(crate) fn commit(
    inner: &Inner,
    tx: &Transaction<'_>,
    now: Timestamp,
    key: &VersionKey,
    owner: Owner,
    delivery: &Delivery,
) -> Result<()> {
    const OP: &str = "commit";
    let (_, latest) = claimed_record(inner, tx, now, key, owner, OP)?;
    let expires = now.saturating_add_millis(inner.retention_ms).millis();
    // Only the latest version changes the status: a late commit of an older version (a newer
    // one was claimed meanwhile) is counted and recorded but never moves the finding back.
    // Either way the newest delivered version (what older versions are judged stale by) moves
    // up to this one.
    let sql = if latest {
        "UPDATE findings SET versions_sent = versions_sent + 1, status = 'sent', \
         lease_until = NULL, updated_at = ?2, expires_at = ?3, \
         sent_version = max(coalesce(sent_version, ?4), ?4) WHERE finding_id = ?1"
    } else {
        "UPDATE findings SET versions_sent = versions_sent + 1, updated_at = ?2, \
         expires_at = ?3, sent_version = max(coalesce(sent_version, ?4), ?4) \
         WHERE finding_id = ?1"
    };
    exec(
        inner,
        tx,
        OP,
        sql,
        params![key.finding_id, now.millis(), expires, key.version.millis()],
    )?;
    let kind = HistoryKind::Sent {
        event_ids: delivery.event_ids.clone(),
        request_id: delivery.request_id.clone(),
    };
    add_history(inner, tx, OP, &key.finding_id, now, key.version, &kind)
}

pub(crate) fn release(
    inner: &Inner,
    tx: &Transaction<'_>,
    now: Timestamp,
    key: &VersionKey,
    owner: Owner,
    reason: &str,
) -> Result<()> {
    const OP: &str = "release";
    let (r, latest) = claimed_record(inner, tx, now, key, owner, OP)?;
    let expires = now.saturating_add_millis(inner.retention_ms).millis();
    // Only a pending latest version is freed. A release of an older version, or of a version
    // another sender already committed, only records the failure: flipping a sent version to
    // failed would make it claimable and send it twice.
    let frees = latest && r.status == Status::Pending;
    let sql = if frees {
        "UPDATE findings SET failures = failures + 1, last_error = ?4, status = 'failed', \
         lease_until = NULL, updated_at = ?2, expires_at = ?3 WHERE finding_id = ?1"
    } else {
        "UPDATE findings SET failures = failures + 1, last_error = ?4, updated_at = ?2, \
         expires_at = ?3 WHERE finding_id = ?1"
    };
    exec(
        inner,
        tx,
        OP,
        sql,
        params![key.finding_id, now.millis(), expires, reason],
    )?;
    let kind = HistoryKind::Failed {
        reason: reason.to_owned(),
    };
    add_history(inner, tx, OP, &key.finding_id, now, key.version, &kind)
}

pub(crate) fn history(
    inner: &Inner,
    tx: &Transaction<'_>,
    now: Timestamp,
    id: &str,
) -> Result<Option<FindingHistory>> {
    const OP: &str = "history";
    let Some(record) = read_record(inner, tx, now, id, OP)? else {
        return Ok(None);
    };
    let mut stmt = tx
        .prepare_cached(
            "SELECT at, version, data, seq FROM history WHERE finding_id = ?1 \
             ORDER BY seq ASC, id ASC",
        )
        .map_err(|e| inner.sql_err(OP, e))?;
    let rows = stmt
        .query_map(params![id], |row| {
            Ok((
                row.get::<_, i64>(0)?,
                row.get::<_, i64>(1)?,
                row.get::<_, String>(2)?,
                row.get::<_, Option<i64>>(3)?,
            ))
        })
        .map_err(|e| inner.sql_err(OP, e))?;
    let mut entries = Vec::new();
    for row in rows {
        let (at, version, data, seq) = row.map_err(|e| inner.sql_err(OP, e))?;
        let kind: HistoryKind = serde_json::from_str(&data).map_err(|e| {
            corrupt(
                inner,
                OP,
                format!("finding {id:?}: history entry {data:?}: {e}"),
            )
        })?;
        entries.push(HistoryEntry {
            seq: seq.and_then(|n| u64::try_from(n).ok()),
            at: Timestamp::from_millis(at),
            version: Timestamp::from_millis(version),
            kind,
        });
    }
    Ok(Some(FindingHistory { record, entries }))
}

pub(crate) fn list(
    inner: &Inner,
    tx: &Transaction<'_>,
    now: Timestamp,
    q: &ListQuery,
) -> Result<Vec<FindingRecord>> {
    const OP: &str = "list";
    // Every filter is pushed into SQL so that LIMIT counts matching rows; `ListQuery::matches`
    // is applied again below as a guard against the two drifting apart.
    let mut sql = concat!(
        "SELECT ",
        record_columns!(),
        " FROM findings WHERE expires_at > ?"
    )
    .to_owned();
    let mut args: Vec<Value> = vec![Value::Integer(now.millis())];
    if let Some(a) = &q.account {
        sql.push_str(" AND account_id = ?");
        args.push(Value::Text(a.clone()));
    }
    if let Some(t) = q.since {
        sql.push_str(" AND last_seen >= ?");
        args.push(Value::Integer(t.millis()));
    }
    if let Some(t) = q.until {
        sql.push_str(" AND last_seen < ?");
        args.push(Value::Integer(t.millis()));
    }
    if let Some(p) = &q.finding_type {
        // Not LIKE: LIKE is case-insensitive and treats `_` and `%` as wildcards.
        sql.push_str(" AND substr(finding_type, 1, ?) = ?");
        args.push(Value::Integer(
            i64::try_from(p.chars().count()).unwrap_or(i64::MAX),
        ));
        args.push(Value::Text(p.clone()));
    }
    match q.status {
        None => {}
        Some(StatusFilter::Sent) => sql.push_str(" AND versions_sent > 0"),
        Some(StatusFilter::Duplicate) => sql.push_str(" AND duplicates > 0"),
        Some(StatusFilter::Stale) => sql.push_str(" AND stale > 0"),
        Some(StatusFilter::Failed) => sql.push_str(" AND failures > 0 AND status = 'failed'"),
        Some(StatusFilter::Pending) => sql.push_str(" AND status = 'pending'"),
    }
    sql.push_str(" ORDER BY last_seen DESC, finding_id ASC");
    if let Some(n) = q.limit {
        sql.push_str(" LIMIT ?");
        args.push(Value::Integer(i64::try_from(n).unwrap_or(i64::MAX)));
    }
    let mut stmt = tx.prepare(&sql).map_err(|e| inner.sql_err(OP, e))?;
    let rows = stmt
        .query_map(rusqlite::params_from_iter(args), record_from_row)
        .map_err(|e| inner.sql_err(OP, e))?;
    let mut out = Vec::new();
    for row in rows {
        let r = row
            .map_err(|e| inner.sql_err(OP, e))?
            .map_err(|m| corrupt(inner, OP, m))?;
        if q.matches(&r) {
            out.push(r);
        }
    }
    Ok(out)
}

pub(crate) fn kv_get(
    inner: &Inner,
    tx: &Transaction<'_>,
    now: Timestamp,
    ns: &str,
    key: &str,
) -> Result<Option<String>> {
    tx.query_row(
        "SELECT value FROM kv WHERE namespace = ?1 AND key = ?2 AND expires_at > ?3",
        params![ns, key, now.millis()],
        |r| r.get(0),
    )
    .optional()
    .map_err(|e| inner.sql_err("kv_get", e))
}

pub(crate) fn kv_put(
    inner: &Inner,
    tx: &Transaction<'_>,
    now: Timestamp,
    ns: &str,
    key: &str,
    value: &str,
    ttl_ms: i64,
) -> Result<()> {
    exec(
        inner,
        tx,
        "kv_put",
        "INSERT INTO kv (namespace, key, value, expires_at) VALUES (?1, ?2, ?3, ?4) \
         ON CONFLICT (namespace, key) DO UPDATE SET value = excluded.value, \
         expires_at = excluded.expires_at",
        params![ns, key, value, now.saturating_add_millis(ttl_ms).millis()],
    )?;
    Ok(())
}

pub(crate) fn purge_all(inner: &Inner, tx: &Transaction<'_>, now: Timestamp) -> Result<PurgeStats> {
    const OP: &str = "purge";
    let t = now.millis();
    let history = exec(
        inner,
        tx,
        OP,
        "DELETE FROM history WHERE finding_id IN \
         (SELECT finding_id FROM findings WHERE expires_at <= ?1)",
        params![t],
    )?;
    let findings = exec(
        inner,
        tx,
        OP,
        "DELETE FROM findings WHERE expires_at <= ?1",
        params![t],
    )?;
    let kv = exec(
        inner,
        tx,
        OP,
        "DELETE FROM kv WHERE expires_at <= ?1",
        params![t],
    )?;
    Ok(PurgeStats {
        findings: findings as u64,
        history: history as u64,
        kv: kv as u64,
    })
}
