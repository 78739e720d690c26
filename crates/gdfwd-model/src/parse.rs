//! Tolerant input parsing: one document in, findings (or skips, or per-record errors) out.
//!
//! A document is what one file or one message holds: an EventBridge event, a bare finding, a
//! GetFindings-style `{"findings": [...]}` wrapper, a JSON array of any of these, or NDJSON. Each
//! record is judged on its own so one bad record never hides the good ones around it.

use serde_json::Value;

use crate::error::ModelError;
use crate::finding::Finding;

/// What one input record turned out to be.
#[derive(Debug, Clone, PartialEq)]
pub enum Item {
    Finding(Box<Finding>),
    /// A well-formed event that is not a GuardDuty finding (another `detail-type` or `source`).
    Skipped {
        reason: String,
    },
}

/// A record that could not be used, with its position in the document.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordError {
    /// 1-based record number within the document (array element or NDJSON line order).
    pub record: usize,
    /// 1-based line number where the record starts, when the document is line-oriented.
    pub line: Option<usize>,
    pub error: ModelError,
}

/// Parses a whole document (file contents, message body).
pub fn parse_document(text: &str) -> Vec<Result<Item, RecordError>> {
    let _ = text;
    unimplemented!("filled in by the model issue")
}

/// Parses one already-decoded JSON value (a Lambda payload, one API result). Arrays and
/// `{"findings": [...]}` wrappers yield several items.
pub fn parse_value(value: Value) -> Vec<Result<Item, ModelError>> {
    let _ = value;
    unimplemented!("filled in by the model issue")
}
