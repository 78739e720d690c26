//! SigV4 verification for the fake GuardDuty: every request must be signed with credentials the
//! fake was given, as the real service requires.
//!
//! The signature is recomputed with `aws-sigv4` (the crate the client signs with) from what
//! arrived: method, path and query, the headers the request says it signed (`SignedHeaders`), the
//! body's hash and `X-Amz-Date`, under the access key's secret and session token. Recomputing from
//! the received bytes, rather than re-signing a request built the client's way, is what catches a
//! client that signs one thing and sends another (a header changed after signing, a body
//! re-encoded, a session token left out).
//!
//! Refusals carry GuardDuty's status and error shape (REST JSON: `x-amzn-ErrorType` header and
//! `{"message", "__type"}` body), with the messages AWS front ends send:
//! - no or malformed `Authorization` → 403 `MissingAuthenticationTokenException` /
//!   `IncompleteSignatureException` (400);
//! - unknown access key, or a session token that is missing, wrong or not expected → 403
//!   `UnrecognizedClientException` "The security token included in the request is invalid.";
//! - signature mismatch → 403 `InvalidSignatureException` "The request signature we calculated
//!   does not match the signature you provided. ...";
//! - `X-Amz-Date` more than 15 minutes from now → 403 `InvalidSignatureException` "Signature
//!   expired: ...".

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::Response;

use crate::Shared;

/// The access key the fake accepts from its start (see [`crate::FakeGuardDuty::accept_credentials`]
/// for more, e.g. temporary ones).
pub const TEST_ACCESS_KEY_ID: &str = "AKIDTESTGDFWD";
/// The secret of [`TEST_ACCESS_KEY_ID`].
pub const TEST_SECRET_ACCESS_KEY: &str = "test-secret-key";

/// How far `X-Amz-Date` may be from the server's clock (AWS's SigV4 limit).
const MAX_SKEW: Duration = Duration::from_secs(15 * 60);

const BAD_SIGNATURE: &str = "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method. Consult the service documentation for details.";
const BAD_TOKEN: &str = "The security token included in the request is invalid.";

/// The credentials the fake accepts, by access key id.
#[derive(Debug, Default)]
pub(crate) struct Keyring(Mutex<HashMap<String, Credentials>>);

impl Keyring {
    pub(crate) fn with_test_key() -> Self {
        let ring = Self::default();
        ring.insert(TEST_ACCESS_KEY_ID, TEST_SECRET_ACCESS_KEY, None);
        ring
    }

    pub(crate) fn insert(&self, access_key_id: &str, secret: &str, session_token: Option<&str>) {
        let creds = Credentials::new(
            access_key_id,
            secret,
            session_token.map(str::to_owned),
            None,
            "fake-guardduty",
        );
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(access_key_id.to_owned(), creds);
    }

    fn get(&self, access_key_id: &str) -> Option<Credentials> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(access_key_id)
            .cloned()
    }
}

/// The middleware's state: the credentials to check against, and the fake's counters.
pub(crate) type VerifyState = (Arc<Shared>, Arc<Keyring>);

/// Refuses a request whose signature does not verify; passes the rest on unchanged.
pub(crate) async fn verify(
    State((shared, keys)): State<VerifyState>,
    req: Request,
    next: Next,
) -> Response {
    let (parts, body) = req.into_parts();
    let body = match axum::body::to_bytes(body, usize::MAX).await {
        Ok(b) => b,
        Err(e) => {
            return refuse(
                &shared,
                StatusCode::BAD_REQUEST,
                "SerializationException",
                &format!("reading the body: {e}"),
            );
        }
    };
    let path_and_query = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    if let Err((status, kind, message)) = check(
        &keys,
        parts.method.as_str(),
        &path_and_query,
        &parts.headers,
        &body,
    ) {
        return refuse(&shared, status, kind, &message);
    }
    next.run(Request::from_parts(parts, axum::body::Body::from(body)))
        .await
}

fn refuse(shared: &Shared, status: StatusCode, kind: &str, message: &str) -> Response {
    shared.lock().counters.rejected += 1;
    crate::error(status, kind, message)
}

type Refusal = (StatusCode, &'static str, String);

fn forbidden(kind: &'static str, message: impl Into<String>) -> Refusal {
    (StatusCode::FORBIDDEN, kind, message.into())
}

/// The parts of `Authorization: AWS4-HMAC-SHA256 Credential=…, SignedHeaders=…, Signature=…`.
#[derive(Debug)]
struct Authorization<'a> {
    access_key_id: &'a str,
    date: &'a str,
    region: &'a str,
    service: &'a str,
    signed_headers: Vec<&'a str>,
    signature: &'a str,
}

fn parse_authorization(value: &str) -> Result<Authorization<'_>, Refusal> {
    let incomplete = |what: &str| {
        (
            StatusCode::BAD_REQUEST,
            "IncompleteSignatureException",
            format!("Authorization header requires {what}. Authorization={value}"),
        )
    };
    let rest = value
        .strip_prefix("AWS4-HMAC-SHA256 ")
        .ok_or_else(|| incomplete("the AWS4-HMAC-SHA256 algorithm"))?;
    let mut fields: HashMap<&str, &str> = HashMap::new();
    for part in rest.split(',') {
        if let Some((k, v)) = part.trim().split_once('=') {
            fields.insert(k, v);
        }
    }
    let credential = fields
        .get("Credential")
        .ok_or_else(|| incomplete("'Credential' parameter"))?;
    let signed = fields
        .get("SignedHeaders")
        .ok_or_else(|| incomplete("'SignedHeaders' parameter"))?;
    let signature = fields
        .get("Signature")
        .ok_or_else(|| incomplete("'Signature' parameter"))?;
    match credential.split('/').collect::<Vec<_>>().as_slice() {
        [akid, date, region, service, "aws4_request"] => Ok(Authorization {
            access_key_id: akid,
            date,
            region,
            service,
            signed_headers: signed.split(';').collect(),
            signature,
        }),
        _ => Err(incomplete(
            "a Credential of the form KEY/DATE/REGION/SERVICE/aws4_request",
        )),
    }
}

fn header<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// `20250101T120000Z` → the instant.
fn parse_amz_date(s: &str) -> Option<SystemTime> {
    let t = chrono::NaiveDateTime::parse_from_str(s, "%Y%m%dT%H%M%SZ").ok()?;
    let secs = u64::try_from(t.and_utc().timestamp()).ok()?;
    Some(SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
}

fn check(
    keys: &Keyring,
    method: &str,
    path_and_query: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(), Refusal> {
    let Some(auth_value) = header(headers, "authorization") else {
        return Err(forbidden(
            "MissingAuthenticationTokenException",
            "Missing Authentication Token",
        ));
    };
    let auth = parse_authorization(auth_value)?;
    let creds = keys
        .get(auth.access_key_id)
        .ok_or_else(|| forbidden("UnrecognizedClientException", BAD_TOKEN))?;
    if header(headers, "x-amz-security-token") != creds.session_token() {
        return Err(forbidden("UnrecognizedClientException", BAD_TOKEN));
    }
    let amz_date = header(headers, "x-amz-date").unwrap_or_default();
    let Some(time) = parse_amz_date(amz_date) else {
        return Err((
            StatusCode::BAD_REQUEST,
            "IncompleteSignatureException",
            format!(
                "Authorization header requires existence of a valid X-Amz-Date header, got {amz_date:?}"
            ),
        ));
    };
    let now = SystemTime::now();
    let skew = now.duration_since(time).unwrap_or_else(|e| e.duration());
    if skew > MAX_SKEW {
        return Err(forbidden(
            "InvalidSignatureException",
            format!(
                "Signature expired: {amz_date} is now earlier or later than the server's time by more than 15 min."
            ),
        ));
    }
    if !amz_date.starts_with(auth.date) {
        return Err(forbidden(
            "InvalidSignatureException",
            format!(
                "Credential should be scoped to a valid date: {}, got {}",
                &amz_date[..8.min(amz_date.len())],
                auth.date
            ),
        ));
    }
    let expected =
        recompute(&creds, &auth, method, path_and_query, headers, body, time).map_err(|e| {
            forbidden(
                "InvalidSignatureException",
                format!("{BAD_SIGNATURE} ({e})"),
            )
        })?;
    if expected != auth.signature {
        return Err(forbidden("InvalidSignatureException", BAD_SIGNATURE));
    }
    Ok(())
}

/// The signature `creds` give the request as received, over the headers it says it signed.
fn recompute(
    creds: &Credentials,
    auth: &Authorization<'_>,
    method: &str,
    path_and_query: &str,
    headers: &HeaderMap,
    body: &[u8],
    time: SystemTime,
) -> Result<String, String> {
    let host = header(headers, "host").ok_or("no Host header")?;
    // `aws-sigv4` adds the date and the session token itself (from the time and the identity).
    let mut signed = Vec::new();
    for name in &auth.signed_headers {
        if matches!(*name, "x-amz-date" | "x-amz-security-token") {
            continue;
        }
        let value =
            header(headers, name).ok_or_else(|| format!("signed header {name} is missing"))?;
        signed.push((*name, value));
    }
    let identity = creds.clone().into();
    let params = aws_sigv4::sign::v4::SigningParams::builder()
        .identity(&identity)
        .region(auth.region)
        .name(auth.service)
        .time(time)
        .settings(SigningSettings::default())
        .build()
        .map_err(|e| e.to_string())?
        .into();
    let url = format!("http://{host}{path_and_query}");
    let request = SignableRequest::new(method, &url, signed.into_iter(), SignableBody::Bytes(body))
        .map_err(|e| e.to_string())?;
    let (_, signature) = sign(request, &params)
        .map_err(|e| e.to_string())?
        .into_parts();
    Ok(signature)
}
