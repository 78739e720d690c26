//! The forwarder's core: the ports every adapter implements, and the pipeline that drives them.
//!
//! Adapters (SQLite and DynamoDB stores, the HTTP sink, AWS enrichment, the GuardDuty API) live in
//! crates above this one and implement these traits; the binaries only wire them together. Nothing
//! here performs network I/O or links an AWS SDK, so the pipeline is tested with in-memory fakes and
//! compiles in seconds.

pub mod account_fields;
pub mod audit;
pub mod audit_check;
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
pub mod store;
#[cfg(any(test, feature = "testdata"))]
pub mod testdata;
pub mod timespec;

pub use clock::{Clock, ManualClock, SystemClock};
pub use error::{AccountFieldError, SinkError, StoreError};
pub use gdfwd_model as model;
