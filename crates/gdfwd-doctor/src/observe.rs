//! What `gdfwd doctor` observes, and the ports it observes through.
//!
//! Every observation is an [`Obs`]: the value, or why it could not be read ([`ObserveError`]).
//! A refused call is kept as a value, not raised, so one missing permission turns one check into
//! `unknown` while every other check still runs. The ports are small read-only traits the
//! adapters implement (GuardDuty in `gdfwd-guardduty`, the rest in `gdfwd-inspect-aws`, the alias
//! role through `gdfwd-enrich-aws`); the dedup store is read through the core's `StateStore`.

use std::collections::BTreeMap;

use async_trait::async_trait;
use gdfwd_model::Timestamp;
use thiserror::Error;

/// Why an observation is missing.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ObserveError {
    /// The call was refused for lack of a permission (`AccessDenied*`, `UnauthorizedOperation`,
    /// 403): the check is `unknown` and the fix is to grant `permission`.
    #[error("access denied ({permission} needed): {message}")]
    Denied { permission: String, message: String },
    /// Anything else (throttled after retries, an outage, an unexpected answer).
    #[error("{operation} failed: {message}")]
    Failed { operation: String, message: String },
}

/// An observation or why it is missing.
pub type Obs<T> = Result<T, ObserveError>;

/// One account of the Organization (`organizations:ListAccounts`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrgAccount {
    pub id: String,
    pub name: Option<String>,
    pub email: Option<String>,
    /// `ACTIVE`, `SUSPENDED`, `PENDING_CLOSURE`.
    pub status: String,
}

impl OrgAccount {
    pub fn active(&self) -> bool {
        self.status.eq_ignore_ascii_case("ACTIVE")
    }
}

/// A GuardDuty delegated administrator of one region (`ListOrganizationAdminAccounts`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminAccount {
    pub account_id: String,
    /// `ENABLED` or `DISABLE_IN_PROGRESS`.
    pub status: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Detector {
    pub id: String,
    /// `status == ENABLED`.
    pub enabled: bool,
}

/// A GuardDuty member of the administrator's detector (`ListMembers`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub account_id: String,
    /// `Enabled`, `Disabled`, `Removed`, `Resigned`, `Created`, `Invited`, ...
    pub relationship: String,
}

/// The GuardDuty administrator's view of one region. Read-only.
#[async_trait]
pub trait GuardDutyAdmin: Send + Sync {
    /// `ListOrganizationAdminAccounts` (AWS allows it to the management account only).
    async fn admin_accounts(&self, region: &str) -> Obs<Vec<AdminAccount>>;
    /// `ListDetectors` + `GetDetector`; `None` when the region has no detector.
    async fn detector(&self, region: &str) -> Obs<Option<Detector>>;
    /// `DescribeOrganizationConfiguration`'s `autoEnableOrganizationMembers` (`ALL`, `NEW`,
    /// `NONE`); `None` when GuardDuty answers that this account is not the delegated
    /// administrator of the region.
    async fn auto_enable(&self, region: &str, detector: &str) -> Obs<Option<String>>;
    /// `ListMembers` with `onlyAssociated=false`: every member, whatever its status.
    async fn members(&self, region: &str, detector: &str) -> Obs<Vec<Member>>;
    /// How many findings of `account` (updated since `since`) GuardDuty lists, up to one page
    /// (a lower bound: the check only needs "some").
    async fn findings_of(
        &self,
        region: &str,
        detector: &str,
        account: &str,
        since: Timestamp,
    ) -> Obs<u64>;
}

/// One resource of a CloudFormation stack (`ListStackResources`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StackResource {
    pub logical_id: String,
    /// `AWS::SQS::Queue`, ...
    pub resource_type: String,
    /// For a queue its URL, for a rule on the default bus its name, else `bus|name`.
    pub physical_id: Option<String>,
    /// `CREATE_COMPLETE`, ...
    pub status: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stack {
    /// `CREATE_COMPLETE`, `UPDATE_ROLLBACK_COMPLETE`, ...
    pub status: String,
    pub resources: Vec<StackResource>,
}

/// An EventBridge rule (`DescribeRule` + `ListTargetsByRule`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub name: String,
    pub bus: String,
    pub enabled: bool,
    pub target_arns: Vec<String>,
}

/// A queue's depth (`GetQueueAttributes`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueState {
    pub url: String,
    pub arn: Option<String>,
    /// `ApproximateNumberOfMessages`.
    pub visible: u64,
    /// `ApproximateNumberOfMessagesNotVisible`.
    pub in_flight: u64,
    /// Seconds since the oldest message was sent (CloudWatch's `ApproximateAgeOfOldestMessage`,
    /// the last 15 minutes' maximum); read only for a queue that holds messages. `Ok(None)`: no
    /// datapoint yet.
    pub oldest_age: Option<Obs<Option<u64>>>,
}

/// A StackSet instance (`ListStackInstances`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StackInstance {
    pub account: String,
    pub region: String,
    /// `CURRENT`, `OUTDATED`, `INOPERABLE`.
    pub status: String,
    pub reason: Option<String>,
}

/// The Organization and the pipeline's AWS resources. Read-only.
#[async_trait]
pub trait AwsInspector: Send + Sync {
    /// `organizations:ListAccounts`.
    async fn organization_accounts(&self) -> Obs<Vec<OrgAccount>>;
    /// `DescribeStacks` + `ListStackResources`; `None` when there is no such stack.
    async fn stack(&self, region: &str, name: &str) -> Obs<Option<Stack>>;
    /// `DescribeRule` + `ListTargetsByRule`; `None` when there is no such rule.
    async fn rule(&self, region: &str, bus: &str, name: &str) -> Obs<Option<Rule>>;
    /// `GetQueueUrl` (when `queue` is a name) + `GetQueueAttributes`; `None` when there is no
    /// such queue.
    async fn queue(&self, region: &str, queue: &str) -> Obs<Option<QueueState>>;
    /// CloudWatch's `ApproximateAgeOfOldestMessage` of the queue named `queue_name`, in
    /// seconds (the maximum of the last 15 minutes); `None` when CloudWatch has no datapoint.
    async fn oldest_message_age(&self, region: &str, queue_name: &str) -> Obs<Option<u64>>;
    /// `ListStackInstances`; `None` when the StackSet is not visible from this account.
    async fn stack_instances(
        &self,
        region: &str,
        stack_set: &str,
    ) -> Obs<Option<Vec<StackInstance>>>;
}

/// Whether the forwarder can assume the alias role in an account (as `gdfwd accounts` does).
#[async_trait]
pub trait AliasRoleProbe: Send + Sync {
    /// `Ok` when the role was assumed and the alias read; the error says which call failed.
    async fn probe(&self, account: &str) -> Result<(), String>;
}

/// What one authorised request to the Dynatrace endpoint answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndpointAnswer {
    /// The token could not be read (secret missing, denied, key absent).
    NoToken(String),
    /// The request got no HTTP answer.
    Unreachable(String),
    /// The HTTP status.
    Status(u16),
}

/// `--check-endpoint`: one request that ingests nothing a user would see.
#[async_trait]
pub trait EndpointProbe: Send + Sync {
    /// What is sent (for the check's detail).
    fn describe(&self) -> String;
    async fn probe(&self) -> EndpointAnswer;
}

/// What the dedup store recorded for one account in one region since the window's start.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Flow {
    pub sent: u64,
    pub failed: u64,
    /// The newest finding version sent.
    pub last_sent: Option<Timestamp>,
}

/// What to look at.
#[derive(Debug, Clone)]
pub struct Scope {
    pub own_account: Option<String>,
    pub home_region: String,
    /// Every region checked, the home region included.
    pub regions: Vec<String>,
    pub stack_name: String,
    pub relay_stack_set: String,
    pub since: Timestamp,
    pub concurrency: usize,
}

/// Everything one doctor run observed.
#[derive(Debug, Clone)]
pub struct Observations {
    /// What was looked at.
    pub scope: Scope,
    pub accounts: Obs<Vec<OrgAccount>>,
    pub guardduty: BTreeMap<String, GuardDutyRegion>,
    pub home: HomePipeline,
    pub relays: BTreeMap<String, RelayRegion>,
    /// `None`: the relay StackSet is not visible (deployed otherwise, or from another account).
    pub relay_instances: Obs<Option<Vec<StackInstance>>>,
    /// (account, region) → flow.
    pub flow: Obs<BTreeMap<(String, String), Flow>>,
    /// (account, region) → findings GuardDuty lists, asked only where nothing was forwarded.
    pub findings: BTreeMap<(String, String), Obs<u64>>,
    /// account → alias role probe; empty when enrichment is off.
    pub alias_roles: BTreeMap<String, Result<(), String>>,
    pub endpoint: Option<(String, EndpointAnswer)>,
}

/// GuardDuty in one region.
#[derive(Debug, Clone)]
pub struct GuardDutyRegion {
    pub admin_accounts: Obs<Vec<AdminAccount>>,
    pub detector: Obs<Option<Detector>>,
    /// Read only when there is a detector.
    pub auto_enable: Option<Obs<Option<String>>>,
    pub members: Option<Obs<Vec<Member>>>,
}

/// The forwarder stack in the home region.
#[derive(Debug, Clone)]
pub struct HomePipeline {
    pub stack: Obs<Option<Stack>>,
    /// The stack's rules, by physical id.
    pub rules: Vec<(String, Obs<Option<Rule>>)>,
    /// The stack's queues: (logical id, state).
    pub queues: Vec<(String, Obs<Option<QueueState>>)>,
}

/// The relay in one non-home region.
#[derive(Debug, Clone)]
pub struct RelayRegion {
    pub rule: Obs<Option<Rule>>,
    pub dlq: Obs<Option<QueueState>>,
}
