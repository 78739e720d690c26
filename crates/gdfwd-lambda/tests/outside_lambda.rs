//! `bootstrap` started outside Lambda (no Runtime API variables) with a valid configuration: it
//! must fail at once, naming what is missing and what to use instead, not panic inside
//! `lambda_runtime` after building the AWS clients.

use std::process::Command;

#[test]
fn outside_lambda_init_fails_naming_the_missing_runtime_variables() {
    let out = Command::new(env!("CARGO_BIN_EXE_bootstrap"))
        .env_clear()
        .env(
            "DYNATRACE_OPENPIPELINE_SECURITY_ENDPOINT",
            "https://abc12345.live.dynatrace.com/platform/ingest/v1/security.events",
        )
        .env(
            "AWS_SECRET_ARN",
            "arn:aws:secretsmanager:eu-west-1:123456789012:secret:dt-token",
        )
        .env("DEDUP_TABLE_NAME", "gdfwd-dedup")
        .env("AWS_LAMBDA_FUNCTION_NAME", "gdfwd")
        .output()
        .expect("run bootstrap");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(err.contains("Runtime.ConfigError"), "{err}");
    assert!(err.contains("AWS_LAMBDA_RUNTIME_API"), "{err}");
    assert!(
        !err.contains("AWS_LAMBDA_FUNCTION_NAME,"),
        "a set variable is not named missing: {err}"
    );
    assert!(err.contains("gdfwd forward"), "{err}");
}
