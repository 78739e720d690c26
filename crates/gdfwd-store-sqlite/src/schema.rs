//! The database schema and its migrations, versioned with `PRAGMA user_version`.
//!
//! Migrations are append-only: entry `i` of [`MIGRATIONS`] takes the file from version `i` to
//! `i + 1`. Each runs in its own `BEGIN IMMEDIATE` transaction that re-reads `user_version`
//! first, so two processes opening a fresh file at once migrate it exactly once. A file with a
//! version above [`CURRENT_VERSION`] (written by a newer gdfwd) is refused rather than guessed at.
//!
//! Times are epoch milliseconds (`INTEGER`), the same unit as [`gdfwd_model::Timestamp`], so
//! comparisons happen in SQL without parsing.

use std::path::Path;

use rusqlite::{Connection, TransactionBehavior};

use crate::error::SqliteStoreError;

const V1: &str = r#"
CREATE TABLE findings (
    finding_id     TEXT PRIMARY KEY NOT NULL,
    account_id     TEXT NOT NULL,
    region         TEXT NOT NULL,
    finding_type   TEXT,
    severity       REAL,
    title          TEXT,
    latest_version INTEGER NOT NULL,
    status         TEXT NOT NULL CHECK (status IN ('pending', 'sent', 'failed')),
    lease_until    INTEGER,
    first_seen     INTEGER NOT NULL,
    last_seen      INTEGER NOT NULL,
    versions_sent  INTEGER NOT NULL DEFAULT 0,
    duplicates     INTEGER NOT NULL DEFAULT 0,
    stale          INTEGER NOT NULL DEFAULT 0,
    failures       INTEGER NOT NULL DEFAULT 0,
    last_error     TEXT,
    updated_at     INTEGER NOT NULL,
    expires_at     INTEGER NOT NULL
) STRICT;
-- `audit list --account A --since T`: per-account, most recently seen first.
CREATE INDEX findings_account_seen ON findings (account_id, last_seen DESC);
CREATE INDEX findings_seen ON findings (last_seen DESC);
CREATE INDEX findings_expires ON findings (expires_at);

CREATE TABLE history (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    finding_id TEXT NOT NULL,
    at         INTEGER NOT NULL,
    version    INTEGER NOT NULL,
    kind       TEXT NOT NULL,
    -- The whole `HistoryKind` as JSON (tagged by `kind`), so new kinds need no migration.
    data       TEXT NOT NULL
) STRICT;
CREATE INDEX history_finding ON history (finding_id, id);

CREATE TABLE kv (
    namespace  TEXT NOT NULL,
    key        TEXT NOT NULL,
    value      TEXT NOT NULL,
    expires_at INTEGER NOT NULL,
    PRIMARY KEY (namespace, key)
) STRICT, WITHOUT ROWID;
"#;

/// The newest version delivered, which alone makes older versions stale (before, the newest
/// claimed one did, so a claim that failed blocked every older version). Existing records take
/// it from their history's deliveries.
const V2: &str = r#"
ALTER TABLE findings ADD COLUMN sent_version INTEGER;
UPDATE findings SET sent_version =
    (SELECT MAX(version) FROM history
     WHERE history.finding_id = findings.finding_id AND history.kind = 'sent');
"#;

/// Claim owners and store-ordered history (issue #20): `owner` is the latest claim's token
/// (NULL on rows an older gdfwd claimed: their commit by a new gdfwd is refused as a stale
/// owner, and they are claimable again once their lease ends); `seq` counts each record's
/// history entries, and existing entries are numbered in the order they were written (`id`).
const V3: &str = r#"
ALTER TABLE findings ADD COLUMN owner TEXT;
ALTER TABLE findings ADD COLUMN seq INTEGER NOT NULL DEFAULT 0;
ALTER TABLE history ADD COLUMN seq INTEGER;
UPDATE history SET seq =
    (SELECT COUNT(*) FROM history AS h
     WHERE h.finding_id = history.finding_id AND h.id <= history.id);
UPDATE findings SET seq =
    (SELECT COUNT(*) FROM history WHERE history.finding_id = findings.finding_id);
CREATE INDEX history_finding_seq ON history (finding_id, seq);
"#;

/// Migration `i` upgrades from version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[V1, V2, V3];

/// The schema version this build writes.
pub const CURRENT_VERSION: i64 = MIGRATIONS.len() as i64;

fn user_version(conn: &Connection) -> rusqlite::Result<i64> {
    conn.pragma_query_value(None, "user_version", |r| r.get(0))
}

/// Brings the file to [`CURRENT_VERSION`].
pub(crate) fn migrate(
    conn: &mut Connection,
    path: &Path,
    busy: std::time::Duration,
) -> Result<(), SqliteStoreError> {
    let found = user_version(conn)
        .map_err(|e| SqliteStoreError::sql(path, "read schema version", busy, e))?;
    if found > CURRENT_VERSION {
        return Err(SqliteStoreError::SchemaTooNew {
            path: path.to_path_buf(),
            found,
            supported: CURRENT_VERSION,
        });
    }
    for (from, sql) in MIGRATIONS
        .iter()
        .enumerate()
        .skip(usize::try_from(found).unwrap_or(0))
    {
        let version = from as i64 + 1;
        let fail = |source: rusqlite::Error| {
            if crate::error::is_busy(&source) {
                SqliteStoreError::sql(path, "migrate schema", busy, source)
            } else {
                SqliteStoreError::Migrate {
                    path: path.to_path_buf(),
                    version,
                    source,
                }
            }
        };
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(fail)?;
        // Another process may have migrated while we waited for the lock.
        if user_version(&tx).map_err(fail)? >= version {
            continue;
        }
        tx.execute_batch(sql).map_err(fail)?;
        tx.pragma_update(None, "user_version", version)
            .map_err(fail)?;
        tx.commit().map_err(fail)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A version 1 file gets `sent_version` from its history: the newest version delivered,
    /// also when the latest claim failed after it (issue #16), and none without a delivery.
    #[test]
    fn v2_takes_the_newest_delivered_version_from_the_history() {
        let mut conn = Connection::open_in_memory().expect("open");
        conn.execute_batch(V1).expect("v1");
        conn.pragma_update(None, "user_version", 1)
            .expect("version");
        conn.execute_batch(
            "INSERT INTO findings (finding_id, account_id, region, latest_version, status, \
             first_seen, last_seen, updated_at, expires_at) VALUES \
             ('a', '1', 'r', 3000, 'failed', 0, 0, 0, 9), ('b', '1', 'r', 1000, 'failed', 0, 0, 0, 9);
             INSERT INTO history (finding_id, at, version, kind, data) VALUES \
             ('a', 0, 1000, 'sent', '{}'), ('a', 0, 2000, 'sent', '{}'), \
             ('a', 0, 3000, 'failed', '{}'), ('b', 0, 1000, 'failed', '{}');",
        )
        .expect("v1 rows");
        migrate(&mut conn, Path::new(":memory:"), std::time::Duration::ZERO).expect("migrate");
        let sent = |id: &str| -> Option<i64> {
            conn.query_row(
                "SELECT sent_version FROM findings WHERE finding_id = ?1",
                [id],
                |r| r.get(0),
            )
            .expect("row")
        };
        assert_eq!(sent("a"), Some(2000));
        assert_eq!(sent("b"), None);
        assert_eq!(user_version(&conn).expect("version"), CURRENT_VERSION);
    }

    /// A version 2 file numbers each finding's history entries in the order they were written,
    /// and its records count them; their latest claims have no owner.
    #[test]
    fn v3_numbers_existing_history_in_write_order() {
        let mut conn = Connection::open_in_memory().expect("open");
        conn.execute_batch(V1).expect("v1");
        conn.execute_batch(V2).expect("v2");
        conn.pragma_update(None, "user_version", 2)
            .expect("version");
        conn.execute_batch(
            "INSERT INTO findings (finding_id, account_id, region, latest_version, status, \
             first_seen, last_seen, updated_at, expires_at) VALUES \
             ('a', '1', 'r', 3000, 'pending', 0, 0, 0, 9), ('b', '1', 'r', 1000, 'sent', 0, 0, 0, 9);
             INSERT INTO history (finding_id, at, version, kind, data) VALUES \
             ('a', 50, 1000, 'claimed', '{}'), ('b', 10, 1000, 'claimed', '{}'), \
             ('a', 40, 1000, 'sent', '{}'), ('a', 60, 3000, 'claimed', '{}');",
        )
        .expect("v2 rows");
        migrate(&mut conn, Path::new(":memory:"), std::time::Duration::ZERO).expect("migrate");
        let seqs: Vec<(String, i64, i64)> = conn
            .prepare("SELECT finding_id, at, seq FROM history ORDER BY finding_id, seq")
            .expect("prepare")
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .expect("query")
            .collect::<Result<_, _>>()
            .expect("rows");
        assert_eq!(
            seqs,
            vec![
                ("a".into(), 50, 1),
                ("a".into(), 40, 2),
                ("a".into(), 60, 3),
                ("b".into(), 10, 1)
            ],
            "write order, not time order"
        );
        let rec: Vec<(String, i64, Option<String>)> = conn
            .prepare("SELECT finding_id, seq, owner FROM findings ORDER BY finding_id")
            .expect("prepare")
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .expect("query")
            .collect::<Result<_, _>>()
            .expect("rows");
        assert_eq!(rec, vec![("a".into(), 3, None), ("b".into(), 1, None)]);
    }
}
