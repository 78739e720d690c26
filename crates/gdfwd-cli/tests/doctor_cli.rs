//! `gdfwd doctor` as a security engineer runs it, against moto (Organizations with 12 accounts,
//! the forwarder stack in CloudFormation, relay rules in EventBridge in two more regions, SQS,
//! DynamoDB, STS/IAM), through the counting `FaultProxy`, and the fake GuardDuty serving the
//! administrator's calls.
//!
//! One world per test: a fresh random account at moto is the management and GuardDuty
//! administrator account (moto holds one organization per account, so a fresh account keeps
//! tests from colliding), with 11 member accounts. The world starts healthy; the tests plant
//! gaps and assert that doctor names exactly those and nothing else.
//!
//! moto facts relied on: `sts:AssumeRole` never fails (the alias role "missing" is the proxy
//! refusing that account's AssumeRole, as the enrichment tests do); a CloudFormation stack with
//! queues, a rule, a role and an inline-code function is created without running anything.

use std::collections::BTreeSet;
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::Duration;

use aws_config::{Region, SdkConfig};
use gdfwd_core::store::{ClaimRequest, Delivery, StateStore, VersionKey};
use gdfwd_model::{FindingMeta, Timestamp};
use gdfwd_testkit_guardduty::FakeGuardDuty;
use gdfwd_testkit_guardduty::fixtures::{GenSpec, generate};
use gdfwd_testkit_moto::{self as moto, Credentials, Fault, FaultProxy};
use serde_json::{Value, json};

const HOME: &str = "us-east-1";
const EU: &str = "eu-west-1";
const AP: &str = "ap-southeast-2";
const REGIONS: [&str; 3] = [HOME, EU, AP];
const RELAY_RULE: &str = "gdfwd-region-relay-guardduty";

struct World {
    admin: String,
    creds: Credentials,
    conf: SdkConfig,
    /// The 11 member accounts.
    members: Vec<String>,
    stack: String,
    table: String,
    gd: FakeGuardDuty,
    proxy: FaultProxy,
}

fn regional<B>(conf: &SdkConfig, region: &str, f: impl FnOnce(&SdkConfig) -> B) -> B {
    let conf = conf
        .to_builder()
        .region(Region::new(region.to_owned()))
        .build();
    f(&conf)
}

fn stack_template(rule_name: &str) -> String {
    json!({
        "Resources": {
            "DeadLetterQueue": {"Type": "AWS::SQS::Queue"},
            "FindingsQueue": {
                "Type": "AWS::SQS::Queue",
                "Properties": {"RedrivePolicy": {
                    "deadLetterTargetArn": {"Fn::GetAtt": ["DeadLetterQueue", "Arn"]},
                    "maxReceiveCount": 10
                }}
            },
            "FindingsRule": {
                "Type": "AWS::Events::Rule",
                "Properties": {
                    "Name": rule_name,
                    "EventBusName": "default",
                    "State": "ENABLED",
                    "EventPattern": {"source": ["aws.guardduty"], "detail-type": ["GuardDuty Finding"]},
                    "Targets": [{"Id": "findings-queue", "Arn": {"Fn::GetAtt": ["FindingsQueue", "Arn"]}}]
                }
            },
            "ForwarderRole": {
                "Type": "AWS::IAM::Role",
                "Properties": {"AssumeRolePolicyDocument": {
                    "Version": "2012-10-17",
                    "Statement": [{"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}]
                }}
            },
            "ForwarderFunction": {
                "Type": "AWS::Lambda::Function",
                "Properties": {
                    "Runtime": "python3.12",
                    "Handler": "index.handler",
                    "Role": {"Fn::GetAtt": ["ForwarderRole", "Arn"]},
                    "Code": {"ZipFile": "def handler(event, context):\n    return None\n"}
                }
            }
        }
    })
    .to_string()
}

impl World {
    /// A healthy organization: every member Enabled in every region, relays enabled, queues
    /// empty, the store empty and GuardDuty without findings.
    async fn healthy() -> Self {
        let org = moto::organization(11).await;
        let (admin, creds, conf) = (org.management, org.credentials, org.config);
        let members: Vec<String> = org.members.into_iter().map(|(id, _)| id).collect();

        let gd = FakeGuardDuty::start().await.expect("fake GuardDuty");
        // doctor signs with the organization's (session) credentials; the fake checks them.
        gd.accept_credentials(
            creds.access_key_id(),
            creds.secret_access_key(),
            creds.session_token(),
        );
        for r in REGIONS {
            gd.set_admin(r, &admin);
            for m in &members {
                gd.set_member(r, m, "Enabled");
            }
        }

        let stack = moto::unique_name("gdfwd-doctor");
        let cfn = aws_sdk_cloudformation::Client::new(&conf);
        cfn.create_stack()
            .stack_name(&stack)
            .template_body(stack_template(&moto::unique_name("gdfwd-findings-rule")))
            .capabilities(aws_sdk_cloudformation::types::Capability::CapabilityIam)
            .send()
            .await
            .expect("CreateStack");

        let home_bus = format!("arn:aws:events:{HOME}:{admin}:event-bus/default");
        for r in [EU, AP] {
            let events = regional(&conf, r, aws_sdk_eventbridge::Client::new);
            events
                .put_rule()
                .name(RELAY_RULE)
                .event_pattern(
                    r#"{"source":["aws.guardduty"],"detail-type":["GuardDuty Finding"]}"#,
                )
                .state(aws_sdk_eventbridge::types::RuleState::Enabled)
                .send()
                .await
                .expect("PutRule");
            events
                .put_targets()
                .rule(RELAY_RULE)
                .targets(
                    aws_sdk_eventbridge::types::Target::builder()
                        .id("home-region-default-bus")
                        .arn(&home_bus)
                        .role_arn(format!("arn:aws:iam::{admin}:role/gdfwd-region-relay-{r}"))
                        .build()
                        .expect("target"),
                )
                .send()
                .await
                .expect("PutTargets");
            regional(&conf, r, aws_sdk_sqs::Client::new)
                .create_queue()
                .queue_name("gdfwd-region-relay-dlq")
                .send()
                .await
                .expect("CreateQueue relay DLQ");
        }

        let table = moto::unique_name("gdfwd-doctor");
        gdfwd_store_dynamodb::create_table(&gdfwd_store_dynamodb::client(&conf), &table)
            .await
            .expect("create the dedup table");

        World {
            admin,
            creds,
            conf,
            members,
            stack,
            table,
            gd,
            proxy: FaultProxy::start_moto().await,
        }
    }

    fn store(&self) -> Arc<dyn StateStore> {
        Arc::new(gdfwd_store_dynamodb::DynamoStore::new(
            gdfwd_store_dynamodb::client(&self.conf),
            self.table.clone(),
            Arc::new(gdfwd_core::SystemClock),
            Duration::from_secs(90 * 86_400),
        ))
    }

    /// A finding of `account` in `region`, in GuardDuty, and (when `forwarded`) sent per the store.
    async fn finding(&self, account: &str, region: &str, forwarded: bool) {
        let mut spec = GenSpec::new(
            1,
            &[region],
            vec![account.to_owned()],
            Timestamp::from_millis(Timestamp::now().millis() - 3_600_000),
        );
        spec.seed = moto::unique_name("doctor");
        let findings = generate(&spec);
        let f = findings.first().expect("one finding").clone();
        self.gd.put_findings(findings).expect("put findings");
        if !forwarded {
            return;
        }
        let key = VersionKey {
            finding_id: f["id"].as_str().expect("id").to_owned(),
            version: Timestamp::from_json(&f["updatedAt"]).expect("updatedAt"),
        };
        let req = ClaimRequest {
            key: key.clone(),
            meta: FindingMeta {
                account_id: account.to_owned(),
                region: region.to_owned(),
                finding_type: None,
                severity: None,
                title: None,
            },
        };
        let store = self.store();
        let owner = store
            .claim(&req, Duration::from_secs(300))
            .await
            .expect("claim")
            .owner()
            .expect("a new claim");
        store
            .commit(&key, owner, &Delivery::default())
            .await
            .expect("commit");
    }

    /// Runs `gdfwd doctor --output json` as the admin account, AWS through the proxy.
    async fn doctor(&self) -> (Option<i32>, Value, String) {
        let (code, stdout, stderr) = self.doctor_with("json", &[], &[]).await;
        let json: Value = serde_json::from_str(&stdout)
            .unwrap_or_else(|e| panic!("doctor's stdout is not JSON ({e}); stderr: {stderr}"));
        (code, json, stderr)
    }

    /// Runs `gdfwd doctor --output OUTPUT` with more arguments and environment: exit status,
    /// stdout, stderr.
    async fn doctor_with(
        &self,
        output: &str,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> (Option<i32>, String, String) {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_gdfwd"));
        cmd.args([
            "doctor",
            "--regions",
            &REGIONS.join(","),
            "--home-region",
            HOME,
            "--stack",
            &self.stack,
            "--table",
            &self.table,
            "--since",
            "7d",
            "--output",
            output,
        ])
        .env("AWS_ENDPOINT_URL", self.proxy.endpoint())
        .env("AWS_ENDPOINT_URL_GUARDDUTY", self.gd.endpoint())
        .env("AWS_ACCESS_KEY_ID", self.creds.access_key_id())
        .env("AWS_SECRET_ACCESS_KEY", self.creds.secret_access_key())
        .env(
            "AWS_SESSION_TOKEN",
            self.creds.session_token().unwrap_or_default(),
        )
        .env("AWS_REGION", HOME)
        // One attempt per call: the injected refusals are not retried into slowness.
        .env("AWS_MAX_ATTEMPTS", "2")
        .env_remove("AWS_PROFILE")
        .env_remove("GDFWD_STORE")
        .env_remove("DT_API_TOKEN")
        .env_remove("AWS_SECRET_ARN")
        .env_remove("DYNATRACE_OPENPIPELINE_SECURITY_ENDPOINT")
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null());
        let out: Output = tokio::task::spawn_blocking(move || cmd.output().expect("run gdfwd"))
            .await
            .expect("join");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

/// The gaps as (check, account, region), to compare as a set.
fn gap_keys(report: &Value) -> BTreeSet<(String, Option<String>, Option<String>)> {
    report["gaps"]
        .as_array()
        .expect("gaps")
        .iter()
        .map(|g| {
            (
                g["check"].as_str().expect("check").to_owned(),
                g["account"].as_str().map(str::to_owned),
                g["region"].as_str().map(str::to_owned),
            )
        })
        .collect()
}

fn key(
    check: &str,
    account: Option<&str>,
    region: Option<&str>,
) -> (String, Option<String>, Option<String>) {
    (
        check.to_owned(),
        account.map(str::to_owned),
        region.map(str::to_owned),
    )
}

fn statuses(report: &Value, check: &str) -> BTreeSet<String> {
    report["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .filter(|c| c["check"] == check)
        .map(|c| c["status"].as_str().expect("status").to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_organization_passes_and_planted_gaps_are_named_exactly() {
    let w = World::healthy().await;
    // Forwarded findings are not gaps.
    w.finding(&w.members[4], EU, true).await;

    let (code, report, stderr) = w.doctor().await;
    assert_eq!(gap_keys(&report), BTreeSet::new(), "{report:#}\n{stderr}");
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(report["accounts"], 12, "{report:#}");
    assert_eq!(report["regions"], json!([AP, EU, HOME]));
    let keys: BTreeSet<&str> = report
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        BTreeSet::from(["accounts", "regions", "checks", "gaps"])
    );
    for check in [
        "guardduty.admin",
        "guardduty.members",
        "pipeline.stack",
        "pipeline.relay",
        "flow.dlq",
        "flow.forwarded",
        "enrichment.alias-role",
    ] {
        assert_eq!(
            statuses(&report, check),
            BTreeSet::from(["ok".to_owned()]),
            "{check}: {report:#}"
        );
    }

    // Plant one gap of each kind.
    let (not_member, disabled, no_role, silent) =
        (&w.members[0], &w.members[1], &w.members[2], &w.members[3]);
    w.gd.set_member(AP, disabled, "Disabled");
    w.gd.remove_member(EU, not_member);
    let eu = regional(&w.conf, EU, aws_sdk_eventbridge::Client::new);
    eu.remove_targets()
        .rule(RELAY_RULE)
        .ids("home-region-default-bus")
        .send()
        .await
        .expect("RemoveTargets");
    eu.delete_rule()
        .name(RELAY_RULE)
        .send()
        .await
        .expect("DeleteRule");
    regional(&w.conf, AP, aws_sdk_eventbridge::Client::new)
        .disable_rule()
        .name(RELAY_RULE)
        .send()
        .await
        .expect("DisableRule");
    let cfn = aws_sdk_cloudformation::Client::new(&w.conf);
    let resources = cfn
        .list_stack_resources()
        .stack_name(&w.stack)
        .send()
        .await
        .expect("ListStackResources");
    let dlq_url = resources
        .stack_resource_summaries()
        .iter()
        .find(|r| r.logical_resource_id() == Some("DeadLetterQueue"))
        .and_then(|r| r.physical_resource_id())
        .expect("the DLQ's URL")
        .to_owned();
    aws_sdk_sqs::Client::new(&w.conf)
        .send_message()
        .queue_url(&dlq_url)
        .message_body("{}")
        .send()
        .await
        .expect("SendMessage");
    w.proxy
        .fail_always_matching(Fault::AccessDenied, "sts.AssumeRole", no_role);
    w.finding(silent, HOME, false).await;

    let (code, report, stderr) = w.doctor().await;
    let expected = BTreeSet::from([
        key("guardduty.members", Some(not_member), Some(EU)),
        key("guardduty.members", Some(disabled), Some(AP)),
        key("pipeline.relay", None, Some(EU)),
        key("pipeline.relay", None, Some(AP)),
        key("flow.dlq", None, Some(HOME)),
        key("enrichment.alias-role", Some(no_role), None),
        key("flow.forwarded", Some(silent), Some(HOME)),
    ]);
    assert_eq!(gap_keys(&report), expected, "{report:#}\n{stderr}");
    assert_eq!(code, Some(1), "{stderr}");
    for g in report["gaps"].as_array().expect("gaps") {
        let fix = g["fix"].as_str().expect("fix");
        assert!(!fix.is_empty(), "{g}");
        assert!(
            !g["detail"].as_str().expect("detail").starts_with("unknown"),
            "{g}"
        );
    }
    let by_check = |check: &str, region: &str| {
        report["gaps"]
            .as_array()
            .expect("gaps")
            .iter()
            .find(|g| g["check"] == check && g["region"] == region)
            .cloned()
            .expect("gap")
    };
    let disabled_gap = by_check("guardduty.members", AP);
    assert!(
        disabled_gap["detail"]
            .as_str()
            .expect("detail")
            .contains("Disabled"),
        "{disabled_gap}"
    );
    assert!(
        disabled_gap["fix"]
            .as_str()
            .expect("fix")
            .contains("start-monitoring-members"),
        "{disabled_gap}"
    );
    assert!(
        by_check("pipeline.relay", AP)["fix"]
            .as_str()
            .expect("fix")
            .contains("enable-rule")
    );
    assert!(
        by_check("pipeline.relay", EU)["detail"]
            .as_str()
            .expect("detail")
            .contains("no relay rule")
    );
    assert!(
        by_check("flow.dlq", HOME)["detail"]
            .as_str()
            .expect("detail")
            .contains("1 message")
    );

    // The table: 80 columns (a line may only overrun when it is one unbreakable word, such as a
    // queue URL), healthy
    // accounts counted in one line, each account with gaps on its own.
    let (code, table, stderr) = w.doctor_with("table", &[], &[]).await;
    assert_eq!(code, Some(1), "{stderr}");
    eprintln!("{table}");
    for line in table.lines() {
        // A wrapped command's continuation ends in ` \`.
        let word = line.trim().trim_end_matches('\\').trim_end();
        assert!(
            line.chars().count() <= 80 || !word.contains(' '),
            "over 80 columns: {line:?}"
        );
    }
    assert!(
        table.contains("8 account(s) covered in every region checked"),
        "{table}"
    );
    for account in [not_member, disabled, no_role, silent] {
        assert!(table.contains(account.as_str()), "{account}: {table}");
    }
    assert!(table.contains("GAPS (7)"), "{table}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denied_permission_is_unknown_not_passed_and_the_other_checks_run() {
    let w = World::healthy().await;
    w.proxy
        .fail_always(Fault::AccessDenied, Some("AmazonSQS.GetQueueAttributes"));
    w.gd.deny("ListMembers");

    let (code, report, stderr) = w.doctor().await;
    assert_eq!(code, Some(1), "an unproven check is not a pass: {stderr}");
    let checks: BTreeSet<String> = gap_keys(&report).into_iter().map(|k| k.0).collect();
    assert_eq!(
        checks,
        BTreeSet::from(["flow.dlq".to_owned(), "guardduty.members".to_owned()]),
        "{report:#}"
    );
    for g in report["gaps"].as_array().expect("gaps") {
        assert!(
            g["detail"].as_str().expect("detail").starts_with("unknown"),
            "{g}"
        );
        assert!(g["fix"].as_str().expect("fix").starts_with("grant "), "{g}");
    }
    assert!(
        report["gaps"].to_string().contains("guardduty:ListMembers"),
        "{report:#}"
    );
    assert_eq!(
        statuses(&report, "flow.dlq"),
        BTreeSet::from(["unknown".to_owned()])
    );
    assert_eq!(
        statuses(&report, "guardduty.members"),
        BTreeSet::from(["unknown".to_owned()])
    );
    // The others still ran, and passed.
    for check in [
        "guardduty.admin",
        "guardduty.detector",
        "pipeline.stack",
        "pipeline.relay",
        "enrichment.alias-role",
        "flow.forwarded",
    ] {
        assert_eq!(
            statuses(&report, check),
            BTreeSet::from(["ok".to_owned()]),
            "{check}: {report:#}"
        );
    }
    assert!(w.proxy.faulted("GetQueueAttributes") > 0);
    let _ = &w.admin;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_endpoint_sends_one_empty_array_and_fails_on_a_refused_token() {
    const TOKEN: &str = "dt0c01.DOCTORTEST.0123456789abcdefSECRET";
    let w = World::healthy().await;
    let fake = gdfwd_testkit_openpipeline::FakeOpenPipeline::start(TOKEN)
        .await
        .expect("fake OpenPipeline");
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = fake.write_ca_file(dir.path()).expect("CA file");
    let ca = ca.to_str().expect("utf8");
    let endpoint = fake.endpoint();
    let args = ["--check-endpoint", "--endpoint", &endpoint, "--ca-file", ca];

    let (code, stdout, stderr) = w
        .doctor_with("json", &args, &[("DT_API_TOKEN", TOKEN)])
        .await;
    let report: Value = serde_json::from_str(&stdout).expect("json");
    assert_eq!(gap_keys(&report), BTreeSet::new(), "{report:#}\n{stderr}");
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(
        statuses(&report, "dynatrace.endpoint"),
        BTreeSet::from(["ok".to_owned()])
    );
    let counters = fake.counters();
    assert_eq!(counters.requests, 1, "{counters:?}");
    assert_eq!(counters.events, 0, "nothing is ingested: {counters:?}");

    let wrong = "dt0c01.WRONGTOKEN.0123456789abcdefSECRET";
    let (code, stdout, stderr) = w
        .doctor_with("json", &args, &[("DT_API_TOKEN", wrong)])
        .await;
    let report: Value = serde_json::from_str(&stdout).expect("json");
    assert_eq!(
        gap_keys(&report),
        BTreeSet::from([key("dynatrace.endpoint", None, None)]),
        "{report:#}"
    );
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        report["gaps"][0]["detail"]
            .as_str()
            .expect("detail")
            .contains("401"),
        "{report:#}"
    );
    for text in [&stdout, &stderr] {
        assert!(
            !text.contains("WRONGTOKEN") && !text.contains("DOCTORTEST"),
            "the token leaked: {text}"
        );
    }
    assert_eq!(fake.counters().events, 0);
}

#[test]
fn usage_errors_exit_2() {
    for args in [
        &["doctor", "--since", "last tuesday"][..],
        &["doctor", "--output", "yaml"][..],
        // A format doctor's report does not have: refused before any AWS call.
        &["doctor", "--output", "csv"][..],
        &["doctor", "--table", "t", "--store", "dynamodb:t"][..],
        // --check-endpoint without an endpoint, or without a token.
        &["doctor", "--check-endpoint"][..],
        &[
            "doctor",
            "--check-endpoint",
            "--endpoint",
            "https://example.invalid/x",
        ][..],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_gdfwd"))
            .args(args)
            .env("AWS_REGION", HOME)
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
            .env_remove("DT_API_TOKEN")
            .env_remove("AWS_SECRET_ARN")
            .env_remove("DYNATRACE_OPENPIPELINE_SECURITY_ENDPOINT")
            .stdin(Stdio::null())
            .output()
            .expect("run gdfwd");
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
