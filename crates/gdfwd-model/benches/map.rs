//! parse + split + map throughput over the generated fixtures (193 findings: 153 EventBridge
//! events and 40 bare findings), in both payload formats. Throughput is in findings per second
//! on one core. Run: `cargo bench -p gdfwd-model --bench map`.

/// The Lambda's allocator (mimalloc), so the numbers are its shipped ones.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::hint::black_box;
use std::path::PathBuf;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use gdfwd_model::{Enrichment, Format, Item, map_finding, parse_document};

fn documents() -> Vec<String> {
    let dir =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/guardduty/generated");
    [
        "eventbridge-60-findings-with-updates.ndjson",
        "raw-findings-40.ndjson",
    ]
    .iter()
    .map(|name| {
        let path = dir.join(name);
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
    })
    .collect()
}

/// Parses every document and maps every finding; returns the number of events.
fn run(docs: &[String], format: Format, enrichment: &Enrichment, serialise: bool) -> usize {
    let mut events = 0;
    for doc in docs {
        for item in parse_document(doc) {
            if let Ok(Item::Finding(f)) = item {
                for ev in map_finding(&f, format, enrichment) {
                    if serialise {
                        let json = serde_json::to_string(&ev.body).expect("serialises");
                        black_box(json);
                    } else {
                        black_box(&ev);
                    }
                    events += 1;
                }
            }
        }
    }
    events
}

fn bench(c: &mut Criterion) {
    let docs = documents();
    let enrichment = Enrichment {
        account_name: Some("payments-prod".into()),
        account_alias: None,
        fields: Vec::new(),
    };
    let findings: usize = docs
        .iter()
        .map(|d| {
            parse_document(d)
                .into_iter()
                .filter(|r| matches!(r, Ok(Item::Finding(_))))
                .count()
        })
        .sum();
    let mut group = c.benchmark_group("parse_split_map");
    group.throughput(Throughput::Elements(findings as u64));
    // The share of the time that is JSON parsing alone (serde_json into `Value`).
    group.bench_function("json_only", |b| {
        b.iter(|| {
            let mut n = 0;
            for doc in black_box(&docs) {
                for line in doc.lines() {
                    let v: serde_json::Value = serde_json::from_str(line).expect("fixture is JSON");
                    n += usize::from(v.is_object());
                }
            }
            n
        });
    });
    group.bench_function("parse_only", |b| {
        b.iter(|| {
            docs.iter()
                .map(|d| parse_document(black_box(d)).len())
                .sum::<usize>()
        });
    });
    for (name, format, serialise) in [
        ("raw", Format::Raw, false),
        ("semantic", Format::Semantic, false),
        ("raw+serialise", Format::Raw, true),
        ("semantic+serialise", Format::Semantic, true),
    ] {
        group.bench_function(name, |b| {
            b.iter(|| run(black_box(&docs), format, &enrichment, serialise));
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
