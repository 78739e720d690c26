//! Every filter flag through `gdfwd forward`, the built binary sending to the fake OpenPipeline
//! with the SQLite store: what a filter keeps arrives once; what it drops is counted as
//! `filtered` (summary line and `--summary` JSON), logged with its reason at `--log-level info`,
//! and never claimed (the store has no record of it). The expectations are computed here from
//! the fixture's JSON, not with the filter code. Backfill's flags are in `backfill_cli.rs`.

mod common;
#[path = "common/s3export.rs"]
mod s3export;

use std::collections::BTreeSet;
use std::path::Path;

use common::{delivered_once, fixtures, forward_with_default_filter, gdfwd};
use gdfwd_testkit_openpipeline::FakeOpenPipeline;
use serde_json::{Value, json};

const TOKEN: &str = "tok";

/// The 40 generated findings (API shape, 4 of them archived), every fifth one made a sample the
/// way EventBridge writes it and every seventh the way the GuardDuty API does (JSON text).
fn findings() -> Vec<Value> {
    let text = std::fs::read_to_string(fixtures().join("generated/raw-findings-40.ndjson"))
        .expect("fixture");
    let mut out: Vec<Value> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("JSON"))
        .collect();
    for (i, f) in out.iter_mut().enumerate() {
        if i % 5 == 1 {
            f["service"]["additionalInfo"] = json!({"sample": true});
        } else if i % 7 == 3 {
            f["service"]["additionalInfo"] =
                json!({"value": "{\"sample\":true}", "type": "default"});
        }
    }
    out
}

fn archived(f: &Value) -> bool {
    f["service"]["archived"] == true
}

fn sample(f: &Value) -> bool {
    let info = &f["service"]["additionalInfo"];
    info["sample"] == true || info["value"] == "{\"sample\":true}"
}

fn field(f: &Value, name: &str) -> String {
    let v = match name {
        "resource" => &f["resource"]["resourceType"],
        other => &f[other],
    };
    v.as_str().expect("string field").to_owned()
}

fn ids(findings: &[&Value]) -> BTreeSet<String> {
    findings.iter().map(|f| field(f, "id")).collect()
}

struct Run {
    stderr: String,
    summary: Value,
    delivered: BTreeSet<String>,
    stored: BTreeSet<String>,
}

/// `gdfwd forward` of `file` with `flags` into a fresh store and fake.
async fn forward(file: &Path, flags: &[&str]) -> Run {
    let dir = tempfile::tempdir().expect("tempdir");
    let fake = FakeOpenPipeline::start(TOKEN).await.expect("fake");
    let ca = fake.write_ca_file(dir.path()).expect("ca");
    let sum = dir.path().join("summary.json");
    let options: Vec<&str> = ["--summary", sum.to_str().expect("utf8")]
        .into_iter()
        .chain(flags.iter().copied())
        .collect();
    let mut cmd = forward_with_default_filter(&fake, &ca, dir.path(), &options, file);
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .expect("join")
        .expect("run gdfwd");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(0), "{flags:?}: {stderr}");
    let summary: Value =
        serde_json::from_str(&std::fs::read_to_string(&sum).expect("summary")).expect("JSON");
    let delivered = delivered_once(&fake).into_iter().collect();
    let list = gdfwd(&["audit", "list", "--output", "json"], dir.path())
        .output()
        .expect("audit list");
    let rows: Vec<Value> = serde_json::from_slice(&list.stdout).expect("audit JSON");
    let stored = rows
        .iter()
        .map(|r| r["finding_id"].as_str().expect("finding_id").to_owned())
        .collect();
    Run {
        stderr,
        summary,
        delivered,
        stored,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_filter_flag_forwards_what_it_keeps_and_counts_what_it_drops() {
    let all = findings();
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("findings.ndjson");
    let text: Vec<String> = all.iter().map(Value::to_string).collect();
    std::fs::write(&file, text.join("\n") + "\n").expect("write");
    let account = field(&all[0], "accountId");
    type Keep = Box<dyn Fn(&Value) -> bool>;
    let live = |f: &Value| !archived(f);
    let a1 = account.clone();
    let a2 = account.clone();
    let cases: Vec<(Vec<&str>, Keep)> = vec![
        // The defaults: archived dropped, samples (both shapes) kept.
        (vec![], Box::new(live)),
        (vec!["--archived", "include"], Box::new(|_| true)),
        (
            vec!["--samples", "exclude"],
            Box::new(move |f| live(f) && !sample(f)),
        ),
        (
            vec![
                "--include-type",
                "Execution:*",
                "--include-type",
                "*:Kubernetes/*",
            ],
            Box::new(move |f| {
                let t = field(f, "type");
                live(f) && (t.starts_with("Execution:") || t.contains(":Kubernetes/"))
            }),
        ),
        (
            vec![
                "--exclude-type",
                "CredentialAccess:*,Backdoor:EC2/C&CActivity.B",
            ],
            Box::new(move |f| {
                let t = field(f, "type");
                live(f) && !t.starts_with("CredentialAccess:") && t != "Backdoor:EC2/C&CActivity.B"
            }),
        ),
        (
            vec!["--include-account", account.as_str()],
            Box::new(move |f| live(f) && field(f, "accountId") == a1),
        ),
        (
            vec!["--exclude-account", account.as_str()],
            Box::new(move |f| live(f) && field(f, "accountId") != a2),
        ),
        (
            vec!["--include-region", "eu-central-1,us-west-2"],
            Box::new(move |f| {
                live(f) && ["eu-central-1", "us-west-2"].contains(&field(f, "region").as_str())
            }),
        ),
        (
            vec!["--exclude-region", "ap-southeast-2"],
            Box::new(move |f| live(f) && field(f, "region") != "ap-southeast-2"),
        ),
        (
            vec!["--include-resource-type", "EBSVolume,EKSCluster"],
            Box::new(move |f| {
                live(f) && ["EBSVolume", "EKSCluster"].contains(&field(f, "resource").as_str())
            }),
        ),
        (
            vec!["--exclude-resource-type", "RDSDBInstance"],
            Box::new(move |f| live(f) && field(f, "resource") != "RDSDBInstance"),
        ),
        (
            vec!["--min-severity", "7"],
            Box::new(move |f| live(f) && f["severity"].as_f64().expect("severity") >= 7.0),
        ),
        // Exclude wins over include; kinds combine with AND.
        (
            vec![
                "--include-type",
                "Execution:*,Discovery:*",
                "--exclude-type",
                "Discovery:Kubernetes/*",
                "--exclude-resource-type",
                "EBSVolume",
            ],
            Box::new(move |f| {
                let t = field(f, "type");
                live(f)
                    && (t.starts_with("Execution:") || t.starts_with("Discovery:"))
                    && !t.starts_with("Discovery:Kubernetes/")
                    && field(f, "resource") != "EBSVolume"
            }),
        ),
    ];
    for (flags, keep) in &cases {
        let kept: Vec<&Value> = all.iter().filter(|f| keep(f)).collect();
        let dropped = (all.len() - kept.len()) as u64;
        assert!(!kept.is_empty(), "{flags:?} keeps something");
        let run = forward(&file, flags).await;
        assert_eq!(run.delivered, ids(&kept), "{flags:?}");
        assert_eq!(
            run.stored,
            ids(&kept),
            "{flags:?}: filtered ones are never claimed"
        );
        let s = &run.summary;
        assert_eq!(s["received"], all.len() as u64, "{flags:?}");
        assert_eq!(s["forwarded"], kept.len() as u64, "{flags:?}");
        assert_eq!(s["filtered"], dropped, "{flags:?}");
        assert!(
            run.stderr.contains(&format!(", filtered {dropped},")),
            "{flags:?}: {}",
            run.stderr
        );
    }
}

/// At `--log-level info` each filtered finding is logged with its id, version and the reason
/// naming the flag that dropped it: their only trail, as the store never records them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_filtered_finding_is_logged_with_the_reason() {
    let all = findings();
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("findings.ndjson");
    let text: Vec<String> = all.iter().map(Value::to_string).collect();
    std::fs::write(&file, text.join("\n") + "\n").expect("write");
    let run = forward(
        &file,
        &[
            "--log-level",
            "info",
            "--log-format",
            "json",
            "--exclude-type",
            "Execution:*",
        ],
    )
    .await;
    let logged: Vec<Value> = run
        .stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|l| l["fields"]["message"] == "filtered: not claimed, not sent")
        .collect();
    let by_type = all
        .iter()
        .filter(|f| !archived(f) && field(f, "type").starts_with("Execution:"))
        .count();
    let archived_count = all.iter().filter(|f| archived(f)).count();
    let reasons: Vec<&str> = logged
        .iter()
        .map(|l| l["fields"]["reason"].as_str().expect("reason"))
        .collect();
    assert_eq!(
        reasons
            .iter()
            .filter(|r| **r == "exclude-type Execution:*")
            .count(),
        by_type,
        "{reasons:?}"
    );
    assert_eq!(
        reasons.iter().filter(|r| **r == "archived").count(),
        archived_count
    );
    assert_eq!(
        logged.len() as u64,
        run.summary["filtered"].as_u64().expect("n")
    );
    for l in &logged {
        assert!(
            l["fields"]["finding"].is_string() && l["fields"]["version"].is_string(),
            "{l}"
        );
    }
}

/// A bad value is a usage error naming the flag and the value, before anything is read or sent.
#[test]
fn a_bad_filter_value_is_a_usage_error_naming_the_flag() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (flags, says) in [
        (
            &["--include-account", "1234"][..],
            "--include-account: \"1234\"",
        ),
        (&["--exclude-type", "Recon:*,"][..], "--exclude-type: \"\""),
        (&["--include-region", "EU"][..], "--include-region: \"EU\""),
        (
            &["--min-severity", "eleven"][..],
            "--min-severity: \"eleven\"",
        ),
        (&["--samples", "none"][..], "--samples: \"none\""),
    ] {
        let out = gdfwd(&["forward", "--dry-run", "--sample"], dir.path())
            .args(flags)
            .output()
            .expect("run");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{flags:?}: {err}");
        assert!(err.contains(says), "{flags:?}: {err}");
        assert!(out.stdout.is_empty(), "nothing previewed");
    }
}

/// `--help` shows the filters under one heading, with the defaults.
#[test]
fn forward_and_backfill_help_show_one_filters_heading() {
    let dir = tempfile::tempdir().expect("tempdir");
    for command in ["forward", "backfill"] {
        let out = gdfwd(&[command, "--help"], dir.path())
            .output()
            .expect("help");
        let help = String::from_utf8_lossy(&out.stdout);
        assert_eq!(help.matches("\nFilters:\n").count(), 1, "{help}");
        let section = help.split("\nFilters:\n").nth(1).expect("section");
        for flag in [
            "--include-type",
            "--exclude-resource-type",
            "--min-severity",
            "--archived <include|exclude>",
            "--samples <include|exclude>",
        ] {
            assert!(section.contains(flag), "{command}: {flag}");
        }
        let flat = section.split_whitespace().collect::<Vec<_>>().join(" ");
        assert!(
            flat.contains("[default: exclude]") && flat.contains("[default: include]"),
            "{command}: {flat}"
        );
    }
}

/// The S3 export import records an object as finished only for the filter it ran with (a
/// finding the filter dropped is settled, not sent): a later run with another filter reads the
/// objects again and delivers what the first one dropped; the same filter again skips them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_object_finished_under_one_filter_is_read_again_under_another() {
    let client = s3export::client(&gdfwd_testkit_moto::endpoint()).await;
    let bucket = s3export::bucket_name("gdfwd-filters");
    s3export::bucket(&client, &bucket).await;
    let base = s3export::base_findings();
    let mut all = Vec::new();
    for (o, account) in ["222200000001", "222200000002"].into_iter().enumerate() {
        let lines: Vec<String> = (0..10)
            .map(|i| {
                let n = o * 10 + i;
                let updated = format!("2024-03-05T10:{i:02}:00.000Z");
                s3export::finding(
                    &base,
                    n,
                    &format!("flt{n:03}"),
                    account,
                    "eu-west-1",
                    &updated,
                )
            })
            .collect();
        all.extend(
            lines
                .iter()
                .map(|l| serde_json::from_str::<Value>(l).expect("JSON")),
        );
        let key = s3export::key("exports/", account, "eu-west-1", "2024-03-05", "f1");
        s3export::put(&client, &bucket, &key, &lines).await;
    }
    let excluded = field(&all[0], "type");
    let dir = tempfile::tempdir().expect("tempdir");
    let fake = FakeOpenPipeline::start(TOKEN).await.expect("fake");
    let ca = fake.write_ca_file(dir.path()).expect("ca");
    let url = format!("s3://{bucket}/exports/");
    let run = |flags: &[&str]| {
        let mut cmd = common::forward_to(&fake, &ca, dir.path(), flags, Path::new(&url));
        s3export::aws_env(&mut cmd, &gdfwd_testkit_moto::endpoint());
        cmd.env("DT_API_TOKEN", TOKEN);
        let out = cmd.output().expect("run gdfwd");
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(0), "{flags:?}: {err}");
        err
    };
    // (`forward_to` forwards archived findings too: only the type filter differs between runs.)
    let of_type = |f: &&Value| field(f, "type") == excluded;
    let first = run(&["--exclude-type", &excluded]);
    assert!(first.contains("0 finished by an earlier run"), "{first}");
    let kept: Vec<&Value> = all.iter().filter(|f| !of_type(f)).collect();
    assert_eq!(
        delivered_once(&fake).into_iter().collect::<BTreeSet<_>>(),
        ids(&kept)
    );

    let second = run(&[]);
    assert!(
        second.contains("0 finished by an earlier run"),
        "another filter: {second}"
    );
    let every: Vec<&Value> = all.iter().collect();
    assert_eq!(
        delivered_once(&fake).into_iter().collect::<BTreeSet<_>>(),
        ids(&every)
    );

    let third = run(&[]);
    assert!(
        third.contains("2 finished by an earlier run"),
        "same filter: {third}"
    );
    let again = run(&["--exclude-type", &excluded]);
    assert!(
        again.contains("2 finished by an earlier run"),
        "the first filter: {again}"
    );
}
