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

impl Finding {
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

    /// `severity` as a number (GuardDuty: 1.0 to 10.0; some exports write it as a string).
    pub fn severity(&self) -> Option<f64> {
        match self.detail.get("severity")? {
            Value::Number(n) => n.as_f64(),
            Value::String(s) => s.trim().parse().ok(),
            _ => None,
        }
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

    pub fn meta(&self) -> FindingMeta {
        FindingMeta {
            account_id: self.account_id.clone(),
            region: self.region.clone(),
            finding_type: self.finding_type().map(str::to_owned),
            severity: self.severity(),
            title: self.title().map(str::to_owned),
        }
    }
}
