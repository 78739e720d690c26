//! The backfill engine against an in-memory page source (no HTTP): page order, where the
//! checkpoint lands, what holds it back, a page token loop, and a stop between pages. The same
//! guarantees over the real GuardDuty client and SQLite are `gdfwd-guardduty/tests/backfill.rs`.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use gdfwd_core::SourceError;
use gdfwd_core::backfill::{
    Backfill, BackfillConfig, CHECKPOINT_NAMESPACE, Checkpoint, Progress, RegionCounts,
};
use gdfwd_core::pipeline::Pipeline;
use gdfwd_core::source::{FindingPages, FindingQuery, SourceNames, SourcePage};
use gdfwd_model::{Format, Timestamp};
use serde_json::{Map, Value};

use common::{FakeSink, MemStore, finding};

const REGION: &str = "r1";
const PARTITION: &str = "p1";

/// One scripted page: its findings as (id, `updatedAt`), and the next token.
type Scripted = (Vec<(String, Timestamp)>, Option<String>);

/// A listing scripted by page token (`None`: the first page).
#[derive(Debug, Default)]
struct Pages {
    script: HashMap<Option<String>, Scripted>,
    /// Every `page` call: (token, from).
    calls: Mutex<Vec<(Option<String>, Timestamp)>>,
}

impl Pages {
    /// Pages `t0 → t1 → …`, each holding the given findings; the last has no next token.
    fn chain(pages: &[&[(&str, Timestamp)]]) -> Self {
        let mut script = HashMap::new();
        for (i, findings) in pages.iter().enumerate() {
            let token = (i > 0).then(|| format!("t{i}"));
            let next = (i + 1 < pages.len()).then(|| format!("t{}", i + 1));
            let findings = findings.iter().map(|(id, t)| ((*id).to_owned(), *t));
            script.insert(token, (findings.collect(), next));
        }
        Self {
            script,
            ..Self::default()
        }
    }

    fn tokens(&self) -> Vec<Option<String>> {
        let calls = self.calls.lock().expect("lock");
        calls.iter().map(|(t, _)| t.clone()).collect()
    }
}

fn json(id: &str, updated: Timestamp) -> Map<String, Value> {
    let text = finding(id, "111122223333", &updated.to_rfc3339());
    serde_json::from_str(&text).expect("a finding object")
}

#[async_trait]
impl FindingPages for Pages {
    fn names(&self) -> SourceNames {
        SourceNames {
            source: "Test",
            listing: "List",
            fetch: "Get",
            partition: "partition",
        }
    }

    fn checkpoint_key(&self, query: &FindingQuery, region: &str, partition: &str) -> String {
        format!("test/{region}/{partition}/{}", query.fingerprint())
    }

    async fn partitions(&self, _region: &str) -> Result<Vec<String>, SourceError> {
        Ok(vec![PARTITION.to_owned()])
    }

    async fn page(
        &self,
        _region: &str,
        _partition: &str,
        _query: &FindingQuery,
        from: Timestamp,
        token: Option<&str>,
    ) -> Result<SourcePage, SourceError> {
        let token = token.map(str::to_owned);
        self.calls.lock().expect("lock").push((token.clone(), from));
        let (findings, next) = self.script.get(&token).expect("a scripted token");
        Ok(SourcePage {
            listed: findings.len(),
            findings: findings.iter().map(|(id, t)| json(id, *t)).collect(),
            next_token: next.clone(),
        })
    }
}

/// Sets the stop flag once the first page is processed.
#[derive(Debug, Default)]
struct StopAfterFirstPage(Arc<AtomicBool>);

impl Progress for StopAfterFirstPage {
    fn start(&self, _: &str, _: Timestamp, _: Timestamp) {}
    fn update(&self, _: &str, _: RegionCounts, _: Option<Timestamp>) {
        self.0.store(true, Ordering::SeqCst);
    }
    fn finish(&self, _: &str, _: RegionCounts, _: Option<&str>) {}
}

fn t(s: &str) -> Timestamp {
    Timestamp::parse(s).expect("a timestamp")
}

fn query() -> FindingQuery {
    FindingQuery::new(t("2024-12-31T00:00:00Z"))
}

fn engine(pages: &Arc<Pages>, store: &Arc<MemStore>, sink: &Arc<FakeSink>) -> Backfill {
    let pipeline = Pipeline::new(Some(store.clone()), sink.clone(), Format::Raw);
    Backfill::new(
        pages.clone(),
        pipeline,
        BackfillConfig::new(query(), vec![REGION.to_owned()]),
    )
}

/// The checkpoints the run saved, in order.
fn saved_checkpoints(store: &MemStore, pages: &Pages) -> Vec<Checkpoint> {
    let key = pages.checkpoint_key(&query(), REGION, PARTITION);
    let puts = store.kv_puts.lock().expect("lock");
    puts.iter()
        .filter(|(n, k, _)| n == CHECKPOINT_NAMESPACE && *k == key)
        .map(|(_, _, v)| serde_json::from_str(v).expect("a checkpoint"))
        .collect()
}

/// `updatedAt` of the checkpoints the run saved, in order.
fn saved(store: &MemStore, pages: &Pages) -> Vec<Timestamp> {
    let checkpoints = saved_checkpoints(store, pages);
    checkpoints.iter().map(|c| c.through).collect()
}

fn committed_ids(store: &MemStore) -> Vec<String> {
    let committed = store.committed.lock().expect("lock");
    committed
        .iter()
        .map(|(k, _)| k.finding_id.clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_are_sent_in_order_and_the_checkpoint_stops_below_the_settle_margin() {
    // Updated a second ago: inside the settle margin, so it may not advance the checkpoint.
    let recent = Timestamp::now().saturating_add_millis(-1_000);
    let pages = Arc::new(Pages::chain(&[
        &[
            ("a", t("2025-01-01T00:00:01Z")),
            ("b", t("2025-01-01T00:00:02Z")),
        ],
        &[("c", t("2025-01-01T00:00:03Z")), ("d", recent)],
    ]));
    let (store, sink) = (Arc::new(MemStore::default()), Arc::new(FakeSink::default()));
    let report = engine(&pages, &store, &sink).run().await;

    assert!(report.errors().is_empty(), "{:?}", report.errors());
    assert!(!report.interrupted);
    assert_eq!((report.listed, report.fetched), (4, 4));
    assert_eq!(report.summary.forwarded, 4);
    assert_eq!(committed_ids(&store), ["a", "b", "c", "d"]);
    assert_eq!(pages.tokens(), [None, Some("t1".to_owned())]);
    let through = t("2025-01-01T00:00:03Z");
    assert_eq!(report.regions[0].checkpoint, Some(through));
    // Saved after each page, the last below the settle margin.
    let since = query().since;
    assert_eq!(
        saved_checkpoints(&store, &pages),
        [t("2025-01-01T00:00:02Z"), through].map(|through| Checkpoint {
            from: since,
            through
        })
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retryable_failure_caps_the_checkpoint_and_the_next_run_lists_it_again() {
    let failed_at = t("2025-01-01T00:00:02Z");
    let pages = Arc::new(Pages::chain(&[&[
        ("a", t("2025-01-01T00:00:01Z")),
        ("b", failed_at),
        ("c", t("2025-01-01T00:00:03Z")),
    ]]));
    let (store, sink) = (Arc::new(MemStore::default()), Arc::new(FakeSink::default()));
    sink.fail_503_at(1);
    let report = engine(&pages, &store, &sink).run().await;

    assert_eq!((report.summary.forwarded, report.summary.failed), (2, 1));
    assert_eq!(report.regions[0].checkpoint, Some(failed_at));
    assert_eq!(saved(&store, &pages), [failed_at]);
    // The next run starts at the failed version (ties included), not after the last one sent.
    let again = engine(&pages, &store, &sink).run().await;
    assert!(again.errors().is_empty(), "{:?}", again.errors());
    let calls = pages.calls.lock().expect("lock").clone();
    assert_eq!(calls.last(), Some(&(None, failed_at)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_page_token_stops_the_listing_naming_region_and_partition() {
    let mut pages = Pages::chain(&[
        &[("a", t("2025-01-01T00:00:01Z"))],
        &[("b", t("2025-01-01T00:00:02Z"))],
    ]);
    // The second page points back at itself.
    if let Some((_, next)) = pages.script.get_mut(&Some("t1".to_owned())) {
        *next = Some("t1".to_owned());
    }
    let pages = Arc::new(pages);
    let (store, sink) = (Arc::new(MemStore::default()), Arc::new(FakeSink::default()));
    let report = engine(&pages, &store, &sink).run().await;

    assert_eq!(
        report.errors(),
        [(
            REGION.to_owned(),
            "List in r1 (partition p1) returned the page token \"t1\" a second time; stopped listing to avoid a loop"
                .to_owned()
        )]
    );
    assert_eq!(pages.tokens().len(), 2, "no loop");
    // What was listed before the loop is sent and checkpointed.
    assert_eq!(committed_ids(&store), ["a", "b"]);
    assert_eq!(
        report.regions[0].checkpoint,
        Some(t("2025-01-01T00:00:02Z"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_ends_the_run_between_pages_and_reports_interrupted() {
    let pages = Arc::new(Pages::chain(&[
        &[("a", t("2025-01-01T00:00:01Z"))],
        &[("b", t("2025-01-01T00:00:02Z"))],
        &[("c", t("2025-01-01T00:00:03Z"))],
    ]));
    let (store, sink) = (Arc::new(MemStore::default()), Arc::new(FakeSink::default()));
    let flag = Arc::new(AtomicBool::new(false));
    let stop = flag.clone();
    let report = engine(&pages, &store, &sink)
        .with_progress(Arc::new(StopAfterFirstPage(flag)))
        .with_stop(Arc::new(move || stop.load(Ordering::SeqCst)))
        .run()
        .await;

    assert!(report.interrupted);
    assert!(report.errors().is_empty(), "{:?}", report.errors());
    // The page fetched ahead is not processed: its findings stay after the checkpoint.
    assert_eq!(committed_ids(&store), ["a"]);
    assert_eq!(report.listed, 1);
    assert_eq!(saved(&store, &pages), [t("2025-01-01T00:00:01Z")]);
}
