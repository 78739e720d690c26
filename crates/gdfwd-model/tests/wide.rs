//! Issue #16, defect 4: one wide finding (an ECS task with 2,000 containers) becomes at most
//! `MAX_EVENTS_PER_FINDING` events, the last summarising the rest, in both formats.

use gdfwd_model::{Enrichment, Format, Item, MAX_EVENTS_PER_FINDING, map_finding, parse_document};
use serde_json::{Value, json};

fn wide_ecs_finding(containers: usize) -> gdfwd_model::Finding {
    let cs: Vec<Value> = (0..containers)
        .map(|i| json!({"name": format!("c{i}"), "image": "nginx:1"}))
        .collect();
    let v = json!({
        "id": "wide", "accountId": "111122223333", "region": "eu-west-1",
        "updatedAt": "2025-01-01T00:00:00Z", "type": "Execution:Runtime/NewBinaryExecuted",
        "severity": 5,
        "resource": {"resourceType": "ECSCluster",
            "ecsClusterDetails": {"name": "cl", "taskDetails": {"arn": "t", "containers": cs}}}
    });
    match parse_document(&v.to_string()).remove(0) {
        Ok(Item::Finding(f)) => *f,
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_wide_finding_is_capped_and_the_last_event_summarises_the_rest() {
    let f = wide_ecs_finding(2000);
    let finding_bytes = serde_json::to_string(&f.detail).expect("json").len();
    for format in [Format::Raw, Format::Semantic] {
        let events = map_finding(&f, format, &Enrichment::default());
        assert_eq!(events.len(), MAX_EVENTS_PER_FINDING, "{format:?}");
        let last = &events[MAX_EVENTS_PER_FINDING - 1].body;
        assert_eq!(last["gdfwd.objects.total"], 2000, "{format:?}");
        assert_eq!(last["gdfwd.objects.omitted"], 1900, "{format:?}");
        let names = last["gdfwd.objects.omitted_names"]
            .as_array()
            .expect("names");
        assert_eq!(names.len(), 20);
        assert_eq!(
            names[0], "c100",
            "the first object without an event of its own"
        );
        assert!(events[0].body.get("gdfwd.objects.total").is_none());
        // Every event is at most about the finding's size: the output is bounded by the cap.
        for e in &events {
            let n = serde_json::to_string(&e.body).expect("json").len();
            assert!(
                n <= finding_bytes + 4096,
                "{format:?}: {n} > {finding_bytes}"
            );
        }
    }
    // At the cap exactly, nothing is summarised.
    let f = wide_ecs_finding(MAX_EVENTS_PER_FINDING);
    let events = map_finding(&f, Format::Raw, &Enrichment::default());
    assert_eq!(events.len(), MAX_EVENTS_PER_FINDING);
    assert!(
        events
            .iter()
            .all(|e| e.body.get("gdfwd.objects.total").is_none())
    );
}

/// A finding whose weight is outside the split list: 101 buckets, and 200,000 numbers in one
/// field every narrowed copy carries (a hostile record under 1 MiB once took 3.4 GB as 100 raw
/// copies).
fn heavy_s3_finding() -> gdfwd_model::Finding {
    let buckets: Vec<Value> = (0..101).map(|i| json!({"name": format!("b{i}")})).collect();
    let v = json!({
        "id": "heavy", "accountId": "111122223333", "region": "eu-west-1",
        "updatedAt": "2025-01-01T00:00:00Z", "type": "Policy:S3/BucketBlockPublicAccessDisabled",
        "severity": 2,
        "resource": {"resourceType": "S3Bucket", "s3BucketDetails": buckets},
        "service": {"additionalInfo": {"x": vec![0; 200_000]}}
    });
    match parse_document(&v.to_string()).remove(0) {
        Ok(Item::Finding(f)) => *f,
        other => panic!("{other:?}"),
    }
}

#[test]
fn raw_copies_of_a_heavy_finding_are_bounded_and_the_last_event_says_what_was_left_out() {
    let f = heavy_s3_finding();
    let objects = gdfwd_model::split(&f);
    // Each copy holds the 200,000 numbers (about 6.4 MB by the estimate): one copy fits.
    assert_eq!(objects.len(), 1, "copies made");
    let events = map_finding(&f, Format::Raw, &Enrichment::default());
    assert_eq!(events.len(), objects.len());
    let last = &events.last().expect("an event").body;
    assert_eq!(last["gdfwd.objects.total"], 101);
    assert_eq!(last["gdfwd.objects.omitted"], 100);
    assert_eq!(last["gdfwd.objects.omitted_names"][0], "b1");
    assert_eq!(
        last["detail"]["resource"]["s3BucketDetails"][0]["name"],
        "b0"
    );
    // The semantic format copies nothing and still gets one event per bucket, up to the cap.
    let semantic = map_finding(&f, Format::Semantic, &Enrichment::default());
    assert_eq!(semantic.len(), MAX_EVENTS_PER_FINDING);
}

#[test]
fn a_light_split_finding_still_gets_an_event_per_object_in_raw() {
    // The same shape without the heavy field: 101 small copies fit the budget; the cap is 100.
    let mut f = heavy_s3_finding();
    f.detail.remove("service");
    let events = map_finding(&f, Format::Raw, &Enrichment::default());
    assert_eq!(events.len(), MAX_EVENTS_PER_FINDING);
    assert_eq!(
        events[MAX_EVENTS_PER_FINDING - 1].body["gdfwd.objects.omitted"],
        1
    );
}

#[test]
fn the_envelope_counts_toward_the_copy_budget() {
    // Every raw event copies the EventBridge envelope's other fields: 200,000 numbers there
    // weigh on each copy as much as in the finding.
    let buckets: Vec<Value> = (0..101).map(|i| json!({"name": format!("b{i}")})).collect();
    let v = json!({
        "source": "aws.guardduty", "detail-type": "GuardDuty Finding",
        "resources": vec![0; 200_000],
        "detail": {
            "id": "env", "accountId": "111122223333", "region": "eu-west-1",
            "updatedAt": "2025-01-01T00:00:00Z", "type": "Policy:S3/BucketBlockPublicAccessDisabled",
            "severity": 2,
            "resource": {"resourceType": "S3Bucket", "s3BucketDetails": buckets}
        }
    });
    let f = match parse_document(&v.to_string()).remove(0) {
        Ok(Item::Finding(f)) => *f,
        other => panic!("{other:?}"),
    };
    let events = map_finding(&f, Format::Raw, &Enrichment::default());
    assert_eq!(events.len(), 1, "copies made");
    assert_eq!(events[0].body["gdfwd.objects.omitted"], 100);
    assert_eq!(
        events[0].body["resources"].as_array().map(Vec::len),
        Some(200_000)
    );
}
