//! The GuardDuty client facing answers it must not trust: an error body too large to hold, and an
//! endpoint URL carrying credentials that must never reach an error message.

use std::sync::Arc;
use std::time::Duration;

use aws_credential_types::Credentials;
use aws_credential_types::provider::SharedCredentialsProvider;
use gdfwd_guardduty::{ClientConfig, Endpoint, GuardDutyClient, GuardDutyError};
use gdfwd_testkit_guardduty::FakeGuardDuty;

fn client(endpoint: String, max_attempts: u32) -> Arc<GuardDutyClient> {
    let creds = SharedCredentialsProvider::new(Credentials::from_keys(
        "AKIDTESTGDFWD",
        "test-secret-key",
        None,
    ));
    let config = ClientConfig {
        max_calls_per_second: 0,
        max_attempts,
        base_backoff: Duration::from_millis(5),
        max_backoff: Duration::from_millis(20),
        timeout: Duration::from_secs(60),
    };
    Arc::new(GuardDutyClient::new(creds, Endpoint::Fixed(endpoint), config).expect("client"))
}

/// A 128 MiB error body (a broken proxy, a hostile endpoint) is read only as far as the message
/// needs: the server hands over at most the cap plus what socket buffers take, per attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_error_body_is_read_only_up_to_the_cap() {
    const HUGE: u64 = 128 << 20;
    let fake = FakeGuardDuty::start().await.expect("fake");
    fake.ensure_detector("eu-west-1");
    fake.huge_error_next(2, HUGE);
    let e = client(fake.endpoint(), 2)
        .list_detectors("eu-west-1")
        .await
        .expect_err("every attempt answers 500");
    assert!(
        matches!(
            &e,
            GuardDutyError::Api {
                status: 500,
                attempts: 2,
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().len() < 1000, "the message is bounded: {e}");
    let served = fake.counters().error_body_bytes;
    assert!(
        served < 2 * (16 << 20),
        "{served} bytes of the error bodies were read: more than the cap plus buffers"
    );
}

/// An endpoint with credentials in it (`AWS_ENDPOINT_URL=https://user:password@...`) that cannot
/// be reached: the error names the call and the redacted URL, never the password.
#[tokio::test]
async fn credentials_in_the_endpoint_never_reach_an_error() {
    let e = client("http://gdfwd:SECRETPW0@127.0.0.1:1".to_owned(), 1)
        .list_detectors("eu-west-1")
        .await
        .expect_err("nothing listens on port 1");
    let shown = e.to_string();
    assert!(!shown.contains("SECRETPW0"), "{shown}");
    assert!(!format!("{e:?}").contains("SECRETPW0"), "{e:?}");
    assert!(shown.contains("127.0.0.1:1"), "still says where: {shown}");
}
