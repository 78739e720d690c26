//! Test findings for the fake: the repository's fixture findings, rewritten with generated ids,
//! accounts, regions and `updatedAt` so a test can have thousands of distinct findings with
//! realistic shapes (every fixture shape is used in turn).
//!
//! Templates come from `tests/fixtures/guardduty` through the model's own parser, so boto3-style
//! PascalCase samples arrive in the camelCase the GuardDuty API returns, and the EventBridge
//! envelopes are stripped (the API returns bare findings).

use std::path::{Path, PathBuf};

use gdfwd_model::{Item, Timestamp, parse_document};
use serde_json::{Map, Value};

/// The repository's fixture directory, from this crate's manifest directory.
pub fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/guardduty")
}

/// A deterministic 32-hex-digit id (GuardDuty's id shape) from `seed`: two FNV-1a hashes.
pub fn hex_id(seed: &str) -> String {
    let fnv = |basis: u64| {
        seed.bytes().fold(basis, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
        })
    };
    format!(
        "{:016x}{:016x}",
        fnv(0xcbf2_9ce4_8422_2325),
        fnv(0x6c62_272e_07bb_0142)
    )
}

/// Every GuardDuty finding of the fixtures (real and generated), as bare camelCase findings.
///
/// Files that cannot be read are skipped with a warning: the fixtures are test data, and a
/// test asserting on counts fails visibly anyway.
pub fn templates() -> Vec<Map<String, Value>> {
    let dir = fixture_dir();
    let mut files: Vec<PathBuf> = ["real", "generated"]
        .iter()
        .filter_map(|sub| std::fs::read_dir(dir.join(sub)).ok())
        .flatten()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "json" || e == "ndjson"))
        .collect();
    files.sort();
    let mut out = Vec::new();
    for file in files {
        let Ok(text) = std::fs::read_to_string(&file) else {
            tracing::warn!(file = %file.display(), "unreadable fixture");
            continue;
        };
        for item in parse_document(&text).into_iter().flatten() {
            if let Item::Finding(f) = item {
                out.push(f.detail);
            }
        }
    }
    out
}

/// `n` distinct 12-digit account ids.
pub fn accounts(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| format!("{:012}", 111_100_000_000 + i))
        .collect()
}

/// What to generate.
#[derive(Debug, Clone)]
pub struct GenSpec {
    pub count: usize,
    pub regions: Vec<String>,
    pub accounts: Vec<String>,
    /// `updatedAt` of the first finding of each region.
    pub start: Timestamp,
    /// Milliseconds between consecutive `updatedAt` values within a region.
    pub step_ms: i64,
    /// Groups of this many consecutive findings of a region share one `updatedAt` (ties that
    /// straddle page boundaries when it does not divide 50). `None` or `Some(1)`: all distinct.
    pub tie_every: Option<usize>,
    /// Every Nth finding is archived (`service.archived: true`).
    pub archived_every: Option<usize>,
    /// Salt for ids, so two generated sets do not collide.
    pub seed: String,
}

impl GenSpec {
    pub fn new(count: usize, regions: &[&str], accounts: Vec<String>, start: Timestamp) -> Self {
        Self {
            count,
            regions: regions.iter().map(|r| (*r).to_owned()).collect(),
            accounts,
            start,
            step_ms: 1_000,
            tie_every: None,
            archived_every: None,
            seed: "gdfwd".to_owned(),
        }
    }
}

/// Generates `spec.count` findings from the fixture templates. Finding `i` goes to region
/// `i % regions`, account `(i / regions) % accounts`.
pub fn generate(spec: &GenSpec) -> Vec<Value> {
    let templates = templates();
    if templates.is_empty() || spec.regions.is_empty() || spec.accounts.is_empty() {
        return Vec::new();
    }
    let nreg = spec.regions.len();
    (0..spec.count)
        .map(|i| {
            let mut f = templates[i % templates.len()].clone();
            let region = &spec.regions[i % nreg];
            let account = &spec.accounts[(i / nreg) % spec.accounts.len()];
            let per_region = i / nreg;
            let slot = per_region / spec.tie_every.unwrap_or(1).max(1);
            let updated = spec
                .start
                .saturating_add_millis(spec.step_ms.saturating_mul(slot as i64));
            let archived = spec.archived_every.is_some_and(|n| n > 0 && i % n == n - 1);
            let id = hex_id(&format!("{}\n{i}", spec.seed));
            rewrite(&mut f, &id, account, region, updated, archived);
            Value::Object(f)
        })
        .collect()
}

/// Rewrites one finding's identity and version in place (and its ARN to match).
pub fn rewrite(
    f: &mut Map<String, Value>,
    id: &str,
    account: &str,
    region: &str,
    updated: Timestamp,
    archived: bool,
) {
    let detector = hex_id(&format!("detector\n{region}"));
    f.insert("id".to_owned(), Value::from(id));
    f.insert("accountId".to_owned(), Value::from(account));
    f.insert("region".to_owned(), Value::from(region));
    f.insert(
        "arn".to_owned(),
        Value::from(format!(
            "arn:aws:guardduty:{region}:{account}:detector/{detector}/finding/{id}"
        )),
    );
    f.insert("updatedAt".to_owned(), Value::from(updated.to_rfc3339()));
    f.insert(
        "createdAt".to_owned(),
        Value::from(updated.saturating_add_millis(-3_600_000).to_rfc3339()),
    );
    let service = f
        .entry("service")
        .or_insert_with(|| Value::Object(Map::new()));
    if let Value::Object(s) = service {
        s.insert("archived".to_owned(), Value::from(archived));
    }
}

/// Sets a finding's `updatedAt` (a new version of it), keeping everything else.
pub fn touch(f: &mut Value, updated: Timestamp) {
    if let Some(o) = f.as_object_mut() {
        o.insert("updatedAt".to_owned(), Value::from(updated.to_rfc3339()));
    }
}
