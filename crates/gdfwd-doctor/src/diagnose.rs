//! The checks: [`Observations`] in, named checks and gaps (each with the command or console step
//! that fixes it) out. Pure, so every verdict is unit-tested without AWS.
//!
//! A check that could not observe what it needs is `unknown` and also a gap whose fix is the
//! permission to grant: an unproven check is never reported as passed, and the exit status says
//! so (a doctor that exits 0 only because it could not look would be worse than none).

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::collect::{RELAY_BUS, RELAY_RULE};
use crate::observe::{
    EndpointAnswer, GuardDutyRegion, HomePipeline, Observations, ObserveError, OrgAccount,
    QueueState, Stack,
};

/// A check's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    /// Nothing to check (no detector to read members of, StackSet not visible, option off).
    Skipped,
    Unknown,
    Gap,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Skipped => "skipped",
            Self::Unknown => "unknown",
            Self::Gap => "gap",
        }
    }
}

/// One check in one region (or global).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    pub check: &'static str,
    pub region: Option<String>,
    pub status: Status,
    pub detail: String,
}

/// Something missing, and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Gap {
    pub account: Option<String>,
    pub region: Option<String>,
    pub check: &'static str,
    pub detail: String,
    pub fix: String,
}

/// The outcome of a doctor run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Active accounts of the Organization.
    pub accounts: usize,
    pub regions: Vec<String>,
    pub checks: Vec<Check>,
    pub gaps: Vec<Gap>,
    /// Not serialised: names for the table.
    #[serde(skip)]
    pub account_names: BTreeMap<String, String>,
    #[serde(skip)]
    pub home_region: String,
}

impl Report {
    /// Exit status: 0 nothing missing, 1 gaps (unknown checks included).
    pub fn healthy(&self) -> bool {
        self.gaps.is_empty()
    }
}

/// The check names, in report order.
pub mod names {
    pub const ORG_ACCOUNTS: &str = "organization.accounts";
    pub const GD_ADMIN: &str = "guardduty.admin";
    pub const GD_DETECTOR: &str = "guardduty.detector";
    pub const GD_AUTO_ENABLE: &str = "guardduty.auto-enable";
    pub const GD_MEMBERS: &str = "guardduty.members";
    pub const STACK: &str = "pipeline.stack";
    pub const RULES: &str = "pipeline.rules";
    pub const RELAY: &str = "pipeline.relay";
    pub const RELAY_INSTANCES: &str = "pipeline.relay-instances";
    pub const DLQ: &str = "flow.dlq";
    pub const QUEUE: &str = "flow.queue";
    pub const FORWARDED: &str = "flow.forwarded";
    pub const ALIAS_ROLE: &str = "enrichment.alias-role";
    pub const ENDPOINT: &str = "dynatrace.endpoint";
}
use names::*;

/// Collects checks and gaps; a check's status is the worst of what was recorded for it.
struct Diag<'a> {
    obs: &'a Observations,
    checks: Vec<Check>,
    gaps: Vec<Gap>,
}

impl Diag<'_> {
    fn check(&mut self, check: &'static str, region: Option<&str>, status: Status, detail: String) {
        self.checks.push(Check {
            check,
            region: region.map(str::to_owned),
            status,
            detail,
        });
    }

    fn gap(
        &mut self,
        check: &'static str,
        account: Option<&str>,
        region: Option<&str>,
        detail: String,
        fix: String,
    ) {
        self.gaps.push(Gap {
            account: account.map(str::to_owned),
            region: region.map(str::to_owned),
            check,
            detail,
            fix,
        });
    }

    /// A check that found a gap: the check fails with `detail`, and the gap says how to fix it.
    fn failed(&mut self, check: &'static str, region: Option<&str>, detail: String, fix: String) {
        self.gap(check, None, region, detail.clone(), fix);
        self.check(check, region, Status::Gap, detail);
    }

    /// An observation that failed: the check is `unknown`, and a gap says what to grant.
    fn unknown(
        &mut self,
        check: &'static str,
        account: Option<&str>,
        region: Option<&str>,
        e: &ObserveError,
    ) {
        let fix = match e {
            ObserveError::Denied { permission, .. } => format!(
                "grant {permission} to the credentials doctor runs with, then run gdfwd doctor again"
            ),
            ObserveError::Failed { .. } => {
                "run gdfwd doctor again (with --log-level gdfwd=debug for the calls)".to_owned()
            }
        };
        self.gap(check, account, region, format!("unknown: {e}"), fix);
        self.check(check, region, Status::Unknown, e.to_string());
    }

    fn own(&self) -> &str {
        self.obs
            .scope
            .own_account
            .as_deref()
            .unwrap_or("ADMIN_ACCOUNT_ID")
    }
}

/// Runs every check on `obs`.
pub fn diagnose(obs: &Observations) -> Report {
    let mut d = Diag {
        obs,
        checks: Vec::new(),
        gaps: Vec::new(),
    };
    let accounts = organization(&mut d);
    for region in &obs.scope.regions {
        guardduty(&mut d, region, accounts.as_deref());
    }
    pipeline(&mut d);
    flow(&mut d);
    alias_roles(&mut d);
    endpoint(&mut d);
    let account_names = accounts
        .as_deref()
        .unwrap_or_default()
        .iter()
        .filter_map(|a| Some((a.id.clone(), a.name.clone()?)))
        .collect();
    Report {
        accounts: accounts.as_ref().map_or(0, Vec::len),
        regions: obs.scope.regions.clone(),
        checks: d.checks,
        gaps: d.gaps,
        account_names,
        home_region: obs.scope.home_region.clone(),
    }
}

/// The active accounts, or `None` (check unknown) when they could not be listed.
fn organization(d: &mut Diag<'_>) -> Option<Vec<OrgAccount>> {
    match &d.obs.accounts {
        Ok(list) => {
            let active: Vec<OrgAccount> = list.iter().filter(|a| a.active()).cloned().collect();
            let inactive: Vec<String> = list
                .iter()
                .filter(|a| !a.active())
                .map(|a| format!("{} ({})", a.id, a.status))
                .collect();
            let mut detail = format!("{} active accounts", active.len());
            if !inactive.is_empty() {
                detail.push_str(&format!("; not checked: {}", inactive.join(", ")));
            }
            d.check(ORG_ACCOUNTS, None, Status::Ok, detail);
            Some(active)
        }
        Err(e) => {
            d.unknown(ORG_ACCOUNTS, None, None, e);
            None
        }
    }
}

fn guardduty(d: &mut Diag<'_>, region: &str, accounts: Option<&[OrgAccount]>) {
    let Some(g) = d.obs.guardduty.get(region) else {
        return;
    };
    gd_admin(d, region, g);
    let Some(detector) = gd_detector(d, region, g) else {
        let r = Some(region);
        d.check(GD_AUTO_ENABLE, r, Status::Skipped, "no detector".to_owned());
        d.check(GD_MEMBERS, r, Status::Skipped, "no detector".to_owned());
        return;
    };
    gd_auto_enable(d, region, g, &detector);
    members(d, region, &detector, accounts);
}

/// Delegated administrator: ListOrganizationAdminAccounts when allowed (management account only),
/// else DescribeOrganizationConfiguration answering is the proof.
fn gd_admin(d: &mut Diag<'_>, region: &str, g: &GuardDutyRegion) {
    let r = Some(region);
    let own = d.own().to_owned();
    let enable_admin = format!(
        "from the management account: aws guardduty enable-organization-admin-account --admin-account-id {own} --region {region}"
    );
    match (&g.admin_accounts, &g.auto_enable) {
        (Ok(admins), _) => {
            let enabled: Vec<&str> = admins
                .iter()
                .filter(|a| a.status == "ENABLED")
                .map(|a| a.account_id.as_str())
                .collect();
            if enabled.contains(&own.as_str()) {
                d.check(GD_ADMIN, r, Status::Ok, format!("{own} is the delegated administrator"));
            } else {
                let detail = if enabled.is_empty() {
                    "no GuardDuty delegated administrator".to_owned()
                } else {
                    format!("the delegated administrator is {}, not {own}", enabled.join(", "))
                };
                d.failed(GD_ADMIN, r, detail, enable_admin);
            }
        }
        (Err(_), Some(Ok(Some(_)))) => d.check(
            GD_ADMIN,
            r,
            Status::Ok,
            "DescribeOrganizationConfiguration answers: this account is the delegated administrator".to_owned(),
        ),
        (Err(_), Some(Ok(None))) => {
            let detail = format!("{own} is not the GuardDuty delegated administrator");
            d.failed(GD_ADMIN, r, detail, enable_admin);
        }
        (Err(e), _) => d.unknown(GD_ADMIN, None, r, e),
    }
}

/// The region's detector, enabled; its id when there is one.
fn gd_detector(d: &mut Diag<'_>, region: &str, g: &GuardDutyRegion) -> Option<String> {
    let r = Some(region);
    match &g.detector {
        Ok(Some(det)) if det.enabled => {
            d.check(
                GD_DETECTOR,
                r,
                Status::Ok,
                format!("detector {} enabled", det.id),
            );
            Some(det.id.clone())
        }
        Ok(Some(det)) => {
            let detail = format!("detector {} is disabled", det.id);
            d.failed(
                GD_DETECTOR,
                r,
                detail,
                format!(
                    "aws guardduty update-detector --detector-id {} --enable --region {region}",
                    det.id
                ),
            );
            Some(det.id.clone())
        }
        Ok(None) => {
            let detail = "no GuardDuty detector".to_owned();
            d.failed(
                GD_DETECTOR,
                r,
                detail,
                format!("aws guardduty create-detector --enable --region {region}"),
            );
            None
        }
        Err(e) => {
            d.unknown(GD_DETECTOR, None, r, e);
            None
        }
    }
}

/// Organization auto-enable, so accounts that join are monitored.
fn gd_auto_enable(d: &mut Diag<'_>, region: &str, g: &GuardDutyRegion, detector: &str) {
    let r = Some(region);
    match &g.auto_enable {
        Some(Ok(Some(mode))) if mode == "ALL" || mode == "NEW" => d.check(
            GD_AUTO_ENABLE,
            r,
            Status::Ok,
            format!("new members are enabled automatically ({mode})"),
        ),
        Some(Ok(Some(mode))) => {
            let detail =
                format!("organization auto-enable is {mode}: accounts that join are not monitored");
            d.failed(GD_AUTO_ENABLE, r, detail, format!("aws guardduty update-organization-configuration --detector-id {detector} --auto-enable-organization-members ALL --region {region}"));
        }
        Some(Ok(None)) | None => d.check(
            GD_AUTO_ENABLE,
            r,
            Status::Skipped,
            "not the delegated administrator (see guardduty.admin)".to_owned(),
        ),
        Some(Err(e)) => d.unknown(GD_AUTO_ENABLE, None, r, e),
    }
}

fn members(d: &mut Diag<'_>, region: &str, detector: &str, accounts: Option<&[OrgAccount]>) {
    let r = Some(region);
    let Some(g) = d.obs.guardduty.get(region) else {
        return;
    };
    let members = match &g.members {
        Some(Ok(m)) => m,
        Some(Err(e)) => return d.unknown(GD_MEMBERS, None, r, e),
        None => return,
    };
    let Some(accounts) = accounts else {
        d.check(
            GD_MEMBERS,
            r,
            Status::Unknown,
            "the Organization's accounts are unknown (see organization.accounts)".to_owned(),
        );
        return;
    };
    let own = d.own().to_owned();
    let by_id: BTreeMap<&str, &str> = members
        .iter()
        .map(|m| (m.account_id.as_str(), m.relationship.as_str()))
        .collect();
    let mut missing = 0;
    for a in accounts.iter().filter(|a| a.id != own) {
        let (detail, fix) = match by_id.get(a.id.as_str()) {
            Some(s) if s.eq_ignore_ascii_case("Enabled") => continue,
            Some(s) if s.eq_ignore_ascii_case("Disabled") => (
                "GuardDuty member with status Disabled: its findings are not produced".to_owned(),
                format!(
                    "aws guardduty start-monitoring-members --detector-id {detector} --account-ids {} --region {region}",
                    a.id
                ),
            ),
            Some(s) => (
                format!("GuardDuty member with status {s}, not Enabled"),
                create_members(detector, a, region),
            ),
            None => (
                "not a GuardDuty member".to_owned(),
                create_members(detector, a, region),
            ),
        };
        missing += 1;
        d.gap(GD_MEMBERS, Some(&a.id), r, detail, fix);
    }
    let active: BTreeSet<&str> = accounts.iter().map(|a| a.id.as_str()).collect();
    let outside: Vec<String> = members
        .iter()
        .filter(|m| !active.contains(m.account_id.as_str()))
        .map(|m| format!("{} ({})", m.account_id, m.relationship))
        .collect();
    let mut detail = format!(
        "{} of {} accounts are Enabled members",
        accounts.len().saturating_sub(1).saturating_sub(missing),
        accounts.len().saturating_sub(1)
    );
    if !outside.is_empty() {
        detail.push_str(&format!(
            "; members that are not active accounts of the Organization (suspended or removed): {}",
            outside.join(", ")
        ));
    }
    let status = if missing > 0 { Status::Gap } else { Status::Ok };
    d.check(GD_MEMBERS, r, status, detail);
}

fn create_members(detector: &str, a: &OrgAccount, region: &str) -> String {
    let email = a.email.as_deref().unwrap_or("EMAIL");
    format!(
        "aws guardduty create-members --detector-id {detector} --account-details AccountId={},Email={email} --region {region}",
        a.id
    )
}

fn pipeline(d: &mut Diag<'_>) {
    stack(d);
    rules(d);
    relays(d);
    relay_instances(d);
}

/// The forwarder stack is healthy and holds its rule, queues and function.
fn stack(d: &mut Diag<'_>) {
    let obs = d.obs;
    let home = obs.scope.home_region.as_str();
    let h = Some(home);
    let stack_name = obs.scope.stack_name.as_str();
    match &obs.home.stack {
        Ok(Some(stack)) => {
            let problems = stack_problems(stack, &obs.home);
            if problems.is_empty() {
                let detail = format!(
                    "{stack_name} {} with its rule, queues and function",
                    stack.status
                );
                d.check(STACK, h, Status::Ok, detail);
            } else {
                let detail = problems.join("; ");
                d.gap(
                    STACK,
                    None,
                    h,
                    format!("forwarder stack {stack_name}: {detail}"),
                    format!("aws cloudformation describe-stack-events --stack-name {stack_name} --region {home}, fix the cause, then deploy again (docs/deploy.md, step 3)"),
                );
                d.check(STACK, h, Status::Gap, detail);
            }
        }
        Ok(None) => {
            let detail = format!("no stack {stack_name} in {home}");
            d.failed(STACK, h, detail, format!("deploy cloudformation/forwarder.yaml as {stack_name} in {home} (docs/deploy.md, step 3), or pass --stack NAME"));
        }
        Err(e) => d.unknown(STACK, None, h, e),
    }
}

/// What is wrong with the forwarder stack: a status that is not a settled success (of the stack
/// or a resource), a queue that is gone, a kind of resource the forwarder needs that is missing.
fn stack_problems(stack: &Stack, home: &HomePipeline) -> Vec<String> {
    let healthy =
        |s: &str| s.ends_with("_COMPLETE") && !s.contains("ROLLBACK") && !s.contains("DELETE");
    let mut problems: Vec<String> = Vec::new();
    if !healthy(&stack.status) {
        problems.push(format!("stack status {}", stack.status));
    }
    for res in stack.resources.iter().filter(|r| !healthy(&r.status)) {
        let (id, kind, status) = (&res.logical_id, &res.resource_type, &res.status);
        problems.push(format!("{id} ({kind}) is {status}"));
    }
    for (logical, q) in &home.queues {
        if let Ok(None) = q {
            problems.push(format!("queue {logical} no longer exists"));
        }
    }
    let kinds = [
        "AWS::Events::Rule",
        "AWS::SQS::Queue",
        "AWS::Lambda::Function",
    ];
    for kind in kinds {
        if !stack.resources.iter().any(|r| r.resource_type == kind) {
            problems.push(format!("the stack has no {kind}"));
        }
    }
    problems
}

/// The stack's rules are enabled, and one listens on every bus a relay targets.
fn rules(d: &mut Diag<'_>) {
    let obs = d.obs;
    let h = Some(obs.scope.home_region.as_str());
    let (consumed, mut rule_problems) = rule_states(d);
    if !obs.home.stack.as_ref().is_ok_and(Option::is_some) {
        d.check(RULES, h, Status::Skipped, "no forwarder stack".to_owned());
        return;
    }
    rule_problems += unread_relay_buses(d, &consumed);
    if rule_problems == 0 {
        let buses: Vec<&str> = consumed.iter().map(String::as_str).collect();
        let detail = format!("enabled on bus {}", buses.join(", "));
        d.check(RULES, h, Status::Ok, detail);
    } else if !d.checks.iter().any(|c| c.check == RULES) {
        d.check(RULES, h, Status::Gap, format!("{rule_problems} problem(s)"));
    }
}

/// Each of the stack's rules: the buses the enabled ones read, and how many problems were found
/// (a disabled or deleted rule, or one that could not be read), each a gap.
fn rule_states(d: &mut Diag<'_>) -> (BTreeSet<String>, usize) {
    let obs = d.obs;
    let home = obs.scope.home_region.as_str();
    let h = Some(home);
    let stack_name = obs.scope.stack_name.as_str();
    let mut consumed: BTreeSet<String> = BTreeSet::new();
    let mut rule_problems = 0;
    for (id, rule) in &obs.home.rules {
        match rule {
            Ok(Some(rule)) if rule.enabled => {
                consumed.insert(rule.bus.clone());
            }
            Ok(Some(rule)) => {
                rule_problems += 1;
                d.gap(
                    RULES,
                    None,
                    h,
                    format!(
                        "forwarder rule {} on bus {} is disabled",
                        rule.name, rule.bus
                    ),
                    format!(
                        "aws events enable-rule --name {} --event-bus-name {} --region {home}",
                        rule.name, rule.bus
                    ),
                );
            }
            Ok(None) => {
                rule_problems += 1;
                d.gap(
                    RULES,
                    None,
                    h,
                    format!("forwarder rule {id} no longer exists"),
                    format!("deploy the stack {stack_name} again (aws cloudformation deploy ..., docs/deploy.md step 3)"),
                );
            }
            Err(e) => {
                rule_problems += 1;
                d.unknown(RULES, None, h, e);
            }
        }
    }
    (consumed, rule_problems)
}

/// Buses of the home region that relays put findings on and no enabled rule reads: one gap each.
fn unread_relay_buses(d: &mut Diag<'_>, consumed: &BTreeSet<String>) -> usize {
    let obs = d.obs;
    let home = obs.scope.home_region.as_str();
    let h = Some(home);
    let relay_buses: BTreeSet<String> = obs
        .relays
        .values()
        .filter_map(|r| r.rule.as_ref().ok().cloned().flatten())
        .flat_map(|r| r.target_arns)
        .filter_map(|arn| home_bus(&arn, home))
        .collect();
    let mut rule_problems = 0;
    for bus in relay_buses.iter().filter(|b| !consumed.contains(*b)) {
        rule_problems += 1;
        d.gap(
            RULES,
            None,
            h,
            format!("relays put findings on the bus {bus} in {home}, and no enabled forwarder rule reads it"),
            format!("deploy the organization template (cloudformation/organization.yaml), whose forwarder reads {RELAY_BUS}; or point the relays at the default bus"),
        );
    }
    rule_problems
}

/// The bus name when `arn` is an event bus of the home region.
fn home_bus(arn: &str, home: &str) -> Option<String> {
    let rest = arn.split(&format!(":events:{home}:")).nth(1)?;
    let bus = rest.split_once(":event-bus/")?.1;
    Some(bus.to_owned())
}

fn relays(d: &mut Diag<'_>) {
    let obs = d.obs;
    let home = obs.scope.home_region.clone();
    let own = d.own().to_owned();
    let set = obs.scope.relay_stack_set.clone();
    for (region, relay) in &obs.relays {
        let r = Some(region.as_str());
        let create = format!(
            "aws cloudformation create-stack-instances --stack-set-name {set} --accounts {own} --regions {region} --region {home} (docs/deploy.md, step 5)"
        );
        match &relay.rule {
            Ok(Some(rule)) if !rule.enabled => {
                let detail = format!("relay rule {RELAY_RULE} is disabled");
                d.failed(
                    RELAY,
                    r,
                    detail,
                    format!("aws events enable-rule --name {RELAY_RULE} --region {region}"),
                );
            }
            Ok(Some(rule)) => {
                let buses: Vec<String> = rule
                    .target_arns
                    .iter()
                    .filter_map(|a| home_bus(a, &home))
                    .collect();
                if buses.is_empty() {
                    let detail = format!(
                        "relay rule {RELAY_RULE} targets {} instead of a bus in {home}",
                        rule.target_arns.join(", ")
                    );
                    d.failed(RELAY, r, detail, format!("aws cloudformation update-stack-instances --stack-set-name {set} --accounts {own} --regions {region} --parameter-overrides ParameterKey=HomeRegion,ParameterValue={home} --region {home}"));
                } else {
                    d.check(
                        RELAY,
                        r,
                        Status::Ok,
                        format!("enabled, to bus {} in {home}", buses.join(", ")),
                    );
                }
            }
            Ok(None) => {
                let detail = format!(
                    "no relay rule {RELAY_RULE}: findings of {region} never reach the forwarder"
                );
                d.failed(RELAY, r, detail, create);
            }
            Err(e) => d.unknown(RELAY, None, r, e),
        }
    }
}

fn relay_instances(d: &mut Diag<'_>) {
    let obs = d.obs;
    let home = obs.scope.home_region.clone();
    let set = obs.scope.relay_stack_set.clone();
    let h = Some(home.as_str());
    match &obs.relay_instances {
        Ok(None) => d.check(
            RELAY_INSTANCES,
            h,
            Status::Skipped,
            format!(
                "StackSet {set} is not visible from this account (relays checked by their rules)"
            ),
        ),
        Ok(Some(instances)) => {
            let mut bad = 0;
            for region in obs.relays.keys() {
                let r = Some(region.as_str());
                match instances.iter().find(|i| &i.region == region) {
                    Some(i) if i.status == "CURRENT" => {}
                    Some(i) => {
                        bad += 1;
                        d.gap(
                            RELAY_INSTANCES,
                            Some(&i.account),
                            r,
                            format!(
                                "StackSet instance is {}{}",
                                i.status,
                                i.reason.as_deref().map(|s| format!(": {s}")).unwrap_or_default()
                            ),
                            format!("aws cloudformation update-stack-instances --stack-set-name {set} --accounts {} --regions {region} --region {home}", i.account),
                        );
                    }
                    None => {
                        bad += 1;
                        d.gap(
                            RELAY_INSTANCES,
                            None,
                            r,
                            format!("StackSet {set} has no instance in {region}"),
                            format!("aws cloudformation create-stack-instances --stack-set-name {set} --accounts {} --regions {region} --region {home}", d.own()),
                        );
                    }
                }
            }
            let status = if bad == 0 { Status::Ok } else { Status::Gap };
            d.check(
                RELAY_INSTANCES,
                h,
                status,
                format!(
                    "{} instance(s), {bad} not CURRENT or missing",
                    instances.len()
                ),
            );
        }
        Err(e) => d.unknown(RELAY_INSTANCES, None, h, e),
    }
}

fn is_dlq(logical_id: &str) -> bool {
    let l = logical_id.to_ascii_lowercase();
    l.contains("deadletter") || l.contains("dlq")
}

fn flow(d: &mut Diag<'_>) {
    let obs = d.obs;
    let home = obs.scope.home_region.clone();
    let h = Some(home.as_str());
    let mut dlq_gaps = 0;
    for (logical, q) in &obs.home.queues {
        match q {
            Ok(Some(q)) if is_dlq(logical) => {
                let n = q.visible + q.in_flight;
                if n > 0 {
                    dlq_gaps += 1;
                    let arn = q.arn.as_deref().unwrap_or("DLQ_ARN");
                    d.gap(
                        DLQ,
                        None,
                        h,
                        format!("the forwarder's dead-letter queue holds {n} message(s): findings not delivered; {} (kept 14 days)", age_text(q)),
                        format!("inspect: aws sqs receive-message --queue-url {} --attribute-names All --region {home}; after fixing the cause: aws sqs start-message-move-task --source-arn {arn} --region {home}", q.url),
                    );
                }
            }
            Ok(Some(q)) => queue_age(d, &home, logical, q),
            Ok(None) => {}
            Err(e) => {
                dlq_gaps += 1;
                d.unknown(DLQ, None, h, e);
            }
        }
    }
    for (region, relay) in &obs.relays {
        let r = Some(region.as_str());
        match &relay.dlq {
            Ok(Some(q)) if q.visible + q.in_flight > 0 => {
                dlq_gaps += 1;
                d.gap(
                    DLQ,
                    None,
                    r,
                    format!("the relay's dead-letter queue holds {} message(s): findings not relayed; {} (kept 14 days)", q.visible + q.in_flight, age_text(q)),
                    format!("inspect: aws sqs receive-message --queue-url {} --attribute-names All --region {region}; then send what GuardDuty holds: gdfwd backfill --regions {region} --since 14d", q.url),
                );
            }
            Ok(_) => {}
            Err(e) => {
                dlq_gaps += 1;
                d.unknown(DLQ, None, r, e);
            }
        }
    }
    if dlq_gaps == 0 {
        d.check(
            DLQ,
            None,
            Status::Ok,
            "every dead-letter queue is empty".to_owned(),
        );
    } else if !d.checks.iter().any(|c| c.check == DLQ) {
        d.check(
            DLQ,
            None,
            Status::Gap,
            format!("{dlq_gaps} dead-letter queue(s) not empty"),
        );
    }

    forwarded(d);
}

/// A queue's backlog older than this is a gap: the stack's `OldestMessageAge` alarm threshold.
const MAX_QUEUE_AGE_SECONDS: u64 = 15 * 60;

/// The oldest message's age as words.
fn age_text(q: &QueueState) -> String {
    match &q.oldest_age {
        Some(Ok(Some(s))) => format!("the oldest is {} old", duration_text(*s)),
        Some(Ok(None)) => "the oldest message's age: no CloudWatch datapoint yet".to_owned(),
        Some(Err(e)) => format!("the oldest message's age is unknown ({e})"),
        None => "no message".to_owned(),
    }
}

fn duration_text(seconds: u64) -> String {
    match seconds {
        s if s >= 2 * 86_400 => format!("{} days", s / 86_400),
        s if s >= 2 * 3_600 => format!("{} hours", s / 3_600),
        s if s >= 120 => format!("{} minutes", s / 60),
        s => format!("{s} seconds"),
    }
}

/// The findings queue: its depth, and a gap when its oldest message waits too long.
fn queue_age(d: &mut Diag<'_>, home: &str, logical: &str, q: &QueueState) {
    let h = Some(home);
    let depth = format!(
        "{logical}: {} waiting, {} in flight",
        q.visible, q.in_flight
    );
    match &q.oldest_age {
        Some(Ok(Some(age))) if *age > MAX_QUEUE_AGE_SECONDS => {
            let detail = format!(
                "{depth}; {}: the forwarder is not keeping up or failing",
                age_text(q)
            );
            d.failed(QUEUE, h, detail, format!("check the function's Errors and Throttles and its log (aws logs tail /aws/lambda/{}-forwarder --since 1h --region {home})", d.obs.scope.stack_name));
        }
        Some(Err(e)) => d.unknown(QUEUE, None, h, e),
        _ => d.check(QUEUE, h, Status::Ok, format!("{depth}; {}", age_text(q))),
    }
}

fn forwarded(d: &mut Diag<'_>) {
    let obs = d.obs;
    let since = obs.scope.since.to_rfc3339();
    match &obs.flow {
        Err(e) => d.unknown(FORWARDED, None, None, e),
        Ok(flow) => {
            let mut silent = 0;
            let mut unknown_regions: BTreeMap<&str, &ObserveError> = BTreeMap::new();
            for ((account, region), n) in &obs.findings {
                match n {
                    Ok(0) => {}
                    Ok(n) => {
                        silent += 1;
                        d.gap(
                            FORWARDED,
                            Some(account),
                            Some(region),
                            format!("GuardDuty lists {n}{} finding(s) updated since {since}; the store recorded none sent", if *n >= 50 { "+" } else { "" }),
                            format!("gdfwd audit gaps --regions {region} --accounts {account} --since {since}, then gdfwd backfill --only-gaps --regions {region} --accounts {account} --since {since} (and check guardduty.members and pipeline.relay for {region})"),
                        );
                    }
                    Err(e) => {
                        unknown_regions.entry(region).or_insert(e);
                    }
                }
            }
            for (region, e) in unknown_regions {
                d.unknown(FORWARDED, None, Some(region), e);
            }
            let sent: u64 = flow.values().map(|f| f.sent).sum();
            let failed: u64 = flow.values().map(|f| f.failed).sum();
            let status = if silent > 0 { Status::Gap } else { Status::Ok };
            d.check(
                FORWARDED,
                None,
                status,
                format!(
                    "since {since}: {sent} version(s) sent, {failed} failure(s) in {} account×region pair(s); {silent} pair(s) with findings and nothing sent",
                    flow.len()
                ),
            );
        }
    }
}

fn alias_roles(d: &mut Diag<'_>) {
    let obs = d.obs;
    if obs.alias_roles.is_empty() {
        d.check(
            ALIAS_ROLE,
            None,
            Status::Skipped,
            "enrichment off, or no accounts".to_owned(),
        );
        return;
    }
    let mut bad = 0;
    for (account, r) in &obs.alias_roles {
        if let Err(e) = r {
            bad += 1;
            d.gap(
                ALIAS_ROLE,
                Some(account),
                None,
                format!("the alias role cannot be used: {e}"),
                format!("deploy the alias role to {account}: aws cloudformation create-stack-instances --stack-set-name gdfwd-member-alias-role --deployment-targets OrganizationalUnitIds=OU_OF_{account} --regions {} (docs/deploy.md, step 4; the management account takes a plain stack)", obs.scope.home_region),
            );
        }
    }
    let status = if bad == 0 { Status::Ok } else { Status::Gap };
    d.check(
        ALIAS_ROLE,
        None,
        status,
        format!(
            "{} of {} accounts readable",
            obs.alias_roles.len() - bad,
            obs.alias_roles.len()
        ),
    );
}

fn endpoint(d: &mut Diag<'_>) {
    let Some((sent, answer)) = &d.obs.endpoint else {
        d.check(
            ENDPOINT,
            None,
            Status::Skipped,
            "not checked (--check-endpoint)".to_owned(),
        );
        return;
    };
    let (ok, detail, fix) = match answer {
        EndpointAnswer::Status(s) if ![401, 403, 404].contains(s) => {
            (true, format!("{sent}: answered {s}"), String::new())
        }
        EndpointAnswer::Status(s) => (
            false,
            format!("{sent}: answered {s}"),
            "check the endpoint URL (…/platform/ingest/v1/security.events) and that the token has the openpipeline.events_security scope; update the secret".to_owned(),
        ),
        EndpointAnswer::NoToken(e) => (
            false,
            format!("the token cannot be read: {e}"),
            "check AwsSecretArn / AwsSecretKeyName and secretsmanager:GetSecretValue".to_owned(),
        ),
        EndpointAnswer::Unreachable(e) => (
            false,
            format!("{sent}: no answer: {e}"),
            "check the endpoint URL and the network path (proxy, VPC egress)".to_owned(),
        ),
    };
    if ok {
        d.check(ENDPOINT, None, Status::Ok, detail);
    } else {
        d.failed(ENDPOINT, None, detail, fix);
    }
}
