//! `gdfwd forward` on bulk and hostile input, as a user runs it: the input is streamed (stdin is
//! forwarded before it ends), a record over `--max-record-bytes`, a gzip bomb, a truncated gzip
//! and a line with a byte that is not UTF-8 are each one invalid record named by file and line
//! (exit status 2) while the records around them go through, whole JSON documents still work,
//! and a run that stopped part-way (failures, SIGINT) resumes from its checkpoint.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};

use gdfwd_testkit_openpipeline::{FakeOpenPipeline, Fault};

mod common;
use common::{fixtures, forward_to};

fn fixture() -> PathBuf {
    fixtures().join("generated/raw-findings-40.ndjson")
}

fn lines() -> Vec<String> {
    std::fs::read_to_string(fixture())
        .expect("fixture")
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_owned)
        .collect()
}

/// A dry run without the store over `file`: (output, summary JSON).
fn dry_run(file: &Path, extra: &[&str], dir: &Path) -> (Output, serde_json::Value) {
    let sum = dir.join("summary.json");
    let out = common::dry_run_command(dir, &sum, extra, file.to_str().expect("utf8"))
        .output()
        .expect("run gdfwd");
    let summary = std::fs::read_to_string(&sum)
        .ok()
        .and_then(|s| serde_json::from_str(&s).ok())
        .unwrap_or_else(|| panic!("no summary: {}", stderr(&out)));
    (out, summary)
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn n(summary: &serde_json::Value, key: &str) -> u64 {
    summary[key]
        .as_u64()
        .unwrap_or_else(|| panic!("no {key}: {summary}"))
}

/// The `id`s of the findings in the events a dry run printed, in order, once each.
fn printed_ids(out: &Output) -> Vec<String> {
    let mut ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let e: serde_json::Value = serde_json::from_str(l).expect("event JSON");
            e["detail"]["id"].as_str().expect("finding id").to_owned()
        })
        .collect();
    ids.dedup();
    ids
}

fn id_of(line: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(line).expect("json");
    v["id"].as_str().expect("id").to_owned()
}

fn gzip(bytes: &[u8], path: &Path) {
    let mut enc = flate2::write::GzEncoder::new(
        std::fs::File::create(path).expect("create"),
        flate2::Compression::fast(),
    );
    enc.write_all(bytes).expect("gzip");
    enc.finish().expect("finish");
}

#[test]
fn an_oversized_record_is_reported_and_the_records_around_it_go_through() {
    let dir = tempfile::tempdir().expect("tempdir");
    let l = lines();
    let huge = format!("{{\"padding\": \"{}\"}}", "x".repeat(2 * 1024 * 1024));
    let file = dir.path().join("big.ndjson");
    std::fs::write(&file, format!("{}\n{huge}\n{}\n", l[0], l[1])).expect("write");
    let (out, s) = dry_run(&file, &[], dir.path());
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains(&format!("{}:2: record of", file.display()))
            && err.contains("--max-record-bytes (1048576)"),
        "{err}"
    );
    assert_eq!((n(&s, "forwarded"), n(&s, "invalid")), (2, 1));
    assert_eq!(printed_ids(&out), [id_of(&l[0]), id_of(&l[1])]);

    // The limit is the option's: the same file passes with a higher one.
    let (out, s) = dry_run(&file, &["--max-record-bytes", "4194304"], dir.path());
    let err = stderr(&out);
    assert_eq!(n(&s, "invalid"), 1, "the padding record is no finding");
    assert!(
        !err.contains("--max-record-bytes") && err.contains(":2: finding has no"),
        "{err}"
    );
}

#[test]
fn a_gzip_bomb_is_one_invalid_record() {
    let dir = tempfile::tempdir().expect("tempdir");
    let l = lines();
    let file = dir.path().join("bomb.jsonl.gz");
    // 256 MiB of one line, about 250 KiB compressed.
    let mut enc = flate2::write::GzEncoder::new(
        std::fs::File::create(&file).expect("create"),
        flate2::Compression::best(),
    );
    enc.write_all(format!("{}\n", l[0]).as_bytes()).expect("w");
    let zeros = vec![b'0'; 1024 * 1024];
    for _ in 0..256 {
        enc.write_all(&zeros).expect("w");
    }
    enc.write_all(format!("\n{}\n", l[1]).as_bytes())
        .expect("w");
    enc.finish().expect("finish");
    assert!(std::fs::metadata(&file).expect("meta").len() < 2 * 1024 * 1024);

    let (out, s) = dry_run(&file, &[], dir.path());
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains(&format!("{}:2: record of 268435456 bytes", file.display())),
        "{err}"
    );
    assert_eq!((n(&s, "forwarded"), n(&s, "invalid")), (2, 1));
    assert_eq!(printed_ids(&out), [id_of(&l[0]), id_of(&l[1])]);
}

#[test]
fn a_truncated_gzip_keeps_every_record_before_the_break() {
    let dir = tempfile::tempdir().expect("tempdir");
    let l = lines();
    let whole = dir.path().join("whole.gz");
    gzip((l.join("\n") + "\n").as_bytes(), &whole);
    let bytes = std::fs::read(&whole).expect("read");
    let file = dir.path().join("cut.jsonl.gz");
    std::fs::write(&file, &bytes[..bytes.len() / 2]).expect("write");

    let (out, s) = dry_run(&file, &[], dir.path());
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    let prefix = format!("{}:", file.display());
    let broke: usize = err
        .lines()
        .find_map(|x| x.strip_prefix("invalid: ")?.strip_prefix(&prefix))
        .and_then(|rest| rest.split(':').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no line named: {err}"));
    assert!(err.contains("gzip data broken"), "{err}");
    assert!(broke > 1 && broke < l.len(), "{err}");
    assert_eq!(n(&s, "forwarded"), broke as u64 - 1, "{err}");
    assert_eq!(n(&s, "invalid"), 1);
    let expected: Vec<String> = l[..broke - 1].iter().map(|x| id_of(x)).collect();
    assert_eq!(printed_ids(&out), expected);
}

#[test]
fn a_byte_that_is_not_utf8_spoils_only_its_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let l = lines();
    let mut bytes = Vec::new();
    for (i, line) in l.iter().take(5).enumerate() {
        let mut b = line.clone().into_bytes();
        if i == 2 {
            b[30] = 0xff;
        }
        bytes.extend(b);
        bytes.push(b'\n');
    }
    let file = dir.path().join("latin1.ndjson");
    std::fs::write(&file, bytes).expect("write");
    let (out, s) = dry_run(&file, &[], dir.path());
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!("{}:3: not UTF-8 text", file.display())),
        "{}",
        stderr(&out)
    );
    assert_eq!((n(&s, "forwarded"), n(&s, "invalid")), (4, 1));
    let expected: Vec<String> = [0, 1, 3, 4].iter().map(|&i| id_of(&l[i])).collect();
    assert_eq!(printed_ids(&out), expected);
}

#[test]
fn whole_json_documents_still_work() {
    let dir = tempfile::tempdir().expect("tempdir");
    let l = lines();
    let values: Vec<serde_json::Value> = l
        .iter()
        .map(|x| serde_json::from_str(x).expect("json"))
        .collect();
    let array = dir.path().join("pretty.json");
    std::fs::write(&array, serde_json::to_string_pretty(&values).expect("json")).expect("w");
    let (out, s) = dry_run(&array, &["--chunk", "7"], dir.path());
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(n(&s, "forwarded"), 40);
    let all: Vec<String> = l.iter().map(|x| id_of(x)).collect();
    assert_eq!(printed_ids(&out), all);

    // GetFindings output, pretty-printed: one document.
    let wrapper = dir.path().join("get-findings.json");
    let doc = serde_json::json!({"findings": values[..3]});
    std::fs::write(&wrapper, serde_json::to_string_pretty(&doc).expect("json")).expect("w");
    let (out, s) = dry_run(&wrapper, &[], dir.path());
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(n(&s, "forwarded"), 3);
}

/// Findings piped into stdin are sent while stdin is still open: the input is a stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdin_is_forwarded_as_it_arrives() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fake = FakeOpenPipeline::start("tok").await.expect("fake");
    let ca = fake.write_ca_file(dir.path()).expect("ca");
    let mut child = forward_to(&fake, &ca, dir.path(), &["--chunk", "5"], Path::new("-"))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut stdin = child.stdin.take().expect("stdin");
    let l = lines();
    for line in &l[..10] {
        writeln!(stdin, "{line}").expect("write");
    }
    stdin.flush().expect("flush");
    common::wait_until("nothing was sent while stdin was open", || {
        fake.counters().events >= 5
    })
    .await;
    for line in &l[10..] {
        writeln!(stdin, "{line}").expect("write");
    }
    drop(stdin);
    let out = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .expect("join")
        .expect("wait");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let mut ids: Vec<String> = fake
        .events()
        .iter()
        .filter_map(|e| e.body["detail"]["id"].as_str().map(str::to_owned))
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 40);
}

/// A run that stops part-way (here: the endpoint fails after three chunks and the deadline
/// passes) saves a checkpoint after the last settled chunk; the next run reads on from there,
/// and once a file is done a later run reads it whole again (everything a duplicate).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_run_resumes_after_its_last_settled_chunk() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fake = FakeOpenPipeline::start("tok").await.expect("fake");
    let ca = fake.write_ca_file(dir.path()).expect("ca");
    let file = dir.path().join("findings.ndjson");
    std::fs::copy(fixture(), &file).expect("copy");
    let sum = dir.path().join("s.json");
    let run = |extra: &[&str]| {
        let mut options = vec!["--chunk", "5", "--max-in-flight", "1", "--summary"];
        options.push(sum.to_str().expect("utf8"));
        options.extend_from_slice(extra);
        let mut cmd = forward_to(&fake, &ca, dir.path(), &options, &file);
        let sum = sum.clone();
        async move {
            let out = tokio::task::spawn_blocking(move || cmd.output())
                .await
                .expect("join")
                .expect("run");
            let s: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(&sum).expect("summary"))
                    .expect("json");
            (out, s)
        }
    };
    // Three chunks of 5 are accepted, then every request fails until the deadline.
    fake.push_faults(
        [Fault::Pass, Fault::Pass, Fault::Pass]
            .into_iter()
            .chain((0..500).map(|_| Fault::Status(503))),
    );
    let (out, s) = run(&["--deadline", "2s"]).await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(n(&s, "forwarded"), 15, "{s}");

    fake.clear_faults();
    let (out, s) = run(&[]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("resuming after line 15"),
        "{}",
        stderr(&out)
    );
    assert_eq!((n(&s, "received"), n(&s, "forwarded")), (25, 25), "{s}");
    let mut ids: Vec<String> = fake
        .events()
        .iter()
        .filter_map(|e| e.body["detail"]["id"].as_str().map(str::to_owned))
        .collect();
    let events = ids.len();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 40, "every finding delivered");
    assert_eq!(
        fake.event_ids().len(),
        events,
        "and every event once (ids are per event)"
    );
    let mut unique = fake.event_ids();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), events, "an event arrived twice");

    // The file is done: the next run reads it whole, and finds only duplicates.
    let (out, s) = run(&[]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!((n(&s, "duplicates"), n(&s, "forwarded")), (40, 0), "{s}");
}

/// SIGINT part-way through a file: the run exits 130 with nothing left claimed, and the next run
/// resumes after the chunks the first one settled, delivering the rest with no event twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_run_resumes_where_it_stopped() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fake = FakeOpenPipeline::start("tok").await.expect("fake");
    let ca = fake.write_ca_file(dir.path()).expect("ca");
    let file = dir.path().join("findings.ndjson");
    std::fs::copy(fixture(), &file).expect("copy");
    // Three chunks of 5 are accepted; the fourth request hangs until the run is interrupted.
    fake.push_faults(
        [Fault::Pass, Fault::Pass, Fault::Pass]
            .into_iter()
            .chain((0..50).map(|_| Fault::Slow(std::time::Duration::from_secs(2)))),
    );
    let options = ["--chunk", "5", "--max-in-flight", "1"];
    let child = common::spawn(&mut forward_to(&fake, &ca, dir.path(), &options, &file));
    common::wait_until("the fourth request never came", || {
        fake.counters().requests >= 4
    })
    .await;
    let out = common::interrupt_and_wait(child).await;
    assert_eq!(out.status.code(), Some(130), "{}", stderr(&out));
    common::assert_nothing_pending(dir.path());

    fake.clear_faults();
    let sum = dir.path().join("s.json");
    let mut again = forward_to(
        &fake,
        &ca,
        dir.path(),
        &["--chunk", "5", "--summary", sum.to_str().expect("utf8")],
        &file,
    );
    let out = tokio::task::spawn_blocking(move || again.output())
        .await
        .expect("join")
        .expect("run");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("resuming after line 15"),
        "{}",
        stderr(&out)
    );
    let s: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&sum).expect("summary")).expect("json");
    assert_eq!((n(&s, "received"), n(&s, "forwarded")), (25, 25), "{s}");
    assert_eq!(
        common::delivered_once(&fake).len(),
        40,
        "every finding delivered"
    );
}
