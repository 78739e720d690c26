//! Sender benchmark: events per second delivered to the fake OpenPipeline endpoint over loopback
//! HTTPS, and HTTP requests needed per 1000 typical findings (goal: at most 5).
//!
//! Findings are the generated fixtures (tests/fixtures/guardduty/generated/raw-findings-40.ndjson)
//! mapped to raw-format events by `gdfwd_model::map_finding`, repeated to 1000 findings. Run with
//! `cargo bench -p gdfwd-sink-http --bench sender`; see bench/sender/README.md.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use gdfwd_core::sink::{OutEvent, Sink};
use gdfwd_model::{Enrichment, Format, Item, map_finding, parse_document};
use gdfwd_sink_http::{HttpSink, HttpSinkConfig, Secret, StaticToken};
use gdfwd_testkit_openpipeline::FakeOpenPipeline;

const TOKEN: &str = "dt0c01.BENCH.TOKEN";
const FINDINGS: usize = 1000;

/// 1000 findings' events (the 40 fixtures repeated), and the number of findings.
fn events() -> Vec<OutEvent> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/fixtures/guardduty/generated/raw-findings-40.ndjson"
    );
    let text = std::fs::read_to_string(path).expect("fixture");
    let findings: Vec<_> = parse_document(&text)
        .into_iter()
        .filter_map(|r| match r {
            Ok(Item::Finding(f)) => Some(f),
            _ => None,
        })
        .collect();
    assert!(!findings.is_empty());
    let mut out = Vec::new();
    for f in findings.iter().cycle().take(FINDINGS) {
        for e in map_finding(f, Format::Raw, &Enrichment::default()) {
            out.push(OutEvent {
                id: e.id,
                json: serde_json::to_string(&e.body).expect("json"),
            });
        }
    }
    out
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let events = events();
    let bytes: usize = events.iter().map(|e| e.json.len()).sum();
    let (fake, dir, sinks) = rt.block_on(async {
        let fake = FakeOpenPipeline::start(TOKEN).await.expect("fake");
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = fake.write_ca_file(dir.path()).expect("ca");
        let mut sinks = Vec::new();
        for compress in [false, true] {
            let mut cfg = HttpSinkConfig::new(&fake.endpoint(), false).expect("config");
            cfg.ca_file = Some(ca.clone());
            cfg.compress = compress;
            let sink =
                HttpSink::new(cfg, Arc::new(StaticToken::new(Secret::new(TOKEN)))).expect("sink");
            sinks.push((compress, sink));
        }
        (fake, dir, sinks)
    });

    for (compress, sink) in &sinks {
        let before = fake.counters();
        let report = rt.block_on(sink.send(&events, None));
        assert!(report.outcomes.iter().all(|o| o.is_sent()));
        let after = fake.counters();
        let sent_bytes: usize = fake
            .requests()
            .iter()
            .rev()
            .take((after.requests - before.requests) as usize)
            .map(|r| r.body_bytes)
            .sum();
        eprintln!(
            "compress={compress}: {FINDINGS} findings -> {} events ({} bytes of JSON) -> {} requests ({} body bytes on the wire)",
            events.len(),
            bytes,
            after.requests - before.requests,
            sent_bytes
        );
    }

    rate_limited_utilisation(&rt, &fake, &ca_of(&dir, &fake));

    // Timed runs only need counts; keeping ~1000 events per iteration would grow memory by GBs.
    fake.set_record_events(false);
    let mut g = c.benchmark_group("send_1000_findings_https");
    g.throughput(Throughput::Elements(events.len() as u64));
    g.sample_size(20);
    for (compress, sink) in &sinks {
        let name = if *compress { "gzip" } else { "plain" };
        g.bench_function(name, |b| {
            b.iter(|| {
                let report = rt.block_on(sink.send(black_box(&events), None));
                assert_eq!(report.stats.events_sent as usize, events.len());
            });
        });
    }
    g.finish();
}

/// The CA file the fake's sinks use (written again: cheap, and keeps `bench`'s setup as is).
fn ca_of(dir: &tempfile::TempDir, fake: &FakeOpenPipeline) -> std::path::PathBuf {
    fake.write_ca_file(dir.path()).expect("ca")
}

/// How much of `--max-events-per-second` the sender uses: 2000 small events at 200/s in batches
/// of 20, the achieved rate as the fake saw it (first to last accepted event). The tests assert
/// that the limit is never exceeded; how close the sender gets to it is measured here.
fn rate_limited_utilisation(
    rt: &tokio::runtime::Runtime,
    fake: &FakeOpenPipeline,
    ca: &std::path::Path,
) {
    let (limit, n) = (200u32, 2000usize);
    let mut cfg = HttpSinkConfig::new(&fake.endpoint(), false).expect("config");
    cfg.ca_file = Some(ca.to_owned());
    cfg.max_batch_events = 20;
    cfg.max_events_per_second = std::num::NonZeroU32::new(limit);
    let sink = HttpSink::new(cfg, Arc::new(StaticToken::new(Secret::new(TOKEN)))).expect("sink");
    let events: Vec<OutEvent> = (0..n)
        .map(|i| OutEvent {
            id: format!("rate-{i:06}"),
            json: format!(r#"{{"uuid":"rate-{i:06}"}}"#),
        })
        .collect();
    let first = fake.events().len();
    let report = rt.block_on(sink.send(&events, None));
    assert!(report.outcomes.iter().all(|o| o.is_sent()));
    let times: Vec<_> = fake.events()[first..].iter().map(|e| e.received).collect();
    let span = match (times.first(), times.last()) {
        (Some(a), Some(b)) => b.duration_since(*a).as_secs_f64().max(0.001),
        _ => 0.001,
    };
    eprintln!(
        "rate-limited: {n} events at --max-events-per-second {limit}: {:.1} events/s achieved ({:.0}% of the limit) over {span:.1} s",
        n as f64 / span,
        100.0 * n as f64 / span / f64::from(limit)
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
