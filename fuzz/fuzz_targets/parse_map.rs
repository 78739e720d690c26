//! Any bytes, as a file or message body, through parsing, the split and both mappings: no
//! panic, and one finding's output within its bounds (the same properties as the stable
//! proptest suite `crates/gdfwd-model/tests/fuzz_fixtures.rs`, for much longer runs).
#![no_main]

use gdfwd_model::{
    Enrichment, Format, Item, MAX_EVENTS_PER_FINDING, map_finding, parse_document, split,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    for item in parse_document(&text).into_iter().flatten() {
        let Item::Finding(f) = item else { continue };
        let objects = split(&f);
        assert!(!objects.is_empty() && objects.len() <= MAX_EVENTS_PER_FINDING);
        let size = serde_json::to_string(&f.detail).map_or(0, |s| s.len())
            + f.envelope
                .as_ref()
                .and_then(|e| serde_json::to_string(e).ok())
                .map_or(0, |s| s.len());
        for format in [Format::Raw, Format::Semantic] {
            let events = map_finding(&f, format, &Enrichment::default());
            assert!(!events.is_empty() && events.len() <= MAX_EVENTS_PER_FINDING);
            for e in events {
                let n = serde_json::to_string(&e.body).map_or(0, |s| s.len());
                assert!(
                    n <= size + 4096 + 20 * 800,
                    "{n} bytes from a finding of {size}"
                );
            }
        }
    }
});
