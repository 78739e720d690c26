//! Attack sequences (GuardDuty Extended Threat Detection) in both formats, over findings generated
//! from the botocore GuardDuty model (`scripts/gen-attack-sequence-fixtures`): one event per
//! resource of `service.detection.sequence.resources`, each naming its resource and the sequence.

use std::collections::HashSet;
use std::path::PathBuf;

use gdfwd_model::{Enrichment, Finding, Format, Item, map_finding, parse_document};
use serde_json::Value;

fn generated() -> Vec<Finding> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/guardduty/generated/attack-sequences.ndjson");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let findings: Vec<Finding> = parse_document(&text)
        .into_iter()
        .map(|r| match r {
            Ok(Item::Finding(f)) => *f,
            other => panic!("not a finding: {other:?}"),
        })
        .collect();
    assert_eq!(findings.len(), 6);
    findings
}

fn sequence(f: &Finding) -> &Value {
    &f.detail["service"]["detection"]["sequence"]
}

fn resources(f: &Finding) -> Vec<Value> {
    sequence(f)["resources"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// The distinct values of the indicators with `key`, sequence first, then signals.
fn indicator_values(f: &Finding, key: &str) -> Vec<String> {
    let seq = sequence(f);
    let mut lists = vec![seq["sequenceIndicators"].clone()];
    for s in seq["signals"].as_array().into_iter().flatten() {
        lists.push(s["signalIndicators"].clone());
    }
    let mut out: Vec<String> = Vec::new();
    for ind in lists.iter().filter_map(Value::as_array).flatten() {
        if ind["key"] == key {
            for v in ind["values"].as_array().into_iter().flatten() {
                let v = v.as_str().expect("string").to_owned();
                if !out.contains(&v) {
                    out.push(v);
                }
            }
        }
    }
    out
}

#[test]
fn semantic_events_one_per_resource_with_the_sequence_and_the_resource() {
    for f in generated() {
        let res = resources(&f);
        let events = map_finding(&f, Format::Semantic, &Enrichment::default());
        assert_eq!(events.len(), res.len().max(1), "{}", f.id);
        let ids: HashSet<&str> = events.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(ids.len(), events.len(), "distinct event ids");
        let again = map_finding(&f, Format::Semantic, &Enrichment::default());
        assert_eq!(events, again, "deterministic");

        let seq = sequence(&f);
        let signals = seq["signals"].as_array().map_or(0, Vec::len);
        for (i, ev) in events.iter().enumerate() {
            let b = &ev.body;
            assert_eq!(ev.object_index as usize, i);
            assert_eq!(b["aws.guardduty.sequence.uid"], seq["uid"], "{}", f.id);
            assert_eq!(b["aws.guardduty.sequence.signal_count"], signals);
            assert_eq!(b["aws.guardduty.sequence.resource_count"], res.len());
            assert_eq!(
                b["aws.guardduty.sequence.tactics"],
                serde_json::json!(indicator_values(&f, "ATTACK_TACTIC"))
            );
            assert_eq!(
                b["aws.guardduty.sequence.techniques"],
                serde_json::json!(indicator_values(&f, "ATTACK_TECHNIQUE"))
            );
            // Sequences are CRITICAL as GuardDuty scores them (9.0 and above).
            assert_eq!(b["dt.security.risk.level"], "CRITICAL");
            assert_eq!(b["finding.severity"], "CRITICAL");
            match res.get(i) {
                Some(r) => {
                    let name = r.get("name").filter(|n| n != &"").unwrap_or(&r["uid"]);
                    assert_eq!(b["aws.resource.id"], r["uid"], "{}", f.id);
                    assert_eq!(&b["aws.resource.name"], name);
                    assert_eq!(b["object.id"], r["uid"]);
                    assert_eq!(&b["object.name"], name);
                    assert!(b["aws.resource.type"].is_string(), "{b}");
                    assert!(b["object.type"].is_string(), "{b}");
                }
                None => {
                    assert_eq!(b["aws.resource.type"], "AWS::GuardDuty::AttackSequence");
                    assert_eq!(b["object.type"], "ATTACK_SEQUENCE");
                }
            }
        }
    }
}

#[test]
fn semantic_resource_types_follow_cloudformation_names() {
    let f = generated().remove(0);
    let events = map_finding(&f, Format::Semantic, &Enrichment::default());
    let types: Vec<(&str, &str)> = events
        .iter()
        .map(|e| {
            (
                e.body["aws.resource.type"].as_str().expect("type"),
                e.body["object.type"].as_str().expect("object type"),
            )
        })
        .collect();
    assert_eq!(
        types,
        vec![
            ("AWS::EC2::Instance", "EC2_INSTANCE"),
            ("AWS::S3::Bucket", "S3_BUCKET"),
            ("AWS::IAM::AccessKey", "IAM_ACCESS_KEY"),
        ]
    );
    assert_eq!(events[2].body["aws.resource.name"], "john_doe");
}

#[test]
fn raw_events_narrow_the_resources_and_keep_everything_else() {
    for f in generated() {
        let res = resources(&f);
        let events = map_finding(&f, Format::Raw, &Enrichment::default());
        assert_eq!(events.len(), res.len().max(1), "{}", f.id);
        let semantic = map_finding(&f, Format::Semantic, &Enrichment::default());
        for (i, ev) in events.iter().enumerate() {
            assert_eq!(ev.id, semantic[i].id, "same ids in both formats");
            assert_eq!(ev.body["uuid"], ev.id.as_str());
            let mut want = Value::Object(f.detail.clone());
            if res.len() > 1 {
                want["service"]["detection"]["sequence"]["resources"] =
                    Value::Array(vec![res[i].clone()]);
            }
            assert_eq!(ev.body["detail"], want, "{} event {i}", f.id);
        }
    }
}

#[test]
fn enrichment_and_sequences_go_together() {
    let f = generated().remove(0);
    let enrichment = Enrichment {
        account_name: Some("prod".into()),
        account_alias: None,
        fields: Vec::new(),
    };
    for format in [Format::Raw, Format::Semantic] {
        for ev in map_finding(&f, format, &enrichment) {
            assert_eq!(ev.body["aws.account.name"], "prod", "{format}");
        }
    }
}
