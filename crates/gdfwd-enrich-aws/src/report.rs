//! `gdfwd accounts`: resolve a list of accounts once, uncached, and show what enrichment would put
//! on their findings, with the reason when it found nothing, so the role setup can be checked.
//!
//! It calls the raw [`AccountLookup`] rather than the caching resolver on purpose: the resolver
//! swallows errors (it must never fail forwarding), while this command exists to show them.
//!
//! The reports are data; the CLI prints them (`gdfwd-cli/src/render/accounts.rs`).

use std::time::Duration;

use futures::StreamExt;
use gdfwd_core::account_fields::AccountFields;
use gdfwd_core::enrich::AccountLookup;

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
}
