//! The AWS [`AccountLookup`]: IAM account alias read through an assumed role in the member
//! account, Organizations `DescribeAccount` name as the fallback.
//!
//! Why shaped so:
//! - the alias is only readable from inside the account, hence `AssumeRole` into a small read-only
//!   role (`iam:ListAccountAliases`) every member account carries; the account the forwarder runs
//!   in reads its own alias directly;
//! - many organizations do not deploy that role everywhere, so the Organizations account name
//!   (readable from the management account or a delegated administrator) is the fallback;
//! - the lookup itself is uncached and fallible; caching, negative caching, the time budget and
//!   "never fail forwarding" are the core's [`gdfwd_core::enrich::CachingResolver`]'s job;
//! - the ARN's partition cannot come from the finding (the trait only passes an account id), so it
//!   is fixed per lookup, derived from the SDK region unless given.

use std::time::SystemTime;

use async_trait::async_trait;
use aws_config::SdkConfig;
use aws_config::retry::RetryConfig;
use gdfwd_aws_error::describe;
use gdfwd_core::account_fields::ContextNeeds;
use gdfwd_core::enrich::{AccountInfo, AccountLookup};
use gdfwd_core::error::LookupError;
use tokio::sync::OnceCell;

use crate::error::EnrichError;

/// Role assumed in each member account unless configured otherwise.
pub const DEFAULT_ROLE_NAME: &str = "GuardDutyForwarderAliasReader";

/// An IAM role name as IAM allows it (1 to 64 of `A-Z a-z 0-9 + = , . @ _ -`): the one check of
/// `--alias-role-name` and the Lambda's `ALIAS_ROLE_NAME`, so a path or an ARN is refused before
/// every `AssumeRole` would fail with it.
pub fn parse_role_name(name: &str) -> Result<String, String> {
    let ok = (1..=64).contains(&name.len())
        && name.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'+' | b'=' | b',' | b'.' | b'@' | b'_' | b'-')
        });
    if ok {
        Ok(name.to_owned())
    } else {
        Err(format!(
            "{name:?} is not an IAM role name (1-64 of A-Z a-z 0-9 +=,.@_-; a name, not a path or an ARN)"
        ))
    }
}
/// Session name of the assumed role, visible in the member account's CloudTrail.
pub const SESSION_NAME: &str = "gdfwd-alias";
/// Shortest session STS allows; the credentials are used for one call.
const SESSION_SECONDS: i32 = 900;

/// The partition of a region: `cn-*` → `aws-cn`, `us-gov-*` → `aws-us-gov`, the ISO regions to
/// theirs, everything else `aws`.
pub fn partition_for_region(region: &str) -> &'static str {
    if region.starts_with("cn-") {
        "aws-cn"
    } else if region.starts_with("us-gov-") {
        "aws-us-gov"
    } else if region.starts_with("us-isob-") {
        "aws-iso-b"
    } else if region.starts_with("us-iso-") {
        "aws-iso"
    } else {
        "aws"
    }
}

/// Shows whether an external id is set, never its value: deployments treat it as a shared secret
/// (the CloudFormation parameter is `NoEcho`).
pub(crate) fn redacted(external_id: &Option<String>) -> Option<&'static str> {
    external_id.as_ref().map(|_| "<redacted>")
}

/// Settings of [`AwsAccountLookup`]. `Debug` redacts the external id.
#[derive(Clone, PartialEq, Eq)]
pub struct LookupOptions {
    /// Name of the role assumed in member accounts.
    pub role_name: String,
    /// `ExternalId` passed to `AssumeRole`, when the role's trust policy demands one.
    pub external_id: Option<String>,
    /// ARN partition; `None` derives it from the SDK config's region ([`partition_for_region`]).
    pub partition: Option<String>,
    /// The account the forwarder runs in (read directly, no AssumeRole); `None` asks
    /// `sts:GetCallerIdentity` once, on first need.
    pub own_account_id: Option<String>,
    /// Attempts per AWS call; `None` keeps the SDK config's retry settings. Enrichment runs under a
    /// short budget, where backoff between attempts rarely pays off.
    pub max_attempts: Option<u32>,
    /// What the configured account fields need beyond the name (tags, OU path, the Organizations
    /// name even when an alias was found); nothing by default.
    pub context: ContextNeeds,
}

impl std::fmt::Debug for LookupOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LookupOptions")
            .field("role_name", &self.role_name)
            .field("external_id", &redacted(&self.external_id))
            .field("partition", &self.partition)
            .field("own_account_id", &self.own_account_id)
            .field("max_attempts", &self.max_attempts)
            .field("context", &self.context)
            .finish()
    }
}

impl Default for LookupOptions {
    fn default() -> Self {
        Self {
            role_name: DEFAULT_ROLE_NAME.to_owned(),
            external_id: None,
            partition: None,
            own_account_id: None,
            max_attempts: None,
            context: ContextNeeds::default(),
        }
    }
}

/// Looks up IAM aliases and Organizations names of accounts. Cheap to share (`Arc`).
pub struct AwsAccountLookup {
    sdk_config: SdkConfig,
    sts: aws_sdk_sts::Client,
    iam: aws_sdk_iam::Client,
    org: aws_sdk_organizations::Client,
    role_name: String,
    external_id: Option<String>,
    partition: String,
    own_account: OnceCell<String>,
    context: ContextNeeds,
}

impl std::fmt::Debug for AwsAccountLookup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwsAccountLookup")
            .field("role_name", &self.role_name)
            .field("external_id", &redacted(&self.external_id))
            .field("partition", &self.partition)
            .field("own_account", &self.own_account.get())
            .finish_non_exhaustive()
    }
}

fn is_account_id(s: &str) -> bool {
    s.len() == 12 && s.bytes().all(|b| b.is_ascii_digit())
}

impl AwsAccountLookup {
    pub fn new(sdk_config: &SdkConfig, options: LookupOptions) -> Self {
        let sdk_config = match options.max_attempts {
            Some(n) => sdk_config
                .to_builder()
                .retry_config(RetryConfig::standard().with_max_attempts(n.max(1)))
                .build(),
            None => sdk_config.clone(),
        };
        let partition = options.partition.unwrap_or_else(|| {
            sdk_config
                .region()
                .map_or("aws", |r| partition_for_region(r.as_ref()))
                .to_owned()
        });
        let own_account = match options.own_account_id {
            Some(id) => OnceCell::new_with(Some(id)),
            None => OnceCell::new(),
        };
        Self {
            sts: aws_sdk_sts::Client::new(&sdk_config),
            iam: aws_sdk_iam::Client::new(&sdk_config),
            org: aws_sdk_organizations::Client::new(&sdk_config),
            sdk_config,
            role_name: options.role_name,
            external_id: options.external_id,
            partition,
            own_account,
            context: options.context,
        }
    }

    pub(crate) fn org(&self) -> &aws_sdk_organizations::Client {
        &self.org
    }

    /// The ARN partition role ARNs are built with.
    pub fn partition(&self) -> &str {
        &self.partition
    }

    /// The ARN of the role assumed to read `account_id`'s alias.
    pub fn role_arn(&self, account_id: &str) -> String {
        format!(
            "arn:{}:iam::{account_id}:role/{}",
            self.partition, self.role_name
        )
    }

    /// The account the forwarder's credentials belong to (`sts:GetCallerIdentity`, asked once;
    /// a failure is not remembered, the next call asks again).
    pub async fn own_account_id(&self) -> Result<&str, EnrichError> {
        self.own_account
            .get_or_try_init(|| async {
                let out =
                    self.sts
                        .get_caller_identity()
                        .send()
                        .await
                        .map_err(|e| EnrichError::Aws {
                            operation: "sts:GetCallerIdentity",
                            detail: describe(&e),
                        })?;
                out.account.ok_or_else(|| EnrichError::Aws {
                    operation: "sts:GetCallerIdentity",
                    detail: "the answer carries no account id".to_owned(),
                })
            })
            .await
            .map(String::as_str)
    }

    /// Every account of the organization (`organizations:ListAccounts`), as (id, name), for
    /// `gdfwd accounts` when no account ids are given.
    pub async fn organization_accounts(
        &self,
    ) -> Result<Vec<(String, Option<String>)>, EnrichError> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = self
                .org
                .list_accounts()
                .set_next_token(token.take())
                .send()
                .await
                .map_err(|e| EnrichError::Aws {
                    operation: "organizations:ListAccounts",
                    detail: describe(&e),
                })?;
            for a in page.accounts() {
                if let Some(id) = a.id() {
                    out.push((id.to_owned(), a.name().map(str::to_owned)));
                }
            }
            match page.next_token() {
                Some(t) if !t.is_empty() => token = Some(t.to_owned()),
                _ => break,
            }
        }
        Ok(out)
    }

    /// The alias read with the forwarder's own credentials (own account).
    async fn own_alias(&self) -> Result<Option<String>, String> {
        let out = self
            .iam
            .list_account_aliases()
            .send()
            .await
            .map_err(|e| format!("iam:ListAccountAliases (own account): {}", describe(&e)))?;
        Ok(out.account_aliases().first().cloned())
    }

    /// The alias read through the member account's role.
    async fn member_alias(&self, account_id: &str) -> Result<Option<String>, String> {
        let arn = self.role_arn(account_id);
        let mut req = self
            .sts
            .assume_role()
            .role_arn(&arn)
            .role_session_name(SESSION_NAME)
            .duration_seconds(SESSION_SECONDS);
        if let Some(x) = &self.external_id {
            req = req.external_id(x);
        }
        let out = req
            .send()
            .await
            .map_err(|e| format!("sts:AssumeRole {arn}: {}", describe(&e)))?;
        let c = out
            .credentials()
            .ok_or_else(|| format!("sts:AssumeRole {arn}: the answer carries no credentials"))?;
        let creds = aws_sdk_iam::config::Credentials::new(
            c.access_key_id(),
            c.secret_access_key(),
            Some(c.session_token().to_owned()),
            SystemTime::try_from(*c.expiration()).ok(),
            "gdfwd-alias-assumed-role",
        );
        let conf = aws_sdk_iam::config::Builder::from(&self.sdk_config)
            .credentials_provider(creds)
            .build();
        let out = aws_sdk_iam::Client::from_conf(conf)
            .list_account_aliases()
            .send()
            .await
            .map_err(|e| format!("iam:ListAccountAliases as {arn}: {}", describe(&e)))?;
        Ok(out.account_aliases().first().cloned())
    }

    /// Whether the alias can be read for `account_id` the way enrichment reads it (the member
    /// role, or the own credentials for the own account), without the Organizations fallback:
    /// `gdfwd doctor`'s alias-role check. The error names the call that failed.
    pub async fn probe_alias_role(&self, account_id: &str) -> Result<(), String> {
        if !is_account_id(account_id) {
            return Err(format!("{account_id:?} is not a 12-digit AWS account id"));
        }
        self.alias(account_id).await.map(|_| ())
    }

    async fn alias(&self, account_id: &str) -> Result<Option<String>, String> {
        // When our own account id is unknown (GetCallerIdentity failed) we take the role path:
        // it works for our own account too when the role is deployed there.
        match self.own_account_id().await {
            Ok(own) if own == account_id => self.own_alias().await,
            Ok(_) => self.member_alias(account_id).await,
            Err(e) => {
                tracing::debug!(error = %e, "own account unknown; assuming the alias role");
                self.member_alias(account_id).await
            }
        }
    }

    pub(crate) async fn org_name(&self, account_id: &str) -> Result<Option<String>, String> {
        let out = self
            .org
            .describe_account()
            .account_id(account_id)
            .send()
            .await
            .map_err(|e| {
                crate::context::org_error("organizations:DescribeAccount", &describe(&e))
            })?;
        Ok(out
            .account()
            .and_then(|a| a.name())
            .filter(|n| !n.is_empty())
            .map(str::to_owned))
    }
}

#[async_trait]
impl AccountLookup for AwsAccountLookup {
    /// The alias when readable; else the Organizations name. An error when no name was found and
    /// a source failed (the reasons of both are in the message, for the operator's log); an empty
    /// [`AccountInfo`] when both sources answered and neither has a name. With a name, also the
    /// context the account fields need (`LookupOptions::context`), whose failures are reported in
    /// `context_errors` instead of failing the lookup.
    async fn lookup(&self, account_id: &str) -> Result<AccountInfo, LookupError> {
        let fail = |message: String| LookupError {
            account_id: account_id.to_owned(),
            message,
        };
        if !is_account_id(account_id) {
            return Err(fail("not a 12-digit AWS account id".to_owned()));
        }
        let mut info = self.name(account_id).await.map_err(fail)?;
        if self.context.any() {
            self.add_context(account_id, self.context, &mut info).await;
        }
        Ok(info)
    }
}

impl AwsAccountLookup {
    /// The alias, else the Organizations name (see [`AccountLookup::lookup`]).
    async fn name(&self, account_id: &str) -> Result<AccountInfo, String> {
        let alias = self.alias(account_id).await;
        if let Ok(Some(alias)) = alias {
            return Ok(AccountInfo {
                alias: Some(alias),
                ..AccountInfo::default()
            });
        }
        let org_name = self.org_name(account_id).await;
        match (alias, org_name) {
            (_, Ok(Some(name))) => Ok(AccountInfo {
                org_name: Some(name),
                ..AccountInfo::default()
            }),
            (Ok(_), Ok(None)) => Ok(AccountInfo::default()),
            (Ok(_), Err(o)) => Err(format!("no IAM account alias; {o}")),
            (Err(a), Ok(None)) => Err(format!("{a}; Organizations has no name for it")),
            (Err(a), Err(o)) => Err(format!("{a}; {o}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_follow_the_region_prefix() {
        assert_eq!(partition_for_region("eu-central-1"), "aws");
        assert_eq!(partition_for_region("us-east-1"), "aws");
        assert_eq!(partition_for_region("cn-north-1"), "aws-cn");
        assert_eq!(partition_for_region("cn-northwest-1"), "aws-cn");
        assert_eq!(partition_for_region("us-gov-west-1"), "aws-us-gov");
        assert_eq!(partition_for_region("us-iso-east-1"), "aws-iso");
        assert_eq!(partition_for_region("us-isob-east-1"), "aws-iso-b");
    }

    #[test]
    fn account_ids_are_twelve_digits() {
        assert!(is_account_id("123456789012"));
        assert!(!is_account_id("12345678901"));
        assert!(!is_account_id("12345678901a"));
        assert!(!is_account_id("123456789012:role/x"));
    }

    #[test]
    fn debug_output_never_shows_the_external_id() {
        let o = LookupOptions {
            external_id: Some("s3cr3t-xid".to_owned()),
            ..LookupOptions::default()
        };
        let conf = SdkConfig::builder()
            .behavior_version(aws_config::BehaviorVersion::latest())
            .build();
        let l = AwsAccountLookup::new(&conf, o.clone());
        for text in [format!("{o:?}"), format!("{l:?}")] {
            assert!(!text.contains("s3cr3t"), "{text}");
            assert!(text.contains("<redacted>"), "{text}");
        }
    }

    #[tokio::test]
    async fn role_arns_use_the_partition_of_the_region_unless_given() {
        let cn = SdkConfig::builder()
            .region(aws_config::Region::new("cn-north-1"))
            .behavior_version(aws_config::BehaviorVersion::latest())
            .build();
        let l = AwsAccountLookup::new(&cn, LookupOptions::default());
        assert_eq!(
            l.role_arn("111122223333"),
            "arn:aws-cn:iam::111122223333:role/GuardDutyForwarderAliasReader"
        );
        let l = AwsAccountLookup::new(
            &cn,
            LookupOptions {
                role_name: "Reader".to_owned(),
                partition: Some("aws-us-gov".to_owned()),
                ..LookupOptions::default()
            },
        );
        assert_eq!(
            l.role_arn("111122223333"),
            "arn:aws-us-gov:iam::111122223333:role/Reader"
        );
    }
}
