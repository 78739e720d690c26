//! The account context that account fields (`--account-field`, `ACCOUNT_FIELDS`) read from AWS
//! Organizations: the account's tags and its organizational-unit path.
//!
//! Why shaped so:
//! - each is looked up only when a configured field needs it ([`ContextNeeds`]), so a forwarder
//!   without `tag:` fields never calls `ListTagsForResource`;
//! - they are part of the account lookup (cached with the name, same TTLs, one lookup in flight
//!   per account): the caching resolver in the core decides when to call, not this module;
//! - the Organizations API answers only the management account or a delegated administrator for
//!   AWS Organizations, so a denial says so, pointing at the fix rather than at the symptom.

use std::collections::BTreeMap;

use aws_sdk_organizations::types::ParentType;
use gdfwd_aws_error::describe;
use gdfwd_core::account_fields::ContextNeeds;
use gdfwd_core::enrich::AccountInfo;

use crate::lookup::AwsAccountLookup;

/// The name the path of an account directly under the root starts with (AWS names every root
/// `Root`, and `ListParents` gives only its id).
pub const ROOT_NAME: &str = "Root";
/// AWS allows five levels of OUs under the root; a longer chain means something is wrong.
const MAX_OU_DEPTH: usize = 10;

/// What to add to an Organizations error the forwarder's role is not allowed to see past.
const ORG_ACCESS_HINT: &str = "the AWS Organizations API answers only the management account or \
    a delegated administrator for AWS Organizations: run the forwarder in one of them (see \
    docs/enrichment.md)";

/// `operation: detail`, with [`ORG_ACCESS_HINT`] when AWS denied the call or the account is not
/// in an organization it may read.
pub(crate) fn org_error(operation: &str, detail: &str) -> String {
    let denied = [
        "AccessDenied",
        "AWSOrganizationsNotInUse",
        "not authorized",
        "NotAuthorized",
    ]
    .iter()
    .any(|needle| detail.contains(needle));
    if denied {
        format!("{operation}: {detail} ({ORG_ACCESS_HINT})")
    } else {
        format!("{operation}: {detail}")
    }
}

impl AwsAccountLookup {
    /// The account's tags in AWS Organizations (`organizations:ListTagsForResource`).
    pub async fn account_tags(&self, account_id: &str) -> Result<BTreeMap<String, String>, String> {
        let mut out = BTreeMap::new();
        let mut token: Option<String> = None;
        loop {
            let page = self
                .org()
                .list_tags_for_resource()
                .resource_id(account_id)
                .set_next_token(token.take())
                .send()
                .await
                .map_err(|e| org_error("organizations:ListTagsForResource", &describe(&e)))?;
            for t in page.tags() {
                out.insert(t.key().to_owned(), t.value().to_owned());
            }
            match page.next_token() {
                Some(t) if !t.is_empty() => token = Some(t.to_owned()),
                _ => break,
            }
        }
        Ok(out)
    }

    /// The account's organizational-unit path, `Root/Workloads/Prod` (`organizations:ListParents`
    /// up to the root, `organizations:DescribeOrganizationalUnit` for each OU's name).
    pub async fn ou_path(&self, account_id: &str) -> Result<String, String> {
        let mut names: Vec<String> = Vec::new();
        let mut child = account_id.to_owned();
        for _ in 0..MAX_OU_DEPTH {
            let out = self
                .org()
                .list_parents()
                .child_id(&child)
                .send()
                .await
                .map_err(|e| org_error("organizations:ListParents", &describe(&e)))?;
            let parent = out
                .parents()
                .first()
                .and_then(|p| Some((p.id()?, p.r#type())));
            let Some((id, kind)) = parent else {
                return Err(format!(
                    "organizations:ListParents: {child} has no parent in the answer"
                ));
            };
            if kind == Some(&ParentType::Root) {
                names.push(ROOT_NAME.to_owned());
                names.reverse();
                return Ok(names.join("/"));
            }
            let ou = self
                .org()
                .describe_organizational_unit()
                .organizational_unit_id(id)
                .send()
                .await
                .map_err(|e| {
                    org_error(
                        &format!("organizations:DescribeOrganizationalUnit {id}"),
                        &describe(&e),
                    )
                })?;
            let name = ou
                .organizational_unit()
                .and_then(|u| u.name())
                .filter(|n| !n.is_empty())
                .unwrap_or(id);
            names.push(name.to_owned());
            child = id.to_owned();
        }
        Err(format!(
            "organizations:ListParents: no root within {MAX_OU_DEPTH} levels above {account_id}"
        ))
    }

    /// Adds what `needs` asks for beyond the name to `info` (both lookups at once); failures go
    /// to `info.context_errors`, never fail the lookup: the name is still worth having.
    pub(crate) async fn add_context(
        &self,
        account_id: &str,
        needs: ContextNeeds,
        info: &mut AccountInfo,
    ) {
        let tags = async {
            if needs.tags {
                Some(self.account_tags(account_id).await)
            } else {
                None
            }
        };
        let ou = async {
            if needs.ou {
                Some(self.ou_path(account_id).await)
            } else {
                None
            }
        };
        let org_name = async {
            if needs.org_name && info.org_name.is_none() {
                Some(self.org_name(account_id).await)
            } else {
                None
            }
        };
        let (tags, ou, org_name) = tokio::join!(tags, ou, org_name);
        match tags {
            Some(Ok(t)) => info.tags = Some(t),
            Some(Err(e)) => info.context_errors.push(e),
            None => {}
        }
        match ou {
            Some(Ok(p)) => info.ou_path = Some(p),
            Some(Err(e)) => info.context_errors.push(e),
            None => {}
        }
        match org_name {
            Some(Ok(n)) => info.org_name = n,
            Some(Err(e)) => info.context_errors.push(e),
            None => {}
        }
        info.looked_up = needs;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn denials_say_who_may_call_organizations() {
        let e = org_error(
            "organizations:ListTagsForResource",
            "AccessDeniedException: You don't have permissions to access this resource.",
        );
        assert!(
            e.starts_with("organizations:ListTagsForResource: AccessDenied"),
            "{e}"
        );
        assert!(e.contains("delegated administrator"), "{e}");
        let e = org_error(
            "organizations:ListParents",
            "ChildNotFoundException: no such child",
        );
        assert!(!e.contains("delegated administrator"), "{e}");
    }
}
