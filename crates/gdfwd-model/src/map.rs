//! Mapping findings to Dynatrace payload events, in two formats.
//!
//! `raw` keeps the EventBridge event that Dynatrace's built-in GuardDuty processing expects;
//! `semantic` maps client-side to the Semantic Dictionary. Both carry a deterministic id derived
//! from (finding id, updatedAt, object index), so a redelivery can be recognised downstream.
//!
//! The semantic mapping reads the affected object straight from the finding through the split's
//! selectors (no copy of the finding); the raw mapping moves the split's narrowed copy into the
//! event. `docs/mapping.md` documents every field, with its source and notes.

use std::fmt;
use std::str::FromStr;

use serde_json::{Map, Number, Value};

use crate::finding::Finding;
use crate::parse::{EVENT_DETAIL_TYPE, EVENT_SOURCE};
use crate::split::{Overflow, Selector, attack_sequence, capped_selectors, split};
use crate::time::Timestamp;

/// Payload format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    #[default]
    Raw,
    Semantic,
}

impl FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "raw" => Ok(Self::Raw),
            "semantic" => Ok(Self::Semantic),
            other => Err(format!(
                "unknown payload format {other:?}: expected raw or semantic"
            )),
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Raw => "raw",
            Self::Semantic => "semantic",
        })
    }
}

/// Account details found by enrichment; absent when enrichment is off or failed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Enrichment {
    /// Goes to `aws.account.name` (the IAM alias when there is one, else the Organizations name).
    pub account_name: Option<String>,
    /// Goes to `aws.account.alias` when the name came from an IAM account alias.
    pub account_alias: Option<String>,
    /// The configured account context fields (`--account-field`, e.g. `dt.security_context`)
    /// with their values for this account, in the configured order; top level in both formats.
    /// A field the mapping already set is not overwritten.
    pub fields: Vec<(String, String)>,
}

/// One payload event, ready to serialise.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// 32 lowercase hex characters, deterministic (see [`event_id`]).
    pub id: String,
    pub object_index: u32,
    pub body: Value,
}

/// The deterministic event id: the same (finding id, updatedAt, object index) always gives the
/// same 32-hex value; a different version or object gives a different one.
pub fn event_id(finding_id: &str, updated_at: Timestamp, object_index: u32) -> String {
    event_uuid(finding_id, updated_at, object_index)
        .simple()
        .to_string()
}

fn event_uuid(finding_id: &str, updated_at: Timestamp, object_index: u32) -> uuid::Uuid {
    // UUIDv5 (SHA-1 based) over an unambiguous key: the finding id cannot contain a newline that
    // would make two keys collide, because the two numbers after it have fixed meaning.
    const NAMESPACE: uuid::Uuid = uuid::Uuid::from_u128(0x6764_6677_642d_4775_6172_6444_7574_7930);
    let key = format!("{finding_id}\n{}\n{object_index}", updated_at.millis());
    uuid::Uuid::new_v5(&NAMESPACE, key.as_bytes())
}

/// Splits and maps one finding: one event per affected object.
pub fn map_finding(finding: &Finding, format: Format, enrichment: &Enrichment) -> Vec<Event> {
    match format {
        Format::Raw => split(finding)
            .into_iter()
            .map(|obj| {
                let uuid = event_uuid(&finding.id, finding.updated_at, obj.index);
                let id = uuid.simple().to_string();
                let mut body = raw_body(finding, obj.detail, uuid, &id, enrichment);
                add_overflow(&mut body, obj.overflow.as_ref());
                Event {
                    id,
                    object_index: obj.index,
                    body,
                }
            })
            .collect(),
        Format::Semantic => {
            let (selectors, overflow) = capped_selectors(&finding.detail);
            let last = selectors.len().saturating_sub(1);
            selectors
                .into_iter()
                .enumerate()
                .map(|(i, sel)| {
                    let index = u32::try_from(i).unwrap_or(u32::MAX);
                    let id = event_id(&finding.id, finding.updated_at, index);
                    let mut body = semantic_body(finding, sel, &id, enrichment);
                    add_overflow(&mut body, overflow.as_ref().filter(|_| i == last));
                    Event {
                        id,
                        object_index: index,
                        body,
                    }
                })
                .collect()
        }
    }
}

/// On a finding's last event when it has more objects than events: how many objects there are,
/// how many got no event of their own, and the first of their names (same keys in both formats).
fn add_overflow(body: &mut Value, overflow: Option<&Overflow>) {
    let (Some(o), Value::Object(m)) = (overflow, body) else {
        return;
    };
    m.insert("gdfwd.objects.total".to_owned(), Value::from(o.total));
    m.insert("gdfwd.objects.omitted".to_owned(), Value::from(o.omitted));
    m.insert(
        "gdfwd.objects.omitted_names".to_owned(),
        Value::from(o.names.clone()),
    );
}

// ---------------------------------------------------------------------------------------------
// raw

/// The EventBridge event Dynatrace's built-in GuardDuty processing expects.
///
/// Envelope fields the input had are kept as they were (EventBridge's own `id` and `time`);
/// missing ones are synthesised from the finding. `detail` is the (narrowed) finding.
fn raw_body(
    finding: &Finding,
    detail: Map<String, Value>,
    uuid: uuid::Uuid,
    id: &str,
    enrichment: &Enrichment,
) -> Value {
    let envelope = finding.envelope.as_ref();
    let from_env = |key: &str| {
        envelope
            .and_then(|e| e.get(key))
            .filter(|v| !v.is_null())
            .cloned()
    };
    let mut body = Map::with_capacity(12);
    let mut put = |key: &str, fallback: &dyn Fn() -> Value| {
        let v = from_env(key).unwrap_or_else(fallback);
        body.insert(key.to_owned(), v);
    };
    put("version", &|| Value::from("0"));
    put("id", &|| Value::from(uuid.hyphenated().to_string()));
    put("detail-type", &|| Value::from(EVENT_DETAIL_TYPE));
    put("source", &|| Value::from(EVENT_SOURCE));
    put("account", &|| Value::from(finding.account_id.as_str()));
    put("time", &|| Value::from(finding.updated_at.to_rfc3339()));
    put("region", &|| Value::from(finding.region.as_str()));
    put("resources", &|| Value::Array(Vec::new()));
    if let Some(env) = envelope {
        for (k, v) in env {
            if k != "detail" && !body.contains_key(k) {
                body.insert(k.clone(), v.clone());
            }
        }
    }
    body.insert("detail".to_owned(), Value::Object(detail));
    body.insert("uuid".to_owned(), Value::from(id));
    add_enrichment(&mut body, enrichment);
    Value::Object(body)
}

fn add_enrichment(body: &mut Map<String, Value>, enrichment: &Enrichment) {
    if let Some(name) = &enrichment.account_name {
        body.insert("aws.account.name".to_owned(), Value::from(name.as_str()));
    }
    if let Some(alias) = &enrichment.account_alias {
        body.insert("aws.account.alias".to_owned(), Value::from(alias.as_str()));
    }
    for (field, value) in &enrichment.fields {
        body.entry(field.as_str())
            .or_insert_with(|| Value::from(value.as_str()));
    }
}

// ---------------------------------------------------------------------------------------------
// semantic

/// The Semantic Dictionary label of a GuardDuty severity: 9.0 and above `CRITICAL`, 7.0 to
/// below 9.0 `HIGH`, 4.0 to below 7.0 `MEDIUM`, below 4.0 `LOW` (so 8.95 is `HIGH`).
pub fn severity_label(severity: f64) -> &'static str {
    if severity >= 9.0 {
        "CRITICAL"
    } else if severity >= 7.0 {
        "HIGH"
    } else if severity >= 4.0 {
        "MEDIUM"
    } else {
        "LOW"
    }
}

/// A flat Semantic Dictionary record (dotted keys). No `timestamp`: Dynatrace sets the ingest
/// time, and the finding's own times can be older than the 24 h Dynatrace accepts.
fn semantic_body(finding: &Finding, sel: Selector, id: &str, enrichment: &Enrichment) -> Value {
    let d = &finding.detail;
    let mut m = Map::with_capacity(40);
    let mut put = |k: &str, v: Value| {
        m.insert(k.to_owned(), v);
    };
    put("event.kind", "SECURITY_EVENT".into());
    put("event.type", "DETECTION_FINDING".into());
    put("event.provider", "Amazon GuardDuty".into());
    put("event.id", id.into());
    put("product.vendor", "AWS".into());
    put("product.name", "Amazon GuardDuty".into());
    put("finding.id", finding.id.as_str().into());
    for (key, field) in [
        ("finding.title", "title"),
        ("finding.description", "description"),
        ("finding.type", "type"),
    ] {
        if let Some(v) = text(d.get(field)) {
            put(key, v.into());
        }
    }
    if let Some(created) = finding.created_at() {
        put("finding.time.created", created.to_rfc3339().into());
    }
    // The version: two versions in flight at once may arrive in either order, so queries pick
    // the latest by this, not by arrival.
    put(
        "finding.time.updated",
        finding.updated_at.to_rfc3339().into(),
    );
    severity_fields(finding, &mut put);
    put("aws.account.id", finding.account_id.as_str().into());
    put("aws.region", finding.region.as_str().into());
    if let Some(p) = text(d.get("partition")) {
        put("aws.partition", p.into());
    }
    affected(d, sel).put_fields(&mut put);
    if let Some(seq) = attack_sequence(d) {
        sequence_fields(seq, &mut put);
    }
    add_enrichment(&mut m, enrichment);
    Value::Object(m)
}

/// The severity label and GuardDuty's score, as the finding's and as Dynatrace's risk fields.
fn severity_fields(finding: &Finding, put: &mut impl FnMut(&str, Value)) {
    let Some(sev) = finding.severity() else {
        return;
    };
    // The score is GuardDuty's number unchanged (5 stays 5, 8.9 stays 8.9).
    let score = match finding.detail.get("severity") {
        Some(Value::Number(n)) => Value::Number(n.clone()),
        _ => Number::from_f64(sev).map_or(Value::Null, Value::Number),
    };
    let label = severity_label(sev);
    put("finding.severity", label.into());
    put("finding.score", score.clone());
    put("dt.security.risk.level", label.into());
    put("dt.security.risk.score", score);
}

/// The container fields of a semantic record, the image reference split into its parts.
fn container_fields(c: &Map<String, Value>, opt: &mut impl FnMut(&str, Option<&str>)) {
    opt("container.id", text(c.get("id")));
    opt("container.name", text(c.get("name")));
    if let Some(image) = text(c.get("image")) {
        let img = ImageRef::parse(image);
        opt("container.image.name", img.name);
        opt("container.image.version", img.version);
        opt("container.image.digest", img.digest);
    }
}

/// A non-empty string field (GuardDuty sometimes sends `""` where it has nothing).
fn text(v: Option<&Value>) -> Option<&str> {
    v.and_then(Value::as_str).filter(|s| !s.trim().is_empty())
}

fn path<'a>(v: Option<&'a Value>, keys: &[&str]) -> Option<&'a Value> {
    keys.iter().try_fold(v?, |v, k| v.get(k))
}

fn list_item(v: Option<&Value>, i: usize) -> Option<&Value> {
    v?.as_array()?.get(i)
}

/// The only element of a one-element list (the object of a finding that was not split).
fn only_item(v: Option<&Value>) -> Option<&Value> {
    match v?.as_array()?.as_slice() {
        [one] => Some(one),
        _ => None,
    }
}

/// What the semantic record says about the affected object and the resource that holds it.
#[derive(Default)]
struct Affected<'a> {
    object_type: Option<String>,
    object_id: Option<&'a str>,
    object_name: Option<&'a str>,
    resource_type: Option<String>,
    resource_id: Option<&'a str>,
    resource_name: Option<&'a str>,
    availability_zone: Option<&'a str>,
    container: Option<&'a Map<String, Value>>,
    k8s_cluster: Option<&'a str>,
    k8s_namespace: Option<&'a str>,
    k8s_pod: Option<&'a str>,
}

impl<'a> Affected<'a> {
    /// The resource, object, container and Kubernetes fields of a semantic record (those known).
    fn put_fields(&self, put: &mut impl FnMut(&str, Value)) {
        let mut opt = |k: &str, v: Option<&str>| {
            if let Some(v) = v {
                put(k, v.into());
            }
        };
        opt("aws.availability_zone", self.availability_zone);
        opt("aws.resource.type", self.resource_type.as_deref());
        opt("aws.resource.name", self.resource_name);
        opt("aws.resource.id", self.resource_id);
        opt("object.type", self.object_type.as_deref());
        opt("object.id", self.object_id);
        opt("object.name", self.object_name);
        if let Some(c) = self.container {
            container_fields(c, &mut opt);
        }
        opt("k8s.cluster.name", self.k8s_cluster);
        opt("k8s.namespace.name", self.k8s_namespace);
        opt("k8s.pod.name", self.k8s_pod);
    }

    fn resource(&mut self, ty: &str, id: Option<&'a str>, name: Option<&'a str>) {
        self.resource_type = Some(ty.to_owned());
        self.resource_id = id.or(name);
        self.resource_name = name;
    }

    /// The object is the resource itself.
    fn object_is_resource(&mut self, ty: &str) {
        self.object_type = Some(ty.to_owned());
        self.object_id = self.resource_id;
        self.object_name = self.resource_name;
    }

    fn container(&mut self, c: Option<&'a Value>) {
        self.object_type = Some("CONTAINER".to_owned());
        self.container = c.and_then(Value::as_object);
        self.object_id = self.container.and_then(|c| text(c.get("id")));
        self.object_name = self.container.and_then(|c| text(c.get("name")));
    }

    /// The EC2 instance as host: its id, `Name` tag and zone.
    fn instance(&mut self, inst: Option<&'a Value>) {
        let id = text(path(inst, &["instanceId"]));
        self.resource("AWS::EC2::Instance", id, name_tag(inst).or(id));
        self.availability_zone = text(path(inst, &["availabilityZone"]));
    }

    fn eks(&mut self, eks: Option<&'a Value>) {
        let name = text(path(eks, &["name"]));
        self.resource("AWS::EKS::Cluster", text(path(eks, &["arn"])), name);
    }

    /// A resource of an attack sequence (the model's `ResourceV2`): `uid`, `name`, and a
    /// `resourceType` from the model's `FindingResourceType` enum (`EC2_INSTANCE`, `S3_BUCKET`…).
    fn sequence_resource(&mut self, res: &'a Value) {
        let uid = text(res.get("uid"));
        let name = text(res.get("name")).or(uid);
        let (cfn, object) = match text(res.get("resourceType")) {
            Some(t) => resource_v2_types(t),
            None => ("AWS::GuardDuty::Resource".to_owned(), "RESOURCE".to_owned()),
        };
        self.resource(&cfn, uid, name);
        self.object_is_resource(&object);
        self.object_id = uid.or(name);
    }

    fn ecs(&mut self, ecs: Option<&'a Value>) {
        let name = text(path(ecs, &["name"]));
        self.resource("AWS::ECS::Cluster", text(path(ecs, &["arn"])), name);
    }
}

/// `aws.resource.type` and `object.type` of a `ResourceV2.resourceType`: CloudFormation types
/// where one exists, else `AWS::GuardDuty::<type>`; the object type is the enum value itself,
/// except where the v1 resource types already named the same thing differently.
fn resource_v2_types(t: &str) -> (String, String) {
    let cfn = match t {
        "EC2_INSTANCE" => "AWS::EC2::Instance",
        "EC2_NETWORK_INTERFACE" => "AWS::EC2::NetworkInterface",
        "S3_BUCKET" => "AWS::S3::Bucket",
        "ACCESS_KEY" => "AWS::IAM::AccessKey",
        "EKS_CLUSTER" => "AWS::EKS::Cluster",
        "ECS_CLUSTER" => "AWS::ECS::Cluster",
        "AUTOSCALING_AUTO_SCALING_GROUP" => "AWS::AutoScaling::AutoScalingGroup",
        "IAM_INSTANCE_PROFILE" => "AWS::IAM::InstanceProfile",
        other => return (format!("AWS::GuardDuty::{other}"), upper_snake(other)),
    };
    let object = match t {
        "ACCESS_KEY" => "IAM_ACCESS_KEY".to_owned(),
        "EKS_CLUSTER" => "KUBERNETES_CLUSTER".to_owned(),
        other => upper_snake(other),
    };
    (cfn.to_owned(), object)
}

/// Most distinct tactics or techniques listed per event: a sequence has at most 100 signals of
/// up to 400 indicator values each, and the event must stay small.
const MAX_ATTACK_VALUES: usize = 50;

/// What every event of an attack sequence says about the sequence as a whole: its uid, how many
/// signals and resources it has, and the MITRE ATT&CK tactics and techniques of its indicators
/// (the sequence's own, then its signals', each value once, in order of appearance).
fn sequence_fields(seq: &Map<String, Value>, put: &mut impl FnMut(&str, Value)) {
    if let Some(uid) = text(seq.get("uid")) {
        put("aws.guardduty.sequence.uid", uid.into());
    }
    let count = |key: &str| seq.get(key).and_then(Value::as_array).map(Vec::len);
    if let Some(n) = count("signals") {
        put("aws.guardduty.sequence.signal_count", n.into());
    }
    if let Some(n) = count("resources") {
        put("aws.guardduty.sequence.resource_count", n.into());
    }
    let signals = seq.get("signals").and_then(Value::as_array);
    let indicators = std::iter::once(seq.get("sequenceIndicators"))
        .chain(
            signals
                .into_iter()
                .flatten()
                .map(|s| s.get("signalIndicators")),
        )
        .filter_map(|i| i.and_then(Value::as_array))
        .flatten();
    let mut tactics: Vec<&str> = Vec::new();
    let mut techniques: Vec<&str> = Vec::new();
    for ind in indicators {
        let list = match ind.get("key").and_then(Value::as_str) {
            Some("ATTACK_TACTIC") => &mut tactics,
            Some("ATTACK_TECHNIQUE") => &mut techniques,
            _ => continue,
        };
        let values = ind.get("values").and_then(Value::as_array);
        for v in values.into_iter().flatten().filter_map(|v| text(Some(v))) {
            if list.len() < MAX_ATTACK_VALUES && !list.contains(&v) {
                list.push(v);
            }
        }
    }
    if !tactics.is_empty() {
        put("aws.guardduty.sequence.tactics", tactics.into());
    }
    if !techniques.is_empty() {
        put("aws.guardduty.sequence.techniques", techniques.into());
    }
}

/// The `Name` tag of an EC2 instance, the name people know it by.
fn name_tag(inst: Option<&Value>) -> Option<&str> {
    path(inst, &["tags"])?
        .as_array()?
        .iter()
        .find(|t| t.get("key").and_then(Value::as_str) == Some("Name"))
        .and_then(|t| text(t.get("value")))
}

fn affected(d: &Map<String, Value>, sel: Selector) -> Affected<'_> {
    let mut a = Affected::default();
    if let Some(seq) = attack_sequence(d) {
        let resources = seq.get("resources");
        let res = match sel {
            Selector::SequenceResource(i) => list_item(resources, i),
            _ => only_item(resources),
        };
        if let Some(res) = res {
            a.sequence_resource(res);
            return a;
        }
    }
    let Some(r) = d.get("resource").filter(|r| r.is_object()) else {
        return a;
    };
    let r = Some(r);
    let rt = text(path(r, &["resourceType"]));
    let container_details = path(r, &["containerDetails"]).filter(|c| c.is_object());
    by_resource_type(&mut a, r, rt, sel);
    // A runtime finding about a container inside another resource type is about the container.
    if container_details.is_some() && a.container.is_none() && rt != Some("Container") {
        a.container(container_details);
    }
    kubernetes(&mut a, r);
    a
}

/// The resource (and the object, where it is the resource) by GuardDuty's `resourceType`.
fn by_resource_type<'a>(
    a: &mut Affected<'a>,
    r: Option<&'a Value>,
    rt: Option<&'a str>,
    sel: Selector,
) {
    let named =
        |details: &str, ty: &str, id: &str, name: &str, object: &str, a: &mut Affected<'a>| {
            let d = path(r, &[details]);
            a.resource(ty, text(path(d, &[id])), text(path(d, &[name])));
            a.object_is_resource(object);
        };
    match rt {
        Some("Instance") => {
            a.instance(path(r, &["instanceDetails"]));
            a.object_is_resource("EC2_INSTANCE");
        }
        Some("AccessKey") => named(
            "accessKeyDetails",
            "AWS::IAM::AccessKey",
            "accessKeyId",
            "userName",
            "IAM_ACCESS_KEY",
            a,
        ),
        Some("S3Bucket") | Some("S3Object") => s3(a, r, sel, rt == Some("S3Object")),
        Some("EKSCluster") => {
            a.eks(path(r, &["eksClusterDetails"]));
            a.object_is_resource("KUBERNETES_CLUSTER");
        }
        Some("ECSCluster") => ecs_cluster(a, r, sel),
        Some("Container") => container_host(a, r),
        Some("RDSDBInstance") => {
            let db = path(r, &["rdsDbInstanceDetails"]);
            a.resource(
                "AWS::RDS::DBInstance",
                text(path(db, &["dbInstanceArn"])).or(text(path(db, &["dbiResourceId"]))),
                text(path(db, &["dbInstanceIdentifier"])),
            );
            a.object_is_resource("RDS_DB_INSTANCE");
        }
        Some("Lambda") => named(
            "lambdaDetails",
            "AWS::Lambda::Function",
            "functionArn",
            "functionName",
            "LAMBDA_FUNCTION",
            a,
        ),
        Some("EBSVolume") => {
            let v = path(r, &["ebsVolumeDetails"]);
            let first = list_item(path(v, &["scannedVolumeDetails"]), 0)
                .or_else(|| list_item(path(v, &["skippedVolumeDetails"]), 0));
            a.resource("AWS::EC2::Volume", text(path(first, &["volumeArn"])), None);
            a.object_is_resource("EBS_VOLUME");
            a.availability_zone = text(path(r, &["instanceDetails", "availabilityZone"]));
        }
        Some(other) => other_resource(a, r, other),
        None => {}
    }
}

/// An ECS cluster finding: about the selected (or only) task container when there is one.
fn ecs_cluster<'a>(a: &mut Affected<'a>, r: Option<&'a Value>, sel: Selector) {
    let ecs = path(r, &["ecsClusterDetails"]);
    a.ecs(ecs);
    let containers = path(ecs, &["taskDetails", "containers"]);
    let container = match sel {
        Selector::EcsContainer(c) => list_item(containers, c),
        _ => only_item(containers),
    };
    let details = path(r, &["containerDetails"]).filter(|c| c.is_object());
    if details.is_some() {
        a.container(details);
    } else if container.is_some() {
        a.container(container);
    } else {
        a.object_is_resource("ECS_CLUSTER");
    }
}

/// A `Container` finding: the resource is the container's host, its cluster, else its instance.
fn container_host<'a>(a: &mut Affected<'a>, r: Option<&'a Value>) {
    let eks = path(r, &["eksClusterDetails"]);
    let ecs = path(r, &["ecsClusterDetails"]);
    let inst = path(r, &["instanceDetails"]);
    if eks.is_some() {
        a.eks(eks);
    } else if ecs.is_some() {
        a.ecs(ecs);
    } else if inst.is_some() {
        a.instance(inst);
    } else {
        a.resource_type = Some("AWS::GuardDuty::Container".to_owned());
    }
    a.container(path(r, &["containerDetails"]).filter(|c| c.is_object()));
}

/// Resource types without a dedicated mapping: `AWS::GuardDuty::<type>`, with the id and name
/// of the few whose details are known.
fn other_resource<'a>(a: &mut Affected<'a>, r: Option<&'a Value>, other: &str) {
    let (id, name) = match other {
        "RDSLimitlessDB" => {
            let db = path(r, &["rdsLimitlessDbDetails"]);
            (
                text(path(db, &["dbShardGroupArn"])),
                text(path(db, &["dbShardGroupIdentifier"])),
            )
        }
        "EBSSnapshot" => (text(path(r, &["ebsSnapshotDetails", "snapshotArn"])), None),
        "EC2Image" => (text(path(r, &["ec2ImageDetails", "imageArn"])), None),
        "RecoveryPoint" => (
            text(path(r, &["recoveryPointDetails", "recoveryPointArn"])),
            None,
        ),
        _ => (None, None),
    };
    a.resource(&format!("AWS::GuardDuty::{other}"), id, name);
    a.object_is_resource(&upper_snake(other));
}

/// The Kubernetes cluster, namespace and pod, whatever the resource type.
fn kubernetes<'a>(a: &mut Affected<'a>, r: Option<&'a Value>) {
    if let Some(eks_name) = text(path(r, &["eksClusterDetails", "name"])) {
        a.k8s_cluster = Some(eks_name);
    }
    let workload = path(r, &["kubernetesDetails", "kubernetesWorkloadDetails"]);
    a.k8s_namespace = text(path(workload, &["namespace"]));
    let kind = text(path(workload, &["type"])).map(str::to_ascii_lowercase);
    if matches!(kind.as_deref(), Some("pod" | "pods")) {
        a.k8s_pod = text(path(workload, &["name"]));
    }
}

fn s3<'a>(a: &mut Affected<'a>, r: Option<&'a Value>, sel: Selector, object_finding: bool) {
    let buckets = path(r, &["s3BucketDetails"]);
    let (bucket, object) = match sel {
        Selector::Bucket(b) => (list_item(buckets, b), None),
        Selector::BucketObject(b, o) => {
            let bucket = list_item(buckets, b);
            (bucket, list_item(path(bucket, &["s3ObjectDetails"]), o))
        }
        Selector::ResourceObject(o, b) => (
            b.map_or_else(|| only_item(buckets), |b| list_item(buckets, b)),
            list_item(path(r, &["s3ObjectDetails"]), o),
        ),
        Selector::Whole | Selector::EcsContainer(_) | Selector::SequenceResource(_) => {
            let bucket = only_item(buckets);
            let object = only_item(path(bucket, &["s3ObjectDetails"]))
                .or_else(|| only_item(path(r, &["s3ObjectDetails"])));
            (bucket, object)
        }
    };
    let bucket_name = text(path(bucket, &["name"]));
    a.resource("AWS::S3::Bucket", text(path(bucket, &["arn"])), bucket_name);
    if object_finding {
        a.object_type = Some("S3_OBJECT".to_owned());
        a.object_id = text(path(object, &["objectArn"])).or(text(path(object, &["key"])));
        a.object_name = text(path(object, &["key"]));
    } else {
        a.object_is_resource("S3_BUCKET");
    }
}

/// `AttackSequence` → `ATTACK_SEQUENCE`, `EC2Image` → `EC2_IMAGE`, `RDSLimitlessDB` →
/// `RDS_LIMITLESS_DB`: a word starts at a capital after a lower-case letter, or at the last
/// capital of an acronym when a lower-case letter follows.
pub(crate) fn upper_snake(s: &str) -> String {
    let chars: Vec<char> = s.chars().collect();
    let mut out = String::with_capacity(s.len() + 4);
    for (i, &c) in chars.iter().enumerate() {
        if i > 0 && c.is_uppercase() {
            let prev = chars[i - 1];
            let next_lower = chars.get(i + 1).is_some_and(|n| n.is_lowercase());
            if prev.is_lowercase() || ((prev.is_uppercase() || prev.is_ascii_digit()) && next_lower)
            {
                out.push('_');
            }
        }
        if c.is_alphanumeric() {
            out.extend(c.to_uppercase());
        } else if !out.ends_with('_') {
            out.push('_');
        }
    }
    out
}

/// A container image reference split into name, tag and digest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ImageRef<'a> {
    /// Registry and repository, e.g. `host:5000/team/app`.
    pub name: Option<&'a str>,
    /// The tag, e.g. `1.25.3`.
    pub version: Option<&'a str>,
    /// The digest, e.g. `sha256:abab…`.
    pub digest: Option<&'a str>,
}

impl<'a> ImageRef<'a> {
    /// `repo:tag`, `host:5000/repo:tag`, `repo@sha256:…`, `repo:tag@sha256:…`. A colon is a tag
    /// separator only after the last `/`, so a registry port is never taken for a tag.
    pub fn parse(image: &'a str) -> Self {
        let image = image.trim();
        let (rest, digest) = match image.split_once('@') {
            Some((rest, digest)) => (rest, Some(digest)),
            None => (image, None),
        };
        let name_start = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, version) = match rest.get(name_start..).and_then(|last| last.rfind(':')) {
            Some(colon) => {
                let at = name_start + colon;
                (rest.get(..at), rest.get(at + 1..))
            }
            None => (Some(rest), None),
        };
        let non_empty = |s: Option<&'a str>| s.filter(|s| !s.is_empty());
        Self {
            name: non_empty(name),
            version: non_empty(version),
            digest: non_empty(digest),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn severity_bands() {
        for (sev, want) in [
            (0.0, "LOW"),
            (1.0, "LOW"),
            (3.9, "LOW"),
            (3.99, "LOW"),
            (4.0, "MEDIUM"),
            (6.9, "MEDIUM"),
            (6.99, "MEDIUM"),
            (7.0, "HIGH"),
            (8.9, "HIGH"),
            (8.95, "HIGH"),
            (8.999, "HIGH"),
            (9.0, "CRITICAL"),
            (10.0, "CRITICAL"),
        ] {
            assert_eq!(severity_label(sev), want, "{sev}");
        }
    }

    #[test]
    fn event_ids_are_deterministic_and_distinct() {
        let t = Timestamp::from_millis(1_740_516_006_721);
        let a = event_id("abc", t, 0);
        assert_eq!(a, event_id("abc", t, 0));
        assert_eq!(a.len(), 32);
        assert!(
            a.chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
        assert_ne!(a, event_id("abc", t.saturating_add_millis(1), 0));
        assert_ne!(a, event_id("abc", t, 1));
        assert_ne!(a, event_id("abd", t, 0));
    }

    #[test]
    fn image_references() {
        let cases = [
            ("redis:7", Some("redis"), Some("7"), None),
            ("redis", Some("redis"), None, None),
            (
                "public.ecr.aws/nginx/nginx:1.25.3",
                Some("public.ecr.aws/nginx/nginx"),
                Some("1.25.3"),
                None,
            ),
            ("host:5000/repo", Some("host:5000/repo"), None, None),
            (
                "host:5000/team/repo:tag",
                Some("host:5000/team/repo"),
                Some("tag"),
                None,
            ),
            ("repo@sha256:abcd", Some("repo"), None, Some("sha256:abcd")),
            (
                "host:5000/repo:1.0@sha256:abcd",
                Some("host:5000/repo"),
                Some("1.0"),
                Some("sha256:abcd"),
            ),
            ("", None, None, None),
        ];
        for (image, name, version, digest) in cases {
            assert_eq!(
                ImageRef::parse(image),
                ImageRef {
                    name,
                    version,
                    digest
                },
                "{image}"
            );
        }
    }

    #[test]
    fn upper_snake_object_types() {
        for (rt, want) in [
            ("AttackSequence", "ATTACK_SEQUENCE"),
            ("EC2Image", "EC2_IMAGE"),
            ("EBSSnapshot", "EBS_SNAPSHOT"),
            ("RDSLimitlessDB", "RDS_LIMITLESS_DB"),
            ("RecoveryPoint", "RECOVERY_POINT"),
            ("S3Object", "S3_OBJECT"),
            ("weird type!", "WEIRD_TYPE_"),
        ] {
            assert_eq!(upper_snake(rt), want, "{rt}");
        }
    }

    fn finding(detail: Value, envelope: Option<Value>) -> Finding {
        Finding {
            id: "fid".into(),
            account_id: "111122223333".into(),
            region: "eu-west-1".into(),
            updated_at: Timestamp::from_millis(1_740_516_006_721),
            detail: detail.as_object().cloned().expect("object"),
            envelope: envelope.and_then(|e| e.as_object().cloned()),
        }
    }

    #[test]
    fn raw_without_envelope_is_synthesised() {
        let detail = json!({"id": "fid", "severity": 5});
        let f = finding(detail.clone(), None);
        let events = map_finding(&f, Format::Raw, &Enrichment::default());
        assert_eq!(events.len(), 1);
        let ev = &events[0];
        let id = event_id("fid", f.updated_at, 0);
        assert_eq!(ev.id, id);
        let hyphenated = format!(
            "{}-{}-{}-{}-{}",
            &id[..8],
            &id[8..12],
            &id[12..16],
            &id[16..20],
            &id[20..]
        );
        assert_eq!(
            ev.body,
            json!({
                "version": "0", "id": hyphenated, "detail-type": "GuardDuty Finding",
                "source": "aws.guardduty", "account": "111122223333",
                "time": "2025-02-25T20:40:06.721Z", "region": "eu-west-1", "resources": [],
                "detail": detail, "uuid": id
            })
        );
    }

    #[test]
    fn raw_keeps_envelope_fields_and_adds_enrichment() {
        let env = json!({"version": "0", "id": "eb-id", "detail-type": "GuardDuty Finding",
            "source": "aws.guardduty", "account": "111122223333", "time": "2025-01-01T00:00:00Z",
            "region": "eu-west-1", "resources": ["arn:x"], "extra": 1});
        let f = finding(json!({"id": "fid"}), Some(env));
        let enrichment = Enrichment {
            account_name: Some("prod".into()),
            account_alias: Some("prod-alias".into()),
            fields: Vec::new(),
        };
        let body = &map_finding(&f, Format::Raw, &enrichment)[0].body;
        assert_eq!(body["id"], "eb-id");
        assert_eq!(body["time"], "2025-01-01T00:00:00Z");
        assert_eq!(body["resources"], json!(["arn:x"]));
        assert_eq!(body["extra"], 1);
        assert_eq!(body["aws.account.name"], "prod");
        assert_eq!(body["aws.account.alias"], "prod-alias");
        let no_alias = Enrichment {
            account_name: Some("prod".into()),
            account_alias: None,
            fields: Vec::new(),
        };
        let body = &map_finding(&f, Format::Raw, &no_alias)[0].body;
        assert!(body.get("aws.account.alias").is_none());
        let body = &map_finding(&f, Format::Raw, &Enrichment::default())[0].body;
        assert!(body.get("aws.account.name").is_none());
    }

    #[test]
    fn account_fields_go_top_level_in_both_formats_and_never_overwrite() {
        let f = finding(json!({"id": "fid", "severity": 5}), None);
        let enrichment = Enrichment {
            account_name: Some("prod".into()),
            fields: vec![
                ("dt.security_context".into(), "payments".into()),
                // Refused by the spec parser; even so the mapping's own field wins.
                ("aws.account.id".into(), "spoofed".into()),
                ("region".into(), "spoofed".into()),
            ],
            ..Enrichment::default()
        };
        let raw = &map_finding(&f, Format::Raw, &enrichment)[0].body;
        assert_eq!(raw["dt.security_context"], "payments");
        assert_eq!(raw["aws.account.name"], "prod");
        assert_eq!(raw["region"], "eu-west-1");
        assert!(raw["detail"].get("dt.security_context").is_none());
        let semantic = &map_finding(&f, Format::Semantic, &enrichment)[0].body;
        assert_eq!(semantic["dt.security_context"], "payments");
        assert_eq!(semantic["aws.account.id"], "111122223333");
    }

    #[test]
    fn partial_envelope_is_completed() {
        let f = finding(json!({"id": "fid"}), Some(json!({"region": "us-east-1"})));
        let body = &map_finding(&f, Format::Raw, &Enrichment::default())[0].body;
        assert_eq!(body["region"], "us-east-1");
        assert_eq!(body["source"], "aws.guardduty");
        assert_eq!(body["account"], "111122223333");
        assert_eq!(body["version"], "0");
    }

    #[test]
    fn semantic_has_no_timestamp_and_carries_scores_unchanged() {
        let f = finding(
            json!({"id": "fid", "severity": 8.95, "createdAt": "2025-02-25 20:40:06.721", "title": "t",
                   "type": "Recon:EC2/Portscan", "partition": "aws"}),
            None,
        );
        let body = &map_finding(&f, Format::Semantic, &Enrichment::default())[0].body;
        assert!(body.get("timestamp").is_none());
        assert_eq!(body["finding.severity"], "HIGH");
        assert_eq!(body["dt.security.risk.level"], "HIGH");
        assert_eq!(body["finding.score"], json!(8.95));
        assert_eq!(body["dt.security.risk.score"], json!(8.95));
        assert_eq!(body["finding.time.created"], "2025-02-25T20:40:06.721Z");
        assert_eq!(body["event.id"], event_id("fid", f.updated_at, 0));
        assert_eq!(body["aws.partition"], "aws");
        assert!(body.get("object.type").is_none(), "no resource, no object");
    }

    #[test]
    fn semantic_ecs_containers_and_eks_runtime_container() {
        let f = finding(
            json!({"id": "fid", "resource": {"resourceType": "ECSCluster", "ecsClusterDetails": {
                "name": "prod", "arn": "arn:ecs", "taskDetails": {"containers": [
                    {"name": "a", "image": "host:5000/app:1.2"},
                    {"name": "b", "id": "cid", "image": "repo@sha256:ff"}]}}}}),
            None,
        );
        let events = map_finding(&f, Format::Semantic, &Enrichment::default());
        assert_eq!(events.len(), 2);
        let (a, b) = (&events[0].body, &events[1].body);
        assert_eq!(a["object.type"], "CONTAINER");
        assert_eq!(a["container.name"], "a");
        assert_eq!(a["container.image.name"], "host:5000/app");
        assert_eq!(a["container.image.version"], "1.2");
        assert_eq!(a["aws.resource.type"], "AWS::ECS::Cluster");
        assert_eq!(a["aws.resource.id"], "arn:ecs");
        assert_eq!(b["container.id"], "cid");
        assert_eq!(b["object.id"], "cid");
        assert_eq!(b["container.image.digest"], "sha256:ff");
        assert_ne!(a["event.id"], b["event.id"]);
        assert_eq!((events[0].object_index, events[1].object_index), (0, 1));

        let f = finding(
            json!({"id": "fid", "resource": {"resourceType": "Container",
                "containerDetails": {"id": "c1", "name": "web", "image": "nginx:1"},
                "eksClusterDetails": {"name": "k", "arn": "arn:eks"},
                "kubernetesDetails": {"kubernetesWorkloadDetails": {"name": "web-0", "type": "pods", "namespace": "shop"}}}}),
            None,
        );
        let body = &map_finding(&f, Format::Semantic, &Enrichment::default())[0].body;
        assert_eq!(body["object.type"], "CONTAINER");
        assert_eq!(body["object.id"], "c1");
        assert_eq!(body["aws.resource.type"], "AWS::EKS::Cluster");
        assert_eq!(body["k8s.cluster.name"], "k");
        assert_eq!(body["k8s.namespace.name"], "shop");
        assert_eq!(body["k8s.pod.name"], "web-0");
    }
}
