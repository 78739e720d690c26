//! The DynamoDB store's errors: how SDK errors become them, and how they map onto the port's
//! [`StoreError`].
//!
//! Every variant names the table and the operation; finding-level errors also name the finding
//! and version, so a log line alone says what failed where. The store builds them through the
//! helpers at the end of this file, which fill in its table name.

use aws_sdk_dynamodb::error::{BuildError, ProvideErrorMetadata, SdkError};
use gdfwd_core::StoreError;
use gdfwd_core::store::VersionKey;
use gdfwd_model::Timestamp;
use thiserror::Error;

use crate::DynamoStore;

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
            DynamoStoreError::Call { ref table, .. }
            | DynamoStoreError::Denied { ref table, .. }
            | DynamoStoreError::Contended { ref table, .. } => StoreError::Unavailable {
                backend: format!("dynamodb:{table}"),
                operation,
                source: Box::new(e),
            },
            DynamoStoreError::Corrupt { ref table, .. }
            | DynamoStoreError::NotClaimed { ref table, .. }
            | DynamoStoreError::Refused { ref table, .. } => StoreError::Invalid {
                backend: format!("dynamodb:{table}"),
                operation,
                message: e.to_string(),
            },
            DynamoStoreError::StaleOwner {
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
            DynamoStoreError::NoTable { .. }
            | DynamoStoreError::TableName(_)
            | DynamoStoreError::Mismatch { .. } => StoreError::Config(e.to_string()),
        }
    }
}

impl DynamoStore {
    /// A failed SDK call as the error it is: no table, refused data, refused caller, or an
    /// outage (after the SDK's retries).
    pub(crate) fn call_err<E, R>(
        &self,
        operation: &'static str,
        e: SdkError<E, R>,
    ) -> DynamoStoreError
    where
        E: std::error::Error + ProvideErrorMetadata + 'static,
        R: std::fmt::Debug + 'static,
    {
        if e.as_service_error()
            .and_then(|s| s.code())
            .is_some_and(|c| c == "ResourceNotFoundException")
        {
            return DynamoStoreError::NoTable {
                table: self.table.clone(),
                operation,
            };
        }
        let message = gdfwd_aws_error::describe(&e);
        let table = self.table.clone();
        if gdfwd_aws_error::has_code(&e, &["ValidationException"]) {
            return DynamoStoreError::Refused {
                table,
                operation,
                message,
            };
        }
        if gdfwd_aws_error::has_code(&e, REFUSAL_CODES) {
            return DynamoStoreError::Denied {
                table,
                operation,
                message,
            };
        }
        DynamoStoreError::Call {
            table,
            operation,
            message,
        }
    }

    /// A request the SDK's builder refused (a required field missing).
    pub(crate) fn build_err(&self, operation: &'static str, err: &BuildError) -> DynamoStoreError {
        DynamoStoreError::Call {
            table: self.table.clone(),
            operation,
            message: format!("building the request failed: {err}"),
        }
    }

    pub(crate) fn corrupt(
        &self,
        operation: &'static str,
        key: &str,
        message: String,
    ) -> DynamoStoreError {
        DynamoStoreError::Corrupt {
            table: self.table.clone(),
            operation,
            key: key.to_owned(),
            message,
        }
    }

    pub(crate) fn not_claimed(
        &self,
        operation: &'static str,
        key: &VersionKey,
        message: &'static str,
    ) -> DynamoStoreError {
        DynamoStoreError::NotClaimed {
            table: self.table.clone(),
            operation,
            finding_id: key.finding_id.clone(),
            version: key.version,
            message,
        }
    }

    pub(crate) fn stale_owner(
        &self,
        operation: &'static str,
        key: &VersionKey,
    ) -> DynamoStoreError {
        DynamoStoreError::StaleOwner {
            table: self.table.clone(),
            operation,
            finding_id: key.finding_id.clone(),
            version: key.version,
        }
    }

    pub(crate) fn contended(&self, operation: &'static str, id: &str) -> DynamoStoreError {
        DynamoStoreError::Contended {
            table: self.table.clone(),
            operation,
            finding_id: id.to_owned(),
        }
    }
}
