//! GuardDuty as a source: the API client (REST JSON + SigV4, see [`client`]) and the engines of
//! `gdfwd backfill` ([`backfill`]) and `gdfwd audit gaps` ([`gaps`]); the administrator's
//! read-only calls of `gdfwd doctor` ([`admin`]).
//!
//! Both engines hand findings to `gdfwd_core::pipeline::Pipeline::process`, the path the Lambda
//! uses, so dedup, enrichment, the rate-limited send and commit are shared, not re-implemented.

pub mod admin;
pub mod backfill;
pub mod client;
pub mod error;
pub mod gaps;
pub mod progress;
pub mod query;

pub use backfill::{Backfill, BackfillConfig, BackfillReport, PendingClaims, RegionReport, StopFn};
pub use client::{ClientConfig, Endpoint, GuardDutyClient};
pub use error::GuardDutyError;
pub use gaps::{Gap, GapReason, GapsReport, find_gaps, send_gaps};
pub use query::{Checkpoint, FindingQuery};
