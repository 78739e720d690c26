//! Tolerant input parsing: one document in, findings (or skips, or per-record errors) out.
//!
//! A document is what one file or one message holds: an EventBridge event, a bare finding, a
//! GetFindings-style `{"findings": [...]}` wrapper, a JSON array of any of these, or NDJSON. Each
//! record is judged on its own so one bad record never hides the good ones around it.
//!
//! boto3-style PascalCase findings (`AccountId`, `Resource.ResourceType`) are renamed to the
//! camelCase wire names that EventBridge and the GuardDuty API use, so everything downstream sees
//! one shape. The renaming follows the GuardDuty service model: keys lose their capital first
//! letter, except the handful of members whose wire name differs (see [`RENAMES`]) and the maps
//! whose keys are data (see [`DATA_MAPS`]), which are kept as they are.

use serde_json::{Map, Value};

use crate::error::ModelError;
use crate::finding::Finding;
use crate::time::Timestamp;

/// What one input record turned out to be.
#[derive(Debug, Clone, PartialEq)]
pub enum Item {
    Finding(Box<Finding>),
    /// A well-formed event that is not a GuardDuty finding (another `detail-type` or `source`).
    Skipped {
        reason: String,
    },
}

/// A record that could not be used, with its position in the document.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordError {
    /// 1-based record number within the document (array element or NDJSON line order).
    pub record: usize,
    /// 1-based line number where the record starts, when the document is line-oriented.
    pub line: Option<usize>,
    pub error: ModelError,
}

/// The EventBridge `source` of a GuardDuty finding event.
pub const EVENT_SOURCE: &str = "aws.guardduty";
/// The EventBridge `detail-type` of a GuardDuty finding event; GuardDuty also sends others
/// (malware scan results, CloudTrail calls of its API), which are skipped.
pub const EVENT_DETAIL_TYPE: &str = "GuardDuty Finding";

/// How deep arrays may nest inside each other (`[[[finding]]]`) before we give up: real inputs
/// nest at most twice (an array of wrappers); the limit keeps hostile input from recursing deeply.
const MAX_ARRAY_NESTING: usize = 8;

/// Longest excerpt of a bad value quoted in an error message.
const MAX_QUOTE: usize = 80;

/// Parses a whole document (file contents, message body).
///
/// The document is first read as a stream of whitespace-separated JSON values, which covers a
/// single (possibly pretty-printed) document and NDJSON alike in one pass. Only when that stream
/// hits a syntax error is the document re-read line by line, so each bad NDJSON line becomes its
/// own [`RecordError`] and the good lines around it still count.
pub fn parse_document(text: &str) -> Vec<Result<Item, RecordError>> {
    // Files saved by some Windows tools start with a byte-order mark, which JSON does not allow.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    if text.trim().is_empty() {
        return Vec::new();
    }
    match parse_stream(text) {
        Some(values) => {
            // One value: a plain JSON document, records are its elements, no line numbers.
            // Several values: NDJSON (or concatenated JSON), each value starts on some line.
            let line_oriented = values.len() > 1;
            let mut out = Vec::new();
            for (line, value) in values {
                let line = line_oriented.then_some(line);
                push_records(&mut out, parse_value(value), line);
            }
            out
        }
        None => parse_lines(text),
    }
}

/// Reads `text` as a sequence of JSON values; `None` on the first syntax error.
fn parse_stream(text: &str) -> Option<Vec<(usize, Value)>> {
    let mut stream = serde_json::Deserializer::from_str(text).into_iter::<Value>();
    let mut values = Vec::new();
    let mut line = 1usize;
    let mut counted_to = 0usize;
    loop {
        // The offset before a value is the end of the previous one; the value itself starts at
        // the next non-whitespace byte.
        let before = stream.byte_offset();
        let start = text
            .get(before..)
            .and_then(|rest| rest.find(|c: char| !c.is_whitespace()))
            .map_or(text.len(), |skip| before + skip);
        match stream.next() {
            None => return Some(values),
            Some(Err(_)) => return None,
            Some(Ok(value)) => {
                line += count_newlines(text, counted_to, start);
                counted_to = start;
                values.push((line, value));
            }
        }
    }
}

fn count_newlines(text: &str, from: usize, to: usize) -> usize {
    text.as_bytes()
        .get(from..to)
        .map_or(0, |b| b.iter().filter(|&&c| c == b'\n').count())
}

/// Line-by-line fallback: every non-blank line is one record.
fn parse_lines(text: &str) -> Vec<Result<Item, RecordError>> {
    let mut out = Vec::new();
    for (i, raw_line) in text.lines().enumerate() {
        let line = raw_line.trim();
        if line.is_empty() {
            continue;
        }
        push_records(&mut out, parse_record(line), Some(i + 1));
    }
    out
}

/// Parses one record's text (an NDJSON line, one element of a streamed array): a JSON value that
/// may hold several findings (an array, a `{"findings": [...]}` wrapper). Text that is not JSON is
/// one error quoting its start. Streaming readers call this per record; [`parse_document`] is
/// for whole documents held in memory.
pub fn parse_record(text: &str) -> Vec<Result<Item, ModelError>> {
    match serde_json::from_str::<Value>(text) {
        Ok(value) => parse_value(value),
        Err(e) => vec![Err(ModelError::Json(format!(
            "{e} (record starts {:?})",
            excerpt(text.trim_start())
        )))],
    }
}

fn push_records(
    out: &mut Vec<Result<Item, RecordError>>,
    results: Vec<Result<Item, ModelError>>,
    line: Option<usize>,
) {
    for r in results {
        let record = out.len() + 1;
        out.push(r.map_err(|error| RecordError {
            record,
            line,
            error,
        }));
    }
}

/// Parses one already-decoded JSON value (a Lambda payload, one API result). Arrays and
/// `{"findings": [...]}` wrappers yield several items.
pub fn parse_value(value: Value) -> Vec<Result<Item, ModelError>> {
    let mut out = Vec::new();
    collect(value, 0, &mut out);
    out
}

fn collect(value: Value, depth: usize, out: &mut Vec<Result<Item, ModelError>>) {
    match value {
        Value::Array(items) => {
            if depth >= MAX_ARRAY_NESTING {
                out.push(Err(ModelError::NotAFinding(format!(
                    "arrays nested more than {MAX_ARRAY_NESTING} deep"
                ))));
                return;
            }
            for item in items {
                collect(item, depth + 1, out);
            }
        }
        Value::Object(obj) => {
            if let Some(key) = wrapper_key(&obj) {
                let mut obj = obj;
                match obj.remove(key) {
                    Some(Value::Array(items)) => {
                        if depth >= MAX_ARRAY_NESTING {
                            out.push(Err(ModelError::NotAFinding(format!(
                                "arrays nested more than {MAX_ARRAY_NESTING} deep"
                            ))));
                            return;
                        }
                        for item in items {
                            collect(item, depth + 1, out);
                        }
                    }
                    _ => out.push(Err(ModelError::WrongType {
                        field: "findings",
                        expected: "array",
                    })),
                }
            } else {
                out.push(parse_object(obj));
            }
        }
        other => out.push(Err(ModelError::NotAFinding(format!(
            "expected a JSON object or array, got {}",
            json_kind(&other)
        )))),
    }
}

/// `findings` (GuardDuty API) or `Findings` (boto3) when the object is a GetFindings-style
/// wrapper rather than a finding or an event.
fn wrapper_key(obj: &Map<String, Value>) -> Option<&'static str> {
    if obj.contains_key("detail") || obj.contains_key("id") || obj.contains_key("Id") {
        return None;
    }
    ["findings", "Findings"]
        .into_iter()
        .find(|k| obj.contains_key(*k))
}

/// One object: an EventBridge event (full or partial envelope) or a bare finding.
fn parse_object(mut obj: Map<String, Value>) -> Result<Item, ModelError> {
    let is_envelope =
        obj.contains_key("detail") || obj.contains_key("detail-type") || obj.contains_key("source");
    if !is_envelope {
        return finding_from(obj, None).map(|f| Item::Finding(Box::new(f)));
    }
    let source = obj.get("source");
    let detail_type = obj.get("detail-type");
    let source_ok = source.is_none_or(|s| s.as_str() == Some(EVENT_SOURCE));
    let type_ok = detail_type.is_none_or(|t| t.as_str() == Some(EVENT_DETAIL_TYPE));
    if !(source_ok && type_ok) {
        return Ok(Item::Skipped {
            reason: format!(
                "event with source {} and detail-type {} is not a GuardDuty finding",
                quote_opt(source),
                quote_opt(detail_type)
            ),
        });
    }
    match obj.remove("detail") {
        Some(Value::Object(detail)) => {
            finding_from(detail, Some(obj)).map(|f| Item::Finding(Box::new(f)))
        }
        Some(_) => Err(ModelError::WrongType {
            field: "detail",
            expected: "object",
        }),
        None => Err(ModelError::MissingField("detail")),
    }
}

/// Builds a [`Finding`] from its JSON (after PascalCase normalisation) and its envelope.
///
/// `accountId` and `region` fall back to the envelope's `account` and `region`: EventBridge
/// sets those from the finding, and a partial envelope such as `{region, detail}` carries the
/// region only there. `id` and `updatedAt` have no fallback: they are the dedup key.
fn finding_from(
    detail: Map<String, Value>,
    envelope: Option<Map<String, Value>>,
) -> Result<Finding, ModelError> {
    let detail = if is_pascal_case(&detail) {
        normalise_map(detail, Ctx::Normal)
    } else {
        detail
    };
    let env_str = |key: &str| envelope.as_ref().and_then(|e| e.get(key));
    let id = required_str(detail.get("id"), "id")?;
    let account_id = required_str(detail.get("accountId").or(env_str("account")), "accountId")?;
    let region = required_str(detail.get("region").or(env_str("region")), "region")?;
    let updated_at = match detail.get("updatedAt") {
        None | Some(Value::Null) => return Err(ModelError::MissingField("updatedAt")),
        Some(v) => Timestamp::from_json(v).ok_or_else(|| bad_timestamp("updatedAt", v))?,
    };
    Ok(Finding {
        id,
        account_id,
        region,
        updated_at,
        detail,
        envelope,
    })
}

/// Why `v` is not a timestamp: an epoch number in another unit is named as such.
fn bad_timestamp(field: &'static str, v: &Value) -> ModelError {
    let epoch = match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse::<f64>().ok(),
        _ => None,
    };
    match epoch {
        Some(n) if n.is_finite() && n.abs() >= crate::time::EPOCH_LIMIT => ModelError::Implausible {
            field,
            value: excerpt(&v.to_string()),
            why: "an epoch number this large is not seconds or milliseconds (microseconds or nanoseconds?)".to_owned(),
        },
        _ => ModelError::BadTimestamp {
            field,
            value: excerpt(&v.to_string()),
        },
    }
}

/// A required identifier: a non-empty string (an empty one identifies nothing).
fn required_str(v: Option<&Value>, field: &'static str) -> Result<String, ModelError> {
    match v {
        None | Some(Value::Null) => Err(ModelError::MissingField(field)),
        Some(Value::String(s)) if s.trim().is_empty() => Err(ModelError::MissingField(field)),
        Some(Value::String(s)) => Ok(s.clone()),
        // Account ids sometimes arrive as numbers from spreadsheets and scripts; digits are safe.
        Some(Value::Number(n)) if n.is_u64() => Ok(n.to_string()),
        Some(_) => Err(ModelError::WrongType {
            field,
            expected: "string",
        }),
    }
}

/// boto3-style input: `Id`/`AccountId` present, `id`/`accountId` absent.
fn is_pascal_case(detail: &Map<String, Value>) -> bool {
    (detail.contains_key("Id") || detail.contains_key("AccountId"))
        && !detail.contains_key("id")
        && !detail.contains_key("accountId")
}

/// Members whose wire (locationName) spelling is not simply the member name with a lower-case
/// first letter, from the GuardDuty service model (`Finding` and everything it contains).
const RENAMES: &[(&str, &str)] = &[
    ("TaskCreatedAt", "createdAt"),         // EcsTaskDetails
    ("SourceIps", "sourceIPs"),             // KubernetesApiCallAction
    ("KubernetesResourcesTypes", "type"),   // KubernetesWorkload
    ("Latitude", "lat"),                    // NetworkGeoLocation
    ("Longitude", "lon"),                   // NetworkGeoLocation
    ("Code", "productCodeId"),              // ProductCode
    ("ProductType", "productCodeType"),     // ProductCode
    ("LoginAttributes", "LoginAttributes"), // RdsLoginAttemptAction: wire name is PascalCase
];

/// Maps whose keys are data (resource types, profile names, feature names), not member names.
/// The value says how many levels of keys are data: `profiles` is a map of maps.
const DATA_MAPS: &[(&str, u8)] = &[
    ("AffectedResources", 1), // AwsApiCallAction: {"AWS::IAM::Role": "..."}
    ("Profiles", 2),          // Anomaly: profile type -> feature -> [objects]
    ("Behavior", 2),          // AnomalyUnusual: type -> feature -> object
];

#[derive(Clone, Copy)]
enum Ctx {
    Normal,
    /// Inside the `Account` structure of a `User`, whose `Name` is sent as `account`.
    Account,
    /// Inside `Ec2Instance`, whose `IamInstanceProfile` keeps its PascalCase wire name.
    Ec2Instance,
    /// Keys are data for this many more levels.
    Data(u8),
}

fn normalise_map(map: Map<String, Value>, ctx: Ctx) -> Map<String, Value> {
    let mut out = Map::with_capacity(map.len());
    for (key, value) in map {
        let (new_key, child_ctx) = match ctx {
            Ctx::Data(levels) => {
                let child = if levels > 1 {
                    Ctx::Data(levels - 1)
                } else {
                    Ctx::Normal
                };
                (key, child)
            }
            _ => {
                let child = child_ctx(&key);
                let renamed = match (ctx, key.as_str()) {
                    (Ctx::Account, "Name") => "account".to_owned(),
                    (Ctx::Ec2Instance, "IamInstanceProfile") => key,
                    _ => rename(key),
                };
                (renamed, child)
            }
        };
        out.insert(new_key, normalise_value(value, child_ctx));
    }
    out
}

fn child_ctx(key: &str) -> Ctx {
    if let Some((_, levels)) = DATA_MAPS.iter().find(|(k, _)| *k == key) {
        return Ctx::Data(*levels);
    }
    match key {
        "Account" => Ctx::Account,
        "Ec2Instance" => Ctx::Ec2Instance,
        _ => Ctx::Normal,
    }
}

fn normalise_value(value: Value, ctx: Ctx) -> Value {
    match value {
        Value::Object(map) => Value::Object(normalise_map(map, ctx)),
        // A list keeps its context: the elements are the structures the key names.
        Value::Array(items) => {
            Value::Array(items.into_iter().map(|v| normalise_value(v, ctx)).collect())
        }
        other => other,
    }
}

fn rename(key: String) -> String {
    if let Some((_, to)) = RENAMES.iter().find(|(from, _)| *from == key) {
        return (*to).to_owned();
    }
    let mut chars = key.chars();
    match chars.next() {
        Some(first) if first.is_ascii_uppercase() => {
            let mut s = String::with_capacity(key.len());
            s.push(first.to_ascii_lowercase());
            s.push_str(chars.as_str());
            s
        }
        _ => key,
    }
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn quote_opt(v: Option<&Value>) -> String {
    match v {
        None => "(none)".to_owned(),
        Some(Value::String(s)) => format!("{:?}", excerpt(s)),
        Some(other) => excerpt(&other.to_string()),
    }
}

/// At most [`MAX_QUOTE`] characters of `s`, cut on a character boundary.
fn excerpt(s: &str) -> String {
    match s.char_indices().nth(MAX_QUOTE) {
        Some((cut, _)) => format!("{}…", &s[..cut]),
        None => s.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn findings(text: &str) -> Vec<Finding> {
        parse_document(text)
            .into_iter()
            .filter_map(|r| match r {
                Ok(Item::Finding(f)) => Some(*f),
                _ => None,
            })
            .collect()
    }

    const BARE: &str = r#"{"id":"f1","accountId":"111122223333","region":"eu-west-1","updatedAt":"2025-01-02T03:04:05.678Z","severity":5}"#;

    #[test]
    fn bare_finding_envelope_wrapper_array_and_ndjson() {
        let f = findings(BARE);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].id, "f1");
        assert_eq!(f[0].updated_at.millis(), 1_735_787_045_678);
        assert_eq!(f[0].envelope, None);

        let env = format!(
            r#"{{"version":"0","id":"e","detail-type":"GuardDuty Finding","source":"aws.guardduty","account":"111122223333","region":"eu-west-1","detail":{BARE}}}"#
        );
        let f = findings(&env);
        assert_eq!(f.len(), 1);
        let envelope = f[0].envelope.as_ref().expect("has envelope");
        assert_eq!(envelope.get("id"), Some(&json!("e")));
        assert!(!envelope.contains_key("detail"));

        assert_eq!(
            findings(&format!(r#"{{"findings":[{BARE},{BARE}]}}"#)).len(),
            2
        );
        assert_eq!(findings(r#"{"findings":[]}"#).len(), 0);
        assert_eq!(findings(&format!("[{BARE},{env},[{BARE}]]")).len(), 3);
        assert_eq!(findings(&format!("{BARE}\n\n{env}\n")).len(), 2);
    }

    #[test]
    fn a_byte_order_mark_is_ignored() {
        assert_eq!(findings(&format!("\u{feff}{BARE}")).len(), 1);
        assert_eq!(findings(&format!("\u{feff}{BARE}\n{BARE}\n")).len(), 2);
    }

    #[test]
    fn empty_documents_yield_nothing() {
        for text in ["", "   ", "\n\n\t\n", "[]", r#"{"findings":[]}"#] {
            assert_eq!(parse_document(text), Vec::new(), "{text:?}");
        }
    }

    #[test]
    fn other_events_are_skipped() {
        let text = r#"{"source":"aws.guardduty","detail-type":"AWS API Call via CloudTrail","detail":{"eventName":"CreateSampleFindings"}}"#;
        match parse_document(text).as_slice() {
            [Ok(Item::Skipped { reason })] => {
                assert!(reason.contains("AWS API Call via CloudTrail"), "{reason}");
            }
            other => panic!("expected one skip, got {other:?}"),
        }
        let text = r#"{"source":"aws.ec2","detail-type":"GuardDuty Finding","detail":{}}"#;
        assert!(matches!(
            parse_document(text).as_slice(),
            [Ok(Item::Skipped { .. })]
        ));
    }

    #[test]
    fn partial_envelope_supplies_region() {
        let text =
            r#"{"region":"us-east-1","detail":{"id":"x","accountId":"1","updatedAt":1700000000}}"#;
        let f = findings(text);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].region, "us-east-1");
        assert!(!f[0].detail.contains_key("region"), "detail is untouched");
        assert_eq!(
            f[0].envelope,
            Some(
                json!({"region":"us-east-1"})
                    .as_object()
                    .cloned()
                    .expect("object")
            )
        );
    }

    #[test]
    fn missing_fields_are_errors() {
        for (field, text) in [
            (
                "id",
                r#"{"accountId":"1","region":"r","updatedAt":"2025-01-01T00:00:00Z"}"#,
            ),
            (
                "accountId",
                r#"{"id":"x","region":"r","updatedAt":"2025-01-01T00:00:00Z"}"#,
            ),
            (
                "region",
                r#"{"id":"x","accountId":"1","updatedAt":"2025-01-01T00:00:00Z"}"#,
            ),
            ("updatedAt", r#"{"id":"x","accountId":"1","region":"r"}"#),
            (
                "id",
                r#"{"id":"  ","accountId":"1","region":"r","updatedAt":"2025-01-01T00:00:00Z"}"#,
            ),
        ] {
            match parse_document(text).as_slice() {
                [
                    Err(RecordError {
                        record: 1,
                        line: None,
                        error: ModelError::MissingField(f),
                    }),
                ] => {
                    assert_eq!(*f, field, "{text}");
                }
                other => panic!("{text}: {other:?}"),
            }
        }
        let bad_ts = r#"{"id":"x","accountId":"1","region":"r","updatedAt":"yesterday"}"#;
        assert!(matches!(
            parse_document(bad_ts).as_slice(),
            [Err(RecordError {
                error: ModelError::BadTimestamp {
                    field: "updatedAt",
                    ..
                },
                ..
            })]
        ));
        let wrong = r#"{"id":7.5,"accountId":"1","region":"r","updatedAt":1}"#;
        assert!(matches!(
            parse_document(wrong).as_slice(),
            [Err(RecordError {
                error: ModelError::WrongType { field: "id", .. },
                ..
            })]
        ));
    }

    #[test]
    fn ndjson_errors_carry_line_numbers_and_good_lines_survive() {
        let text = format!("{BARE}\nnot json\n\n{{\"id\":1\n{BARE}\n");
        let results = parse_document(&text);
        assert_eq!(results.len(), 4, "{results:?}");
        assert!(matches!(results[0], Ok(Item::Finding(_))));
        match &results[1] {
            Err(RecordError {
                record: 2,
                line: Some(2),
                error: ModelError::Json(_),
            }) => {}
            other => panic!("{other:?}"),
        }
        match &results[2] {
            Err(RecordError {
                record: 3,
                line: Some(4),
                error: ModelError::Json(_),
            }) => {}
            other => panic!("{other:?}"),
        }
        assert!(matches!(results[3], Ok(Item::Finding(_))));
    }

    #[test]
    fn valid_ndjson_has_line_numbers_single_document_has_none() {
        let bad = r#"{"id":"x"}"#;
        let text = format!("{BARE}\n\n{bad}\n");
        match parse_document(&text).as_slice() {
            [
                Ok(_),
                Err(RecordError {
                    record: 2,
                    line: Some(3),
                    ..
                }),
            ] => {}
            other => panic!("{other:?}"),
        }
        let text = format!("[\n{BARE},\n{bad}\n]");
        match parse_document(&text).as_slice() {
            [
                Ok(_),
                Err(RecordError {
                    record: 2,
                    line: None,
                    ..
                }),
            ] => {}
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn scalars_are_not_findings() {
        for text in ["42", "\"finding\"", "null", "true", "[1, {}]"] {
            let results = parse_document(text);
            assert!(!results.is_empty(), "{text}");
            assert!(results.iter().all(Result::is_err), "{text}: {results:?}");
        }
    }

    #[test]
    fn pascal_case_is_normalised_but_data_keys_are_kept() {
        let v = json!({
            "Id": "p1", "AccountId": "111122223333", "Region": "eu-west-1",
            "UpdatedAt": "2025-01-02T03:04:05.678Z",
            "Resource": {
                "ResourceType": "S3Bucket",
                "S3BucketDetails": [{"Name": "b", "Tags": [{"Key": "Owner", "Value": "Team"}]}],
                "EksClusterDetails": {"Name": "c"},
                "InstanceDetails": {"ProductCodes": [{"Code": "pc", "ProductType": "marketplace"}]}
            },
            "Service": {
                "Action": {"AwsApiCallAction": {"AffectedResources": {"AWS::IAM::Role": "arn:r"}}},
                "Detection": {"Anomaly": {
                    "Profiles": {"Frequency": {"UserAgent": [{"ProfileType": "FREQ"}]}},
                    "Unusual": {"Behavior": {"User": {"Api": {"ObservedCount": 1}}}}
                }}
            }
        });
        let results = parse_value(v);
        let f = match results.as_slice() {
            [Ok(Item::Finding(f))] => f,
            other => panic!("{other:?}"),
        };
        let d = Value::Object(f.detail.clone());
        assert_eq!(d["id"], "p1");
        assert_eq!(d["accountId"], "111122223333");
        assert_eq!(d["resource"]["resourceType"], "S3Bucket");
        assert_eq!(d["resource"]["s3BucketDetails"][0]["name"], "b");
        assert_eq!(
            d["resource"]["s3BucketDetails"][0]["tags"][0],
            json!({"key": "Owner", "value": "Team"})
        );
        assert_eq!(d["resource"]["eksClusterDetails"]["name"], "c");
        assert_eq!(
            d["resource"]["instanceDetails"]["productCodes"][0],
            json!({"productCodeId": "pc", "productCodeType": "marketplace"})
        );
        assert_eq!(
            d["service"]["action"]["awsApiCallAction"]["affectedResources"],
            json!({"AWS::IAM::Role": "arn:r"})
        );
        assert_eq!(
            d["service"]["detection"]["anomaly"]["profiles"],
            json!({"Frequency": {"UserAgent": [{"profileType": "FREQ"}]}})
        );
        assert_eq!(
            d["service"]["detection"]["anomaly"]["unusual"]["behavior"],
            json!({"User": {"Api": {"observedCount": 1}}})
        );
        assert!(!f.detail.contains_key("Id"));
    }

    #[test]
    fn camel_case_input_is_not_touched() {
        // A camelCase finding that happens to carry a PascalCase key keeps it.
        let v = json!({"id":"x","accountId":"1","region":"r","updatedAt":1,"Extra":{"A":1}});
        let results = parse_value(v.clone());
        match results.as_slice() {
            [Ok(Item::Finding(f))] => assert_eq!(Value::Object(f.detail.clone()), v),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn every_timestamp_spelling_gives_the_same_version() {
        let want = Timestamp::from_millis(1_740_516_006_721);
        for ts in [
            json!("2025-02-25T20:40:06.721Z"),
            json!("2025-02-25 20:40:06.721"),
            json!("2025-02-25T20:40:06.721"),
            json!("2025-02-25T21:40:06.721+01:00"),
            json!(1_740_516_006_721_i64),
            json!(1_740_516_006.721),
            json!("1740516006721"),
        ] {
            let v = json!({"id":"x","accountId":"1","region":"r","updatedAt":ts.clone()});
            match parse_value(v).as_slice() {
                [Ok(Item::Finding(f))] => assert_eq!(f.updated_at, want, "{ts}"),
                other => panic!("{ts}: {other:?}"),
            }
        }
        // Whole seconds without fraction.
        let v = json!({"id":"x","accountId":"1","region":"r","updatedAt":"2025-02-25T20:40:06Z"});
        match parse_value(v).as_slice() {
            [Ok(Item::Finding(f))] => assert_eq!(f.updated_at.millis(), 1_740_516_006_000),
            other => panic!("{other:?}"),
        }
    }

    /// Issue #16: an epoch `updatedAt` in microseconds or nanoseconds is refused naming the
    /// field and the likely unit, not read as a version thousands of years ahead.
    #[test]
    fn epoch_updated_at_in_another_unit_is_implausible() {
        for ts in [
            json!(1_740_516_006_721_000_i64),
            json!("1740516006721000000"),
        ] {
            let v = json!({"id":"x","accountId":"1","region":"r","updatedAt":ts.clone()});
            match parse_value(v).as_slice() {
                [Err(ModelError::Implausible { field, why, .. })] => {
                    assert_eq!(*field, "updatedAt");
                    assert!(why.contains("microseconds"), "{why}");
                }
                other => panic!("{ts}: {other:?}"),
            }
        }
    }

    #[test]
    fn a_version_more_than_a_day_ahead_is_refused() {
        let f = findings(BARE).remove(0);
        let day = crate::finding::MAX_FUTURE_MS;
        let now = f.updated_at.saturating_add_millis(-day);
        assert_eq!(f.check_version(now), Ok(()));
        let err = f
            .check_version(now.saturating_add_millis(-1))
            .expect_err("ahead by a day and a millisecond");
        assert!(err.to_string().contains("`updatedAt`"), "{err}");
    }

    #[test]
    fn deeply_nested_arrays_are_refused_not_recursed() {
        let mut v = json!({"id":"x"});
        for _ in 0..100 {
            v = Value::Array(vec![v]);
        }
        let results = parse_value(v);
        assert_eq!(results.len(), 1);
        assert!(matches!(results[0], Err(ModelError::NotAFinding(_))));
    }
}
