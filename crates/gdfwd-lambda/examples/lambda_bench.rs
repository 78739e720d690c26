//! Benchmark of the `bootstrap` binary (see `bench/lambda/README.md`): init time, per-invocation
//! latency, peak RSS, CPU time per finding, DynamoDB and HTTP requests per finding.
//!
//! Runs the real binary through the fake Runtime API against moto (behind the counting proxy, so
//! DynamoDB requests are counted) and the fake OpenPipeline over HTTPS. Usage:
//! `lambda_bench <path/to/bootstrap> [findings] [batch sizes, comma-separated]`.
//!
//! Each batch size gets a fresh process and fresh finding ids (so dedup claims are all new), and
//! its CPU time is read from `/proc/<pid>/stat` after init and after the last invocation, so init
//! is not charged to the findings.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use gdfwd_testkit_lambda::{Bootstrap, RuntimeApi};
use gdfwd_testkit_moto::{self as moto, FaultProxy};
use gdfwd_testkit_openpipeline::FakeOpenPipeline;
use serde_json::{Value, json};

const TOKEN: &str = "dt0c01.BENCHTOKEN.SECRETPART";

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/guardduty")
}

/// Base findings as EventBridge events: the generated ones (newest line per finding) and the
/// generated bare findings wrapped in an envelope.
fn base_events() -> Vec<Value> {
    let mut out = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let eb = std::fs::read_to_string(
        fixtures().join("generated/eventbridge-60-findings-with-updates.ndjson"),
    )
    .expect("fixture");
    for l in eb.lines().filter(|l| !l.trim().is_empty()) {
        let v: Value = serde_json::from_str(l).expect("json");
        if seen.insert(v["detail"]["id"].as_str().unwrap_or_default().to_owned()) {
            out.push(v);
        }
    }
    let raw = std::fs::read_to_string(fixtures().join("generated/raw-findings-40.ndjson"))
        .expect("fixture");
    for l in raw.lines().filter(|l| !l.trim().is_empty()) {
        let f: Value = serde_json::from_str(l).expect("json");
        out.push(json!({
            "version": "0", "id": "00000000-0000-0000-0000-000000000000",
            "detail-type": "GuardDuty Finding", "source": "aws.guardduty",
            "account": f["accountId"], "region": f["region"], "time": f["updatedAt"],
            "resources": [], "detail": f,
        }));
    }
    out
}

/// `n` events with distinct finding ids (`<run>-<i>-<original id>`).
fn variants(base: &[Value], n: usize, run: &str) -> Vec<String> {
    (0..n)
        .map(|i| {
            let mut e = base[i % base.len()].clone();
            let id = format!("{run}{i:06}{}", e["detail"]["id"].as_str().unwrap_or("x"));
            e["detail"]["id"] = json!(id);
            e.to_string()
        })
        .collect()
}

fn sqs_batch(bodies: &[String], offset: usize) -> Value {
    json!({"Records": bodies.iter().enumerate().map(|(i, b)| json!({
        "messageId": format!("m{}", offset + i), "receiptHandle": "rh", "body": b,
        "attributes": {}, "messageAttributes": {}, "eventSource": "aws:sqs",
        "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:bench", "awsRegion": "us-east-1"
    })).collect::<Vec<_>>()})
}

/// (utime + stime) in seconds, and VmHWM in kB.
fn proc_usage(pid: u32) -> (f64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which is in parentheses and may contain spaces).
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    let hz = std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .trim()
                .parse::<f64>()
                .ok()
        })
        .unwrap_or(100.0);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let hwm = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    (ticks / hz, hwm)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let bootstrap = PathBuf::from(
        args.get(1)
            .expect("usage: lambda_bench <bootstrap> [findings] [batch sizes]"),
    );
    let findings: usize = args.get(2).and_then(|v| v.parse().ok()).unwrap_or(10_000);
    let sizes: Vec<usize> = args
        .get(3)
        .map_or("10,100", String::as_str)
        .split(',')
        .filter_map(|v| v.trim().parse().ok())
        .collect();

    let proxy = FaultProxy::start_moto().await;
    let sdk = moto::sdk_config().await;
    let table = moto::unique_name("gdfwd-bench");
    gdfwd_store_dynamodb::create_table(&aws_sdk_dynamodb::Client::new(&sdk), &table)
        .await
        .expect("create table");
    let secret_arn = aws_sdk_secretsmanager::Client::new(&sdk)
        .create_secret()
        .name(moto::unique_name("bench-token"))
        .secret_string(json!({"DYNATRACE_OPENPIPELINE_INGEST_API_TOKEN": TOKEN}).to_string())
        .send()
        .await
        .expect("secret")
        .arn()
        .expect("arn")
        .to_owned();
    let fake = FakeOpenPipeline::start(TOKEN).await.expect("fake");
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = fake.write_ca_file(dir.path()).expect("ca");
    let creds = moto::test_credentials();
    let env: Vec<(String, String)> = [
        ("AWS_ENDPOINT_URL", proxy.endpoint()),
        ("AWS_ACCESS_KEY_ID", creds.access_key_id().to_owned()),
        (
            "AWS_SECRET_ACCESS_KEY",
            creds.secret_access_key().to_owned(),
        ),
        ("DYNATRACE_OPENPIPELINE_SECURITY_ENDPOINT", fake.endpoint()),
        ("AWS_SECRET_ARN", secret_arn),
        ("DEDUP_TABLE_NAME", table.clone()),
        ("GDFWD_CA_FILE", ca.display().to_string()),
        ("MAX_EVENTS_PER_SECOND", "1000000".to_owned()),
        ("MAX_REQUESTS_PER_SECOND", "100000".to_owned()),
        ("MAX_CONCURRENCY", "1".to_owned()),
        (
            "ENRICH",
            std::env::var("BENCH_ENRICH").unwrap_or_else(|_| "false".to_owned()),
        ),
        ("LOG_LEVEL", "warn".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();

    let base = base_events();
    println!(
        "findings per run: {findings}; bootstrap: {}",
        bootstrap.display()
    );
    println!(
        "| batch | init ms | p50 ms | p99 ms | peak RSS MB | CPU ms/finding | DynamoDB req/finding | HTTP req/finding | wall s |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for (run, &size) in sizes.iter().enumerate() {
        let api = RuntimeApi::start().await;
        let b = Bootstrap::spawn(&bootstrap, &api, &env);
        let first = api
            .await_first_poll(Duration::from_secs(60))
            .await
            .expect("bootstrap polls");
        let init = first.duration_since(b.spawned_at());
        let (cpu0, _) = proc_usage(b.pid());
        let ddb0 = proxy.count("DynamoDB");
        let http0 = fake.counters().requests;
        let bodies = variants(
            &base,
            findings,
            &format!("r{}{}", std::process::id() % 1000, run),
        );
        let mut lat = Vec::new();
        let started = Instant::now();
        for (n, chunk) in bodies.chunks(size.max(1)).enumerate() {
            let t = Instant::now();
            let r = api
                .invoke(&sqs_batch(chunk, n * size), Duration::from_secs(60))
                .await;
            lat.push(t.elapsed());
            let failed = r
                .response()
                .and_then(|v| v["batchItemFailures"].as_array())
                .map_or(usize::MAX, Vec::len);
            assert_eq!(failed, 0, "batch {n}: {r:?}");
        }
        let wall = started.elapsed();
        let (cpu1, hwm) = proc_usage(b.pid());
        lat.sort();
        let ddb = proxy.count("DynamoDB") - ddb0;
        let http = fake.counters().requests - http0;
        let n = findings as f64;
        println!(
            "| {size} | {:.1} | {:.1} | {:.1} | {:.1} | {:.4} | {:.2} | {:.3} | {:.1} |",
            init.as_secs_f64() * 1e3,
            percentile(&lat, 0.5).as_secs_f64() * 1e3,
            percentile(&lat, 0.99).as_secs_f64() * 1e3,
            hwm as f64 / 1024.0,
            (cpu1 - cpu0) * 1e3 / n,
            ddb as f64 / n,
            http as f64 / n,
            wall.as_secs_f64(),
        );
        drop(b);
    }
}
