//! One readable line for an AWS SDK error, shared by every adapter that calls AWS.
//!
//! The SDK's `Display` of an `SdkError` says only "service error", and `DisplayErrorContext`
//! appends the whole raw response (headers, body, extensions) in `Debug` form: neither belongs in
//! an error a security engineer reads. What they need is the service's error code and message
//! (`ResourceNotFoundException: ...`, `AccessDeniedException: ...`), or, when AWS never answered
//! (timeout, connection refused, DNS), the cause chain. A crate of its own so the store, the
//! sender's token source and enrichment say it the same way without depending on each other;
//! it depends only on `aws-smithy-types`, which every SDK crate already brings.

use aws_smithy_types::error::display::DisplayErrorContext;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;

/// `CODE: message` when AWS answered with an error, otherwise the error's cause chain.
pub fn describe<E>(e: &E) -> String
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    match (e.code(), e.message()) {
        (Some(code), Some(msg)) => format!("{code}: {msg}"),
        (Some(code), None) => code.to_owned(),
        _ => DisplayErrorContext(e).to_string(),
    }
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
