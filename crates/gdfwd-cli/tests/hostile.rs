//! The hostile-input catalogue (issue #16): one case per input class and per defect fixed, each
//! run through `gdfwd forward --dry-run` with the SQLite store in a temp dir, asserting the exact
//! outcome of the hostile record (forwarded / invalid with its reason / skipped) and that the
//! good records around it are forwarded unchanged.

use std::path::Path;
use std::process::Output;

use serde_json::{Value, json};

mod common;

use common::gdfwd;

/// What one dry run made of a file: its exit code, summary, events and stderr.
struct Run {
    code: Option<i32>,
    summary: Value,
    events: Vec<Value>,
    stderr: String,
}

impl Run {
    fn count(&self, key: &str) -> u64 {
        self.summary[key].as_u64().unwrap_or(0)
    }

    /// The events of finding `id`, in order.
    fn events_of(&self, id: &str) -> Vec<&Value> {
        self.events
            .iter()
            .filter(|e| e["detail"]["id"] == id)
            .collect()
    }

    /// The first line of stderr holding `text`.
    fn stderr_line(&self, text: &str) -> &str {
        self.stderr
            .lines()
            .find(|l| l.contains(text))
            .unwrap_or_else(|| panic!("no line with {text:?}: {}", self.stderr))
    }

    /// The two good neighbours each went through as one unchanged event.
    fn assert_neighbours_forwarded(&self) {
        for id in ["good-before", "good-after"] {
            let evs = self.events_of(id);
            assert_eq!(evs.len(), 1, "{id}: {}", self.stderr);
            assert_eq!(evs[0]["detail"], good(id), "{id} unchanged");
        }
    }

    /// The case's outcome: `(forwarded, invalid, skipped)` records and the exit code.
    fn assert_counts(&self, forwarded: u64, invalid: u64, skipped: u64) {
        assert_eq!(
            (
                self.count("forwarded"),
                self.count("invalid"),
                self.count("skipped")
            ),
            (forwarded, invalid, skipped),
            "{}\n{}",
            self.summary,
            self.stderr
        );
        assert_eq!(
            self.count("received"),
            forwarded + invalid + skipped,
            "every record counted once: {}",
            self.summary
        );
        let want = if invalid > 0 { 2 } else { 0 };
        assert_eq!(self.code, Some(want), "{}", self.stderr);
    }
}

fn good(id: &str) -> Value {
    json!({
        "id": id, "accountId": "111122223333", "region": "eu-west-1",
        "updatedAt": "2025-02-25T20:40:06.721Z", "type": "Recon:EC2/Portscan", "severity": 5,
        "title": "good", "resource": {"resourceType": "Instance", "instanceDetails": {"instanceId": "i-1"}}
    })
}

/// A good finding with `id`, changed by `f`, as one NDJSON line.
fn line_with(id: &str, f: impl FnOnce(&mut serde_json::Map<String, Value>)) -> String {
    let mut v = good(id);
    if let Value::Object(m) = &mut v {
        f(m);
    }
    v.to_string()
}

/// `gdfwd forward --dry-run` (with the SQLite store under `XDG_STATE_HOME` in a temp dir) on a
/// file holding a good finding, `hostile`, and another good finding, one per line.
fn dry_run_between(hostile: &[u8]) -> Run {
    dry_run_between_with(hostile, &[])
}

/// [`dry_run_between`] with `extra` options.
fn dry_run_between_with(hostile: &[u8], extra: &[&str]) -> Run {
    let mut bytes = good("good-before").to_string().into_bytes();
    bytes.push(b'\n');
    bytes.extend_from_slice(hostile);
    bytes.push(b'\n');
    bytes.extend_from_slice(good("good-after").to_string().as_bytes());
    bytes.push(b'\n');
    dry_run_with(&bytes, extra)
}

fn dry_run(bytes: &[u8]) -> Run {
    dry_run_with(bytes, &[])
}

fn dry_run_with(bytes: &[u8], extra: &[&str]) -> Run {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("input.ndjson");
    std::fs::write(&file, bytes).expect("write input");
    let sum = dir.path().join("summary.json");
    let out = gdfwd(&["forward", "--dry-run", "--summary"], dir.path())
        .arg(&sum)
        .args(extra)
        .arg(&file)
        .output()
        .expect("run gdfwd");
    parse_run(&out, &sum)
}

fn parse_run(out: &Output, sum: &Path) -> Run {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let summary = std::fs::read_to_string(sum)
        .ok()
        .and_then(|s| serde_json::from_str(&s).ok())
        .unwrap_or_else(|| panic!("no summary: {stderr}"));
    let events = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("stdout not JSON ({e})")))
        .collect();
    Run {
        code: out.status.code(),
        summary,
        events,
        stderr,
    }
}

// ---------------------------------------------------------------------------------------------
// Defects of issue #16

/// Defect 1: an `updatedAt` far in the future would have blocked every real version.
#[test]
fn an_updated_at_more_than_a_day_ahead_is_invalid_naming_the_field() {
    let r = dry_run_between(
        line_with("future", |m| {
            m.insert("updatedAt".into(), json!("9999-12-31T00:00:00Z"));
        })
        .as_bytes(),
    );
    r.assert_counts(2, 1, 0);
    r.assert_neighbours_forwarded();
    assert!(r.events_of("future").is_empty());
    assert!(
        r.stderr.contains("`updatedAt` is implausible") && r.stderr.contains("more than a day"),
        "{}",
        r.stderr
    );
}

/// Defect 1: epoch microseconds are not read as milliseconds thousands of years ahead.
#[test]
fn an_epoch_updated_at_in_microseconds_is_invalid_naming_the_field() {
    let r = dry_run_between(
        line_with("micros", |m| {
            m.insert("updatedAt".into(), json!(1_740_516_006_721_000_i64));
        })
        .as_bytes(),
    );
    r.assert_counts(2, 1, 0);
    r.assert_neighbours_forwarded();
    assert!(
        r.stderr.contains("`updatedAt` is implausible") && r.stderr.contains("microseconds"),
        "{}",
        r.stderr
    );
}

/// Defect 3 and the "10 KB id" class: the SQLite store holds long ids, so it is forwarded
/// (the DynamoDB store refuses it alone, before claiming: see its `refusal` tests).
#[test]
fn a_10_kb_id_is_forwarded_with_the_sqlite_store() {
    let id = "i".repeat(10 * 1024);
    let r = dry_run_between(line_with(&id, |_| {}).as_bytes());
    r.assert_counts(3, 0, 0);
    r.assert_neighbours_forwarded();
    assert_eq!(r.events_of(&id).len(), 1);
}

/// Defect 4: one finding with 2,000 ECS containers is 100 events, the last summarising the rest.
#[test]
fn a_finding_with_2000_containers_is_capped_at_100_events() {
    let containers: Vec<Value> = (0..2000)
        .map(|i| json!({"name": format!("c{i}"), "image": "nginx:1"}))
        .collect();
    let wide = line_with("wide", |m| {
        m.insert(
            "resource".into(),
            json!({"resourceType": "ECSCluster", "ecsClusterDetails": {"name": "cl",
                "taskDetails": {"arn": "t", "containers": containers}}}),
        );
    });
    let r = dry_run_between(wide.as_bytes());
    r.assert_counts(3, 0, 0);
    r.assert_neighbours_forwarded();
    let evs = r.events_of("wide");
    assert_eq!(evs.len(), 100);
    assert_eq!(r.count("events"), 102);
    let last = evs[99];
    assert_eq!(
        (&last["gdfwd.objects.total"], &last["gdfwd.objects.omitted"]),
        (&json!(2000), &json!(1900))
    );
}

// ---------------------------------------------------------------------------------------------
// Input classes

/// Nesting beyond serde_json's recursion limit (128) is one invalid line, not a crash.
#[test]
fn nesting_beyond_serdes_limit_is_one_invalid_record() {
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let r = dry_run_between(deep.as_bytes());
    r.assert_counts(2, 1, 0);
    r.assert_neighbours_forwarded();
    assert!(r.stderr.contains("recursion limit"), "{}", r.stderr);
}

/// Duplicate keys: the last one wins, as in every JSON parser that keeps one value.
#[test]
fn duplicate_keys_take_the_last_value() {
    let line = good("dup-first")
        .to_string()
        .replacen('{', r#"{"id":"dup-ignored","#, 1)
        .replacen(r#""id":"dup-first""#, r#""id":"dup-last""#, 1);
    let r = dry_run_between(line.as_bytes());
    r.assert_counts(3, 0, 0);
    r.assert_neighbours_forwarded();
    assert_eq!(r.events_of("dup-last").len(), 1);
    assert!(r.events_of("dup-ignored").is_empty());
}

/// Numbers as strings (severity, updatedAt epoch) and whole numbers as ids are accepted (digits
/// name a finding or account safely); a fractional id is not: invalid, naming the field.
#[test]
fn numbers_as_strings_and_the_reverse() {
    let strings = line_with("num-strings", |m| {
        m.insert("severity".into(), json!("8.5"));
        m.insert("updatedAt".into(), json!("1740516006721"));
        m.insert("accountId".into(), json!(111_122_223_333_u64));
    });
    let numeric_id = line_with("x", |m| {
        m.insert("id".into(), json!(7));
    });
    let r = dry_run_between(format!("{strings}\n{numeric_id}").as_bytes());
    r.assert_counts(4, 0, 0);
    r.assert_neighbours_forwarded();
    assert_eq!(r.events_of("num-strings").len(), 1);
    let seven: Vec<_> = r.events.iter().filter(|e| e["detail"]["id"] == 7).collect();
    assert_eq!(seven.len(), 1, "the id is forwarded as it came");

    let fractional_id = line_with("x", |m| {
        m.insert("id".into(), json!(7.5));
    });
    let r = dry_run_between(fractional_id.as_bytes());
    r.assert_counts(2, 1, 0);
    r.assert_neighbours_forwarded();
    assert!(
        r.stderr.contains("field `id` has the wrong type"),
        "{}",
        r.stderr
    );
}

/// NaN and huge severities: forwarded unchanged (the store keeps no absurd number).
#[test]
fn nan_and_huge_severities_are_forwarded() {
    let nan = line_with("sev-nan", |m| {
        m.insert("severity".into(), json!("NaN"));
    });
    let huge = line_with("sev-huge", |m| {
        m.insert("severity".into(), json!(1e300));
    });
    let r = dry_run_between(format!("{nan}\n{huge}").as_bytes());
    r.assert_counts(4, 0, 0);
    r.assert_neighbours_forwarded();
    assert_eq!(r.events_of("sev-nan")[0]["detail"]["severity"], "NaN");
    assert_eq!(r.events_of("sev-huge")[0]["detail"]["severity"], 1e300);
}

/// An empty id identifies nothing: invalid, naming the field.
#[test]
fn an_empty_id_is_invalid() {
    let r = dry_run_between(line_with("", |_| {}).as_bytes());
    r.assert_counts(2, 1, 0);
    r.assert_neighbours_forwarded();
    assert!(r.stderr.contains("no `id` field"), "{}", r.stderr);
}

/// A line that is not UTF-8 is invalid alone, naming its line; the lines around it count.
#[test]
fn a_line_that_is_not_utf8_is_invalid_alone() {
    let mut bad = line_with("latin1", |_| {}).into_bytes();
    bad.extend_from_slice(b"\xff\xfe");
    let r = dry_run_between(&bad);
    r.assert_counts(2, 1, 0);
    r.assert_neighbours_forwarded();
    assert!(
        r.stderr.contains(":2:") && r.stderr.contains("not UTF-8"),
        "{}",
        r.stderr
    );
}

/// A byte-order mark and CRLF line ends (files saved by Windows tools) change nothing.
#[test]
fn a_bom_and_crlf_line_ends_are_accepted() {
    let mut bytes = "\u{feff}".as_bytes().to_vec();
    for id in ["good-before", "middle", "good-after"] {
        bytes.extend_from_slice(good(id).to_string().as_bytes());
        bytes.extend_from_slice(b"\r\n");
    }
    let r = dry_run(&bytes);
    r.assert_counts(3, 0, 0);
    r.assert_neighbours_forwarded();
    assert_eq!(r.events_of("middle").len(), 1);
}

/// A well-formed event that is not a finding is skipped and counted, not forwarded.
#[test]
fn another_event_type_is_skipped() {
    let other = json!({"source": "aws.guardduty", "detail-type": "AWS API Call via CloudTrail",
        "detail": {"eventName": "CreateSampleFindings"}});
    let r = dry_run_between(other.to_string().as_bytes());
    r.assert_counts(2, 0, 1);
    r.assert_neighbours_forwarded();
}

/// One 10 MB line (a huge description) is over the default `--max-record-bytes` (1 MiB): one
/// invalid record naming its line and the limit, its neighbours forwarded. Under a raised limit it
/// is one finding, forwarded whole as one event.
#[test]
fn a_10_mb_single_line_is_invalid_by_default_and_forwarded_under_a_raised_limit() {
    let big = line_with("big", |m| {
        m.insert("description".into(), json!("d".repeat(10 * 1024 * 1024)));
    });
    let r = dry_run_between(big.as_bytes());
    r.assert_counts(2, 1, 0);
    r.assert_neighbours_forwarded();
    assert!(
        r.stderr.contains("input.ndjson:2: record of") && r.stderr.contains("--max-record-bytes"),
        "{}",
        r.stderr
    );

    let r = dry_run_between_with(big.as_bytes(), &["--max-record-bytes", "16777216"]);
    r.assert_counts(3, 0, 0);
    r.assert_neighbours_forwarded();
    let evs = r.events_of("big");
    assert_eq!(evs.len(), 1);
    assert_eq!(
        evs[0]["detail"]["description"].as_str().map(str::len),
        Some(10 * 1024 * 1024)
    );
}

// ---------------------------------------------------------------------------------------------
// Session 10's probe

/// A finding's id, account and region in a log line (`filtered` at info) are escaped: they
/// cannot forge a log line or send terminal escapes. So is a bidi override in an invalid line,
/// and a long id there is cut.
#[test]
fn finding_text_in_log_and_invalid_lines_is_escaped() {
    let forged = "evil\u{1b}[31mRED\u{7}\r\nFAKE: gdfwd forward: received 0";
    let filtered = line_with(forged, |m| {
        m.insert("region".into(), json!("eu-central-1\n\u{1b}[2J\u{202e}"));
    });
    let r = dry_run_between_with(
        filtered.as_bytes(),
        &["--log-level", "info", "--include-region", "eu-west-1"],
    );
    assert_eq!(
        (
            r.count("received"),
            r.count("forwarded"),
            r.count("filtered")
        ),
        (3, 2, 1),
        "{}",
        r.summary
    );
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let line = r.stderr_line("filtered: not claimed");
    assert!(line.contains(r"evil\u{1b}[31mRED\u{7}\r\nFAKE"), "{line}");
    assert!(line.contains(r"eu-central-1\n\u{1b}[2J\u{202e}"), "{line}");
    for c in ['\u{1b}', '\u{7}', '\r', '\u{202e}'] {
        assert!(!r.stderr.contains(c), "{c:?} printed raw: {}", r.stderr);
    }
    assert!(
        !r.stderr.lines().any(|l| l.starts_with("FAKE")),
        "{}",
        r.stderr
    );

    let long = format!("\u{202e}{}", "x".repeat(10_000));
    let future = line_with(&long, |m| {
        m.insert("updatedAt".into(), json!("9999-12-31T00:00:00Z"));
    });
    let r = dry_run_between(future.as_bytes());
    r.assert_counts(2, 1, 0);
    let line = r.stderr_line("invalid:");
    assert!(line.contains(r"finding \u{202e}xxx"), "{line}");
    assert!(line.len() < 1000, "the id is cut: {} bytes", line.len());
}

/// A record under 1 MiB whose bulk every narrowed copy would carry (101 buckets, 200,000
/// numbers in one field) is forwarded as the events that fit the copy budget, the last one
/// saying how many buckets got no event; it once took 3.4 GB as 100 copies.
#[test]
fn a_heavy_split_finding_is_forwarded_within_the_copy_budget() {
    let heavy = line_with("heavy", |m| {
        let buckets: Vec<Value> = (0..101).map(|i| json!({"name": format!("b{i}")})).collect();
        m.insert(
            "resource".into(),
            json!({"resourceType": "S3Bucket", "s3BucketDetails": buckets}),
        );
        m.insert(
            "service".into(),
            json!({"additionalInfo": {"x": vec![0; 200_000]}}),
        );
    });
    assert!(heavy.len() < 1024 * 1024);
    let r = dry_run_between(heavy.as_bytes());
    r.assert_counts(3, 0, 0);
    r.assert_neighbours_forwarded();
    let evs = r.events_of("heavy");
    assert!(!evs.is_empty() && evs.len() < 100, "{} events", evs.len());
    let last = evs.last().expect("an event");
    assert_eq!(last["gdfwd.objects.total"], 101);
    assert_eq!(last["gdfwd.objects.omitted"], 101 - evs.len());
}

/// Thousands of resource-level S3 objects naming a bucket that is not among thousands of
/// buckets (each lookup once scanned every bucket: 16 s of CPU for this record; the test does
/// not time it): each object is an event up to the cap, the last summarising the rest.
#[test]
fn many_s3_objects_naming_a_missing_bucket_are_capped_at_100_events() {
    let wide = line_with("objects", |m| {
        m.insert(
            "resource".into(),
            json!({"resourceType": "S3Object",
                "s3BucketDetails": vec![json!({"name": "b"}); 18_000],
                "s3ObjectDetails": vec![json!({"objectArn": "arn:aws:s3:::z/k", "key": "k"}); 18_000]}),
        );
    });
    let r = dry_run_between_with(wide.as_bytes(), &["--format", "semantic"]);
    r.assert_counts(3, 0, 0);
    let evs: Vec<&Value> = r
        .events
        .iter()
        .filter(|e| e["finding.id"] == "objects")
        .collect();
    assert_eq!(evs.len(), 100);
    assert_eq!(evs[99]["gdfwd.objects.total"], 18_000);
}

/// `bytes` fed through a pipe to a dry run that names the pipe as its input: a named pipe made
/// in a temp dir when `fifo`, else `/dev/stdin`.
fn dry_run_through_pipe(bytes: &[u8], fifo: bool) -> Run {
    use std::io::Write;
    let dir = tempfile::tempdir().expect("tempdir");
    let sum = dir.path().join("summary.json");
    let input = if fifo {
        let p = dir.path().join("in.fifo");
        let made = std::process::Command::new("mkfifo")
            .arg(&p)
            .status()
            .expect("mkfifo");
        assert!(made.success());
        p
    } else {
        std::path::PathBuf::from("/dev/stdin")
    };
    let mut cmd = gdfwd(&["forward", "--dry-run", "--summary"], dir.path());
    cmd.arg(&sum)
        .arg(&input)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().expect("run gdfwd");
    let mut writer: Box<dyn Write> = if fifo {
        Box::new(
            std::fs::OpenOptions::new()
                .write(true)
                .open(&input)
                .expect("open fifo"),
        )
    } else {
        Box::new(child.stdin.take().expect("stdin"))
    };
    writer.write_all(bytes).expect("write");
    drop(writer);
    let out = child.wait_with_output().expect("wait");
    parse_run(&out, &sum)
}

/// A named pipe, `<(...)` or `/dev/stdin` cannot seek: it is read as a stream, plain or gzip.
#[test]
fn named_pipes_and_dev_stdin_are_read_as_streams() {
    let text = format!("{}\n{}\n", good("good-before"), good("good-after"));
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, text.as_bytes()).expect("gzip");
    let gz = gz.finish().expect("gzip");
    for (bytes, fifo) in [(text.as_bytes(), true), (&gz[..], true), (&gz[..], false)] {
        let r = dry_run_through_pipe(bytes, fifo);
        r.assert_counts(2, 0, 0);
        r.assert_neighbours_forwarded();
    }
}

/// A skipped record (another event type, or a near miss of GuardDuty's spelling) is counted and,
/// at `--log-level info`, named with its input and line.
#[test]
fn skipped_records_are_named_at_info() {
    let near_miss = json!({"source": "aws.guardduty", "detail-type": "GuardDuty finding",
        "account": "111122223333", "region": "eu-west-1", "detail": good("near-miss")});
    let r = dry_run_between_with(near_miss.to_string().as_bytes(), &["--log-level", "info"]);
    r.assert_counts(2, 0, 1);
    r.assert_neighbours_forwarded();
    let line = r.stderr_line("skipped: not a GuardDuty finding");
    assert!(
        line.contains("input.ndjson")
            && line.contains("line=2")
            && line.contains("GuardDuty finding"),
        "{line}"
    );
}

/// An input of garbage lines names the first 100 and counts the rest in one line; the summary
/// counts every one, and the good records around them go through.
#[test]
fn a_flood_of_invalid_lines_names_the_first_hundred_and_counts_the_rest() {
    let garbage = "x\n".repeat(250);
    let r = dry_run_between(garbage.trim_end().as_bytes());
    r.assert_counts(2, 250, 0);
    r.assert_neighbours_forwarded();
    let named = r
        .stderr
        .lines()
        .filter(|l| l.starts_with("invalid: "))
        .count();
    assert_eq!(named, 101, "{}", r.stderr);
    assert!(
        r.stderr.contains("input.ndjson:101: ") && !r.stderr.contains("input.ndjson:102: "),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains("150 more problem line(s) not shown"),
        "{}",
        r.stderr
    );
}

/// Past the hundred named problems, the line saying a source stopped early (a truncated gzip)
/// is still printed.
#[test]
fn a_broken_source_says_so_after_a_flood_of_invalid_lines() {
    let mut text = format!("{}\n", good("good-before"));
    text.push_str(&"x\n".repeat(150));
    for i in 0..200 {
        text.push_str(&format!("{}\n", good(&format!("tail-{i}"))));
    }
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, text.as_bytes()).expect("gzip");
    let mut gz = gz.finish().expect("gzip");
    gz.truncate(gz.len() - 100);
    let r = dry_run(&gz);
    assert_eq!(r.code, Some(2), "{}", r.stderr);
    assert!(
        r.stderr.contains("50 more problem line(s) not shown"),
        "{}",
        r.stderr
    );
    let stop = r.stderr_line("reading stopped");
    assert!(stop.contains("gzip data broken"), "{stop}");
    assert_eq!(r.count("invalid"), 151, "{}", r.summary);
}
