//! Backfill against the fake GuardDuty over HTTP, with the real SQLite store: exactly once across
//! regions, accounts, ties, interruptions, kills, overlap with live forwarding and concurrent runs.

mod common;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::*;
use gdfwd_guardduty::{Backfill, BackfillConfig, BackfillReport, FindingQuery};
use gdfwd_model::FilterInput;
use gdfwd_model::{Item, parse_value};
use gdfwd_testkit_guardduty::fixtures::touch;
use rand::{Rng, SeedableRng};

async fn run(
    client: &Arc<gdfwd_guardduty::GuardDutyClient>,
    store: &Store,
    sink: &Arc<RecordingSink>,
    query: FindingQuery,
) -> BackfillReport {
    let stop_flag = sink.stop.clone();
    Backfill::new(
        client.clone(),
        pipeline(store.open(), sink.clone()),
        BackfillConfig::new(query, regions()),
    )
    .with_stop(Arc::new(move || stop_flag.load(Ordering::SeqCst)))
    .run()
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfills_5000_findings_in_3_regions_and_20_accounts_exactly_once() {
    let (fake, findings) = fake_with(5_000, 20, "bulk").await;
    let client = client(&fake, 0);
    let store = Store::new();
    let sink = Arc::new(RecordingSink::default());

    let report = run(&client, &store, &sink, query()).await;
    assert!(report.errors().is_empty(), "{:?}", report.errors());
    assert!(!report.interrupted);
    assert_eq!(report.listed, 5_000);
    assert_eq!(report.summary.forwarded, 5_000);
    assert_eq!(report.summary.failed, 0);
    assert_exactly_once(&sink, &findings);
    let accounts: std::collections::HashSet<String> = sink
        .events
        .lock()
        .expect("lock")
        .iter()
        .filter_map(|(_, b)| b["account"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(accounts.len(), 20);
    assert_eq!(report.regions.len(), 3);
    assert!(report.regions.iter().all(|r| r.checkpoint.is_some()));

    // A re-run resumes at the checkpoint: only the last tie group is listed again, and nothing
    // is sent.
    let before = sink.event_ids().len();
    let again = run(&client, &store, &sink, query()).await;
    assert!(again.errors().is_empty(), "{:?}", again.errors());
    assert_eq!(again.summary.forwarded, 0);
    assert!(again.listed < 3 * 50, "resumed, listed {}", again.listed);
    assert_eq!(sink.event_ids().len(), before);

    // --no-resume lists everything again; the store still sends nothing twice.
    let stop_flag = sink.stop.clone();
    let mut config = BackfillConfig::new(query(), regions());
    config.resume = false;
    let full = Backfill::new(client.clone(), pipeline(store.open(), sink.clone()), config)
        .with_stop(Arc::new(move || stop_flag.load(Ordering::SeqCst)))
        .run()
        .await;
    assert_eq!(full.listed, 5_000);
    assert_eq!(full.summary.duplicates, 5_000);
    assert_exactly_once(&sink, &findings);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interrupted_runs_resume_with_no_gap_and_no_duplicate() {
    let (fake, findings) = fake_with(1_500, 20, "interrupt").await;
    let client = client(&fake, 0);
    let store = Store::new();
    let sink = Arc::new(RecordingSink::default());
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);

    let mut interruptions = 0;
    for _ in 0..20 {
        let calls = sink.calls();
        *sink.cue.lock().expect("lock") = Some(Cue::Stop(calls + rng.random_range(1..=8)));
        sink.stop.store(false, Ordering::SeqCst);
        let report = run(&client, &store, &sink, query()).await;
        assert!(report.errors().is_empty(), "{:?}", report.errors());
        if !report.interrupted {
            break;
        }
        interruptions += 1;
    }
    assert!(interruptions >= 3, "only {interruptions} interruptions");
    // The last run may have been interrupted on its last page: one more clean run.
    *sink.cue.lock().expect("lock") = None;
    sink.stop.store(false, Ordering::SeqCst);
    let last = run(&client, &store, &sink, query()).await;
    assert!(!last.interrupted);
    assert_exactly_once(&sink, &findings);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_run_leaves_pending_claims_that_a_rerun_reports_then_sends_after_the_lease() {
    let (fake, findings) = fake_with(600, 5, "kill").await;
    let client = client(&fake, 0);
    let store = Store::new();
    let sink = Arc::new(RecordingSink::default());

    // The 4th send delivers, then the process "dies" before committing.
    *sink.cue.lock().expect("lock") = Some(Cue::Die(4));
    // Wait until the 4th send happened, then drop the run mid-flight (SIGKILL).
    let watch = async {
        while sink.calls() < 4 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    tokio::select! {
        r = run(&client, &store, &sink, query()) => panic!("the run should hang in its 4th send: {r:?}"),
        () = watch => {}
    }
    let died_with: std::collections::HashSet<String> = sink.event_ids().into_iter().collect();
    *sink.cue.lock().expect("lock") = None;

    // Re-run within the lease: the killed run's claims are pending, reported, not sent.
    let rerun = run(&client, &store, &sink, query()).await;
    assert!(rerun.errors().is_empty(), "{:?}", rerun.errors());
    assert!(rerun.pending.count > 0, "pending claims reported");
    let until = rerun.pending.until.expect("lease end known");
    assert!(until > store.clock.now_ts());
    // Pending: what the killed run claimed and did not commit, delivered or not (regions run
    // concurrently, so more than the one page may have been in flight).
    let missing_now = ids(&findings).difference(&sink.finding_ids()).count();
    assert!(missing_now as u64 <= rerun.pending.count);

    // After the lease, the next run sends exactly those.
    store.clock.advance(Duration::from_secs(301));
    let after = run(&client, &store, &sink, query()).await;
    assert!(after.errors().is_empty(), "{:?}", after.errors());
    assert_eq!(after.pending.count, 0);
    assert_eq!(after.summary.forwarded, rerun.pending.count);

    // Every finding arrived; the only events that arrived twice are those the killed process
    // delivered but could not commit (same deterministic ids, recognisable downstream).
    let want = ids(&findings);
    assert_eq!(sink.finding_ids(), want);
    for (id, n) in sink.id_counts() {
        if n > 1 {
            assert_eq!(n, 2, "event {id}");
            assert!(
                died_with.contains(&id),
                "event {id} twice but not in flight at the kill"
            );
        }
    }
}

trait NowTs {
    fn now_ts(&self) -> gdfwd_model::Timestamp;
}

impl NowTs for gdfwd_core::ManualClock {
    fn now_ts(&self) -> gdfwd_model::Timestamp {
        gdfwd_core::Clock::now(self)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlap_with_live_forwarding_and_a_concurrent_backfill_sends_nothing_twice() {
    let (fake, findings) = fake_with(1_200, 20, "overlap").await;
    let client = client(&fake, 0);
    let store = Store::new();
    let sink = Arc::new(RecordingSink::default());

    // The Lambda already forwarded every third finding, as EventBridge events.
    let live: Vec<gdfwd_model::Finding> = findings
        .iter()
        .step_by(3)
        .map(|f| {
            let event = serde_json::json!({
                "version": "0", "id": "00000000-0000-0000-0000-000000000000",
                "detail-type": "GuardDuty Finding", "source": "aws.guardduty",
                "account": f["accountId"], "region": f["region"], "time": f["updatedAt"],
                "resources": [], "detail": f,
            });
            match parse_value(event).remove(0) {
                Ok(Item::Finding(f)) => *f,
                other => panic!("not a finding: {other:?}"),
            }
        })
        .collect();
    let lambda = pipeline(store.open(), sink.clone());
    let r = lambda.process(&live, None).await;
    assert_eq!(r.summary.forwarded, live.len() as u64);

    // Two backfills at once, each with its own store handle (as two processes).
    let a = run(&client, &store, &sink, query());
    let b = run(&client, &store, &sink, query());
    let (ra, rb) = tokio::join!(a, b);
    assert!(ra.errors().is_empty() && rb.errors().is_empty());
    assert_eq!(
        ra.summary.forwarded + rb.summary.forwarded,
        (findings.len() - live.len()) as u64
    );
    // Pending claims of the other run were not counted as done: a last run settles them.
    let last = run(&client, &store, &sink, query()).await;
    assert_eq!(last.summary.forwarded, 0);
    assert_exactly_once(&sink, &findings);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_is_retried_and_every_finding_arrives() {
    let (fake, findings) = fake_with(400, 4, "throttle").await;
    fake.set_throttle_rate(0.3, 42);
    let client = client(&fake, 0);
    let store = Store::new();
    let sink = Arc::new(RecordingSink::default());
    let report = run(&client, &store, &sink, query()).await;
    assert!(report.errors().is_empty(), "{:?}", report.errors());
    assert!(fake.counters().throttled > 0);
    assert_eq!(report.api.throttled, fake.counters().throttled);
    assert_exactly_once(&sink, &findings);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_page_token_stops_the_listing_and_a_rerun_completes() {
    let (fake, findings) = fake_with(900, 4, "loop").await;
    fake.repeat_page_token_at(4);
    let client = client(&fake, 0);
    let store = Store::new();
    let sink = Arc::new(RecordingSink::default());
    let report = run(&client, &store, &sink, query()).await;
    let errors = report.errors();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].1.contains("a second time"), "{}", errors[0].1);
    assert!(fake.counters().list_findings < 60, "no loop");
    // Everything listed before the loop was committed; the re-run continues and completes.
    let again = run(&client, &store, &sink, query()).await;
    assert!(again.errors().is_empty(), "{:?}", again.errors());
    assert_exactly_once(&sink, &findings);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_sends_hold_the_checkpoint_and_are_sent_by_the_next_run() {
    let (fake, findings) = fake_with(450, 3, "fail").await;
    let client = client(&fake, 0);
    let store = Store::new();
    let sink = Arc::new(RecordingSink::default());
    let some: Vec<String> = findings
        .iter()
        .skip(40)
        .step_by(97)
        .filter_map(|f| f["id"].as_str().map(str::to_owned))
        .collect();
    sink.fail_findings
        .lock()
        .expect("lock")
        .extend(some.clone());
    let report = run(&client, &store, &sink, query()).await;
    assert_eq!(report.summary.failed, some.len() as u64);
    assert_eq!(
        report.summary.forwarded,
        (findings.len() - some.len()) as u64
    );
    sink.fail_findings.lock().expect("lock").clear();
    let again = run(&client, &store, &sink, query()).await;
    assert_eq!(again.summary.forwarded, some.len() as u64);
    assert_exactly_once(&sink, &findings);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finding_updated_after_the_run_is_sent_again_as_its_new_version() {
    let (fake, findings) = fake_with(150, 3, "update").await;
    let client = client(&fake, 0);
    let store = Store::new();
    let sink = Arc::new(RecordingSink::default());
    run(&client, &store, &sink, query()).await;
    let mut updated = findings[10].clone();
    touch(
        &mut updated,
        base_time().saturating_add_millis(5 * 86_400_000),
    );
    fake.put_findings([updated.clone()]).expect("update");
    let again = run(&client, &store, &sink, query()).await;
    assert_eq!(again.summary.forwarded, 1);
    let events = sink.events.lock().expect("lock");
    let last = &events.last().expect("an event").1;
    assert_eq!(last["detail"]["updatedAt"], updated["updatedAt"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_select_accounts_severity_and_archived() {
    let fake = gdfwd_testkit_guardduty::FakeGuardDuty::start()
        .await
        .expect("fake");
    let mut spec = gdfwd_testkit_guardduty::fixtures::GenSpec::new(
        300,
        &REGIONS,
        gdfwd_testkit_guardduty::fixtures::accounts(6),
        base_time(),
    );
    spec.archived_every = Some(5);
    spec.seed = "filters".to_owned();
    let findings = gdfwd_testkit_guardduty::fixtures::generate(&spec);
    fake.put_findings(findings.clone()).expect("load");
    let client = client(&fake, 0);

    let account = findings[0]["accountId"].as_str().expect("id").to_owned();
    // Not expressible in GuardDuty's criteria: fetched, then dropped by the pipeline's filter.
    let excluded_type = findings[0]["type"].as_str().expect("type").to_owned();
    let mut q = query();
    let set = |q: &mut FindingQuery, input: FilterInput, value: &str| {
        q.filter.apply(input, value, input.name()).expect("valid");
    };
    set(&mut q, FilterInput::IncludeAccount, &account);
    set(&mut q, FilterInput::MinSeverity, "5");
    set(&mut q, FilterInput::ExcludeType, &excluded_type);
    let selected = |f: &&serde_json::Value, archived: bool| {
        f["accountId"] == account.as_str()
            && f["severity"].as_f64().is_some_and(|s| s >= 5.0)
            && (archived || f["service"]["archived"] == false)
    };
    let want: std::collections::HashSet<String> = findings
        .iter()
        .filter(|f| selected(f, false) && f["type"] != excluded_type.as_str())
        .filter_map(|f| f["id"].as_str().map(str::to_owned))
        .collect();
    let of_type = findings
        .iter()
        .filter(|f| selected(f, false) && f["type"] == excluded_type.as_str())
        .count() as u64;
    assert!(!want.is_empty() && of_type > 0);
    let store = Store::new();
    let sink = Arc::new(RecordingSink::default());
    let report = run(&client, &store, &sink, q.clone()).await;
    assert!(report.errors().is_empty(), "{:?}", report.errors());
    assert_eq!(sink.finding_ids(), want);
    // The criteria narrowed the listing; the pipeline dropped the type and counted it.
    assert_eq!(report.fetched, want.len() as u64 + of_type);
    assert_eq!(report.summary.filtered, of_type);

    // Archived ones too with archived=include.
    set(&mut q, FilterInput::Archived, "include");
    let with_archived = findings
        .iter()
        .filter(|f| selected(f, true) && f["type"] != excluded_type.as_str())
        .count();
    let store = Store::new();
    let sink = Arc::new(RecordingSink::default());
    run(&client, &store, &sink, q).await;
    assert_eq!(sink.finding_ids().len(), with_archived);
    assert!(with_archived > want.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guardduty_calls_stay_under_the_per_region_limit() {
    let (fake, findings) = fake_with(450, 3, "ratelimit").await;
    let client = client(&fake, 5);
    let store = Store::new();
    let sink = Arc::new(RecordingSink::default());
    let report = run(&client, &store, &sink, query()).await;
    assert!(report.errors().is_empty(), "{:?}", report.errors());
    for region in REGIONS {
        let max = fake.max_calls_in_window(region, Duration::from_secs(1));
        // Evenly spaced (burst 1): at most 5 intervals fit in a second, so 6 calls.
        assert!(max <= 6, "{region}: {max} calls within one second");
    }
    assert_exactly_once(&sink, &findings);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_payload_detail_is_the_api_json() {
    let (fake, findings) = fake_with(120, 3, "raw").await;
    let client = client(&fake, 0);
    let store = Store::new();
    let sink = Arc::new(RecordingSink::default());
    run(&client, &store, &sink, query()).await;
    let by_id: std::collections::HashMap<&str, &serde_json::Value> = findings
        .iter()
        .filter_map(|f| f["id"].as_str().map(|id| (id, f)))
        .collect();
    let events = sink.events.lock().expect("lock");
    let mut whole = 0;
    for (_, body) in events.iter() {
        let id = body["detail"]["id"].as_str().expect("detail.id");
        let api = by_id[id];
        // Findings about one object are sent whole: detail must be the API's JSON, unchanged.
        let split = events
            .iter()
            .filter(|(_, b)| b["detail"]["id"] == body["detail"]["id"])
            .count();
        if split == 1 {
            assert_eq!(&body["detail"], api, "finding {id}");
            whole += 1;
        }
        assert_eq!(body["source"], "aws.guardduty");
        assert_eq!(body["detail-type"], "GuardDuty Finding");
        assert_eq!(body["account"], api["accountId"]);
        assert_eq!(body["region"], api["region"]);
    }
    assert!(whole > 100, "{whole}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_enabled_regions_come_from_account_list_regions() {
    let (fake, _) = fake_with(30, 2, "regions").await;
    let client = client(&fake, 0);
    let mut want = regions();
    want.sort();
    assert_eq!(client.list_enabled_regions().await.expect("regions"), want);
}
