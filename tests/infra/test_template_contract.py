"""The forwarder and StackSet templates keep the promises other parts of the project rely on.

- the DynamoDB table equals cloudformation/table-definition.json, the file the Rust side compares
  `gdfwd_store_dynamodb::table_definition()` with (template == JSON == Rust);
- Dynatrace's parameter names and default work unchanged;
- the function gets exactly the environment the Lambda reads (issue #7);
- IAM is least privilege: every action listed, each on its own resource;
- the queue's visibility timeout outlives the longest dedup lease and 6x the function timeout.
Properties moto ignores (TTL, PITR, SSE, architecture, alarms) are checked here, on the template itself.
"""

from __future__ import annotations

import json
import pytest

from gdfwd_infra import FORWARDER, MEMBER_ROLE, ORGANIZATION, REGION_RELAY, TABLE_DEFINITION, load_template

LAMBDA_ENV = {
    "DYNATRACE_OPENPIPELINE_SECURITY_ENDPOINT",
    "AWS_SECRET_ARN",
    "AWS_SECRET_KEY_NAME",
    "DEDUP_TABLE_NAME",
    "PAYLOAD_FORMAT",
    "MAX_EVENTS_PER_SECOND",
    "MAX_REQUESTS_PER_SECOND",
    "MAX_CONCURRENCY",
    "ALIAS_ROLE_NAME",
    "ALIAS_EXTERNAL_ID",
    "ENRICH",
    "ACCOUNT_FIELDS",
    "DEDUP_TTL_DAYS",
    "DEDUP_LEASE_SECONDS",
    "GDFWD_CA_FILE",
    "LOG_LEVEL",
    # The filters (crates/gdfwd-model/src/filter.rs, FilterInput::env_var; test_filters.py).
    "MIN_SEVERITY",
    "ARCHIVED_FINDINGS",
    "SAMPLE_FINDINGS",
    "INCLUDE_TYPES",
    "EXCLUDE_TYPES",
    "INCLUDE_ACCOUNTS",
    "EXCLUDE_ACCOUNTS",
    "INCLUDE_REGIONS",
    "EXCLUDE_REGIONS",
    "INCLUDE_RESOURCE_TYPES",
    "EXCLUDE_RESOURCE_TYPES",
}


@pytest.fixture(scope="module")
def fwd() -> dict:
    return json.loads(json.dumps(load_template(FORWARDER)))


def res(t: dict, name: str) -> dict:
    return t["Resources"][name]["Properties"]


def table_shape(props: dict) -> dict:
    """The template's table in the shape of cloudformation/table-definition.json: the CloudFormation property
    names, which is also how `gdfwd_store_dynamodb::table_definition()` serialises (attribute definitions sorted
    by name)."""
    return {
        "BillingMode": props["BillingMode"],
        "KeySchema": props["KeySchema"],
        "AttributeDefinitions": sorted(props["AttributeDefinitions"], key=lambda a: a["AttributeName"]),
        "GlobalSecondaryIndexes": props["GlobalSecondaryIndexes"],
        "TimeToLiveSpecification": props["TimeToLiveSpecification"],
    }


def test_table_matches_shared_definition(fwd: dict) -> None:
    expected = json.loads(TABLE_DEFINITION.read_text())
    assert table_shape(res(fwd, "DedupTable")) == expected


def test_table_defines_only_key_attributes(fwd: dict) -> None:
    # DynamoDB rejects attribute definitions that no key schema uses.
    p = res(fwd, "DedupTable")
    used = {k["AttributeName"] for k in p["KeySchema"]}
    for g in p["GlobalSecondaryIndexes"]:
        used |= {k["AttributeName"] for k in g["KeySchema"]}
    assert {a["AttributeName"] for a in p["AttributeDefinitions"]} == used


def test_shared_definition_names_the_store_schema() -> None:
    # The names gdfwd-store-dynamodb uses; a change here is a change of the stored data's schema.
    d = json.loads(TABLE_DEFINITION.read_text())
    assert d["KeySchema"] == [{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}]
    [gsi] = d["GlobalSecondaryIndexes"]
    assert gsi == {
        "IndexName": "gsi1",
        "KeySchema": [{"AttributeName": "gsi1pk", "KeyType": "HASH"}, {"AttributeName": "gsi1sk", "KeyType": "RANGE"}],
        "Projection": {"ProjectionType": "ALL"},
    }
    assert {a["AttributeType"] for a in d["AttributeDefinitions"]} == {"S"}
    assert d["TimeToLiveSpecification"] == {"AttributeName": "expires_at", "Enabled": True}
    assert d["BillingMode"] == "PAY_PER_REQUEST"


def test_table_protection(fwd: dict) -> None:
    t = fwd["Resources"]["DedupTable"]
    assert t["DeletionPolicy"] == "Retain" and t["UpdateReplacePolicy"] == "Retain"
    p = t["Properties"]
    assert p["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"] is True
    assert p["SSESpecification"]["SSEEnabled"] is True


def test_dynatrace_parameter_names_and_defaults(fwd: dict) -> None:
    params = fwd["Parameters"]
    assert params["AwsSecretKeyName"]["Default"] == "DYNATRACE_OPENPIPELINE_INGEST_API_TOKEN"
    # Dynatrace's documented command passes only these two: everything else has a default, the code
    # included (a local path `aws cloudformation package` uploads).
    required = {k for k, v in params.items() if "Default" not in v}
    assert required == {"AwsSecretArn", "DynatraceOpenPipelineEndpoint"}
    for name in [
        "PayloadFormat", "MaxEventsPerSecond", "MaxRequestsPerSecond", "MaxConcurrency", "DedupTtlDays",
        "AliasRoleName", "AliasExternalId", "MinSeverity", "Trigger", "Architecture", "FunctionName",
        "LogRetentionDays", "AlarmTopicArn", "AlarmEmail", "PermissionsBoundaryArn", "OrganizationId", "RelayBusName",
    ]:
        assert name in params, name
    assert params["Trigger"]["Default"] == "sqs" and set(params["Trigger"]["AllowedValues"]) == {"sqs", "direct"}
    assert params["Architecture"]["Default"] == "arm64"
    assert params["AliasExternalId"].get("NoEcho") is True


@pytest.mark.parametrize("path", [FORWARDER, ORGANIZATION], ids=lambda p: p.name)
def test_endpoint_parameter_refuses_secrets_in_the_url(path) -> None:
    """The function refuses an endpoint with credentials, a query or a fragment (issue #16): the
    template refuses it before anything is created, so a token never lands in a stack parameter."""
    import re

    pattern = load_template(path)["Parameters"]["DynatraceOpenPipelineEndpoint"]["AllowedPattern"]
    ok = "https://abc12345.apps.dynatrace.com/platform/ingest/v1/security.events"
    assert re.fullmatch(pattern, ok)
    for bad in [
        "https://user:secret@abc12345.apps.dynatrace.com/platform/ingest/v1/security.events",
        ok + "?api-token=dt0c01.SECRET",
        ok + "#frag",
        "http://abc12345.apps.dynatrace.com/platform/ingest/v1/security.events",
        "https://",
    ]:
        assert not re.fullmatch(pattern, bad), bad


def test_function_environment_is_what_the_lambda_reads(fwd: dict) -> None:
    fn = res(fwd, "ForwarderFunction")
    assert set(fn["Environment"]["Variables"]) == LAMBDA_ENV
    assert fn["Runtime"] == "provided.al2023"
    assert fn["Handler"] == "bootstrap"
    assert fn["Architectures"] == [{"Ref": "Architecture"}]
    # A local path for `aws cloudformation package`, relative to the template: the file `make package` writes.
    assert fn["Code"] == "../target/lambda/dist/bootstrap.zip"
    makefile = (FORWARDER.parents[1] / "Makefile").read_text()
    assert "DIST ?= target/lambda/dist" in makefile
    assert "cp $(DIST)/$(ARCH)/bootstrap.zip $(DIST)/bootstrap.zip" in makefile
    assert (FORWARDER.parent / fn["Code"]).resolve() == (FORWARDER.parents[1] / "target/lambda/dist/bootstrap.zip").resolve()


def test_queue_timing(fwd: dict) -> None:
    timeout = res(fwd, "ForwarderFunction")["Timeout"]
    visibility = res(fwd, "FindingsQueue")["VisibilityTimeout"]
    max_lease = fwd["Parameters"]["DedupLeaseSeconds"]["MaxValue"]
    min_lease = fwd["Parameters"]["DedupLeaseSeconds"]["MinValue"]
    max_window = fwd["Parameters"]["SqsBatchingWindowSeconds"]["MaxValue"]
    assert visibility > max_lease, "a redelivered message must find an abandoned lease expired"
    # The visibility clock starts at the poller's receive, before the batching window and the claim.
    assert visibility >= max_window + max_lease + 60, "window + lease (+ a minute to start and claim) must end before the message reappears"
    assert visibility >= 6 * timeout + max_window, "AWS: visibility timeout at least 6x the function timeout plus the batching window"
    # A message must reach the DLQ before the queue's retention deletes it.
    retention = res(fwd, "FindingsQueue")["MessageRetentionPeriod"]
    assert fwd["Parameters"]["MaxReceiveCount"]["MaxValue"] * visibility < retention
    assert min_lease > timeout, "a lease must outlive the invocation holding it"


def test_event_source_mapping(fwd: dict) -> None:
    esm = res(fwd, "QueueEventSource")
    assert esm["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert esm["ScalingConfig"] == {"MaximumConcurrency": {"Ref": "MaxConcurrency"}}
    assert fwd["Resources"]["QueueEventSource"]["Condition"] == "IsSqs"
    assert esm["BatchSize"] == {"Ref": "SqsBatchSize"}
    assert esm["MaximumBatchingWindowInSeconds"] == {"Ref": "SqsBatchingWindowSeconds"}
    params = fwd["Parameters"]
    # Defaults: batches of 10 without waiting, as before the parameters existed.
    assert params["SqsBatchSize"]["Default"] == 10 and params["SqsBatchingWindowSeconds"]["Default"] == 0
    # The Lambda limits for SQS: batches up to 10,000, windows up to 300 s.
    assert 1 <= params["SqsBatchSize"]["MinValue"] and params["SqsBatchSize"]["MaxValue"] <= 10_000
    assert params["SqsBatchingWindowSeconds"]["MaxValue"] <= 300


def test_a_batch_above_ten_without_a_window_is_refused_before_deploying(fwd: dict) -> None:
    rule = fwd["Rules"]["BatchAboveTenNeedsAWindow"]
    # The rule applies exactly to the batch sizes above 10 the parameter allows.
    [[small, size]] = [rule["RuleCondition"]["Fn::Not"][0]["Fn::Contains"]]
    assert size == {"Ref": "SqsBatchSize"}
    lo = fwd["Parameters"]["SqsBatchSize"]["MinValue"]
    assert small == [str(n) for n in range(lo, 11)]
    [assertion] = rule["Assertions"]
    assert assertion["Assert"] == {"Fn::Not": [{"Fn::Equals": [{"Ref": "SqsBatchingWindowSeconds"}, "0"]}]}


def test_direct_trigger_has_retries_dlq_and_on_failure_destination(fwd: dict) -> None:
    targets = res(fwd, "FindingsRule")["Targets"]["Fn::If"]
    assert targets[0] == "IsSqs"
    direct = targets[2][0]
    assert direct["Arn"] == {"Fn::GetAtt": ["ForwarderFunction", "Arn"]}
    assert direct["RetryPolicy"]["MaximumRetryAttempts"] > 0
    assert direct["DeadLetterConfig"]["Arn"] == {"Fn::GetAtt": ["DeadLetterQueue", "Arn"]}
    cfg = fwd["Resources"]["DirectInvokeConfig"]
    assert cfg["Condition"] == "IsDirect"
    assert cfg["Properties"]["DestinationConfig"]["OnFailure"]["Destination"] == {"Fn::GetAtt": ["DeadLetterQueue", "Arn"]}
    assert fwd["Resources"]["DirectInvokePermission"]["Properties"]["Principal"] == "events.amazonaws.com"


def _statements(fwd: dict) -> dict[str, dict]:
    out = {}
    for s in res(fwd, "ForwarderRole")["Policies"][0]["PolicyDocument"]["Statement"]:
        if "Fn::If" in s:
            s = s["Fn::If"][1]
        out[s["Sid"]] = s
    return out


def test_iam_least_privilege(fwd: dict) -> None:
    role = res(fwd, "ForwarderRole")
    assert "ManagedPolicyArns" not in role
    st = _statements(fwd)
    assert st["MemberAccountAliasRole"]["Action"] == "sts:AssumeRole"
    assert st["MemberAccountAliasRole"]["Resource"] == {"Fn::Sub": "arn:${AWS::Partition}:iam::*:role/${AliasRoleName}"}
    assert st["IngestToken"] == {
        "Sid": "IngestToken", "Effect": "Allow", "Action": "secretsmanager:GetSecretValue", "Resource": {"Ref": "AwsSecretArn"}
    }
    assert st["DedupTableItems"]["Resource"] == {"Fn::GetAtt": ["DedupTable", "Arn"]}
    # Exactly what the function's code calls (crates/gdfwd-store-dynamodb; audit queries are CLI-only).
    assert sorted(st["DedupTableItems"]["Action"]) == [
        "dynamodb:BatchWriteItem", "dynamodb:DescribeTable", "dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem",
    ]
    assert sorted(st["ConsumeFindingsQueue"]["Action"]) == ["sqs:DeleteMessage", "sqs:GetQueueAttributes", "sqs:ReceiveMessage"]
    assert st["OwnLogGroup"]["Resource"] == {"Fn::GetAtt": ["ForwarderLogGroup", "Arn"]}
    assert st["ConsumeFindingsQueue"]["Resource"] == {"Fn::GetAtt": ["FindingsQueue", "Arn"]}
    # DescribeAccount on the organization's accounts when its id is given, else on any account.
    assert st["AccountNames"]["Action"] == "organizations:DescribeAccount"
    assert st["AccountNames"]["Resource"] == {"Fn::If": [
        "HasOrganizationId", {"Fn::Sub": "arn:${AWS::Partition}:organizations::*:account/${OrganizationId}/*"}, "*",
    ]}
    assert st["AccountAliases"] == {"Sid": "AccountAliases", "Effect": "Allow", "Action": "iam:ListAccountAliases", "Resource": "*"}
    # Account fields' context (tags, OU path) only when AccountFields is set, confined like DescribeAccount.
    assert sorted(st["AccountContext"]["Action"]) == [
        "organizations:DescribeOrganizationalUnit", "organizations:ListParents", "organizations:ListTagsForResource",
    ]
    assert st["AccountContext"]["Resource"] == {"Fn::If": [
        "HasOrganizationId",
        [
            {"Fn::Sub": "arn:${AWS::Partition}:organizations::*:account/${OrganizationId}/*"},
            {"Fn::Sub": "arn:${AWS::Partition}:organizations::*:ou/${OrganizationId}/ou-*"},
        ],
        "*",
    ]}
    # Nothing else: each statement above is the whole policy.
    assert set(st) == {
        "OwnLogGroup", "DedupTableItems", "IngestToken", "MemberAccountAliasRole", "AccountNames", "AccountAliases",
        "AccountContext", "ConsumeFindingsQueue", "OnFailureDestination",
    }


def test_account_fields_add_their_permissions_and_variable_only_when_set(fwd: dict) -> None:
    assert fwd["Parameters"]["AccountFields"]["Default"] == ""
    assert fwd["Conditions"]["HasAccountFields"] == {"Fn::Not": [{"Fn::Equals": [{"Ref": "AccountFields"}, ""]}]}
    [context] = [
        s for s in res(fwd, "ForwarderRole")["Policies"][0]["PolicyDocument"]["Statement"]
        if "Fn::If" in s and s["Fn::If"][1].get("Sid") == "AccountContext"
    ]
    assert context["Fn::If"][0] == "HasAccountFields"
    assert context["Fn::If"][2] == {"Ref": "AWS::NoValue"}
    env = res(fwd, "ForwarderFunction")["Environment"]["Variables"]
    assert env["ACCOUNT_FIELDS"] == {"Fn::If": ["HasAccountFields", {"Ref": "AccountFields"}, {"Ref": "AWS::NoValue"}]}


def test_alarms_cover_dlq_errors_throttles_and_age(fwd: dict) -> None:
    alarms = {
        (p["Properties"]["Namespace"], p["Properties"]["MetricName"]): p
        for p in fwd["Resources"].values()
        if p["Type"] == "AWS::CloudWatch::Alarm"
    }
    by_name = {n: r["Properties"] for n, r in fwd["Resources"].items() if r["Type"] == "AWS::CloudWatch::Alarm"}
    what = {n: (p["Namespace"], p["MetricName"], p["Dimensions"][0]["Value"], p["Threshold"]) for n, p in by_name.items()}
    dlq = {"Fn::GetAtt": ["DeadLetterQueue", "QueueName"]}
    queue = {"Fn::GetAtt": ["FindingsQueue", "QueueName"]}
    fn = {"Ref": "ForwarderFunction"}
    assert what == {
        "DeadLetterQueueNotEmptyAlarm": ("AWS/SQS", "ApproximateNumberOfMessagesVisible", dlq, 0),
        "DeadLetterQueueAgeAlarm": ("AWS/SQS", "ApproximateAgeOfOldestMessage", dlq, 7 * 86400),
        "OldestMessageAgeAlarm": ("AWS/SQS", "ApproximateAgeOfOldestMessage", queue, 900),
        "FunctionErrorsAlarm": ("AWS/Lambda", "Errors", fn, 0),
        "FunctionThrottlesAlarm": ("AWS/Lambda", "Throttles", fn, 0),
        # The function's own EMF metric (crates/gdfwd-lambda/src/metrics.rs: namespace gdfwd, FunctionName).
        "FailedFindingsAlarm": ("gdfwd", "Failed", fn, 0),
    }
    assert by_name["FailedFindingsAlarm"]["Dimensions"][0]["Name"] == "FunctionName"
    assert by_name["FailedFindingsAlarm"]["Statistic"] == "Sum"
    # SQS deletes a DLQ message after 14 days: the age alarm fires with a week left.
    assert res(fwd, "DeadLetterQueue")["MessageRetentionPeriod"] >= 2 * by_name["DeadLetterQueueAgeAlarm"]["Threshold"]


def test_outputs(fwd: dict) -> None:
    assert {
        "FunctionName", "FunctionArn", "FunctionRoleArn", "TableName", "TableArn", "QueueName", "QueueUrl",
        "QueueArn", "DeadLetterQueueName", "DeadLetterQueueUrl", "DeadLetterQueueArn",
    } <= set(fwd["Outputs"])


def test_member_role_trusts_only_the_forwarder_role() -> None:
    t = json.loads(json.dumps(load_template(MEMBER_ROLE)))
    role = res(t, "AliasReaderRole")
    [stmt] = role["AssumeRolePolicyDocument"]["Statement"]
    assert stmt["Principal"] == {"AWS": {"Ref": "ForwarderRoleArn"}}
    with_id, without_id = stmt["Condition"]["Fn::If"][1:]
    assert without_id == {"StringEquals": {"aws:PrincipalOrgID": {"Ref": "OrganizationId"}}}
    assert with_id == {
        "StringEquals": {"aws:PrincipalOrgID": {"Ref": "OrganizationId"}, "sts:ExternalId": {"Ref": "AliasExternalId"}}
    }
    [policy] = role["Policies"]
    assert [s["Action"] for s in policy["PolicyDocument"]["Statement"]] == ["iam:ListAccountAliases"]
    assert "ManagedPolicyArns" not in role
    assert role["RoleName"] == {"Ref": "AliasRoleName"}
    assert t["Parameters"]["AliasRoleName"]["Default"] == json.loads(json.dumps(load_template(FORWARDER)))["Parameters"]["AliasRoleName"]["Default"]


def test_relay_refuses_the_home_region() -> None:
    t = json.loads(json.dumps(load_template(REGION_RELAY)))
    [assertion] = t["Rules"]["NotTheHomeRegion"]["Assertions"]
    assert assertion["Assert"] == {"Fn::Not": [{"Fn::Equals": [{"Ref": "HomeRegion"}, {"Ref": "AWS::Region"}]}]}


@pytest.mark.parametrize("path", [FORWARDER, REGION_RELAY], ids=lambda p: p.name)
def test_severity_floor_is_a_json_number(path) -> None:
    t = json.loads(json.dumps(load_template(path)))
    rule = next(r["Properties"] for r in t["Resources"].values() if r["Type"] == "AWS::Events::Rule")
    pattern = rule["EventPattern"]
    assert pattern["source"] == ["aws.guardduty"] and pattern["detail-type"] == ["GuardDuty Finding"]
    severity = pattern["detail"]["Fn::If"][1]["severity"]
    if "Fn::If" in severity:
        # The forwarder's pattern carries the other filters too: the floor is there only when set.
        cond, severity, absent = severity["Fn::If"]
        assert (cond, absent) == ("HasMinSeverity", {"Ref": "AWS::NoValue"})
    floor = severity[0]["numeric"]
    assert floor[0] == ">="
    # Every branch of the nested Fn::If is a literal number (a Ref would become a string).
    values, node = [], floor[1]
    while isinstance(node, dict):
        cond, a, node = node["Fn::If"]
        values.append(a)
    values.append(node)
    assert values == [4, 7, 9] and all(isinstance(v, int) for v in values)
    assert t["Parameters"]["MinSeverity"]["AllowedValues"] == ["0", "4", "7", "9"]


@pytest.mark.parametrize(("policy", "queue"), [("FindingsQueuePolicy", "FindingsQueue"), ("DeadLetterQueuePolicy", "DeadLetterQueue")])
def test_queue_policies_admit_only_the_rules(fwd: dict, policy: str, queue: str) -> None:
    p = res(fwd, policy)
    assert p["Queues"] == [{"Ref": queue}]
    deny, stmt = p["PolicyDocument"]["Statement"]
    assert deny["Effect"] == "Deny" and deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    assert stmt["Principal"] == {"Service": "events.amazonaws.com"}
    assert stmt["Action"] == "sqs:SendMessage"
    assert stmt["Resource"] == {"Fn::GetAtt": [queue, "Arn"]}
    rules = [{"Fn::GetAtt": ["FindingsRule", "Arn"]}, {"Fn::GetAtt": ["RelayedFindingsRule", "Arn"]}]
    assert stmt["Condition"] == {"ArnEquals": {"aws:SourceArn": rules}}


def test_relayed_findings_rule_equals_the_default_bus_rule_but_for_its_bus(fwd: dict) -> None:
    """Findings relayed from other regions are treated exactly like this region's: same pattern, same targets."""
    home, relayed = res(fwd, "FindingsRule"), res(fwd, "RelayedFindingsRule")
    assert home["EventBusName"] == "default"
    assert relayed["EventBusName"] == {"Fn::GetAtt": ["RelayBus", "Name"]}
    assert (relayed["EventPattern"], relayed["Targets"]) == (home["EventPattern"], home["Targets"])
    bus = res(fwd, "RelayBus")
    assert bus["Name"] == {"Ref": "RelayBusName"} and fwd["Parameters"]["RelayBusName"]["Default"] == "gdfwd-findings"
    [stmt] = bus["Policy"]["Statement"]
    # Only this account may put events on it.
    assert stmt["Principal"] == {"AWS": {"Fn::Sub": "arn:${AWS::Partition}:iam::${AWS::AccountId}:root"}}
    assert stmt["Action"] == "events:PutEvents"
    perms = {r["Properties"]["SourceArn"]["Fn::GetAtt"][0] for r in fwd["Resources"].values() if r["Type"] == "AWS::Lambda::Permission"}
    assert perms == {"FindingsRule", "RelayedFindingsRule"}


def test_every_relay_resource_name_is_within_the_execution_roles_grants() -> None:
    """The relay template names its resources, and the StackSet's execution role may touch exactly those names:
    a resource outside its grants would fail to deploy, a grant wider than them could touch other resources."""
    from fnmatch import fnmatch

    from gdfwd_infra import REPO

    relay = json.loads(json.dumps(load_template(REGION_RELAY)))["Resources"]
    roles = json.loads(json.dumps(load_template(REPO / "stacksets" / "relay-stackset-roles.yaml")))
    statements = roles["Resources"]["ExecutionRole"]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"]
    unscoped = {"TemplateChecks", "StackSetTemplateAndNotifications"}
    grant = {s["Sid"]: s["Resource"]["Fn::Sub"].rsplit(":", 1)[1] for s in statements if s["Sid"] not in unscoped}

    def name(logical: str, prop: str) -> str:
        value = relay[logical]["Properties"][prop]
        return value["Fn::Sub"].replace("${AWS::Region}", "eu-west-1") if isinstance(value, dict) else value

    assert fnmatch(name("RelayDeadLetterQueue", "QueueName"), grant["RelayDeadLetterQueue"])
    assert fnmatch("role/" + name("RelayRole", "RoleName"), grant["RelayRole"])
    assert fnmatch("role/" + name("RelayRole", "RoleName"), grant["PassRelayRoleToEventBridge"])
    assert fnmatch("rule/" + name("RelayRule", "Name"), grant["RelayRule"])
    assert fnmatch("alarm:" + name("RelayDeadLetterAlarm", "AlarmName"), "alarm:" + grant["RelayAlarm"])
    assert fnmatch("alarm:" + name("RelayDeadLetterAgeAlarm", "AlarmName"), "alarm:" + grant["RelayAlarm"])
    assert fnmatch(name("RelayAlarmTopic", "TopicName"), grant["RelayAlarmTopic"])
    # Every resource the relay creates that has a name property is named.
    named = {"AWS::SQS::Queue": "QueueName", "AWS::IAM::Role": "RoleName", "AWS::Events::Rule": "Name",
             "AWS::CloudWatch::Alarm": "AlarmName", "AWS::SNS::Topic": "TopicName"}
    for logical, r in relay.items():
        if r["Type"] in named:
            assert named[r["Type"]] in r["Properties"], f"{logical} has no explicit name"


def test_relay_target_keeps_its_id_when_moving_to_the_relay_bus() -> None:
    """Relays deployed before the relay bus put findings on the default bus under this target Id; keeping it makes
    the upgrade switch the target in place (docs/deploy.md, Update) instead of removing one and adding another."""
    t = json.loads(json.dumps(load_template(REGION_RELAY)))
    [target] = t["Resources"]["RelayRule"]["Properties"]["Targets"]
    assert target["Id"] == "home-region-default-bus"
    assert target["Arn"] == {"Fn::Sub": "arn:${AWS::Partition}:events:${HomeRegion}:${AWS::AccountId}:event-bus/${RelayBusName}"}
    assert t["Parameters"]["RelayBusName"]["Default"] == json.loads(json.dumps(load_template(FORWARDER)))["Parameters"]["RelayBusName"]["Default"]
