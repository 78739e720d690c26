//! GuardDuty as a source: the API client (REST JSON + SigV4, see [`client`]), the finding source
//! `gdfwd backfill` and `gdfwd audit gaps` read through ([`source`]: the client implements core's
//! `FindingPages`, whose engines in `gdfwd_core::backfill` do the rest), what GuardDuty makes of
//! their query ([`query`]), and the administrator's read-only calls of `gdfwd doctor` ([`admin`]).

pub mod admin;
pub mod client;
pub mod error;
pub mod query;
pub mod source;

pub use client::{ClientConfig, Endpoint, GuardDutyClient};
pub use error::GuardDutyError;
// The engines are core's; re-exported so callers wiring them to this client need one import.
pub use gdfwd_core::backfill::{
    Backfill, BackfillConfig, BackfillReport, Gap, GapReason, GapsReport, PendingClaims,
    RegionReport, StopFn, find_gaps, send_gaps,
};
pub use query::{Checkpoint, FindingQuery, GuardDutyQuery};
