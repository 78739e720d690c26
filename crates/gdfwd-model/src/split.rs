//! Per-object split: Dynatrace stores one detection per affected object.
//!
//! A GuardDuty finding can name several affected objects: an S3 finding lists buckets
//! (`resource.s3BucketDetails[]`), a Malware Protection for S3 finding lists objects
//! (`s3ObjectDetails[]`, inside each bucket or at resource level), and an ECS runtime finding
//! lists the task's containers (`resource.ecsClusterDetails.taskDetails.containers[]`), and an
//! attack sequence (GuardDuty Extended Threat Detection, `resourceType: AttackSequence`) lists the
//! resources its signals touched (`service.detection.sequence.resources[]`). Each becomes its own
//! event, whose `detail` is the finding with that list narrowed to the one object.
//!
//! The split is described first as a list of [`Selector`]s (indices, no copying), which the
//! semantic mapping reads directly; only [`split`] materialises narrowed copies, and it copies
//! the path to the narrowed list level by level instead of cloning whole lists once per object.
//!
//! A finding becomes at most [`MAX_EVENTS_PER_FINDING`] events (issue #16: one ECS finding with
//! 2,000 containers became 2,000 events, 135 MB, more than the Lambda's memory): objects beyond
//! are summarised in the last event ([`Overflow`]: how many, and the first names). The narrowed
//! copies [`split`] makes are also bounded in memory, by [`MAX_COPY_BYTES_PER_FINDING`]: a
//! finding of 1 MB whose weight is outside the split list (480,000 numbers in one field, 101
//! buckets) once took 3.4 GB as 100 copies; it now gets as many events as fit, and the last one
//! summarises the rest the same way.

use serde_json::{Map, Value};

use crate::finding::Finding;

/// Most events one finding becomes; the last one also summarises the objects beyond.
pub const MAX_EVENTS_PER_FINDING: usize = 100;
/// Most names of summarised objects the last event lists.
pub const MAX_OVERFLOW_NAMES: usize = 20;
/// Longest name listed (characters); longer ones are cut.
const MAX_NAME_CHARS: usize = 200;
/// Most memory (estimated by [`weight`]) the narrowed copies of one finding may take together;
/// the first copy is always made. An ordinary finding's 100 copies take 1–3 MB.
pub const MAX_COPY_BYTES_PER_FINDING: usize = 8 << 20;

/// One affected object of a finding: the finding's `detail` with the object's list narrowed to it.
#[derive(Debug, Clone, PartialEq)]
pub struct AffectedObject {
    /// 0-based index of the object within the finding; part of the deterministic event id.
    pub index: u32,
    /// The finding JSON with `s3BucketDetails` / `s3ObjectDetails` / ECS `containers` narrowed
    /// to this one object (unchanged when the finding has a single object).
    pub detail: Map<String, Value>,
    /// On the last object of a finding with more than [`MAX_EVENTS_PER_FINDING`] objects: the
    /// ones that get no event of their own.
    pub overflow: Option<Overflow>,
}

/// The objects of a finding beyond [`MAX_EVENTS_PER_FINDING`], summarised in its last event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Overflow {
    /// All affected objects of the finding.
    pub total: usize,
    /// Those without an event of their own.
    pub omitted: usize,
    /// The first [`MAX_OVERFLOW_NAMES`] omitted objects' names (container name, bucket name,
    /// object key), in the finding's order; objects without a name are counted, not listed.
    pub names: Vec<String>,
}

/// Which object of a finding an event is about, as indices into the finding's lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Selector {
    /// The finding as a whole (one object, or none we can tell apart).
    Whole,
    /// `resource.s3BucketDetails[b]`.
    Bucket(usize),
    /// `resource.s3BucketDetails[b].s3ObjectDetails[o]`.
    BucketObject(usize, usize),
    /// `resource.s3ObjectDetails[o]`, narrowed to bucket `b` too when it names one of several.
    ResourceObject(usize, Option<usize>),
    /// `resource.ecsClusterDetails.taskDetails.containers[c]`.
    EcsContainer(usize),
    /// `service.detection.sequence.resources[r]` of an attack sequence.
    SequenceResource(usize),
}

/// Splits a finding into its affected objects; always at least one, at most
/// [`MAX_EVENTS_PER_FINDING`] and as many as fit in [`MAX_COPY_BYTES_PER_FINDING`] (the last
/// then carries the [`Overflow`]).
pub fn split(finding: &Finding) -> Vec<AffectedObject> {
    let all = selectors(&finding.detail);
    if let [Selector::Whole] = all.as_slice() {
        return vec![AffectedObject {
            index: 0,
            detail: finding.detail.clone(),
            overflow: None,
        }];
    }
    // A raw event also copies the envelope's other fields (which may be anything): each copy
    // weighs that much more.
    let envelope = finding.envelope.as_ref().map_or(0, |e| {
        weight_of_map(e)
            - e.get("detail")
                .map_or(0, |d| ENTRY + "detail".len() + weight(d))
    });
    let mut objects: Vec<AffectedObject> = Vec::new();
    let mut spent = 0;
    for (i, sel) in all.iter().take(MAX_EVENTS_PER_FINDING).enumerate() {
        let detail = narrow(&finding.detail, *sel);
        spent += envelope + weight_of_map(&detail);
        if i > 0 && spent > MAX_COPY_BYTES_PER_FINDING {
            break;
        }
        objects.push(AffectedObject {
            index: u32::try_from(i).unwrap_or(u32::MAX),
            detail,
            overflow: None,
        });
    }
    let kept = objects.len();
    if let Some(last) = objects.last_mut() {
        last.overflow = overflow(&finding.detail, &all[kept..], all.len());
    }
    objects
}

/// [`selectors`] cut to [`MAX_EVENTS_PER_FINDING`], with the summary of the rest.
pub(crate) fn capped_selectors(detail: &Map<String, Value>) -> (Vec<Selector>, Option<Overflow>) {
    let mut all = selectors(detail);
    let total = all.len();
    let rest = all.split_off(MAX_EVENTS_PER_FINDING.min(total));
    let overflow = overflow(detail, &rest, total);
    (all, overflow)
}

/// The summary of the `rest` of a finding's `total` objects, which get no event of their own.
fn overflow(detail: &Map<String, Value>, rest: &[Selector], total: usize) -> Option<Overflow> {
    if rest.is_empty() {
        return None;
    }
    let names = rest
        .iter()
        .filter_map(|sel| object_name(detail, *sel))
        .take(MAX_OVERFLOW_NAMES)
        .map(|n| match n.char_indices().nth(MAX_NAME_CHARS) {
            Some((cut, _)) => format!("{}…", &n[..cut]),
            None => n.to_owned(),
        })
        .collect();
    Some(Overflow {
        total,
        omitted: rest.len(),
        names,
    })
}

/// Roughly the heap a JSON value takes (a node per value, its strings' bytes, a map entry's
/// key): an estimate to bound copies by, not an allocator's count.
fn weight(v: &Value) -> usize {
    const NODE: usize = std::mem::size_of::<Value>();
    NODE + match v {
        Value::String(s) => s.len(),
        Value::Array(a) => a.iter().map(weight).sum(),
        Value::Object(m) => weight_of_map(m),
        Value::Null | Value::Bool(_) | Value::Number(_) => 0,
    }
}

/// A map entry's own weight besides its key's bytes and its value.
const ENTRY: usize = std::mem::size_of::<String>();

fn weight_of_map(m: &Map<String, Value>) -> usize {
    m.iter().map(|(k, v)| ENTRY + k.len() + weight(v)).sum()
}

fn item(list: &Value, i: usize) -> Option<&Value> {
    list.as_array().and_then(|a| a.get(i))
}

/// The name of the selected object: a container's or bucket's `name`, an object's `key`.
fn object_name(detail: &Map<String, Value>, sel: Selector) -> Option<&str> {
    let r = detail.get("resource")?;
    let named = match sel {
        Selector::Whole => return None,
        Selector::Bucket(b) => item(r.get("s3BucketDetails")?, b)?.get("name"),
        Selector::BucketObject(b, o) => {
            let bucket = item(r.get("s3BucketDetails")?, b)?;
            item(bucket.get("s3ObjectDetails")?, o)?.get("key")
        }
        Selector::ResourceObject(o, _) => item(r.get("s3ObjectDetails")?, o)?.get("key"),
        Selector::EcsContainer(c) => {
            let task = r.get("ecsClusterDetails")?.get("taskDetails")?;
            item(task.get("containers")?, c)?.get("name")
        }
        Selector::SequenceResource(i) => {
            let res = item(attack_sequence(detail)?.get("resources")?, i)?;
            res.get("name")
                .filter(|n| n.as_str().is_some_and(|n| !n.is_empty()))
                .or_else(|| res.get("uid"))
        }
    };
    named?.as_str()
}

/// The `service.detection.sequence` of an attack sequence finding (`resourceType:
/// AttackSequence`, or a `type` starting `AttackSequence:` when the resource is missing).
/// Other findings may carry a `detection` too (anomalies), but only attack sequences are about
/// the sequence's resources.
pub(crate) fn attack_sequence(detail: &Map<String, Value>) -> Option<&Map<String, Value>> {
    let rtype = detail
        .get("resource")
        .and_then(|r| r.get("resourceType"))
        .and_then(Value::as_str);
    let is_sequence = match rtype {
        Some(t) => t == "AttackSequence",
        None => detail
            .get("type")
            .and_then(Value::as_str)
            .is_some_and(|t| t.starts_with("AttackSequence:")),
    };
    if !is_sequence {
        return None;
    }
    detail
        .get("service")?
        .get("detection")?
        .get("sequence")?
        .as_object()
}

fn non_empty_array(v: Option<&Value>) -> Option<&Vec<Value>> {
    v.and_then(Value::as_array).filter(|a| !a.is_empty())
}

/// The objects a finding is about, in a stable order (the order of GuardDuty's lists).
pub(crate) fn selectors(detail: &Map<String, Value>) -> Vec<Selector> {
    if let Some(seq) = attack_sequence(detail) {
        return match non_empty_array(seq.get("resources")) {
            Some(r) if r.len() > 1 => (0..r.len()).map(Selector::SequenceResource).collect(),
            _ => vec![Selector::Whole],
        };
    }
    let Some(resource) = detail.get("resource").and_then(Value::as_object) else {
        return vec![Selector::Whole];
    };
    let resource_type = resource.get("resourceType").and_then(Value::as_str);
    let buckets = non_empty_array(resource.get("s3BucketDetails"));

    match resource_type {
        Some("S3Object") => {
            if let Some(objects) = non_empty_array(resource.get("s3ObjectDetails")) {
                let by_name = BucketsByName::new(buckets);
                return objects
                    .iter()
                    .enumerate()
                    .map(|(o, obj)| Selector::ResourceObject(o, by_name.bucket_of(obj)))
                    .collect();
            }
            if let Some(buckets) = buckets {
                return buckets
                    .iter()
                    .enumerate()
                    .flat_map(
                        |(b, bucket)| match non_empty_array(bucket.get("s3ObjectDetails")) {
                            Some(objects) => (0..objects.len())
                                .map(|o| Selector::BucketObject(b, o))
                                .collect::<Vec<_>>(),
                            None => vec![Selector::Bucket(b)],
                        },
                    )
                    .collect();
            }
            vec![Selector::Whole]
        }
        Some("S3Bucket") => match buckets {
            Some(buckets) if buckets.len() > 1 => {
                (0..buckets.len()).map(Selector::Bucket).collect()
            }
            _ => vec![Selector::Whole],
        },
        _ => {
            // An ECS finding lists the task's containers; a `Container` finding that names its
            // own `containerDetails` is about that one container, whatever the task holds.
            if resource
                .get("containerDetails")
                .is_some_and(Value::is_object)
            {
                return vec![Selector::Whole];
            }
            let containers = resource
                .get("ecsClusterDetails")
                .and_then(|e| e.get("taskDetails"))
                .and_then(|t| t.get("containers"));
            match non_empty_array(containers) {
                Some(c) if c.len() > 1 => (0..c.len()).map(Selector::EcsContainer).collect(),
                _ => vec![Selector::Whole],
            }
        }
    }
}

/// Several buckets by name, to find the one a resource-level S3 object's ARN names: a map built
/// once, since a finding can list thousands of objects and thousands of buckets.
struct BucketsByName<'a>(std::collections::HashMap<&'a str, Option<usize>>);

impl<'a> BucketsByName<'a> {
    fn new(buckets: Option<&'a Vec<Value>>) -> Self {
        let mut by_name = std::collections::HashMap::new();
        for (i, b) in buckets
            .filter(|b| b.len() > 1)
            .into_iter()
            .flatten()
            .enumerate()
        {
            if let Some(name) = b.get("name").and_then(Value::as_str) {
                // A name listed twice names no one bucket.
                by_name
                    .entry(name)
                    .and_modify(|seen: &mut Option<usize>| *seen = None)
                    .or_insert(Some(i));
            }
        }
        Self(by_name)
    }

    /// The index of the bucket `object`'s ARN (`arn:aws:s3:::bucket/key`) names, if exactly one.
    fn bucket_of(&self, object: &Value) -> Option<usize> {
        let arn = object.get("objectArn")?.as_str()?;
        let bucket_name = arn.split(":::").nth(1)?.split('/').next()?;
        self.0.get(bucket_name).copied().flatten()
    }
}

/// The `detail` with the selected object's list narrowed to it.
fn narrow(detail: &Map<String, Value>, sel: Selector) -> Map<String, Value> {
    match sel {
        Selector::Whole => detail.clone(),
        Selector::Bucket(b) => with_resource(detail, |r| {
            narrow_list(r, "s3BucketDetails", b, |bucket| bucket.clone())
        }),
        Selector::BucketObject(b, o) => with_resource(detail, |r| {
            narrow_list(r, "s3BucketDetails", b, |bucket| match bucket {
                Value::Object(bm) => {
                    Value::Object(copy_with(bm, "s3ObjectDetails", |objs| single(objs, o)))
                }
                other => other.clone(),
            })
        }),
        Selector::ResourceObject(o, bucket) => with_resource(detail, |r| {
            let r = copy_with(r, "s3ObjectDetails", |objs| single(objs, o));
            match bucket {
                Some(b) => narrow_list(&r, "s3BucketDetails", b, |bucket| bucket.clone()),
                None => r,
            }
        }),
        Selector::SequenceResource(i) => copy_with(detail, "service", |service| {
            with_object(service, |sm| {
                copy_with(sm, "detection", |det| {
                    with_object(det, |dm| {
                        copy_with(dm, "sequence", |seq| {
                            with_object(seq, |qm| copy_with(qm, "resources", |rs| single(rs, i)))
                        })
                    })
                })
            })
        }),
        Selector::EcsContainer(c) => with_resource(detail, |r| {
            copy_with(r, "ecsClusterDetails", |ecs| {
                with_object(ecs, |em| {
                    copy_with(em, "taskDetails", |task| {
                        with_object(task, |tm| copy_with(tm, "containers", |cs| single(cs, c)))
                    })
                })
            })
        }),
    }
}

fn with_resource(
    detail: &Map<String, Value>,
    f: impl FnOnce(&Map<String, Value>) -> Map<String, Value>,
) -> Map<String, Value> {
    copy_with(detail, "resource", |r| with_object(r, f))
}

fn with_object(v: &Value, f: impl FnOnce(&Map<String, Value>) -> Map<String, Value>) -> Value {
    match v {
        Value::Object(m) => Value::Object(f(m)),
        other => other.clone(),
    }
}

/// A copy of `map` where `key` is replaced by `f(old value)`; every other entry is cloned and
/// the key keeps its position (serde_json's `preserve_order` keeps insertion order).
fn copy_with(
    map: &Map<String, Value>,
    key: &str,
    f: impl FnOnce(&Value) -> Value,
) -> Map<String, Value> {
    let mut f = Some(f);
    map.iter()
        .map(|(k, v)| {
            let v = match f.take_if(|_| k == key) {
                Some(f) => f(v),
                None => v.clone(),
            };
            (k.clone(), v)
        })
        .collect()
}

/// `map` with the list at `key` narrowed to its element `i`, transformed by `f`.
fn narrow_list(
    map: &Map<String, Value>,
    key: &str,
    i: usize,
    f: impl FnOnce(&Value) -> Value,
) -> Map<String, Value> {
    copy_with(map, key, |list| {
        match list.as_array().and_then(|a| a.get(i)) {
            Some(item) => Value::Array(vec![f(item)]),
            None => list.clone(),
        }
    })
}

fn single(list: &Value, i: usize) -> Value {
    match list.as_array().and_then(|a| a.get(i)) {
        Some(item) => Value::Array(vec![item.clone()]),
        None => list.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::Timestamp;
    use serde_json::json;

    fn finding(detail: Value) -> Finding {
        Finding {
            id: "f".into(),
            account_id: "1".into(),
            region: "r".into(),
            updated_at: Timestamp::from_millis(1),
            detail: detail.as_object().cloned().expect("object"),
            envelope: None,
        }
    }

    fn details(f: &Finding) -> Vec<Value> {
        split(f)
            .into_iter()
            .map(|o| Value::Object(o.detail))
            .collect()
    }

    #[test]
    fn an_object_arn_names_a_bucket_only_when_one_bucket_has_that_name() {
        let buckets = vec![
            json!({"name": "a"}),
            json!({"name": "dup"}),
            json!({"name": "dup"}),
            json!({}),
        ];
        let by_name = BucketsByName::new(Some(&buckets));
        let of = |arn: &str| by_name.bucket_of(&json!({"objectArn": arn}));
        assert_eq!(of("arn:aws:s3:::a/k"), Some(0));
        assert_eq!(of("arn:aws:s3:::dup/k"), None);
        assert_eq!(of("arn:aws:s3:::other/k"), None);
        assert_eq!(of("not an arn"), None);
        assert_eq!(by_name.bucket_of(&json!({"key": "k"})), None);
        // One bucket: nothing to tell apart.
        let one = vec![json!({"name": "a"})];
        assert_eq!(
            BucketsByName::new(Some(&one)).bucket_of(&json!({"objectArn": "arn:aws:s3:::a/k"})),
            None
        );
    }

    #[test]
    fn no_resource_and_single_objects_are_one_unchanged_event() {
        for d in [
            json!({"id": "f"}),
            json!({"resource": {"resourceType": "Instance", "instanceDetails": {"instanceId": "i-1"}}}),
            json!({"resource": {"resourceType": "S3Bucket", "s3BucketDetails": [{"name": "a"}]}}),
            json!({"resource": {"resourceType": "S3Bucket", "s3BucketDetails": []}}),
            json!({"resource": {"resourceType": "S3Object", "s3BucketDetails": []}}),
            json!({"resource": "weird"}),
        ] {
            let f = finding(d.clone());
            let objs = split(&f);
            assert_eq!(objs.len(), 1, "{d}");
            assert_eq!(objs[0].index, 0);
            assert_eq!(Value::Object(objs[0].detail.clone()), d);
        }
    }

    #[test]
    fn one_event_per_bucket_with_the_rest_unchanged() {
        let d = json!({"title": "t", "resource": {"resourceType": "S3Bucket", "accessKeyDetails": {"userName": "u"},
            "s3BucketDetails": [{"name": "a"}, {"name": "b"}, {"name": "c"}]}, "severity": 5});
        let got = details(&finding(d.clone()));
        assert_eq!(got.len(), 3);
        for (i, name) in ["a", "b", "c"].into_iter().enumerate() {
            let mut want = d.clone();
            want["resource"]["s3BucketDetails"] = json!([{"name": name}]);
            assert_eq!(got[i], want);
        }
        let indices: Vec<u32> = split(&finding(d)).iter().map(|o| o.index).collect();
        assert_eq!(indices, vec![0, 1, 2]);
    }

    #[test]
    fn s3_object_findings_split_per_object_inside_buckets() {
        let d = json!({"resource": {"resourceType": "S3Object", "s3BucketDetails": [
            {"name": "a", "s3ObjectDetails": [{"key": "k1"}, {"key": "k2"}]},
            {"name": "b"}
        ]}});
        let got = details(&finding(d));
        assert_eq!(
            got.iter()
                .map(|v| v["resource"]["s3BucketDetails"].clone())
                .collect::<Vec<_>>(),
            vec![
                json!([{"name": "a", "s3ObjectDetails": [{"key": "k1"}]}]),
                json!([{"name": "a", "s3ObjectDetails": [{"key": "k2"}]}]),
                json!([{"name": "b"}]),
            ]
        );
    }

    #[test]
    fn s3_object_findings_split_per_resource_level_object() {
        let d = json!({"resource": {"resourceType": "S3Object",
            "s3BucketDetails": [{"name": "a"}, {"name": "b"}],
            "s3ObjectDetails": [{"objectArn": "arn:aws:s3:::b/k1", "key": "k1"}, {"key": "k2"}]}});
        let got = details(&finding(d));
        assert_eq!(got.len(), 2);
        assert_eq!(
            got[0]["resource"]["s3ObjectDetails"],
            json!([{"objectArn": "arn:aws:s3:::b/k1", "key": "k1"}])
        );
        assert_eq!(
            got[0]["resource"]["s3BucketDetails"],
            json!([{"name": "b"}])
        );
        assert_eq!(
            got[1]["resource"]["s3ObjectDetails"],
            json!([{"key": "k2"}])
        );
        assert_eq!(
            got[1]["resource"]["s3BucketDetails"],
            json!([{"name": "a"}, {"name": "b"}])
        );
    }

    #[test]
    fn one_event_per_ecs_container() {
        let d = json!({"resource": {"resourceType": "ECSCluster", "ecsClusterDetails": {"name": "c",
            "taskDetails": {"arn": "t", "containers": [{"name": "x"}, {"name": "y"}], "tags": []}}}});
        let got = details(&finding(d.clone()));
        assert_eq!(got.len(), 2);
        let mut want = d.clone();
        want["resource"]["ecsClusterDetails"]["taskDetails"]["containers"] = json!([{"name": "y"}]);
        assert_eq!(got[1], want);
        // Key order is kept.
        assert_eq!(
            serde_json::to_string(&got[1]).expect("serialises"),
            serde_json::to_string(&want).expect("serialises")
        );
    }

    #[test]
    fn one_event_per_attack_sequence_resource_with_signals_kept() {
        let d = json!({"type": "AttackSequence:IAM/CompromisedCredentials",
            "resource": {"resourceType": "AttackSequence"},
            "service": {"count": 1, "detection": {"sequence": {"uid": "s1",
                "resources": [{"uid": "i-1", "resourceType": "EC2_INSTANCE"},
                              {"uid": "arn:aws:s3:::b", "name": "b", "resourceType": "S3_BUCKET"}],
                "signals": [{"uid": "g1", "resourceUids": ["i-1", "arn:aws:s3:::b"]}]}}}});
        let got = details(&finding(d.clone()));
        assert_eq!(got.len(), 2);
        for (i, r) in [0, 1].into_iter().enumerate() {
            let mut want = d.clone();
            want["service"]["detection"]["sequence"]["resources"] =
                json!([d["service"]["detection"]["sequence"]["resources"][r].clone()]);
            assert_eq!(got[i], want);
        }
        // One resource, no resources, or a sequence on another finding type: not split.
        for d in [
            json!({"resource": {"resourceType": "AttackSequence"},
                "service": {"detection": {"sequence": {"resources": [{"uid": "x"}]}}}}),
            json!({"resource": {"resourceType": "AttackSequence"},
                "service": {"detection": {"sequence": {"resources": []}}}}),
            json!({"resource": {"resourceType": "Instance"},
                "service": {"detection": {"sequence": {"resources": [{"uid": "x"}, {"uid": "y"}]}}}}),
        ] {
            assert_eq!(details(&finding(d.clone())), vec![d]);
        }
        // Without `resource`, the type says it is a sequence.
        let d = json!({"type": "AttackSequence:S3/CompromisedData",
            "service": {"detection": {"sequence": {"resources": [{"uid": "x"}, {"uid": "y"}]}}}});
        assert_eq!(details(&finding(d)).len(), 2);
    }

    #[test]
    fn a_container_finding_is_about_its_own_container() {
        let d = json!({"resource": {"resourceType": "Container", "containerDetails": {"id": "c1"},
            "ecsClusterDetails": {"taskDetails": {"containers": [{"name": "x"}, {"name": "y"}]}}}});
        assert_eq!(details(&finding(d.clone())), vec![d]);
    }
}
