//! `audit gaps` and `backfill --only-gaps` against the fake GuardDuty and a real SQLite store.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use gdfwd_core::pipeline::claim_request;
use gdfwd_guardduty::{Backfill, BackfillConfig, GapReason, find_gaps, send_gaps};
use gdfwd_model::{Item, parse_value};
use gdfwd_testkit_guardduty::fixtures::touch;

fn finding(v: &serde_json::Value) -> gdfwd_model::Finding {
    match parse_value(v.clone()).remove(0) {
        Ok(Item::Finding(f)) => *f,
        other => panic!("not a finding: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gaps_name_each_unsent_version_with_its_reason_and_only_gaps_sends_exactly_those() {
    let (fake, findings) = fake_with(300, 6, "gaps").await;
    let client = client(&fake, 0);
    let store = Store::new();
    let sink = Arc::new(RecordingSink::default());

    // Backfill only the first account's findings; two of them fail.
    let account0 = findings[0]["accountId"]
        .as_str()
        .expect("account")
        .to_owned();
    let mine: Vec<&serde_json::Value> = findings
        .iter()
        .filter(|f| f["accountId"] == account0.as_str())
        .collect();
    let failing = mine[1]["id"].as_str().expect("id").to_owned();
    sink.fail_findings
        .lock()
        .expect("lock")
        .insert(failing.clone());
    let mut q = query();
    q.filter
        .apply(
            gdfwd_model::FilterInput::IncludeAccount,
            &account0,
            "--include-account",
        )
        .expect("account id");
    let report = Backfill::new(
        client.clone(),
        pipeline(store.open(), sink.clone()),
        BackfillConfig::new(q, regions()),
    )
    .run()
    .await;
    assert_eq!(report.summary.failed, 1);
    sink.fail_findings.lock().expect("lock").clear();

    // One finding of another account is claimed by a "Lambda" that never commits.
    let pending = finding(
        findings
            .iter()
            .find(|f| f["accountId"] != account0.as_str())
            .expect("another account"),
    );
    let s = store.open();
    s.claim(&claim_request(&pending), Duration::from_secs(300))
        .await
        .expect("claim");
    // One sent finding gets a newer version in GuardDuty.
    let mut newer = (*mine[2]).clone();
    touch(&mut newer, base_time().saturating_add_millis(86_400_000));
    fake.put_findings([newer.clone()]).expect("update");

    let stop: gdfwd_guardduty::StopFn = Arc::new(|| false);
    let gaps = find_gaps(
        client.clone(),
        store.open(),
        &query(),
        &regions(),
        3,
        stop.clone(),
    )
    .await;
    assert!(gaps.errors.is_empty(), "{:?}", gaps.errors);
    assert_eq!(gaps.checked, 300);
    let by_id: HashMap<&str, GapReason> = gaps
        .gaps
        .iter()
        .map(|g| (g.finding.id.as_str(), g.reason))
        .collect();
    assert_eq!(by_id[failing.as_str()], GapReason::Failed);
    assert_eq!(by_id[pending.id.as_str()], GapReason::Pending);
    assert_eq!(
        by_id[newer["id"].as_str().expect("id")],
        GapReason::VersionNeverSeen
    );
    let never = gaps
        .gaps
        .iter()
        .filter(|g| g.reason == GapReason::NeverSeen)
        .count();
    assert_eq!(never, 300 - mine.len() - 1);
    assert_eq!(gaps.covered as usize, mine.len() - 2);
    assert_eq!(gaps.gaps.len(), 300 - gaps.covered as usize);

    // How they are printed (table, CSV, JSON) is tested with the CLI's renderer
    // (gdfwd-cli/src/render/gaps.rs).

    // --only-gaps sends those (the pending one stays with its live claim), and then the only
    // gap left is the pending one.
    let before = sink.event_ids().len();
    let (summary, interrupted) = send_gaps(
        &pipeline(store.open(), sink.clone()),
        &gaps.gaps,
        stop.clone(),
    )
    .await;
    assert!(!interrupted);
    assert_eq!(summary.forwarded as usize, gaps.gaps.len() - 1);
    assert_eq!(summary.duplicates, 0);
    assert_eq!(
        summary.in_flight, 1,
        "the pending one is in flight elsewhere"
    );
    assert!(sink.event_ids().len() > before);
    let after = find_gaps(client, store.open(), &query(), &regions(), 3, stop).await;
    assert_eq!(after.gaps.len(), 1);
    assert_eq!(after.gaps[0].reason, GapReason::Pending);
    let dup: Vec<_> = sink
        .id_counts()
        .into_iter()
        .filter(|(_, n)| *n > 1)
        .collect();
    assert!(dup.is_empty(), "{dup:?}");
}
