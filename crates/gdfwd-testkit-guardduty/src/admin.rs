//! The administrator's side of the fake GuardDuty, for `gdfwd doctor`: `GetDetector`,
//! `ListMembers`, `DescribeOrganizationConfiguration` and `ListOrganizationAdminAccounts`, on the
//! paths and with the camelCase JSON of GuardDuty's REST API (botocore `guardduty/2017-11-28`):
//! - `GET /detector/{detectorId}` → `{"status": "ENABLED"|"DISABLED", "createdAt", "updatedAt",
//!   "findingPublishingFrequency", "serviceRole", "tags": {}}`;
//! - `GET /detector/{detectorId}/member?maxResults&nextToken&onlyAssociated` → `{"members":
//!   [{"accountId", "detectorId", "masterId", "administratorId", "email", "relationshipStatus",
//!   "invitedAt", "updatedAt"}], "nextToken"}`;
//! - `GET /detector/{detectorId}/admin` → `{"autoEnable", "autoEnableOrganizationMembers",
//!   "memberAccountLimitReached"}`, or `400 BadRequestException` when the region has no delegated
//!   administrator (as GuardDuty answers an account that is not the administrator);
//! - `GET /admin?maxResults&nextToken` → `{"adminAccounts": [{"adminAccountId", "adminStatus"}]}`.
//!
//! Each region's administrator state is set by the test ([`FakeGuardDuty::set_admin`],
//! [`FakeGuardDuty::set_member`], ...); an operation can be refused with `403
//! AccessDeniedException` ([`FakeGuardDuty::deny`]) to test how a missing permission shows.
//! Kept in its own module so the findings API in `lib.rs` stays as it was.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::get;
use serde_json::{Value, json};

use crate::{FakeGuardDuty, Shared, admit, error, ok};

/// One region's administrator state.
#[derive(Debug, Clone)]
struct RegionAdmin {
    detector_enabled: bool,
    /// `autoEnableOrganizationMembers`: `ALL`, `NEW` or `NONE`.
    auto_enable: String,
    /// The delegated administrator, if any.
    admin_account: Option<String>,
    /// account → (email, relationship status).
    members: BTreeMap<String, (String, String)>,
}

impl Default for RegionAdmin {
    fn default() -> Self {
        Self {
            detector_enabled: true,
            auto_enable: "ALL".to_owned(),
            admin_account: None,
            members: BTreeMap::new(),
        }
    }
}

#[derive(Debug, Default)]
struct Inner {
    regions: BTreeMap<String, RegionAdmin>,
    denied: BTreeSet<String>,
}

/// The administrator state of every region; shared by the handlers and the test's setters.
#[derive(Debug, Default)]
pub struct AdminState(Mutex<Inner>);

impl AdminState {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[derive(Clone)]
struct Both {
    shared: Arc<Shared>,
    admin: Arc<AdminState>,
}

/// The routes of this module, to merge into the fake's router.
pub(crate) fn routes<S>(shared: Arc<Shared>, admin: Arc<AdminState>) -> Router<S> {
    Router::new()
        .route("/admin", get(list_admin_accounts))
        .route("/detector/{detector_id}", get(get_detector))
        .route("/detector/{detector_id}/member", get(list_members))
        .route("/detector/{detector_id}/admin", get(describe_org_config))
        .with_state(Both { shared, admin })
}

impl FakeGuardDuty {
    fn admin_region(&self, region: &str, f: impl FnOnce(&mut RegionAdmin)) {
        self.ensure_detector(region);
        let mut inner = self.admin.lock();
        f(inner.regions.entry(region.to_owned()).or_default());
    }

    /// Makes `account` the delegated administrator of `region` (creating the detector).
    pub fn set_admin(&self, region: &str, account: &str) {
        self.admin_region(region, |r| r.admin_account = Some(account.to_owned()));
    }

    /// Sets a member's relationship status in `region` (`Enabled`, `Disabled`, `Removed`, ...).
    pub fn set_member(&self, region: &str, account: &str, status: &str) {
        self.admin_region(region, |r| {
            r.members.insert(
                account.to_owned(),
                (format!("{account}@example.com"), status.to_owned()),
            );
        });
    }

    /// Removes `account` from `region`'s members (it was never enrolled, or was deleted).
    pub fn remove_member(&self, region: &str, account: &str) {
        self.admin_region(region, |r| {
            r.members.remove(account);
        });
    }

    /// Enables or disables `region`'s detector.
    pub fn set_detector_enabled(&self, region: &str, enabled: bool) {
        self.admin_region(region, |r| r.detector_enabled = enabled);
    }

    /// Sets `region`'s `autoEnableOrganizationMembers` (`ALL`, `NEW`, `NONE`).
    pub fn set_auto_enable(&self, region: &str, mode: &str) {
        self.admin_region(region, |r| r.auto_enable = mode.to_owned());
    }

    /// Answers `operation` (`ListMembers`, `GetDetector`, `DescribeOrganizationConfiguration`,
    /// `ListOrganizationAdminAccounts`) with `403 AccessDeniedException` from now on.
    pub fn deny(&self, operation: &str) {
        self.admin.lock().denied.insert(operation.to_owned());
    }
}

fn denied(both: &Both, operation: &str) -> Option<Response> {
    both.admin.lock().denied.contains(operation).then(|| {
        error(
            StatusCode::FORBIDDEN,
            "AccessDeniedException",
            format!("User is not authorized to perform: guardduty:{operation}"),
        )
    })
}

/// Admits the request and checks the detector belongs to its region; the region on success.
async fn for_detector(
    both: &Both,
    headers: &HeaderMap,
    operation: &str,
    detector_id: &str,
) -> Result<String, Response> {
    let region = admit(&both.shared, headers, |_| {}).await?;
    if let Some(resp) = denied(both, operation) {
        return Err(resp);
    }
    let owned = both
        .shared
        .lock()
        .regions
        .get(&region)
        .is_some_and(|r| r.detector_id == detector_id);
    if !owned {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "BadRequestException",
            format!(
                "The request is rejected because the input detectorId is not owned by the current account: {detector_id}"
            ),
        ));
    }
    Ok(region)
}

fn region_admin(both: &Both, region: &str) -> RegionAdmin {
    both.admin
        .lock()
        .regions
        .get(region)
        .cloned()
        .unwrap_or_default()
}

/// `(offset, page size)` from `maxResults` / `nextToken` (`page-N`, as `ListFindings` uses); the
/// error is the `400` message.
fn paging(q: &BTreeMap<String, String>) -> Result<(usize, usize), String> {
    let max = match q.get("maxResults") {
        None => 50,
        Some(v) => match v.parse::<usize>() {
            Ok(n @ 1..=50) => n,
            _ => return Err(format!("maxResults must be between 1 and 50, got {v}")),
        },
    };
    let offset = match q.get("nextToken").map(String::as_str) {
        None | Some("") => 0,
        Some(t) => match t.strip_prefix("page-").and_then(|n| n.parse().ok()) {
            Some(n) => n,
            None => return Err(format!("invalid nextToken {t:?}")),
        },
    };
    Ok((offset, max))
}

fn page(items: Vec<Value>, key: &str, offset: usize, max: usize) -> Response {
    let total = items.len();
    let slice: Vec<Value> = items.into_iter().skip(offset).take(max).collect();
    let end = offset + slice.len();
    let mut out = json!({ key: slice });
    if end < total
        && let Some(o) = out.as_object_mut()
    {
        o.insert("nextToken".to_owned(), Value::from(format!("page-{end}")));
    }
    ok(out)
}

const TIME: &str = "2026-01-01T00:00:00.000Z";

async fn get_detector(
    State(both): State<Both>,
    Path(detector_id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let region = match for_detector(&both, &headers, "GetDetector", &detector_id).await {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    let r = region_admin(&both, &region);
    ok(json!({
        "createdAt": TIME,
        "updatedAt": TIME,
        "findingPublishingFrequency": "SIX_HOURS",
        "serviceRole": "arn:aws:iam::123456789012:role/aws-service-role/guardduty.amazonaws.com/AWSServiceRoleForAmazonGuardDuty",
        "status": if r.detector_enabled { "ENABLED" } else { "DISABLED" },
        "tags": {},
    }))
}

async fn list_members(
    State(both): State<Both>,
    Path(detector_id): Path<String>,
    Query(q): Query<BTreeMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let region = match for_detector(&both, &headers, "ListMembers", &detector_id).await {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    let (offset, max) = match paging(&q) {
        Ok(p) => p,
        Err(message) => return error(StatusCode::BAD_REQUEST, "BadRequestException", message),
    };
    // GuardDuty's default is onlyAssociated=true: only members that are (being) enabled.
    let only_associated = q.get("onlyAssociated").is_none_or(|v| v != "false");
    let r = region_admin(&both, &region);
    let admin = r.admin_account.clone().unwrap_or_default();
    let members: Vec<Value> = r
        .members
        .iter()
        .filter(|(_, (_, status))| !only_associated || status == "Enabled")
        .map(|(account, (email, status))| {
            json!({
                "accountId": account,
                "detectorId": crate::fixtures::hex_id(&format!("member\n{account}\n{region}")),
                "masterId": admin,
                "administratorId": admin,
                "email": email,
                "relationshipStatus": status,
                "invitedAt": TIME,
                "updatedAt": TIME,
            })
        })
        .collect();
    page(members, "members", offset, max)
}

async fn describe_org_config(
    State(both): State<Both>,
    Path(detector_id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let region = match for_detector(
        &both,
        &headers,
        "DescribeOrganizationConfiguration",
        &detector_id,
    )
    .await
    {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    let r = region_admin(&both, &region);
    if r.admin_account.is_none() {
        return error(
            StatusCode::BAD_REQUEST,
            "BadRequestException",
            "The request is rejected because the current account is not the GuardDuty delegated administrator.",
        );
    }
    ok(json!({
        "autoEnable": r.auto_enable != "NONE",
        "autoEnableOrganizationMembers": r.auto_enable,
        "memberAccountLimitReached": false,
    }))
}

async fn list_admin_accounts(
    State(both): State<Both>,
    Query(q): Query<BTreeMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let region = match admit(&both.shared, &headers, |_| {}).await {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    if let Some(resp) = denied(&both, "ListOrganizationAdminAccounts") {
        return resp;
    }
    let (offset, max) = match paging(&q) {
        Ok(p) => p,
        Err(message) => return error(StatusCode::BAD_REQUEST, "BadRequestException", message),
    };
    let admins: Vec<Value> = region_admin(&both, &region)
        .admin_account
        .into_iter()
        .map(|a| json!({"adminAccountId": a, "adminStatus": "ENABLED"}))
        .collect();
    page(admins, "adminAccounts", offset, max)
}
