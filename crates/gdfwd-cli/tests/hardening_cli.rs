//! `gdfwd forward` facing what #16 found: the embedded sample is clean, undelivered findings win
//! the exit status over invalid input, text from findings and file names cannot drive the
//! terminal, and secrets in the endpoint or a broken token are refused without being shown.

use std::path::Path;
use std::process::Output;

use gdfwd_testkit_openpipeline::FakeOpenPipeline;

mod common;
use common::{fixtures, gdfwd};

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The summary line without its duration, which varies.
fn without_duration(line: &str) -> &str {
    line.rsplit_once(" (").map_or(line, |(head, _)| head)
}

/// One valid finding (the first fixture line) as JSON text, with `id` replaced.
fn finding_with_id(id: &str) -> String {
    let text = std::fs::read_to_string(fixtures().join("generated/raw-findings-40.ndjson"))
        .expect("fixture");
    let mut f: serde_json::Value =
        serde_json::from_str(text.lines().next().expect("a line")).expect("json");
    f["id"] = serde_json::json!(id);
    f.to_string()
}

/// `gdfwd forward FILE` to `fake` (expecting token `tok`) with `token` as DT_API_TOKEN.
fn forward_to(fake: &FakeOpenPipeline, dir: &Path, token: &str, file: &Path) -> Output {
    let ca = fake.write_ca_file(dir).expect("CA file");
    common::forward_to(fake, &ca, dir, &[], file)
        .env("DT_API_TOKEN", token)
        .output()
        .expect("run gdfwd")
}

/// The README's first command exits 0 on the clean sample and prints exactly the summary the
/// README shows; `--sample-invalid` shows the invalid records and exits 2.
#[test]
fn the_readme_sample_run_is_clean_and_prints_the_readme_summary() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = gdfwd(&["forward", "--sample"], dir.path())
        .output()
        .expect("run");
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(!err.contains("invalid:"), "{err}");
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md"))
            .expect("README");
    let shown = readme
        .lines()
        .find(|l| l.starts_with("gdfwd forward: received"))
        .expect("the README shows a summary line");
    let printed = err
        .lines()
        .find(|l| l.starts_with("gdfwd forward: received"))
        .expect("a summary line");
    assert_eq!(without_duration(printed), without_duration(shown));
    assert!(
        printed.contains("duplicates 14")
            && printed.contains("stale 17")
            && printed.contains("filtered 33"),
        "dedup and the default filter at work: {printed}"
    );

    let out = gdfwd(&["forward", "--sample-invalid"], dir.path())
        .output()
        .expect("run");
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert_eq!(
        err.matches("invalid: <sample-invalid>:").count(),
        3,
        "{err}"
    );
    assert!(err.contains("finding has no `accountId` field"), "{err}");
}

/// A run with an invalid record and a finding that was not delivered (the token is refused)
/// exits 1, not 2: the undelivered finding must not hide behind the bad input.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undelivered_findings_win_the_exit_status_over_invalid_records() {
    let fake = FakeOpenPipeline::start("tok").await.expect("fake");
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("mixed.ndjson");
    std::fs::write(&file, format!("{}\n{{not json\n", finding_with_id("f-1"))).expect("write");
    let out = forward_to(&fake, dir.path(), "not-the-token", &file);
    let err = stderr(&out);
    assert!(
        err.contains("invalid 1") && err.contains("failed 1"),
        "{err}"
    );
    assert_eq!(out.status.code(), Some(1), "{err}");
}

/// Control characters in a finding id and in a file name are escaped in every line that shows
/// them (invalid, failed, the error line), as the audit tables escape them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_characters_from_findings_and_file_names_are_escaped() {
    let fake = FakeOpenPipeline::start("tok").await.expect("fake");
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("evil\u{1b}[2J.ndjson");
    let mut missing: serde_json::Value =
        serde_json::from_str(&finding_with_id("bad\u{1b}]0;pwned\u{7}")).expect("json");
    missing.as_object_mut().expect("object").remove("accountId");
    std::fs::write(
        &file,
        format!("{}\n{missing}\n", finding_with_id("id\u{1b}[31mred\r")),
    )
    .expect("write");
    let out = forward_to(&fake, dir.path(), "not-the-token", &file);
    let err = stderr(&out);
    assert!(
        err.contains("invalid: ") && err.contains("failed: "),
        "{err}"
    );
    assert!(
        !err.contains(['\u{1b}', '\u{7}', '\r']),
        "raw control characters reached the terminal: {err:?}"
    );
    assert!(err.contains("evil\\u{1b}[2J.ndjson"), "{err}");

    // A file that cannot be read: the error line names it escaped too.
    let missing_file = dir.path().join("gone\u{1b}[2J.ndjson");
    let out = forward_to(&fake, dir.path(), "tok", &missing_file);
    let err = stderr(&out);
    assert!(err.contains("gone\\u{1b}[2J.ndjson"), "{err}");
    assert!(!err.contains('\u{1b}'), "{err:?}");
}

/// A token in the endpoint's query string, credentials in it, or a token given as the endpoint:
/// refused before anything is read or claimed, exit 1, in a dry run too, and neither stderr nor
/// the store ever holds the secret.
#[test]
fn secrets_in_the_endpoint_are_refused_and_never_shown_or_stored() {
    let dir = tempfile::tempdir().expect("tempdir");
    let endpoints = [
        "https://127.0.0.1:9/platform/ingest/v1/security.events?api-token=dt0c01.URLSECRET",
        "https://gdfwd:URLSECRET@127.0.0.1:9/platform/ingest/v1/security.events",
        "dt0c01.ABCDEFGHIJKLMNOPQRSTUVWX.URLSECRET",
    ];
    for (endpoint, dry_run) in endpoints.iter().flat_map(|e| [(*e, false), (*e, true)]) {
        let mut args = vec![
            "forward",
            "--endpoint",
            endpoint,
            "--no-enrich",
            "--deadline",
            "3s",
            "--sample",
        ];
        if dry_run {
            args.push("--dry-run");
        }
        let out = gdfwd(&args, dir.path())
            .env("DT_API_TOKEN", "dt0c01.T")
            .output()
            .expect("run");
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.contains("endpoint"), "{err}");
        assert!(!err.contains("URLSECRET"), "{err}");
        let audit = gdfwd(&["audit", "list", "--output", "json"], dir.path())
            .output()
            .expect("audit");
        let shown = format!(
            "{}{}",
            String::from_utf8_lossy(&audit.stdout),
            stderr(&audit)
        );
        assert!(!shown.contains("URLSECRET"), "{shown}");
    }
}

/// DT_API_TOKEN with a line break inside: a configuration error naming the variable, exit 1,
/// nothing claimed or sent, the value never shown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_with_a_line_break_fails_the_run_naming_its_source() {
    let fake = FakeOpenPipeline::start("tok").await.expect("fake");
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("one.ndjson");
    std::fs::write(&file, finding_with_id("f-1") + "\n").expect("write");
    let out = forward_to(&fake, dir.path(), "tok\nTOKENSECRETPART", &file);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("DT_API_TOKEN") && err.contains("line break"),
        "{err}"
    );
    assert!(!err.contains("TOKENSECRETPART"), "{err}");
    assert_eq!(fake.counters().requests, 0, "nothing sent");
    let audit = gdfwd(&["audit", "list", "--output", "json"], dir.path())
        .output()
        .expect("audit");
    assert_eq!(
        String::from_utf8_lossy(&audit.stdout).trim(),
        "[]",
        "nothing claimed: {}",
        stderr(&audit)
    );
}
