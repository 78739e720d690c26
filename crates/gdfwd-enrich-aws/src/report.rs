//! `gdfwd accounts`: resolve a list of accounts once, uncached, and show what enrichment would put
//! on their findings, with the reason when it found nothing, so the role setup can be checked.
//!
//! It calls the raw [`AccountLookup`] rather than the caching resolver on purpose: the resolver
//! swallows errors (it must never fail forwarding), while this command exists to show them.

use std::time::Duration;

use futures::StreamExt;
use gdfwd_core::enrich::AccountLookup;
use serde::Serialize;

use crate::error::EnrichError;

/// What enrichment resolves for one account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AccountReport {
    pub account_id: String,
    /// What goes to `aws.account.name`.
    pub name: Option<String>,
    /// What goes to `aws.account.alias`.
    pub alias: Option<String>,
    /// `iam-alias`, `organizations`, or absent when nothing was found.
    pub source: Option<&'static str>,
    /// Why nothing was found, when a lookup failed or ran over budget.
    pub error: Option<String>,
}

/// Looks every account up (at most `concurrency` at a time, each bounded by `budget`); the
/// reports come back in the order of `account_ids`.
pub async fn resolve_all(
    lookup: &dyn AccountLookup,
    account_ids: &[String],
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
            };
            match result {
                Ok(Ok(info)) => {
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

const HEADERS: [&str; 5] = ["account_id", "name", "alias", "source", "error"];

fn cells(r: &AccountReport) -> [&str; 5] {
    [
        r.account_id.as_str(),
        r.name.as_deref().unwrap_or(""),
        r.alias.as_deref().unwrap_or(""),
        r.source.unwrap_or(""),
        r.error.as_deref().unwrap_or(""),
    ]
}

/// Renders the reports; every format ends with a newline.
pub fn render(reports: &[AccountReport], format: AccountsFormat) -> Result<String, EnrichError> {
    match format {
        AccountsFormat::Json => serde_json::to_string_pretty(reports)
            .map(|s| s + "\n")
            .map_err(|e| EnrichError::Render {
                format: "json",
                message: e.to_string(),
            }),
        AccountsFormat::Csv => Ok(render_csv(reports)),
        AccountsFormat::Table => Ok(render_table(reports)),
    }
}

fn render_csv(reports: &[AccountReport]) -> String {
    let rows: Vec<Vec<String>> = reports
        .iter()
        .map(|r| cells(r).map(str::to_owned).to_vec())
        .collect();
    gdfwd_core::audit::csv(&HEADERS, &rows)
}

fn render_table(reports: &[AccountReport]) -> String {
    let rows: Vec<Vec<String>> = reports
        .iter()
        .map(|r| {
            let mut c = cells(r).map(str::to_owned);
            for cell in &mut c[1..4] {
                if cell.is_empty() {
                    *cell = "-".to_owned();
                }
            }
            c.to_vec()
        })
        .collect();
    gdfwd_core::audit::table(&HEADERS, &rows, &[])
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

    async fn reports() -> Vec<AccountReport> {
        let ids: Vec<String> = [
            "111111111111",
            "222222222222",
            "333333333333",
            "444444444444",
        ]
        .map(String::from)
        .into();
        resolve_all(&Fixed, &ids, Duration::from_secs(2), 3).await
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
    }

    #[tokio::test(start_paused = true)]
    async fn renders_table_json_and_csv() {
        let r = reports().await;
        let table = render(&r, AccountsFormat::Table).expect("table");
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 5);
        assert!(lines[0].starts_with("account_id    name"), "{table}");
        assert!(
            lines[1].starts_with("111111111111  prod-payments"),
            "{table}"
        );
        assert!(lines[3].contains("AccessDenied"), "{table}");

        let json: serde_json::Value =
            serde_json::from_str(&render(&r, AccountsFormat::Json).expect("json")).expect("parse");
        assert_eq!(json[0]["account_id"], "111111111111");
        assert_eq!(json[1]["source"], "organizations");
        assert_eq!(json[2]["name"], serde_json::Value::Null);

        let csv = render(&r, AccountsFormat::Csv).expect("csv");
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(lines[0], "account_id,name,alias,source,error");
        assert_eq!(
            lines[1],
            "111111111111,prod-payments,prod-payments,iam-alias,"
        );
        assert_eq!(
            lines[2],
            "222222222222,\"Sandbox, Team \"\"A\"\"\",,organizations,"
        );
    }
}
