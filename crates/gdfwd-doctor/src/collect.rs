//! Gathering the [`Observations`] through the ports: every region (and every account's alias role)
//! at once, at most `concurrency` calls in flight per kind, each refusal kept as a value.
//!
//! Order matters in one place only: GuardDuty's finding lists are asked for just the (account,
//! region) pairs the store shows nothing forwarded for, so a healthy organization costs no
//! `ListFindings` call at all and a large one is not walked account by account.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::StreamExt;
use gdfwd_core::store::{ListQuery, StateStore};
use gdfwd_model::Timestamp;

use crate::observe::{
    AliasRoleProbe, AwsInspector, EndpointProbe, Flow, GuardDutyAdmin, GuardDutyRegion,
    HomePipeline, Obs, Observations, ObserveError, OrgAccount, QueueState, RelayRegion, Scope,
    Stack, StackInstance, StackResource,
};

/// The relay rule `stacksets/region-relay.yaml` creates in every non-home region.
pub const RELAY_RULE: &str = "gdfwd-region-relay-guardduty";
/// The relay's dead-letter queue.
pub const RELAY_DLQ: &str = "gdfwd-region-relay-dlq";
/// The relay StackSet's name in docs/deploy.md.
pub const RELAY_STACK_SET: &str = "gdfwd-region-relay";
/// The home-region bus relays put findings on (the organization template); relays of older
/// deployments put them on the home default bus, which is accepted too.
pub const RELAY_BUS: &str = "gdfwd-findings";

/// The adapters to observe through.
#[derive(Clone)]
pub struct Ports {
    pub guardduty: Arc<dyn GuardDutyAdmin>,
    pub aws: Arc<dyn AwsInspector>,
    /// The dedup store, or why it could not be opened (the flow checks are then `unknown`).
    pub store: Result<Arc<dyn StateStore>, ObserveError>,
    /// `None` when enrichment is off.
    pub alias: Option<Arc<dyn AliasRoleProbe>>,
    /// `None` without `--check-endpoint`.
    pub endpoint: Option<Arc<dyn EndpointProbe>>,
}

impl std::fmt::Debug for Ports {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ports")
            .field("store", &self.store.as_ref().map(|s| s.describe()).ok())
            .field("alias", &self.alias.is_some())
            .field("endpoint", &self.endpoint.is_some())
            .finish_non_exhaustive()
    }
}

/// Called after each finished step with (done, total), for a progress bar.
pub type Progress = Arc<dyn Fn(u64, u64) + Send + Sync>;

/// Observes everything in `scope`.
pub async fn collect(scope: &Scope, ports: &Ports, progress: Progress) -> Observations {
    let n = scope.concurrency.max(1);
    let others = scope.relay_regions();
    let accounts = ports.aws.organization_accounts().await;
    let account_ids = active_ids(&accounts);
    // One step per GuardDuty region, relay region, alias probe, and the home stack, the StackSet
    // instances and the store.
    let probes = ports.alias.as_ref().map_or(0, |_| account_ids.len());
    let total = (scope.regions.len() + others.len() + probes + 3) as u64;
    let tick = ticker(progress, total);

    let guardduty = each(scope.regions.clone(), n, &tick, |region| async move {
        guardduty_region(ports.guardduty.as_ref(), &region).await
    });
    let relays = each(others, n, &tick, |region| async move {
        relay_region(ports.aws.as_ref(), &region).await
    });
    let home = home_and_instances(ports.aws.as_ref(), scope, &tick);
    let flow = ticked(store_flow(ports, scope.since), &tick);
    let alias_roles = alias_roles(ports, &account_ids, n, &tick);
    let endpoint = async {
        let p = ports.endpoint.as_ref()?;
        Some((p.describe(), p.probe().await))
    };
    let (guardduty, relays, (home, relay_instances), flow, alias_roles, endpoint) =
        futures::join!(guardduty, relays, home, flow, alias_roles, endpoint);

    let findings = silent_findings(scope, ports, &account_ids, &guardduty, &flow).await;
    Observations {
        scope: scope.clone(),
        accounts,
        guardduty,
        home,
        relays,
        relay_instances,
        flow,
        findings,
        alias_roles,
        endpoint,
    }
}

/// The home region's stack and the relay StackSet's instances, both at once.
async fn home_and_instances(
    aws: &dyn AwsInspector,
    scope: &Scope,
    tick: &(dyn Fn() + Sync),
) -> (HomePipeline, Obs<Option<Vec<StackInstance>>>) {
    futures::join!(
        ticked(
            home_pipeline(aws, &scope.home_region, &scope.stack_name),
            tick
        ),
        ticked(
            aws.stack_instances(&scope.home_region, &scope.relay_stack_set),
            tick
        ),
    )
}

/// Counts finished steps, reporting (done, `total`) after each.
fn ticker(progress: Progress, total: u64) -> impl Fn() + Sync {
    let done = std::sync::atomic::AtomicU64::new(0);
    move || {
        let d = done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        progress(d, total);
    }
}

/// What the store shows forwarded since `since` (unknown when the store could not be opened).
async fn store_flow(ports: &Ports, since: Timestamp) -> Obs<BTreeMap<(String, String), Flow>> {
    match &ports.store {
        Ok(store) => flow(store.as_ref(), since).await,
        Err(e) => Err(e.clone()),
    }
}

/// Each account's alias role probe, `n` at a time; none when enrichment is off.
async fn alias_roles(
    ports: &Ports,
    account_ids: &[String],
    n: usize,
    tick: &(dyn Fn() + Sync),
) -> BTreeMap<String, Result<(), String>> {
    let Some(probe) = &ports.alias else {
        return BTreeMap::new();
    };
    let probe = probe.as_ref();
    each(account_ids.to_vec(), n, tick, |account| async move {
        probe.probe(&account).await
    })
    .await
}

impl Scope {
    /// The regions a relay should forward from: every one but home.
    fn relay_regions(&self) -> Vec<String> {
        let others = self.regions.iter().filter(|r| **r != self.home_region);
        others.cloned().collect()
    }
}

/// The ids of the organization's active accounts (none when they could not be listed).
fn active_ids(accounts: &Obs<Vec<OrgAccount>>) -> Vec<String> {
    accounts.as_ref().map_or_else(
        |_| Vec::new(),
        |list| {
            list.iter()
                .filter(|a| a.active())
                .map(|a| a.id.clone())
                .collect()
        },
    )
}

/// Awaits `step`, then ticks the progress.
async fn ticked<T>(step: impl Future<Output = T>, tick: &(dyn Fn() + Sync)) -> T {
    let out = step.await;
    tick();
    out
}

/// Runs `f` for every key, `n` at a time, ticking the progress after each: the answers by key.
async fn each<K, V, Fut>(
    keys: Vec<K>,
    n: usize,
    tick: &(dyn Fn() + Sync),
    f: impl Fn(K) -> Fut,
) -> BTreeMap<K, V>
where
    K: Ord + Clone,
    Fut: Future<Output = V>,
{
    futures::stream::iter(keys)
        .map(|key| {
            let answer = f(key.clone());
            async move {
                let v = answer.await;
                tick();
                (key, v)
            }
        })
        .buffer_unordered(n)
        .collect()
        .await
}

async fn guardduty_region(gd: &dyn GuardDutyAdmin, region: &str) -> GuardDutyRegion {
    let (admin_accounts, detector) = futures::join!(gd.admin_accounts(region), gd.detector(region));
    let (auto_enable, members) = match &detector {
        Ok(Some(d)) => {
            let (a, m) = futures::join!(gd.auto_enable(region, &d.id), gd.members(region, &d.id));
            (Some(a), Some(m))
        }
        _ => (None, None),
    };
    GuardDutyRegion {
        admin_accounts,
        detector,
        auto_enable,
        members,
    }
}

async fn relay_region(aws: &dyn AwsInspector, region: &str) -> RelayRegion {
    let (rule, dlq) = futures::join!(
        aws.rule(region, "default", RELAY_RULE),
        queue_with_age(aws, region, RELAY_DLQ)
    );
    RelayRegion { rule, dlq }
}

/// A queue's depth and, when it holds messages, the age of the oldest (an empty queue has none,
/// so CloudWatch is not asked).
async fn queue_with_age(
    aws: &dyn AwsInspector,
    region: &str,
    queue: &str,
) -> Obs<Option<QueueState>> {
    let mut state = aws.queue(region, queue).await;
    if let Ok(Some(q)) = &mut state
        && q.visible + q.in_flight > 0
    {
        let name = q.url.rsplit('/').next().unwrap_or(queue).to_owned();
        q.oldest_age = Some(aws.oldest_message_age(region, &name).await);
    }
    state
}

async fn home_pipeline(aws: &dyn AwsInspector, region: &str, stack_name: &str) -> HomePipeline {
    let mut stack = aws.stack(region, stack_name).await;
    if let Ok(Some(s)) = &mut stack {
        nested_resources(aws, region, s).await;
    }
    let mut rules = Vec::new();
    let mut queues = Vec::new();
    if let Ok(Some(s)) = &stack {
        for r in &s.resources {
            let Some(id) = r.physical_id.as_deref() else {
                continue;
            };
            match r.resource_type.as_str() {
                "AWS::Events::Rule" => {
                    // A rule on another bus has the physical id `bus|name`.
                    let (bus, name) = id.split_once('|').unwrap_or(("default", id));
                    rules.push((id.to_owned(), aws.rule(region, bus, name).await));
                }
                "AWS::SQS::Queue" => {
                    queues.push((r.logical_id.clone(), queue_with_age(aws, region, id).await));
                }
                _ => {}
            }
        }
    }
    HomePipeline {
        stack,
        rules,
        queues,
    }
}

/// The forwarder stack's dedup table (its `AWS::DynamoDB::Table`, nested stacks included), so
/// `gdfwd doctor` reads the deployed forwarder's store without being told its generated name.
/// `None` when the stack cannot be read or holds no table.
pub async fn forwarder_table(
    aws: &dyn AwsInspector,
    region: &str,
    stack_name: &str,
) -> Option<String> {
    let mut stack = aws.stack(region, stack_name).await.ok()??;
    nested_resources(aws, region, &mut stack).await;
    stack
        .resources
        .into_iter()
        .find(|r| r.resource_type == "AWS::DynamoDB::Table")
        .and_then(|r| r.physical_id)
}

/// Adds the resources of the stack's nested stacks (one level, as a template that holds the
/// forwarder as a nested stack has), their logical ids prefixed with the nested stack's. A nested
/// stack that cannot be read shows as a resource in a failed state.
async fn nested_resources(aws: &dyn AwsInspector, region: &str, stack: &mut Stack) {
    let nested: Vec<(String, String)> = stack
        .resources
        .iter()
        .filter(|r| r.resource_type == "AWS::CloudFormation::Stack")
        .filter_map(|r| Some((r.logical_id.clone(), r.physical_id.clone()?)))
        .collect();
    for (logical, id) in nested {
        match aws.stack(region, &id).await {
            Ok(Some(inner)) => {
                stack
                    .resources
                    .extend(inner.resources.into_iter().map(|r| StackResource {
                        logical_id: format!("{logical}/{}", r.logical_id),
                        ..r
                    }))
            }
            Ok(None) => stack.resources.push(StackResource {
                logical_id: logical,
                resource_type: "AWS::CloudFormation::Stack".to_owned(),
                physical_id: Some(id),
                status: "NOT_FOUND".to_owned(),
            }),
            Err(e) => stack.resources.push(StackResource {
                logical_id: logical,
                resource_type: "AWS::CloudFormation::Stack".to_owned(),
                physical_id: Some(id),
                status: format!("UNREADABLE ({e})"),
            }),
        }
    }
}

/// Per (account, region): versions sent and failed since `since`, and the newest version sent.
async fn flow(store: &dyn StateStore, since: Timestamp) -> Obs<BTreeMap<(String, String), Flow>> {
    let records = store
        .list(&ListQuery {
            since: Some(since),
            ..ListQuery::default()
        })
        .await
        .map_err(|e| ObserveError::Failed {
            operation: format!("listing {}", store.describe()),
            message: e.to_string(),
        })?;
    let mut out: BTreeMap<(String, String), Flow> = BTreeMap::new();
    for r in records {
        let f = out
            .entry((r.meta.account_id.clone(), r.meta.region.clone()))
            .or_default();
        f.sent += r.versions_sent;
        f.failed += r.failures;
        if r.versions_sent > 0 || r.status == gdfwd_core::store::Status::Sent {
            let v = r.latest_version;
            f.last_sent = Some(f.last_sent.map_or(v, |l| l.max(v)));
        }
    }
    Ok(out)
}

/// GuardDuty's findings for the (account, region) pairs with a detector and nothing sent.
async fn silent_findings(
    scope: &Scope,
    ports: &Ports,
    accounts: &[String],
    guardduty: &BTreeMap<String, GuardDutyRegion>,
    flow: &Obs<BTreeMap<(String, String), Flow>>,
) -> BTreeMap<(String, String), Obs<u64>> {
    let Ok(flow) = flow else {
        return BTreeMap::new();
    };
    let mut pairs = Vec::new();
    for (region, g) in guardduty {
        let Ok(Some(d)) = &g.detector else { continue };
        for a in accounts {
            let key = (a.clone(), region.clone());
            if flow.get(&key).is_none_or(|f| f.sent == 0) {
                pairs.push((key, d.id.clone()));
            }
        }
    }
    futures::stream::iter(pairs)
        .map(|((account, region), detector)| async move {
            let n = ports
                .guardduty
                .findings_of(&region, &detector, &account, scope.since)
                .await;
            ((account, region), n)
        })
        .buffer_unordered(scope.concurrency.max(1))
        .collect()
        .await
}
