//! `audit check`: the violations `gdfwd_core::audit_check::check` found, as sentences (table),
//! rows (CSV) or one object (JSON).

use gdfwd_core::audit_check::{Rule, Violation};
use serde_json::json;

use super::{OutputFormat, csv, printable};

/// One violation as a sentence naming its finding and version; the finding id is escaped as
/// everything finding-supplied is.
pub fn sentence(v: &Violation) -> String {
    let (id, version) = (printable(&v.finding_id), v.version);
    let what = match &v.rule {
        Rule::SentWithoutClaim => "sent with no claimed entry before it".to_owned(),
        Rule::PendingPastLease { lease_until } => format!(
            "pending, but its lease ended at {lease_until} (its sender died; retry its input)"
        ),
        Rule::OlderSentAfterNewer { newer } => {
            format!("claimed and sent after the newer version {newer} was sent")
        }
        Rule::SequenceGap { seq } => format!("history sequence number {seq} is missing"),
        Rule::SequenceDuplicate { seq } => {
            format!("history sequence number {seq} is repeated or out of order")
        }
        Rule::SequenceEnd { last, record } => {
            format!("the last history entry is number {last}, the record counts {record}")
        }
    };
    format!("finding {id} version {version}: {what}")
}

/// `audit check`'s output for `violations` among `checked` findings. Table: one sentence per
/// violation, then a count line; JSON: `{"checked": N, "violations": [{finding_id, version,
/// rule, ...}]}`; CSV: `finding_id,version,rule,detail`.
pub fn report(violations: &[Violation], checked: usize, format: OutputFormat) -> String {
    match format {
        OutputFormat::Json => super::json(&json!({ "checked": checked, "violations": violations })),
        OutputFormat::Csv => {
            let rows: Vec<Vec<String>> = violations
                .iter()
                .map(|v| {
                    vec![
                        v.finding_id.clone(),
                        v.version.to_rfc3339(),
                        v.rule.name().to_owned(),
                        sentence(v),
                    ]
                })
                .collect();
            csv(&["finding_id", "version", "rule", "detail"], &rows)
        }
        OutputFormat::Table => {
            let mut out = String::new();
            for v in violations {
                out.push_str(&sentence(v));
                out.push('\n');
            }
            out.push_str(&format!(
                "checked {checked} finding(s): {} violation(s)\n",
                violations.len()
            ));
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gdfwd_model::Timestamp;

    fn t(ms: i64) -> Timestamp {
        Timestamp::from_millis(ms)
    }

    /// What `gdfwd_core::audit_check`'s test history at 5 gives (finding `f`).
    fn violations() -> Vec<Violation> {
        [
            (2, Rule::SentWithoutClaim),
            (1, Rule::SequenceGap { seq: 4 }),
            (1, Rule::SequenceDuplicate { seq: 5 }),
            (1, Rule::OlderSentAfterNewer { newer: t(2) }),
            (2, Rule::PendingPastLease { lease_until: t(5) }),
        ]
        .into_iter()
        .map(|(version, rule)| Violation {
            finding_id: "f".to_owned(),
            version: t(version),
            rule,
        })
        .collect()
    }

    #[test]
    fn each_rule_names_its_version() {
        let all = violations();
        let shown = sentence(&all[0]);
        assert!(
            shown.contains("finding f") && shown.contains("no claimed"),
            "{shown}"
        );
        let json: serde_json::Value =
            serde_json::from_str(&report(&all, 1, OutputFormat::Json)).expect("json");
        assert_eq!(json["checked"], 1);
        assert_eq!(json["violations"][1]["rule"], "sequence_gap");
        assert_eq!(json["violations"][1]["seq"], 4);
        assert_eq!(json["violations"][1]["finding_id"], "f");
        let table = report(&all, 1, OutputFormat::Table);
        assert_eq!(table.lines().count(), 6, "{table}");
        assert!(
            table.ends_with("checked 1 finding(s): 5 violation(s)\n"),
            "{table}"
        );
        let csv = report(&all, 1, OutputFormat::Csv);
        assert!(csv.starts_with("finding_id,version,rule,detail\n"), "{csv}");
        assert_eq!(
            report(&[], 3, OutputFormat::Table),
            "checked 3 finding(s): 0 violation(s)\n"
        );
    }

    #[test]
    fn a_finding_id_cannot_drive_the_terminal() {
        let mut v = violations().swap_remove(0);
        v.finding_id = "f\u{1b}[2J".to_owned();
        let table = report(&[v], 1, OutputFormat::Table);
        assert!(!table.contains('\u{1b}'), "{table}");
        assert!(table.contains("finding f\\u{1b}[2J version"), "{table}");
    }
}
