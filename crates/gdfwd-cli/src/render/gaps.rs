//! `audit gaps`: the finding versions GuardDuty holds that the store never sent
//! (`gdfwd_guardduty::find_gaps`), one row each, as table, CSV or JSON.

use gdfwd_guardduty::{Gap, GapReason};
use serde::Serialize;

use super::{OutputFormat, csv, table};

/// A gap as printed: the JSON object's keys (the CSV header and table columns say `type` for
/// `finding_type`).
#[derive(Debug, Clone, PartialEq, Serialize)]
struct GapRow {
    region: String,
    account_id: String,
    finding_id: String,
    updated_at: String,
    severity: Option<f64>,
    finding_type: Option<String>,
    reason: GapReason,
    detail: Option<String>,
}

impl GapRow {
    fn of(gap: &Gap) -> Self {
        let f = &gap.finding;
        Self {
            region: f.region.clone(),
            account_id: f.account_id.clone(),
            finding_id: f.id.clone(),
            updated_at: f.updated_at.to_rfc3339(),
            severity: f.severity(),
            finding_type: f.finding_type().map(str::to_owned),
            reason: gap.reason,
            detail: gap.detail.clone(),
        }
    }

    fn cells(&self) -> Vec<String> {
        vec![
            self.region.clone(),
            self.account_id.clone(),
            self.finding_id.clone(),
            self.updated_at.clone(),
            self.severity.map(|s| s.to_string()).unwrap_or_default(),
            self.finding_type.clone().unwrap_or_default(),
            self.reason.as_str().to_owned(),
            self.detail.clone().unwrap_or_default(),
        ]
    }
}

const HEADERS: [&str; 8] = [
    "region",
    "account_id",
    "finding_id",
    "updated_at",
    "severity",
    "type",
    "reason",
    "detail",
];

/// The gaps, in the order given.
pub fn gaps(gaps: &[Gap], format: OutputFormat) -> String {
    let rows: Vec<GapRow> = gaps.iter().map(GapRow::of).collect();
    match format {
        OutputFormat::Json => super::json(&serde_json::json!(rows)),
        OutputFormat::Csv => csv(
            &HEADERS,
            &rows.iter().map(GapRow::cells).collect::<Vec<_>>(),
        ),
        OutputFormat::Table => {
            let header: Vec<String> = HEADERS.iter().map(|h| h.to_uppercase()).collect();
            let header: Vec<&str> = header.iter().map(String::as_str).collect();
            let rows: Vec<Vec<String>> = rows.iter().map(GapRow::cells).collect();
            table(&header, &rows, &[])
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gdfwd_model::{Item, parse_value};

    /// A gap of a minimal finding `id`.
    fn gap(id: &str, reason: GapReason, detail: Option<&str>) -> Gap {
        let v = serde_json::json!({
            "id": id, "accountId": "111122223333", "region": "eu-west-1",
            "updatedAt": "2025-02-25T20:40:06.721Z", "createdAt": "2025-02-25T20:00:00Z",
            "type": "Recon:EC2/Portscan", "severity": 5, "title": "t",
            "resource": {"resourceType": "Instance", "instanceDetails": {"instanceId": "i-1"}},
        });
        let finding = match parse_value(v).remove(0) {
            Ok(Item::Finding(f)) => *f,
            other => panic!("not a finding: {other:?}"),
        };
        Gap {
            finding,
            reason,
            detail: detail.map(str::to_owned),
        }
    }

    #[test]
    fn the_renderings_carry_every_gap() {
        let list = vec![
            gap("a", GapReason::NeverSeen, None),
            gap("b", GapReason::Failed, Some("HTTP 503, \"retry later\"")),
            gap(
                "c",
                GapReason::VersionNeverSeen,
                Some("store last saw version 2025-02-25T20:00:00.000Z"),
            ),
            gap("d", GapReason::Pending, None),
        ];
        let csv = gaps(&list, OutputFormat::Csv);
        assert_eq!(csv.lines().count(), list.len() + 1);
        assert!(csv.starts_with("region,account_id,finding_id,updated_at"));
        let json: serde_json::Value =
            serde_json::from_str(&gaps(&list, OutputFormat::Json)).expect("json");
        assert_eq!(json.as_array().map(Vec::len), Some(list.len()));
        assert!(
            json.as_array()
                .expect("array")
                .iter()
                .any(|r| r["reason"] == "failed")
        );
        let table = gaps(&list, OutputFormat::Table);
        assert!(table.lines().next().expect("header").starts_with("REGION"));
        assert!(table.contains("version never seen"));
    }

    #[test]
    fn json_rows_have_the_documented_keys() {
        let json: serde_json::Value = serde_json::from_str(&gaps(
            &[gap("a", GapReason::Stale, None)],
            OutputFormat::Json,
        ))
        .expect("json");
        let keys: Vec<String> = json[0]
            .as_object()
            .map(|row| row.keys().cloned().collect())
            .unwrap_or_default();
        assert_eq!(
            keys,
            [
                "region",
                "account_id",
                "finding_id",
                "updated_at",
                "severity",
                "finding_type",
                "reason",
                "detail"
            ]
        );
        assert_eq!(json[0]["reason"], "stale");
        assert_eq!(json[0]["severity"], 5.0);
    }
}
