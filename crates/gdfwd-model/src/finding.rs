//! A parsed GuardDuty finding: the few fields we interpret, plus the whole JSON kept as is.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::time::Timestamp;

/// One version of one GuardDuty finding.
///
/// `detail` is the finding exactly as received, after PascalCase normalisation (boto3-style input
/// is converted to the camelCase that EventBridge and the GuardDuty API use). Unknown fields are
/// kept so the `raw` payload round-trips findings we do not fully understand.
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    pub id: String,
    pub account_id: String,
    pub region: String,
    /// Normalised `updatedAt`: the dedup version key.
    pub updated_at: Timestamp,
    /// The finding JSON (camelCase), unchanged apart from key-case normalisation.
    pub detail: Map<String, Value>,
    /// The EventBridge envelope the finding arrived in, without `detail`; `None` for a bare finding.
    pub envelope: Option<Map<String, Value>>,
}

/// The summary of a finding version that the state store records for audit.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct FindingMeta {
    pub account_id: String,
    pub region: String,
    pub finding_type: Option<String>,
    pub severity: Option<f64>,
    pub title: Option<String>,
}

/// How far ahead of "now" an `updatedAt` may be: clocks differ a little, a version days ahead
/// is a typo or a test value, and it would make every real version of the finding wait for it.
pub const MAX_FUTURE_MS: i64 = 24 * 3600 * 1000;

impl Finding {
    /// Refuses an `updatedAt` more than [`MAX_FUTURE_MS`] after `now` (the caller's clock: the
    /// model reads none), naming the field.
    pub fn check_version(&self, now: Timestamp) -> Result<(), crate::ModelError> {
        let limit = now.saturating_add_millis(MAX_FUTURE_MS);
        if self.updated_at > limit {
            return Err(crate::ModelError::Implausible {
                field: "updatedAt",
                value: self.updated_at.to_rfc3339(),
                why: format!("more than a day after now ({now})"),
            });
        }
        Ok(())
    }

    fn str_field(&self, key: &str) -> Option<&str> {
        self.detail.get(key).and_then(Value::as_str)
    }

    /// `type`, e.g. `Recon:EC2/Portscan`.
    pub fn finding_type(&self) -> Option<&str> {
        self.str_field("type")
    }

    pub fn title(&self) -> Option<&str> {
        self.str_field("title")
    }

    pub fn description(&self) -> Option<&str> {
        self.str_field("description")
    }

    /// `severity` as a finite number (GuardDuty: 1.0 to 10.0; some exports write it as a
    /// string, where `"NaN"` or `"inf"` would parse but mean nothing).
    pub fn severity(&self) -> Option<f64> {
        let n = match self.detail.get("severity")? {
            Value::Number(n) => n.as_f64(),
            Value::String(s) => s.trim().parse().ok(),
            _ => None,
        };
        n.filter(|n| n.is_finite())
    }

    pub fn created_at(&self) -> Option<Timestamp> {
        self.detail.get("createdAt").and_then(Timestamp::from_json)
    }

    pub fn resource(&self) -> Option<&Map<String, Value>> {
        self.detail.get("resource").and_then(Value::as_object)
    }

    /// `resource.resourceType`, e.g. `Instance`, `S3Bucket`.
    pub fn resource_type(&self) -> Option<&str> {
        self.resource()?.get("resourceType")?.as_str()
    }

    /// Archived findings carry `service.archived: true`.
    pub fn archived(&self) -> bool {
        self.detail
            .get("service")
            .and_then(|s| s.get("archived"))
            .and_then(Value::as_bool)
            .unwrap_or(false)
    }

    /// A GuardDuty sample finding (`CreateSampleFindings`): `service.additionalInfo.sample` is
    /// `true`, as EventBridge delivers it. The GuardDuty API (`GetFindings`) has no such member:
    /// its `additionalInfo` is `{"value": "<JSON text>", "type": "default"}`, and the text holds
    /// `{"sample":true}`, so that is read too. Anything else (no flag, `false`, unreadable text)
    /// is not a sample.
    pub fn is_sample(&self) -> bool {
        let Some(info) = self
            .detail
            .get("service")
            .and_then(|s| s.get("additionalInfo"))
        else {
            return false;
        };
        if info.get("sample").and_then(Value::as_bool) == Some(true) {
            return true;
        }
        info.get("value")
            .and_then(Value::as_str)
            .and_then(|text| serde_json::from_str::<Value>(text).ok())
            .and_then(|v| v.get("sample").and_then(Value::as_bool))
            == Some(true)
    }

    pub fn meta(&self) -> FindingMeta {
        FindingMeta {
            account_id: self.account_id.clone(),
            region: self.region.clone(),
            finding_type: self.finding_type().map(str::to_owned),
            severity: self.severity().and_then(storable_number),
            title: self.title().map(str::to_owned),
        }
    }
}

/// A severity the audit record can hold in any store: DynamoDB's numbers stop at 1e126 and below
/// 1e-130, so an absurd one (`1e300`) would make the whole claim fail. GuardDuty's are 0 to 10;
/// beyond a billion it is left out of the audit record (the event still carries it), and a
/// vanishing one is 0.
fn storable_number(n: f64) -> Option<f64> {
    match n.abs() {
        a if a > 1e9 => None,
        a if a < 1e-9 => Some(0.0),
        _ => Some(n),
    }
}
