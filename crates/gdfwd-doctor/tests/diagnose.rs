//! The checks on hand-built observations: a healthy organization has no gap, and each kind of
//! problem yields exactly its gap, with a fix, while unknowns are never passes.

use std::collections::BTreeMap;

use gdfwd_doctor::diagnose::names::*;
use gdfwd_doctor::observe::{GuardDutyRegion, HomePipeline, RelayRegion};
use gdfwd_doctor::{
    AdminAccount, Detector, EndpointAnswer, Flow, Member, Observations, ObserveError, OrgAccount,
    QueueState, Rule, Scope, Stack, StackInstance, StackResource, Status, diagnose,
};
use gdfwd_model::Timestamp;

const ADMIN: &str = "111111111111";
const HOME: &str = "us-east-1";
const OTHER: &str = "eu-west-1";

fn accounts() -> Vec<String> {
    vec![
        ADMIN.to_owned(),
        "222222222222".to_owned(),
        "333333333333".to_owned(),
    ]
}

fn denied(permission: &str) -> ObserveError {
    ObserveError::Denied {
        permission: permission.to_owned(),
        message: "AccessDeniedException: not authorized".to_owned(),
    }
}

fn gd_region() -> GuardDutyRegion {
    GuardDutyRegion {
        admin_accounts: Ok(vec![AdminAccount {
            account_id: ADMIN.to_owned(),
            status: "ENABLED".to_owned(),
        }]),
        detector: Ok(Some(Detector {
            id: "d1".to_owned(),
            enabled: true,
        })),
        auto_enable: Some(Ok(Some("ALL".to_owned()))),
        members: Some(Ok(accounts()
            .into_iter()
            .skip(1)
            .map(|a| Member {
                account_id: a,
                relationship: "Enabled".to_owned(),
            })
            .collect())),
    }
}

fn queue(url: &str, visible: u64) -> QueueState {
    QueueState {
        url: url.to_owned(),
        arn: Some(format!("arn:{url}")),
        visible,
        in_flight: 0,
        oldest_age: None,
    }
}

fn rule(name: &str, bus: &str, enabled: bool, target: &str) -> Rule {
    Rule {
        name: name.to_owned(),
        bus: bus.to_owned(),
        enabled,
        target_arns: vec![target.to_owned()],
    }
}

fn resource(logical: &str, ty: &str) -> StackResource {
    StackResource {
        logical_id: logical.to_owned(),
        resource_type: ty.to_owned(),
        physical_id: Some(logical.to_owned()),
        status: "CREATE_COMPLETE".to_owned(),
    }
}

fn healthy() -> Observations {
    let home_bus = format!("arn:aws:events:{HOME}:{ADMIN}:event-bus/default");
    Observations {
        scope: Scope {
            own_account: Some(ADMIN.to_owned()),
            home_region: HOME.to_owned(),
            regions: vec![OTHER.to_owned(), HOME.to_owned()],
            stack_name: "gdfwd".to_owned(),
            relay_stack_set: "gdfwd-region-relay".to_owned(),
            since: Timestamp::from_millis(1_700_000_000_000),
            concurrency: 1,
        },
        accounts: Ok(accounts()
            .into_iter()
            .map(|id| OrgAccount {
                id,
                name: None,
                email: None,
                status: "ACTIVE".to_owned(),
            })
            .collect()),
        guardduty: [
            (HOME.to_owned(), gd_region()),
            (OTHER.to_owned(), gd_region()),
        ]
        .into(),
        home: HomePipeline {
            stack: Ok(Some(Stack {
                status: "UPDATE_COMPLETE".to_owned(),
                resources: vec![
                    resource("FindingsRule", "AWS::Events::Rule"),
                    resource("FindingsQueue", "AWS::SQS::Queue"),
                    resource("DeadLetterQueue", "AWS::SQS::Queue"),
                    resource("ForwarderFunction", "AWS::Lambda::Function"),
                ],
            })),
            rules: vec![(
                "FindingsRule".to_owned(),
                Ok(Some(rule("FindingsRule", "default", true, "arn:queue"))),
            )],
            queues: vec![
                ("FindingsQueue".to_owned(), Ok(Some(queue("q", 3)))),
                ("DeadLetterQueue".to_owned(), Ok(Some(queue("dlq", 0)))),
            ],
        },
        relays: [(
            OTHER.to_owned(),
            RelayRegion {
                rule: Ok(Some(rule(
                    "gdfwd-region-relay-guardduty",
                    "default",
                    true,
                    &home_bus,
                ))),
                dlq: Ok(Some(queue("relay-dlq", 0))),
            },
        )]
        .into(),
        relay_instances: Ok(Some(vec![StackInstance {
            account: ADMIN.to_owned(),
            region: OTHER.to_owned(),
            status: "CURRENT".to_owned(),
            reason: None,
        }])),
        flow: Ok(BTreeMap::from([(
            ("222222222222".to_owned(), HOME.to_owned()),
            Flow {
                sent: 4,
                failed: 1,
                last_sent: Some(Timestamp::from_millis(1_700_000_100_000)),
            },
        )])),
        findings: BTreeMap::from([(("333333333333".to_owned(), OTHER.to_owned()), Ok(0))]),
        alias_roles: accounts().into_iter().map(|a| (a, Ok(()))).collect(),
        endpoint: None,
    }
}

/// (check, account, region) of every gap.
fn gaps(obs: &Observations) -> Vec<(&'static str, Option<String>, Option<String>)> {
    diagnose(obs)
        .gaps
        .into_iter()
        .map(|g| (g.check, g.account, g.region))
        .collect()
}

fn status_of(obs: &Observations, check: &str) -> Vec<Status> {
    diagnose(obs)
        .checks
        .into_iter()
        .filter(|c| c.check == check)
        .map(|c| c.status)
        .collect()
}

fn region(r: &str) -> Option<String> {
    Some(r.to_owned())
}

#[test]
fn a_healthy_organization_has_no_gap() {
    let report = diagnose(&healthy());
    assert_eq!(report.gaps, vec![], "{:#?}", report.checks);
    assert!(report.healthy());
    assert_eq!(report.accounts, 3);
    assert!(
        report
            .checks
            .iter()
            .all(|c| c.status == Status::Ok || c.check == ENDPOINT),
        "{:#?}",
        report.checks
    );
}

#[test]
fn admin_is_proven_by_the_organization_configuration_when_the_admin_list_is_refused() {
    let mut obs = healthy();
    for g in obs.guardduty.values_mut() {
        g.admin_accounts = Err(denied("guardduty:ListOrganizationAdminAccounts"));
    }
    assert_eq!(gaps(&obs), vec![]);
    // Not the administrator: DescribeOrganizationConfiguration said so.
    obs.guardduty.get_mut(HOME).expect("home").auto_enable = Some(Ok(None));
    assert_eq!(gaps(&obs), vec![(GD_ADMIN, None, region(HOME))]);
    // Both refused: unknown, never a pass.
    obs.guardduty.get_mut(HOME).expect("home").auto_enable =
        Some(Err(denied("guardduty:DescribeOrganizationConfiguration")));
    let report = diagnose(&obs);
    assert!(report.gaps.iter().all(|g| g.detail.starts_with("unknown")));
    assert!(status_of(&obs, GD_ADMIN).contains(&Status::Unknown));
}

#[test]
fn another_administrator_and_auto_enable_none_and_a_disabled_detector_are_gaps() {
    let mut obs = healthy();
    let g = obs.guardduty.get_mut(OTHER).expect("other");
    g.admin_accounts = Ok(vec![AdminAccount {
        account_id: "999999999999".to_owned(),
        status: "ENABLED".to_owned(),
    }]);
    g.auto_enable = Some(Ok(Some("NONE".to_owned())));
    g.detector = Ok(Some(Detector {
        id: "d1".to_owned(),
        enabled: false,
    }));
    assert_eq!(
        gaps(&obs),
        vec![
            (GD_ADMIN, None, region(OTHER)),
            (GD_DETECTOR, None, region(OTHER)),
            (GD_AUTO_ENABLE, None, region(OTHER)),
        ]
    );
    let fixes: Vec<String> = diagnose(&obs).gaps.into_iter().map(|g| g.fix).collect();
    assert!(fixes[0].contains("enable-organization-admin-account --admin-account-id 111111111111"));
    assert!(fixes[1].contains("update-detector --detector-id d1 --enable"));
    assert!(fixes[2].contains("--auto-enable-organization-members ALL"));
}

#[test]
fn members_missing_or_not_enabled_are_named_and_outsiders_only_listed() {
    let mut obs = healthy();
    let g = obs.guardduty.get_mut(HOME).expect("home");
    g.members = Some(Ok(vec![
        Member {
            account_id: "222222222222".to_owned(),
            relationship: "Removed".to_owned(),
        },
        Member {
            account_id: "444444444444".to_owned(),
            relationship: "Enabled".to_owned(),
        },
    ]));
    assert_eq!(
        gaps(&obs),
        vec![
            (GD_MEMBERS, Some("222222222222".to_owned()), region(HOME)),
            (GD_MEMBERS, Some("333333333333".to_owned()), region(HOME)),
        ]
    );
    let report = diagnose(&obs);
    let check = report
        .checks
        .iter()
        .find(|c| c.check == GD_MEMBERS && c.region.as_deref() == Some(HOME))
        .expect("members check");
    assert!(check.detail.contains("444444444444 (Enabled)"), "{check:?}");
    // A suspended account of the Organization is not expected to be a member.
    let mut obs = healthy();
    if let Ok(list) = &mut obs.accounts {
        list[2].status = "SUSPENDED".to_owned();
    }
    for g in obs.guardduty.values_mut() {
        if let Some(Ok(m)) = &mut g.members {
            m.retain(|m| m.account_id != "333333333333");
        }
    }
    assert_eq!(gaps(&obs), vec![]);
}

#[test]
fn relay_disabled_missing_or_pointing_elsewhere_are_gaps() {
    for (rule, fix) in [
        (
            Ok(Some(rule(
                "gdfwd-region-relay-guardduty",
                "default",
                false,
                &format!("arn:aws:events:{HOME}:{ADMIN}:event-bus/default"),
            ))),
            "enable-rule",
        ),
        (Ok(None), "create-stack-instances"),
        (
            Ok(Some(rule(
                "gdfwd-region-relay-guardduty",
                "default",
                true,
                &format!("arn:aws:events:ap-south-1:{ADMIN}:event-bus/default"),
            ))),
            "HomeRegion",
        ),
    ] {
        let mut obs = healthy();
        obs.relays.get_mut(OTHER).expect("relay").rule = rule;
        let report = diagnose(&obs);
        assert_eq!(report.gaps.len(), 1, "{:#?}", report.gaps);
        assert_eq!(report.gaps[0].check, RELAY);
        assert!(report.gaps[0].fix.contains(fix), "{:?}", report.gaps[0]);
    }
}

#[test]
fn relays_to_the_findings_bus_need_a_forwarder_rule_on_it() {
    let mut obs = healthy();
    obs.relays.get_mut(OTHER).expect("relay").rule = Ok(Some(rule(
        "gdfwd-region-relay-guardduty",
        "default",
        true,
        &format!("arn:aws:events:{HOME}:{ADMIN}:event-bus/gdfwd-findings"),
    )));
    assert_eq!(gaps(&obs), vec![(RULES, None, region(HOME))]);
    // The organization template's forwarder reads both buses.
    obs.home.rules.push((
        "gdfwd-findings|FindingsBusRule".to_owned(),
        Ok(Some(rule(
            "FindingsBusRule",
            "gdfwd-findings",
            true,
            "arn:queue",
        ))),
    ));
    assert_eq!(gaps(&obs), vec![]);
}

#[test]
fn stack_problems_dlq_messages_and_unsent_findings_are_gaps() {
    let mut obs = healthy();
    obs.home.stack = Ok(None);
    assert_eq!(gaps(&obs), vec![(STACK, None, region(HOME))]);

    let mut obs = healthy();
    obs.home.queues[1].1 = Ok(Some(queue("dlq", 2)));
    obs.relays.get_mut(OTHER).expect("relay").dlq = Ok(Some(queue("relay-dlq", 1)));
    assert_eq!(
        gaps(&obs),
        vec![(DLQ, None, region(HOME)), (DLQ, None, region(OTHER))]
    );

    let mut obs = healthy();
    obs.findings
        .insert(("333333333333".to_owned(), OTHER.to_owned()), Ok(3));
    assert_eq!(
        gaps(&obs),
        vec![(FORWARDED, Some("333333333333".to_owned()), region(OTHER))]
    );
}

#[test]
fn a_queue_whose_oldest_message_waits_too_long_is_a_gap() {
    let mut obs = healthy();
    let mut q = queue("q", 40);
    q.oldest_age = Some(Ok(Some(600)));
    obs.home.queues[0].1 = Ok(Some(q.clone()));
    assert_eq!(gaps(&obs), vec![]);
    q.oldest_age = Some(Ok(Some(3 * 3600)));
    obs.home.queues[0].1 = Ok(Some(q.clone()));
    assert_eq!(gaps(&obs), vec![(QUEUE, None, region(HOME))]);
    assert!(diagnose(&obs).gaps[0].detail.contains("3 hours"));
    // No datapoint yet is not a gap; CloudWatch refused is unknown.
    q.oldest_age = Some(Ok(None));
    obs.home.queues[0].1 = Ok(Some(q.clone()));
    assert_eq!(gaps(&obs), vec![]);
    q.oldest_age = Some(Err(denied("cloudwatch:GetMetricStatistics")));
    obs.home.queues[0].1 = Ok(Some(q));
    assert_eq!(status_of(&obs, QUEUE), vec![Status::Unknown]);
    // A DLQ's gap says how old its oldest message is.
    let mut obs = healthy();
    let mut dlq = queue("dlq", 1);
    dlq.oldest_age = Some(Ok(Some(9 * 86_400)));
    obs.home.queues[1].1 = Ok(Some(dlq));
    let report = diagnose(&obs);
    assert!(
        report.gaps[0].detail.contains("9 days"),
        "{:?}",
        report.gaps
    );
}

#[test]
fn refusals_are_unknown_with_the_permission_to_grant() {
    let mut obs = healthy();
    obs.flow = Err(denied("dynamodb:Query"));
    obs.relay_instances = Err(denied("cloudformation:ListStackInstances"));
    let report = diagnose(&obs);
    assert_eq!(report.gaps.len(), 2, "{:#?}", report.gaps);
    for g in &report.gaps {
        assert!(g.detail.starts_with("unknown"), "{g:?}");
        assert!(g.fix.starts_with("grant "), "{g:?}");
    }
    assert_eq!(status_of(&obs, FORWARDED), vec![Status::Unknown]);
    assert_eq!(status_of(&obs, RELAY_INSTANCES), vec![Status::Unknown]);
    // The Organization unknown: member checks cannot pass.
    let mut obs = healthy();
    obs.accounts = Err(denied("organizations:ListAccounts"));
    assert!(!diagnose(&obs).healthy());
    assert!(
        status_of(&obs, GD_MEMBERS)
            .iter()
            .all(|s| *s == Status::Unknown)
    );
}

#[test]
fn alias_role_and_endpoint_answers() {
    let mut obs = healthy();
    obs.alias_roles.insert(
        "333333333333".to_owned(),
        Err("sts:AssumeRole: AccessDenied".to_owned()),
    );
    assert_eq!(
        gaps(&obs),
        vec![(ALIAS_ROLE, Some("333333333333".to_owned()), None)]
    );

    for (answer, ok) in [
        (EndpointAnswer::Status(202), true),
        (EndpointAnswer::Status(400), true),
        (EndpointAnswer::Status(401), false),
        (EndpointAnswer::Status(403), false),
        (EndpointAnswer::Status(404), false),
        (EndpointAnswer::NoToken("no secret".to_owned()), false),
        (EndpointAnswer::Unreachable("refused".to_owned()), false),
    ] {
        let mut obs = healthy();
        obs.endpoint = Some(("POST [] to https://x".to_owned(), answer.clone()));
        assert_eq!(diagnose(&obs).healthy(), ok, "{answer:?}");
    }
}

#[test]
fn json_has_exactly_the_documented_keys() {
    let mut obs = healthy();
    obs.alias_roles
        .insert("333333333333".to_owned(), Err("denied".to_owned()));
    // The CLI prints the report as it serialises (gdfwd-cli/src/render/doctor.rs).
    let v = serde_json::to_value(diagnose(&obs)).expect("json");
    let keys: Vec<&str> = v
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys, ["accounts", "regions", "checks", "gaps"]);
    let gap = &v["gaps"][0];
    let keys: Vec<&str> = gap
        .as_object()
        .expect("gap")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys, ["account", "region", "check", "detail", "fix"]);
    assert_eq!(gap["region"], serde_json::Value::Null);
}
