//! parse + split + map throughput in findings per CPU-second of this thread.
//!
//! Criterion (`cargo bench -p gdfwd-model --bench map`) measures wall time, which on a shared
//! machine says more about the neighbours than about this code. This measures the thread's own
//! CPU time (Linux `/proc/thread-self/schedstat`), which is what "findings per second per core"
//! means. Run: `cargo run --release -p gdfwd-model --example cpu_throughput`.

/// The Lambda's allocator (mimalloc), so the numbers are its shipped ones (`gdfwd` uses glibc
/// malloc: docs/performance.md, "Allocator").
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::hint::black_box;
use std::path::PathBuf;

use gdfwd_model::{Enrichment, Format, Item, map_finding, parse_document};

/// Nanoseconds this thread has spent on a CPU.
fn thread_cpu_ns() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    s.split_whitespace().next()?.parse().ok()
}

fn main() {
    let dir =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/guardduty/generated");
    let docs: Vec<String> = [
        "eventbridge-60-findings-with-updates.ndjson",
        "raw-findings-40.ndjson",
    ]
    .iter()
    .map(|n| std::fs::read_to_string(dir.join(n)).expect("generated fixtures are readable"))
    .collect();
    let enrichment = Enrichment {
        account_name: Some("payments-prod".into()),
        account_alias: None,
        fields: Vec::new(),
    };
    if thread_cpu_ns().is_none() {
        eprintln!("/proc/thread-self/schedstat is not readable: Linux only");
        return;
    }
    let iterations = 300;
    for (mode, format, serialise) in [
        ("parse only", None, false),
        ("raw", Some(Format::Raw), false),
        ("semantic", Some(Format::Semantic), false),
        ("raw + serialise", Some(Format::Raw), true),
        ("semantic + serialise", Some(Format::Semantic), true),
    ] {
        let start = thread_cpu_ns().unwrap_or(0);
        let mut findings = 0usize;
        let mut events = 0usize;
        for _ in 0..iterations {
            for doc in &docs {
                for item in parse_document(black_box(doc)) {
                    let Ok(Item::Finding(f)) = item else { continue };
                    findings += 1;
                    let Some(format) = format else { continue };
                    for ev in map_finding(&f, format, &enrichment) {
                        events += 1;
                        if serialise {
                            black_box(serde_json::to_string(&ev.body).expect("serialises"));
                        } else {
                            black_box(&ev);
                        }
                    }
                }
            }
        }
        let secs = thread_cpu_ns().unwrap_or(0).saturating_sub(start) as f64 / 1e9;
        println!(
            "{mode:22} {:>8.0} findings/CPU-s  ({findings} findings, {events} events, {secs:.2} CPU-s)",
            findings as f64 / secs
        );
    }
}
