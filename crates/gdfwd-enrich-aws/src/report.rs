//! `gdfwd accounts`: resolve a list of accounts once, uncached, and show what enrichment would put
//! on their findings, with the reason when it found nothing, so the role setup can be checked.
//!
//! It calls the raw [`AccountLookup`] rather than the caching resolver on purpose: the resolver
//! swallows errors (it must never fail forwarding), while this command exists to show them.

use std::time::Duration;

use futures::StreamExt;
use gdfwd_core::account_fields::AccountFields;
use gdfwd_core::enrich::AccountLookup;

use crate::error::EnrichError;

/// What enrichment resolves for one account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountReport {
    pub account_id: String,
    /// What goes to `aws.account.name`.
    pub name: Option<String>,
    /// What goes to `aws.account.alias`.
    pub alias: Option<String>,
    /// `iam-alias`, `organizations`, or absent when nothing was found.
    pub source: Option<&'static str>,
    /// Why nothing was found, when a lookup failed or ran over budget; also why an account
    /// field's context (tags, OU path) could not be read.
    pub error: Option<String>,
    /// The configured account fields and the values they get for this account, in the configured
    /// order; a field without a value for it is absent.
    pub fields: Vec<(String, String)>,
}

/// Looks every account up (at most `concurrency` at a time, each bounded by `budget`) and
/// resolves `fields` for it; the reports come back in the order of `account_ids`. The lookup must
/// have been built with the context the fields need (`EnrichConfig::lookup_options`).
pub async fn resolve_all(
    lookup: &dyn AccountLookup,
    account_ids: &[String],
    fields: &AccountFields,
    budget: Duration,
    concurrency: usize,
) -> Vec<AccountReport> {
    futures::stream::iter(account_ids)
        .map(|id| async move {
            let result = tokio::time::timeout(budget, lookup.lookup(id)).await;
            let mut report = AccountReport {
                account_id: id.clone(),
                name: None,
                alias: None,
                source: None,
                error: None,
                fields: Vec::new(),
            };
            match result {
                Ok(Ok(info)) => {
                    report.fields = fields.resolve(Some(&info));
                    if !info.context_errors.is_empty() {
                        report.error = Some(info.context_errors.join("; "));
                    }
                    let e = info.enrichment();
                    report.source = if info.alias.is_some() {
                        Some("iam-alias")
                    } else if info.org_name.is_some() {
                        Some("organizations")
                    } else {
                        None
                    };
                    report.name = e.account_name;
                    report.alias = e.account_alias;
                }
                Ok(Err(e)) => report.error = Some(e.message),
                Err(_) => report.error = Some(format!("lookup exceeded its budget of {budget:?}")),
            }
            if report.name.is_none() && report.source.is_none() {
                report.fields = fields.resolve(None);
            }
            report
        })
        .buffered(concurrency.max(1))
        .collect()
        .await
}

/// Output formats of `gdfwd accounts`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
pub enum AccountsFormat {
    #[default]
    Table,
    Json,
    Csv,
}

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

/// Renders the reports, with a column (table, CSV) or key (JSON `fields`) per account field;
/// every format ends with a newline.
pub fn render(
    reports: &[AccountReport],
    fields: &AccountFields,
    format: AccountsFormat,
) -> Result<String, EnrichError> {
    match format {
        AccountsFormat::Json => {
            let json: Vec<serde_json::Value> = reports.iter().map(report_json).collect();
            serde_json::to_string_pretty(&json)
                .map(|s| s + "\n")
                .map_err(|e| EnrichError::Render {
                    format: "json",
                    message: e.to_string(),
                })
        }
        AccountsFormat::Csv => {
            let rows: Vec<Vec<String>> = reports.iter().map(|r| cells(r, fields, "")).collect();
            Ok(gdfwd_core::audit::csv(&headers(fields), &rows))
        }
        AccountsFormat::Table => {
            let rows: Vec<Vec<String>> = reports.iter().map(|r| cells(r, fields, "-")).collect();
            Ok(gdfwd_core::audit::table(&headers(fields), &rows, &[]))
        }
    }
}

/// The report as JSON, `fields` as an object in the configured order.
fn report_json(r: &AccountReport) -> serde_json::Value {
    let fields: serde_json::Map<String, serde_json::Value> = r
        .fields
        .iter()
        .map(|(k, v)| (k.clone(), serde_json::Value::from(v.as_str())))
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
    use async_trait::async_trait;
    use gdfwd_core::enrich::AccountInfo;
    use gdfwd_core::error::LookupError;

    #[derive(Debug)]
    struct Fixed;

    #[async_trait]
    impl AccountLookup for Fixed {
        async fn lookup(&self, account_id: &str) -> Result<AccountInfo, LookupError> {
            match account_id {
                "111111111111" => Ok(AccountInfo {
                    alias: Some("prod-payments".to_owned()),
                    tags: Some([("Ctx".to_owned(), "payments".to_owned())].into()),
                    org_name: None,
                    ..AccountInfo::default()
                }),
                "222222222222" => Ok(AccountInfo {
                    alias: None,
                    org_name: Some("Sandbox, Team \"A\"".to_owned()),
                    ..AccountInfo::default()
                }),
                "444444444444" => {
                    tokio::time::sleep(Duration::from_secs(60)).await;
                    Ok(AccountInfo::default())
                }
                other => Err(LookupError {
                    account_id: other.to_owned(),
                    message: "sts:AssumeRole: AccessDenied".to_owned(),
                }),
            }
        }
    }

    fn fields() -> AccountFields {
        AccountFields::parse(&["dt.security_context=tag:Ctx,team.x='sec'"]).expect("fields")
    }

    async fn reports() -> Vec<AccountReport> {
        let ids: Vec<String> = [
            "111111111111",
            "222222222222",
            "333333333333",
            "444444444444",
        ]
        .map(String::from)
        .into();
        resolve_all(&Fixed, &ids, &fields(), Duration::from_secs(2), 3).await
    }

    #[tokio::test(start_paused = true)]
    async fn reports_keep_the_input_order_and_say_why_nothing_was_found() {
        let r = reports().await;
        assert_eq!(r.len(), 4);
        assert_eq!(r[0].name.as_deref(), Some("prod-payments"));
        assert_eq!(r[0].alias.as_deref(), Some("prod-payments"));
        assert_eq!(r[0].source, Some("iam-alias"));
        assert_eq!(r[1].name.as_deref(), Some("Sandbox, Team \"A\""));
        assert_eq!(r[1].alias, None);
        assert_eq!(r[1].source, Some("organizations"));
        assert_eq!(r[2].name, None);
        assert_eq!(r[2].error.as_deref(), Some("sts:AssumeRole: AccessDenied"));
        assert!(r[3].error.as_deref().is_some_and(|e| e.contains("budget")));
        let pair = |k: &str, v: &str| (k.to_owned(), v.to_owned());
        assert_eq!(
            r[0].fields,
            vec![
                pair("dt.security_context", "payments"),
                pair("team.x", "sec")
            ]
        );
        assert_eq!(r[1].fields, vec![pair("team.x", "sec")], "untagged");
        assert_eq!(r[2].fields, vec![pair("team.x", "sec")], "failed lookup");
    }

    #[tokio::test(start_paused = true)]
    async fn renders_table_json_and_csv() {
        let r = reports().await;
        let table = render(&r, &fields(), AccountsFormat::Table).expect("table");
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 5);
        assert!(lines[0].starts_with("account_id    name"), "{table}");
        assert!(
            lines[1].starts_with("111111111111  prod-payments"),
            "{table}"
        );
        assert!(lines[3].contains("AccessDenied"), "{table}");

        let json: serde_json::Value =
            serde_json::from_str(&render(&r, &fields(), AccountsFormat::Json).expect("json"))
                .expect("parse");
        assert_eq!(json[0]["account_id"], "111111111111");
        assert_eq!(json[1]["source"], "organizations");
        assert_eq!(json[2]["name"], serde_json::Value::Null);
        assert_eq!(
            json[0]["fields"],
            serde_json::json!({"dt.security_context": "payments", "team.x": "sec"})
        );

        let csv = render(&r, &fields(), AccountsFormat::Csv).expect("csv");
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
