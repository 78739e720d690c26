//! `gdfwd accounts`: what enrichment resolves per account (`gdfwd_enrich_aws::resolve_all`),
//! with a column (table, CSV) or key (JSON `fields`) per configured account field.

use gdfwd_core::account_fields::AccountFields;
use gdfwd_enrich_aws::AccountReport;
use serde_json::Value;

use super::{OutputFormat, csv, table};

const HEADERS: [&str; 4] = ["account_id", "name", "alias", "source"];

/// The columns: the fixed ones, one per account field (in the order configured), `error` last.
fn headers(fields: &AccountFields) -> Vec<&str> {
    let mut h = HEADERS.to_vec();
    h.extend(fields.iter().map(|f| f.field.as_str()));
    h.push("error");
    h
}

/// One row; `blank` stands for an absent name, alias, source or field value.
fn cells(r: &AccountReport, fields: &AccountFields, blank: &str) -> Vec<String> {
    let or_blank = |v: Option<&str>| v.filter(|v| !v.is_empty()).unwrap_or(blank).to_owned();
    let mut c = vec![
        r.account_id.clone(),
        or_blank(r.name.as_deref()),
        or_blank(r.alias.as_deref()),
        or_blank(r.source),
    ];
    for f in fields.iter() {
        let value = r.fields.iter().find(|(k, _)| *k == f.field);
        c.push(or_blank(value.map(|(_, v)| v.as_str())));
    }
    c.push(r.error.clone().unwrap_or_default());
    c
}

/// The reports in the order given; every format ends with a newline.
pub fn accounts(reports: &[AccountReport], fields: &AccountFields, format: OutputFormat) -> String {
    match format {
        OutputFormat::Json => super::json(&Value::Array(reports.iter().map(report_json).collect())),
        OutputFormat::Csv => {
            let rows: Vec<Vec<String>> = reports.iter().map(|r| cells(r, fields, "")).collect();
            csv(&headers(fields), &rows)
        }
        OutputFormat::Table => {
            let rows: Vec<Vec<String>> = reports.iter().map(|r| cells(r, fields, "-")).collect();
            table(&headers(fields), &rows, &[])
        }
    }
}

/// The report as JSON, `fields` as an object in the configured order.
fn report_json(r: &AccountReport) -> Value {
    let fields: serde_json::Map<String, Value> = r
        .fields
        .iter()
        .map(|(k, v)| (k.clone(), Value::from(v.as_str())))
        .collect();
    serde_json::json!({
        "account_id": r.account_id,
        "name": r.name,
        "alias": r.alias,
        "source": r.source,
        "error": r.error,
        "fields": fields,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields() -> AccountFields {
        AccountFields::parse(&["dt.security_context=tag:Ctx,team.x='sec'"]).expect("fields")
    }

    fn report(id: &str, name: Option<&str>, alias: Option<&str>) -> AccountReport {
        AccountReport {
            account_id: id.to_owned(),
            name: name.map(str::to_owned),
            alias: alias.map(str::to_owned),
            source: None,
            error: None,
            fields: vec![("team.x".to_owned(), "sec".to_owned())],
        }
    }

    /// What `resolve_all` gives for an IAM alias with a tag, an Organizations name, a refused
    /// role and a lookup over budget (its test in gdfwd-enrich-aws).
    fn reports() -> Vec<AccountReport> {
        let mut alias = report("111111111111", Some("prod-payments"), Some("prod-payments"));
        alias.source = Some("iam-alias");
        alias
            .fields
            .insert(0, ("dt.security_context".to_owned(), "payments".to_owned()));
        let mut org = report("222222222222", Some("Sandbox, Team \"A\""), None);
        org.source = Some("organizations");
        let mut denied = report("333333333333", None, None);
        denied.error = Some("sts:AssumeRole: AccessDenied".to_owned());
        let mut slow = report("444444444444", None, None);
        slow.error = Some("lookup exceeded its budget of 2s".to_owned());
        vec![alias, org, denied, slow]
    }

    #[test]
    fn renders_table_json_and_csv() {
        let r = reports();
        let table = accounts(&r, &fields(), OutputFormat::Table);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 5);
        assert!(lines[0].starts_with("account_id    name"), "{table}");
        assert!(
            lines[1].starts_with("111111111111  prod-payments"),
            "{table}"
        );
        assert!(lines[3].contains("AccessDenied"), "{table}");

        let json: serde_json::Value =
            serde_json::from_str(&accounts(&r, &fields(), OutputFormat::Json)).expect("parse");
        assert_eq!(json[0]["account_id"], "111111111111");
        assert_eq!(json[1]["source"], "organizations");
        assert_eq!(json[2]["name"], serde_json::Value::Null);
        assert_eq!(
            json[0]["fields"],
            serde_json::json!({"dt.security_context": "payments", "team.x": "sec"})
        );

        let csv = accounts(&r, &fields(), OutputFormat::Csv);
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(
            lines[0],
            "account_id,name,alias,source,dt.security_context,team.x,error"
        );
        assert_eq!(
            lines[1],
            "111111111111,prod-payments,prod-payments,iam-alias,payments,sec,"
        );
        assert_eq!(
            lines[2],
            "222222222222,\"Sandbox, Team \"\"A\"\"\",,organizations,,sec,"
        );
        assert!(
            table
                .lines()
                .next()
                .is_some_and(|h| h.contains("dt.security_context"))
        );
    }
}
