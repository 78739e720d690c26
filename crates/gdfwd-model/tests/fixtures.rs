//! Every fixture in `tests/fixtures/guardduty/` parses and maps in both formats, with the
//! counts the fixtures' README promises.

use std::collections::BTreeMap;
use std::path::PathBuf;

use gdfwd_model::{
    Enrichment, Finding, Format, Item, ModelError, RecordError, map_finding, parse_document, split,
};
use serde_json::Value;

fn fixtures_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/guardduty")
}

fn read(rel: &str) -> String {
    let path = fixtures_dir().join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

#[derive(Debug, Default)]
struct Parsed {
    findings: Vec<Finding>,
    skipped: Vec<String>,
    errors: Vec<RecordError>,
}

fn parse(text: &str) -> Parsed {
    let mut p = Parsed::default();
    for r in parse_document(text) {
        match r {
            Ok(Item::Finding(f)) => p.findings.push(*f),
            Ok(Item::Skipped { reason }) => p.skipped.push(reason),
            Err(e) => p.errors.push(e),
        }
    }
    p
}

/// Maps every finding in both formats and checks the invariants every event must keep.
fn map_all(findings: &[Finding]) -> (usize, usize) {
    let enrichment = Enrichment {
        account_name: Some("acct".into()),
        account_alias: None,
        fields: Vec::new(),
    };
    let (mut raw_n, mut sem_n) = (0, 0);
    for f in findings {
        let raw = map_finding(f, Format::Raw, &enrichment);
        let sem = map_finding(f, Format::Semantic, &enrichment);
        assert!(!raw.is_empty(), "{}: no events", f.id);
        assert_eq!(
            raw.len(),
            sem.len(),
            "{}: formats disagree on the split",
            f.id
        );
        assert_eq!(raw.len(), split(f).len());
        for (r, s) in raw.iter().zip(&sem) {
            assert_eq!(r.id, s.id);
            assert_eq!(r.object_index, s.object_index);
            assert_eq!(r.body["uuid"], Value::from(r.id.as_str()));
            assert_eq!(r.body["detail-type"], "GuardDuty Finding");
            assert_eq!(r.body["aws.account.name"], "acct");
            assert!(r.body["detail"].is_object());
            assert_eq!(s.body["event.id"], Value::from(s.id.as_str()));
            assert_eq!(s.body["finding.id"], Value::from(f.id.as_str()));
            assert_eq!(s.body["aws.account.id"], Value::from(f.account_id.as_str()));
            assert!(s.body.get("timestamp").is_none());
            // Flat: no nested objects in a semantic record.
            let obj = s.body.as_object().expect("semantic body is an object");
            assert!(
                obj.values().all(|v| !v.is_object() && !v.is_array()),
                "{obj:?}"
            );
        }
        raw_n += raw.len();
        sem_n += sem.len();
    }
    (raw_n, sem_n)
}

#[test]
fn every_real_fixture_parses_or_fails_for_a_stated_reason() {
    let dir = fixtures_dir().join("real");
    let mut seen = 0;
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .expect("fixtures dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".json"))
        .collect();
    names.sort();
    for name in names {
        seen += 1;
        let p = parse(&read(&format!("real/{name}")));
        match name.as_str() {
            n if n.starts_with("sumologic__NEGATIVE") => {
                assert!(p.findings.is_empty() && p.errors.is_empty(), "{n}: {p:?}");
                assert_eq!(p.skipped.len(), 1, "{n}");
            }
            // Test scenarios without region/updatedAt: invalid, reported as such.
            "guardduty-soar__scenario-plugins-test-new_event.json"
            | "guardduty-soar__scenario-plugins-test-override_event.json" => {
                assert!(p.findings.is_empty(), "{name}");
                assert_eq!(p.errors.len(), 1, "{name}");
                assert_eq!(
                    p.errors[0].error,
                    ModelError::MissingField("region"),
                    "{name}"
                );
            }
            // The partial envelope supplies the region, but nothing supplies the account.
            "aws-samples-waf-acl__gd2acl_test_event.json" => {
                assert_eq!(p.errors.len(), 1, "{name}");
                assert_eq!(p.errors[0].error, ModelError::MissingField("accountId"));
            }
            n => {
                assert!(p.errors.is_empty() && p.skipped.is_empty(), "{n}: {p:?}");
                assert_eq!(p.findings.len(), 1, "{n}");
                let (raw, sem) = map_all(&p.findings);
                assert_eq!(raw, sem);
            }
        }
    }
    assert_eq!(seen, 31, "the README promises 31 real samples");
}

#[test]
fn generated_eventbridge_ndjson_has_one_finding_per_line_of_60_ids() {
    let text = read("generated/eventbridge-60-findings-with-updates.ndjson");
    let p = parse(&text);
    assert!(
        p.errors.is_empty() && p.skipped.is_empty(),
        "{:?} {:?}",
        p.errors,
        p.skipped
    );
    // The fixture README says 150 lines; the file has 153 (120 versions, 33 redeliveries).
    assert_eq!(text.lines().filter(|l| !l.trim().is_empty()).count(), 153);
    assert_eq!(p.findings.len(), 153);
    let distinct: std::collections::BTreeSet<(&str, i64)> = p
        .findings
        .iter()
        .map(|f| (f.id.as_str(), f.updated_at.millis()))
        .collect();
    assert_eq!(distinct.len(), 120);
    assert!(p.findings.iter().all(|f| f.envelope.is_some()));
    let mut versions: BTreeMap<&str, std::collections::BTreeSet<i64>> = BTreeMap::new();
    for f in &p.findings {
        versions
            .entry(&f.id)
            .or_default()
            .insert(f.updated_at.millis());
    }
    assert_eq!(versions.len(), 60);
    assert!(
        versions.values().all(|v| v.len() == 2),
        "each finding has 2 versions"
    );
    let (raw, _) = map_all(&p.findings);
    assert!(
        raw > 150,
        "multi-bucket and multi-container findings split: {raw}"
    );
}

#[test]
fn generated_raw_ndjson_has_40_bare_findings() {
    let p = parse(&read("generated/raw-findings-40.ndjson"));
    assert!(p.errors.is_empty() && p.skipped.is_empty());
    assert_eq!(p.findings.len(), 40);
    assert!(p.findings.iter().all(|f| f.envelope.is_none()));
    map_all(&p.findings);
}

#[test]
fn a_json_array_of_mixed_fixtures_keeps_positions() {
    // An array of: a bare finding, the CloudTrail event (skipped), an invalid scenario, an
    // EventBridge event; errors name the element number, without line numbers.
    let doc = format!(
        "[{},{},{},{}]",
        read("real/aws-samples-auto-response__guardduty_ec2_event.json"),
        read("real/sumologic__NEGATIVE-cloudtrail-api-call-source-aws-guardduty.json"),
        read("real/guardduty-soar__scenario-plugins-test-new_event.json"),
        read("real/guardduty-soar__Recon-EC2-Portscan.json"),
    );
    let results = parse_document(&doc);
    assert_eq!(results.len(), 4);
    assert!(matches!(results[0], Ok(Item::Finding(_))));
    assert!(matches!(results[1], Ok(Item::Skipped { .. })));
    match &results[2] {
        Err(RecordError {
            record: 3,
            line: None,
            ..
        }) => {}
        other => panic!("{other:?}"),
    }
    assert!(matches!(results[3], Ok(Item::Finding(_))));
}

#[test]
fn empty_wrapper_yields_nothing() {
    assert!(parse_document(r#"{"findings": []}"#).is_empty());
    assert!(parse_document("\n  \n").is_empty());
}

#[test]
fn pascal_case_fixture_reads_like_camel_case() {
    let p = parse(&read(
        "real/guardduty-soar__Discovery-RDS-Tor-Ip-Caller.json",
    ));
    let f = &p.findings[0];
    assert_eq!(f.id, "4d45b480b4504647b8096428a2ad4c82");
    assert_eq!(f.account_id, "057372331974");
    assert_eq!(f.resource_type(), Some("RDSDBInstance"));
    assert_eq!(f.severity(), Some(5.0));
    let d = Value::Object(f.detail.clone());
    assert_eq!(
        d["resource"]["rdsDbInstanceDetails"]["tags"][0]["key"],
        "GeneratedFindingRDSDBInstanceTag1"
    );
    assert_eq!(
        d["service"]["action"]["rdsLoginAttemptAction"]["remoteIpDetails"]["ipAddressV4"],
        "1.2.3.4"
    );
    assert!(
        !serde_json::to_string(&d)
            .expect("json")
            .contains("\"Resource\"")
    );
}
