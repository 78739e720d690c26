//! `gdfwd forward` as a user runs it: the built binary on fixture files, checking stdout (NDJSON
//! events), stderr (errors naming file and line, the summary) and exit codes; dedup with the
//! SQLite store; and a clean stop on SIGINT or SIGTERM (batches accepted before it kept, waits
//! ended, nothing left claimed), a second interrupt exiting at once.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use gdfwd_testkit_openpipeline::{FakeOpenPipeline, Fault};

mod common;
use common::{fixtures, forward_to, gdfwd};

/// An interrupted run finished or released every claim it took.
fn assert_no_pending_claims(state: &Path) {
    let pending = run(
        &["audit", "list", "--status", "pending", "--output", "json"],
        state,
    );
    let pending: serde_json::Value = serde_json::from_slice(&pending.stdout).expect("json");
    assert_eq!(
        pending.as_array().map(Vec::len),
        Some(0),
        "claims left behind: {pending}"
    );
}

fn run(args: &[&str], state: &Path) -> Output {
    gdfwd(args, state).output().expect("run gdfwd")
}

fn stdout_events(out: &Output) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            serde_json::from_str(l).unwrap_or_else(|e| panic!("stdout line is not JSON ({e}): {l}"))
        })
        .collect()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn summary(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).expect("summary file"))
        .expect("summary JSON")
}

#[test]
fn dry_run_prints_one_event_per_object_with_deterministic_ids() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = fixtures().join("generated/raw-findings-40.ndjson");
    let sum = dir.path().join("s.json");
    let dry_run = || {
        common::dry_run_command(dir.path(), &sum, &[], file.to_str().expect("utf8"))
            .output()
            .expect("run gdfwd")
    };
    let out = dry_run();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let events = stdout_events(&out);
    let s = summary(&sum);
    assert_eq!(s["received"], 40);
    assert_eq!(s["forwarded"], 40);
    assert_eq!(s["invalid"], 0);
    assert_eq!(s["events"].as_u64(), Some(events.len() as u64));
    assert!(events.len() >= 40);
    for e in &events {
        assert_eq!(e["detail-type"], "GuardDuty Finding");
        assert_eq!(e["uuid"].as_str().map(str::len), Some(32), "{e}");
    }
    assert!(
        stderr(&out).contains("would forward 40"),
        "{}",
        stderr(&out)
    );

    // Same input, same ids: redeliveries are recognisable downstream.
    let again = dry_run();
    assert_eq!(stdout_events(&again), events);
}

#[test]
fn semantic_format_maps_to_the_semantic_dictionary() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = fixtures().join("real/aws-samples-auto-response__guardduty_s3_event.json");
    let out = run(
        &[
            "forward",
            "--no-dedup",
            // An archived finding (dropped by default); this test is about mapping.
            "--archived",
            "include",
            "--format",
            "semantic",
            file.to_str().expect("utf8"),
        ],
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let events = stdout_events(&out);
    assert!(!events.is_empty());
    for e in events {
        assert_eq!(e["event.kind"], "SECURITY_EVENT");
        assert_eq!(e["event.provider"], "Amazon GuardDuty");
        assert_eq!(e["object.type"], "S3_BUCKET");
        assert!(
            e.get("timestamp").is_none(),
            "never set timestamp from the finding"
        );
    }
}

#[test]
fn invalid_records_are_named_by_file_and_line_and_the_rest_still_go() {
    let dir = tempfile::tempdir().expect("tempdir");
    let good = std::fs::read_to_string(fixtures().join("generated/raw-findings-40.ndjson"))
        .expect("fixture");
    let first = good.lines().next().expect("a line");
    let mut missing: serde_json::Value = serde_json::from_str(first).expect("json");
    missing.as_object_mut().expect("object").remove("accountId");
    let path = dir.path().join("mixed.ndjson");
    std::fs::write(&path, format!("{first}\n{{not json\n{missing}\n")).expect("write");
    let out = run(
        &["forward", "--no-dedup", path.to_str().expect("utf8")],
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    let name = path.display().to_string();
    assert!(err.contains(&format!("{name}:2")), "{err}");
    assert!(
        err.contains(&format!("{name}:3")) && err.contains("accountId"),
        "{err}"
    );
    assert!(
        !stdout_events(&out).is_empty(),
        "the valid record was still printed"
    );
}

#[test]
fn cloudtrail_events_are_skipped_not_forwarded() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file =
        fixtures().join("real/sumologic__NEGATIVE-cloudtrail-api-call-source-aws-guardduty.json");
    let sum = dir.path().join("s.json");
    let out = run(
        &[
            "forward",
            "--no-dedup",
            "--summary",
            sum.to_str().expect("utf8"),
            file.to_str().expect("utf8"),
        ],
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(out.stdout.is_empty());
    let s = summary(&sum);
    assert_eq!(
        (s["skipped"].as_u64(), s["forwarded"].as_u64()),
        (Some(1), Some(0))
    );
}

#[test]
fn gzip_input_reads_like_plain_input() {
    let dir = tempfile::tempdir().expect("tempdir");
    let plain = fixtures().join("generated/raw-findings-40.ndjson");
    let gz = dir.path().join("findings.jsonl.gz");
    let mut enc = flate2::write::GzEncoder::new(
        std::fs::File::create(&gz).expect("create"),
        flate2::Compression::fast(),
    );
    enc.write_all(&std::fs::read(&plain).expect("read"))
        .expect("gzip");
    enc.finish().expect("finish");
    let a = run(
        &["forward", "--no-dedup", plain.to_str().expect("utf8")],
        dir.path(),
    );
    let b = run(
        &["forward", "--no-dedup", gz.to_str().expect("utf8")],
        dir.path(),
    );
    assert_eq!(b.status.code(), Some(0), "{}", stderr(&b));
    assert_eq!(stdout_events(&a), stdout_events(&b));
}

#[test]
fn dry_run_with_the_store_previews_dedup_but_claims_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = fixtures().join("generated/eventbridge-60-findings-with-updates.ndjson");
    let sum = dir.path().join("s.json");
    let args = [
        "forward",
        "--dry-run",
        // The fixture holds archived findings (dropped by default); this test is about dedup.
        "--archived",
        "include",
        "--summary",
        sum.to_str().expect("utf8"),
        file.to_str().expect("utf8"),
    ];
    let first = run(&args, dir.path());
    assert_eq!(first.status.code(), Some(0), "{}", stderr(&first));
    let s1 = summary(&sum);
    // 60 findings in 2 versions, delivered with redeliveries and late older versions: those are
    // suppressed, everything else would be forwarded.
    let lines = std::fs::read_to_string(&file)
        .expect("fixture")
        .lines()
        .filter(|l| !l.trim().is_empty())
        .count() as u64;
    let count = |k: &str| s1[k].as_u64().unwrap_or(0);
    assert_eq!(count("received"), lines);
    assert!(count("duplicates") > 0, "{s1}");
    assert!(count("stale") > 0, "{s1}");
    assert_eq!(
        count("forwarded") + count("duplicates") + count("stale"),
        lines,
        "{s1}"
    );
    // Nothing was claimed: a second preview shows the same, and the store lists nothing.
    let second = run(&args, dir.path());
    assert_eq!(stdout_events(&second), stdout_events(&first));
    assert_eq!(summary(&sum), s1);
    let audit = run(&["audit", "list", "--output", "json"], dir.path());
    assert_eq!(audit.status.code(), Some(0), "{}", stderr(&audit));
    let listed: serde_json::Value = serde_json::from_slice(&audit.stdout).expect("audit json");
    assert_eq!(listed.as_array().map(Vec::len), Some(0), "{listed}");
}

#[test]
fn bad_arguments_are_refused_with_a_clear_message() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = run(
        &["forward", "--store", "postgres:x", "--sample"],
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("postgres:x"), "{}", stderr(&out));
    let out = run(
        &["forward", "--endpoint", "http://example.com/x", "--sample"],
        dir.path(),
    );
    assert_ne!(out.status.code(), Some(0));
    assert!(
        stderr(&out).contains("http://example.com/x"),
        "{}",
        stderr(&out)
    );
    let missing = dir.path().join("nope.json");
    let out = run(
        &["forward", "--no-dedup", missing.to_str().expect("utf8")],
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("nope.json"), "{}", stderr(&out));

    // Settings that would break dedup or every send are refused before anything runs.
    for (flag, value) in [
        ("--retention-days", "0"),
        ("--lease", "0"),
        ("--max-in-flight", "18446744073709551615"),
        ("--max-in-flight", "0"),
        ("--max-events-per-second", "0"),
        ("--max-batch-events", "0"),
    ] {
        let out = gdfwd(
            &[
                "forward",
                "--sample",
                "--endpoint",
                "http://127.0.0.1:9/x",
                "--allow-insecure-loopback",
                flag,
                value,
            ],
            dir.path(),
        )
        .env("DT_API_TOKEN", "dt0c01.test")
        .output()
        .expect("run gdfwd");
        assert_eq!(out.status.code(), Some(2), "{flag} {value}: a usage error");
        let err = stderr(&out);
        assert!(
            err.contains(flag) && err.contains(value) && !err.contains("panicked"),
            "{flag}: {err}"
        );
    }
    let out = run(
        &["forward", "--sample", "--retention-days", "0"],
        dir.path(),
    );
    assert!(
        stderr(&out).contains("--retention-days"),
        "{}",
        stderr(&out)
    );

    // A log filter that would silently log nothing of ours is reported.
    let out = run(
        &["--log-level", "verbose", "forward", "--sample"],
        dir.path(),
    );
    assert!(
        stderr(&out).contains("\"verbose\" is neither a level nor target=level"),
        "{}",
        stderr(&out)
    );

    // A value refused after parsing is a usage error too.
    let out = run(&["audit", "list", "--since", "yesterday-ish"], dir.path());
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("yesterday-ish"), "{}", stderr(&out));

    // An audit of a store that does not exist names it instead of creating an empty one.
    let nowhere = dir.path().join("typo/state.db");
    let spec = format!("sqlite:{}", nowhere.display());
    let out = run(&["audit", "stats", "--store", &spec], dir.path());
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("no state database at"),
        "{}",
        stderr(&out)
    );
    assert!(!nowhere.exists(), "the audit created the mistyped store");
}

/// Waits up to `bound` for `child` to exit; kills it and panics naming `what` if it does not.
async fn exit_within(child: std::process::Child, bound: Duration, what: &str) -> Output {
    let pid = child.id().to_string();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let what = what.to_owned();
    tokio::task::spawn_blocking(move || rx.recv_timeout(bound))
        .await
        .expect("join")
        .unwrap_or_else(|_| {
            let _ = Command::new("kill").args(["-9", &pid]).status();
            panic!("{what}: still running after {bound:?}")
        })
        .expect("wait")
}

/// The summary line's count for `label` (`"forwarded "`, `"duplicates "`, ...).
fn summary_count(stderr: &str, label: &str) -> u64 {
    stderr
        .split(label)
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.trim_end_matches(',').parse().ok())
        .unwrap_or_else(|| panic!("no {label:?} in {stderr}"))
}

/// Asserts no event arrived twice at `fake`.
fn assert_no_event_twice(fake: &FakeOpenPipeline) {
    let ids = fake.event_ids();
    let mut unique = ids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), ids.len(), "an event arrived twice");
}

/// Two batches accepted, the third in flight (slow) when `signal` arrives: the run finishes or
/// releases the batch in flight, exits 130, leaves no pending claim, and the next run counts the
/// accepted ones as duplicates (committed before the stop, never sent again) and delivers the rest.
/// The next run reads the file whole (`--no-resume`): this is about the store's commits; resuming
/// from the file's checkpoint is tested in `forward_stream.rs`.
async fn stop_after_accepted_batches(signal: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let fake = FakeOpenPipeline::start("tok").await.expect("fake");
    let ca = fake.write_ca_file(dir.path()).expect("ca");
    fake.push_faults(
        [Fault::Pass, Fault::Pass]
            .into_iter()
            .chain((0..200).map(|_| Fault::Slow(Duration::from_millis(300)))),
    );
    let file = fixtures().join("generated/raw-findings-40.ndjson");
    let options = [
        "--chunk",
        "5",
        "--max-batch-events",
        "5",
        "--max-in-flight",
        "1",
        "--request-timeout",
        "5s",
    ];
    let child = common::spawn(&mut forward_to(&fake, &ca, dir.path(), &options, &file));
    common::wait_until("two batches accepted and a third sent", || {
        fake.event_ids().len() >= 10 && fake.counters().requests >= 3
    })
    .await;
    common::signal(&child, signal);
    let out = exit_within(child, Duration::from_secs(30), "the stopped run").await;
    assert_eq!(out.status.code(), Some(130), "{}", stderr(&out));
    assert_no_pending_claims(dir.path());
    let accepted = fake.event_ids().len() as u64;
    assert!(
        (10..40).contains(&accepted),
        "accepted before the stop: {accepted}"
    );

    fake.clear_faults();
    let again = [&options[..], &["--no-resume"]].concat();
    let out = tokio::task::spawn_blocking({
        let mut c = forward_to(&fake, &ca, dir.path(), &again, &file);
        move || c.output()
    })
    .await
    .expect("join")
    .expect("run");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let line = stderr(&out);
    // Findings whose events were all accepted are duplicates now (some findings have several
    // events, so this counts findings, not the events counted above).
    let duplicates = summary_count(&line, "duplicates ");
    assert!((2..=accepted).contains(&duplicates), "{line}");
    assert_eq!(
        summary_count(&line, "forwarded ") + duplicates,
        40,
        "{line}"
    );
    assert_no_event_twice(&fake);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_after_accepted_batches_keeps_them_and_the_next_run_picks_up() {
    stop_after_accepted_batches("INT").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_like_sigint() {
    stop_after_accepted_batches("TERM").await;
}

/// A first interrupt waits for the request in flight (here one Dynatrace answers only after
/// 60 s); a second one exits at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_interrupt_exits_at_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fake = FakeOpenPipeline::start("tok").await.expect("fake");
    let ca = fake.write_ca_file(dir.path()).expect("ca");
    fake.push_faults((0..10).map(|_| Fault::Slow(Duration::from_secs(60))));
    let file = fixtures().join("generated/raw-findings-40.ndjson");
    let child = common::spawn(&mut forward_to(
        &fake,
        &ca,
        dir.path(),
        &["--max-in-flight", "1", "--request-timeout", "120s"],
        &file,
    ));
    common::wait_until("the run never sent anything", || {
        fake.counters().requests > 0
    })
    .await;
    common::interrupt(&child);
    // The first interrupt is acknowledged and the run keeps waiting for its request.
    tokio::time::sleep(Duration::from_millis(500)).await;
    common::interrupt(&child);
    let out = exit_within(child, Duration::from_secs(10), "after a second interrupt").await;
    assert_eq!(out.status.code(), Some(130), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("interrupted twice"),
        "{}",
        stderr(&out)
    );
    assert!(fake.event_ids().is_empty(), "nothing was accepted");
}

/// Waits inside the sender end on the interrupt: a rate limit of one event per second (40 s of
/// work) and the backoff between attempts at an endpoint answering 503. The run exits 130 well
/// before the wait would have ended, starts no request after the interrupt beyond the one in
/// flight, and leaves no pending claim.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_and_backoff_waits_end_on_the_interrupt() {
    for case in ["rate limit", "backoff"] {
        let dir = tempfile::tempdir().expect("tempdir");
        let fake = FakeOpenPipeline::start("tok").await.expect("fake");
        let ca = fake.write_ca_file(dir.path()).expect("ca");
        let mut options = vec!["--max-in-flight", "1", "--max-batch-events", "1"];
        if case == "rate limit" {
            options.extend(["--max-events-per-second", "1"]);
        } else {
            fake.push_faults(
                std::iter::once(Fault::Pass).chain((0..10_000).map(|_| Fault::Status(503))),
            );
        }
        let file = fixtures().join("generated/raw-findings-40.ndjson");
        let child = common::spawn(&mut forward_to(&fake, &ca, dir.path(), &options, &file));
        common::wait_until(&format!("{case}: the run is waiting"), || {
            fake.counters().requests >= 3
        })
        .await;
        let at_interrupt = fake.counters().requests;
        common::interrupt(&child);
        let out = exit_within(child, Duration::from_secs(15), case).await;
        assert_eq!(out.status.code(), Some(130), "{case}: {}", stderr(&out));
        assert!(
            fake.counters().requests <= at_interrupt + 1,
            "{case}: requests started after the interrupt: {} then {}",
            at_interrupt,
            fake.counters().requests
        );
        assert!(
            !fake.event_ids().is_empty(),
            "{case}: something was accepted"
        );
        assert_no_pending_claims(dir.path());
    }
}

/// SIGINT while the endpoint throttles with a long `Retry-After`: the run does not wait the
/// retry out (nor its lease budget). It stops waiting at once, keeps what Dynatrace already
/// accepted (committed, not sent again), releases the rest, exits 130, and the next run
/// delivers the rest with no event twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_during_a_long_retry_wait_stops_the_run() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fake = FakeOpenPipeline::start("tok").await.expect("fake");
    let ca = fake.write_ca_file(dir.path()).expect("ca");
    // The first request is accepted; then two minutes between attempts, for every attempt.
    fake.push_faults(std::iter::once(Fault::Pass).chain((0..50).map(|_| {
        Fault::TooManyRequests(Some(gdfwd_testkit_openpipeline::RetryAfter::Seconds(120)))
    })));
    let file = fixtures().join("generated/raw-findings-40.ndjson");
    let child = common::spawn(&mut forward_to(
        &fake,
        &ca,
        dir.path(),
        &["--max-batch-events", "5", "--max-in-flight", "1"],
        &file,
    ));
    // One batch accepted, the next one throttled: the run is now waiting out `Retry-After`.
    common::wait_until("the run never got throttled", || {
        fake.counters().requests > 1
    })
    .await;
    assert!(
        !fake.event_ids().is_empty(),
        "the first batch was not accepted"
    );
    common::interrupt(&child);
    // Without the interrupt the run would wait out the 120 s `Retry-After`: it must be gone
    // well before that. (A bound on waiting, not a speed measurement.)
    let out = exit_within(child, Duration::from_secs(60), "waiting for its retry").await;
    assert_eq!(out.status.code(), Some(130), "{}", stderr(&out));
    assert!(stderr(&out).contains("interrupted"), "{}", stderr(&out));

    assert_no_pending_claims(dir.path());

    fake.clear_faults();
    let out = tokio::task::spawn_blocking({
        let mut c = forward_to(&fake, &ca, dir.path(), &[], &file);
        move || c.output()
    })
    .await
    .expect("join")
    .expect("run");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    // The batch accepted before the interrupt was committed: a duplicate now, not sent again.
    let line = stderr(&out);
    assert!(summary_count(&line, "duplicates ") > 0, "{line}");
    assert_eq!(
        summary_count(&line, "forwarded ") + summary_count(&line, "duplicates "),
        40,
        "{line}"
    );
    assert_no_event_twice(&fake);
}

/// The counts of a `gdfwd forward` summary line, by label, time left out.
fn summary_counts(line: &str) -> Vec<(&'static str, u64)> {
    [
        "received ",
        "forward ",
        "duplicates ",
        "in flight elsewhere ",
        "stale ",
        "filtered ",
        "skipped ",
        "invalid ",
        "failed ",
        "requests ",
    ]
    .into_iter()
    .map(|label| (label, summary_count(line, label)))
    .collect()
}

/// What `forward` must report for `text` read in order into an empty store with the default
/// filter: an archived finding (`service.archived: true`) is filtered before anything else; of
/// the others, each finding version newer than every version of it seen before is forwarded
/// (its events counted), an equal one is a duplicate, an older one stale; non-findings are
/// skipped, unusable records invalid.
fn expected_counts(text: &str) -> (u64, u64, u64, u64, u64, u64, u64) {
    use gdfwd_model::{Item, Timestamp, parse_document, split};
    // The sample is one chunk (one batch). A version newer than every earlier one of its
    // finding is sent; any other (a copy or an older version) is decided once the batch's
    // versions are recorded: a duplicate of the newest version the batch sent, else stale.
    let mut newest: std::collections::HashMap<String, Timestamp> = Default::default();
    let mut followers: Vec<(String, Timestamp)> = Vec::new();
    let (mut forwarded, mut events, mut duplicates, mut stale, mut skipped, mut invalid) =
        (0, 0, 0, 0, 0, 0);
    let mut filtered = 0;
    for record in parse_document(text) {
        match record {
            Ok(Item::Finding(f)) if f.detail["service"]["archived"] == true => filtered += 1,
            Ok(Item::Finding(f)) => match newest.get(&f.id) {
                Some(t) if *t >= f.updated_at => followers.push((f.id.clone(), f.updated_at)),
                _ => {
                    newest.insert(f.id.clone(), f.updated_at);
                    forwarded += 1;
                    events += split(&f).len() as u64;
                }
            },
            Ok(Item::Skipped { .. }) => skipped += 1,
            Err(_) => invalid += 1,
        }
    }
    for (id, v) in followers {
        if newest.get(&id) == Some(&v) {
            duplicates += 1;
        } else {
            stale += 1;
        }
    }
    (
        forwarded, events, duplicates, stale, filtered, skipped, invalid,
    )
}

/// README's first command, exactly as written there, on a fresh machine (empty state directory):
/// its summary has the README's shape and numbers, which are the ones the embedded sample
/// produces, stdout holds the events it would send, and the exit status follows from the
/// summary (2 when some record is invalid, as the README explains, else 0).
#[test]
fn the_readme_sample_command_runs_as_written() {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md"))
            .expect("README");
    let command = readme
        .lines()
        .find(|l| l.starts_with("cargo run --bin gdfwd -- forward"))
        .expect("the README's sample command");
    let args: Vec<&str> = command
        .split_once(" -- ")
        .expect("cargo run -- ARGS")
        .1
        .split_whitespace()
        .collect();
    let documented = readme
        .lines()
        .find(|l| l.starts_with("gdfwd forward: received "))
        .expect("the README's sample summary line");

    let dir = tempfile::tempdir().expect("tempdir");
    let out = run(&args, dir.path());
    let err = stderr(&out);
    let line = err
        .lines()
        .find(|l| l.starts_with("gdfwd forward: received "))
        .unwrap_or_else(|| panic!("no summary line in {err}"));
    assert_eq!(
        summary_counts(line),
        summary_counts(documented),
        "the README's summary line is what the command prints:\n{line}\n{documented}"
    );

    let sample = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("src/sample-findings.ndjson"),
    )
    .expect("the embedded sample");
    let records = sample.lines().filter(|l| !l.trim().is_empty()).count() as u64;
    let (forwarded, events, duplicates, stale, filtered, skipped, invalid) =
        expected_counts(&sample);
    let got = |label: &str| summary_count(line, label);
    assert_eq!(got("received "), records, "{line}");
    assert_eq!(got("forward "), forwarded, "{line}");
    assert!(
        line.contains(&format!("({events} events)")),
        "{events} events: {line}"
    );
    assert_eq!(got("duplicates "), duplicates, "{line}");
    assert_eq!(got("stale "), stale, "{line}");
    assert_eq!(got("filtered "), filtered, "{line}");
    assert!(filtered > 0, "the default filter at work: {line}");
    assert_eq!(got("skipped "), skipped, "{line}");
    assert_eq!(got("invalid "), invalid, "{line}");
    assert_eq!((got("failed "), got("requests ")), (0, 0), "{line}");
    assert_eq!(stdout_events(&out).len() as u64, events);
    let want_status = if invalid > 0 { 2 } else { 0 };
    assert_eq!(out.status.code(), Some(want_status), "{err}");
}
