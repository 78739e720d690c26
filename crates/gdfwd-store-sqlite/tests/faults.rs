//! Faults and sharing: a file locked by another connection, two stores and two processes
//! claiming on one file, a file from a newer schema, an unwritable location.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use gdfwd_core::store::{
    ClaimOutcome, ClaimRequest, Delivery, KvStore, Owner, StateStore, VersionKey,
};
use gdfwd_core::{Clock, StoreError, SystemClock};
use gdfwd_model::{FindingMeta, Timestamp};
use gdfwd_store_sqlite::{SqliteOptions, SqliteStore, SqliteStoreError};

const LEASE: Duration = Duration::from_secs(300);

fn req(id: &str) -> ClaimRequest {
    ClaimRequest {
        key: VersionKey {
            finding_id: id.to_owned(),
            version: Timestamp::from_millis(1_740_516_006_721),
        },
        meta: FindingMeta {
            account_id: "111122223333".into(),
            region: "us-east-1".into(),
            ..FindingMeta::default()
        },
    }
}

fn clock() -> Arc<dyn Clock> {
    Arc::new(SystemClock)
}

fn open(path: &Path, busy: Duration) -> SqliteStore {
    SqliteStore::open_with(
        path,
        clock(),
        SqliteOptions {
            busy_timeout: busy,
            ..SqliteOptions::default()
        },
    )
    .expect("open store")
}

fn assert_unavailable_naming(r: Result<impl std::fmt::Debug, StoreError>, path: &Path, op: &str) {
    match r {
        Err(e @ StoreError::Unavailable { .. }) => {
            let msg = e.to_string();
            assert!(
                msg.contains(&path.display().to_string()),
                "{op}: error names the file: {msg}"
            );
            assert!(msg.contains("locked"), "{op}: error says why: {msg}");
        }
        other => panic!("{op} under a held lock: expected Unavailable, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locked_file_is_unavailable_naming_the_path_then_recovers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("locked.db");
    let store = open(&path, Duration::from_millis(150));

    // Another connection (as another gdfwd process would) takes the write lock and keeps it.
    let other = rusqlite::Connection::open(&path).expect("second connection");
    other.execute_batch("BEGIN EXCLUSIVE").expect("lock");

    assert_unavailable_naming(store.claim(&req("f"), LEASE).await, &path, "claim");
    assert_unavailable_naming(
        store.claim_many(&[req("f"), req("g")], LEASE).await,
        &path,
        "claim_many",
    );
    let key = req("f").key;
    assert_unavailable_naming(
        store.commit(&key, Owner::NONE, &Delivery::default()).await,
        &path,
        "commit",
    );
    assert_unavailable_naming(
        store.release(&key, Owner::NONE, "x").await,
        &path,
        "release",
    );
    assert_unavailable_naming(
        store
            .kv_put("alias", "1", "a", Duration::from_secs(60))
            .await,
        &path,
        "kv_put",
    );

    // Nothing was claimed while locked: once the lock is gone the first claim is New.
    other.execute_batch("ROLLBACK").expect("unlock");
    assert!((store.claim(&req("f"), LEASE).await.expect("claim")).is_new());
    assert!(matches!(
        store.claim(&req("f"), LEASE).await.expect("claim"),
        ClaimOutcome::InFlight { .. }
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_are_not_blocked_by_a_writer() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("wal.db");
    let store = open(&path, Duration::from_millis(100));
    assert!((store.claim(&req("f"), LEASE).await.expect("claim")).is_new());
    let other = rusqlite::Connection::open(&path).expect("second connection");
    other.execute_batch("BEGIN EXCLUSIVE").expect("lock");
    // WAL mode: `audit` keeps working while a forwarder holds the write lock.
    let h = store.history("f").await.expect("history while locked");
    assert!(h.is_some());
    other.execute_batch("ROLLBACK").expect("unlock");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_stores_on_one_file_race_to_exactly_one_new() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("shared.db");
    let a: Arc<dyn StateStore> = Arc::new(open(&path, Duration::from_secs(30)));
    let b: Arc<dyn StateStore> = Arc::new(open(&path, Duration::from_secs(30)));
    let mut tasks = Vec::new();
    for i in 0..40 {
        let s = Arc::clone(if i % 2 == 0 { &a } else { &b });
        tasks.push(tokio::spawn(
            async move { s.claim(&req("hot"), LEASE).await },
        ));
    }
    let mut outcomes = Vec::new();
    for t in tasks {
        outcomes.push(t.await.expect("task").expect("claim"));
    }
    let new = outcomes.iter().filter(|o| o.is_new()).count();
    let dup = outcomes
        .iter()
        .filter(|o| matches!(o, ClaimOutcome::InFlight { .. }))
        .count();
    assert_eq!((new, dup), (1, 39), "{outcomes:?}");

    // Batches from both stores over the same 50 findings: each is New exactly once.
    let batch: Vec<ClaimRequest> = (0..50).map(|i| req(&format!("f{i}"))).collect();
    let (ra, rb) = tokio::join!(a.claim_many(&batch, LEASE), b.claim_many(&batch, LEASE));
    let (ra, rb) = (ra.expect("batch a"), rb.expect("batch b"));
    for i in 0..50 {
        let news = [ra[i], rb[i]].iter().filter(|o| o.is_new()).count();
        assert_eq!(news, 1, "f{i}: {:?} / {:?}", ra[i], rb[i]);
    }
}

/// Not a test on its own: the child side of `two_processes_race_to_exactly_one_new`, run by
/// re-executing this test binary with `GDFWD_CHILD_DB` set.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "helper process for two_processes_race_to_exactly_one_new"]
async fn child_claimer() {
    let path = std::env::var_os("GDFWD_CHILD_DB").expect("GDFWD_CHILD_DB");
    let store = open(Path::new(&path), Duration::from_secs(30));
    // Single claims and batches interleaved, as the CLI and backfill would.
    for chunk in (0..200).collect::<Vec<_>>().chunks(20) {
        let reqs: Vec<ClaimRequest> = chunk.iter().map(|i| req(&format!("f{i}"))).collect();
        let outcomes = if chunk[0] % 40 == 0 {
            store.claim_many(&reqs, LEASE).await.expect("claim_many")
        } else {
            let mut v = Vec::new();
            for r in &reqs {
                v.push(store.claim(r, LEASE).await.expect("claim"));
            }
            v
        };
        for (r, o) in reqs.iter().zip(outcomes) {
            println!("CLAIM {} {}", r.key.finding_id, o.is_new());
        }
    }
}

#[test]
fn two_processes_race_to_exactly_one_new() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("procs.db");
    // Create the schema first so both children race on claims, not on the migration.
    drop(open(&path, Duration::from_secs(5)));
    let exe = std::env::current_exe().expect("test binary");
    let children: Vec<_> = (0..2)
        .map(|_| {
            Command::new(&exe)
                .args(["child_claimer", "--exact", "--ignored", "--nocapture"])
                .env("GDFWD_CHILD_DB", &path)
                .stdout(std::process::Stdio::piped())
                .spawn()
                .expect("spawn child")
        })
        .collect();
    let mut news = std::collections::HashMap::<String, usize>::new();
    for c in children {
        let out = c.wait_with_output().expect("child output");
        assert!(out.status.success(), "child failed: {out:?}");
        let text = String::from_utf8_lossy(&out.stdout);
        let mut lines = 0;
        for line in text.lines().filter_map(|l| l.strip_prefix("CLAIM ")) {
            let (id, new) = line.split_once(' ').expect("CLAIM id bool");
            *news.entry(id.to_owned()).or_default() += usize::from(new == "true");
            lines += 1;
        }
        assert_eq!(lines, 200, "child reported every claim: {text}");
    }
    assert_eq!(news.len(), 200);
    for (id, n) in &news {
        assert_eq!(*n, 1, "{id} was New {n} times across two processes");
    }
}

#[test]
fn newer_schema_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("future.db");
    drop(open(&path, Duration::from_secs(1)));
    let c = rusqlite::Connection::open(&path).expect("connection");
    c.pragma_update(None, "user_version", 99)
        .expect("set version");
    drop(c);
    let err = SqliteStore::open(&path, clock(), Duration::from_secs(60)).expect_err("refused");
    assert!(
        matches!(err, SqliteStoreError::SchemaTooNew { found: 99, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("future.db"), "{err}");
}

#[test]
fn reopening_keeps_state_and_schema_version() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("nested/dirs/state.db");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let s = open(&path, Duration::from_secs(1));
    assert!((rt.block_on(s.claim(&req("f"), LEASE)).expect("claim")).is_new());
    drop(s);
    let s = open(&path, Duration::from_secs(1));
    assert!(
        matches!(
            rt.block_on(s.claim(&req("f"), LEASE)).expect("claim"),
            ClaimOutcome::InFlight { .. }
        ),
        "state survives reopening"
    );
    let c = rusqlite::Connection::open(&path).expect("connection");
    let v: i64 = c
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .expect("version");
    assert_eq!(v, gdfwd_store_sqlite::SCHEMA_VERSION);
    let mode: String = c
        .pragma_query_value(None, "journal_mode", |r| r.get(0))
        .expect("mode");
    assert_eq!(mode, "wal");
}

#[test]
fn unusable_location_is_an_error_naming_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("plain-file");
    std::fs::write(&file, b"not a directory").expect("write");
    let path = file.join("state.db");
    let err = SqliteStore::open(&path, clock(), Duration::from_secs(60)).expect_err("fails");
    assert!(matches!(err, SqliteStoreError::CreateDir { .. }), "{err:?}");
    assert!(err.to_string().contains("plain-file"), "{err}");

    let garbage = dir.path().join("garbage.db");
    std::fs::write(&garbage, vec![0x5a_u8; 8192]).expect("write");
    let err = SqliteStore::open(&garbage, clock(), Duration::from_secs(60)).expect_err("fails");
    assert!(err.to_string().contains("garbage.db"), "{err}");
}

#[tokio::test]
async fn purge_deletes_expired_rows() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("purge.db");
    let clock = gdfwd_core::ManualClock::new(Timestamp::from_millis(1_750_000_000_000));
    let s =
        SqliteStore::open(&path, Arc::new(clock.clone()), Duration::from_secs(3600)).expect("open");
    s.claim(&req("old"), LEASE).await.expect("claim");
    s.kv_put("alias", "k", "v", Duration::from_secs(10))
        .await
        .expect("kv");
    clock.advance(Duration::from_secs(1800));
    s.claim(&req("young"), LEASE).await.expect("claim");
    clock.advance(Duration::from_secs(1800));
    let stats = s.purge_expired().await.expect("purge");
    assert_eq!((stats.findings, stats.history, stats.kv), (1, 1, 1));
    let c = rusqlite::Connection::open(&path).expect("connection");
    let left: i64 = c
        .query_row("SELECT count(*) FROM findings", [], |r| r.get(0))
        .expect("count");
    assert_eq!(left, 1, "only the unexpired finding remains on disk");
}
