//! The client's SigV4 signing as GuardDuty checks it: the fake recomputes every signature from
//! the request it received, so these tests fail if the client signs wrongly, signs something
//! other than what it sends, or drops a session token. Temporary (session) credentials are what
//! production uses (Lambda role, SSO, assumed roles), so backfill and `audit gaps` run with them.

mod common;

use std::sync::Arc;
use std::time::SystemTime;

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use common::*;
use gdfwd_guardduty::{Backfill, BackfillConfig, GuardDutyError, find_gaps};
use gdfwd_testkit_guardduty::{FakeGuardDuty, TEST_ACCESS_KEY_ID, TEST_SECRET_ACCESS_KEY};

const SESSION_KEY: &str = "ASIATESTSESSION";
const SESSION_SECRET: &str = "session-secret";
const SESSION_TOKEN: &str = "FwoGZXIvYXdzEJr//////////wEaDTestSessionToken+/=";

fn session_credentials(token: Option<&str>) -> Credentials {
    Credentials::from_keys(SESSION_KEY, SESSION_SECRET, token.map(str::to_owned))
}

async fn fake_accepting_session(n: usize, seed: &str) -> (FakeGuardDuty, Vec<serde_json::Value>) {
    let (fake, findings) = fake_with(n, 4, seed).await;
    fake.accept_credentials(SESSION_KEY, SESSION_SECRET, Some(SESSION_TOKEN));
    (fake, findings)
}

/// The refusal `list_detectors` gets: (HTTP status, error kind).
async fn refusal(fake: &FakeGuardDuty, creds: Credentials) -> (u16, String) {
    let client = client_with(fake, 0, creds);
    match client.list_detectors("eu-west-1").await {
        Err(GuardDutyError::Api { status, kind, .. }) => (status, kind),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_with_session_credentials_verifies_and_delivers_everything_once() {
    let (fake, findings) = fake_accepting_session(400, "session-backfill").await;
    let client = client_with(&fake, 0, session_credentials(Some(SESSION_TOKEN)));
    let store = Store::new();
    let sink = Arc::new(RecordingSink::default());
    let report = Backfill::new(
        client,
        pipeline(store.open(), sink.clone()),
        BackfillConfig::new(query(), regions()),
    )
    .run()
    .await;
    assert!(report.errors().is_empty(), "{:?}", report.errors());
    assert_eq!(report.summary.forwarded, 400);
    assert_exactly_once(&sink, &findings);
    let c = fake.counters();
    assert_eq!(c.rejected, 0, "every signed request verified: {c:?}");
    assert!(c.get_findings >= 400 / 50, "{c:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_gaps_with_session_credentials_checks_every_finding() {
    let (fake, _) = fake_accepting_session(120, "session-gaps").await;
    let client = client_with(&fake, 0, session_credentials(Some(SESSION_TOKEN)));
    let store = Store::new();
    let stop: gdfwd_guardduty::StopFn = Arc::new(|| false);
    let gaps = find_gaps(client, store.open(), &query(), &regions(), 3, stop).await;
    assert!(gaps.errors.is_empty(), "{:?}", gaps.errors);
    assert_eq!(gaps.checked, 120);
    assert_eq!(
        gaps.gaps.len(),
        120,
        "nothing was sent, so every finding is a gap"
    );
    assert_eq!(fake.counters().rejected, 0);
}

#[tokio::test]
async fn a_wrong_secret_is_refused_as_an_invalid_signature() {
    let (fake, _) = fake_with(1, 1, "wrong-secret").await;
    let creds = Credentials::from_keys(TEST_ACCESS_KEY_ID, "not-the-secret", None);
    assert_eq!(
        refusal(&fake, creds).await,
        (403, "InvalidSignatureException".to_owned())
    );
    assert_eq!(
        fake.counters().list_detectors,
        0,
        "refused before the operation"
    );
}

#[tokio::test]
async fn an_unknown_access_key_is_refused_as_an_unrecognized_client() {
    let (fake, _) = fake_with(1, 1, "unknown-key").await;
    let creds = Credentials::from_keys("AKIDUNKNOWN", TEST_SECRET_ACCESS_KEY, None);
    assert_eq!(
        refusal(&fake, creds).await,
        (403, "UnrecognizedClientException".to_owned())
    );
}

#[tokio::test]
async fn temporary_credentials_without_or_with_a_wrong_session_token_are_refused() {
    let (fake, _) = fake_accepting_session(1, "session-token").await;
    for token in [None, Some("some-other-token")] {
        assert_eq!(
            refusal(&fake, session_credentials(token)).await,
            (403, "UnrecognizedClientException".to_owned()),
            "token {token:?}"
        );
    }
    // Long-term keys with a session token attached are not those keys either.
    let creds = Credentials::from_keys(
        TEST_ACCESS_KEY_ID,
        TEST_SECRET_ACCESS_KEY,
        Some(SESSION_TOKEN.to_owned()),
    );
    assert_eq!(
        refusal(&fake, creds).await,
        (403, "UnrecognizedClientException".to_owned())
    );
    // The right token passes.
    let client = client_with(&fake, 0, session_credentials(Some(SESSION_TOKEN)));
    assert_eq!(
        client
            .list_detectors("eu-west-1")
            .await
            .expect("signed")
            .len(),
        1
    );
}

/// The headers SigV4 adds for a POST of `body` to `url` (region eu-west-1).
fn signed_headers(url: &str, body: &[u8], creds: &Credentials) -> Vec<(String, String)> {
    let identity = creds.clone().into();
    let params = aws_sigv4::sign::v4::SigningParams::builder()
        .identity(&identity)
        .region("eu-west-1")
        .name("guardduty")
        .time(SystemTime::now())
        .settings(SigningSettings::default())
        .build()
        .expect("params")
        .into();
    let request = SignableRequest::new(
        "POST",
        url,
        [("content-type", "application/json")].into_iter(),
        SignableBody::Bytes(body),
    )
    .expect("signable");
    let (instructions, _) = sign(request, &params).expect("signs").into_parts();
    instructions
        .headers()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// Posts `sent` with the signature of `signed` to ListFindings: (status, x-amzn-ErrorType, body).
async fn post_signed(
    fake: &FakeGuardDuty,
    signed: &[u8],
    sent: &[u8],
    creds: &Credentials,
) -> (u16, String, serde_json::Value) {
    let detector = fake.detector_id("eu-west-1").expect("detector");
    let url = format!("{}/detector/{detector}/findings", fake.endpoint());
    let mut req = reqwest::Client::new()
        .post(&url)
        .header("content-type", "application/json")
        .body(sent.to_vec());
    for (k, v) in signed_headers(&url, signed, creds) {
        req = req.header(k, v);
    }
    let resp = req.send().await.expect("fake answers");
    let status = resp.status().as_u16();
    let kind = resp
        .headers()
        .get("x-amzn-errortype")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let text = resp.text().await.expect("answer body");
    let body = serde_json::from_str(&text).expect("JSON answer");
    (status, kind, body)
}

#[tokio::test]
async fn a_body_changed_after_signing_is_refused_with_guardduty_s_error_shape() {
    let (fake, _) = fake_with(3, 1, "tampered").await;
    let creds = Credentials::from_keys(TEST_ACCESS_KEY_ID, TEST_SECRET_ACCESS_KEY, None);
    let body = br#"{"maxResults":50}"#;

    let (status, kind, answer) = post_signed(&fake, body, body, &creds).await;
    assert_eq!((status, kind.as_str()), (200, ""), "{answer}");
    assert!(answer["findingIds"].is_array(), "{answer}");

    let (status, kind, answer) = post_signed(&fake, body, br#"{"maxResults":5}"#, &creds).await;
    assert_eq!(status, 403, "{answer}");
    assert_eq!(kind, "InvalidSignatureException");
    assert_eq!(answer["__type"], "InvalidSignatureException");
    assert!(
        answer["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("The request signature we calculated does not match")),
        "{answer}"
    );
}

#[tokio::test]
async fn an_unsigned_request_is_refused() {
    let (fake, _) = fake_with(1, 1, "unsigned").await;
    let resp = reqwest::get(format!("{}/detector", fake.endpoint()))
        .await
        .expect("fake answers");
    assert_eq!(resp.status().as_u16(), 403);
    assert_eq!(
        resp.headers()
            .get("x-amzn-errortype")
            .and_then(|v| v.to_str().ok()),
        Some("MissingAuthenticationTokenException")
    );
}
