//! The AWS-facing commands as a user runs them, against moto: `store init` and `audit` on a
//! DynamoDB table, `forward` deduplicating through it (dry run and real sends to the fake
//! OpenPipeline), `accounts` resolving an alias, and a secret whose token is broken failing
//! `forward` before anything is claimed.

use std::path::Path;
use std::process::{Command, Output, Stdio};

use gdfwd_testkit_moto as moto;

/// `gdfwd` with AWS pointed at moto, acting as the account whose keys are given.
fn command(args: &[&str], keys: (&str, &str, Option<&str>)) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_gdfwd"));
    cmd.args(args)
        .env("AWS_ENDPOINT_URL", moto::endpoint())
        .env("AWS_ACCESS_KEY_ID", keys.0)
        .env("AWS_SECRET_ACCESS_KEY", keys.1)
        .env("AWS_REGION", moto::REGION)
        .env_remove("AWS_PROFILE")
        .env_remove("GDFWD_STORE")
        .env_remove("AWS_SECRET_ARN")
        .env_remove("DT_API_TOKEN")
        .env_remove("DYNATRACE_OPENPIPELINE_SECURITY_ENDPOINT")
        .stdin(Stdio::null());
    match keys.2 {
        Some(t) => cmd.env("AWS_SESSION_TOKEN", t),
        None => cmd.env_remove("AWS_SESSION_TOKEN"),
    };
    cmd
}

/// Runs [`command`].
fn gdfwd(args: &[&str], keys: (&str, &str, Option<&str>)) -> Output {
    command(args, keys).output().expect("run gdfwd")
}

const TEST_KEYS: (&str, &str, Option<&str>) = ("testing", "testing", None);

fn ok(out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(0), "stderr: {stderr}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn dynamodb_store_init_forward_and_audit() {
    let table = moto::unique_name("gdfwd-cli");
    let store = format!("dynamodb:{table}");
    let init = gdfwd(&["store", "init", "--store", &store], TEST_KEYS);
    ok(&init);
    assert!(
        String::from_utf8_lossy(&init.stderr).contains(&format!("created DynamoDB table {table}"))
    );
    let again = gdfwd(&["store", "init", "--store", &store], TEST_KEYS);
    ok(&again);
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));

    // A dry run through the table previews and claims nothing.
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join(
        "../../tests/fixtures/guardduty/real/aws-samples-auto-response__guardduty_ec2_event.json",
    );
    let file = file.to_str().expect("utf8");
    let preview = gdfwd(
        &["forward", "--dry-run", "--store", &store, file],
        TEST_KEYS,
    );
    assert_eq!(ok(&preview).lines().count(), 1);
    // A claim would leave a record (pending, since nothing was sent): there is none at all.
    let finding: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(file).expect("fixture")).expect("JSON");
    let id = finding["id"].as_str().expect("finding id");
    let show = gdfwd(&["audit", "show", id, "--store", &store], TEST_KEYS);
    assert_eq!(
        show.status.code(),
        Some(3),
        "the store does not know the finding: {}",
        String::from_utf8_lossy(&show.stdout)
    );
    assert_eq!(listed(&store, &[]), 0, "a dry run leaves no record");

    let missing = gdfwd(
        &["audit", "show", "no-such-finding", "--store", &store],
        TEST_KEYS,
    );
    assert_eq!(missing.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no-such-finding"));
}

/// Records `audit list` shows in the table behind `store`, with `filter` options.
fn listed(store: &str, filter: &[&str]) -> usize {
    let mut args = vec!["audit", "list", "--store", store, "--output", "json"];
    args.extend_from_slice(filter);
    let out: serde_json::Value =
        serde_json::from_str(&ok(&gdfwd(&args, TEST_KEYS))).expect("audit list JSON");
    out.as_array().map_or(0, Vec::len)
}

/// `forward` deduplicating through DynamoDB (as the Lambda does), to the fake OpenPipeline: every
/// event once, every finding recorded as sent, nothing pending, and a second run sends nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forward_through_dynamodb_sends_once_and_records_every_finding() {
    let table = moto::unique_name("gdfwd-cli-fwd");
    let store = format!("dynamodb:{table}");
    ok(&gdfwd(&["store", "init", "--store", &store], TEST_KEYS));
    let dir = tempfile::tempdir().expect("tempdir");
    let fake = gdfwd_testkit_openpipeline::FakeOpenPipeline::start("tok")
        .await
        .expect("fake");
    let ca = fake.write_ca_file(dir.path()).expect("ca");
    let file = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/guardduty/generated/raw-findings-40.ndjson");
    let args = [
        "forward",
        // The fixture holds archived findings (dropped by default); this test is about the store.
        "--archived",
        "include",
        "--store",
        store.as_str(),
        "--endpoint",
        &fake.endpoint(),
        "--ca-file",
        ca.to_str().expect("utf8"),
        "--no-enrich",
        file.to_str().expect("utf8"),
    ];
    let forward = |tag: &str| {
        // The fake answers on this runtime's other worker meanwhile.
        let out = tokio::task::block_in_place(|| {
            command(&args, TEST_KEYS)
                .env("DT_API_TOKEN", "tok")
                .output()
                .expect("run gdfwd")
        });
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(0), "{tag}: {stderr}");
        stderr
    };
    let first = forward("first run");
    let ids = fake.event_ids();
    let mut unique = ids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), ids.len(), "an event arrived twice");
    assert!(first.contains("forwarded 40"), "{first}");
    assert_eq!(listed(&store, &["--status", "sent"]), 40);
    assert_eq!(listed(&store, &["--status", "pending"]), 0);

    let second = forward("second run");
    assert!(second.contains("duplicates 40"), "{second}");
    assert_eq!(
        fake.event_ids().len(),
        ids.len(),
        "the second run sent nothing"
    );
}

#[test]
fn missing_table_is_a_clear_error() {
    let table = moto::unique_name("gdfwd-none");
    let out = gdfwd(
        &["audit", "list", "--store", &format!("dynamodb:{table}")],
        TEST_KEYS,
    );
    assert_ne!(out.status.code(), Some(0));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&table), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accounts_reads_the_own_accounts_alias() {
    // A fresh account of our own at moto, so no other test's alias interferes.
    let account = moto::random_account_id();
    let creds = moto::assume_account(&account, "cli-test").await;
    let conf = moto::sdk_config_with_credentials(&moto::endpoint(), creds.clone()).await;
    let alias = moto::unique_name("prod-payments").to_lowercase();
    aws_sdk_iam::Client::new(&conf)
        .create_account_alias()
        .account_alias(&alias)
        .send()
        .await
        .expect("CreateAccountAlias");

    let keys = (
        creds.access_key_id().to_owned(),
        creds.secret_access_key().to_owned(),
        creds.session_token().unwrap_or_default().to_owned(),
    );
    let out = tokio::task::spawn_blocking(move || {
        gdfwd(
            &["accounts", &account, "--output", "json"],
            (&keys.0, &keys.1, Some(&keys.2)),
        )
    })
    .await
    .expect("join");
    let json: serde_json::Value = serde_json::from_str(&ok(&out)).expect("json");
    assert_eq!(json[0]["name"], alias.as_str(), "{json}");
    assert_eq!(json[0]["alias"], alias.as_str(), "{json}");
}

/// A Secrets Manager secret whose token holds a line break: `forward` fails at once with exit 1,
/// naming the secret and the key but never the value, before anything is claimed or sent.
#[test]
fn a_secret_holding_a_broken_token_fails_forward_naming_it() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let arn = runtime.block_on(async {
        let sdk = moto::sdk_config().await;
        let secret = serde_json::json!({
            "DYNATRACE_OPENPIPELINE_INGEST_API_TOKEN": "dt0c01.BROKEN\nTOKENSECRETPART"
        });
        aws_sdk_secretsmanager::Client::new(&sdk)
            .create_secret()
            .name(moto::unique_name("dt-broken"))
            .secret_string(secret.to_string())
            .send()
            .await
            .expect("CreateSecret")
            .arn()
            .expect("ARN")
            .to_owned()
    });
    let dir = tempfile::tempdir().expect("tempdir");
    let store = format!("sqlite:{}", dir.path().join("state.db").display());
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join(
        "../../tests/fixtures/guardduty/real/aws-samples-auto-response__guardduty_ec2_event.json",
    );
    let out = gdfwd(
        &[
            "forward",
            "--endpoint",
            "https://127.0.0.1:9/platform/ingest/v1/security.events",
            "--token-secret-arn",
            &arn,
            "--no-enrich",
            "--store",
            &store,
            file.to_str().expect("utf8"),
        ],
        TEST_KEYS,
    );
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&arn)
            && err.contains("DYNATRACE_OPENPIPELINE_INGEST_API_TOKEN")
            && err.contains("line break"),
        "{err}"
    );
    assert!(!err.contains("TOKENSECRETPART"), "{err}");
    let listed = gdfwd(
        &["audit", "list", "--store", &store, "--output", "json"],
        TEST_KEYS,
    );
    assert_eq!(ok(&listed).trim(), "[]", "nothing claimed");
}
