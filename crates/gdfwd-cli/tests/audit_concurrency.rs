//! The audit trail under concurrency, as users run it: several `gdfwd forward` processes on one
//! SQLite state file, one of them killed (SIGKILL) while its requests are in flight, then a run
//! that settles what the killed one left claimed. Afterwards `gdfwd audit check` finds no
//! violation, and `gdfwd audit stats` says exactly as many versions were sent as the fake
//! OpenPipeline received distinct versions (issue #20).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use gdfwd_testkit_openpipeline::{FakeOpenPipeline, Fault};

mod common;
use common::{fixtures, forward_to, gdfwd};

/// The 40-finding fixture, then an older version of its first 10 findings (late arrivals).
fn input() -> String {
    let lines: Vec<String> =
        std::fs::read_to_string(fixtures().join("generated/raw-findings-40.ndjson"))
            .expect("fixture")
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(str::to_owned)
            .collect();
    let mut out = lines.join("\n");
    for l in &lines[..10] {
        let mut v: serde_json::Value = serde_json::from_str(l).expect("json");
        v["updatedAt"] = "2026-01-01T00:00:00.000Z".into();
        out.push('\n');
        out.push_str(&v.to_string());
    }
    out.push('\n');
    out
}

fn copy_of(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write input");
    p
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

async fn wait(child: std::process::Child) -> Output {
    tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .expect("join")
        .expect("wait")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_forwards_with_a_kill_leave_an_audit_trail_without_violations() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fake = FakeOpenPipeline::start("tok").await.expect("fake");
    let ca = fake.write_ca_file(dir.path()).expect("ca");
    let text = input();
    // The first run's first request hangs long enough to kill it there: its claims stay
    // pending. The other two runs overlap it, and meet its claims (in flight elsewhere).
    fake.push_faults([Fault::Slow(Duration::from_secs(3))]);
    let lease = 5;
    let lease_arg = lease.to_string();
    let options = ["--chunk", "5", "--lease", lease_arg.as_str()];
    let spawn = |i: usize| {
        let file = copy_of(dir.path(), &format!("in-{i}.ndjson"), &text);
        common::spawn(&mut forward_to(&fake, &ca, dir.path(), &options, &file))
    };
    let killed = spawn(0);
    common::wait_until("the first run's request never came", || {
        fake.counters().requests >= 1
    })
    .await;
    let others = [spawn(1), spawn(2)];
    common::signal(&killed, "KILL");
    let out = wait(killed).await;
    assert_eq!(out.status.code(), None, "killed by a signal");
    for child in others {
        let out = wait(child).await;
        // 1: some versions were held by the killed run.
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    }
    let check = |dir: &Path| {
        let out = gdfwd(&["audit", "check", "--output", "json"], dir)
            .output()
            .expect("audit check");
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("check JSON");
        (out.status.code(), report)
    };

    // Once the lease has passed, the killed run's claims are a violation `audit check` names...
    tokio::time::sleep(Duration::from_secs(lease) + Duration::from_millis(100)).await;
    let (code, report) = check(dir.path());
    assert_eq!(code, Some(1), "{report}");
    let rules: BTreeSet<&str> = report["violations"]
        .as_array()
        .expect("violations")
        .iter()
        .map(|v| v["rule"].as_str().expect("rule"))
        .collect();
    assert_eq!(rules, BTreeSet::from(["pending_past_lease"]), "{report}");

    // ...until a run takes them over and sends them.
    let settle = copy_of(dir.path(), "settle.ndjson", &text);
    let mut run = forward_to(&fake, &ca, dir.path(), &options, &settle);
    let out = tokio::task::spawn_blocking(move || run.output())
        .await
        .expect("join")
        .expect("run");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));

    let (code, report) = check(dir.path());
    assert_eq!(code, Some(0), "{report}");
    assert_eq!(report["violations"], serde_json::json!([]), "{report}");
    assert_eq!(report["checked"], 40, "{report}");

    let stats = gdfwd(&["audit", "stats", "--output", "json"], dir.path())
        .output()
        .expect("audit stats");
    assert_eq!(stats.status.code(), Some(0), "{}", stderr(&stats));
    let rows: serde_json::Value = serde_json::from_slice(&stats.stdout).expect("stats JSON");
    let delivered: BTreeSet<(String, String)> = fake
        .events()
        .iter()
        .map(|e| {
            let d = &e.body["detail"];
            (
                d["id"].as_str().expect("id").to_owned(),
                d["updatedAt"].as_str().expect("updatedAt").to_owned(),
            )
        })
        .collect();
    assert!(delivered.len() >= 40, "every finding delivered");
    assert_eq!(
        rows[0]["sent"].as_u64(),
        Some(delivered.len() as u64),
        "each version the fake received is sent exactly once in the store: {rows}"
    );
    assert_eq!(rows[0]["pending"], 0, "{rows}");
}
