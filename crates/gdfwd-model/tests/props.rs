//! Property tests: the parser never panics, and `raw` carries the finding JSON-equal.

use gdfwd_model::{Enrichment, Format, Item, map_finding, parse_document, parse_value};
use proptest::prelude::*;
use serde_json::{Map, Value, json};

/// Arbitrary JSON trees, with keys drawn partly from the names the parser looks at so the
/// interesting branches (envelopes, wrappers, PascalCase, resources) are actually reached.
fn arb_json() -> impl Strategy<Value = Value> {
    let key = prop_oneof![
        Just("id".to_owned()),
        Just("Id".to_owned()),
        Just("accountId".to_owned()),
        Just("AccountId".to_owned()),
        Just("region".to_owned()),
        Just("updatedAt".to_owned()),
        Just("UpdatedAt".to_owned()),
        Just("detail".to_owned()),
        Just("detail-type".to_owned()),
        Just("source".to_owned()),
        Just("findings".to_owned()),
        Just("resource".to_owned()),
        Just("Resource".to_owned()),
        Just("resourceType".to_owned()),
        Just("s3BucketDetails".to_owned()),
        Just("s3ObjectDetails".to_owned()),
        Just("ecsClusterDetails".to_owned()),
        Just("taskDetails".to_owned()),
        Just("containers".to_owned()),
        Just("containerDetails".to_owned()),
        Just("severity".to_owned()),
        Just("image".to_owned()),
        ".{0,8}",
    ];
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        ".{0,12}".prop_map(Value::from),
        prop_oneof![
            Just("aws.guardduty"),
            Just("GuardDuty Finding"),
            Just("S3Bucket"),
            Just("S3Object"),
            Just("ECSCluster"),
            Just("Container"),
            Just("2025-02-25T20:40:06.721Z"),
            Just("host:5000/a:b@sha256:1"),
        ]
        .prop_map(Value::from),
    ];
    leaf.prop_recursive(6, 64, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((key.clone(), inner), 0..8)
                .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<String, Value>>())),
        ]
    })
}

fn map_everything(results: Vec<Item>) {
    for item in results {
        if let Item::Finding(f) = item {
            for format in [Format::Raw, Format::Semantic] {
                let events = map_finding(&f, format, &Enrichment::default());
                assert!(!events.is_empty());
            }
        }
    }
}

/// A resource: arbitrary JSON, or an S3 / ECS resource with arbitrary list elements so the
/// split paths are exercised.
fn arb_resource() -> impl Strategy<Value = Value> {
    let items = || prop::collection::vec(arb_json(), 0..4);
    prop_oneof![
        arb_json(),
        (prop_oneof![Just("S3Bucket"), Just("S3Object")], items(), items(), items()).prop_map(
            |(rt, buckets, nested, objects)| {
                let mut buckets = buckets;
                if let Some(Value::Object(b)) = buckets.first_mut() {
                    b.insert("s3ObjectDetails".into(), Value::Array(nested));
                }
                json!({"resourceType": rt, "s3BucketDetails": buckets, "s3ObjectDetails": objects})
            }
        ),
        (items(), arb_json()).prop_map(|(containers, other)| json!({
            "resourceType": "ECSCluster",
            "ecsClusterDetails": {"name": "c", "taskDetails": {"containers": containers, "x": other}}
        })),
    ]
}

/// A valid finding around an arbitrary resource and arbitrary extra fields.
fn arb_finding() -> impl Strategy<Value = Value> {
    (
        arb_resource(),
        prop::collection::vec((".{1,6}", arb_json()), 0..4),
    )
        .prop_map(|(resource, extra)| {
            let mut f = Map::new();
            for (k, v) in extra {
                f.insert(format!("x-{k}"), v);
            }
            f.insert("id".into(), json!("f-1"));
            f.insert("accountId".into(), json!("111122223333"));
            f.insert("region".into(), json!("eu-west-1"));
            f.insert("updatedAt".into(), json!("2025-02-25T20:40:06.721Z"));
            f.insert("resource".into(), resource);
            Value::Object(f)
        })
}

/// Removes the narrowed lists so a split event's detail can be compared with its finding.
fn without_split_lists(mut v: Value) -> Value {
    if let Some(r) = v.get_mut("resource").and_then(Value::as_object_mut) {
        r.remove("s3BucketDetails");
        r.remove("s3ObjectDetails");
        if let Some(t) = r
            .get_mut("ecsClusterDetails")
            .and_then(|e| e.get_mut("taskDetails"))
            .and_then(Value::as_object_mut)
        {
            t.remove("containers");
        }
    }
    v
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn parse_value_never_panics(v in arb_json()) {
        let items: Vec<Item> = parse_value(v).into_iter().filter_map(Result::ok).collect();
        map_everything(items);
    }

    #[test]
    fn parse_document_never_panics_on_strings(s in "\\PC{0,200}") {
        let items: Vec<Item> = parse_document(&s).into_iter().filter_map(Result::ok).collect();
        map_everything(items);
    }

    #[test]
    fn parse_document_never_panics_on_json_text(v in arb_json(), ndjson in any::<bool>()) {
        let text = if ndjson {
            format!("{v}\n{v}\nnot json\n")
        } else {
            serde_json::to_string_pretty(&v).expect("serialises")
        };
        let items: Vec<Item> = parse_document(&text).into_iter().filter_map(Result::ok).collect();
        map_everything(items);
    }

    #[test]
    fn raw_detail_is_the_input_finding(input in arb_finding()) {
        let results = parse_value(input.clone());
        let f = match results.as_slice() {
            [Ok(Item::Finding(f))] => f,
            other => panic!("a valid finding did not parse: {other:?}"),
        };
        let events = map_finding(f, Format::Raw, &Enrichment::default());
        prop_assert!(!events.is_empty());
        if events.len() == 1 {
            prop_assert_eq!(&events[0].body["detail"], &input);
        } else {
            for e in &events {
                let detail = e.body["detail"].clone();
                prop_assert_eq!(without_split_lists(detail.clone()), without_split_lists(input.clone()));
                // The narrowed list holds exactly one element, taken from the input.
                let r = &detail["resource"];
                let narrowed = [
                    &r["s3BucketDetails"],
                    &r["s3ObjectDetails"],
                    &r["ecsClusterDetails"]["taskDetails"]["containers"],
                ];
                prop_assert!(narrowed.iter().any(|l| l.as_array().is_some_and(|a| a.len() == 1)));
            }
            let ids: std::collections::BTreeSet<_> = events.iter().map(|e| e.id.clone()).collect();
            prop_assert_eq!(ids.len(), events.len());
        }
    }
}
