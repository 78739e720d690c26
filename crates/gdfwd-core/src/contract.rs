//! The state store contract suite, shared by every backend's tests (feature `contract`).
//!
//! The trait's doc ([`crate::store`]) states the contract; this module is its executable form, so
//! the SQLite and DynamoDB backends give the same answers. Every case is a public `async fn`
//! taking a factory: it calls the factory for a FRESH, empty store (its own file or table) and
//! drives time with the [`ManualClock`] it passes in, so leases and TTLs are tested without
//! sleeping. A backend must therefore read "now" only from the clock it is given (also for TTL
//! filtering on reads), and use the retention in [`StoreSetup`].
//!
//! Use it from a backend's integration test (`tests/contract.rs`), with
//! `gdfwd-core = { workspace = true, features = ["contract"] }` and `tokio` (features `macros`,
//! `rt-multi-thread`) as dev-dependencies:
//!
//! ```ignore
//! use std::sync::Arc;
//! use gdfwd_core::contract::StoreSetup;
//! use gdfwd_core::store::StateStore;
//!
//! async fn make_store(setup: StoreSetup) -> Arc<dyn StateStore> {
//!     let dir = tempfile::tempdir().expect("tempdir");
//!     let store = MyStore::open(dir.path(), setup.clock_arc(), setup.retention).expect("open");
//!     // Keep the directory (or a table-dropping guard) alive as long as the store.
//!     gdfwd_core::contract::with_guard(Arc::new(store), dir)
//! }
//!
//! // One #[tokio::test] per case (multi-thread runtime, 2 workers), named after the case.
//! gdfwd_core::contract_tests!(make_store);
//! ```
//!
//! [`run_all`] runs every case in one test instead. [`StoreSetup::name`] is unique per call and
//! safe as a DynamoDB table name or file name.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use gdfwd_model::{FindingMeta, Timestamp};

use crate::clock::{Clock, ManualClock};
use crate::error::StoreError;
use crate::store::{
    ClaimOutcome, ClaimRequest, Delivery, FindingHistory, FindingRecord, Finish, HistoryKind,
    KvStore, ListQuery, Owner, StateStore, Status, StatusFilter, VersionKey,
};

/// The retention every contract store must be created with.
pub const RETENTION: Duration = Duration::from_secs(90 * 24 * 3600);
/// The lease the cases claim with.
pub const LEASE: Duration = Duration::from_secs(300);

/// What a factory gets for one fresh store.
#[derive(Debug, Clone)]
pub struct StoreSetup {
    /// The store's only source of "now".
    pub clock: ManualClock,
    /// Records expire this long after their last update.
    pub retention: Duration,
    /// Unique per factory call (`gdfwd-ct-<case>-<pid>-<n>-<ms>`: ASCII letters, digits, `-`),
    /// for a table or file of its own.
    pub name: String,
}

impl StoreSetup {
    /// The clock as the `Arc<dyn Clock>` store constructors take.
    pub fn clock_arc(&self) -> Arc<dyn Clock> {
        Arc::new(self.clock.clone())
    }
}

static SEQ: AtomicU64 = AtomicU64::new(0);

fn setup(case: &str, start: Timestamp) -> StoreSetup {
    let n = SEQ.fetch_add(1, Ordering::Relaxed);
    StoreSetup {
        clock: ManualClock::new(start),
        retention: RETENTION,
        name: format!(
            "gdfwd-ct-{}-{}-{n}-{}",
            case.replace('_', "-"),
            std::process::id(),
            Timestamp::now().millis()
        ),
    }
}

/// A clock start near real time (whole seconds), so backends whose TTL is enforced by a real
/// service never see items that expired before the test began.
fn start_time() -> Timestamp {
    let now = Timestamp::now().millis();
    Timestamp::from_millis(now - now.rem_euclid(1000))
}

/// Keeps `guard` (a temp dir, a table-dropping handle) alive as long as the store; every call,
/// including `claim_many`, goes to `store` unchanged.
pub fn with_guard<G>(store: Arc<dyn StateStore>, guard: G) -> Arc<dyn StateStore>
where
    G: Send + Sync + 'static,
{
    Arc::new(Guarded {
        store,
        _guard: Box::new(guard),
    })
}

struct Guarded {
    store: Arc<dyn StateStore>,
    _guard: Box<dyn std::any::Any + Send + Sync>,
}

impl std::fmt::Debug for Guarded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guarded")
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl StateStore for Guarded {
    fn describe(&self) -> String {
        self.store.describe()
    }
    fn refuses(&self, req: &ClaimRequest) -> Option<String> {
        self.store.refuses(req)
    }
    async fn claim(&self, req: &ClaimRequest, lease: Duration) -> Result<ClaimOutcome, StoreError> {
        self.store.claim(req, lease).await
    }
    async fn claim_many(
        &self,
        reqs: &[ClaimRequest],
        lease: Duration,
    ) -> Result<Vec<ClaimOutcome>, StoreError> {
        self.store.claim_many(reqs, lease).await
    }
    async fn commit(
        &self,
        key: &VersionKey,
        owner: Owner,
        delivery: &Delivery,
    ) -> Result<(), StoreError> {
        self.store.commit(key, owner, delivery).await
    }
    async fn release(
        &self,
        key: &VersionKey,
        owner: Owner,
        reason: &str,
    ) -> Result<(), StoreError> {
        self.store.release(key, owner, reason).await
    }
    async fn finish_many(
        &self,
        items: &[(VersionKey, Owner, Finish)],
    ) -> Vec<Result<(), StoreError>> {
        self.store.finish_many(items).await
    }
    async fn history(&self, finding_id: &str) -> Result<Option<FindingHistory>, StoreError> {
        self.store.history(finding_id).await
    }
    async fn list(&self, query: &ListQuery) -> Result<Vec<FindingRecord>, StoreError> {
        self.store.list(query).await
    }
    fn kv(self: Arc<Self>) -> Option<Arc<dyn KvStore>> {
        Arc::clone(&self.store).kv()
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers

/// Base version (a GuardDuty `updatedAt`); versions are `v(n)` = base + n seconds.
fn v(n: i64) -> Timestamp {
    Timestamp::from_millis(1_740_516_006_721 + n * 1000)
}

fn meta(account: &str, finding_type: &str, severity: f64, title: &str) -> FindingMeta {
    FindingMeta {
        account_id: account.to_owned(),
        region: "eu-central-1".to_owned(),
        finding_type: Some(finding_type.to_owned()),
        severity: Some(severity),
        title: Some(title.to_owned()),
    }
}

fn default_meta() -> FindingMeta {
    meta("111122223333", "Recon:EC2/Portscan", 5.0, "Portscan")
}

fn key(id: &str, version: Timestamp) -> VersionKey {
    VersionKey {
        finding_id: id.to_owned(),
        version,
    }
}

fn req(id: &str, version: Timestamp) -> ClaimRequest {
    ClaimRequest {
        key: key(id, version),
        meta: default_meta(),
    }
}

fn req_with(id: &str, version: Timestamp, m: FindingMeta) -> ClaimRequest {
    ClaimRequest {
        key: key(id, version),
        meta: m,
    }
}

fn delivery(ids: &[&str], request: &str) -> Delivery {
    Delivery {
        event_ids: ids.iter().map(|s| (*s).to_owned()).collect(),
        request_id: Some(request.to_owned()),
    }
}

/// The answer for a version claimed at `claimed_at` whose lease ([`LEASE`]) is still live.
fn in_flight(claimed_at: Timestamp) -> ClaimOutcome {
    ClaimOutcome::InFlight {
        lease_until: in_flight_until(claimed_at),
    }
}

fn in_flight_until(claimed_at: Timestamp) -> Timestamp {
    claimed_at.saturating_add_millis(i64::try_from(LEASE.as_millis()).unwrap_or(i64::MAX))
}

/// A winning claim, with its owner token cleared so cases can compare outcomes; the token is
/// kept in [`OWNERS`] for the case's commit and release.
const NEW: ClaimOutcome = ClaimOutcome::New { owner: Owner::NONE };

/// The owner of the last winning claim each case made, per store (its `describe`), finding and
/// version: what the sender that claimed it would hold.
static OWNERS: std::sync::Mutex<std::collections::BTreeMap<(String, String, Timestamp), Owner>> =
    std::sync::Mutex::new(std::collections::BTreeMap::new());

fn owners()
-> std::sync::MutexGuard<'static, std::collections::BTreeMap<(String, String, Timestamp), Owner>> {
    OWNERS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Records a winning claim's owner and returns the outcome with it cleared ([`NEW`]).
fn track(s: &dyn StateStore, k: &VersionKey, o: ClaimOutcome) -> ClaimOutcome {
    match o {
        ClaimOutcome::New { owner } => {
            owners().insert((s.describe(), k.finding_id.clone(), k.version), owner);
            NEW
        }
        other => other,
    }
}

/// The owner token of the last winning claim of `k` made through these helpers.
fn owner_of(s: &dyn StateStore, k: &VersionKey) -> Owner {
    owners()
        .get(&(s.describe(), k.finding_id.clone(), k.version))
        .copied()
        .unwrap_or(Owner::NONE)
}

async fn claim(s: &dyn StateStore, r: &ClaimRequest) -> ClaimOutcome {
    let o = s
        .claim(r, LEASE)
        .await
        .unwrap_or_else(|e| panic!("claim {:?} on {}: {e}", r.key, s.describe()));
    track(s, &r.key, o)
}

async fn claim_many(s: &dyn StateStore, reqs: &[ClaimRequest]) -> Vec<ClaimOutcome> {
    let got = s
        .claim_many(reqs, LEASE)
        .await
        .unwrap_or_else(|e| panic!("claim_many on {}: {e}", s.describe()));
    got.into_iter()
        .zip(reqs)
        .map(|(o, r)| track(s, &r.key, o))
        .collect()
}

async fn commit(s: &dyn StateStore, k: &VersionKey) {
    s.commit(k, owner_of(s, k), &delivery(&["ev-1"], "req-1"))
        .await
        .unwrap_or_else(|e| panic!("commit {k:?} on {}: {e}", s.describe()));
}

async fn release(s: &dyn StateStore, k: &VersionKey, reason: &str) {
    s.release(k, owner_of(s, k), reason)
        .await
        .unwrap_or_else(|e| panic!("release {k:?} on {}: {e}", s.describe()));
}

/// The history with the latest claim's owner token cleared, to compare two stores.
fn without_owner(h: Option<FindingHistory>) -> Option<FindingHistory> {
    h.map(|mut h| {
        h.record.owner = None;
        h
    })
}

async fn history(s: &dyn StateStore, id: &str) -> Option<FindingHistory> {
    s.history(id)
        .await
        .unwrap_or_else(|e| panic!("history {id:?} on {}: {e}", s.describe()))
}

async fn record(s: &dyn StateStore, id: &str) -> FindingRecord {
    history(s, id)
        .await
        .unwrap_or_else(|| panic!("{id:?} has no record on {}", s.describe()))
        .record
}

async fn list(s: &dyn StateStore, q: &ListQuery) -> Vec<String> {
    s.list(q)
        .await
        .unwrap_or_else(|e| panic!("list {q:?} on {}: {e}", s.describe()))
        .into_iter()
        .map(|r| r.finding_id)
        .collect()
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

// ---------------------------------------------------------------------------------------------
// Cases

/// Never seen → New; same version again (pending or sent) → Duplicate; newer → New; older than
/// the newest delivered → Stale naming it; findings are independent.
pub async fn new_duplicate_stale<F, Fut>(make: &F)
where
    F: Fn(StoreSetup) -> Fut,
    Fut: Future<Output = Arc<dyn StateStore>>,
{
    let st = setup("new_duplicate_stale", start_time());
    let s = make(st.clone()).await;
    let s = s.as_ref();
    assert!(!s.describe().is_empty(), "describe() names the backend");
    let t0 = st.clock.now();
    assert_eq!(claim(s, &req("a", v(1))).await, NEW);
    assert_eq!(
        claim(s, &req("a", v(1))).await,
        in_flight(t0),
        "same version under a live lease: in flight, with the lease's end"
    );
    commit(s, &key("a", v(1))).await;
    assert_eq!(
        claim(s, &req("a", v(1))).await,
        ClaimOutcome::Duplicate,
        "same version after it was sent"
    );
    assert_eq!(claim(s, &req("a", v(2))).await, NEW);
    commit(s, &key("a", v(2))).await;
    assert_eq!(
        claim(s, &req("a", v(1))).await,
        ClaimOutcome::Stale { newest: v(2) }
    );
    assert_eq!(
        claim(s, &req("b", v(1))).await,
        NEW,
        "another finding is independent"
    );
    // Versions differing by one millisecond are different versions.
    let plus1 = v(2).saturating_add_millis(1);
    assert_eq!(claim(s, &req("a", plus1)).await, NEW);
    commit(s, &key("a", plus1)).await;
    assert_eq!(
        claim(s, &req("a", v(2))).await,
        ClaimOutcome::Stale { newest: plus1 }
    );
}

/// A pending claim is InFlight until its lease ends, then the same version is New again (the
/// sender died); a sent version stays Duplicate whatever the time.
pub async fn lease_expiry_reclaim<F, Fut>(make: &F)
where
    F: Fn(StoreSetup) -> Fut,
    Fut: Future<Output = Arc<dyn StateStore>>,
{
    let st = setup("lease_expiry_reclaim", start_time());
    let clock = st.clock.clone();
    let s = make(st).await;
    let s = s.as_ref();
    let t0 = clock.now();
    assert_eq!(claim(s, &req("a", v(1))).await, NEW);
    let r = record(s, "a").await;
    assert_eq!(r.status, Status::Pending);
    assert_eq!(
        r.lease_until,
        Some(t0.saturating_add_millis(300_000)),
        "lease_until = claim time + lease"
    );
    clock.advance(LEASE - secs(1));
    assert_eq!(
        claim(s, &req("a", v(1))).await,
        in_flight(t0),
        "lease still live"
    );
    clock.advance(secs(1));
    assert_eq!(
        claim(s, &req("a", v(1))).await,
        NEW,
        "lease ended exactly now: claimable again"
    );
    let t1 = clock.now();
    let r = record(s, "a").await;
    assert_eq!(r.status, Status::Pending);
    assert_eq!(r.lease_until, Some(t1.saturating_add_millis(300_000)));
    assert_eq!(
        claim(s, &req("a", v(1))).await,
        in_flight(t1),
        "the re-claim has a fresh lease"
    );
    commit(s, &key("a", v(1))).await;
    let r = record(s, "a").await;
    assert_eq!(r.status, Status::Sent);
    assert_eq!(r.lease_until, None, "a sent version holds no lease");
    clock.advance(LEASE * 10);
    assert_eq!(
        claim(s, &req("a", v(1))).await,
        ClaimOutcome::Duplicate,
        "a sent version never becomes claimable again"
    );
}

/// `release` frees the claim at once (no waiting for the lease) and records the failure.
pub async fn release_frees_at_once<F, Fut>(make: &F)
where
    F: Fn(StoreSetup) -> Fut,
    Fut: Future<Output = Arc<dyn StateStore>>,
{
    let st = setup("release_frees_at_once", start_time());
    let s = make(st).await;
    let s = s.as_ref();
    assert_eq!(claim(s, &req("a", v(1))).await, NEW);
    release(s, &key("a", v(1)), "HTTP 503 from Dynatrace").await;
    let r = record(s, "a").await;
    assert_eq!(r.status, Status::Failed);
    assert_eq!(r.lease_until, None);
    assert_eq!(r.failures, 1);
    assert_eq!(r.last_error.as_deref(), Some("HTTP 503 from Dynatrace"));
    assert_eq!(
        claim(s, &req("a", v(1))).await,
        NEW,
        "released: claimable again at once"
    );
    assert_eq!(record(s, "a").await.status, Status::Pending);
    commit(s, &key("a", v(1))).await;
    let r = record(s, "a").await;
    assert_eq!(r.status, Status::Sent);
    assert_eq!(r.versions_sent, 1);
    assert_eq!(r.failures, 1, "the earlier failure stays counted");
}

/// 50 tasks claiming one version at once: exactly one New, the rest Duplicate, all counted.
pub async fn concurrent_claims_one_new<F, Fut>(make: &F)
where
    F: Fn(StoreSetup) -> Fut,
    Fut: Future<Output = Arc<dyn StateStore>>,
{
    let st = setup("concurrent_claims_one_new", start_time());
    let held = in_flight(st.clock.now());
    let s = make(st).await;
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let s = Arc::clone(&s);
            tokio::spawn(async move { s.claim(&req("hot", v(1)), LEASE).await })
        })
        .collect();
    let mut new = 0;
    let mut dup = 0;
    for t in tasks {
        match t.await.expect("claim task panicked") {
            Ok(ClaimOutcome::New { .. }) => new += 1,
            Ok(o) if o == held => dup += 1,
            other => panic!("unexpected concurrent claim result {other:?}"),
        }
    }
    assert_eq!((new, dup), (1, 49), "exactly one claimant wins");
    let r = record(s.as_ref(), "hot").await;
    assert_eq!(
        r.duplicates, 0,
        "an answer in flight is not final, so it is not counted"
    );
    assert_eq!(r.status, Status::Pending);
}

/// `claim_many` answers exactly as claiming one by one in order, and leaves the same records.
pub async fn claim_many_equals_sequential<F, Fut>(make: &F)
where
    F: Fn(StoreSetup) -> Fut,
    Fut: Future<Output = Arc<dyn StateStore>>,
{
    let start = start_time();
    let batch_store = make(setup("claim_many_equals_sequential", start)).await;
    let seq_store = make(setup("claim_many_equals_sequential", start)).await;
    // The same prior state in both: `d` v1 sent, `e` v3 pending, `f` v2 sent.
    for s in [&batch_store, &seq_store] {
        assert_eq!(claim(s.as_ref(), &req("d", v(1))).await, NEW);
        commit(s.as_ref(), &key("d", v(1))).await;
        assert_eq!(claim(s.as_ref(), &req("e", v(3))).await, NEW);
        assert_eq!(claim(s.as_ref(), &req("f", v(2))).await, NEW);
        commit(s.as_ref(), &key("f", v(2))).await;
    }
    let newer_meta = meta("111122223333", "Recon:EC2/Portscan", 8.0, "Portscan, newer");
    let reqs = vec![
        req("a", v(1)),
        req("b", v(1)),
        req("a", v(1)), // the same version twice in one batch: in flight
        req_with("a", v(2), newer_meta), // a newer version of `a` in the same batch
        req("a", v(1)), // now older than the batch's own pending newest: in flight
        req("c", v(2)),
        req("c", v(1)),
        req("d", v(1)), // sent before the batch
        req("e", v(2)), // older than a pending version: in flight
        req("f", v(1)), // older than a sent version
    ];
    let want = vec![
        NEW,
        NEW,
        in_flight(start),
        NEW,
        in_flight(start),
        NEW,
        in_flight(start),
        ClaimOutcome::Duplicate,
        in_flight(start),
        ClaimOutcome::Stale { newest: v(2) },
    ];
    let got = claim_many(batch_store.as_ref(), &reqs).await;
    let mut seq = Vec::new();
    for r in &reqs {
        seq.push(claim(seq_store.as_ref(), r).await);
    }
    assert_eq!(seq, want, "sequential claims");
    assert_eq!(got, want, "claim_many must equal sequential claims");
    for id in ["a", "b", "c", "d", "e", "f"] {
        assert_eq!(
            without_owner(history(batch_store.as_ref(), id).await),
            without_owner(history(seq_store.as_ref(), id).await),
            "record and history of {id:?} after claim_many vs sequential"
        );
    }
    let a = record(batch_store.as_ref(), "a").await;
    assert_eq!(a.latest_version, v(2));
    assert_eq!(a.meta.title.as_deref(), Some("Portscan, newer"));
    assert_eq!(
        (a.duplicates, a.stale),
        (0, 0),
        "answers in flight are not counted"
    );
    assert_eq!(record(batch_store.as_ref(), "f").await.stale, 1);
    assert_eq!(
        batch_store
            .claim_many(&[], LEASE)
            .await
            .expect("empty batch"),
        Vec::<ClaimOutcome>::new()
    );
}

/// `finish_many` equals committing and releasing one by one in order: the latest version's
/// commit and release, an older version's (counters only), the same finding twice in one batch,
/// and a never-claimed version, which fails alone (`StoreError::Invalid`) without keeping the
/// rest of the batch from being recorded.
pub async fn finish_many_equals_sequential<F, Fut>(make: &F)
where
    F: Fn(StoreSetup) -> Fut,
    Fut: Future<Output = Arc<dyn StateStore>>,
{
    let start = start_time();
    let batch_store = make(setup("finish_many_equals_sequential", start)).await;
    let seq_store = make(setup("finish_many_equals_sequential", start)).await;
    for s in [&batch_store, &seq_store] {
        let s = s.as_ref();
        for r in [
            req("a", v(1)),
            req("b", v(1)),
            req("c", v(1)),
            req("c", v(2)),
            req("d", v(1)),
            req("e", v(1)),
            req("e", v(2)),
        ] {
            assert_eq!(claim(s, &r).await, NEW, "{:?}", r.key);
        }
        // `g` v1 is claimed and released, and another sender claims it again (untracked):
        // the first claim's owner is stale, and the batch below finishes as that sender.
        assert_eq!(claim(s, &req("g", v(1))).await, NEW);
        release(s, &key("g", v(1)), "first try failed").await;
        let again = s.claim(&req("g", v(1)), LEASE).await.expect("claim g");
        assert!(again.is_new(), "{again:?}");
    }
    let sent = |ids: &[&str]| Finish::Commit(delivery(ids, "req-9"));
    let failed = |why: &str| Finish::Release(why.to_owned());
    let items = vec![
        (key("a", v(1)), sent(&["a-1"])),
        (key("b", v(1)), failed("503 from Dynatrace")),
        (key("c", v(1)), sent(&["c-1"])), // superseded by c v2: counters only
        (key("c", v(2)), sent(&["c-2"])), // the same finding again in the batch
        (key("nobody", v(1)), sent(&["n"])), // never claimed
        (key("d", v(1)), failed("timeout")),
        (key("e", v(1)), failed("older failed")), // leaves e v2's lease alone
        (key("e", v(2)), sent(&["e-2", "e-2b"])),
        (key("g", v(1)), sent(&["g-1"])), // by a stale owner: refused, nothing written
    ];
    let owned = |s: &dyn StateStore| -> Vec<(VersionKey, Owner, Finish)> {
        items
            .iter()
            .map(|(k, f)| (k.clone(), owner_of(s, k), f.clone()))
            .collect()
    };
    let got = batch_store.finish_many(&owned(batch_store.as_ref())).await;
    let mut seq = Vec::new();
    for (k, owner, f) in owned(seq_store.as_ref()) {
        seq.push(match f {
            Finish::Commit(d) => seq_store.commit(&k, owner, &d).await,
            Finish::Release(r) => seq_store.release(&k, owner, &r).await,
        });
    }
    let shape = |rs: &[Result<(), StoreError>]| {
        rs.iter()
            .map(|r| match r {
                Ok(()) => "ok",
                Err(StoreError::Invalid { .. }) => "invalid",
                Err(StoreError::StaleOwner { .. }) => "stale owner",
                Err(_) => "error",
            })
            .collect::<Vec<_>>()
    };
    let want = vec![
        "ok",
        "ok",
        "ok",
        "ok",
        "invalid",
        "ok",
        "ok",
        "ok",
        "stale owner",
    ];
    assert_eq!(
        shape(&seq),
        want,
        "sequential commits and releases: {seq:?}"
    );
    assert_eq!(shape(&got), want, "finish_many must equal them: {got:?}");
    for id in ["a", "b", "c", "d", "e", "nobody"] {
        assert_eq!(
            without_owner(history(batch_store.as_ref(), id).await),
            without_owner(history(seq_store.as_ref(), id).await),
            "record and history of {id:?} after finish_many vs one by one"
        );
    }
    let (b, c, e) = (
        record(batch_store.as_ref(), "b").await,
        record(batch_store.as_ref(), "c").await,
        record(batch_store.as_ref(), "e").await,
    );
    assert_eq!((b.status, b.failures), (Status::Failed, 1));
    assert_eq!((c.status, c.versions_sent), (Status::Sent, 2));
    assert_eq!(
        (e.status, e.versions_sent, e.failures),
        (Status::Sent, 1, 1)
    );
    assert_eq!(claim(batch_store.as_ref(), &req("b", v(1))).await, NEW);
    assert!(batch_store.finish_many(&[]).await.is_empty(), "empty batch");
}

/// Records expire `retention` after their last update: then history is None, the finding is not
/// listed, and the same version is New again with fresh counters. Every write extends the TTL.
pub async fn ttl_expiry<F, Fut>(make: &F)
where
    F: Fn(StoreSetup) -> Fut,
    Fut: Future<Output = Arc<dyn StateStore>>,
{
    let st = setup("ttl_expiry", start_time());
    let clock = st.clock.clone();
    let retention = st.retention;
    let s = make(st).await;
    let s = s.as_ref();
    assert_eq!(claim(s, &req("a", v(1))).await, NEW);
    assert_eq!(claim(s, &req("b", v(1))).await, NEW);
    commit(s, &key("b", v(1))).await;
    clock.advance(secs(10));
    commit(s, &key("a", v(1))).await;
    let committed_at = clock.now();
    let r = record(s, "a").await;
    assert_eq!(
        r.expires_at,
        committed_at.saturating_add_millis(i64::try_from(retention.as_millis()).unwrap_or(0)),
        "expires_at = last update + retention"
    );
    clock.advance(retention / 2);
    // A duplicate claim of `b` is an update: it moves b's expiry.
    assert_eq!(claim(s, &req("b", v(1))).await, ClaimOutcome::Duplicate);
    clock.advance(retention / 2 - secs(1));
    assert!(history(s, "a").await.is_some(), "one second before expiry");
    clock.advance(secs(1));
    assert!(history(s, "a").await.is_none(), "expired: reads as absent");
    assert_eq!(
        list(s, &ListQuery::default()).await,
        vec!["b".to_owned()],
        "expired records are not listed"
    );
    assert_eq!(
        claim(s, &req("a", v(1))).await,
        NEW,
        "an expired record is forgotten: the version is New again"
    );
    let h = history(s, "a").await.expect("fresh record");
    assert_eq!(h.record.versions_sent, 0, "counters start afresh");
    assert_eq!(h.record.first_seen, clock.now());
    assert_eq!(h.entries.len(), 1, "old history is gone: {:?}", h.entries);
    assert_eq!(h.entries[0].kind, HistoryKind::Claimed);
    assert!(
        history(s, "b").await.is_some(),
        "b was updated later, still live"
    );
}

/// Counters, first/last seen and the latest version's meta.
pub async fn counters<F, Fut>(make: &F)
where
    F: Fn(StoreSetup) -> Fut,
    Fut: Future<Output = Arc<dyn StateStore>>,
{
    let st = setup("counters", start_time());
    let clock = st.clock.clone();
    let s = make(st).await;
    let s = s.as_ref();
    let t0 = clock.now();
    let m1 = meta("111122223333", "Recon:EC2/Portscan", 2.0, "first title");
    let m2 = meta("111122223333", "Recon:EC2/Portscan", 8.5, "second title");
    let m_old = meta("999988887777", "Other:Type", 1.0, "stale title");
    assert_eq!(claim(s, &req_with("a", v(1), m1.clone())).await, NEW);
    assert_eq!(
        claim(s, &req_with("a", v(1), m1.clone())).await,
        in_flight(t0)
    );
    clock.advance(secs(5));
    assert_eq!(
        claim(s, &req_with("a", v(1), m1.clone())).await,
        in_flight(t0)
    );
    commit(s, &key("a", v(1))).await;
    assert_eq!(record(s, "a").await.meta, m1);
    // Two copies arrive after the version was sent: duplicates.
    for _ in 0..2 {
        assert_eq!(
            claim(s, &req_with("a", v(1), m1.clone())).await,
            ClaimOutcome::Duplicate
        );
    }
    clock.advance(secs(5));
    assert_eq!(claim(s, &req_with("a", v(2), m2.clone())).await, NEW);
    assert_eq!(
        claim(s, &req_with("a", v(0), m_old)).await,
        ClaimOutcome::Stale { newest: v(1) },
        "older than the version delivered"
    );
    release(s, &key("a", v(2)), "timeout").await;
    clock.advance(secs(5));
    assert_eq!(claim(s, &req_with("a", v(2), m2.clone())).await, NEW);
    let last_claim = clock.now();
    clock.advance(secs(5));
    commit(s, &key("a", v(2))).await;
    let r = record(s, "a").await;
    assert_eq!(r.versions_sent, 2);
    assert_eq!(
        r.duplicates, 2,
        "copies after the version was sent; not the two answered in flight"
    );
    assert_eq!(r.stale, 1);
    assert_eq!(r.failures, 1);
    assert_eq!(r.last_error.as_deref(), Some("timeout"));
    assert_eq!(r.first_seen, t0);
    assert_eq!(
        r.last_seen, last_claim,
        "last_seen = last claim (commit is not a sighting)"
    );
    assert_eq!(r.latest_version, v(2));
    assert_eq!(r.status, Status::Sent);
    assert_eq!(
        r.meta, m2,
        "meta of the latest version; a stale claim never changes it"
    );
}

/// History lists every claim outcome, commit and release, oldest first, with time and version.
pub async fn history_entries<F, Fut>(make: &F)
where
    F: Fn(StoreSetup) -> Fut,
    Fut: Future<Output = Arc<dyn StateStore>>,
{
    let st = setup("history_entries", start_time());
    let clock = st.clock.clone();
    let s = make(st).await;
    let s = s.as_ref();
    assert!(history(s, "a").await.is_none(), "unknown finding");
    let t0 = clock.now();
    assert_eq!(claim(s, &req("a", v(1))).await, NEW);
    clock.advance(secs(1));
    assert_eq!(claim(s, &req("a", v(1))).await, in_flight(t0));
    clock.advance(secs(1));
    s.commit(
        &key("a", v(1)),
        owner_of(s, &key("a", v(1))),
        &Delivery {
            event_ids: vec!["e1".into(), "e2".into()],
            request_id: Some("r-42".into()),
        },
    )
    .await
    .expect("commit");
    clock.advance(secs(1));
    assert_eq!(claim(s, &req("a", v(2))).await, NEW);
    clock.advance(secs(1));
    assert_eq!(
        claim(s, &req("a", v(0))).await,
        ClaimOutcome::Stale { newest: v(1) }
    );
    clock.advance(secs(1));
    release(s, &key("a", v(2)), "HTTP 400: \"bad\", event rejected").await;
    let h = history(s, "a").await.expect("history");
    let got: Vec<_> = h
        .entries
        .iter()
        .map(|e| (e.at.millis() - t0.millis(), e.version, e.kind.clone()))
        .collect();
    let want = vec![
        (0, v(1), HistoryKind::Claimed),
        (
            1000,
            v(1),
            HistoryKind::InFlight {
                lease_until: in_flight_until(t0),
            },
        ),
        (
            2000,
            v(1),
            HistoryKind::Sent {
                event_ids: vec!["e1".into(), "e2".into()],
                request_id: Some("r-42".into()),
            },
        ),
        (3000, v(2), HistoryKind::Claimed),
        (4000, v(0), HistoryKind::Stale { newest: v(1) }),
        (
            5000,
            v(2),
            HistoryKind::Failed {
                reason: "HTTP 400: \"bad\", event rejected".into(),
            },
        ),
    ];
    assert_eq!(got, want);
    assert_eq!(h.record.finding_id, "a");
    assert!(history(s, "b").await.is_none(), "other findings unaffected");
}

/// `list` filters (account, since/until on last_seen, status, type prefix, limit) and order.
pub async fn list_filters<F, Fut>(make: &F)
where
    F: Fn(StoreSetup) -> Fut,
    Fut: Future<Output = Arc<dyn StateStore>>,
{
    let st = setup("list_filters", start_time());
    let clock = st.clock.clone();
    let s = make(st).await;
    let s = s.as_ref();
    let acc1 = "111111111111";
    let acc2 = "222222222222";
    // f1 (t+0): acc1, Recon:EC2/Portscan, sent, then a duplicate.
    let t_f1 = clock.now();
    let r = req_with("f1", v(1), meta(acc1, "Recon:EC2/Portscan", 5.0, "one"));
    assert_eq!(claim(s, &r).await, NEW);
    commit(s, &key("f1", v(1))).await;
    assert_eq!(claim(s, &r).await, ClaimOutcome::Duplicate);
    // f2 (t+60s): acc2, Recon:EC2/PortProbeUnprotectedPort, failed.
    clock.advance(secs(60));
    let t_f2 = clock.now();
    let r = req_with(
        "f2",
        v(1),
        meta(acc2, "Recon:EC2/PortProbeUnprotectedPort", 2.0, "two"),
    );
    assert_eq!(claim(s, &r).await, NEW);
    release(s, &key("f2", v(1)), "boom").await;
    // f3 (t+120s): acc1, UnauthorizedAccess:IAMUser/..., v2 sent, a stale claim, v3 pending.
    clock.advance(secs(60));
    let t_f3 = clock.now();
    let m3 = meta(acc1, "UnauthorizedAccess:IAMUser/TorIPCaller", 8.0, "three");
    assert_eq!(claim(s, &req_with("f3", v(2), m3.clone())).await, NEW);
    commit(s, &key("f3", v(2))).await;
    assert_eq!(
        claim(s, &req_with("f3", v(1), m3.clone())).await,
        ClaimOutcome::Stale { newest: v(2) }
    );
    assert_eq!(claim(s, &req_with("f3", v(3), m3)).await, NEW);
    // f4 (t+180s): acc2, a type with SQL wildcard characters, sent.
    clock.advance(secs(60));
    let r = req_with("f4", v(1), meta(acc2, "Recon_EC2%Weird", 1.0, "four"));
    assert_eq!(claim(s, &r).await, NEW);
    commit(s, &key("f4", v(1))).await;

    let ids = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    let all = ListQuery::default();
    assert_eq!(
        list(s, &all).await,
        ids(&["f4", "f3", "f2", "f1"]),
        "most recently seen first"
    );
    let q = |f: fn(&mut ListQuery)| {
        let mut q = ListQuery::default();
        f(&mut q);
        q
    };
    assert_eq!(
        list(s, &q(|q| q.account = Some("111111111111".into()))).await,
        ids(&["f3", "f1"])
    );
    assert_eq!(
        list(
            s,
            &ListQuery {
                since: Some(t_f2),
                ..ListQuery::default()
            }
        )
        .await,
        ids(&["f4", "f3", "f2"]),
        "since is inclusive"
    );
    assert_eq!(
        list(
            s,
            &ListQuery {
                until: Some(t_f3),
                ..ListQuery::default()
            }
        )
        .await,
        ids(&["f2", "f1"]),
        "until is exclusive"
    );
    assert_eq!(
        list(
            s,
            &ListQuery {
                since: Some(t_f1),
                until: Some(t_f2),
                ..ListQuery::default()
            }
        )
        .await,
        ids(&["f1"])
    );
    assert_eq!(
        list(
            s,
            &ListQuery {
                account: Some(acc1.into()),
                since: Some(t_f2),
                ..ListQuery::default()
            }
        )
        .await,
        ids(&["f3"]),
        "account and time together"
    );
    assert_eq!(
        list(s, &q(|q| q.status = Some(StatusFilter::Sent))).await,
        ids(&["f4", "f3", "f1"])
    );
    assert_eq!(
        list(s, &q(|q| q.status = Some(StatusFilter::Duplicate))).await,
        ids(&["f1"])
    );
    assert_eq!(
        list(s, &q(|q| q.status = Some(StatusFilter::Stale))).await,
        ids(&["f3"])
    );
    assert_eq!(
        list(s, &q(|q| q.status = Some(StatusFilter::Failed))).await,
        ids(&["f2"])
    );
    assert_eq!(
        list(s, &q(|q| q.status = Some(StatusFilter::Pending))).await,
        ids(&["f3"])
    );
    assert_eq!(
        list(s, &q(|q| q.finding_type = Some("Recon:EC2".into()))).await,
        ids(&["f2", "f1"])
    );
    assert_eq!(
        list(
            s,
            &q(|q| q.finding_type = Some("Recon:EC2/Portscan".into()))
        )
        .await,
        ids(&["f1"]),
        "a full type is its own prefix"
    );
    assert_eq!(
        list(s, &q(|q| q.finding_type = Some("recon:ec2".into()))).await,
        ids(&[]),
        "type prefix is case-sensitive"
    );
    assert_eq!(
        list(s, &q(|q| q.finding_type = Some("Recon_".into()))).await,
        ids(&["f4"]),
        "`_` is a literal character, not a wildcard"
    );
    assert_eq!(
        list(s, &q(|q| q.finding_type = Some("Recon%".into()))).await,
        ids(&[]),
        "`%` is a literal character, not a wildcard"
    );
    assert_eq!(list(s, &q(|q| q.limit = Some(2))).await, ids(&["f4", "f3"]));
    assert_eq!(
        list(
            s,
            &ListQuery {
                account: Some(acc2.into()),
                limit: Some(1),
                ..ListQuery::default()
            }
        )
        .await,
        ids(&["f4"]),
        "limit counts matching records"
    );
    assert_eq!(list(s, &q(|q| q.limit = Some(0))).await, ids(&[]));
    assert_eq!(
        list(s, &q(|q| q.account = Some("000000000000".into()))).await,
        ids(&[])
    );
    // Full records come back, equal to what history() shows.
    let full = s.list(&all).await.expect("list");
    assert_eq!(full.len(), 4);
    for r in &full {
        assert_eq!(r, &record(s, &r.finding_id).await);
    }
}

/// Key/value entries: per namespace, overwritten by put, absent after their TTL.
pub async fn kv_ttl<F, Fut>(make: &F)
where
    F: Fn(StoreSetup) -> Fut,
    Fut: Future<Output = Arc<dyn StateStore>>,
{
    let st = setup("kv_ttl", start_time());
    let clock = st.clock.clone();
    let store = make(st).await;
    let kv = Arc::clone(&store)
        .kv()
        .expect("the backend offers the key/value space");
    let s = kv.as_ref();
    let get =
        |ns: &'static str, k: &'static str| async move { s.kv_get(ns, k).await.expect("kv_get") };
    assert_eq!(get("alias", "111122223333").await, None);
    s.kv_put("alias", "111122223333", "prod-äccount", secs(3600))
        .await
        .expect("kv_put");
    assert_eq!(
        get("alias", "111122223333").await.as_deref(),
        Some("prod-äccount")
    );
    assert_eq!(
        get("checkpoint", "111122223333").await,
        None,
        "namespaces are separate"
    );
    clock.advance(secs(1800));
    s.kv_put("alias", "111122223333", "renamed", secs(3600))
        .await
        .expect("overwrite");
    clock.advance(secs(3599));
    assert_eq!(
        get("alias", "111122223333").await.as_deref(),
        Some("renamed"),
        "overwrite replaced value and TTL"
    );
    clock.advance(secs(1));
    assert_eq!(get("alias", "111122223333").await, None, "expired");
    s.kv_put("alias", "111122223333", "back", secs(60))
        .await
        .expect("put after expiry");
    assert_eq!(get("alias", "111122223333").await.as_deref(), Some("back"));
    // kv entries do not show up as findings.
    assert!(
        store
            .list(&ListQuery::default())
            .await
            .expect("list")
            .is_empty()
    );
}

/// A newer version claimed while an older one is pending wins; the older's late commit is recorded
/// but never moves `latest_version` back.
pub async fn newer_wins_over_pending_older<F, Fut>(make: &F)
where
    F: Fn(StoreSetup) -> Fut,
    Fut: Future<Output = Arc<dyn StateStore>>,
{
    let st = setup("newer_wins_over_pending_older", start_time());
    let t0 = st.clock.now();
    let s = make(st).await;
    let s = s.as_ref();
    assert_eq!(claim(s, &req("a", v(1))).await, NEW);
    assert_eq!(claim(s, &req("a", v(2))).await, NEW, "newer wins");
    commit(s, &key("a", v(1))).await;
    let r = record(s, "a").await;
    assert_eq!(
        r.latest_version,
        v(2),
        "late commit of v1 does not move latest back"
    );
    assert_eq!(r.status, Status::Pending, "v2 is still pending");
    assert_eq!(r.versions_sent, 1, "v1's delivery is counted");
    assert_eq!(r.sent_version, Some(v(1)), "v1 is the newest delivered");
    assert_eq!(claim(s, &req("a", v(2))).await, in_flight(t0));
    assert_eq!(
        claim(s, &req("a", v(1))).await,
        ClaimOutcome::Duplicate,
        "v1 was delivered"
    );
    commit(s, &key("a", v(2))).await;
    let r = record(s, "a").await;
    assert_eq!((r.status, r.versions_sent), (Status::Sent, 2));
}

/// Stale is judged against the newest version DELIVERED, never a claim: an older version
/// claimed while a newer one is pending waits for it (in flight, with the newer one's lease);
/// once the newer claim was released (a send that failed or was refused) or its lease ended,
/// the older version is New; once a newer version was delivered, older ones are Stale. So a
/// version far in the future that never gets delivered cannot block the real ones.
pub async fn stale_only_behind_delivered<F, Fut>(make: &F)
where
    F: Fn(StoreSetup) -> Fut,
    Fut: Future<Output = Arc<dyn StateStore>>,
{
    let st = setup("stale_only_behind_delivered", start_time());
    let clock = st.clock.clone();
    let t0 = clock.now();
    let s = make(st).await;
    let s = s.as_ref();
    assert_eq!(claim(s, &req("a", v(2))).await, NEW);
    assert_eq!(
        claim(s, &req("a", v(1))).await,
        in_flight(t0),
        "older than a pending newer version: wait for it"
    );
    release(s, &key("a", v(2)), "refused").await;
    assert_eq!(
        claim(s, &req("a", v(1))).await,
        NEW,
        "the newer version was released: the older one is sent"
    );
    commit(s, &key("a", v(1))).await;
    let r = record(s, "a").await;
    assert_eq!(
        (r.latest_version, r.sent_version, r.status),
        (v(1), Some(v(1)), Status::Sent)
    );
    assert_eq!(
        claim(s, &req("a", v(0))).await,
        ClaimOutcome::Stale { newest: v(1) },
        "older than the version delivered"
    );
    assert_eq!(
        claim(s, &req("a", v(2))).await,
        NEW,
        "the released newer version is sent when it comes again"
    );
    // Its sender dies: once the lease ended, an older (undelivered) version is New.
    let t1 = clock.now();
    assert_eq!(
        claim(s, &req("b", v(9))).await,
        NEW,
        "b: a version far ahead"
    );
    assert_eq!(claim(s, &req("b", v(3))).await, in_flight(t1));
    clock.advance(LEASE * 2);
    assert_eq!(
        claim(s, &req("b", v(3))).await,
        NEW,
        "after the newer claim's lease ended"
    );
    commit(s, &key("b", v(3))).await;
    assert_eq!(
        claim(s, &req("b", v(3))).await,
        ClaimOutcome::Duplicate,
        "the delivered version"
    );
    assert_eq!(
        claim(s, &req("b", v(2))).await,
        ClaimOutcome::Stale { newest: v(3) }
    );
    assert_eq!(
        claim(s, &req("b", v(9))).await,
        NEW,
        "the newer version is still sendable"
    );
    commit(s, &key("b", v(9))).await;
    assert_eq!(
        claim(s, &req("b", v(4))).await,
        ClaimOutcome::Stale { newest: v(9) }
    );
}

/// Releasing a version that is not the pending latest only records the failure: an older
/// version leaves the newer one's lease alone, and a sent version stays sent.
pub async fn release_not_latest_only_records<F, Fut>(make: &F)
where
    F: Fn(StoreSetup) -> Fut,
    Fut: Future<Output = Arc<dyn StateStore>>,
{
    let st = setup("release_not_latest_only_records", start_time());
    let t0 = st.clock.now();
    let s = make(st).await;
    let s = s.as_ref();
    assert_eq!(claim(s, &req("a", v(1))).await, NEW);
    assert_eq!(claim(s, &req("a", v(2))).await, NEW);
    release(s, &key("a", v(1)), "older failed").await;
    let r = record(s, "a").await;
    assert_eq!(r.status, Status::Pending, "v2's claim is untouched");
    assert!(r.lease_until.is_some());
    assert_eq!(r.failures, 1);
    assert_eq!(r.last_error.as_deref(), Some("older failed"));
    assert_eq!(
        claim(s, &req("a", v(2))).await,
        in_flight(t0),
        "v2 still leased"
    );
    // A sender whose lease ran out releases after another sender committed the same version.
    commit(s, &key("a", v(2))).await;
    release(s, &key("a", v(2)), "late failure").await;
    let r = record(s, "a").await;
    assert_eq!(
        r.status,
        Status::Sent,
        "a sent version is never made claimable"
    );
    assert_eq!(r.failures, 2);
    assert_eq!(claim(s, &req("a", v(2))).await, ClaimOutcome::Duplicate);
    let h = history(s, "a").await.expect("history");
    let failed = h
        .entries
        .iter()
        .filter(|e| matches!(e.kind, HistoryKind::Failed { .. }))
        .count();
    assert_eq!(failed, 2, "both failures are in the history");
}

/// `commit`/`release` of a version that was never claimed (unknown finding, or newer than every
/// claimed version) is refused with `StoreError::Invalid` and changes nothing.
pub async fn unclaimed_commit_release_invalid<F, Fut>(make: &F)
where
    F: Fn(StoreSetup) -> Fut,
    Fut: Future<Output = Arc<dyn StateStore>>,
{
    let st = setup("unclaimed_commit_release_invalid", start_time());
    let s = make(st).await;
    let s = s.as_ref();
    let d = delivery(&["e"], "r");
    let is_invalid = |r: Result<(), StoreError>| matches!(r, Err(StoreError::Invalid { .. }));
    assert!(
        is_invalid(s.commit(&key("nobody", v(1)), Owner::NONE, &d).await),
        "commit of an unknown finding"
    );
    assert!(
        is_invalid(s.release(&key("nobody", v(1)), Owner::NONE, "x").await),
        "release of an unknown finding"
    );
    assert!(history(s, "nobody").await.is_none(), "nothing recorded");
    assert_eq!(claim(s, &req("a", v(1))).await, NEW);
    let before = history(s, "a").await;
    assert!(
        is_invalid(s.commit(&key("a", v(2)), Owner::NONE, &d).await),
        "commit of a version newer than any claim"
    );
    assert!(
        is_invalid(s.release(&key("a", v(2)), Owner::NONE, "x").await),
        "release of a version newer than any claim"
    );
    assert_eq!(history(s, "a").await, before, "nothing changed");
    let err = s
        .commit(&key("nobody", v(1)), Owner::NONE, &d)
        .await
        .expect_err("refused")
        .to_string();
    assert!(err.contains("nobody"), "the error names the finding: {err}");
}

/// Every winning claim has its own owner token, and only the current owner may commit or
/// release: a sender whose lease ran out and whose version another sender claimed is refused
/// ([`StoreError::StaleOwner`]) for both, and nothing is written; the new owner goes on.
pub async fn stale_owner_refused<F, Fut>(make: &F)
where
    F: Fn(StoreSetup) -> Fut,
    Fut: Future<Output = Arc<dyn StateStore>>,
{
    let st = setup("stale_owner_refused", start_time());
    let clock = st.clock.clone();
    let s = make(st).await;
    let s = s.as_ref();
    let k = key("a", v(1));
    let first = s.claim(&req("a", v(1)), LEASE).await.expect("claim");
    let first = first.owner().expect("the first claim wins");
    clock.advance(LEASE + secs(1));
    let second = s.claim(&req("a", v(1)), LEASE).await.expect("re-claim");
    let second = second
        .owner()
        .expect("the lease ended: the second claim wins");
    assert_ne!(first, second, "every claim has its own owner token");
    let before = history(s, "a").await;
    let d = delivery(&["late"], "req-late");
    let stale = |r: Result<(), StoreError>| matches!(r, Err(StoreError::StaleOwner { .. }));
    let late_commit = s.commit(&k, first, &d).await;
    assert!(stale(late_commit), "a stale owner's commit is refused");
    let late_release = s.release(&k, first, "late failure").await;
    assert!(stale(late_release), "a stale owner's release is refused");
    let batch = s
        .finish_many(&[(k.clone(), first, Finish::Release("late".into()))])
        .await;
    assert!(
        matches!(batch.as_slice(), [Err(StoreError::StaleOwner { .. })]),
        "{batch:?}"
    );
    assert_eq!(history(s, "a").await, before, "nothing written");
    assert_eq!(
        claim(s, &req("a", v(1))).await,
        in_flight(clock.now()),
        "the second owner's claim still holds"
    );
    let err = s
        .commit(&k, first, &d)
        .await
        .expect_err("refused")
        .to_string();
    assert!(err.contains("\"a\""), "the error names the finding: {err}");
    s.commit(&k, second, &delivery(&["e"], "r"))
        .await
        .expect("the current owner commits");
    let r = record(s, "a").await;
    assert_eq!(
        (r.status, r.versions_sent, r.failures),
        (Status::Sent, 1, 0)
    );
}

/// Two writers interleaving claims, commits and releases of one finding leave a history whose
/// sequence numbers run 1, 2, 3... without gap or duplicate, in the order the store applied
/// them, ending at the record's count; `audit check` finds nothing wrong.
pub async fn history_sequence_interleaved<F, Fut>(make: &F)
where
    F: Fn(StoreSetup) -> Fut,
    Fut: Future<Output = Arc<dyn StateStore>>,
{
    let st = setup("history_sequence_interleaved", start_time());
    let clock = st.clock.clone();
    let s = make(st).await;
    // Two writers, each claiming versions 1..=4 of `hot` in its own order, concurrently; each
    // commits what it wins (the in-process stripes of a backend may serialise them; the
    // sequence must hold either way).
    let writer = |order: Vec<i64>| {
        let s = Arc::clone(&s);
        tokio::spawn(async move {
            for n in order {
                let r = req("hot", v(n));
                let o = s.claim(&r, LEASE).await.expect("claim");
                if let Some(owner) = o.owner() {
                    s.commit(&r.key, owner, &delivery(&["e"], "r"))
                        .await
                        .expect("commit by its owner");
                }
            }
        })
    };
    let a = writer(vec![1, 2, 3, 4]);
    let b = writer(vec![2, 1, 4, 3]);
    a.await.expect("writer a");
    b.await.expect("writer b");
    let s = s.as_ref();
    let h = history(s, "hot").await.expect("history");
    let seqs: Vec<Option<u64>> = h.entries.iter().map(|e| e.seq).collect();
    let want: Vec<Option<u64>> = (1..=h.entries.len() as u64).map(Some).collect();
    assert_eq!(
        seqs, want,
        "no gap, no duplicate, in order: {:?}",
        h.entries
    );
    assert_eq!(
        h.record.seq,
        h.entries.len() as u64,
        "the record counts them"
    );
    assert_eq!(
        crate::audit_check::check(&h, clock.now()),
        vec![],
        "{:?}",
        h.entries
    );
    // Every claim left one entry, and every commit one more.
    let claims = h
        .entries
        .iter()
        .filter(|e| !matches!(e.kind, HistoryKind::Sent { .. }))
        .count();
    assert_eq!(claims, 8, "{:?}", h.entries);
}

/// After a record expired, a new record of the same finding shows only its own entries, numbered
/// from 1, whatever the writers' clocks say: an entry written with a clock behind the new
/// record's `first_seen` (another host's skew) is still shown, in store order.
pub async fn expired_record_history_is_hidden<F, Fut>(make: &F)
where
    F: Fn(StoreSetup) -> Fut,
    Fut: Future<Output = Arc<dyn StateStore>>,
{
    let st = setup("expired_record_history_is_hidden", start_time());
    let clock = st.clock.clone();
    let retention = st.retention;
    let s = make(st).await;
    let s = s.as_ref();
    assert_eq!(claim(s, &req("a", v(1))).await, NEW);
    commit(s, &key("a", v(1))).await;
    assert_eq!(claim(s, &req("a", v(1))).await, ClaimOutcome::Duplicate);
    clock.advance(retention + secs(1));
    assert!(history(s, "a").await.is_none(), "expired");
    let t1 = clock.now();
    assert_eq!(claim(s, &req("a", v(2))).await, NEW);
    // A second writer whose clock is 2 s behind.
    clock.set(t1.saturating_add_millis(-2000));
    assert_eq!(claim(s, &req("a", v(2))).await, in_flight(t1));
    clock.set(t1.saturating_add_millis(1000));
    commit(s, &key("a", v(2))).await;
    let h = history(s, "a").await.expect("history");
    let got: Vec<_> = h
        .entries
        .iter()
        .map(|e| (e.seq, e.at.millis() - t1.millis(), e.kind.clone()))
        .collect();
    assert_eq!(
        got,
        vec![
            (Some(1), 0, HistoryKind::Claimed),
            (
                Some(2),
                -2000,
                HistoryKind::InFlight {
                    lease_until: in_flight_until(t1)
                }
            ),
            (
                Some(3),
                1000,
                HistoryKind::Sent {
                    event_ids: vec!["ev-1".into()],
                    request_id: Some("req-1".into())
                }
            ),
        ],
        "only the new record's entries, in store order"
    );
    let r = h.record;
    assert_eq!((r.versions_sent, r.duplicates, r.seq), (1, 0, 3));
}

/// Expands to one `#[tokio::test]` per contract case, each calling `$crate::contract::<case>`
/// with a reference to `$make` (an `async fn(StoreSetup) -> Arc<dyn StateStore>` or a closure
/// returning such a future). The calling crate needs `tokio` with `macros` and `rt-multi-thread`.
#[macro_export]
macro_rules! contract_tests {
    ($make:expr) => {
        $crate::contract_tests!(@cases $make;
            new_duplicate_stale,
            lease_expiry_reclaim,
            release_frees_at_once,
            concurrent_claims_one_new,
            claim_many_equals_sequential,
            finish_many_equals_sequential,
            ttl_expiry,
            counters,
            history_entries,
            list_filters,
            kv_ttl,
            newer_wins_over_pending_older,
            stale_only_behind_delivered,
            release_not_latest_only_records,
            unclaimed_commit_release_invalid,
            stale_owner_refused,
            history_sequence_interleaved,
            expired_record_history_is_hidden,
        );
    };
    (@cases $make:expr; $($case:ident),* $(,)?) => {
        $(
            #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                $crate::contract::$case(&$make).await;
            }
        )*
    };
}

/// Runs every case in order (one test instead of one per case).
pub async fn run_all<F, Fut>(make: F)
where
    F: Fn(StoreSetup) -> Fut,
    Fut: Future<Output = Arc<dyn StateStore>>,
{
    new_duplicate_stale(&make).await;
    lease_expiry_reclaim(&make).await;
    release_frees_at_once(&make).await;
    concurrent_claims_one_new(&make).await;
    claim_many_equals_sequential(&make).await;
    finish_many_equals_sequential(&make).await;
    ttl_expiry(&make).await;
    counters(&make).await;
    history_entries(&make).await;
    list_filters(&make).await;
    kv_ttl(&make).await;
    newer_wins_over_pending_older(&make).await;
    stale_only_behind_delivered(&make).await;
    release_not_latest_only_records(&make).await;
    unclaimed_commit_release_invalid(&make).await;
    stale_owner_refused(&make).await;
    history_sequence_interleaved(&make).await;
    expired_record_history_is_hidden(&make).await;
}
