"""cloudformation/organization.yaml and the promises every template keeps for an organization's rollout.

moto skips AWS::CloudFormation::StackSet resources (it warns and creates nothing), so the StackSets' properties
are checked on the parsed template here; the nested forwarder and relay roles are deployed into moto by
test_deploy_guide.py, through the real `aws cloudformation package` and `deploy`. Also here: every queue policy
of every template (the StackSets' embedded copies included) denies non-TLS access, every role takes the
boundary, and every alarm has an action whenever AlarmEmail or AlarmTopicArn is set (Fn::If evaluated for each
combination of the two parameters).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from gdfwd_infra import (
    ALL_TEMPLATES,
    FORWARDER,
    MEMBER_ROLE,
    ORGANIZATION,
    REGION_RELAY,
    RELAY_ROLES,
    REPO,
    load_template,
    unique,
)


def parsed(path: Path) -> dict:
    return json.loads(json.dumps(load_template(path)))


@pytest.fixture(scope="module")
def org() -> dict:
    return parsed(ORGANIZATION)


def props(t: dict, name: str) -> dict:
    return t["Resources"][name]["Properties"]


def test_member_alias_role_stackset(org: dict) -> None:
    p = props(org, "MemberAliasRoleStackSet")
    assert p["PermissionModel"] == "SERVICE_MANAGED"
    assert p["CallAs"] == "DELEGATED_ADMIN"
    # Accounts that join the organization later get the role without anyone acting.
    assert p["AutoDeployment"] == {"Enabled": True, "RetainStacksOnAccountRemoval": False}
    assert p["Capabilities"] == ["CAPABILITY_NAMED_IAM"]
    [group] = p["StackInstancesGroup"]
    assert group["DeploymentTargets"] == {"OrganizationalUnitIds": {"Ref": "MemberTargets"}}
    assert group["Regions"] == [{"Ref": "AWS::Region"}]  # IAM is global
    assert org["Parameters"]["MemberTargets"]["Type"] == "CommaDelimitedList"
    assert org["Resources"]["MemberAliasRoleStackSet"]["Condition"] == "HasMemberTargets"
    params = {x["ParameterKey"]: x["ParameterValue"] for x in p["Parameters"]}
    assert params["ForwarderRoleArn"] == {"Fn::GetAtt": ["Forwarder", "Outputs.FunctionRoleArn"]}
    assert params["OrganizationId"] == {"Ref": "OrganizationId"}
    assert params["AliasRoleName"] == {"Ref": "AliasRoleName"}
    # Every parameter given is one the member template takes.
    assert set(params) <= set(parsed(MEMBER_ROLE)["Parameters"])
    assert p["OperationPreferences"]["FailureTolerancePercentage"] == 100


def test_region_relay_stackset(org: dict) -> None:
    p = props(org, "RegionRelayStackSet")
    assert p["PermissionModel"] == "SELF_MANAGED"
    assert "CallAs" not in p and "AutoDeployment" not in p
    assert p["AdministrationRoleARN"] == {"Fn::GetAtt": ["RelayStackSetRoles", "Outputs.AdministrationRoleArn"]}
    assert p["ExecutionRoleName"] == {"Fn::GetAtt": ["RelayStackSetRoles", "Outputs.ExecutionRoleName"]}
    [group] = p["StackInstancesGroup"]
    assert group == {"DeploymentTargets": {"Accounts": [{"Ref": "AWS::AccountId"}]}, "Regions": {"Ref": "RelayRegions"}}
    assert org["Parameters"]["RelayRegions"]["Type"] == "CommaDelimitedList"
    # One region failing neither stops the others nor fails the operation (which would roll back the stack).
    prefs = p["OperationPreferences"]
    assert prefs["RegionConcurrencyType"] == "PARALLEL"
    assert prefs["FailureTolerancePercentage"] == 100 and prefs["MaxConcurrentPercentage"] == 100
    assert prefs["ConcurrencyMode"] == "SOFT_FAILURE_TOLERANCE"
    params = {x["ParameterKey"]: x["ParameterValue"] for x in p["Parameters"]}
    assert params["HomeRegion"] == {"Ref": "AWS::Region"}
    assert params["RelayBusName"] == {"Ref": "RelayBusName"}
    assert params["PermissionsBoundaryArn"] == {"Ref": "PermissionsBoundaryArn"}
    assert params["AlarmEmail"] == {"Ref": "AlarmEmail"}
    assert set(params) <= set(parsed(REGION_RELAY)["Parameters"])
    # The StackSet's name is the one its administration role admits (aws:SourceArn) and its stacks' prefix.
    roles = props(org, "RelayStackSetRoles")["Parameters"]
    assert roles["RelayStackSetName"] == p["StackSetName"] == "gdfwd-region-relay"
    assert org["Resources"]["RegionRelayStackSet"]["DependsOn"] == "Forwarder"


def test_stackset_templates_are_the_files(org: dict) -> None:
    """The embedded TemplateBody copies equal stacksets/*.yaml (scripts/embed-stackset-templates writes them)."""
    assert props(org, "MemberAliasRoleStackSet")["TemplateBody"] == MEMBER_ROLE.read_text()
    assert props(org, "RegionRelayStackSet")["TemplateBody"] == REGION_RELAY.read_text()
    check = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "embed-stackset-templates"), "--check"], capture_output=True, text=True
    )
    assert check.returncode == 0, check.stdout + check.stderr


def test_embed_script_repairs_a_stale_copy(tmp_path: Path) -> None:
    """A copy that differs from its file is rewritten from the file; nothing outside the copies changes."""
    import importlib.util
    from importlib.machinery import SourceFileLoader

    loader = SourceFileLoader("embed", str(REPO / "scripts" / "embed-stackset-templates"))
    spec = importlib.util.spec_from_loader("embed", loader)
    assert spec is not None
    embed = importlib.util.module_from_spec(spec)
    loader.exec_module(embed)
    stale = ORGANIZATION.read_text().replace("GuardDutyForwarderAliasReader", "StaleName")
    out = tmp_path / "organization.yaml"
    out.write_text(embed.embed(stale))
    repaired = parsed(out)
    assert props(repaired, "MemberAliasRoleStackSet")["TemplateBody"] == MEMBER_ROLE.read_text()
    assert props(repaired, "RegionRelayStackSet")["TemplateBody"] == REGION_RELAY.read_text()
    # Outside the copies the (stale) text is left alone: the script writes only what it owns.
    assert repaired["Parameters"]["AliasRoleName"]["Default"] == "StaleName"


def test_nested_forwarder_gets_every_forwarder_parameter(org: dict) -> None:
    """Every forwarder parameter but FunctionName is an organization parameter with the same definition (so a
    value valid for one is valid for the other) and is passed through unchanged."""
    fwd = parsed(FORWARDER)["Parameters"]
    nested = props(org, "Forwarder")
    assert nested["TemplateURL"] == "forwarder.yaml"
    passed = nested["Parameters"]
    assert set(passed) == set(fwd)
    assert passed["FunctionName"] == {"Fn::Sub": "${AWS::StackName}-forwarder"}
    for name, definition in fwd.items():
        if name == "FunctionName":
            continue
        assert passed[name] == {"Ref": name}, name
        if name == "OrganizationId":
            # Required here (the StackSets need it), optional for a single account.
            assert "Default" not in org["Parameters"][name]
            continue
        assert org["Parameters"][name] == definition, name
    relay_roles = props(org, "RelayStackSetRoles")
    assert relay_roles["TemplateURL"] == "../stacksets/relay-stackset-roles.yaml"
    assert (ORGANIZATION.parent / relay_roles["TemplateURL"]).resolve() == RELAY_ROLES.resolve()


def _templates_with_embedded() -> list[tuple[str, dict]]:
    out = [(p.name, parsed(p)) for p in ALL_TEMPLATES]
    o = parsed(ORGANIZATION)
    for name in ("MemberAliasRoleStackSet", "RegionRelayStackSet"):
        body = props(o, name)["TemplateBody"]
        tmp = REPO / "target" / f"embedded-{name}-{unique('t')}.yaml"
        tmp.parent.mkdir(exist_ok=True)
        tmp.write_text(body)
        try:
            out.append((f"organization.yaml:{name}", parsed(tmp)))
        finally:
            tmp.unlink()
    return out


TEMPLATES = _templates_with_embedded()


@pytest.mark.parametrize(("name", "t"), TEMPLATES, ids=[n for n, _ in TEMPLATES])
def test_every_queue_denies_non_tls(name: str, t: dict) -> None:
    res = t["Resources"]
    queues = {n for n, r in res.items() if r["Type"] == "AWS::SQS::Queue"}
    denied = set()
    for r in res.values():
        if r["Type"] != "AWS::SQS::QueuePolicy":
            continue
        for s in r["Properties"]["PolicyDocument"]["Statement"]:
            if (
                s["Effect"] == "Deny"
                and s["Principal"] == "*"
                and s["Action"] == "sqs:*"
                and s["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
            ):
                denied |= {q["Ref"] for q in r["Properties"]["Queues"]}
    assert denied == queues


BOUNDARY = {"Fn::If": ["HasPermissionsBoundary", {"Ref": "PermissionsBoundaryArn"}, {"Ref": "AWS::NoValue"}]}
MEMBER_BOUNDARY = {"Fn::If": [
    "HasPermissionsBoundary",
    {"Fn::Sub": "arn:${AWS::Partition}:iam::${AWS::AccountId}:policy/${PermissionsBoundaryPolicyName}"},
    {"Ref": "AWS::NoValue"},
]}


@pytest.mark.parametrize(("name", "t"), TEMPLATES, ids=[n for n, _ in TEMPLATES])
def test_every_role_takes_the_boundary(name: str, t: dict) -> None:
    roles = {n: r["Properties"] for n, r in t["Resources"].items() if r["Type"] == "AWS::IAM::Role"}
    is_member = "AliasReaderRole" in roles
    for role, p in roles.items():
        assert p.get("PermissionsBoundary") == (MEMBER_BOUNDARY if is_member else BOUNDARY), role
    if roles:
        param = "PermissionsBoundaryPolicyName" if is_member else "PermissionsBoundaryArn"
        assert t["Parameters"][param]["Default"] == ""
        assert t["Conditions"]["HasPermissionsBoundary"] == {"Fn::Not": [{"Fn::Equals": [{"Ref": param}, ""]}]}
    # Nested stacks and StackSets hand the boundary on.
    for n, r in t["Resources"].items():
        if r["Type"] == "AWS::CloudFormation::Stack":
            assert r["Properties"]["Parameters"]["PermissionsBoundaryArn"] == {"Ref": "PermissionsBoundaryArn"}, n


class _Eval:
    """Just enough of CloudFormation's condition and Fn::If evaluation for the alarm templates."""

    def __init__(self, t: dict, params: dict[str, str]) -> None:
        self.t = t
        self.params = {k: v.get("Default") for k, v in t["Parameters"].items()} | params

    def cond(self, name: str) -> bool:
        return self.expr(self.t["Conditions"][name])

    def expr(self, e: Any) -> Any:
        if isinstance(e, dict) and len(e) == 1:
            (k, v), = e.items()
            if k == "Fn::Not":
                return not self.expr(v[0])
            if k == "Fn::Or":
                return any(self.expr(x) for x in v)
            if k == "Fn::And":
                return all(self.expr(x) for x in v)
            if k == "Fn::Equals":
                return self.expr(v[0]) == self.expr(v[1])
            if k == "Condition":
                return self.cond(v)
            if k == "Ref" and v in self.params:
                return self.params[v]
        return e

    def value(self, v: Any) -> Any:
        """Resolve Fn::If and drop AWS::NoValue, recursively."""
        if isinstance(v, dict) and list(v) == ["Fn::If"]:
            c, a, b = v["Fn::If"]
            return self.value(a if self.cond(c) else b)
        if isinstance(v, list):
            return [x for x in (self.value(i) for i in v) if x != {"Ref": "AWS::NoValue"}]
        return v


ALARM_TEMPLATES = [(n, t) for n, t in TEMPLATES if any(r["Type"] == "AWS::CloudWatch::Alarm" for r in t["Resources"].values())]


@pytest.mark.parametrize(("name", "t"), ALARM_TEMPLATES, ids=[n for n, _ in ALARM_TEMPLATES])
@pytest.mark.parametrize(("email", "topic"), [("ops@example.com", ""), ("", "arn:aws:sns:us-east-1:111111111111:t"), ("ops@example.com", "arn:aws:sns:us-east-1:111111111111:t"), ("", "")])
def test_every_alarm_has_an_action_when_a_destination_is_set(name: str, t: dict, email: str, topic: str) -> None:
    ev = _Eval(t, {"AlarmEmail": email, "AlarmTopicArn": topic})
    own_topic = next(n for n, r in t["Resources"].items() if r["Type"] == "AWS::SNS::Topic")
    expected = ([{"Ref": own_topic}] if email else []) + ([{"Ref": "AlarmTopicArn"}] if topic else [])
    for alarm, r in t["Resources"].items():
        if r["Type"] != "AWS::CloudWatch::Alarm":
            continue
        for key in ("AlarmActions", "OKActions"):
            got = ev.value(r["Properties"][key])
            if expected:
                assert got == expected, (alarm, key, got)
            else:
                assert got == {"Ref": "AWS::NoValue"}, (alarm, key, got)
    # The topic exists exactly when an address is given, and mails that address.
    assert ev.cond(t["Resources"][own_topic]["Condition"]) == bool(email)


def test_forwarder_alarm_topic_and_boundary_in_moto(new_account) -> None:
    """Deployed with AlarmEmail and a boundary: the topic mails the address, the function's role has the boundary."""
    acct = new_account()
    boundary = f"arn:aws:iam::{acct.account_id}:policy/OrgBoundary"
    acct.client("iam").create_policy(
        PolicyName="OrgBoundary",
        PolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sqs:ReceiveMessage", "Resource": "*"}]}),
    )
    out = acct.deploy_forwarder(unique("gdfwd-alarm"), AlarmEmail="ops@example.com", PermissionsBoundaryArn=boundary)
    sns = acct.client("sns")
    [sub] = sns.list_subscriptions_by_topic(TopicArn=out["AlarmTopicArn"])["Subscriptions"]
    assert (sub["Protocol"], sub["Endpoint"]) == ("email", "ops@example.com")
    role = acct.client("iam").get_role(RoleName=out["FunctionRoleArn"].rsplit("/", 1)[1])["Role"]
    assert role["PermissionsBoundary"]["PermissionsBoundaryArn"] == boundary
    # The relay bus exists, named for the relays.
    assert out["RelayBusArn"].endswith(":event-bus/gdfwd-findings")


def test_outputs_are_the_forwarders(org: dict) -> None:
    """Tools and the guide read the same outputs from an organization stack as from a forwarder stack."""
    fwd = parsed(FORWARDER)
    for name, out in fwd["Outputs"].items():
        mine = org["Outputs"][name]
        assert mine["Value"] == {"Fn::GetAtt": ["Forwarder", f"Outputs.{name}"]}, name
        assert mine.get("Condition") == out.get("Condition"), name
        if "Condition" in out:
            # The condition means the same in both templates.
            assert org["Conditions"][out["Condition"]] == fwd["Conditions"][out["Condition"]]
