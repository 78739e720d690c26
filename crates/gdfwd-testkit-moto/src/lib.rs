//! Test support for every crate that talks to AWS: a moto_server to talk to, an SDK config
//! pointed at it, per-test unique names, and a fault-injecting proxy.
//!
//! Why shaped so:
//! - one moto_server per test *process* (not per test): starting moto costs seconds, and tests
//!   isolate themselves by using their own table/role/secret names ([`unique_name`]), never by
//!   resetting moto (other tests, and in CI other test binaries, share it);
//! - CI starts a single moto_server for the whole run and exports [`ENDPOINT_ENV`]; when it is set
//!   we use it and start nothing;
//! - when moto cannot be started or does not answer, we panic loudly naming the command and what
//!   to install: a test that silently skips would pass while testing nothing;
//! - [`FaultProxy`] is a real HTTP server in front of moto, so retry and throttling behaviour is
//!   exercised through the real SDK stack (signing, retry classifiers, backoff) rather than mocks.
//!
//! This crate is a dev-dependency only; it panics (with clear messages) instead of returning
//! errors, because every caller is a test that would `expect` anyway.

mod proxy;
mod server;

pub use proxy::{Fault, FaultProxy};
pub use server::{ENDPOINT_ENV, endpoint};

use std::sync::atomic::{AtomicU64, Ordering};

use aws_config::{BehaviorVersion, Region, SdkConfig};
pub use aws_credential_types::Credentials;

/// The region every test uses.
pub const REGION: &str = "us-east-1";

/// The account moto answers for with the static test credentials (moto's default).
pub const DEFAULT_ACCOUNT_ID: &str = "123456789012";

/// Static test credentials (`testing`/`testing`, as moto's documentation suggests).
pub fn test_credentials() -> Credentials {
    Credentials::new("testing", "testing", None, None, "gdfwd-testkit-moto")
}

/// An SDK config pointed at the moto endpoint ([`endpoint`]) with static test credentials and
/// region `us-east-1`.
pub async fn sdk_config() -> SdkConfig {
    sdk_config_at(&endpoint()).await
}

/// Like [`sdk_config`] but pointed at `endpoint_url`, e.g. a [`FaultProxy::endpoint`].
pub async fn sdk_config_at(endpoint_url: &str) -> SdkConfig {
    sdk_config_with_credentials(endpoint_url, test_credentials()).await
}

/// Like [`sdk_config_at`] with the given credentials, e.g. ones an STS `AssumeRole` at moto
/// returned (moto maps those to the assumed role's account).
pub async fn sdk_config_with_credentials(
    endpoint_url: &str,
    credentials: Credentials,
) -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .endpoint_url(endpoint_url)
        .region(Region::new(REGION))
        .credentials_provider(credentials)
        .load()
        .await
}

static NAME_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A name no other test (in this process or another one sharing moto) uses:
/// `<prefix>-<pid>-<counter>-<random hex>`. Short enough for IAM role names (64 chars) when the
/// prefix is under ~35 characters; only `[A-Za-z0-9-]` besides the prefix, valid for DynamoDB
/// tables, IAM roles and Secrets Manager secrets.
pub fn unique_name(prefix: &str) -> String {
    let n = NAME_COUNTER.fetch_add(1, Ordering::Relaxed);
    let r: u32 = rand::random();
    format!(
        "{prefix}-{}-{n}-{:06x}",
        std::process::id(),
        r & 0x00ff_ffff
    )
}

/// A random 12-digit account id of the test's own, so tests acting as "another account" at moto
/// never see each other's aliases, roles or organizations.
pub fn random_account_id() -> String {
    let n: u64 = rand::random::<u64>() % 700_000_000_000;
    format!("{}", 200_000_000_000 + n)
}

/// Credentials for `account_id` at moto: moto's AssumeRole into any account id answers with
/// credentials scoped to that account (the role need not exist), which is how a test becomes a
/// member account. `session` names the role session (visible in moto's logs).
pub async fn assume_account(account_id: &str, session: &str) -> Credentials {
    let sts = aws_sdk_sts::Client::new(&sdk_config().await);
    let out = sts
        .assume_role()
        .role_arn(format!(
            "arn:aws:iam::{account_id}:role/{}",
            unique_name("setup")
        ))
        .role_session_name(session)
        .send()
        .await
        .unwrap_or_else(|e| panic!("AssumeRole into {account_id} at moto: {e:?}"));
    let c = out
        .credentials()
        .unwrap_or_else(|| panic!("AssumeRole into {account_id} at moto returned no credentials"));
    Credentials::new(
        c.access_key_id(),
        c.secret_access_key(),
        Some(c.session_token().to_owned()),
        None,
        "gdfwd-testkit-moto",
    )
}

/// A fresh organization at moto: a random management account of its own (moto holds one
/// organization per account, so tests never collide) and `members` member accounts.
#[derive(Debug, Clone)]
pub struct Organization {
    pub management: String,
    pub credentials: Credentials,
    /// An SDK config acting as the management account.
    pub config: SdkConfig,
    /// (account id moto generated, Organizations name).
    pub members: Vec<(String, String)>,
}

/// Creates an [`Organization`] with `members` member accounts.
pub async fn organization(members: usize) -> Organization {
    use aws_sdk_organizations::types::OrganizationFeatureSet;
    let management = random_account_id();
    let credentials = assume_account(&management, "org-setup").await;
    let config = sdk_config_with_credentials(&endpoint(), credentials.clone()).await;
    let org = aws_sdk_organizations::Client::new(&config);
    org.create_organization()
        .feature_set(OrganizationFeatureSet::All)
        .send()
        .await
        .unwrap_or_else(|e| panic!("CreateOrganization at moto: {e:?}"));
    let mut out = Vec::new();
    for _ in 0..members {
        let name = unique_name("Member");
        let created = org
            .create_account()
            .account_name(&name)
            .email(format!("{}@example.com", unique_name("m").to_lowercase()))
            .send()
            .await
            .unwrap_or_else(|e| panic!("CreateAccount at moto: {e:?}"));
        let id = created
            .create_account_status()
            .and_then(|s| s.account_id())
            .unwrap_or_else(|| panic!("moto returned no account id for {name}"))
            .to_owned();
        out.push((id, name));
    }
    Organization {
        management,
        credentials,
        config,
        members: out,
    }
}

impl Organization {
    fn client(&self) -> aws_sdk_organizations::Client {
        aws_sdk_organizations::Client::new(&self.config)
    }

    /// The id of the organization's root.
    pub async fn root_id(&self) -> String {
        let roots = self
            .client()
            .list_roots()
            .send()
            .await
            .unwrap_or_else(|e| panic!("ListRoots at moto: {e:?}"));
        roots
            .roots()
            .first()
            .and_then(|r| r.id())
            .unwrap_or_else(|| panic!("moto returned no root"))
            .to_owned()
    }

    /// Creates the organizational unit `name` under `parent` (a root or OU id); returns its id.
    pub async fn create_ou(&self, parent: &str, name: &str) -> String {
        let out = self
            .client()
            .create_organizational_unit()
            .parent_id(parent)
            .name(name)
            .send()
            .await
            .unwrap_or_else(|e| panic!("CreateOrganizationalUnit {name} at moto: {e:?}"));
        out.organizational_unit()
            .and_then(|u| u.id())
            .unwrap_or_else(|| panic!("moto returned no OU id for {name}"))
            .to_owned()
    }

    /// Moves `account` from `from` to `to` (root or OU ids).
    pub async fn move_account(&self, account: &str, from: &str, to: &str) {
        self.client()
            .move_account()
            .account_id(account)
            .source_parent_id(from)
            .destination_parent_id(to)
            .send()
            .await
            .unwrap_or_else(|e| panic!("MoveAccount {account} at moto: {e:?}"));
    }

    /// Tags `account` in Organizations.
    pub async fn tag_account(&self, account: &str, tags: &[(&str, &str)]) {
        let tags = tags.iter().map(|(k, v)| {
            aws_sdk_organizations::types::Tag::builder()
                .key(*k)
                .value(*v)
                .build()
                .unwrap_or_else(|e| panic!("tag {k}: {e}"))
        });
        self.client()
            .tag_resource()
            .resource_id(account)
            .set_tags(Some(tags.collect()))
            .send()
            .await
            .unwrap_or_else(|e| panic!("TagResource {account} at moto: {e:?}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unique_names_differ_and_keep_the_prefix() {
        let a = unique_name("tbl");
        let b = unique_name("tbl");
        assert_ne!(a, b);
        assert!(
            a.starts_with(&format!("tbl-{}-", std::process::id())),
            "{a}"
        );
    }
}
