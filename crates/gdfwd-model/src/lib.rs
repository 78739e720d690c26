//! The GuardDuty finding model and its mappings to Dynatrace security events.
//!
//! This crate is deliberately pure: no I/O, no async, no AWS SDK. Everything above it (the
//! pipeline, the Lambda, the CLI, backfill) turns bytes into [`Finding`]s with [`parse`], splits
//! them per affected object with [`split`] and maps them with [`map`]. Keeping it free of heavy
//! dependencies means its tests and benchmarks compile in seconds.
//!
//! Findings are kept as `serde_json` maps rather than typed structs: GuardDuty adds fields every
//! few months and the `raw` payload must carry the finding JSON-equal to what GuardDuty sent, so
//! only the handful of fields we interpret are extracted.

pub mod error;
pub mod filter;
pub mod finding;
pub mod map;
pub mod parse;
pub mod split;
pub mod time;

pub use error::ModelError;
pub use filter::{FilterInput, FindingFilter, Inclusion, Verdict};
pub use finding::{Finding, FindingMeta};
pub use map::{Enrichment, Event, Format, ImageRef, event_id, map_finding, severity_label};
pub use parse::{
    EVENT_DETAIL_TYPE, EVENT_SOURCE, Item, RecordError, parse_document, parse_record, parse_value,
};
pub use split::{
    AffectedObject, MAX_COPY_BYTES_PER_FINDING, MAX_EVENTS_PER_FINDING, Overflow, split,
};
pub use time::Timestamp;
