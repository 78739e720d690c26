//! Account context fields (`--account-field`) against moto Organizations, through the testkit's
//! counting `FaultProxy`: tags and OU paths of accounts in a small OU tree reach every event of
//! their findings, untagged accounts get nothing, only the lookups the configured sources need are
//! made, and a denied lookup forwards without the field (counted).
//!
//! Isolation without resetting moto: moto holds one organization per management account, so every
//! test creates its own (`moto::organization`, a random management account) with its own OUs.

mod common;

use std::sync::Arc;

use gdfwd_core::account_fields::AccountFields;
use gdfwd_core::enrich::{AccountLookup, AccountResolver, CachingResolver};
use gdfwd_core::model::{Format, Item, parse_document};
use gdfwd_core::pipeline::Pipeline;
use gdfwd_enrich_aws::{AwsAccountLookup, LookupOptions};
use gdfwd_testkit_moto::{self as moto, Fault, FaultProxy, Organization};
use serde_json::Value;

const TAGS: &str = "ListTagsForResource";
const PARENTS: &str = "ListParents";
const DESCRIBE_OU: &str = "DescribeOrganizationalUnit";

const FIELDS: &str = "dt.security_context=tag:dt-security-context,dt.cost.costcenter=tag:CostCenter,\
                      aws.organization.unit=ou";

/// An organization of three members: `prod` in Root/Workloads/Prod (both tags), `logs` in
/// Root/Workloads (only the security context), `sandbox` under the root, untagged.
struct Tree {
    org: Organization,
    prod: String,
    logs: String,
    sandbox: String,
}

async fn tree() -> Tree {
    let org = moto::organization(3).await;
    let root = org.root_id().await;
    let workloads = org.create_ou(&root, "Workloads").await;
    let prod_ou = org.create_ou(&workloads, "Prod").await;
    let [(prod, _), (logs, _), (sandbox, _)] = &org.members[..] else {
        panic!("three members")
    };
    org.move_account(prod, &root, &prod_ou).await;
    org.move_account(logs, &root, &workloads).await;
    org.tag_account(
        prod,
        &[("dt-security-context", "payments"), ("CostCenter", "cc-1")],
    )
    .await;
    org.tag_account(logs, &[("dt-security-context", "logging")])
        .await;
    Tree {
        prod: prod.clone(),
        logs: logs.clone(),
        sandbox: sandbox.clone(),
        org,
    }
}

fn fields(spec: &str) -> AccountFields {
    AccountFields::parse(&[spec]).expect("account fields")
}

/// The lookup as the management account, through `proxy`, with the context `fields` need; one
/// attempt per call so request counts are exact.
async fn lookup_via(
    proxy: &FaultProxy,
    org: &Organization,
    fields: &AccountFields,
) -> Arc<AwsAccountLookup> {
    let conf = moto::sdk_config_with_credentials(&proxy.endpoint(), org.credentials.clone()).await;
    Arc::new(AwsAccountLookup::new(
        &conf,
        LookupOptions {
            max_attempts: Some(1),
            context: fields.needs(),
            ..LookupOptions::default()
        },
    ))
}

fn resolver(lookup: Arc<AwsAccountLookup>, fields: &AccountFields) -> CachingResolver {
    common::resolver(lookup).with_account_fields(fields.clone())
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tags_and_ou_paths_resolve_per_account_once() {
    let t = tree().await;
    let f = fields(FIELDS);
    let proxy = FaultProxy::start_moto().await;
    let r = resolver(lookup_via(&proxy, &t.org, &f).await, &f);

    assert_eq!(
        r.resolve(&t.prod).await.fields,
        pairs(&[
            ("dt.security_context", "payments"),
            ("dt.cost.costcenter", "cc-1"),
            ("aws.organization.unit", "Root/Workloads/Prod"),
        ])
    );
    assert_eq!(
        r.resolve(&t.logs).await.fields,
        pairs(&[
            ("dt.security_context", "logging"),
            ("aws.organization.unit", "Root/Workloads"),
        ])
    );
    assert_eq!(
        r.resolve(&t.sandbox).await.fields,
        pairs(&[("aws.organization.unit", "Root")]),
        "untagged"
    );
    assert_eq!(r.stats().failures, 0);
    assert_eq!(proxy.count(TAGS), 3, "{:?}", proxy.counts());
    // prod: account → Prod → Workloads → Root; logs: → Workloads → Root; sandbox: → Root.
    assert_eq!(proxy.count(PARENTS), 6, "{:?}", proxy.counts());
    assert_eq!(proxy.count(DESCRIBE_OU), 3, "{:?}", proxy.counts());

    // Cached with the name: not one request more.
    let before = proxy.total();
    for id in [&t.prod, &t.logs, &t.sandbox] {
        assert!(!r.resolve(id).await.fields.is_empty());
    }
    assert_eq!(proxy.total(), before, "{:?}", proxy.counts());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_lookups_the_sources_need_are_made() {
    let t = tree().await;
    let proxy = FaultProxy::start_moto().await;

    let ou_only = fields("aws.organization.unit=ou,team.owner='secops'");
    let r = resolver(lookup_via(&proxy, &t.org, &ou_only).await, &ou_only);
    assert_eq!(
        r.resolve(&t.prod).await.fields,
        pairs(&[
            ("aws.organization.unit", "Root/Workloads/Prod"),
            ("team.owner", "secops")
        ])
    );
    assert_eq!(proxy.count(TAGS), 0, "no tag: source, no tags call");

    proxy.reset_counts();
    let none = AccountFields::default();
    let r = resolver(lookup_via(&proxy, &t.org, &none).await, &none);
    assert!(r.resolve(&t.logs).await.fields.is_empty());
    assert_eq!(proxy.count(TAGS), 0, "{:?}", proxy.counts());
    assert_eq!(proxy.count(PARENTS), 0, "{:?}", proxy.counts());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denied_tags_lookup_keeps_the_name_says_who_may_call_and_is_counted() {
    let t = tree().await;
    let f = fields(FIELDS);
    let proxy = FaultProxy::start_moto().await;
    proxy.fail_always(Fault::AccessDenied, Some(TAGS));
    let lookup = lookup_via(&proxy, &t.org, &f).await;

    let info = lookup
        .lookup(&t.prod)
        .await
        .expect("the name is still found");
    assert!(info.org_name.is_some(), "{info:?}");
    assert_eq!(info.ou_path.as_deref(), Some("Root/Workloads/Prod"));
    assert_eq!(info.tags, None);
    let why = info.context_errors.join("; ");
    assert!(why.contains("organizations:ListTagsForResource"), "{why}");
    assert!(why.contains("delegated administrator"), "{why}");

    let r = resolver(lookup, &f);
    let e = r.resolve(&t.prod).await;
    assert!(e.account_name.is_some());
    assert_eq!(
        e.fields,
        pairs(&[("aws.organization.unit", "Root/Workloads/Prod")])
    );
    assert_eq!(r.stats().failures, 1);
    // Negatively cached: the denied call is not repeated per finding.
    let calls = proxy.count(TAGS);
    for _ in 0..5 {
        r.resolve(&t.prod).await;
    }
    assert_eq!(proxy.count(TAGS), calls);
    assert_eq!(r.stats().failures, 1);
}

/// One S3 finding about two buckets (two events) for each account.
fn findings(accounts: &[&str]) -> Vec<gdfwd_core::model::Finding> {
    let text = accounts
        .iter()
        .enumerate()
        .map(|(i, account)| {
            format!(
                r#"{{"id":"f-{i}","accountId":"{account}","region":"eu-west-1","updatedAt":"2025-01-01T00:00:01Z","type":"Policy:S3/BucketPublicAccessGranted","severity":5,"resource":{{"resourceType":"S3Bucket","s3BucketDetails":[{{"name":"a"}},{{"name":"b"}}]}}}}"#
            )
        })
        .collect::<Vec<_>>()
        .join("\n");
    parse_document(&text)
        .into_iter()
        .map(|r| match r {
            Ok(Item::Finding(f)) => *f,
            other => panic!("not a finding: {other:?}"),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_of_a_tagged_account_carries_the_fields_in_both_formats() {
    let t = tree().await;
    let stranger = moto::random_account_id();
    let f = fields(FIELDS);
    let proxy = FaultProxy::start_moto().await;
    let lookup = lookup_via(&proxy, &t.org, &f).await;
    let input = findings(&[&t.prod, &t.sandbox, &stranger]);

    for format in [Format::Raw, Format::Semantic] {
        let r: Arc<dyn AccountResolver> = Arc::new(resolver(Arc::clone(&lookup), &f));
        let sink = Arc::new(common::RecordingSink::default());
        let pipeline = Pipeline::new(None, sink.clone(), format).with_resolver(Some(r.clone()));
        let report = pipeline.process(&input, None).await;
        assert_eq!(
            report.summary.forwarded, 3,
            "{format}: {:?}",
            report.summary
        );
        let sent: Vec<Value> = sink.bodies();
        assert_eq!(sent.len(), 6, "two events per finding");
        let account = |e: &Value| {
            e.get("account")
                .or_else(|| e.get("aws.account.id"))
                .and_then(Value::as_str)
                .expect("account id")
                .to_owned()
        };
        for e in &sent {
            let a = account(e);
            if a == t.prod {
                assert_eq!(e["dt.security_context"], "payments", "{format}: {e}");
                assert_eq!(e["dt.cost.costcenter"], "cc-1");
                assert_eq!(e["aws.organization.unit"], "Root/Workloads/Prod");
                assert!(e.get("aws.account.name").is_some());
            } else if a == t.sandbox {
                assert!(e.get("dt.security_context").is_none(), "untagged: {e}");
                assert_eq!(e["aws.organization.unit"], "Root");
            } else {
                assert_eq!(a, stranger);
                assert!(e.get("dt.security_context").is_none(), "{e}");
                assert!(e.get("aws.organization.unit").is_none(), "{e}");
            }
        }
        assert_eq!(
            r.stats().failures,
            1,
            "the stranger's lookup failed, counted"
        );
    }
}
