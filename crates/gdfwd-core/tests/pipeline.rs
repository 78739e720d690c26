//! Pipeline behaviour with in-test fakes: what is claimed, sent, committed and released.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use gdfwd_core::StoreError;
use gdfwd_core::enrich::{AccountResolver, EnrichStats};
use gdfwd_core::pipeline::{Outcome, Pipeline};
use gdfwd_core::sink::EventOutcome;
use gdfwd_core::store::{
    ClaimOutcome, ClaimRequest, Delivery, FindingHistory, FindingRecord, ListQuery, Owner,
    StateStore, VersionKey,
};
use gdfwd_model::{
    Enrichment, FilterInput, Finding, FindingFilter, Format, Item, Timestamp, parse_document,
};

use common::{FakeSink, LEASE_END, MemStore, finding};

/// One finding per id, all of account `1` at the same `updatedAt`.
fn same_version(ids: &[&str]) -> Vec<Finding> {
    let lines: Vec<String> = ids
        .iter()
        .map(|id| finding(id, "1", "2025-01-01T00:00:01Z"))
        .collect();
    findings(&lines.join("\n"))
}

fn findings(text: &str) -> Vec<Finding> {
    parse_document(text)
        .into_iter()
        .filter_map(|r| match r {
            Ok(Item::Finding(f)) => Some(*f),
            _ => None,
        })
        .collect()
}

fn s3_two_buckets(id: &str) -> String {
    format!(
        r#"{{"id":"{id}","accountId":"111111111111","region":"eu-west-1","updatedAt":"2025-01-02T00:00:00Z","type":"Policy:S3/BucketBlockPublicAccessDisabled","severity":2,"resource":{{"resourceType":"S3Bucket","s3BucketDetails":[{{"name":"a","arn":"arn:aws:s3:::a"}},{{"name":"b","arn":"arn:aws:s3:::b"}}]}}}}"#
    )
}

fn pipeline(store: Arc<MemStore>, sink: Arc<FakeSink>) -> Pipeline {
    Pipeline::new(Some(store), sink, Format::Raw)
}

#[tokio::test]
async fn sends_once_and_suppresses_redelivery() {
    let store = Arc::new(MemStore::default());
    let sink = Arc::new(FakeSink::default());
    let p = pipeline(store.clone(), sink.clone());
    let batch = findings(&format!(
        "{}\n{}",
        finding("f1", "111111111111", "2025-01-01T00:00:01Z"),
        finding("f2", "111111111111", "2025-01-01T00:00:01Z")
    ));
    let r = p.process(&batch, None).await;
    assert_eq!(
        r.outcomes,
        vec![
            Outcome::Forwarded { events: 1 },
            Outcome::Forwarded { events: 1 }
        ]
    );
    assert_eq!(
        (r.summary.forwarded, r.summary.events, r.summary.requests),
        (2, 2, 1)
    );
    let committed = store.committed.lock().expect("lock").clone();
    assert_eq!(committed.len(), 2);
    assert_eq!(
        committed[0].1.event_ids,
        vec![sink.received.lock().expect("lock")[0].id.clone()]
    );
    assert_eq!(committed[0].1.request_id.as_deref(), Some("req-1"));

    let again = p.process(&batch, None).await;
    assert_eq!(again.outcomes, vec![Outcome::Duplicate, Outcome::Duplicate]);
    assert_eq!(again.summary.duplicates, 2);
    assert_eq!(
        sink.received.lock().expect("lock").len(),
        2,
        "nothing sent the second time"
    );
}

#[tokio::test]
async fn older_version_after_newer_is_stale_and_not_sent() {
    let store = Arc::new(MemStore::default());
    let sink = Arc::new(FakeSink::default());
    let p = pipeline(store, sink.clone());
    let batch = findings(&format!(
        "{}\n{}",
        finding("f1", "1", "2025-01-01T00:00:02Z"),
        finding("f1", "1", "2025-01-01T00:00:01Z")
    ));
    let r = p.process(&batch, None).await;
    assert_eq!(r.outcomes[0], Outcome::Forwarded { events: 1 });
    assert_eq!(
        r.outcomes[1],
        Outcome::Stale {
            newest: Timestamp::parse("2025-01-01T00:00:02Z").expect("ts")
        }
    );
    assert_eq!(sink.received.lock().expect("lock").len(), 1);
}

/// Issue #16, defect 1: a newer version that was claimed but not delivered (the endpoint
/// refused it for good) must not make the real versions after it stale; and an older version
/// behind a newer one of the same batch follows it: stale when it is delivered, retryable when
/// it is not.
#[tokio::test]
async fn only_a_delivered_version_makes_older_ones_stale() {
    let store = Arc::new(MemStore::default());
    let sink = Arc::new(FakeSink::default());
    let p = pipeline(store.clone(), sink.clone());
    let far = findings(&finding("f1", "1", "2025-01-01T00:00:09Z"));
    sink.refuse_all();
    let r = p.process(&far, None).await;
    assert!(
        matches!(
            r.outcomes[0],
            Outcome::Failed {
                retryable: false,
                ..
            }
        ),
        "{:?}",
        r.outcomes
    );
    let real = findings(&finding("f1", "1", "2025-01-01T00:00:02Z"));
    let r = p.process(&real, None).await;
    assert_eq!(r.outcomes, vec![Outcome::Forwarded { events: 1 }]);

    // Newer and older of f2 in one batch, the newer one fails: both are retryable.
    let batch = findings(&format!(
        "{}\n{}",
        finding("f2", "1", "2025-01-01T00:00:05Z"),
        finding("f2", "1", "2025-01-01T00:00:04Z")
    ));
    sink.fail_503_at(0);
    let r = p.process(&batch, None).await;
    assert!(
        matches!(&r.outcomes[1], Outcome::Failed { retryable: true, reason } if reason.contains("waited for the newer version")),
        "{:?}",
        r.outcomes
    );
    // Again, delivered: the older one is stale, not sent.
    let before = sink.received.lock().expect("lock").len();
    let r = p.process(&batch, None).await;
    let newest = Timestamp::parse("2025-01-01T00:00:05Z").expect("ts");
    assert_eq!(
        r.outcomes,
        vec![Outcome::Forwarded { events: 1 }, Outcome::Stale { newest }]
    );
    assert_eq!(sink.received.lock().expect("lock").len(), before + 1);
}

#[tokio::test]
async fn retryable_failure_releases_and_a_retry_delivers() {
    let store = Arc::new(MemStore::default());
    let sink = Arc::new(FakeSink::default());
    sink.script
        .lock()
        .expect("lock")
        .push(Box::new(|_| EventOutcome::Retryable {
            reason: "HTTP 503".into(),
        }));
    let p = pipeline(store.clone(), sink.clone());
    let batch = findings(&finding("f1", "1", "2025-01-01T00:00:01Z"));
    let r = p.process(&batch, None).await;
    assert_eq!(
        r.outcomes,
        vec![Outcome::Failed {
            retryable: true,
            reason: "HTTP 503".into()
        }]
    );
    assert_eq!(r.summary.failed, 1);
    assert_eq!(store.released.lock().expect("lock").len(), 1);
    assert!(store.committed.lock().expect("lock").is_empty());

    let r = p.process(&batch, None).await;
    assert_eq!(r.outcomes, vec![Outcome::Forwarded { events: 1 }]);
    assert_eq!(sink.received.lock().expect("lock").len(), 1);
}

#[tokio::test]
async fn one_definitive_event_fails_the_whole_version_without_commit() {
    let store = Arc::new(MemStore::default());
    let sink = Arc::new(FakeSink::default());
    sink.script.lock().expect("lock").push(Box::new(|i| {
        if i == 1 {
            EventOutcome::Definitive {
                reason: "HTTP 413 for one event".into(),
            }
        } else {
            EventOutcome::Sent { request_id: None }
        }
    }));
    let p = pipeline(store.clone(), sink.clone());
    let batch = findings(&s3_two_buckets("s3f"));
    let r = p.process(&batch, None).await;
    assert_eq!(
        r.outcomes,
        vec![Outcome::Failed {
            retryable: false,
            reason: "HTTP 413 for one event".into()
        }]
    );
    let released = store.released.lock().expect("lock").clone();
    assert_eq!(released.len(), 1);
    assert_eq!(released[0].1, "HTTP 413 for one event");
    assert!(store.committed.lock().expect("lock").is_empty());
}

/// The batch's commits and releases reach the store in ONE call (one DynamoDB request), only for
/// the versions that were sent; a commit that fails after delivery leaves the outcome Forwarded
/// (the events were accepted) and does not keep the others from being recorded.
#[tokio::test]
async fn a_batch_is_committed_and_released_in_one_store_call() {
    let store = Arc::new(MemStore {
        fail_commit_of: Some("f3".into()),
        ..MemStore::default()
    });
    let sink = Arc::new(FakeSink::default());
    sink.fail_503_at(1);
    let p = pipeline(store.clone(), sink.clone());
    // The second f1 is a copy: not finished again.
    let batch = same_version(&["f1", "f2", "f3", "f1"]);
    let r = p.process(&batch, None).await;
    assert_eq!(
        r.outcomes,
        vec![
            Outcome::Forwarded { events: 1 },
            Outcome::Failed {
                retryable: true,
                reason: "HTTP 503".into()
            },
            Outcome::Forwarded { events: 1 },
            Outcome::Duplicate,
        ]
    );
    assert_eq!(*store.finish_calls.lock().expect("lock"), vec![3]);
    let committed: Vec<String> = store
        .committed
        .lock()
        .expect("lock")
        .iter()
        .map(|(k, _)| k.finding_id.clone())
        .collect();
    assert_eq!(committed, vec!["f1"], "f3's commit failed after delivery");
    let released = store.released.lock().expect("lock").clone();
    assert_eq!(released.len(), 1);
    assert_eq!(
        (released[0].0.finding_id.as_str(), released[0].1.as_str()),
        ("f2", "HTTP 503")
    );

    // Nothing sent, nothing to finish: no store call.
    let again = p
        .process(&findings(&finding("f1", "1", "2025-01-01T00:00:01Z")), None)
        .await;
    assert_eq!(again.outcomes, vec![Outcome::Duplicate]);
    assert_eq!(store.finish_calls.lock().expect("lock").len(), 1);
}

#[tokio::test]
async fn split_finding_commits_all_event_ids() {
    let store = Arc::new(MemStore::default());
    let sink = Arc::new(FakeSink::default());
    let p = pipeline(store.clone(), sink.clone());
    let r = p.process(&findings(&s3_two_buckets("s3f")), None).await;
    assert_eq!(r.outcomes, vec![Outcome::Forwarded { events: 2 }]);
    let committed = store.committed.lock().expect("lock").clone();
    let sent: Vec<String> = sink
        .received
        .lock()
        .expect("lock")
        .iter()
        .map(|e| e.id.clone())
        .collect();
    assert_eq!(committed[0].1.event_ids, sent);
    assert_ne!(sent[0], sent[1]);
}

#[tokio::test]
async fn store_outage_sends_nothing_and_fails_retryably() {
    let store = Arc::new(MemStore {
        fail_claims: true,
        ..MemStore::default()
    });
    let sink = Arc::new(FakeSink::default());
    let p = pipeline(store, sink.clone());
    let r = p
        .process(&findings(&finding("f1", "1", "2025-01-01T00:00:01Z")), None)
        .await;
    match &r.outcomes[0] {
        Outcome::Failed {
            retryable: true,
            reason,
        } => assert!(reason.contains("injected outage"), "{reason}"),
        other => panic!("expected retryable failure, got {other:?}"),
    }
    assert!(
        sink.received.lock().expect("lock").is_empty(),
        "never send without dedup"
    );
}

#[tokio::test]
async fn without_a_store_everything_is_sent() {
    let sink = Arc::new(FakeSink::default());
    let p = Pipeline::new(None, sink.clone(), Format::Semantic);
    let line = finding("f1", "1", "2025-01-01T00:00:01Z");
    let r = p.process(&findings(&format!("{line}\n{line}")), None).await;
    assert_eq!(r.summary.forwarded, 2);
    assert_eq!(sink.received.lock().expect("lock").len(), 2);
}

/// The filter decides before the claim: filtered findings are counted, never claimed (the store
/// never hears of them), never sent; a filtered finding is not judged invalid either.
#[tokio::test]
async fn filtered_findings_are_counted_and_never_claimed_or_sent() {
    let store = Arc::new(MemStore::default());
    let sink = Arc::new(FakeSink::default());
    let mut filter = FindingFilter::default();
    filter
        .apply(FilterInput::ExcludeType, "Backdoor:*", "--exclude-type")
        .expect("valid");
    let p = pipeline(store.clone(), sink.clone()).with_filter(filter);
    let keep = finding("keep", "1", "2025-01-01T00:00:01Z");
    let archived = finding("archived", "1", "2025-01-01T00:00:01Z").replacen(
        r#""title":"t""#,
        r#""title":"t","service":{"archived":true}"#,
        1,
    );
    let backdoor = finding("backdoor", "1", "2025-01-01T00:00:01Z").replacen(
        "Recon:EC2/Portscan",
        "Backdoor:EC2/DenialOfService.Tcp",
        1,
    );
    // Far in the future, which alone would make it invalid: filtered first.
    let future_archived = finding("future", "1", "2999-01-01T00:00:00Z").replacen(
        r#""title":"t""#,
        r#""title":"t","service":{"archived":true}"#,
        1,
    );
    let batch = findings(&[keep, archived, backdoor, future_archived].join("\n"));
    assert_eq!(batch.len(), 4);
    let r = p.process(&batch, None).await;
    assert_eq!(
        r.outcomes,
        vec![
            Outcome::Forwarded { events: 1 },
            Outcome::Filtered {
                reason: "archived".into()
            },
            Outcome::Filtered {
                reason: "exclude-type Backdoor:*".into()
            },
            Outcome::Filtered {
                reason: "archived".into()
            },
        ]
    );
    assert_eq!((r.summary.received, r.summary.forwarded), (4, 1));
    assert_eq!((r.summary.filtered, r.summary.invalid), (3, 0));
    assert!(r.outcomes.iter().all(|o| o.undone().is_none()), "settled");
    assert_eq!(store.answers.lock().expect("lock").len(), 1, "one claim");
    let items = store.items.lock().expect("lock");
    assert_eq!(items.keys().collect::<Vec<_>>(), vec!["keep"]);
    assert_eq!(sink.received.lock().expect("lock").len(), 1);
    assert_eq!(p.filter().types.exclude, ["Backdoor:*"]);
}

#[derive(Debug, Default)]
struct CountingResolver(AtomicUsize);

#[async_trait]
impl AccountResolver for CountingResolver {
    async fn resolve(&self, account_id: &str) -> Enrichment {
        self.0.fetch_add(1, Ordering::SeqCst);
        Enrichment {
            account_name: Some(format!("name-{account_id}")),
            account_alias: None,
            fields: Vec::new(),
        }
    }
    fn stats(&self) -> EnrichStats {
        EnrichStats::default()
    }
}

#[tokio::test]
async fn enrichment_is_resolved_once_per_account_and_lands_in_the_payload() {
    let sink = Arc::new(FakeSink::default());
    let resolver = Arc::new(CountingResolver::default());
    let p =
        Pipeline::new(None, sink.clone(), Format::Semantic).with_resolver(Some(resolver.clone()));
    let text = [
        finding("a", "111", "2025-01-01T00:00:01Z"),
        finding("b", "111", "2025-01-01T00:00:01Z"),
        finding("c", "222", "2025-01-01T00:00:01Z"),
    ]
    .join("\n");
    p.process(&findings(&text), None).await;
    assert_eq!(resolver.0.load(Ordering::SeqCst), 2);
    let sent = sink.received.lock().expect("lock").clone();
    let names: Vec<String> = sent
        .iter()
        .map(|e| {
            serde_json::from_str::<serde_json::Value>(&e.json).expect("json")["aws.account.name"]
                .as_str()
                .unwrap_or("")
                .to_owned()
        })
        .collect();
    assert_eq!(names, vec!["name-111", "name-111", "name-222"]);
}

/// Past the lease another sender may claim the same version, so sending stops before it ends:
/// the sink's deadline is the earlier of the caller's and the lease's.
#[tokio::test]
async fn sending_stops_before_the_claims_lease_ends() {
    let store = Arc::new(MemStore::default());
    let sink = Arc::new(FakeSink::default());
    let lease = Duration::from_secs(60);
    let p = pipeline(store.clone(), sink.clone()).with_lease(lease);
    let batch = findings(&finding("lease-1", "111111111111", "2025-01-02T00:00:00Z"));

    let before = Instant::now();
    p.process(&batch, None).await;
    let after = Instant::now();
    let got = sink.deadlines.lock().expect("lock")[0].expect("a deadline despite none given");
    // 60 s lease: sending stops 30 s before its end.
    assert!(
        got >= before + Duration::from_secs(30),
        "{:?}",
        got - before
    );
    assert!(got <= after + Duration::from_secs(30), "{:?}", got - after);

    // An earlier caller deadline stands.
    let early = Instant::now() + Duration::from_secs(5);
    let batch = findings(&finding("lease-2", "111111111111", "2025-01-02T00:00:00Z"));
    p.process(&batch, Some(early)).await;
    assert_eq!(sink.deadlines.lock().expect("lock")[1], Some(early));

    // The budget leaves half of a short lease, 30 s of a long one.
    use gdfwd_core::pipeline::lease_send_budget;
    assert_eq!(
        lease_send_budget(Duration::from_secs(2)),
        Duration::from_secs(1)
    );
    assert_eq!(
        lease_send_budget(Duration::from_secs(300)),
        Duration::from_secs(270)
    );

    // Without a store there is no lease and no deadline of its own.
    let no_store = Pipeline::new(None, sink.clone(), Format::Raw).with_lease(lease);
    no_store.process(&batch, None).await;
    assert_eq!(sink.deadlines.lock().expect("lock")[2], None);
}

/// A version another sender holds is neither sent nor reported done: it is left for a retry (so
/// it is not lost if that sender dies), while a copy of a version this batch claims itself
/// follows the batch's own outcome for it.
#[tokio::test]
async fn a_version_in_flight_elsewhere_is_left_for_a_retry_and_copies_follow_their_holder() {
    let store = Arc::new(MemStore::default());
    let sink = Arc::new(FakeSink::default());
    // Another sender holds f1.
    let f1 = findings(&finding("f1", "1", "2025-01-01T00:00:01Z"));
    let other = gdfwd_core::pipeline::claim_request(&f1[0]);
    assert!(
        (store
            .claim(&other, Duration::from_secs(300))
            .await
            .expect("claim"))
        .is_new()
    );
    // f2 (the first event sent) fails retryably; f3 is delivered; each has a copy in the batch.
    sink.fail_503_at(0);
    let p = pipeline(store.clone(), sink.clone());
    let batch = same_version(&["f1", "f2", "f3", "f2", "f3"]);
    let r = p.process(&batch, None).await;
    let failed = Outcome::Failed {
        retryable: true,
        reason: "HTTP 503".into(),
    };
    assert_eq!(
        r.outcomes,
        vec![
            Outcome::InFlight {
                lease_until: LEASE_END
            },
            failed.clone(),
            Outcome::Forwarded { events: 1 },
            failed,
            Outcome::Duplicate,
        ]
    );
    assert_eq!(
        (r.summary.in_flight, r.summary.failed, r.summary.duplicates),
        (1, 2, 1)
    );
    let sent: Vec<String> = sink
        .received
        .lock()
        .expect("lock")
        .iter()
        .map(|e| e.json.clone())
        .collect();
    assert_eq!(sent.len(), 1, "only f3 was delivered: {sent:?}");
    assert!(sent[0].contains("\"f3\""), "{sent:?}");
    let (retryable, reason) = r.outcomes[0].undone().expect("f1 is not done");
    assert!(retryable);
    assert!(reason.contains("another sender"), "{reason}");
    assert_eq!(
        r.outcomes[4].undone(),
        None,
        "a copy of a delivered version is done"
    );
}

/// [`MemStore`] with a backend's limits: like the DynamoDB store it declares ids over 100 bytes
/// unstorable (`refuses`), and like DynamoDB it refuses as invalid any claim batch holding an
/// id starting with `poison` (a value it could not foresee), and that id's single claim.
#[derive(Debug, Default)]
struct LimitedStore(MemStore);

fn poison_error() -> StoreError {
    StoreError::Invalid {
        backend: "limited".into(),
        operation: "claim",
        message: "ValidationException: an item's value is out of range".into(),
    }
}

#[async_trait]
impl StateStore for LimitedStore {
    fn describe(&self) -> String {
        "limited".into()
    }
    fn refuses(&self, req: &ClaimRequest) -> Option<String> {
        (req.key.finding_id.len() > 100).then(|| "field `id` is too long".to_owned())
    }
    async fn claim(&self, req: &ClaimRequest, l: Duration) -> Result<ClaimOutcome, StoreError> {
        assert!(self.refuses(req).is_none(), "a refused finding was claimed");
        if req.key.finding_id.starts_with("poison") {
            return Err(poison_error());
        }
        self.0.claim(req, l).await
    }
    async fn claim_many(
        &self,
        reqs: &[ClaimRequest],
        l: Duration,
    ) -> Result<Vec<ClaimOutcome>, StoreError> {
        if reqs.iter().any(|r| r.key.finding_id.starts_with("poison")) {
            return Err(poison_error());
        }
        let mut out = Vec::new();
        for r in reqs {
            out.push(self.claim(r, l).await?);
        }
        Ok(out)
    }
    async fn commit(&self, key: &VersionKey, o: Owner, d: &Delivery) -> Result<(), StoreError> {
        self.0.commit(key, o, d).await
    }
    async fn release(&self, key: &VersionKey, o: Owner, reason: &str) -> Result<(), StoreError> {
        self.0.release(key, o, reason).await
    }
    async fn history(&self, id: &str) -> Result<Option<FindingHistory>, StoreError> {
        self.0.history(id).await
    }
    async fn list(&self, q: &ListQuery) -> Result<Vec<FindingRecord>, StoreError> {
        self.0.list(q).await
    }
}

/// Issue #16, defects 1 and 3: an `updatedAt` more than a day ahead of the pipeline's clock,
/// and a finding the store could not record, are each invalid alone, never claimed or sent;
/// their neighbours in the batch are forwarded.
#[tokio::test]
async fn implausible_versions_and_unstorable_findings_are_invalid_alone() {
    let store = Arc::new(LimitedStore::default());
    let sink = Arc::new(FakeSink::default());
    let now = Timestamp::parse("2025-01-01T00:00:00Z").expect("ts");
    let p = Pipeline::new(Some(store), sink.clone(), Format::Raw)
        .with_clock(Arc::new(gdfwd_core::ManualClock::new(now)));
    let long_id = "x".repeat(101);
    let batch = findings(
        &[
            finding("ok1", "1", "2025-01-01T00:00:00Z"),
            finding("future", "1", "2025-01-02T00:00:01Z"),
            finding("soon", "1", "2025-01-01T23:59:59Z"),
            finding(&long_id, "1", "2025-01-01T00:00:00Z"),
            finding("ok2", "1", "2024-12-31T00:00:00Z"),
        ]
        .join("\n"),
    );
    let r = p.process(&batch, None).await;
    let fwd = Outcome::Forwarded { events: 1 };
    assert_eq!(r.outcomes[0], fwd);
    match &r.outcomes[1] {
        Outcome::Invalid { reason } => {
            assert!(
                reason.contains("updatedAt") && reason.contains("more than a day"),
                "{reason}"
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(r.outcomes[2], fwd, "less than a day ahead is fine");
    match &r.outcomes[3] {
        Outcome::Invalid { reason } => assert!(reason.contains("`id`"), "{reason}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(r.outcomes[4], fwd);
    assert_eq!((r.summary.forwarded, r.summary.invalid), (3, 2));
    assert_eq!(sink.received.lock().expect("lock").len(), 3);
    let (retryable, _) = r.outcomes[1].undone().expect("not done");
    assert!(!retryable, "an invalid finding is never retried as it is");
}

/// Issue #16, defect 3: when the store refuses a batch's claims for one item it could not
/// foresee, that finding alone is invalid; the rest of the batch is claimed and delivered.
#[tokio::test]
async fn a_claim_batch_refused_for_one_item_is_retried_without_it() {
    let store = Arc::new(LimitedStore::default());
    let sink = Arc::new(FakeSink::default());
    let p = Pipeline::new(Some(store), sink.clone(), Format::Raw);
    let batch = same_version(&["good-1", "poison", "good-2"]);
    let r = p.process(&batch, None).await;
    let fwd = Outcome::Forwarded { events: 1 };
    assert_eq!(r.outcomes[0], fwd);
    assert!(
        matches!(&r.outcomes[1], Outcome::Invalid { reason } if reason.contains("ValidationException")),
        "{:?}",
        r.outcomes[1]
    );
    assert_eq!(r.outcomes[2], fwd);
    assert_eq!((r.summary.forwarded, r.summary.invalid), (2, 1));
    assert_eq!(sink.received.lock().expect("lock").len(), 2);
}

/// A commit the store refuses because another sender claimed the version after our lease ran
/// out is counted as `stale_owner`, never retried as a failure: the events were delivered.
#[tokio::test]
async fn a_commit_refused_for_a_stale_owner_is_counted_not_failed() {
    let store = Arc::new(MemStore {
        stale_owner_of: Some("f2".into()),
        ..MemStore::default()
    });
    let sink = Arc::new(FakeSink::default());
    let p = pipeline(store.clone(), sink.clone());
    let r = p.process(&same_version(&["f1", "f2"]), None).await;
    assert_eq!(
        r.outcomes,
        vec![
            Outcome::Forwarded { events: 1 },
            Outcome::Forwarded { events: 1 }
        ]
    );
    assert_eq!((r.summary.stale_owner, r.summary.failed), (1, 0));
    let committed = store.committed.lock().expect("lock").len();
    assert_eq!(committed, 1, "only f1's commit was applied");
}

/// A copy of a version this batch sends is claimed only after the holder's commit, so the
/// store answers (and counts) what it finally is: a duplicate of the delivered version, or
/// stale behind the newer one delivered.
#[tokio::test]
async fn copies_are_claimed_after_their_holder_is_recorded() {
    let store = Arc::new(MemStore::default());
    let sink = Arc::new(FakeSink::default());
    let p = pipeline(store.clone(), sink.clone());
    let mut batch = findings(&finding("f1", "1", "2025-01-01T00:00:02Z"));
    batch.extend(findings(&finding("f1", "1", "2025-01-01T00:00:01Z")));
    batch.extend(findings(&finding("f1", "1", "2025-01-01T00:00:02Z")));
    let r = p.process(&batch, None).await;
    let newest = batch[0].updated_at;
    assert_eq!(
        r.outcomes,
        vec![
            Outcome::Forwarded { events: 1 },
            Outcome::Stale { newest },
            Outcome::Duplicate,
        ]
    );
    // MemStore answers InFlight while a version is pending: only claims made after the
    // commit get Stale and Duplicate from it.
    let answers = store.answers.lock().expect("lock").clone();
    assert_eq!(
        answers,
        vec![
            ClaimOutcome::New {
                owner: Owner(u128::from(newest.millis().unsigned_abs()))
            },
            ClaimOutcome::Stale { newest },
            ClaimOutcome::Duplicate,
        ]
    );
    assert_eq!(
        (r.summary.stale, r.summary.duplicates, r.summary.in_flight),
        (1, 1, 0)
    );
    assert_eq!(sink.received.lock().expect("lock").len(), 1);
}
