//! Structured fuzzing on stable Rust (issue #16): real and generated findings from
//! `tests/fixtures/guardduty/` (attribution in its `real/SOURCES.md`), mutated at the JSON level
//! (a value replaced by arbitrary JSON, a key removed, a number made a string or huge) and at
//! the byte level, through parsing, the split and both mappings. Properties: no panic; every
//! record is counted exactly once (a finding, a skip or an error); the output of one finding is
//! bounded (at most `MAX_EVENTS_PER_FINDING` events, each about the size of the finding).
//!
//! Runs in CI with a bounded number of cases (`PROPTEST_CASES` overrides it); `fuzz/` has
//! `cargo fuzz` targets seeded from the same fixtures for longer local runs (docs/fuzzing.md).
//! Every crash found becomes a test case here or in the model's unit tests.

use std::path::Path;
use std::sync::OnceLock;

use gdfwd_model::{
    Enrichment, Format, Item, MAX_EVENTS_PER_FINDING, map_finding, parse_document, parse_value,
    split,
};
use proptest::prelude::*;
use serde_json::{Value, json};

/// Every fixture record (a file's JSON, or one NDJSON line), parsed as JSON.
fn corpus() -> &'static [Value] {
    static CORPUS: OnceLock<Vec<Value>> = OnceLock::new();
    CORPUS.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/guardduty");
        let mut out = Vec::new();
        for dir in ["real", "generated"] {
            let mut files: Vec<_> = std::fs::read_dir(root.join(dir))
                .expect("fixture dir")
                .map(|e| e.expect("entry").path())
                .collect();
            files.sort();
            for f in files {
                let text = std::fs::read_to_string(&f).expect("fixture");
                match f.extension().and_then(|e| e.to_str()) {
                    Some("json") => out.push(serde_json::from_str(&text).expect("fixture JSON")),
                    Some("ndjson") => out.extend(
                        text.lines()
                            .filter(|l| !l.trim().is_empty())
                            .map(|l| serde_json::from_str::<Value>(l).expect("fixture line")),
                    ),
                    _ => {}
                }
            }
        }
        assert!(out.len() > 100, "fixtures found: {}", out.len());
        out
    })
}

/// One JSON-level mutation, applied at the `pick`-th node (pre-order) of the document.
#[derive(Debug, Clone)]
enum Mutation {
    Replace(Value),
    RemoveKey,
    NumberToString,
    Huge,
    Wrap,
}

fn arb_leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        ".{0,16}".prop_map(Value::from),
        Just(json!("9999-12-31T00:00:00Z")),
        Just(json!(1_740_516_006_721_000_i64)),
        Just(json!([])),
        Just(json!({})),
    ]
}

fn arb_mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        arb_leaf().prop_map(Mutation::Replace),
        Just(Mutation::RemoveKey),
        Just(Mutation::NumberToString),
        Just(Mutation::Huge),
        Just(Mutation::Wrap),
    ]
}

/// Applies `m` at the node numbered `pick` modulo the node count; returns whether it did.
fn mutate(v: &mut Value, pick: &mut usize, m: &Mutation) -> bool {
    if *pick == 0 {
        match m {
            Mutation::Replace(new) => *v = new.clone(),
            Mutation::NumberToString => {
                if let Value::Number(n) = v {
                    *v = Value::from(n.to_string());
                }
            }
            Mutation::Huge => *v = json!(1e300),
            Mutation::Wrap => *v = Value::Array(vec![v.take()]),
            Mutation::RemoveKey => {
                if let Value::Object(map) = v
                    && let Some(k) = map.keys().next().cloned()
                {
                    map.remove(&k);
                }
            }
        }
        return true;
    }
    *pick -= 1;
    match v {
        Value::Array(items) => items.iter_mut().any(|c| mutate(c, pick, m)),
        Value::Object(map) => map.values_mut().any(|c| mutate(c, pick, m)),
        _ => false,
    }
}

/// Maps every finding of `text` in both formats, checking the bounds; returns the number of
/// results (findings, skips, errors).
fn check_document(text: &str) -> Result<usize, TestCaseError> {
    let results = parse_document(text);
    for item in results.iter().flatten() {
        if let Item::Finding(f) = item {
            check_finding(f)?;
        }
    }
    Ok(results.len())
}

fn check_finding(f: &gdfwd_model::Finding) -> Result<(), TestCaseError> {
    let size = serde_json::to_string(&f.detail).expect("json").len()
        + f.envelope
            .as_ref()
            .map_or(0, |e| serde_json::to_string(e).expect("json").len());
    let objects = split(f);
    prop_assert!(!objects.is_empty() && objects.len() <= MAX_EVENTS_PER_FINDING);
    for format in [Format::Raw, Format::Semantic] {
        let events = map_finding(f, format, &Enrichment::default());
        prop_assert!(!events.is_empty() && events.len() <= MAX_EVENTS_PER_FINDING);
        for e in &events {
            let n = serde_json::to_string(&e.body).expect("json").len();
            // The finding, plus the envelope and fields the mapping adds and the summary of
            // omitted objects (20 names of at most 200 characters).
            prop_assert!(
                n <= size + 4096 + 20 * 800,
                "{format:?} event of {n} bytes from a finding of {size}"
            );
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// A fixture mutated at the JSON level is one record: exactly one result, and any finding
    /// maps within the bounds.
    #[test]
    fn mutated_fixture_values(i in any::<prop::sample::Index>(), pick in any::<usize>(),
                              m in arb_mutation()) {
        let mut v = i.get(corpus()).clone();
        let nodes = count_nodes(&v);
        let mut at = pick % nodes;
        mutate(&mut v, &mut at, &m);
        let results = parse_value(v.clone());
        // A wrapped (array) record may hold any number of records; a plain object is one.
        if v.is_object() {
            prop_assert_eq!(results.len(), 1, "{:?}", results);
        }
        for item in results.into_iter().flatten() {
            if let Item::Finding(f) = item {
                check_finding(&f)?;
            }
        }
        // The same through the text parser (one line).
        let n = check_document(&v.to_string())?;
        if v.is_object() {
            prop_assert_eq!(n, 1);
        }
    }

    /// A fixture's text with bytes flipped, inserted or deleted, as one NDJSON line between two
    /// intact fixtures: no panic, and the intact neighbours still parse as they did alone.
    #[test]
    fn mutated_fixture_bytes(i in any::<prop::sample::Index>(),
                             edits in prop::collection::vec((any::<usize>(), any::<u8>(), 0..3u8), 1..8)) {
        let original = i.get(corpus());
        let mut bytes = original.to_string().into_bytes();
        for (at, byte, op) in edits {
            let at = at % (bytes.len() + 1);
            match op {
                0 if at < bytes.len() => bytes[at] = byte,
                1 => bytes.insert(at, byte),
                _ if at < bytes.len() => { bytes.remove(at); }
                _ => {}
            }
        }
        let middle = String::from_utf8_lossy(&bytes).replace('\n', " ");
        let neighbour = corpus()[0].to_string();
        let alone = check_document(&neighbour)?;
        let text = format!("{neighbour}\n{middle}\n{neighbour}\n");
        let results = parse_document(&text);
        prop_assert!(results.len() >= 2 * alone, "{}", results.len());
        check_document(&text)?;
    }
}

fn count_nodes(v: &Value) -> usize {
    1 + match v {
        Value::Array(items) => items.iter().map(count_nodes).sum(),
        Value::Object(map) => map.values().map(count_nodes).sum(),
        _ => 0,
    }
}
