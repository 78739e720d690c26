//! `--account-field` as a user runs it, against moto Organizations (a small OU tree with tagged
//! accounts) and the fake OpenPipeline: `forward` sends the fields on every event of a tagged
//! account and none on an untagged or unresolvable one, `accounts` shows them per account, and a
//! bad spec is a usage error naming the entry.

use std::path::Path;
use std::process::{Command, Output, Stdio};

use gdfwd_testkit_moto::{self as moto, Credentials, Organization};
use gdfwd_testkit_openpipeline::FakeOpenPipeline;
use serde_json::Value;

const FIELDS: &str = "dt.security_context=tag:dt-security-context,aws.organization.unit=ou";

/// `gdfwd` acting as the organization's management account at moto.
fn gdfwd(args: &[&str], creds: &Credentials) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_gdfwd"));
    cmd.args(args)
        .env("AWS_ENDPOINT_URL", moto::endpoint())
        .env("AWS_ACCESS_KEY_ID", creds.access_key_id())
        .env("AWS_SECRET_ACCESS_KEY", creds.secret_access_key())
        .env("AWS_REGION", moto::REGION)
        .env_remove("AWS_PROFILE")
        .env_remove("GDFWD_STORE")
        .env_remove("AWS_SECRET_ARN")
        .env_remove("ACCOUNT_FIELDS")
        .env_remove("DYNATRACE_OPENPIPELINE_SECURITY_ENDPOINT")
        .env("DT_API_TOKEN", "tok")
        .stdin(Stdio::null());
    match creds.session_token() {
        Some(t) => cmd.env("AWS_SESSION_TOKEN", t),
        None => cmd.env_remove("AWS_SESSION_TOKEN"),
    };
    cmd
}

fn run(cmd: &mut Command) -> Output {
    // The fake OpenPipeline answers on the runtime's other worker meanwhile.
    tokio::task::block_in_place(|| cmd.output().expect("run gdfwd"))
}

/// Two members: `tagged` in Root/Security (tagged), `plain` under the root, untagged.
async fn org() -> (Organization, String, String) {
    let org = moto::organization(2).await;
    let root = org.root_id().await;
    let security = org.create_ou(&root, "Security").await;
    let tagged = org.members[0].0.clone();
    let plain = org.members[1].0.clone();
    org.move_account(&tagged, &root, &security).await;
    org.tag_account(&tagged, &[("dt-security-context", "secops")])
        .await;
    (org, tagged, plain)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forward_sends_the_account_fields_and_accounts_shows_them() {
    let (org, tagged, plain) = org().await;
    let stranger = moto::random_account_id();
    let dir = tempfile::tempdir().expect("tempdir");
    let fake = FakeOpenPipeline::start("tok").await.expect("fake");
    let ca = fake.write_ca_file(dir.path()).expect("ca");
    let input = dir.path().join("findings.ndjson");
    let lines: Vec<String> = [&tagged, &plain, &stranger]
        .iter()
        .enumerate()
        .map(|(i, account)| {
            format!(
                r#"{{"id":"acct-field-{i}","accountId":"{account}","region":"eu-west-1","updatedAt":"2025-01-01T00:00:01Z","type":"Recon:EC2/Portscan","severity":5,"resource":{{"resourceType":"Instance","instanceDetails":{{"instanceId":"i-{i}"}}}}}}"#
            )
        })
        .collect();
    std::fs::write(&input, lines.join("\n")).expect("write findings");

    for format in ["raw", "semantic"] {
        let before = fake.events().len();
        let out = run(gdfwd(
            &[
                "forward",
                "--no-dedup",
                "--format",
                format,
                "--endpoint",
                &fake.endpoint(),
                "--ca-file",
                ca.to_str().expect("utf8"),
                "--account-field",
                "dt.security_context=tag:dt-security-context",
                "--account-field",
                "aws.organization.unit=ou",
                input.to_str().expect("utf8"),
            ],
            &org.credentials,
        )
        .env("ENRICH_TIMEOUT_MS", "30000"));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{format}: {stderr}");
        let events: Vec<Value> = fake.events()[before..]
            .iter()
            .map(|e| e.body.clone())
            .collect();
        assert_eq!(events.len(), 3, "{format}");
        let of = |account: &str| {
            events
                .iter()
                .find(|e| {
                    e.get("account").or_else(|| e.get("aws.account.id"))
                        == Some(&Value::from(account))
                })
                .unwrap_or_else(|| panic!("{format}: no event of {account}: {events:?}"))
                .clone()
        };
        let t = of(&tagged);
        assert_eq!(t["dt.security_context"], "secops", "{format}: {t}");
        assert_eq!(t["aws.organization.unit"], "Root/Security");
        let p = of(&plain);
        assert!(p.get("dt.security_context").is_none(), "{format}: {p}");
        assert_eq!(p["aws.organization.unit"], "Root");
        let s = of(&stranger);
        assert!(s.get("dt.security_context").is_none(), "{format}: {s}");
        assert!(s.get("aws.organization.unit").is_none(), "{format}: {s}");
    }

    // `accounts` shows the fields, one column each (ACCOUNT_FIELDS spelling).
    let out = run(gdfwd(
        &["accounts", "--output", "json", &tagged, &plain],
        &org.credentials,
    )
    .env("ACCOUNT_FIELDS", FIELDS)
    .env("ENRICH_TIMEOUT_MS", "30000"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: Value = serde_json::from_str(&stdout).expect("accounts json");
    assert_eq!(
        json[0]["fields"],
        serde_json::json!({"dt.security_context": "secops", "aws.organization.unit": "Root/Security"})
    );
    assert_eq!(
        json[1]["fields"],
        serde_json::json!({"aws.organization.unit": "Root"})
    );
    let out = run(gdfwd(
        &["accounts", "--output", "table", &tagged],
        &org.credentials,
    )
    .env("ACCOUNT_FIELDS", FIELDS)
    .env("ENRICH_TIMEOUT_MS", "30000"));
    let table = String::from_utf8_lossy(&out.stdout);
    let header = table.lines().next().expect("header");
    assert!(
        header.contains("dt.security_context") && header.contains("aws.organization.unit"),
        "{table}"
    );
    assert!(table.contains("Root/Security"), "{table}");
}

#[test]
fn a_bad_account_field_is_a_usage_error_naming_the_entry() {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join(
        "../../tests/fixtures/guardduty/real/aws-samples-auto-response__guardduty_ec2_event.json",
    );
    let out = gdfwd(
        &[
            "forward",
            "--dry-run",
            "--no-dedup",
            "--account-field",
            "dt.security_context=tag:ok,costcenter=tag:CostCenter",
            file.to_str().expect("utf8"),
        ],
        &moto::test_credentials(),
    )
    .output()
    .expect("run gdfwd");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("costcenter=tag:CostCenter"), "{stderr}");
    assert!(out.stdout.is_empty(), "nothing previewed");
}
