//! `gdfwd backfill` as a user runs it: the built binary reading a fake GuardDuty (REST JSON on
//! 127.0.0.1) and sending to the fake OpenPipeline, with the SQLite store. Checks the global rate
//! limit as Dynatrace would observe it, exactly-once delivery, re-runs, and a clean SIGINT stop.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use gdfwd_model::Timestamp;
use gdfwd_testkit_guardduty::fixtures::{GenSpec, accounts, generate};
use gdfwd_testkit_guardduty::{FakeGuardDuty, TEST_ACCESS_KEY_ID, TEST_SECRET_ACCESS_KEY};
use gdfwd_testkit_openpipeline::{FakeOpenPipeline, Fault};

mod common;

const TOKEN: &str = "backfill-test-token";

struct Env {
    dir: tempfile::TempDir,
    gd: FakeGuardDuty,
    op: FakeOpenPipeline,
    ca: std::path::PathBuf,
}

async fn setup(count: usize) -> Env {
    setup_with(count, |_| {}).await.0
}

/// A fake GuardDuty holding `count` generated findings (`spec` adjusted by `adjust`), returned too.
async fn setup_with(count: usize, adjust: impl Fn(&mut GenSpec)) -> (Env, Vec<serde_json::Value>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let gd = FakeGuardDuty::start().await.expect("fake guardduty");
    let start = Timestamp::now().saturating_add_millis(-2 * 86_400_000);
    let mut spec = GenSpec::new(count, &["us-east-1", "eu-west-1"], accounts(5), start);
    adjust(&mut spec);
    let findings = generate(&spec);
    gd.put_findings(findings.clone()).expect("put findings");
    let op = FakeOpenPipeline::start(TOKEN)
        .await
        .expect("fake openpipeline");
    let ca = op.write_ca_file(dir.path()).expect("ca");
    (Env { dir, gd, op, ca }, findings)
}

fn backfill(env: &Env, extra: &[&str]) -> Command {
    let store = env.dir.path().join("state.db");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_gdfwd"));
    cmd.args([
        "backfill",
        "--since",
        "7d",
        "--regions",
        "us-east-1,eu-west-1",
        "--no-enrich",
        "--quiet",
    ])
    .args([
        "--endpoint",
        &env.op.endpoint(),
        "--ca-file",
        env.ca.to_str().expect("utf8"),
    ])
    .args(["--store", &format!("sqlite:{}", store.display())])
    .args(["--max-api-calls-per-second", "0"])
    .args(extra)
    .env("AWS_ENDPOINT_URL_GUARDDUTY", env.gd.endpoint())
    .env("AWS_ACCESS_KEY_ID", TEST_ACCESS_KEY_ID)
    .env("AWS_SECRET_ACCESS_KEY", TEST_SECRET_ACCESS_KEY)
    .env_remove("AWS_SESSION_TOKEN")
    .env("AWS_REGION", "us-east-1")
    .env("DT_API_TOKEN", TOKEN)
    .env_remove("AWS_ENDPOINT_URL")
    .env_remove("AWS_PROFILE")
    .env_remove("GDFWD_STORE")
    .env_remove("DYNATRACE_OPENPIPELINE_SECURITY_ENDPOINT")
    .stdin(Stdio::null());
    cmd
}

async fn run(mut cmd: Command) -> Output {
    tokio::task::spawn_blocking(move || cmd.output())
        .await
        .expect("join")
        .expect("run gdfwd")
}

fn summary(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).expect("summary file"))
        .expect("summary JSON")
}

fn delivered_once(op: &FakeOpenPipeline) -> usize {
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for id in op.event_ids() {
        *counts.entry(id).or_default() += 1;
    }
    let twice: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "delivered more than once: {twice:?}");
    counts.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limited_backfill_delivers_everything_once_and_a_rerun_sends_nothing() {
    let env = setup(600).await;
    let rate = 100u64;
    let sum = env.dir.path().join("s1.json");
    let out = run(backfill(
        &env,
        &[
            "--max-events-per-second",
            "100",
            "--max-batch-events",
            "20",
            "--max-in-flight",
            "2",
            "--summary",
            sum.to_str().expect("utf8"),
        ],
    ))
    .await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let s = summary(&sum);
    let events = s["events"]
        .as_u64()
        .or_else(|| s["summary"]["events"].as_u64())
        .expect("events in summary");
    assert_eq!(delivered_once(&env.op) as u64, events, "{s}");
    assert!(events >= 600, "{s}");

    // The limit as Dynatrace sees it, counted from the fake's arrival log (every request, so a
    // resend counts again): in any 3 s at most three seconds' worth plus the burst (one batch of
    // 20), plus a quarter second's worth for arrival jitter (the limiter admits a batch when it
    // leaves; the first batches also wait for their TLS handshakes, and a loaded machine delays
    // arrivals, so they bunch up). A window of several seconds keeps that jitter small against
    // the budget; 600 events sent unlimited, or at twice the rate, would exceed it. How close
    // backfill gets to the limit is for the sender benchmark (bench/sender), not a timed
    // assertion.
    let burst = 20;
    let peak = env.op.max_sent_in_window(Duration::from_secs(3));
    assert!(
        peak <= 3 * rate + burst + rate / 4,
        "peak {peak} events in 3 s at a limit of {rate}/s with a burst of {burst}"
    );
    let in_flight = env.op.max_concurrent_requests();
    assert!(
        in_flight <= 2,
        "{in_flight} requests in flight at --max-in-flight 2"
    );

    let before = env.op.counters().requests;
    let sum2 = env.dir.path().join("s2.json");
    let out = run(backfill(&env, &["--summary", sum2.to_str().expect("utf8")])).await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        env.op.counters().requests,
        before,
        "the re-run sent nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_mid_backfill_exits_130_and_the_rerun_completes_exactly_once() {
    let env = setup(300).await;
    // Three batches are accepted, then every answer is slow: the interrupt comes after some
    // batches were accepted, with one in flight.
    env.op.push_faults(
        std::iter::repeat_n(Fault::Pass, 3)
            .chain((0..400).map(|_| Fault::Slow(Duration::from_millis(200)))),
    );
    let mut cmd = backfill(&env, &["--max-batch-events", "10", "--max-in-flight", "1"]);
    let child = common::spawn(&mut cmd);
    common::wait_until("three batches accepted and a fourth sent", || {
        env.op.event_ids().len() >= 30 && env.op.counters().requests > 3
    })
    .await;
    let out = common::interrupt_and_wait(child).await;
    assert_eq!(
        out.status.code(),
        Some(130),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let partial = delivered_once(&env.op);
    assert!(
        (30..300).contains(&partial),
        "interrupted after three batches, before the end ({partial} delivered)"
    );

    env.op.clear_faults();
    let out = run(backfill(&env, &[])).await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A finding whose events straddle the batch that was on the wire when the run stopped was
    // partly accepted and is sent again whole by the re-run, with the same event ids (at least
    // once, never lost); every other event arrives exactly once.
    let by_finding: Vec<Vec<String>> = env
        .gd
        .findings()
        .iter()
        .filter_map(
            |f| match gdfwd_model::parse_value(f.clone()).into_iter().next() {
                Some(Ok(gdfwd_model::Item::Finding(f))) => Some(
                    gdfwd_model::map_finding(
                        &f,
                        gdfwd_model::Format::Raw,
                        &gdfwd_model::Enrichment::default(),
                    )
                    .into_iter()
                    .map(|e| e.id)
                    .collect(),
                ),
                _ => None,
            },
        )
        .collect();
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for id in env.op.event_ids() {
        *counts.entry(id).or_default() += 1;
    }
    let resent: Vec<&Vec<String>> = by_finding
        .iter()
        .filter(|ids| ids.iter().any(|id| counts.get(id).is_some_and(|n| *n > 1)))
        .collect();
    assert!(
        resent.iter().all(|ids| ids.len() > 1),
        "only a finding of several events, partly accepted when the run stopped, is sent again: {resent:?}"
    );
    assert!(
        resent.len() <= 1,
        "at most the one straddling finding: {resent:?}"
    );
    let expected: usize = by_finding.iter().map(Vec::len).sum();
    assert_eq!(counts.len(), expected, "every event of every finding");
}

/// The filter flags on backfill: what GuardDuty's criteria can say is asked of it (archived
/// findings, the severity floor, the excluded account), the rest is dropped by the pipeline and
/// counted as filtered; either way only what the filter keeps arrives, and a re-run with the
/// same flags resumes (same checkpoint) and sends nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filter_flags_select_what_backfill_sends_and_count_what_they_drop() {
    let (env, findings) = setup_with(240, |spec| spec.archived_every = Some(4)).await;
    let excluded_account = findings[0]["accountId"]
        .as_str()
        .expect("account")
        .to_owned();
    let prefix = findings[1]["type"]
        .as_str()
        .expect("type")
        .split(':')
        .next()
        .expect("prefix")
        .to_owned();
    let glob = format!("{prefix}:*");
    let fetched = |f: &&serde_json::Value| {
        f["service"]["archived"] == false
            && f["severity"].as_f64().expect("severity") >= 4.0
            && f["accountId"] != excluded_account.as_str()
    };
    let want: std::collections::BTreeSet<String> = findings
        .iter()
        .filter(fetched)
        .filter(|f| {
            f["type"]
                .as_str()
                .expect("type")
                .starts_with(&format!("{prefix}:"))
        })
        .map(|f| f["id"].as_str().expect("id").to_owned())
        .collect();
    let listed = findings.iter().filter(fetched).count() as u64;
    assert!(!want.is_empty() && (want.len() as u64) < listed);
    let sum = env.dir.path().join("s.json");
    let flags = [
        "--min-severity",
        "4",
        "--exclude-account",
        excluded_account.as_str(),
        "--include-type",
        glob.as_str(),
        "--summary",
        sum.to_str().expect("utf8"),
    ];
    let out = run(backfill(&env, &flags)).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let delivered: std::collections::BTreeSet<String> = env
        .op
        .events()
        .iter()
        .filter_map(|e| e.body["detail"]["id"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(delivered, want);
    let s = summary(&sum);
    assert_eq!(
        s["fetched"], listed,
        "the criteria narrowed the listing: {s}"
    );
    assert_eq!(s["summary"]["forwarded"], want.len() as u64, "{s}");
    let filtered = listed - want.len() as u64;
    assert_eq!(s["summary"]["filtered"], filtered, "{s}");
    assert!(
        stderr.contains(&format!(", filtered {filtered},")),
        "{stderr}"
    );

    let before = env.op.counters().requests;
    let out = run(backfill(&env, &flags)).await;
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        env.op.counters().requests,
        before,
        "the re-run sent nothing"
    );
    let again = summary(&sum);
    // Resumed at the checkpoint: only its own `updatedAt` is listed again (ties), per region.
    assert!(
        again["fetched"].as_u64().expect("fetched") <= 2,
        "resumed at the checkpoint: {again}"
    );
    assert_eq!(again["summary"]["forwarded"], 0, "{again}");
}
