//! DynamoDB-specific behaviour against moto: the table definition, throttling (through the
//! fault-injecting proxy), request counts per claim, and the errors a missing table gives.

use std::sync::Arc;
use std::time::Duration;

use gdfwd_core::store::{
    ClaimOutcome, ClaimRequest, Delivery, FindingHistory, Finish, HistoryKind, KvStore, Owner,
    StateStore, Status, VersionKey,
};
use gdfwd_core::{Clock, ManualClock, StoreError};
use gdfwd_model::{FindingMeta, Timestamp};
use gdfwd_store_dynamodb::{
    CreateOutcome, DEFAULT_RETENTION, DynamoStore, client, client_with_retries, create_table,
    describe_definition, table_definition,
};
use gdfwd_testkit_moto::{Fault, FaultProxy, sdk_config, sdk_config_at, unique_name};

const LEASE: Duration = Duration::from_secs(300);
/// The answer for a version claimed (at the test clock's start, [`clock`]) and not yet finished.
const HELD: ClaimOutcome = ClaimOutcome::InFlight {
    lease_until: Timestamp::from_millis(1_800_000_000_000 + 300_000),
};

fn req(id: &str, version_ms: i64) -> ClaimRequest {
    ClaimRequest {
        key: VersionKey {
            finding_id: id.to_owned(),
            version: Timestamp::from_millis(version_ms),
        },
        meta: FindingMeta {
            account_id: "111122223333".into(),
            region: "eu-west-1".into(),
            finding_type: Some("Recon:EC2/Portscan".into()),
            severity: Some(5.0),
            title: Some("Portscan".into()),
        },
    }
}

/// A winning claim with its owner token cleared, to compare outcomes.
const NEW: ClaimOutcome = ClaimOutcome::New { owner: Owner::NONE };

type Owners = std::collections::BTreeMap<(String, String, Timestamp), Owner>;

/// The owner token of each winning claim these tests made, per table, finding and version.
static OWNERS: std::sync::Mutex<Owners> = std::sync::Mutex::new(Owners::new());

fn owners() -> std::sync::MutexGuard<'static, Owners> {
    OWNERS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The store as the claimant: claims remember their owner tokens (and answer [`NEW`]), and
/// commits and releases go out as the owner of the last winning claim of their version.
trait AsClaimant {
    async fn claim_t(&self, r: &ClaimRequest, lease: Duration) -> Result<ClaimOutcome, StoreError>;
    async fn claim_many_t(
        &self,
        rs: &[ClaimRequest],
        lease: Duration,
    ) -> Result<Vec<ClaimOutcome>, StoreError>;
    fn owner_of(&self, k: &VersionKey) -> Owner;
    async fn commit_t(&self, k: &VersionKey, d: &Delivery) -> Result<(), StoreError>;
    async fn release_t(&self, k: &VersionKey, reason: &str) -> Result<(), StoreError>;
    async fn finish_many_t(&self, items: &[(VersionKey, Finish)]) -> Vec<Result<(), StoreError>>;
}

impl AsClaimant for DynamoStore {
    async fn claim_t(&self, r: &ClaimRequest, lease: Duration) -> Result<ClaimOutcome, StoreError> {
        Ok(self
            .claim_many_t(std::slice::from_ref(r), lease)
            .await?
            .remove(0))
    }
    async fn claim_many_t(
        &self,
        rs: &[ClaimRequest],
        lease: Duration,
    ) -> Result<Vec<ClaimOutcome>, StoreError> {
        let got = if let [one] = rs {
            vec![self.claim(one, lease).await?]
        } else {
            self.claim_many(rs, lease).await?
        };
        Ok(got
            .into_iter()
            .zip(rs)
            .map(|(o, r)| match o {
                ClaimOutcome::New { owner } => {
                    owners().insert(
                        (self.describe(), r.key.finding_id.clone(), r.key.version),
                        owner,
                    );
                    NEW
                }
                other => other,
            })
            .collect())
    }
    fn owner_of(&self, k: &VersionKey) -> Owner {
        owners()
            .get(&(self.describe(), k.finding_id.clone(), k.version))
            .copied()
            .unwrap_or(Owner::NONE)
    }
    async fn commit_t(&self, k: &VersionKey, d: &Delivery) -> Result<(), StoreError> {
        self.commit(k, self.owner_of(k), d).await
    }
    async fn release_t(&self, k: &VersionKey, reason: &str) -> Result<(), StoreError> {
        self.release(k, self.owner_of(k), reason).await
    }
    async fn finish_many_t(&self, items: &[(VersionKey, Finish)]) -> Vec<Result<(), StoreError>> {
        let owned: Vec<_> = items
            .iter()
            .map(|(k, f)| (k.clone(), self.owner_of(k), f.clone()))
            .collect();
        self.finish_many(&owned).await
    }
}

fn clock() -> Arc<ManualClock> {
    Arc::new(ManualClock::new(Timestamp::from_millis(1_800_000_000_000)))
}

/// The finding's record and history; the finding must exist.
async fn history(store: &DynamoStore, id: &str) -> FindingHistory {
    StateStore::history(store, id)
        .await
        .expect("history")
        .expect("record")
}

/// How many of the history's entries are of the kind `is`.
fn entries(h: &FindingHistory, is: impl Fn(&HistoryKind) -> bool) -> usize {
    h.entries.iter().filter(|e| is(&e.kind)).count()
}

/// A table at moto, and a store on it whose client goes through `proxy` with the given retries.
async fn store_via(proxy: &FaultProxy, attempts: u32) -> DynamoStore {
    let table = unique_name("gdfwd-dyn");
    create_table(&client(&sdk_config().await), &table)
        .await
        .expect("create table");
    let sdk = sdk_config_at(&proxy.endpoint()).await;
    DynamoStore::new(
        client_with_retries(&sdk, attempts, Duration::from_millis(5)),
        table,
        clock(),
        DEFAULT_RETENTION,
    )
}

#[tokio::test]
async fn created_table_matches_the_definition_and_init_is_idempotent() {
    let c = client(&sdk_config().await);
    let table = unique_name("gdfwd-def");
    assert_eq!(
        create_table(&c, &table).await.expect("create"),
        CreateOutcome::Created
    );
    assert_eq!(
        describe_definition(&c, &table).await.expect("describe"),
        table_definition()
    );
    assert_eq!(
        create_table(&c, &table).await.expect("again"),
        CreateOutcome::AlreadyExisted
    );
    assert_eq!(
        describe_definition(&c, &table)
            .await
            .expect("describe again"),
        table_definition()
    );
}

#[test]
fn definition_names_are_the_documented_ones() {
    let def = serde_json::to_value(table_definition()).expect("serialize");
    assert_eq!(def["BillingMode"], "PAY_PER_REQUEST");
    assert_eq!(def["KeySchema"][0]["AttributeName"], "pk");
    assert_eq!(def["KeySchema"][1]["AttributeName"], "sk");
    assert_eq!(def["GlobalSecondaryIndexes"][0]["IndexName"], "gsi1");
    assert_eq!(
        def["GlobalSecondaryIndexes"][0]["KeySchema"][0]["AttributeName"],
        "gsi1pk"
    );
    assert_eq!(
        def["GlobalSecondaryIndexes"][0]["Projection"]["ProjectionType"],
        "ALL"
    );
    assert_eq!(
        def["TimeToLiveSpecification"]["AttributeName"],
        "expires_at"
    );
}

/// `gdfwd store init` and the CloudFormation template create the same table: the template's
/// table is compared with this JSON file by the infrastructure tests (tests/infra), and the JSON
/// file with `table_definition()` here, so the two are provably equal.
#[test]
fn definition_equals_the_cloudformation_table_definition() {
    let ours = serde_json::to_value(table_definition()).expect("serialize");
    let cfn: serde_json::Value = serde_json::from_str(include_str!(
        "../../../cloudformation/table-definition.json"
    ))
    .expect("cloudformation/table-definition.json is JSON");
    assert_eq!(ours, cfn);
}

#[tokio::test]
async fn bad_table_names_are_refused_before_any_call() {
    let c = client(&sdk_config().await);
    for bad in ["ab", "has space", "slash/name"] {
        assert!(create_table(&c, bad).await.is_err(), "{bad:?}");
    }
}

#[tokio::test]
async fn throttled_writes_are_retried_and_the_claim_succeeds() {
    let proxy = FaultProxy::start_moto().await;
    let store = store_via(&proxy, 5).await;
    proxy.fail_next(2, Fault::ProvisionedThroughputExceeded, Some("UpdateItem"));
    assert_eq!(
        store.claim_t(&req("a", 1), LEASE).await.expect("claim"),
        NEW
    );
    assert_eq!(proxy.faulted("UpdateItem"), 2);
    assert_eq!(proxy.count("UpdateItem"), 3, "two throttled, one through");
    // The claim really happened: the same version is now a duplicate.
    proxy.fail_next(1, Fault::Throttling, Some("UpdateItem"));
    assert_eq!(
        store.claim_t(&req("a", 1), LEASE).await.expect("claim"),
        HELD
    );
}

#[tokio::test]
async fn a_store_that_stays_throttled_is_unavailable_naming_the_table() {
    let proxy = FaultProxy::start_moto().await;
    let store = store_via(&proxy, 2).await;
    proxy.fail_always(Fault::ProvisionedThroughputExceeded, Some("UpdateItem"));
    let err = store
        .claim_t(&req("a", 1), LEASE)
        .await
        .expect_err("throttled forever");
    assert!(
        matches!(err, StoreError::Unavailable { .. }),
        "unavailable: {err:?}"
    );
    let msg = err.to_string();
    assert!(msg.contains(store.table()), "names the table: {msg}");
    assert!(msg.contains("ProvisionedThroughputExceeded"), "{msg}");
    assert_eq!(proxy.count("UpdateItem"), 2, "max attempts");
    // claim_many fails as a whole too: nothing is reported as claimable.
    proxy.fail_always(
        Fault::ProvisionedThroughputExceeded,
        Some("TransactWriteItems"),
    );
    let err = store
        .claim_many_t(&[req("b", 1), req("c", 1)], LEASE)
        .await
        .expect_err("throttled forever");
    assert!(matches!(err, StoreError::Unavailable { .. }), "{err:?}");
    // Once the throttling ends the store works again.
    proxy.clear_faults();
    assert_eq!(
        store.claim_t(&req("a", 1), LEASE).await.expect("claim"),
        NEW
    );
}

#[tokio::test]
async fn five_hundreds_are_retried() {
    let proxy = FaultProxy::start_moto().await;
    let store = store_via(&proxy, 5).await;
    proxy.fail_next(2, Fault::InternalError, None);
    assert_eq!(
        store.claim_t(&req("a", 1), LEASE).await.expect("claim"),
        NEW
    );
    store
        .kv_put("alias", "1", "x", LEASE)
        .await
        .expect("kv_put");
}

/// A claim whose write DynamoDB applied but whose answer was lost (here a 500 after the write;
/// in AWS also an attempt timeout) is retried by the SDK; the retry fails its condition against
/// the claim it made itself. The claim token tells it apart from someone else's claim: New, not
/// Duplicate, or the finding would never be sent. Single and transactional paths.
#[tokio::test]
async fn a_claim_whose_answer_was_lost_is_still_new() {
    let proxy = FaultProxy::start_moto().await;
    let store = store_via(&proxy, 3).await;
    let claimed_entries = |h: &FindingHistory| entries(h, |k| matches!(k, HistoryKind::Claimed));

    proxy.lose_next_answers(1, Fault::InternalError, Some("UpdateItem"));
    assert_eq!(
        store.claim_t(&req("a", 1), LEASE).await.expect("claim"),
        NEW,
        "its own claim, applied before the answer was lost"
    );
    assert_eq!(proxy.faulted("UpdateItem"), 1, "{:?}", proxy.counts());
    assert_eq!(
        proxy.count("UpdateItem"),
        2,
        "the write and the SDK's retry"
    );
    assert_eq!(
        store.claim_t(&req("a", 1), LEASE).await.expect("claim"),
        HELD,
        "anyone else's claim of the same version finds it in flight"
    );
    let h = history(&store, "a").await;
    assert_eq!(claimed_entries(&h), 1, "{h:?}");
    let in_flight = entries(&h, |k| matches!(k, HistoryKind::InFlight { .. }));
    assert_eq!(
        (h.record.duplicates, in_flight),
        (0, 1),
        "an answer in flight is recorded, not counted: {h:?}"
    );

    proxy.reset_counts();
    proxy.lose_next_answers(1, Fault::InternalError, Some("TransactWriteItems"));
    let batch: Vec<_> = (0..3).map(|i| req(&format!("t{i}"), 1)).collect();
    assert_eq!(
        store.claim_many_t(&batch, LEASE).await.expect("claim_many"),
        vec![NEW; 3]
    );
    assert_eq!(
        proxy.faulted("TransactWriteItems"),
        1,
        "{:?}",
        proxy.counts()
    );
    for i in 0..3 {
        let h = history(&store, &format!("t{i}")).await;
        assert_eq!(claimed_entries(&h), 1, "one claim entry: {h:?}");
        assert_eq!(h.record.duplicates, 0, "{h:?}");
    }
    assert_eq!(
        store.claim_many_t(&batch, LEASE).await.expect("claim_many"),
        vec![HELD; 3]
    );
}

/// A commit or release whose write DynamoDB applied but whose answer was lost is retried by the
/// SDK. The retry must not count the delivery (or the failure) a second time, nor write a second
/// history entry: the finish token tells the retry it finds its own write. Single writes,
/// single transactions and batch transactions.
#[tokio::test]
async fn a_finish_whose_answer_was_lost_is_recorded_once() {
    use gdfwd_core::store::Delivery;
    let sent = |h: &FindingHistory| entries(h, |k| matches!(k, HistoryKind::Sent { .. }));
    let failed = |h: &FindingHistory| entries(h, |k| matches!(k, HistoryKind::Failed { .. }));
    let delivery = || Delivery {
        event_ids: vec!["ev-1".into()],
        request_id: Some("req-1".into()),
    };
    for transactions in [false, true] {
        let proxy = FaultProxy::start_moto().await;
        let store = store_via(&proxy, 3).await.with_transactions(transactions);
        let op = if transactions {
            "TransactWriteItems"
        } else {
            "UpdateItem"
        };

        // commit
        store.claim_t(&req("c", 1), LEASE).await.expect("claim");
        proxy.lose_next_answers(1, Fault::InternalError, Some(op));
        store
            .commit_t(&req("c", 1).key, &delivery())
            .await
            .expect("its own commit, applied before the answer was lost");
        assert_eq!(proxy.faulted(op), 1, "{:?}", proxy.counts());
        let h = history(&store, "c").await;
        assert_eq!(
            h.record.versions_sent, 1,
            "transactions {transactions}: {h:?}"
        );
        assert_eq!(sent(&h), 1, "transactions {transactions}: {h:?}");

        // release
        store.claim_t(&req("r", 1), LEASE).await.expect("claim");
        proxy.lose_next_answers(1, Fault::InternalError, Some(op));
        store
            .release_t(&req("r", 1).key, "HTTP 503")
            .await
            .expect("its own release");
        let h = history(&store, "r").await;
        assert_eq!(h.record.failures, 1, "transactions {transactions}: {h:?}");
        assert_eq!(failed(&h), 1, "transactions {transactions}: {h:?}");

        // a batch's commits
        let batch: Vec<_> = (0..3).map(|i| req(&format!("b{i}"), 1)).collect();
        store.claim_many_t(&batch, LEASE).await.expect("claim_many");
        proxy.lose_next_answers(1, Fault::InternalError, Some(op));
        let finishes: Vec<_> = batch
            .iter()
            .map(|r| (r.key.clone(), Finish::Commit(delivery())))
            .collect();
        for r in store.finish_many_t(&finishes).await {
            r.expect("finish_many");
        }
        for i in 0..3 {
            let h = history(&store, &format!("b{i}")).await;
            assert_eq!(
                h.record.versions_sent, 1,
                "transactions {transactions}: {h:?}"
            );
            assert_eq!(sent(&h), 1, "transactions {transactions}: {h:?}");
        }
    }
}

/// The cost model documented in docs/state-store.md, as request counts: a winning claim is one
/// conditional UpdateItem plus one history PutItem, no read; a suppressed one adds one counter
/// update; claim_many claims a batch in one transaction; commit is one transaction.
#[tokio::test]
async fn requests_per_claim() {
    let proxy = FaultProxy::start_moto().await;
    let store = store_via(&proxy, 1).await;
    proxy.reset_counts();
    assert_eq!(
        store.claim_t(&req("a", 1), LEASE).await.expect("claim"),
        NEW
    );
    assert_eq!(proxy.count("UpdateItem"), 1);
    assert_eq!(proxy.count("PutItem"), 1);
    assert_eq!(proxy.count("GetItem") + proxy.count("Query"), 0, "no read");

    proxy.reset_counts();
    assert_eq!(
        store.claim_t(&req("a", 1), LEASE).await.expect("claim"),
        HELD
    );
    assert_eq!(
        proxy.count("UpdateItem"),
        2,
        "failed conditional write + counter"
    );
    assert_eq!(proxy.count("PutItem"), 1);
    assert_eq!(proxy.count("GetItem") + proxy.count("Query"), 0, "no read");

    // A batch of new findings: ONE transaction (record updates and history entries).
    proxy.reset_counts();
    let batch: Vec<_> = (0..10).map(|i| req(&format!("b{i}"), 1)).collect();
    let got = store.claim_many_t(&batch, LEASE).await.expect("claim_many");
    assert_eq!(got, vec![NEW; 10]);
    assert_eq!(proxy.total(), 1, "{:?}", proxy.counts());
    assert_eq!(proxy.count("TransactWriteItems"), 1);
    for i in 0..10 {
        let h = history(&store, &format!("b{i}")).await;
        assert_eq!(h.entries.len(), 1, "the claim's history entry: {h:?}");
    }

    // Committing one: the record update and its history entry in one transaction.
    proxy.reset_counts();
    store
        .commit_t(&batch[0].key, &Default::default())
        .await
        .expect("commit");
    assert_eq!(proxy.total(), 1, "{:?}", proxy.counts());
    let h = history(&store, "b0").await;
    assert_eq!(h.record.versions_sent, 1);
    assert_eq!(h.entries.len(), 2, "claimed, sent: {h:?}");

    // A batch with two already-claimed findings, a newer version and a repeat inside the batch:
    // the transaction is cancelled by the two, re-run without them; the two are decided from
    // the old records the cancellation reasons carry (1 counter UpdateItem each, no repeated
    // conditional write), the repeat takes the single path (its failed conditional write + 1
    // counter); history entries of the single path in one BatchWriteItem. `b2` v1 was
    // delivered, so its v0 is stale.
    store
        .commit_t(&batch[2].key, &Default::default())
        .await
        .expect("commit");
    proxy.reset_counts();
    let mixed = vec![
        req("b1", 1),
        req("c1", 1),
        req("b2", 0),
        req("c2", 1),
        req("c1", 1),
        req("b3", 2),
    ];
    let got = store.claim_many_t(&mixed, LEASE).await.expect("claim_many");
    assert_eq!(
        got,
        vec![
            HELD,
            NEW,
            ClaimOutcome::Stale {
                newest: Timestamp::from_millis(1)
            },
            NEW,
            HELD,
            NEW,
        ]
    );
    assert_eq!(proxy.count("TransactWriteItems"), 2, "{:?}", proxy.counts());
    assert_eq!(proxy.count("UpdateItem"), 4, "{:?}", proxy.counts());
    assert_eq!(proxy.count("BatchWriteItem"), 1, "{:?}", proxy.counts());
    assert_eq!(proxy.total(), 7, "{:?}", proxy.counts());
    let b1 = history(&store, "b1").await;
    assert_eq!(
        (b1.record.duplicates, b1.entries.len()),
        (0, 2),
        "claimed, in flight: {b1:?}"
    );
    let b2 = history(&store, "b2").await;
    assert_eq!(b2.record.stale, 1, "{b2:?}");
    assert_eq!(b2.entries.len(), 3, "claimed, sent, stale: {b2:?}");

    // Finishing a batch whose versions are all the latest: ONE transaction for the commits and
    // the release, record updates with their history entries.
    proxy.reset_counts();
    let sent = Finish::Commit(Default::default());
    let finishes: Vec<(VersionKey, Finish)> = (4..9)
        .map(|i| (batch[i].key.clone(), sent.clone()))
        .chain([(batch[9].key.clone(), Finish::Release("503".into()))])
        .collect();
    let results = store.finish_many_t(&finishes).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert_eq!(proxy.total(), 1, "{:?}", proxy.counts());
    assert_eq!(proxy.count("TransactWriteItems"), 1);
    let b8 = history(&store, "b8").await;
    assert_eq!(
        (b8.record.versions_sent, b8.entries.len()),
        (1, 2),
        "{b8:?}"
    );
    let b9 = history(&store, "b9").await;
    assert_eq!((b9.record.failures, b9.entries.len()), (1, 2), "{b9:?}");

    // One superseded version in the batch: the transaction is cancelled by it and re-run
    // without it; it gets its counters-only update, the conditional update of the newest
    // delivered version, and its history entry separately.
    proxy.reset_counts();
    let finishes = vec![
        (req("b1", 1).key, sent.clone()), // committed again: still the latest
        (req("b3", 1).key, sent.clone()), // b3's latest is version 2
        (req("c2", 1).key, sent.clone()),
    ];
    let results = store.finish_many_t(&finishes).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert_eq!(proxy.count("TransactWriteItems"), 2, "{:?}", proxy.counts());
    assert_eq!(proxy.count("UpdateItem"), 2, "{:?}", proxy.counts());
    assert_eq!(proxy.count("PutItem"), 1, "{:?}", proxy.counts());
    assert_eq!(proxy.total(), 5, "{:?}", proxy.counts());
}

#[tokio::test]
async fn a_missing_table_is_a_configuration_error() {
    let store = DynamoStore::new(
        client(&sdk_config().await),
        unique_name("gdfwd-missing"),
        clock(),
        DEFAULT_RETENTION,
    );
    let err = store
        .claim_t(&req("a", 1), LEASE)
        .await
        .expect_err("no table");
    assert!(matches!(err, StoreError::Config(_)), "{err:?}");
    assert!(err.to_string().contains("store init"), "{err}");
}

/// With transactions off: one conditional UpdateItem per claim of a batch, the history entries
/// in one BatchWriteItem; a commit is an UpdateItem plus a history PutItem.
#[tokio::test]
async fn requests_per_claim_without_transactions() {
    let proxy = FaultProxy::start_moto().await;
    let store = store_via(&proxy, 1).await.with_transactions(false);
    proxy.reset_counts();
    let batch: Vec<_> = (0..10).map(|i| req(&format!("b{i}"), 1)).collect();
    let got = store.claim_many_t(&batch, LEASE).await.expect("claim_many");
    assert_eq!(got, vec![NEW; 10]);
    assert_eq!(proxy.count("UpdateItem"), 10);
    assert_eq!(proxy.count("BatchWriteItem"), 1, "history in one batch");
    assert_eq!(proxy.total(), 11, "{:?}", proxy.counts());

    proxy.reset_counts();
    store
        .commit_t(&batch[0].key, &Default::default())
        .await
        .expect("commit");
    assert_eq!(proxy.count("UpdateItem"), 1);
    assert_eq!(proxy.count("PutItem"), 1);
    assert_eq!(proxy.total(), 2, "{:?}", proxy.counts());
    let h = history(&store, "b0").await;
    assert_eq!(h.entries.len(), 2, "claimed, sent: {h:?}");
}

/// Issue #16, defect 3: DynamoDB refuses a whole transaction for one item over its limits (here
/// a 3,000-byte key, which `refuses` would have caught before claiming). The claim batch is
/// refused as invalid with nothing written (the pipeline then claims one by one), and a commit
/// batch records every other item, failing only the offending one.
#[tokio::test]
async fn a_transaction_refused_for_one_item_fails_only_that_item() {
    let proxy = FaultProxy::start_moto().await;
    let store = store_via(&proxy, 1).await;
    let poison = "p".repeat(3000);
    assert!(store.refuses(&req(&poison, 1)).is_some());

    let err = store
        .claim_many_t(&[req("ok-1", 1), req(&poison, 1)], LEASE)
        .await
        .expect_err("refused");
    assert!(matches!(err, StoreError::Invalid { .. }), "{err:?}");
    assert!(
        StateStore::history(&store, "ok-1")
            .await
            .expect("history")
            .is_none(),
        "nothing of the refused batch was written"
    );

    let got = store
        .claim_many_t(&[req("ok-1", 1), req("ok-2", 1)], LEASE)
        .await
        .expect("claim_many");
    assert_eq!(got, vec![NEW; 2]);
    let sent = Finish::Commit(Default::default());
    let results = store
        .finish_many_t(&[
            (req("ok-1", 1).key, sent.clone()),
            (req(&poison, 1).key, sent.clone()),
            (req("ok-2", 1).key, sent),
        ])
        .await;
    assert!(results[0].is_ok() && results[2].is_ok(), "{results:?}");
    assert!(
        matches!(results[1], Err(StoreError::Invalid { .. })),
        "{results:?}"
    );
    for id in ["ok-1", "ok-2"] {
        assert_eq!(
            history(&store, id).await.record.status,
            Status::Sent,
            "{id}"
        );
    }
}

/// A record and history an older gdfwd wrote (no owner token it can match, no `seq`, history
/// keys ordered by time) still read: its entries in their old order, unnumbered. New writes
/// number theirs from 1 after them, a commit by a claim that gdfwd made is refused as a stale
/// owner's, and `audit check` finds the mixed history in order.
#[tokio::test]
async fn records_of_an_older_gdfwd_still_read_and_continue_numbered() {
    use aws_sdk_dynamodb::types::AttributeValue as A;
    let table = unique_name("gdfwd-legacy");
    let raw = client(&sdk_config().await);
    create_table(&raw, &table).await.expect("create table");
    let clock = clock();
    let t0 = clock.now().millis();
    let store = DynamoStore::new(raw.clone(), table.clone(), clock.clone(), DEFAULT_RETENTION);
    let s = |v: &str| A::S(v.to_owned());
    let n = |v: i64| A::N(v.to_string());
    let exp = t0 + 86_400_000;
    let put = |item: Vec<(&str, A)>| {
        let raw = raw.clone();
        let table = table.clone();
        let item: std::collections::HashMap<String, A> =
            item.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
        async move {
            raw.put_item()
                .table_name(table)
                .set_item(Some(item))
                .send()
                .await
                .expect("put legacy item");
        }
    };
    put(vec![
        ("pk", s("F#old")),
        ("sk", s("R")),
        ("finding_id", s("old")),
        ("account_id", s("111122223333")),
        ("region", s("eu-west-1")),
        ("latest_version", n(2)),
        ("status", s("pending")),
        ("lease_until", n(t0 + 300_000)),
        ("first_seen", n(t0 - 2000)),
        ("last_seen", n(t0 - 1000)),
        ("updated_at", n(t0 - 1000)),
        ("versions_sent", n(1)),
        ("duplicates", n(0)),
        ("stale", n(0)),
        ("failures", n(0)),
        ("sent_version", n(1)),
        ("claim_token", s("legacy-token")),
        ("expires_at_ms", n(exp)),
        ("expires_at", n(exp / 1000)),
        ("gsi1pk", s("A#111122223333")),
        ("gsi1sk", s(&format!("{:015}#old", t0 - 1000))),
    ])
    .await;
    // Written out of time order (the second one first): the key orders them by time.
    for (at, version, kind) in [
        (t0 - 1000, 2, r#"{"kind":"claimed"}"#),
        (t0 - 2000, 1, r#"{"kind":"claimed"}"#),
        (
            t0 - 1500,
            1,
            r#"{"kind":"sent","event_ids":["e"],"request_id":null}"#,
        ),
    ] {
        put(vec![
            ("pk", s("F#old")),
            ("sk", s(&format!("H#{at:015}#000000000001#0000abcd"))),
            ("at", n(at)),
            ("version", n(version)),
            ("kind", s(kind)),
            ("expires_at_ms", n(exp)),
            ("expires_at", n(exp / 1000)),
        ])
        .await;
    }
    let h = history(&store, "old").await;
    let got: Vec<_> = h
        .entries
        .iter()
        .map(|e| (e.seq, e.at.millis() - t0, e.version.millis()))
        .collect();
    assert_eq!(
        got,
        vec![(None, -2000, 1), (None, -1500, 1), (None, -1000, 2)],
        "time order, unnumbered"
    );
    assert_eq!(h.record.seq, 0);

    // The old process's claim of version 2 is not this gdfwd's: its commit is refused...
    let refused = store
        .commit(&req("old", 2).key, Owner::NONE, &Delivery::default())
        .await;
    assert!(
        matches!(refused, Err(StoreError::StaleOwner { .. })),
        "{refused:?}"
    );
    // ...and once its lease ended, a new claim takes it, numbered after the old entries.
    clock.advance(LEASE + Duration::from_secs(1));
    assert_eq!(
        store.claim_t(&req("old", 2), LEASE).await.expect("claim"),
        NEW
    );
    store
        .commit_t(&req("old", 2).key, &Delivery::default())
        .await
        .expect("commit");
    let h = history(&store, "old").await;
    let seqs: Vec<Option<u64>> = h.entries.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, vec![None, None, None, Some(1), Some(2)]);
    assert_eq!((h.record.seq, h.record.versions_sent), (2, 2));
    assert_eq!(
        gdfwd_core::audit_check::check(&h, clock.now()),
        vec![],
        "{h:?}"
    );
}
