//! Account enrichment over AWS: turns the member account id of a finding into the name a security
//! engineer recognises (`aws.account.name`, `aws.account.alias`).
//!
//! - [`AwsAccountLookup`]: the raw lookup (IAM alias through an assumed role; Organizations
//!   `DescribeAccount` name as fallback), implementing the core's
//!   [`AccountLookup`](gdfwd_core::enrich::AccountLookup);
//! - [`build_resolver`]: the cached, time-bounded, never-failing resolver the pipeline takes
//!   (the caching rules live in the core, [`gdfwd_core::enrich::CachingResolver`]);
//! - the account context account fields read (`--account-field`: Organizations tags, the OU path),
//!   looked up with the name when configured (`LookupOptions::context`);
//! - [`resolve_all`]: what `gdfwd accounts` shows, to check the role setup;
//! - `EnrichArgs` (feature `cli`): the flags and environment variables.
//!
//! See docs/enrichment.md for the IAM setup.

mod build;
#[cfg(feature = "cli")]
mod cli;
mod context;
mod error;
mod lookup;
mod report;

pub use build::{EnrichConfig, build_lookup, build_resolver};
#[cfg(feature = "cli")]
pub use cli::EnrichArgs;
pub use context::ROOT_NAME;
pub use error::EnrichError;
pub use lookup::{
    AwsAccountLookup, DEFAULT_ROLE_NAME, LookupOptions, SESSION_NAME, parse_role_name,
    partition_for_region,
};
pub use report::{AccountReport, resolve_all};
