//! The GuardDuty administrator's read-only calls `gdfwd doctor` needs (`GetDetector`,
//! `ListMembers`, `DescribeOrganizationConfiguration`, `ListOrganizationAdminAccounts`, a
//! per-account `ListFindings`), on the same signed, rate-limited, retrying client as backfill,
//! implementing the doctor's [`GuardDutyAdmin`] port.
//!
//! A refusal is an observation, not an error: `AccessDenied*` (or a 403) becomes
//! [`ObserveError::Denied`] naming the IAM action, so the doctor reports that check `unknown`.

use async_trait::async_trait;
use gdfwd_doctor::{AdminAccount, Detector, GuardDutyAdmin, Member, Obs, ObserveError};
use gdfwd_model::Timestamp;
use serde_json::{Value, json};

use crate::client::{GuardDutyClient, url_escape};
use crate::error::GuardDutyError;

/// Pages a doctor reads at most from one listing (50 items each): a loop guard, far above any
/// organization's member count per page.
const MAX_PAGES: usize = 200;

fn observe_error(e: GuardDutyError, action: &str) -> ObserveError {
    match &e {
        GuardDutyError::Api { status, kind, .. }
            if *status == 403
                || kind.contains("AccessDenied")
                || kind.contains("UnauthorizedOperation") =>
        {
            ObserveError::Denied {
                permission: format!("guardduty:{action}"),
                message: e.to_string(),
            }
        }
        _ => ObserveError::Failed {
            operation: format!("guardduty:{action}"),
            message: e.to_string(),
        },
    }
}

fn str_of(v: &Value, key: &str) -> Option<String> {
    v.get(key).and_then(Value::as_str).map(str::to_owned)
}

impl GuardDutyClient {
    /// Follows `nextToken` over a GET listing, collecting the array `key` of every page.
    async fn list_all(
        &self,
        region: &str,
        operation: &'static str,
        path: &str,
        query: &str,
        key: &str,
    ) -> Result<Vec<Value>, GuardDutyError> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let mut q = format!("?maxResults=50{query}");
            if let Some(t) = &token {
                q.push_str(&format!("&nextToken={}", url_escape(t)));
            }
            let v = self
                .call(region, operation, "GET", &format!("{path}{q}"), None)
                .await?;
            if let Some(items) = v.get(key).and_then(Value::as_array) {
                out.extend(items.iter().cloned());
            }
            match str_of(&v, "nextToken").filter(|t| !t.is_empty()) {
                Some(t) if token.as_deref() == Some(t.as_str()) => {
                    return Err(GuardDutyError::RepeatedPageToken {
                        region: region.to_owned(),
                        detector: path.to_owned(),
                        token: t,
                    });
                }
                Some(t) => token = Some(t),
                None => return Ok(out),
            }
        }
        Ok(out)
    }
}

#[async_trait]
impl GuardDutyAdmin for GuardDutyClient {
    async fn admin_accounts(&self, region: &str) -> Obs<Vec<AdminAccount>> {
        let items = self
            .list_all(
                region,
                "ListOrganizationAdminAccounts",
                "/admin",
                "",
                "adminAccounts",
            )
            .await
            .map_err(|e| observe_error(e, "ListOrganizationAdminAccounts"))?;
        Ok(items
            .iter()
            .filter_map(|a| {
                Some(AdminAccount {
                    account_id: str_of(a, "adminAccountId")?,
                    status: str_of(a, "adminStatus").unwrap_or_default(),
                })
            })
            .collect())
    }

    async fn detector(&self, region: &str) -> Obs<Option<Detector>> {
        let ids = self
            .list_detectors(region)
            .await
            .map_err(|e| observe_error(e, "ListDetectors"))?;
        let Some(id) = ids.into_iter().next() else {
            return Ok(None);
        };
        let v = self
            .call(
                region,
                "GetDetector",
                "GET",
                &format!("/detector/{}", url_escape(&id)),
                None,
            )
            .await
            .map_err(|e| observe_error(e, "GetDetector"))?;
        let enabled = v.get("status").and_then(Value::as_str) == Some("ENABLED");
        Ok(Some(Detector { id, enabled }))
    }

    async fn auto_enable(&self, region: &str, detector: &str) -> Obs<Option<String>> {
        let path = format!("/detector/{}/admin", url_escape(detector));
        match self
            .call(
                region,
                "DescribeOrganizationConfiguration",
                "GET",
                &path,
                None,
            )
            .await
        {
            Ok(v) => {
                // `autoEnable` (a boolean) is the deprecated form of `autoEnableOrganizationMembers`.
                let mode = str_of(&v, "autoEnableOrganizationMembers").unwrap_or_else(|| {
                    match v.get("autoEnable").and_then(Value::as_bool) {
                        Some(true) => "NEW".to_owned(),
                        _ => "NONE".to_owned(),
                    }
                });
                Ok(Some(mode))
            }
            // GuardDuty answers 400 when the caller is not the delegated administrator.
            Err(GuardDutyError::Api { status: 400, .. }) => Ok(None),
            Err(e) => Err(observe_error(e, "DescribeOrganizationConfiguration")),
        }
    }

    async fn members(&self, region: &str, detector: &str) -> Obs<Vec<Member>> {
        let path = format!("/detector/{}/member", url_escape(detector));
        let items = self
            .list_all(
                region,
                "ListMembers",
                &path,
                "&onlyAssociated=false",
                "members",
            )
            .await
            .map_err(|e| observe_error(e, "ListMembers"))?;
        Ok(items
            .iter()
            .filter_map(|m| {
                Some(Member {
                    account_id: str_of(m, "accountId")?,
                    relationship: str_of(m, "relationshipStatus").unwrap_or_default(),
                })
            })
            .collect())
    }

    async fn findings_of(
        &self,
        region: &str,
        detector: &str,
        account: &str,
        since: Timestamp,
    ) -> Obs<u64> {
        let criteria = json!({"criterion": {
            "accountId": {"eq": [account]},
            "updatedAt": {"greaterThanOrEqual": since.millis()},
            // Active findings only, as `audit gaps` lists them by default.
            "service.archived": {"eq": ["false"]},
        }});
        let page = self
            .list_findings(region, detector, &criteria, false, None)
            .await
            .map_err(|e| observe_error(e, "ListFindings"))?;
        Ok(page.ids.len() as u64)
    }
}
