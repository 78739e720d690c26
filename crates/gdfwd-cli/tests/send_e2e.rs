//! End to end: the built `gdfwd` binary forwarding fixture findings to the fake OpenPipeline
//! endpoint over HTTPS, with a SQLite dedup store.
//!
//! - under 20 % injected faults every event arrives exactly once, and a second run sends nothing;
//! - with the endpoint down for a whole run nothing is committed, and a later run delivers all;
//! - the token never appears on stderr, even with RUST_LOG=trace.
//!
//! The fake runs in this test process; the binary is a child process (blocking calls go through
//! `spawn_blocking` so the fake keeps serving meanwhile).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use gdfwd_testkit_openpipeline::{FakeOpenPipeline, Fault};

const TOKEN: &str = "dt0c01.E2ETEST.TOKENTHATMUSTNOTLEAK";
const TOKEN_PART: &str = "TOKENTHATMUSTNOTLEAK";

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/guardduty/generated/raw-findings-40.ndjson")
}

/// Runs `gdfwd forward` against `endpoint` with the given store and extra args.
async fn forward(
    endpoint: &str,
    ca: &Path,
    store: &Path,
    dir: &Path,
    extra: &[&str],
) -> (Output, serde_json::Value) {
    let summary = dir.join(format!("summary-{}.json", rand_suffix()));
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_gdfwd"));
    // `--archived include`: the fixtures hold archived findings (dropped by default); these
    // tests are about delivery.
    cmd.arg("forward")
        .args(["--archived", "include"])
        .arg("--endpoint")
        .arg(endpoint)
        .arg("--ca-file")
        .arg(ca)
        .arg("--store")
        .arg(format!("sqlite:{}", store.display()))
        .arg("--no-enrich")
        .arg("--summary")
        .arg(&summary)
        .args(["--max-batch-events", "2", "--request-timeout", "1s"])
        .args(extra)
        .arg(fixture())
        .env("DT_API_TOKEN", TOKEN)
        .env("RUST_LOG", "trace")
        .env_remove("AWS_SECRET_ARN")
        .env_remove("DYNATRACE_OPENPIPELINE_SECURITY_ENDPOINT")
        .env_remove("GDFWD_CA_FILE");
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .expect("join")
        .expect("run gdfwd");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains(TOKEN_PART), "token on stderr");
    let summary: serde_json::Value = std::fs::read_to_string(&summary)
        .ok()
        .and_then(|s| serde_json::from_str(&s).ok())
        .unwrap_or_else(|| {
            panic!(
                "no summary; status {:?}, stderr tail:\n{}",
                out.status,
                tail(&stderr)
            )
        });
    (out, summary)
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

fn tail(s: &str) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

fn counts(fake: &FakeOpenPipeline) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for id in fake.event_ids() {
        *m.entry(id).or_insert(0) += 1;
    }
    m
}

fn n(summary: &serde_json::Value, key: &str) -> u64 {
    summary[key]
        .as_u64()
        .unwrap_or_else(|| panic!("summary has no {key}: {summary}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_once_under_faults_and_nothing_on_the_second_run() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fake = FakeOpenPipeline::start(TOKEN).await.expect("fake");
    let ca = fake.write_ca_file(dir.path()).expect("ca");
    let store = dir.path().join("state.db");
    fake.set_random_faults(
        0.2,
        7,
        vec![
            Fault::TooManyRequests(None),
            Fault::Status(500),
            Fault::Status(503),
            Fault::Drop,
            Fault::Slow(Duration::from_millis(1500)),
        ],
    );

    let (out, summary) = forward(&fake.endpoint(), &ca, &store, dir.path(), &[]).await;
    assert!(
        out.status.success(),
        "{summary}\n{}",
        tail(&String::from_utf8_lossy(&out.stderr))
    );
    assert_eq!(n(&summary, "forwarded"), 40);
    assert_eq!(n(&summary, "failed"), 0);
    let got = counts(&fake);
    assert_eq!(
        got.len() as u64,
        n(&summary, "events"),
        "distinct events = events reported"
    );
    assert!(
        got.values().all(|&c| c == 1),
        "an event arrived twice: {got:?}"
    );
    assert!(fake.counters().faults > 0);

    let before = fake.counters().requests;
    let (out, summary) = forward(&fake.endpoint(), &ca, &store, dir.path(), &[]).await;
    assert!(out.status.success());
    assert_eq!(n(&summary, "duplicates"), 40);
    assert_eq!(n(&summary, "forwarded"), 0);
    assert_eq!(
        fake.counters().requests,
        before,
        "the second run sent nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoint_down_commits_nothing_and_a_later_run_delivers_everything() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("state.db");
    let fake = FakeOpenPipeline::start(TOKEN).await.expect("fake");
    let ca = fake.write_ca_file(dir.path()).expect("ca");
    let down = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        format!(
            "https://localhost:{}/platform/ingest/v1/security.events",
            l.local_addr().expect("addr").port()
        )
    };

    let (out, summary) = forward(&down, &ca, &store, dir.path(), &["--deadline", "3s"]).await;
    assert_eq!(out.status.code(), Some(1), "{summary}");
    assert_eq!(n(&summary, "forwarded"), 0);
    assert_eq!(n(&summary, "failed"), 40);
    // One cause fails every finding: a few are named per reason, the rest counted, none lost.
    let stderr = String::from_utf8_lossy(&out.stderr);
    let named = stderr.lines().filter(|l| l.starts_with("failed: ")).count() as u64;
    let counted: u64 = stderr
        .lines()
        .filter_map(|l| l.strip_prefix("... "))
        .filter_map(|l| l.split_once(" more finding(s) not delivered for the same reason: "))
        .map(|(n, _)| n.parse::<u64>().expect("count"))
        .sum();
    assert!(
        named < 40,
        "every failure on its own line:\n{}",
        tail(&stderr)
    );
    assert_eq!(named + counted, 40, "{}", tail(&stderr));

    let (out, summary) = forward(&fake.endpoint(), &ca, &store, dir.path(), &[]).await;
    assert!(out.status.success(), "{summary}");
    assert_eq!(n(&summary, "forwarded"), 40);
    let got = counts(&fake);
    assert_eq!(got.len() as u64, n(&summary, "events"));
    assert!(got.values().all(|&c| c == 1));
}
