//! One readable line for an AWS SDK error, shared by every adapter that calls AWS.
//!
//! The SDK's `Display` of an `SdkError` says only "service error", and `DisplayErrorContext`
//! appends the whole raw response (headers, body, extensions) in `Debug` form: neither belongs in
//! an error a security engineer reads, and the raw body of a `GetSecretValue` answer that failed
//! to parse would be the secret itself. What they need is the service's error code and message
//! (`ResourceNotFoundException: ...`, `AccessDeniedException: ...`), or, when AWS never answered
//! (timeout, connection refused, DNS), the `Display` of each cause, never a `Debug` form. A crate
//! of its own so the store, the sender's token source and enrichment say it the same way without
//! depending on each other; it depends only on `aws-smithy-types`, which every SDK crate brings.
//!
//! The same goes for the two other things every error line must get right: a URL in it never
//! shows its credentials or query values ([`redact_url`], [`redact_urls`]), and an HTTP error body
//! is read only as far as a message needs ([`read_capped`], with the `reqwest` feature).

#[cfg(feature = "reqwest")]
mod body;
mod redact;

#[cfg(feature = "reqwest")]
pub use body::{ERROR_BODY_CAP, read_capped};
pub use redact::{redact_url, redact_urls};

use aws_smithy_types::error::metadata::ProvideErrorMetadata;

/// `CODE: message` when AWS answered with an error, otherwise the error and its causes, each by
/// its `Display`.
pub fn describe<E>(e: &E) -> String
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    match (e.code(), e.message()) {
        (Some(code), Some(msg)) => format!("{code}: {msg}"),
        (Some(code), None) => code.to_owned(),
        _ => chain(e),
    }
}

/// Whether AWS answered with one of `codes` (for telling a refusal from an outage).
pub fn has_code<E: ProvideErrorMetadata>(e: &E, codes: &[&str]) -> bool {
    e.code().is_some_and(|c| codes.contains(&c))
}

/// An error and its causes on one line, each by its `Display` (never a `Debug` form). Any error,
/// not only AWS's: the HTTP sender uses it for reqwest's errors, whose top-level message alone
/// ("error sending request") does not say whether it was DNS, TLS or a reset. Any URL in the
/// line is redacted ([`redact_urls`]): reqwest quotes the request's URL, and an endpoint may
/// carry credentials or a token in its query.
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        // Wrappers often repeat their cause's text; say it once.
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cause = c.source();
    }
    redact_urls(&out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_smithy_types::error::ErrorMetadata;

    #[derive(Debug)]
    struct Failed {
        meta: ErrorMetadata,
        source: Option<std::io::Error>,
    }

    impl std::fmt::Display for Failed {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("service error")
        }
    }

    impl std::error::Error for Failed {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.source
                .as_ref()
                .map(|e| e as &(dyn std::error::Error + 'static))
        }
    }

    impl ProvideErrorMetadata for Failed {
        fn meta(&self) -> &ErrorMetadata {
            &self.meta
        }
    }

    #[test]
    fn an_answer_from_aws_is_its_code_and_message() {
        let e = Failed {
            meta: ErrorMetadata::builder()
                .code("ResourceNotFoundException")
                .message("Requested resource not found")
                .build(),
            source: None,
        };
        assert_eq!(
            describe(&e),
            "ResourceNotFoundException: Requested resource not found"
        );
        let e = Failed {
            meta: ErrorMetadata::builder().code("ThrottlingException").build(),
            source: None,
        };
        assert_eq!(describe(&e), "ThrottlingException");
    }

    /// An error whose `Debug` form carries what must never be printed (a raw response body).
    #[derive(Debug)]
    struct Unparsed {
        #[allow(dead_code)]
        raw_body: &'static str,
    }

    impl std::fmt::Display for Unparsed {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("failed to parse the response")
        }
    }

    impl std::error::Error for Unparsed {}

    #[derive(Debug)]
    struct Wrapper(Unparsed, ErrorMetadata);

    impl std::fmt::Display for Wrapper {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("response error")
        }
    }

    impl std::error::Error for Wrapper {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    impl ProvideErrorMetadata for Wrapper {
        fn meta(&self) -> &ErrorMetadata {
            &self.1
        }
    }

    #[test]
    fn a_cause_is_told_by_its_display_never_its_debug() {
        let e = Wrapper(
            Unparsed {
                raw_body: r#"{"SecretString":"dt0c01.SECRET"}"#,
            },
            ErrorMetadata::default(),
        );
        let d = describe(&e);
        assert_eq!(d, "response error: failed to parse the response");
        assert!(!d.contains("dt0c01"), "{d}");
    }

    #[test]
    fn codes_tell_refusals_from_outages() {
        let e = Failed {
            meta: ErrorMetadata::builder()
                .code("AccessDeniedException")
                .build(),
            source: None,
        };
        assert!(has_code(
            &e,
            &["ResourceNotFoundException", "AccessDeniedException"]
        ));
        assert!(!has_code(&e, &["ThrottlingException"]));
        let no_answer = Failed {
            meta: ErrorMetadata::default(),
            source: None,
        };
        assert!(!has_code(&no_answer, &["AccessDeniedException"]));
    }

    #[test]
    fn urls_in_the_chain_are_redacted() {
        let e = Failed {
            meta: ErrorMetadata::default(),
            source: Some(std::io::Error::other(
                "connecting to https://u:SECRETPW@h/x?token=SECRET failed",
            )),
        };
        let d = chain(&e);
        assert!(d.contains("https://***@h/x?token=***"), "{d}");
        assert!(!d.contains("SECRET"), "{d}");
    }

    #[test]
    fn no_answer_is_the_cause_chain() {
        let e = Failed {
            meta: ErrorMetadata::default(),
            source: Some(std::io::Error::new(
                std::io::ErrorKind::ConnectionRefused,
                "connection refused by 127.0.0.1:9",
            )),
        };
        let d = describe(&e);
        assert!(d.contains("service error"), "{d}");
        assert!(d.contains("connection refused by 127.0.0.1:9"), "{d}");
    }
}
