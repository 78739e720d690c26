//! The DynamoDB client the store talks through: retries, attempt timeout, no stalled-stream guard.
//!
//! Separate from the store because the binaries build the client (from their own SDK config)
//! and hand it to [`crate::DynamoStore::new`]; the store itself never reads configuration.

use std::time::Duration;

use aws_sdk_dynamodb::Client;

/// SDK attempts per call (1 + retries) for throttling and transient errors.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 5;
/// First retry backoff; the SDK doubles it per attempt, with jitter.
pub const DEFAULT_INITIAL_BACKOFF: Duration = Duration::from_millis(100);
/// Bound of one DynamoDB call attempt (a timed-out attempt is retried like a 5xx). DynamoDB
/// answers in milliseconds; moto, in tests, takes seconds for big transactions.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

/// A DynamoDB client for the store: `sdk`'s settings with standard retries
/// ([`DEFAULT_MAX_ATTEMPTS`], [`DEFAULT_INITIAL_BACKOFF`]) for throttling and transient errors,
/// and each attempt bounded by [`ATTEMPT_TIMEOUT`] instead of the SDK's stalled-stream
/// protection: that guard re-checks the throughput of every response body every 100 ms, which
/// costs CPU all the time a call waits (docs/performance.md), and for DynamoDB's small
/// responses a plain timeout says the same.
pub fn client(sdk: &aws_config::SdkConfig) -> Client {
    client_with_retries(sdk, DEFAULT_MAX_ATTEMPTS, DEFAULT_INITIAL_BACKOFF)
}

/// Like [`client`] with explicit retry settings (tests use short ones).
pub fn client_with_retries(
    sdk: &aws_config::SdkConfig,
    max_attempts: u32,
    initial_backoff: Duration,
) -> Client {
    let retry = aws_config::retry::RetryConfig::standard()
        .with_max_attempts(max_attempts.max(1))
        .with_initial_backoff(initial_backoff)
        .with_max_backoff(Duration::from_secs(5));
    // Keeps the connect timeout and anything else `sdk` sets.
    let timeouts = sdk
        .timeout_config()
        .map_or_else(
            aws_sdk_dynamodb::config::timeout::TimeoutConfig::builder,
            |t| t.to_builder(),
        )
        .operation_attempt_timeout(ATTEMPT_TIMEOUT)
        .build();
    let conf = aws_sdk_dynamodb::config::Builder::from(sdk)
        .retry_config(retry)
        .timeout_config(timeouts)
        .stalled_stream_protection(
            aws_sdk_dynamodb::config::StalledStreamProtectionConfig::disabled(),
        )
        .build();
    Client::from_conf(conf)
}
