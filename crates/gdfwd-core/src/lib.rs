//! The forwarder's core: the ports every adapter implements, and the pipeline that drives them.
//!
//! Adapters (SQLite and DynamoDB stores, the HTTP sink, AWS enrichment, the GuardDuty API as a
//! finding source) live in crates above this one and implement these traits; the binaries only
//! wire them together. The engines that drive several ports at once live here too: the
//! [`pipeline`], and the [`backfill`] engine over a [`source::FindingPages`]. Nothing here
//! performs network I/O or links an AWS SDK, so both are tested with in-memory fakes and compile
//! in seconds.

pub mod account_fields;
pub mod audit;
pub mod audit_check;
pub mod backfill;
pub mod clock;
#[cfg(feature = "contract")]
pub mod contract;
pub mod enrich;
pub mod error;
pub mod limits;
pub mod logfilter;
pub mod pipeline;
pub mod preview;
pub mod sink;
pub mod source;
pub mod store;
#[cfg(any(test, feature = "testdata"))]
pub mod testdata;
pub mod timespec;

pub use clock::{Clock, ManualClock, SystemClock};
pub use error::{AccountFieldError, SinkError, SourceError, StoreError};
pub use gdfwd_model as model;
