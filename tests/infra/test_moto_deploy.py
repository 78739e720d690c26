"""Deploy the templates into moto's CloudFormation and check what they create.

moto creates the table, queues, role, rule, log group, function, event source mapping and permission; it
skips alarms, queue policies and the async invoke config (checked on the template in test_template_contract.py), ignores the
function architecture, table TTL/PITR/SSE, and never runs the function (the event source mapping is disabled
before findings are put on the bus, so moto does not try to start a container).
"""

from __future__ import annotations

import ast
import json
import re

from gdfwd_infra import (
    ENDPOINT,
    FORWARDER,
    REPO,
    HOME_REGION,
    MEMBER_ROLE,
    REGION_RELAY,
    SECRET_ARN,
    TABLE_DEFINITION,
    drain_queue,
    guardduty_events,
    load_template,
    unique,
)
from test_template_contract import LAMBDA_ENV

RELAY_REGION = "eu-west-1"


def _policy_statements(iam, role_name: str) -> list[dict]:
    names = iam.list_role_policies(RoleName=role_name)["PolicyNames"]
    out = []
    for n in names:
        doc = iam.get_role_policy(RoleName=role_name, PolicyName=n)["PolicyDocument"]
        if isinstance(doc, str):
            # moto returns documents created by CloudFormation as a Python repr, not JSON.
            try:
                doc = json.loads(doc)
            except json.JSONDecodeError:
                doc = ast.literal_eval(doc)
        # moto leaves `Fn::If -> AWS::NoValue` list items as None where CloudFormation drops them.
        out.extend(st for st in doc["Statement"] if st is not None)
    return out


def _table_as_definition(table: dict) -> dict:
    """describe-table output in the shape of cloudformation/table-definition.json (less TTL: moto ignores it)."""
    return {
        "BillingMode": table["BillingModeSummary"]["BillingMode"],
        "KeySchema": table["KeySchema"],
        "AttributeDefinitions": sorted(table["AttributeDefinitions"], key=lambda a: a["AttributeName"]),
        "GlobalSecondaryIndexes": [
            {k: g[k] for k in ("IndexName", "KeySchema", "Projection")} for g in table["GlobalSecondaryIndexes"]
        ],
    }


def test_forwarder_sqs_stack_creates_its_resources(new_account) -> None:
    acct = new_account()
    stack = unique("gdfwd-fwd")
    out = acct.deploy_forwarder(stack, MaxConcurrency="5", AliasExternalId="ext-123", PayloadFormat="semantic")

    # DynamoDB: the store's schema (TTL attribute is checked on the template: moto ignores it).
    table = acct.client("dynamodb").describe_table(TableName=out["TableName"])["Table"]
    expected = json.loads(TABLE_DEFINITION.read_text())
    expected.pop("TimeToLiveSpecification")
    assert _table_as_definition(table) == expected
    assert out["TableArn"] == table["TableArn"]

    # SQS: queue with redrive to an encrypted DLQ, visibility beyond the lease.
    sqs = acct.client("sqs")
    q = sqs.get_queue_attributes(QueueUrl=out["QueueUrl"], AttributeNames=["All"])["Attributes"]
    dlq = sqs.get_queue_attributes(QueueUrl=out["DeadLetterQueueUrl"], AttributeNames=["All"])["Attributes"]
    assert q["QueueArn"] == out["QueueArn"]
    assert q["VisibilityTimeout"] == "420"
    assert q["SqsManagedSseEnabled"] == "true" and dlq["SqsManagedSseEnabled"] == "true"
    assert json.loads(q["RedrivePolicy"]) == {"deadLetterTargetArn": out["DeadLetterQueueArn"], "maxReceiveCount": 10}
    assert dlq["MessageRetentionPeriod"] == "1209600"

    # EventBridge: GuardDuty findings on the default bus to the queue, with retries and a DLQ.
    events = acct.client("events")
    rule_name = out["RuleArn"].rsplit("/", 1)[1]
    rule = events.describe_rule(Name=rule_name)
    assert rule["EventBusName"] == "default" and rule["State"] == "ENABLED"
    # The default filter is in the pattern: archived findings (`service.archived` true) never reach the queue.
    assert json.loads(rule["EventPattern"]) == {
        "source": ["aws.guardduty"],
        "detail-type": ["GuardDuty Finding"],
        "detail": {"service": {"archived": [False, {"exists": False}]}},
    }
    [target] = events.list_targets_by_rule(Rule=rule_name)["Targets"]
    assert target["Arn"] == out["QueueArn"]
    assert target["DeadLetterConfig"] == {"Arn": out["DeadLetterQueueArn"]}
    assert target["RetryPolicy"] == {"MaximumRetryAttempts": 185, "MaximumEventAgeInSeconds": 86400}

    # Lambda: runtime, sizing, role and exactly the environment the function reads.
    lam = acct.client("lambda")
    fn = lam.get_function_configuration(FunctionName=out["FunctionName"])
    assert fn["FunctionArn"] == out["FunctionArn"]
    assert (fn["Runtime"], fn["Handler"], fn["MemorySize"], fn["Timeout"]) == ("provided.al2023", "bootstrap", 128, 60)
    assert fn["Role"] == out["FunctionRoleArn"]
    env = {k: str(v) for k, v in fn["Environment"]["Variables"].items()}
    # CaFile and AccountFields left empty, MinSeverity 0: their variables are omitted.
    assert set(env) == LAMBDA_ENV - {"GDFWD_CA_FILE", "ACCOUNT_FIELDS", "MIN_SEVERITY"}
    assert (env["ARCHIVED_FINDINGS"], env["SAMPLE_FINDINGS"]) == ("exclude", "include")
    assert env["DYNATRACE_OPENPIPELINE_SECURITY_ENDPOINT"] == ENDPOINT
    assert env["AWS_SECRET_ARN"] == SECRET_ARN
    assert env["AWS_SECRET_KEY_NAME"] == "DYNATRACE_OPENPIPELINE_INGEST_API_TOKEN"
    assert env["DEDUP_TABLE_NAME"] == out["TableName"]
    assert env["PAYLOAD_FORMAT"] == "semantic"
    assert env["MAX_CONCURRENCY"] == "5"
    assert env["ALIAS_EXTERNAL_ID"] == "ext-123"
    assert env["ENRICH"] == "true" and env["DEDUP_LEASE_SECONDS"] == "300"

    [esm] = lam.list_event_source_mappings(FunctionName=out["FunctionName"])["EventSourceMappings"]
    assert esm["EventSourceArn"] == out["QueueArn"]
    assert esm["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert esm["ScalingConfig"] == {"MaximumConcurrency": 5}
    assert esm["BatchSize"] == 10
    assert esm.get("MaximumBatchingWindowInSeconds", 0) == 0

    # Logs: its own group, with retention.
    [group] = acct.client("logs").describe_log_groups(logGroupNamePrefix=f"/aws/lambda/{stack}-forwarder")["logGroups"]
    assert group["retentionInDays"] == 30

    # IAM: inline least-privilege policy, no managed policies, each grant on its own resource.
    iam = acct.client("iam")
    role_name = out["FunctionRoleArn"].rsplit("/", 1)[1]
    assert iam.list_attached_role_policies(RoleName=role_name)["AttachedPolicies"] == []
    trust = iam.get_role(RoleName=role_name)["Role"]["AssumeRolePolicyDocument"]
    assert trust["Statement"][0]["Principal"] == {"Service": "lambda.amazonaws.com"}
    by_sid = {s["Sid"]: s for s in _policy_statements(iam, role_name)}
    assert set(by_sid) == {
        "OwnLogGroup", "DedupTableItems", "IngestToken", "MemberAccountAliasRole", "AccountNames", "AccountAliases",
        "ConsumeFindingsQueue",
    }
    assert by_sid["MemberAccountAliasRole"]["Resource"] == "arn:aws:iam::*:role/GuardDutyForwarderAliasReader"
    assert by_sid["IngestToken"]["Resource"] == SECRET_ARN
    assert by_sid["DedupTableItems"]["Resource"] == out["TableArn"]
    assert by_sid["ConsumeFindingsQueue"]["Resource"] == out["QueueArn"]
    # AWS's Arn attribute ends in ":*" (all streams); moto's does not.
    assert by_sid["OwnLogGroup"]["Resource"] in (group["arn"], group["logGroupArn"])
    for s in by_sid.values():
        actions = s["Action"] if isinstance(s["Action"], list) else [s["Action"]]
        assert all("*" not in a for a in actions), s


def _pause_consumer(acct, function_name: str) -> None:
    lam = acct.client("lambda")
    [esm] = lam.list_event_source_mappings(FunctionName=function_name)["EventSourceMappings"]
    lam.update_event_source_mapping(UUID=esm["UUID"], Enabled=False)


def _put_findings(events_client, findings: list[dict]) -> None:
    entries = [
        {"Source": e["source"], "DetailType": e["detail-type"], "Detail": json.dumps(e["detail"]), "EventBusName": "default"}
        for e in findings
    ]
    for i in range(0, len(entries), 10):
        resp = events_client.put_events(Entries=entries[i : i + 10])
        assert resp["FailedEntryCount"] == 0, resp


def _by_severity(low: float, high: float, n: int) -> list[dict]:
    picked, seen = [], set()
    for e in guardduty_events():
        d = e["detail"]
        if low <= float(d["severity"]) < high and d["id"] not in seen:
            seen.add(d["id"])
            picked.append(e)
        if len(picked) == n:
            break
    assert len(picked) == n, f"fixtures lack {n} findings with severity in [{low}, {high})"
    return picked


def test_rule_delivers_only_findings_at_or_above_min_severity(new_account) -> None:
    acct = new_account()
    # The fixture holds archived findings, which the default filter drops; this test is about severity.
    out = acct.deploy_forwarder(unique("gdfwd-sev"), MinSeverity="7", ArchivedFindings="include")
    _pause_consumer(acct, out["FunctionName"])

    high = _by_severity(7.0, 11.0, 3)
    low = _by_severity(0.0, 7.0, 3)
    not_a_finding = {
        "source": "aws.guardduty",
        "detail-type": "AWS API Call via CloudTrail",
        "detail": {"eventName": "ListDetectors", "severity": 9},
    }
    _put_findings(acct.client("events"), [*low, *high, not_a_finding])

    delivered = drain_queue(acct, out["QueueUrl"])
    assert sorted(b["detail"]["id"] for b in delivered) == sorted(e["detail"]["id"] for e in high)
    assert all(b["detail-type"] == "GuardDuty Finding" and b["source"] == "aws.guardduty" for b in delivered)


def test_region_relay_forwards_findings_to_the_home_region(new_account) -> None:
    acct = new_account()
    # The fixture holds archived findings, which the default filter drops; this test is about relaying.
    out = acct.deploy_forwarder(unique("gdfwd-home"), ArchivedFindings="include")
    _pause_consumer(acct, out["FunctionName"])
    relay = acct.deploy(unique("gdfwd-relay"), REGION_RELAY, {"HomeRegion": HOME_REGION}, region=RELAY_REGION)

    events = acct.client("events", RELAY_REGION)
    rule_name = relay["RuleArn"].rsplit("/", 1)[1]
    [target] = events.list_targets_by_rule(Rule=rule_name)["Targets"]
    home_bus = f"arn:aws:events:{HOME_REGION}:{acct.account_id}:event-bus/gdfwd-findings"
    assert target["Arn"] == home_bus
    assert target["DeadLetterConfig"] == {"Arn": relay["DeadLetterQueueArn"]}
    assert target["RetryPolicy"]["MaximumRetryAttempts"] == 185
    iam = acct.client("iam")
    role_name = target["RoleArn"].rsplit("/", 1)[1]
    [stmt] = _policy_statements(iam, role_name)
    assert (stmt["Action"], stmt["Resource"]) == ("events:PutEvents", home_bus)
    dlq = acct.client("sqs", RELAY_REGION).get_queue_attributes(QueueUrl=relay["DeadLetterQueueUrl"], AttributeNames=["All"])
    assert dlq["Attributes"]["SqsManagedSseEnabled"] == "true"

    # Another GuardDuty rule on the home default bus (paging, response automation) must keep seeing the home
    # region's findings only: a probe rule there with a queue of its own.
    home_events = acct.client("events")
    sqs = acct.client("sqs")
    probe_url = sqs.create_queue(QueueName=unique("probe"))["QueueUrl"]
    probe_arn = sqs.get_queue_attributes(QueueUrl=probe_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    probe_rule = unique("probe")
    home_events.put_rule(Name=probe_rule, EventPattern=json.dumps({"source": ["aws.guardduty"]}), EventBusName="default")
    home_events.put_targets(Rule=probe_rule, Targets=[{"Id": "probe", "Arn": probe_arn}])

    # Put in the relay region only: what reaches the home queue came through the relay.
    findings = _by_severity(0.0, 11.0, 4)
    _put_findings(events, findings)
    delivered = drain_queue(acct, out["QueueUrl"])
    assert sorted(b["detail"]["id"] for b in delivered) == sorted(e["detail"]["id"] for e in findings)
    assert drain_queue(acct, probe_url) == [], "relayed findings reached the home region's default bus"

    # The home region's own findings still reach both: the probe proves it is listening.
    home = _by_severity(0.0, 11.0, 5)[4:]
    _put_findings(home_events, home)
    assert [b["detail"]["id"] for b in drain_queue(acct, out["QueueUrl"])] == [home[0]["detail"]["id"]]
    assert [b["detail"]["id"] for b in drain_queue(acct, probe_url)] == [home[0]["detail"]["id"]]


def test_batch_size_and_window_reach_the_event_source_mapping(new_account) -> None:
    acct = new_account()
    out = acct.deploy_forwarder(unique("gdfwd-b100"), SqsBatchSize="100", SqsBatchingWindowSeconds="1")
    lam = acct.client("lambda")
    [esm] = lam.list_event_source_mappings(FunctionName=out["FunctionName"])["EventSourceMappings"]
    assert esm["BatchSize"] == 100
    assert esm["MaximumBatchingWindowInSeconds"] == 1


def test_forwarder_direct_trigger(new_account) -> None:
    acct = new_account()
    stack = unique("gdfwd-direct")
    out = acct.deploy_forwarder(stack, Trigger="direct")
    resources = acct.resources(stack)
    assert "FindingsQueue" not in resources and "QueueEventSource" not in resources
    assert "QueueUrl" not in out and "DeadLetterQueueUrl" in out

    events = acct.client("events")
    rule_name = out["RuleArn"].rsplit("/", 1)[1]
    [target] = events.list_targets_by_rule(Rule=rule_name)["Targets"]
    assert target["Arn"] == out["FunctionArn"]
    assert target["DeadLetterConfig"] == {"Arn": out["DeadLetterQueueArn"]}
    assert target["RetryPolicy"] == {"MaximumRetryAttempts": 185, "MaximumEventAgeInSeconds": 86400}

    policy = json.loads(acct.client("lambda").get_policy(FunctionName=out["FunctionName"])["Policy"])
    # One grant per rule: the default bus's and the relay bus's, each only for its own rule.
    grants = policy["Statement"]
    assert all(g["Principal"] == {"Service": "events.amazonaws.com"} for g in grants)
    assert all(g["Action"] == "lambda:InvokeFunction" for g in grants)
    assert sorted(g["Condition"]["ArnLike"]["AWS:SourceArn"] for g in grants) == sorted([out["RuleArn"], out["RelayedRuleArn"]])

    iam = acct.client("iam")
    by_sid = {s["Sid"]: s for s in _policy_statements(iam, out["FunctionRoleArn"].rsplit("/", 1)[1])}
    assert "ConsumeFindingsQueue" not in by_sid
    assert by_sid["OnFailureDestination"] == {
        "Sid": "OnFailureDestination", "Effect": "Allow", "Action": "sqs:SendMessage", "Resource": out["DeadLetterQueueArn"]
    }


def test_member_alias_role_in_two_member_accounts(new_account) -> None:
    admin, member_a, member_b = new_account(), new_account(), new_account()
    forwarder_role = f"arn:aws:iam::{admin.account_id}:role/gdfwd-ForwarderRole-EXAMPLE"
    org = "o-abcdef1234"
    params = {"ForwarderRoleArn": forwarder_role, "OrganizationId": org}
    member_a.deploy(unique("gdfwd-alias"), MEMBER_ROLE, params)
    member_b.deploy(unique("gdfwd-alias"), MEMBER_ROLE, {**params, "AliasExternalId": "ext-42"})

    for member, external_id in [(member_a, None), (member_b, "ext-42")]:
        iam = member.client("iam")
        role = iam.get_role(RoleName="GuardDutyForwarderAliasReader")["Role"]
        assert role["Arn"] == f"arn:aws:iam::{member.account_id}:role/GuardDutyForwarderAliasReader"
        [stmt] = role["AssumeRolePolicyDocument"]["Statement"]
        assert stmt["Principal"] == {"AWS": forwarder_role}
        assert stmt["Action"] == "sts:AssumeRole"
        expected = {"aws:PrincipalOrgID": org}
        if external_id:
            expected["sts:ExternalId"] = external_id
        assert stmt["Condition"] == {"StringEquals": expected}
        assert iam.list_attached_role_policies(RoleName="GuardDutyForwarderAliasReader")["AttachedPolicies"] == []
        [grant] = _policy_statements(iam, "GuardDutyForwarderAliasReader")
        assert (grant["Action"], grant["Resource"]) == ("iam:ListAccountAliases", "*")

    # The role lives in the member accounts only.
    admin_roles = [r["RoleName"] for r in admin.client("iam").list_roles()["Roles"]]
    assert "GuardDutyForwarderAliasReader" not in admin_roles


def test_relay_stackset_roles_chain(new_account) -> None:
    acct = new_account()
    out = acct.deploy(unique("gdfwd-ssroles"), REPO / "stacksets" / "relay-stackset-roles.yaml", {})
    iam = acct.client("iam")
    admin = iam.get_role(RoleName="gdfwd-relay-stackset-administration")["Role"]
    assert admin["Arn"] == out["AdministrationRoleArn"]
    assert admin["AssumeRolePolicyDocument"]["Statement"][0]["Principal"] == {"Service": "cloudformation.amazonaws.com"}
    [assume] = _policy_statements(iam, "gdfwd-relay-stackset-administration")
    assert assume["Resource"] == f"arn:aws:iam::{acct.account_id}:role/gdfwd-relay-stackset-execution"
    execution = iam.get_role(RoleName=out["ExecutionRoleName"])["Role"]
    assert execution["AssumeRolePolicyDocument"]["Statement"][0]["Principal"] == {"AWS": admin["Arn"]}
    grants = _policy_statements(iam, out["ExecutionRoleName"])
    # Every grant but the template validation is confined to this account's relay stacks (StackSet-<name>-*) and
    # the relay's own named resources (gdfwd-region-relay-*): no way to rewrite another StackSet's roles, or these.
    for g in grants:
        if g["Sid"] not in ("TemplateChecks", "StackSetTemplateAndNotifications"):
            assert g["Resource"].split(":")[4] in ("", acct.account_id), g
            own = "StackSet-gdfwd-region-relay-*" if g["Sid"] == "RelayStacks" else "gdfwd-region-relay-*"
            assert g["Resource"].endswith(("/" + own, ":" + own)), g
    # The StackSet's own roles can never be named into the range the execution role may rewrite.
    params = load_template(REPO / "stacksets" / "relay-stackset-roles.yaml")["Parameters"]
    for name in ("AdministrationRoleName", "ExecutionRoleName"):
        pattern = re.compile(params[name]["AllowedPattern"])
        assert pattern.fullmatch(params[name]["Default"]), name
        assert not pattern.fullmatch("gdfwd-region-relay-eu-west-1"), name
    # Only the relay StackSet's operations may assume the administration role.
    condition = admin["AssumeRolePolicyDocument"]["Statement"][0]["Condition"]
    assert condition["StringLike"]["aws:SourceArn"] == f"arn:aws:cloudformation:*:{acct.account_id}:stackset/gdfwd-region-relay:*"
    assert condition["StringEquals"]["aws:SourceAccount"] == acct.account_id


def test_region_relay_alarms_to_its_topic_and_takes_the_boundary(new_account) -> None:
    acct = new_account()
    boundary = f"arn:aws:iam::{acct.account_id}:policy/OrgBoundary"
    acct.client("iam").create_policy(
        PolicyName="OrgBoundary",
        PolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "events:PutEvents", "Resource": "*"}]}),
    )
    params = {"HomeRegion": HOME_REGION, "AlarmEmail": "ops@example.com", "PermissionsBoundaryArn": boundary}
    acct.deploy(unique("gdfwd-relay"), REGION_RELAY, params, region=RELAY_REGION)
    sns = acct.client("sns", RELAY_REGION)
    topic = f"arn:aws:sns:{RELAY_REGION}:{acct.account_id}:gdfwd-region-relay-alarms"
    [sub] = sns.list_subscriptions_by_topic(TopicArn=topic)["Subscriptions"]
    assert (sub["Protocol"], sub["Endpoint"]) == ("email", "ops@example.com")
    role = acct.client("iam").get_role(RoleName=f"gdfwd-region-relay-{RELAY_REGION}")["Role"]
    assert role["PermissionsBoundary"]["PermissionsBoundaryArn"] == boundary


def test_describe_account_is_confined_to_the_organization(new_account) -> None:
    acct = new_account()
    fields = "dt.security_context=tag:dt-security-context,aws.organization.unit=ou"
    out = acct.deploy_forwarder(unique("gdfwd-org"), OrganizationId="o-abcdef1234", AccountFields=fields)
    by_sid = {s["Sid"]: s for s in _policy_statements(acct.client("iam"), out["FunctionRoleArn"].rsplit("/", 1)[1])}
    assert by_sid["AccountNames"]["Action"] == "organizations:DescribeAccount"
    assert by_sid["AccountNames"]["Resource"] == "arn:aws:organizations::*:account/o-abcdef1234/*"
    assert by_sid["AccountAliases"]["Resource"] == "*"
    # Account fields: their Organizations reads, confined the same way, and the variable.
    assert sorted(by_sid["AccountContext"]["Action"]) == [
        "organizations:DescribeOrganizationalUnit", "organizations:ListParents", "organizations:ListTagsForResource",
    ]
    assert by_sid["AccountContext"]["Resource"] == [
        "arn:aws:organizations::*:account/o-abcdef1234/*", "arn:aws:organizations::*:ou/o-abcdef1234/ou-*",
    ]
    fn = acct.client("lambda").get_function_configuration(FunctionName=out["FunctionName"])
    assert fn["Environment"]["Variables"]["ACCOUNT_FIELDS"] == fields
