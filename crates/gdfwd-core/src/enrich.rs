//! Account enrichment port: account id → alias / name, cached, never blocking forwarding.
//!
//! [`AccountLookup`] is the raw, fallible lookup an adapter implements (STS + IAM alias, then
//! Organizations). [`AccountResolver`] is what the pipeline calls: infallible, cached, bounded in
//! time. The caching resolver lives here because its rules (TTL, negative caching, one lookup in
//! flight per account) are the same whichever lookup is behind it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use gdfwd_model::{Enrichment, Timestamp};
use serde::{Deserialize, Serialize};

use crate::account_fields::{AccountFields, ContextNeeds};
use crate::clock::Clock;
use crate::error::LookupError;
use crate::store::KvStore;

/// What a lookup found for one account.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct AccountInfo {
    /// The IAM account alias, when the account has one and we could read it.
    pub alias: Option<String>,
    /// The Organizations account name (fallback; also looked up when the `name` account field
    /// needs it).
    pub org_name: Option<String>,
    /// The account's tags in AWS Organizations; `None` unless a `tag:` account field asked for
    /// them and they could be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<BTreeMap<String, String>>,
    /// The account's organizational-unit path (`Root/Workloads/Prod`); `None` unless the `ou`
    /// account field asked for it and it could be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ou_path: Option<String>,
    /// The extra lookups this answer includes (tried, whether or not they succeeded): an entry
    /// cached before an account field was configured does not cover it and is looked up again.
    #[serde(default)]
    pub looked_up: ContextNeeds,
    /// Why extra lookups the account fields need failed (the name may still be known). Such an
    /// answer is cached for the negative TTL only and counted as a failure.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub context_errors: Vec<String>,
}

impl AccountInfo {
    /// `aws.account.name` is the alias when there is one, else the Organizations name.
    pub fn enrichment(&self) -> Enrichment {
        Enrichment {
            account_name: self.alias.clone().or_else(|| self.org_name.clone()),
            account_alias: self.alias.clone(),
            fields: Vec::new(),
        }
    }
}

#[async_trait]
pub trait AccountLookup: Send + Sync + std::fmt::Debug {
    async fn lookup(&self, account_id: &str) -> Result<AccountInfo, LookupError>;
}

/// Counters for metrics and summaries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EnrichStats {
    pub cache_hits: u64,
    pub cache_misses: u64,
    pub failures: u64,
}

#[async_trait]
pub trait AccountResolver: Send + Sync + std::fmt::Debug {
    /// Never fails: an unknown account yields an empty [`Enrichment`].
    async fn resolve(&self, account_id: &str) -> Enrichment;
    fn stats(&self) -> EnrichStats;
}

// ---------------------------------------------------------------------------------------------
// The caching resolver.
// ---------------------------------------------------------------------------------------------

/// Namespace of the state store's key/value space that holds cached account lookups.
pub const KV_NAMESPACE: &str = "account";

/// Cache and time-budget settings of [`CachingResolver`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheConfig {
    /// How long a successful lookup is reused (memory and store).
    pub ttl: Duration,
    /// How long a failed lookup is remembered as failed, so a missing role does not cost an
    /// AssumeRole per finding.
    pub negative_ttl: Duration,
    /// Time budget of each step that may wait on the network: the store read, the lookup, the
    /// store write. A lookup over budget counts as failed.
    pub budget: Duration,
}

impl CacheConfig {
    pub const DEFAULT_TTL: Duration = Duration::from_secs(24 * 3600);
    pub const DEFAULT_NEGATIVE_TTL: Duration = Duration::from_secs(15 * 60);
    pub const DEFAULT_BUDGET: Duration = Duration::from_secs(2);
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            ttl: Self::DEFAULT_TTL,
            negative_ttl: Self::DEFAULT_NEGATIVE_TTL,
            budget: Self::DEFAULT_BUDGET,
        }
    }
}

/// One cached answer, in memory and (as JSON) in the store. `info: None` is a negative entry.
///
/// The expiry is written into the value and checked against *our* clock, not only left to the
/// store's TTL: the store may round TTLs (DynamoDB deletes expired items lazily), and tests drive
/// expiry with a manual clock.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct CacheEntry {
    info: Option<AccountInfo>,
    expires_at: Timestamp,
}

/// Per-account slot: the async mutex serialises lookups of one account, so concurrent findings of
/// the same account share one lookup (the first caller looks up, the others wait and read its
/// answer).
type Slot = Arc<tokio::sync::Mutex<Option<CacheEntry>>>;

/// [`AccountResolver`] over any [`AccountLookup`]: memory cache → store cache → lookup (bounded by
/// the budget) → both caches.
///
/// Never fails and never blocks forwarding for long: store errors are logged and ignored, a failed
/// or slow lookup yields an empty [`Enrichment`], is counted, cached negatively and logged once per
/// account (per resolver, i.e. per process). A call is bounded by about three budgets (store read,
/// lookup, store write); concurrent callers for the same account wait for the call in flight.
pub struct CachingResolver {
    lookup: Arc<dyn AccountLookup>,
    store: Option<Arc<dyn KvStore>>,
    clock: Arc<dyn Clock>,
    config: CacheConfig,
    fields: AccountFields,
    slots: Mutex<HashMap<String, Slot>>,
    warned: Mutex<HashSet<String>>,
    hits: AtomicU64,
    misses: AtomicU64,
    failures: AtomicU64,
}

impl std::fmt::Debug for CachingResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CachingResolver")
            .field("lookup", &self.lookup)
            .field("store_cache", &self.store.is_some())
            .field("config", &self.config)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl CachingResolver {
    pub fn new(
        lookup: Arc<dyn AccountLookup>,
        store: Option<Arc<dyn KvStore>>,
        clock: Arc<dyn Clock>,
        config: CacheConfig,
    ) -> Self {
        Self {
            lookup,
            store,
            clock,
            config,
            fields: AccountFields::default(),
            slots: Mutex::new(HashMap::new()),
            warned: Mutex::new(HashSet::new()),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            failures: AtomicU64::new(0),
        }
    }

    pub fn config(&self) -> CacheConfig {
        self.config
    }

    /// Sets `fields` on every resolved [`Enrichment`]. The lookup behind must look up what they
    /// need ([`AccountFields::needs`]); cached answers that do not include it are looked up again.
    pub fn with_account_fields(mut self, fields: AccountFields) -> Self {
        self.fields = fields;
        self
    }

    fn enrichment(&self, info: Option<&AccountInfo>) -> Enrichment {
        let mut e = info.map(AccountInfo::enrichment).unwrap_or_default();
        e.fields = self.fields.resolve(info);
        e
    }

    fn slot(&self, account_id: &str) -> Slot {
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        Arc::clone(slots.entry(account_id.to_owned()).or_default())
    }

    /// Not expired, and (for a positive entry) including the lookups the account fields need.
    fn is_live(&self, entry: &CacheEntry) -> bool {
        entry.expires_at > self.clock.now()
            && entry
                .info
                .as_ref()
                .is_none_or(|i| i.looked_up.covers(self.fields.needs()))
    }

    fn entry_for(&self, info: Option<AccountInfo>, ttl: Duration) -> CacheEntry {
        let ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
        CacheEntry {
            info,
            expires_at: self.clock.now().saturating_add_millis(ms),
        }
    }

    /// Reads the store cache; any error (store down, slow, garbage value) reads as a miss.
    async fn store_get(&self, account_id: &str) -> Option<CacheEntry> {
        let store = self.store.as_ref()?;
        let raw = match tokio::time::timeout(
            self.config.budget,
            store.kv_get(KV_NAMESPACE, account_id),
        )
        .await
        {
            Ok(Ok(raw)) => raw?,
            Ok(Err(e)) => {
                tracing::debug!(account_id, error = %e, "account cache read failed; looking up");
                return None;
            }
            Err(_) => {
                tracing::debug!(account_id, "account cache read over budget; looking up");
                return None;
            }
        };
        match serde_json::from_str::<CacheEntry>(&raw) {
            Ok(entry) if self.is_live(&entry) => Some(entry),
            Ok(_) => None,
            Err(e) => {
                tracing::debug!(account_id, error = %e, "unreadable account cache entry; looking up");
                None
            }
        }
    }

    /// Writes the store cache; errors are logged and ignored (the memory cache still holds it).
    async fn store_put(&self, account_id: &str, entry: &CacheEntry, ttl: Duration) {
        let Some(store) = &self.store else { return };
        let value = match serde_json::to_string(entry) {
            Ok(v) => v,
            Err(e) => {
                tracing::debug!(account_id, error = %e, "cannot serialise account cache entry");
                return;
            }
        };
        match tokio::time::timeout(
            self.config.budget,
            store.kv_put(KV_NAMESPACE, account_id, &value, ttl),
        )
        .await
        {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::debug!(account_id, error = %e, "account cache write failed; ignored")
            }
            Err(_) => tracing::debug!(account_id, "account cache write over budget; ignored"),
        }
    }

    /// Logs a failed lookup at warn level the first time for each account, at debug after.
    fn warn_once(&self, account_id: &str, reason: &str) {
        let first = self
            .warned
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(account_id.to_owned());
        if first {
            tracing::warn!(
                account_id,
                reason,
                "account enrichment failed: findings of this account are forwarded without \
                 aws.account.name or without the account fields it could not resolve (logged \
                 once per account; retried after the negative cache TTL)"
            );
        } else {
            tracing::debug!(account_id, reason, "account enrichment failed again");
        }
    }
}

#[async_trait]
impl AccountResolver for CachingResolver {
    async fn resolve(&self, account_id: &str) -> Enrichment {
        let slot = self.slot(account_id);
        // Held across the store read and the lookup: this is what makes concurrent callers of one
        // account share a single lookup.
        let mut cached = slot.lock().await;

        if let Some(entry) = cached.as_ref().filter(|e| self.is_live(e)) {
            self.hits.fetch_add(1, Ordering::Relaxed);
            return self.enrichment(entry.info.as_ref());
        }
        if let Some(entry) = self.store_get(account_id).await {
            self.hits.fetch_add(1, Ordering::Relaxed);
            let out = self.enrichment(entry.info.as_ref());
            *cached = Some(entry);
            return out;
        }

        self.misses.fetch_add(1, Ordering::Relaxed);
        let found =
            match tokio::time::timeout(self.config.budget, self.lookup.lookup(account_id)).await {
                Ok(Ok(info)) => Some(info),
                Ok(Err(e)) => {
                    self.warn_once(account_id, &e.message);
                    None
                }
                Err(_) => {
                    let reason = format!("lookup exceeded its budget of {:?}", self.config.budget);
                    self.warn_once(account_id, &reason);
                    None
                }
            };
        // A name without the account fields' context (tags or OU denied) is used, but only
        // until the negative TTL: the context is retried as soon as a failed lookup would be.
        let complete = match &found {
            Some(info) if !info.context_errors.is_empty() => {
                self.warn_once(account_id, &info.context_errors.join("; "));
                false
            }
            Some(_) => true,
            None => false,
        };
        let ttl = if complete {
            self.config.ttl
        } else {
            self.failures.fetch_add(1, Ordering::Relaxed);
            self.config.negative_ttl
        };
        let entry = self.entry_for(found, ttl);
        let out = self.enrichment(entry.info.as_ref());
        self.store_put(account_id, &entry, ttl).await;
        *cached = Some(entry);
        out
    }

    fn stats(&self) -> EnrichStats {
        EnrichStats {
            cache_hits: self.hits.load(Ordering::Relaxed),
            cache_misses: self.misses.load(Ordering::Relaxed),
            failures: self.failures.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    //! The resolver's rules, driven by a manual clock (cache expiry) and tokio's paused time (the
    //! lookup budget), against a counting fake lookup and an in-memory key/value store.

    use std::sync::atomic::AtomicUsize;

    /// Tests here run one at a time: the resolver logs through `tracing`, whose per-callsite
    /// interest cache is global, so a warning first hit on another test's thread (which has no
    /// subscriber) can race the log-capturing test's subscriber registration and hide its events.
    static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

    use super::*;
    use crate::ManualClock;
    use crate::error::StoreError;

    const T0: Timestamp = Timestamp::from_millis(1_700_000_000_000);

    /// What the fake lookup answers, per call.
    #[derive(Debug, Clone)]
    enum Answer {
        Alias(&'static str),
        OrgName(&'static str),
        Fail,
        /// Sleeps this long (tokio time), then answers with an alias.
        Slow(Duration),
        /// An alias, and the account's tags when asked for them (`looked_up` = what was asked);
        /// `Err` makes the tags lookup fail.
        Tagged(
            &'static str,
            Result<&'static str, &'static str>,
            ContextNeeds,
        ),
    }

    #[derive(Debug)]
    struct FakeLookup {
        answer: Mutex<Answer>,
        calls: AtomicUsize,
    }

    impl FakeLookup {
        fn new(answer: Answer) -> Arc<Self> {
            Arc::new(Self {
                answer: Mutex::new(answer),
                calls: AtomicUsize::new(0),
            })
        }
        fn set(&self, answer: Answer) {
            *self.answer.lock().expect("answer lock") = answer;
        }
        fn calls(&self) -> usize {
            self.calls.load(Ordering::SeqCst)
        }
    }

    #[async_trait]
    impl AccountLookup for FakeLookup {
        async fn lookup(&self, account_id: &str) -> Result<AccountInfo, LookupError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            let answer = self.answer.lock().expect("answer lock").clone();
            match answer {
                Answer::Alias(a) => Ok(AccountInfo {
                    alias: Some(a.to_owned()),
                    org_name: None,
                    ..AccountInfo::default()
                }),
                Answer::OrgName(n) => Ok(AccountInfo {
                    alias: None,
                    org_name: Some(n.to_owned()),
                    ..AccountInfo::default()
                }),
                Answer::Fail => Err(LookupError {
                    account_id: account_id.to_owned(),
                    message: "AccessDenied".to_owned(),
                }),
                Answer::Tagged(alias, tag, looked_up) => {
                    let mut info = AccountInfo {
                        alias: Some(alias.to_owned()),
                        looked_up,
                        ..AccountInfo::default()
                    };
                    if looked_up.tags {
                        match tag {
                            Ok(v) => {
                                info.tags =
                                    Some(BTreeMap::from([("Context".to_owned(), v.to_owned())]))
                            }
                            Err(e) => info.context_errors.push(e.to_owned()),
                        }
                    }
                    Ok(info)
                }
                Answer::Slow(d) => {
                    tokio::time::sleep(d).await;
                    Ok(AccountInfo {
                        alias: Some("slow".to_owned()),
                        org_name: None,
                        ..AccountInfo::default()
                    })
                }
            }
        }
    }

    /// A key/value space only (no expiry: the resolver checks its own), which is all the
    /// resolver needs. `broken` makes every call fail.
    #[derive(Debug, Default)]
    struct TestKv {
        kv: Mutex<HashMap<(String, String), String>>,
        broken: bool,
    }

    fn broken(operation: &'static str) -> StoreError {
        StoreError::Invalid {
            backend: "test-kv".to_owned(),
            operation,
            message: "broken on purpose".to_owned(),
        }
    }

    #[async_trait]
    impl KvStore for TestKv {
        async fn kv_get(&self, namespace: &str, key: &str) -> Result<Option<String>, StoreError> {
            if self.broken {
                return Err(broken("kv_get"));
            }
            let kv = self.kv.lock().expect("kv lock");
            Ok(kv.get(&(namespace.to_owned(), key.to_owned())).cloned())
        }
        async fn kv_put(
            &self,
            namespace: &str,
            key: &str,
            value: &str,
            _ttl: Duration,
        ) -> Result<(), StoreError> {
            if self.broken {
                return Err(broken("kv_put"));
            }
            let mut kv = self.kv.lock().expect("kv lock");
            kv.insert((namespace.to_owned(), key.to_owned()), value.to_owned());
            Ok(())
        }
    }

    fn resolver(
        lookup: &Arc<FakeLookup>,
        store: Option<Arc<TestKv>>,
        clock: &ManualClock,
    ) -> CachingResolver {
        CachingResolver::new(
            Arc::clone(lookup) as Arc<dyn AccountLookup>,
            store.map(|s| s as Arc<dyn KvStore>),
            Arc::new(clock.clone()),
            CacheConfig::default(),
        )
    }

    fn named(alias: &str) -> Enrichment {
        Enrichment {
            account_name: Some(alias.to_owned()),
            account_alias: Some(alias.to_owned()),
            fields: Vec::new(),
        }
    }

    #[tokio::test]
    async fn positive_entries_live_for_the_ttl_then_are_looked_up_again() {
        let _serial = SERIAL.lock().await;
        let clock = ManualClock::new(T0);
        let lookup = FakeLookup::new(Answer::Alias("prod-payments"));
        let r = resolver(&lookup, None, &clock);

        assert_eq!(r.resolve("111111111111").await, named("prod-payments"));
        assert_eq!(r.resolve("111111111111").await, named("prod-payments"));
        assert_eq!(lookup.calls(), 1);

        lookup.set(Answer::Alias("prod-payments-renamed"));
        clock.advance(CacheConfig::DEFAULT_TTL - Duration::from_millis(1));
        assert_eq!(r.resolve("111111111111").await, named("prod-payments"));
        assert_eq!(lookup.calls(), 1, "still inside the TTL");

        clock.advance(Duration::from_millis(1));
        assert_eq!(
            r.resolve("111111111111").await,
            named("prod-payments-renamed")
        );
        assert_eq!(lookup.calls(), 2, "expired at exactly the TTL");
        assert_eq!(
            r.stats(),
            EnrichStats {
                cache_hits: 2,
                cache_misses: 2,
                failures: 0
            }
        );
    }

    #[tokio::test]
    async fn accounts_are_cached_separately_and_org_names_carry_no_alias() {
        let _serial = SERIAL.lock().await;
        let clock = ManualClock::new(T0);
        let lookup = FakeLookup::new(Answer::OrgName("Payments Prod"));
        let r = resolver(&lookup, None, &clock);
        let want = Enrichment {
            account_name: Some("Payments Prod".to_owned()),
            account_alias: None,
            fields: Vec::new(),
        };
        assert_eq!(r.resolve("111111111111").await, want);
        assert_eq!(r.resolve("222222222222").await, want);
        assert_eq!(lookup.calls(), 2);
    }

    #[tokio::test]
    async fn failures_are_cached_negatively_for_15_minutes_then_retried() {
        let _serial = SERIAL.lock().await;
        let clock = ManualClock::new(T0);
        let lookup = FakeLookup::new(Answer::Fail);
        let r = resolver(&lookup, None, &clock);

        assert_eq!(r.resolve("333333333333").await, Enrichment::default());
        assert_eq!(r.stats().failures, 1);
        // The role appears meanwhile: still not asked again within the negative TTL.
        lookup.set(Answer::Alias("sandbox"));
        clock.advance(Duration::from_secs(15 * 60 - 1));
        assert_eq!(r.resolve("333333333333").await, Enrichment::default());
        assert_eq!(lookup.calls(), 1);

        clock.advance(Duration::from_secs(1));
        assert_eq!(r.resolve("333333333333").await, named("sandbox"));
        assert_eq!(lookup.calls(), 2);
        // Now a positive entry with the long TTL.
        clock.advance(Duration::from_secs(3600));
        assert_eq!(r.resolve("333333333333").await, named("sandbox"));
        assert_eq!(lookup.calls(), 2);
        assert_eq!(r.stats().failures, 1);
    }

    #[tokio::test]
    async fn a_fresh_resolver_reads_the_store_cache_instead_of_looking_up() {
        let _serial = SERIAL.lock().await;
        let clock = ManualClock::new(T0);
        let store = Arc::new(TestKv::default());
        let first = FakeLookup::new(Answer::Alias("prod-payments"));
        let failing = FakeLookup::new(Answer::Fail);
        {
            let r = resolver(&first, Some(Arc::clone(&store)), &clock);
            r.resolve("111111111111").await;
            r.resolve("444444444444").await;
            // A negative entry goes to the store too.
            first.set(Answer::Fail);
            r.resolve("555555555555").await;
        }
        assert_eq!(first.calls(), 3);
        assert!(
            store
                .kv
                .lock()
                .expect("kv lock")
                .keys()
                .all(|(ns, _)| ns == KV_NAMESPACE)
        );

        // Another process (fresh memory cache) sharing the store.
        let second = FakeLookup::new(Answer::Alias("never-asked"));
        let r = resolver(&second, Some(Arc::clone(&store)), &clock);
        assert_eq!(r.resolve("111111111111").await, named("prod-payments"));
        assert_eq!(r.resolve("555555555555").await, Enrichment::default());
        assert_eq!(second.calls(), 0);
        assert_eq!(r.stats().cache_hits, 2);

        // The negative store entry expires after 15 minutes, the positive one after 24 hours.
        clock.advance(Duration::from_secs(15 * 60));
        let r = resolver(&failing, Some(Arc::clone(&store)), &clock);
        assert_eq!(r.resolve("444444444444").await, named("prod-payments"));
        assert_eq!(r.resolve("555555555555").await, Enrichment::default());
        assert_eq!(
            failing.calls(),
            1,
            "only the expired negative entry is looked up"
        );

        clock.advance(CacheConfig::DEFAULT_TTL);
        let third = FakeLookup::new(Answer::Alias("prod-payments-2"));
        let r = resolver(&third, Some(store), &clock);
        assert_eq!(r.resolve("111111111111").await, named("prod-payments-2"));
        assert_eq!(third.calls(), 1);
    }

    #[tokio::test]
    async fn store_errors_are_ignored() {
        let _serial = SERIAL.lock().await;
        let clock = ManualClock::new(T0);
        let store = Arc::new(TestKv {
            broken: true,
            ..TestKv::default()
        });
        let lookup = FakeLookup::new(Answer::Alias("prod-payments"));
        let r = resolver(&lookup, Some(store), &clock);
        assert_eq!(r.resolve("111111111111").await, named("prod-payments"));
        assert_eq!(r.resolve("111111111111").await, named("prod-payments"));
        assert_eq!(lookup.calls(), 1, "the memory cache still works");
        assert_eq!(r.stats().failures, 0);
    }

    #[tokio::test]
    async fn garbage_in_the_store_cache_reads_as_a_miss() {
        let _serial = SERIAL.lock().await;
        let clock = ManualClock::new(T0);
        let store = Arc::new(TestKv::default());
        store
            .kv_put(
                KV_NAMESPACE,
                "111111111111",
                "not json",
                Duration::from_secs(60),
            )
            .await
            .expect("put");
        let lookup = FakeLookup::new(Answer::Alias("prod-payments"));
        let r = resolver(&lookup, Some(Arc::clone(&store)), &clock);
        assert_eq!(r.resolve("111111111111").await, named("prod-payments"));
        assert_eq!(lookup.calls(), 1);
        let stored = store
            .kv_get(KV_NAMESPACE, "111111111111")
            .await
            .expect("get")
            .expect("rewritten");
        assert!(stored.contains("prod-payments"), "{stored}");
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_resolves_of_one_account_share_one_lookup() {
        let _serial = SERIAL.lock().await;
        let clock = ManualClock::new(T0);
        // The lookup takes a while, so all 100 callers arrive while it is in flight.
        let lookup = FakeLookup::new(Answer::Slow(Duration::from_millis(500)));
        let r = resolver(&lookup, None, &clock);
        let all = futures::future::join_all((0..100).map(|_| r.resolve("666666666666"))).await;
        assert_eq!(lookup.calls(), 1);
        assert!(all.iter().all(|e| *e == named("slow")));
        assert_eq!(
            r.stats(),
            EnrichStats {
                cache_hits: 99,
                cache_misses: 1,
                failures: 0
            }
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_resolves_from_spawned_tasks_share_one_lookup() {
        let _serial = SERIAL.lock().await;
        let clock = ManualClock::new(T0);
        let lookup = FakeLookup::new(Answer::Slow(Duration::from_millis(20)));
        let r = Arc::new(resolver(&lookup, None, &clock));
        let tasks: Vec<_> = (0..100)
            .map(|_| {
                let r = Arc::clone(&r);
                tokio::spawn(async move { r.resolve("777777777777").await })
            })
            .collect();
        for t in tasks {
            assert_eq!(t.await.expect("task"), named("slow"));
        }
        assert_eq!(lookup.calls(), 1);
    }

    /// Counts WARN events of this module, per `account_id` field.
    #[derive(Debug, Default, Clone)]
    struct WarnCounter(Arc<Mutex<Vec<String>>>);

    struct AccountField(Option<String>);
    impl tracing::field::Visit for AccountField {
        fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
            if field.name() == "account_id" {
                self.0 = Some(value.to_owned());
            }
        }
        fn record_debug(&mut self, _: &tracing::field::Field, _: &dyn std::fmt::Debug) {}
    }

    impl tracing::Subscriber for WarnCounter {
        fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
            true
        }
        fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
            tracing::span::Id::from_u64(1)
        }
        fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
        fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
        fn event(&self, event: &tracing::Event<'_>) {
            let meta = event.metadata();
            if *meta.level() == tracing::Level::WARN && meta.target() == "gdfwd_core::enrich" {
                let mut field = AccountField(None);
                event.record(&mut field);
                self.0
                    .lock()
                    .expect("warn lock")
                    .push(field.0.unwrap_or_default());
            }
        }
        fn enter(&self, _: &tracing::span::Id) {}
        fn exit(&self, _: &tracing::span::Id) {}
    }

    #[tokio::test(start_paused = true)]
    async fn a_lookup_over_budget_yields_nothing_is_counted_and_warned_once_per_account() {
        let _serial = SERIAL.lock().await;
        let warns = WarnCounter::default();
        let _guard = tracing::dispatcher::set_default(&tracing::Dispatch::new(warns.clone()));
        // Callsites first hit before this subscriber existed may have cached "never".
        tracing::callsite::rebuild_interest_cache();
        let clock = ManualClock::new(T0);
        let lookup = FakeLookup::new(Answer::Slow(Duration::from_secs(10)));
        let r = resolver(&lookup, None, &clock);

        let started = tokio::time::Instant::now();
        assert_eq!(r.resolve("888888888888").await, Enrichment::default());
        // Paused time: this is the budget the resolver waited, not a wall-clock measurement.
        assert_eq!(started.elapsed(), CacheConfig::DEFAULT_BUDGET);
        assert_eq!(r.stats().failures, 1);

        // Retried after the negative TTL, fails again: counted again, not warned again.
        clock.advance(CacheConfig::DEFAULT_NEGATIVE_TTL);
        assert_eq!(r.resolve("888888888888").await, Enrichment::default());
        assert_eq!(lookup.calls(), 2);
        assert_eq!(r.stats().failures, 2);

        // Another account warns on its own.
        lookup.set(Answer::Fail);
        assert_eq!(r.resolve("999999999999").await, Enrichment::default());
        assert_eq!(r.stats().failures, 3);

        let warned = warns.0.lock().expect("warn lock").clone();
        assert_eq!(warned, vec!["888888888888", "999999999999"]);
    }

    fn tagged(fields: &[&str]) -> (AccountFields, ContextNeeds) {
        let f = AccountFields::parse(fields).expect("account fields");
        let needs = f.needs();
        (f, needs)
    }

    fn with_fields(
        lookup: &Arc<FakeLookup>,
        store: Option<Arc<TestKv>>,
        clock: &ManualClock,
        fields: &AccountFields,
    ) -> CachingResolver {
        resolver(lookup, store, clock).with_account_fields(fields.clone())
    }

    #[tokio::test]
    async fn account_fields_come_with_the_name_and_are_cached_with_it() {
        let _serial = SERIAL.lock().await;
        let clock = ManualClock::new(T0);
        let (fields, needs) = tagged(&["dt.security_context=tag:Context", "team.x='t'"]);
        let lookup = FakeLookup::new(Answer::Tagged("prod", Ok("payments"), needs));
        let r = with_fields(&lookup, None, &clock, &fields);
        let want = Enrichment {
            fields: vec![
                ("dt.security_context".to_owned(), "payments".to_owned()),
                ("team.x".to_owned(), "t".to_owned()),
            ],
            ..named("prod")
        };
        assert_eq!(r.resolve("111111111111").await, want);
        assert_eq!(r.resolve("111111111111").await, want);
        assert_eq!(lookup.calls(), 1);
        assert_eq!(r.stats().failures, 0);

        // A failed lookup still carries the literal.
        lookup.set(Answer::Fail);
        let e = r.resolve("222222222222").await;
        assert_eq!(e.fields, vec![("team.x".to_owned(), "t".to_owned())]);
        assert_eq!(e.account_name, None);
    }

    #[tokio::test]
    async fn entries_cached_before_a_field_was_configured_are_looked_up_again() {
        let _serial = SERIAL.lock().await;
        let clock = ManualClock::new(T0);
        let store = Arc::new(TestKv::default());
        let plain = FakeLookup::new(Answer::Alias("prod"));
        resolver(&plain, Some(Arc::clone(&store)), &clock)
            .resolve("111111111111")
            .await;

        let (fields, needs) = tagged(&["dt.security_context=tag:Context"]);
        let lookup = FakeLookup::new(Answer::Tagged("prod", Ok("payments"), needs));
        let r = with_fields(&lookup, Some(Arc::clone(&store)), &clock, &fields);
        let e = r.resolve("111111111111").await;
        assert_eq!(lookup.calls(), 1, "the stored entry has no tags: looked up");
        assert_eq!(e.fields[0].1, "payments");
        // The new entry covers the fields: a fresh process reads it from the store.
        let again = FakeLookup::new(Answer::Fail);
        let r = with_fields(&again, Some(store), &clock, &fields);
        assert_eq!(r.resolve("111111111111").await.fields[0].1, "payments");
        assert_eq!(again.calls(), 0);
    }

    #[tokio::test]
    async fn a_failed_context_lookup_keeps_the_name_is_counted_and_retried_after_the_negative_ttl()
    {
        let _serial = SERIAL.lock().await;
        let clock = ManualClock::new(T0);
        let (fields, needs) = tagged(&["dt.security_context=tag:Context"]);
        let lookup = FakeLookup::new(Answer::Tagged("prod", Err("AccessDenied"), needs));
        let r = with_fields(&lookup, None, &clock, &fields);
        assert_eq!(r.resolve("333333333333").await, named("prod"));
        assert_eq!(r.stats().failures, 1);
        clock.advance(CacheConfig::DEFAULT_NEGATIVE_TTL - Duration::from_secs(1));
        assert_eq!(r.resolve("333333333333").await, named("prod"));
        assert_eq!(lookup.calls(), 1);

        lookup.set(Answer::Tagged("prod", Ok("payments"), needs));
        clock.advance(Duration::from_secs(1));
        assert_eq!(r.resolve("333333333333").await.fields.len(), 1);
        assert_eq!(lookup.calls(), 2);
        assert_eq!(r.stats().failures, 1);
    }
}
