//! The DynamoDB store's errors, and how they map onto the port's [`StoreError`].
//!
//! Every variant names the table and the operation; finding-level errors also name the finding
//! and version, so a log line alone says what failed where.

use gdfwd_core::StoreError;
use gdfwd_model::Timestamp;
use thiserror::Error;

/// `Clone`: one failed batch request is every item's error.
#[derive(Debug, Clone, Error)]
pub enum DynamoStoreError {
    /// A DynamoDB call failed after the SDK's retries (throttling, network, 5xx, ...).
    #[error("DynamoDB table {table}: {operation} failed: {message}")]
    Call {
        table: String,
        operation: &'static str,
        message: String,
    },
    /// The table does not exist (run `gdfwd store init --store dynamodb:TABLE`).
    #[error(
        "DynamoDB table {table} does not exist (during {operation}); create it with `gdfwd store init --store dynamodb:{table}` or the CloudFormation template"
    )]
    NoTable {
        table: String,
        operation: &'static str,
    },
    /// A claim kept racing with other writers (should not happen; each loop makes progress).
    #[error(
        "DynamoDB table {table}: {operation} of finding {finding_id:?} kept conflicting with concurrent writers"
    )]
    Contended {
        table: String,
        operation: &'static str,
        finding_id: String,
    },
    /// An item read back is not in the layout this crate writes.
    #[error("DynamoDB table {table}: {operation}: malformed item {key}: {message}")]
    Corrupt {
        table: String,
        operation: &'static str,
        key: String,
        message: String,
    },
    /// `commit`/`release` of a version that was never claimed.
    #[error(
        "DynamoDB table {table}: {operation} of finding {finding_id:?} version {version}: {message}"
    )]
    NotClaimed {
        table: String,
        operation: &'static str,
        finding_id: String,
        version: Timestamp,
        message: &'static str,
    },
    /// `commit`/`release` by a sender whose claim another sender replaced (its lease ended).
    #[error(
        "DynamoDB table {table}: {operation} of finding {finding_id:?} version {version} refused: the claim is no longer this sender's"
    )]
    StaleOwner {
        table: String,
        operation: &'static str,
        finding_id: String,
        version: Timestamp,
    },
    /// The table name is not a valid DynamoDB table name.
    #[error("invalid DynamoDB table name {0:?}: 3 to 255 characters of A-Z a-z 0-9 _ - .")]
    TableName(String),
    /// The existing table does not have the layout [`crate::table_definition`] describes.
    #[error("DynamoDB table {table} exists but does not match the expected definition: {message}")]
    Mismatch { table: String, message: String },
    /// DynamoDB refused the request's data (`ValidationException`: a key or item over its
    /// limits, a number out of range). Not an outage: the same request fails again. The port
    /// sees it as [`StoreError::Invalid`], so the pipeline retries the batch's other items
    /// without the offending one.
    #[error("DynamoDB table {table}: {operation} refused the data: {message}")]
    Refused {
        table: String,
        operation: &'static str,
        message: String,
    },
    /// AWS refused the credentials or the permission (`AccessDeniedException`, ...).
    #[error("DynamoDB table {table}: {operation} refused: {message}")]
    Denied {
        table: String,
        operation: &'static str,
        message: String,
    },
}

/// AWS error codes that refuse the caller rather than report an outage.
pub(crate) const REFUSAL_CODES: &[&str] = &[
    "AccessDeniedException",
    "UnrecognizedClientException",
    "InvalidSignatureException",
    "MissingAuthenticationTokenException",
];

impl DynamoStoreError {
    /// Whether the configuration is what is wrong (no such table, not our layout, no permission),
    /// as opposed to an outage a retry may get past.
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            Self::NoTable { .. } | Self::Mismatch { .. } | Self::Denied { .. } | Self::TableName(_)
        )
    }

    fn operation(&self) -> &'static str {
        match self {
            Self::Call { operation, .. }
            | Self::Denied { operation, .. }
            | Self::Refused { operation, .. }
            | Self::NoTable { operation, .. }
            | Self::Contended { operation, .. }
            | Self::Corrupt { operation, .. }
            | Self::NotClaimed { operation, .. }
            | Self::StaleOwner { operation, .. } => operation,
            Self::TableName(_) | Self::Mismatch { .. } => "configuration",
        }
    }
}

impl From<DynamoStoreError> for StoreError {
    fn from(e: DynamoStoreError) -> Self {
        let operation = e.operation();
        match e {
            // A refused permission stays retryable for the pipeline, as before: IAM changes
            // propagate, and SQS redelivers once they have.
            Self_::Call { ref table, .. }
            | Self_::Denied { ref table, .. }
            | Self_::Contended { ref table, .. } => StoreError::Unavailable {
                backend: format!("dynamodb:{table}"),
                operation,
                source: Box::new(e),
            },
            Self_::Corrupt { ref table, .. }
            | Self_::NotClaimed { ref table, .. }
            | Self_::Refused { ref table, .. } => StoreError::Invalid {
                backend: format!("dynamodb:{table}"),
                operation,
                message: e.to_string(),
            },
            Self_::StaleOwner {
                table,
                finding_id,
                version,
                ..
            } => StoreError::StaleOwner {
                backend: format!("dynamodb:{table}"),
                operation,
                finding_id,
                version,
            },
            Self_::NoTable { .. } | Self_::TableName(_) | Self_::Mismatch { .. } => {
                StoreError::Config(e.to_string())
            }
        }
    }
}

use DynamoStoreError as Self_;
