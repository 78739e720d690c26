//! Gathering through in-memory ports and a real SQLite store: GuardDuty's findings are asked for
//! only where nothing was sent, a refusal in one region does not stop the others, nested stacks
//! are read, and no more than `concurrency` calls of a kind run at once.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use gdfwd_core::store::{ClaimRequest, Delivery, StateStore, VersionKey};
use gdfwd_doctor::collect::forwarder_table;
use gdfwd_doctor::{
    AdminAccount, AwsInspector, Detector, GuardDutyAdmin, Member, Obs, ObserveError, OrgAccount,
    Ports, QueueState, Rule, Scope, Stack, StackInstance, StackResource, collect, diagnose,
};
use gdfwd_model::{FindingMeta, Timestamp};

const ADMIN: &str = "111111111111";
const MEMBER: &str = "222222222222";
const REGIONS: [&str; 4] = ["eu-west-1", "eu-west-2", "us-east-1", "us-west-2"];
const HOME: &str = "us-east-1";

/// Counts calls in flight to check the bound.
#[derive(Debug, Default)]
struct InFlight {
    now: AtomicUsize,
    max: AtomicUsize,
}

impl InFlight {
    async fn during<T>(&self, f: impl std::future::Future<Output = T>) -> T {
        let n = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.max.fetch_max(n, Ordering::SeqCst);
        // Long enough for the other calls of the batch to start if nothing bounded them.
        tokio::time::sleep(Duration::from_millis(20)).await;
        let out = f.await;
        self.now.fetch_sub(1, Ordering::SeqCst);
        out
    }
}

#[derive(Debug, Default)]
struct FakeGd {
    in_flight: InFlight,
    findings_asked: Mutex<Vec<(String, String)>>,
}

#[async_trait]
impl GuardDutyAdmin for FakeGd {
    async fn admin_accounts(&self, region: &str) -> Obs<Vec<AdminAccount>> {
        if region == "eu-west-2" {
            return Err(ObserveError::Denied {
                permission: "guardduty:ListOrganizationAdminAccounts".to_owned(),
                message: "AccessDeniedException".to_owned(),
            });
        }
        Ok(vec![AdminAccount {
            account_id: ADMIN.to_owned(),
            status: "ENABLED".to_owned(),
        }])
    }
    async fn detector(&self, _: &str) -> Obs<Option<Detector>> {
        self.in_flight
            .during(async {
                Ok(Some(Detector {
                    id: "d".to_owned(),
                    enabled: true,
                }))
            })
            .await
    }
    async fn auto_enable(&self, _: &str, _: &str) -> Obs<Option<String>> {
        Ok(Some("ALL".to_owned()))
    }
    async fn members(&self, _: &str, _: &str) -> Obs<Vec<Member>> {
        Ok(vec![Member {
            account_id: MEMBER.to_owned(),
            relationship: "Enabled".to_owned(),
        }])
    }
    async fn findings_of(&self, region: &str, _: &str, account: &str, _: Timestamp) -> Obs<u64> {
        if let Ok(mut asked) = self.findings_asked.lock() {
            asked.push((account.to_owned(), region.to_owned()));
        }
        Ok(0)
    }
}

fn resource(logical: &str, ty: &str, physical: &str) -> StackResource {
    StackResource {
        logical_id: logical.to_owned(),
        resource_type: ty.to_owned(),
        physical_id: Some(physical.to_owned()),
        status: "CREATE_COMPLETE".to_owned(),
    }
}

#[derive(Debug, Default)]
struct FakeAws {
    rules_described: Mutex<Vec<String>>,
    ages_asked: Mutex<Vec<String>>,
}

#[async_trait]
impl AwsInspector for FakeAws {
    async fn organization_accounts(&self) -> Obs<Vec<OrgAccount>> {
        Ok([ADMIN, MEMBER]
            .iter()
            .map(|id| OrgAccount {
                id: (*id).to_owned(),
                name: None,
                email: None,
                status: "ACTIVE".to_owned(),
            })
            .collect())
    }
    async fn stack(&self, _: &str, name: &str) -> Obs<Option<Stack>> {
        // The outer stack holds the forwarder as a nested stack.
        let resources = if name == "arn:nested" {
            vec![
                resource("FindingsRule", "AWS::Events::Rule", "fwd-rule"),
                resource("FindingsQueue", "AWS::SQS::Queue", "https://q"),
                resource("DeadLetterQueue", "AWS::SQS::Queue", "https://dlq"),
                resource("ForwarderFunction", "AWS::Lambda::Function", "fn"),
                resource("DedupTable", "AWS::DynamoDB::Table", "gdfwd-dedup-abc123"),
            ]
        } else {
            vec![resource(
                "Forwarder",
                "AWS::CloudFormation::Stack",
                "arn:nested",
            )]
        };
        Ok(Some(Stack {
            status: "CREATE_COMPLETE".to_owned(),
            resources,
        }))
    }
    async fn rule(&self, _: &str, bus: &str, name: &str) -> Obs<Option<Rule>> {
        if let Ok(mut d) = self.rules_described.lock() {
            d.push(name.to_owned());
        }
        Ok(Some(Rule {
            name: name.to_owned(),
            bus: bus.to_owned(),
            enabled: true,
            target_arns: vec![format!("arn:aws:events:{HOME}:{ADMIN}:event-bus/default")],
        }))
    }
    async fn queue(&self, _: &str, queue: &str) -> Obs<Option<QueueState>> {
        // The forwarder's DLQ holds a message; the others are empty.
        let visible = u64::from(queue == "https://dlq");
        Ok(Some(QueueState {
            url: queue.to_owned(),
            arn: None,
            visible,
            in_flight: 0,
            oldest_age: None,
        }))
    }
    async fn oldest_message_age(&self, _: &str, queue_name: &str) -> Obs<Option<u64>> {
        if let Ok(mut asked) = self.ages_asked.lock() {
            asked.push(queue_name.to_owned());
        }
        Ok(Some(3_600))
    }
    async fn stack_instances(&self, _: &str, _: &str) -> Obs<Option<Vec<StackInstance>>> {
        Ok(None)
    }
}

async fn store_with_one_sent(dir: &std::path::Path) -> Arc<dyn StateStore> {
    let store = gdfwd_store_sqlite::SqliteStore::open(
        &dir.join("state.db"),
        Arc::new(gdfwd_core::SystemClock),
        Duration::from_secs(86_400),
    )
    .expect("sqlite");
    let key = VersionKey {
        finding_id: "f1".to_owned(),
        version: Timestamp::now(),
    };
    let req = ClaimRequest {
        key: key.clone(),
        meta: FindingMeta {
            account_id: MEMBER.to_owned(),
            region: "eu-west-1".to_owned(),
            finding_type: None,
            severity: None,
            title: None,
        },
    };
    let owner = store
        .claim(&req, Duration::from_secs(60))
        .await
        .expect("claim")
        .owner()
        .expect("a new claim");
    store
        .commit(&key, owner, &Delivery::default())
        .await
        .expect("commit");
    Arc::new(store)
}

#[tokio::test]
async fn gathers_everything_within_the_bound_and_asks_guardduty_only_where_nothing_was_sent() {
    let dir = tempfile::tempdir().expect("tempdir");
    let gd = Arc::new(FakeGd::default());
    let aws = Arc::new(FakeAws::default());
    let ports = Ports {
        guardduty: gd.clone(),
        aws: aws.clone(),
        store: Ok(store_with_one_sent(dir.path()).await),
        alias: None,
        endpoint: None,
    };
    let scope = Scope {
        own_account: Some(ADMIN.to_owned()),
        home_region: HOME.to_owned(),
        regions: REGIONS.iter().map(|r| (*r).to_owned()).collect(),
        stack_name: "gdfwd".to_owned(),
        relay_stack_set: "gdfwd-region-relay".to_owned(),
        since: Timestamp::from_millis(Timestamp::now().millis() - 86_400_000),
        concurrency: 2,
    };
    let ticks = Arc::new(AtomicUsize::new(0));
    let t = ticks.clone();
    let obs = collect(
        &scope,
        &ports,
        Arc::new(move |_, _| {
            t.fetch_add(1, Ordering::SeqCst);
        }),
    )
    .await;

    assert!(
        gd.in_flight.max.load(Ordering::SeqCst) <= 2,
        "more than --concurrency GuardDuty calls at once"
    );
    assert!(ticks.load(Ordering::SeqCst) > 0, "no progress reported");
    // Every region was read although one refused a call.
    assert_eq!(obs.guardduty.len(), REGIONS.len());
    // The nested stack's rule was found and described, besides the three relay rules.
    let described = aws.rules_described.lock().expect("lock").clone();
    assert!(described.contains(&"fwd-rule".to_owned()), "{described:?}");
    // Every (account, region) but the one with a sent finding is asked about.
    let mut asked = gd.findings_asked.lock().expect("lock").clone();
    asked.sort();
    let mut expected: Vec<(String, String)> = [ADMIN, MEMBER]
        .iter()
        .flat_map(|a| {
            REGIONS
                .iter()
                .map(move |r| ((*a).to_owned(), (*r).to_owned()))
        })
        .filter(|(a, r)| !(a == MEMBER && r == "eu-west-1"))
        .collect();
    expected.sort();
    assert_eq!(asked, expected);

    // CloudWatch is asked only about the queue that holds a message.
    assert_eq!(
        aws.ages_asked.lock().expect("lock").clone(),
        vec!["dlq".to_owned()]
    );

    // The denied admin list alone is proven by the organization configuration: the DLQ's
    // message is the one gap.
    let report = diagnose(&obs);
    let checks: Vec<&str> = report.gaps.iter().map(|g| g.check).collect();
    assert_eq!(checks, vec!["flow.dlq"], "{:#?}", report.checks);
    assert!(
        report.gaps[0].detail.contains("1 hours") || report.gaps[0].detail.contains("60 minutes"),
        "{:?}",
        report.gaps[0]
    );
    let flow: BTreeMap<_, _> = obs.flow.expect("flow");
    assert_eq!(flow[&(MEMBER.to_owned(), "eu-west-1".to_owned())].sent, 1);
}

#[tokio::test]
async fn the_forwarder_table_is_found_inside_a_nested_stack() {
    let aws = FakeAws::default();
    assert_eq!(
        forwarder_table(&aws, HOME, "gdfwd").await.as_deref(),
        Some("gdfwd-dedup-abc123")
    );
}
