//! `gdfwd doctor`: does every account and region of the Organization reach Dynatrace?
//!
//! Three parts, so the verdicts are testable without AWS:
//! - [`observe`]: the observation types and the read-only ports adapters implement;
//! - [`collect`]: gathers the observations through the ports, concurrently and bounded;
//! - [`diagnose`]: pure checks, observations in, named checks and gaps (each with its fix) out,
//!   as a [`Report`] whose serialisation is the `--output json` object; the CLI prints it
//!   (`gdfwd-cli/src/render/doctor.rs`, the table too).
//!
//! Check by check, with the fixes: docs/doctor.md.

pub mod collect;
pub mod diagnose;
pub mod observe;

pub use collect::{Ports, Progress, collect};
pub use diagnose::{Check, Gap, Report, Status, diagnose};
pub use observe::{
    AdminAccount, AliasRoleProbe, AwsInspector, Detector, EndpointAnswer, EndpointProbe, Flow,
    GuardDutyAdmin, Member, Obs, Observations, ObserveError, OrgAccount, QueueState, Rule, Scope,
    Stack, StackInstance, StackResource,
};
