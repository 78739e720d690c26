//! Snapshots of both payload formats for a representative set of findings, so any change to
//! what Dynatrace receives shows up in review. Regenerate with `INSTA_UPDATE=always cargo test
//! -p gdfwd-model --test snapshots` and read the `.snap` diffs before committing them.

use std::path::PathBuf;

use gdfwd_model::{Enrichment, Finding, Format, Item, map_finding, parse_document};
use serde_json::Value;

fn read(rel: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/guardduty")
        .join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

fn findings(text: &str) -> Vec<Finding> {
    parse_document(text)
        .into_iter()
        .filter_map(|r| match r {
            Ok(Item::Finding(f)) => Some(*f),
            _ => None,
        })
        .collect()
}

fn real(name: &str) -> Finding {
    let mut f = findings(&read(&format!("real/{name}")));
    assert_eq!(f.len(), 1, "{name}");
    f.remove(0)
}

/// The first bare generated finding that matches `pred` (the file is fixed, so is the choice).
fn generated(what: &str, pred: impl Fn(&Value) -> bool) -> Finding {
    findings(&read("generated/raw-findings-40.ndjson"))
        .into_iter()
        .find(|f| pred(&f.detail["resource"]))
        .unwrap_or_else(|| panic!("no generated finding: {what}"))
}

fn rtype(r: &Value) -> &str {
    r["resourceType"].as_str().unwrap_or("")
}

fn len(v: &Value) -> usize {
    v.as_array().map_or(0, Vec::len)
}

fn enrichment() -> Enrichment {
    Enrichment {
        account_name: Some("payments-prod".into()),
        account_alias: Some("payments-prod".into()),
        fields: Vec::new(),
    }
}

/// Both formats of one finding: a list of event bodies each, with their ids.
fn check(name: &str, f: &Finding) {
    for (format, enrichment) in [
        (Format::Raw, Enrichment::default()),
        (Format::Semantic, enrichment()),
    ] {
        let events: Vec<Value> = map_finding(f, format, &enrichment)
            .into_iter()
            .map(
                |e| serde_json::json!({"id": e.id, "object_index": e.object_index, "body": e.body}),
            )
            .collect();
        insta::assert_json_snapshot!(format!("{format}__{name}"), events);
    }
}

#[test]
fn ec2_instance() {
    check(
        "ec2",
        &real("aws-samples-auto-response__guardduty_ec2_event.json"),
    );
}

#[test]
fn iam_access_key() {
    check(
        "iam_access_key",
        &real("aws-samples-auto-response__guardduty_iam_event.json"),
    );
}

#[test]
fn s3_multi_bucket() {
    let f = generated("S3 with 2+ buckets", |r| {
        rtype(r) == "S3Bucket" && len(&r["s3BucketDetails"]) > 1
    });
    check("s3_multi_bucket", &f);
}

#[test]
fn s3_single_bucket_real() {
    check(
        "s3_bucket",
        &real("aws-samples-auto-response__guardduty_s3_event.json"),
    );
}

#[test]
fn ecs_multi_container() {
    let f = generated("ECS with 2+ containers", |r| {
        rtype(r) == "ECSCluster" && len(&r["ecsClusterDetails"]["taskDetails"]["containers"]) > 1
    });
    check("ecs_multi_container", &f);
}

#[test]
fn eks_runtime_container() {
    let f = generated("EKS runtime container", |r| {
        rtype(r) == "Container" && r["eksClusterDetails"].is_object()
    });
    check("eks_runtime_container", &f);
}

#[test]
fn eks_cluster() {
    let f = generated("EKS cluster", |r| rtype(r) == "EKSCluster");
    check("eks_cluster", &f);
}

#[test]
fn lambda() {
    check("lambda", &generated("Lambda", |r| rtype(r) == "Lambda"));
}

#[test]
fn rds() {
    check("rds", &generated("RDS", |r| rtype(r) == "RDSDBInstance"));
}

#[test]
fn ebs_volume() {
    check("ebs_volume", &generated("EBS", |r| rtype(r) == "EBSVolume"));
}

#[test]
fn no_resource() {
    check("no_resource", &real("panther__high-high-sev-finding.json"));
}

#[test]
fn attack_sequence() {
    check(
        "attack_sequence",
        &real("panther__critical-critical-sev-finding.json"),
    );
}

/// A generated Extended Threat Detection finding with three resources (EC2 instance, S3 bucket,
/// access key): one event per resource.
#[test]
fn attack_sequence_resources() {
    let mut all = findings(&read("generated/attack-sequences.ndjson"));
    check("attack_sequence_resources", &all.remove(0));
}

#[test]
fn pascal_case_root_user() {
    check(
        "pascal_case_root_user",
        &real("guardduty-soar__scenario-root-user-forensics-event.json"),
    );
}

#[test]
fn pascal_case_rds() {
    check(
        "pascal_case_rds",
        &real("guardduty-soar__Discovery-RDS-Tor-Ip-Caller.json"),
    );
}
