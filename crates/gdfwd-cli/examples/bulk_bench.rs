//! Benchmark of `gdfwd forward` on a bulk file (see bench/bulk/README.md): N generated findings
//! in one NDJSON file, the SQLite dedup store, the fake OpenPipeline over loopback HTTPS.
//!
//! Usage: `bulk_bench <gdfwd binary> [findings]` (default 1,000,000). The binary runs under
//! `/usr/bin/time -v`, which reports its peak RSS and CPU time; the fake runs in this process
//! (its CPU time is reported apart: on a real deployment Dynatrace pays it).
//!
//! With `BULK_SOURCE=s3` the same findings are uploaded to moto S3 as a GuardDuty export tree
//! (3 accounts x 2 regions, [`S3_OBJECT_FINDINGS`] findings per gzip object, one object a day)
//! and read as `s3://BUCKET/export/` through a request-counting proxy; the S3 requests are
//! reported next to the OpenPipeline ones. moto: `GDFWD_TEST_MOTO_ENDPOINT`, else one is started.

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use gdfwd_testkit_openpipeline::FakeOpenPipeline;

#[path = "../tests/common/s3export.rs"]
mod s3export;

/// Findings per export object (GuardDuty's own objects are usually smaller; larger ones keep
/// the upload of a million findings into moto short).
const S3_OBJECT_FINDINGS: usize = 5000;

const TOKEN: &str = "bench-token";

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/guardduty/generated/raw-findings-40.ndjson")
}

/// Writes `n` findings (the 40 generated ones in rotation, each with its own id) to `path`.
fn generate(n: usize, path: &Path) -> u64 {
    let base: Vec<serde_json::Value> = std::fs::read_to_string(fixtures())
        .expect("fixture")
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("fixture JSON"))
        .collect();
    let mut out = BufWriter::new(std::fs::File::create(path).expect("create input"));
    let mut bytes = 0u64;
    for i in 0..n {
        let mut f = base[i % base.len()].clone();
        f["id"] = serde_json::json!(format!("bulk{i:012}"));
        let line = f.to_string();
        bytes += line.len() as u64 + 1;
        writeln!(out, "{line}").expect("write input");
    }
    out.flush().expect("flush input");
    bytes
}

/// A `/usr/bin/time -v` field's value.
fn time_field<'a>(report: &'a str, name: &str) -> Option<&'a str> {
    report
        .lines()
        .find_map(|l| l.trim().strip_prefix(name)?.strip_prefix(": "))
}

/// This process's CPU time (utime + stime) in seconds.
fn own_cpu() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = [11, 12]
        .iter()
        .filter_map(|&i| f.get(i)?.parse::<f64>().ok())
        .sum();
    ticks / 100.0
}

/// Uploads `n` findings as an export tree into a new moto bucket; returns the `s3://` URL, the
/// compressed bytes and the objects.
async fn upload_export(n: usize) -> (String, u64, usize) {
    let client = s3export::client(&gdfwd_testkit_moto::endpoint()).await;
    let bucket = s3export::bucket_name("gdfwd-bulk-bench");
    s3export::bucket(&client, &bucket).await;
    let base = s3export::base_findings();
    let accounts = ["111100000001", "111100000002", "111100000003"];
    let regions = ["us-east-1", "eu-west-1"];
    let start = chrono::NaiveDate::from_ymd_opt(2024, 1, 1).expect("date");
    let (mut bytes, mut objects, mut i) = (0u64, 0usize, 0usize);
    while i < n {
        let scope = objects % (accounts.len() * regions.len());
        let (account, region) = (
            accounts[scope / regions.len()],
            regions[scope % regions.len()],
        );
        let day = start + chrono::Days::new((objects / 6) as u64);
        let date = day.format("%Y-%m-%d").to_string();
        let take = S3_OBJECT_FINDINGS.min(n - i);
        let lines: Vec<String> = (i..i + take)
            .map(|k| {
                let updated = format!("{date}T{:02}:{:02}:00.000Z", (k / 60) % 24, k % 60);
                s3export::finding(&base, k, &format!("bulk{k:012}"), account, region, &updated)
            })
            .collect();
        let key = s3export::key(
            "export/",
            account,
            region,
            &date,
            &format!("obj{objects:06}"),
        );
        bytes += s3export::put(&client, &bucket, &key, &lines).await;
        i += take;
        objects += 1;
    }
    (format!("s3://{bucket}/export/"), bytes, objects)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let gdfwd = PathBuf::from(args.get(1).expect("usage: bulk_bench <gdfwd> [findings]"));
    let n: usize = args
        .get(2)
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let dir = tempfile::tempdir().expect("tempdir");
    let s3 = std::env::var("BULK_SOURCE").is_ok_and(|v| v == "s3");
    let started = Instant::now();
    let (input, bytes) = if s3 {
        let (url, bytes, objects) = upload_export(n).await;
        eprintln!(
            "uploaded {n} findings in {objects} objects, {:.0} MB compressed, in {:.1}s",
            bytes as f64 / 1e6,
            started.elapsed().as_secs_f64()
        );
        (PathBuf::from(url), bytes)
    } else {
        let input = dir.path().join("findings.ndjson");
        let bytes = generate(n, &input);
        eprintln!(
            "generated {n} findings, {:.0} MB, in {:.1}s",
            bytes as f64 / 1e6,
            started.elapsed().as_secs_f64()
        );
        (input, bytes)
    };
    let proxy = if s3 {
        Some(gdfwd_testkit_moto::FaultProxy::start_moto().await)
    } else {
        None
    };

    let fake = FakeOpenPipeline::start(TOKEN).await.expect("fake");
    fake.set_record_events(false);
    let ca = fake.write_ca_file(dir.path()).expect("ca");
    let store = format!("sqlite:{}", dir.path().join("state.db").display());
    let summary = dir.path().join("summary.json");
    let cpu_before = own_cpu();
    let started = Instant::now();
    let mut cmd = Command::new("/usr/bin/time");
    cmd.arg("-v")
        .arg(&gdfwd)
        .args(["forward", "--endpoint", &fake.endpoint(), "--ca-file"])
        .arg(&ca)
        .args(["--no-enrich", "--quiet", "--store", &store, "--summary"])
        .arg(&summary)
        // Every generated finding is sent, the archived ones too (the default filter drops
        // them), so the numbers compare with runs from before the filters.
        .args(["--archived", "include"])
        .args(args.get(3..).unwrap_or_default())
        .arg(&input)
        .env("DT_API_TOKEN", TOKEN)
        .env_remove("RUST_LOG");
    if let Some(proxy) = &proxy {
        s3export::aws_env(&mut cmd, &proxy.endpoint());
    }
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .expect("join")
        .expect("run gdfwd under /usr/bin/time");
    let wall = started.elapsed().as_secs_f64();
    let fake_cpu = own_cpu() - cpu_before;
    let report = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "gdfwd failed:\n{report}");
    let s: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&summary).expect("summary"))
            .expect("summary JSON");
    assert_eq!(s["forwarded"].as_u64(), Some(n as u64), "{s}");

    let secs = |name| {
        time_field(&report, name)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let cpu = secs("User time (seconds)") + secs("System time (seconds)");
    let rss_kb: f64 = time_field(&report, "Maximum resident set size (kbytes)")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    let c = fake.counters();
    let per = |v: f64, unit: f64| v * unit / n as f64;
    println!(
        "| findings | input MB | wall s | findings/s | gdfwd CPU s | CPU s per 100k | peak RSS MB | requests | requests per 1000 | events | fake CPU s |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    println!(
        "| {n} | {:.0} | {wall:.1} | {:.0} | {cpu:.1} | {:.2} | {:.1} | {} | {:.2} | {} | {fake_cpu:.1} |",
        bytes as f64 / 1e6,
        n as f64 / wall,
        per(cpu, 100_000.0),
        rss_kb / 1024.0,
        c.requests,
        per(c.requests as f64, 1000.0),
        c.events,
    );
    if let Some(proxy) = &proxy {
        let s3_requests = proxy.total();
        println!(
            "S3 requests (list + get): {s3_requests} ({:.3} per 1000 findings); all requests per 1000 findings: {:.2}",
            per(s3_requests as f64, 1000.0),
            per((s3_requests + c.requests) as f64, 1000.0)
        );
    }
    println!(
        "gdfwd: {}",
        report
            .lines()
            .find(|l| l.starts_with("gdfwd forward:"))
            .unwrap_or("")
    );
}
