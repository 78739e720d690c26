"""gdfwd's own policy rules, run as cfn-lint custom rules: `cfn-lint --append-rules cloudformation/rules ...`.

Why cfn-lint rules rather than a separate checker: cfn-lint already decodes CloudFormation YAML (short-form
tags, line numbers) and reports in one place with one exit code; every template is linted by the same
command that enforces these rules (scripts/check-infra).

Rules (ids E91xx, outside cfn-lint's own ranges):
- E9101 no wildcard IAM actions (`*`, `svc:*`, `svc:Get*`) in an Allow, no `NotAction` in an Allow, no broad
  AWS-managed policies (`*Execute`, `*FullAccess`, `AdministratorAccess`, `PowerUserAccess`); a Deny may use
  wildcards (it can only take away);
- E9102 encryption at rest: DynamoDB tables `SSESpecification.SSEEnabled: true`, SQS queues
  `SqsManagedSseEnabled: true` or a `KmsMasterKeyId`;
- E9103 DynamoDB point-in-time recovery on;
- E9104 dead-letter queues: every SQS queue has a redrive policy or is itself a DLQ, every EventBridge rule
  target has a `DeadLetterConfig`, every `AWS::Lambda::EventInvokeConfig` has an on-failure destination;
- E9105 log retention: every log group sets `RetentionInDays`, and every Lambda function writes to a log
  group of this template (so Lambda never creates a never-expiring one);
- E9106 TLS only: every SQS queue has a queue policy in this template with a Deny of every action
  (`sqs:*`) to every principal when `aws:SecureTransport` is `false`;
- E9107 permissions boundary: every IAM role sets `PermissionsBoundary` from a `PermissionsBoundary*`
  parameter (directly or as one branch of an `Fn::If`), so an organization's required boundary reaches it.

Conditions (`Fn::If`) are checked branch by branch: a violation in either branch is a violation, because
either can be deployed. This file must stay self-contained: cfn-lint imports it by file name.
"""

from __future__ import annotations

import json
import re
from typing import Any, Iterator

from cfnlint.rules import CloudFormationLintRule, RuleMatch

_NO_VALUE = {"Ref": "AWS::NoValue"}


def _branches(value: Any) -> Iterator[Any]:
    """Every concrete value `value` can take: both sides of each Fn::If, AWS::NoValue dropped."""
    if isinstance(value, dict) and len(value) == 1 and "Fn::If" in value:
        args = value["Fn::If"]
        if isinstance(args, list) and len(args) == 3:
            for side in args[1:]:
                yield from _branches(side)
            return
    if value == _NO_VALUE:
        return
    yield value


def _items(value: Any) -> Iterator[Any]:
    """The elements of a list-valued property, through Fn::If at list and element level."""
    for concrete in _branches(value):
        if isinstance(concrete, list):
            for item in concrete:
                yield from _branches(item)
        else:
            yield concrete


def _get(obj: Any, *keys: str) -> list[Any]:
    """All values at obj[k1][k2]... over every Fn::If branch (empty when absent on some branch)."""
    current = list(_branches(obj))
    for key in keys:
        nxt = []
        for c in current:
            if isinstance(c, dict) and key in c:
                nxt.extend(_branches(c[key]))
        current = nxt
    return current


def _present_on_all_branches(obj: Any, *keys: str) -> bool:
    """True when obj[k1][k2]... exists whichever Fn::If branches are taken."""
    for concrete in _branches(obj):
        if not keys:
            return True
        if not isinstance(concrete, dict) or keys[0] not in concrete:
            return False
        if not any(True for _ in _branches(concrete[keys[0]])):
            return False
        if not all(_present_on_all_branches(v, *keys[1:]) for v in _branches(concrete[keys[0]])):
            return False
    return True


def _is_true(value: Any) -> bool:
    return value is True or (isinstance(value, str) and value.lower() == "true")


def _all_true(obj: Any, *keys: str) -> bool:
    values = _get(obj, *keys)
    return _present_on_all_branches(obj, *keys) and bool(values) and all(_is_true(v) for v in values)


def _strings(value: Any) -> Iterator[str]:
    """Every literal string inside a value (through lists, Fn::If and other intrinsics)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)


def _resources(cfn: Any, types: list[str]) -> list[tuple[str, dict]]:
    out = []
    for name, res in (cfn.template.get("Resources") or {}).items():
        if isinstance(res, dict) and res.get("Type") in types:
            props = res.get("Properties") or {}
            out.append((name, props if isinstance(props, dict) else {}))
    return out


def _statements(node: Any, path: list) -> Iterator[tuple[list, dict]]:
    """Every IAM policy statement (a dict with an Effect) anywhere below node, with its path."""
    if isinstance(node, dict):
        if "Effect" in node and ("Action" in node or "NotAction" in node):
            yield path, node
        for k, v in node.items():
            yield from _statements(v, path + [k])
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _statements(v, path + [i])


_BROAD_MANAGED = re.compile(r"(Execute|FullAccess|AdministratorAccess|PowerUserAccess)\b")


class NoWildcardActions(CloudFormationLintRule):
    """IAM statements name each action; no broad managed policies."""

    id = "E9101"
    shortdesc = "gdfwd: no wildcard IAM actions or broad managed policies"
    description = "IAM statements must list exact actions; AWS-managed *Execute/*FullAccess policies are forbidden."
    source_url = "docs/architecture.md"
    tags = ["gdfwd", "iam", "security"]

    def match(self, cfn: Any) -> list[RuleMatch]:
        matches = []
        for name, res in (cfn.template.get("Resources") or {}).items():
            if not isinstance(res, dict):
                continue
            props = res.get("Properties") or {}
            base = ["Resources", name, "Properties"]
            for path, stmt in _statements(props, base):
                effects = list(_strings(stmt.get("Effect")))
                if "Allow" not in effects:
                    continue
                if "NotAction" in stmt:
                    matches.append(RuleMatch(path + ["NotAction"], f"{name}: NotAction in an Allow statement grants every other action"))
                for action in _strings(stmt.get("Action")):
                    if "*" in action:
                        matches.append(RuleMatch(path + ["Action"], f"{name}: wildcard action {action!r}"))
            for arn in _strings(props.get("ManagedPolicyArns")):
                if _BROAD_MANAGED.search(arn):
                    matches.append(RuleMatch(base + ["ManagedPolicyArns"], f"{name}: broad managed policy {arn!r}"))
        return matches


class EncryptionAtRest(CloudFormationLintRule):
    """Tables and queues are encrypted."""

    id = "E9102"
    shortdesc = "gdfwd: DynamoDB tables and SQS queues are encrypted"
    description = "DynamoDB SSESpecification.SSEEnabled must be true; SQS queues need SqsManagedSseEnabled or KmsMasterKeyId."
    source_url = "docs/architecture.md"
    tags = ["gdfwd", "encryption", "security"]

    def match(self, cfn: Any) -> list[RuleMatch]:
        matches = []
        for name, props in _resources(cfn, ["AWS::DynamoDB::Table"]):
            if not _all_true(props, "SSESpecification", "SSEEnabled"):
                matches.append(RuleMatch(["Resources", name, "Properties"], f"{name}: SSESpecification.SSEEnabled must be true"))
        for name, props in _resources(cfn, ["AWS::SQS::Queue"]):
            kms = _present_on_all_branches(props, "KmsMasterKeyId")
            if not (kms or _all_true(props, "SqsManagedSseEnabled")):
                matches.append(RuleMatch(["Resources", name, "Properties"], f"{name}: set SqsManagedSseEnabled: true or KmsMasterKeyId"))
        return matches


class PointInTimeRecovery(CloudFormationLintRule):
    """DynamoDB tables have PITR on."""

    id = "E9103"
    shortdesc = "gdfwd: DynamoDB point-in-time recovery on"
    description = "PointInTimeRecoverySpecification.PointInTimeRecoveryEnabled must be true."
    source_url = "docs/architecture.md"
    tags = ["gdfwd", "dynamodb", "backup"]

    def match(self, cfn: Any) -> list[RuleMatch]:
        return [
            RuleMatch(["Resources", name, "Properties"], f"{name}: PointInTimeRecoveryEnabled must be true")
            for name, props in _resources(cfn, ["AWS::DynamoDB::Table"])
            if not _all_true(props, "PointInTimeRecoverySpecification", "PointInTimeRecoveryEnabled")
        ]


def _ref_target(value: Any) -> str | None:
    """The logical id a `!GetAtt X.Arn` / `!Ref X` points at."""
    if isinstance(value, dict):
        if "Fn::GetAtt" in value:
            ga = value["Fn::GetAtt"]
            if isinstance(ga, list) and ga:
                return str(ga[0])
            if isinstance(ga, str):
                return ga.split(".", 1)[0]
        if "Ref" in value and isinstance(value["Ref"], str):
            return value["Ref"]
    return None


class DeadLetterQueues(CloudFormationLintRule):
    """Nothing is dropped silently: queues, rule targets and async invocations all have a dead-letter path."""

    id = "E9104"
    shortdesc = "gdfwd: dead-letter queues on every queue, rule target and async invocation"
    description = (
        "Each SQS queue has a RedrivePolicy or is used as a dead-letter queue; each EventBridge rule target has "
        "DeadLetterConfig; each Lambda EventInvokeConfig has DestinationConfig.OnFailure."
    )
    source_url = "docs/architecture.md"
    tags = ["gdfwd", "reliability"]

    def match(self, cfn: Any) -> list[RuleMatch]:
        matches = []
        resources = cfn.template.get("Resources") or {}
        dlq_ids: set[str] = set()
        for res in resources.values():
            if not isinstance(res, dict):
                continue
            props = res.get("Properties") or {}
            for v in _get(props, "RedrivePolicy", "deadLetterTargetArn"):
                dlq_ids.add(_ref_target(v) or "")
            for target in _items(props.get("Targets")):
                for v in _get(target, "DeadLetterConfig", "Arn"):
                    dlq_ids.add(_ref_target(v) or "")
            for v in _get(props, "DestinationConfig", "OnFailure", "Destination"):
                dlq_ids.add(_ref_target(v) or "")
        for name, props in _resources(cfn, ["AWS::SQS::Queue"]):
            if name not in dlq_ids and not _present_on_all_branches(props, "RedrivePolicy", "deadLetterTargetArn"):
                matches.append(RuleMatch(["Resources", name, "Properties"], f"{name}: queue has no RedrivePolicy and is no dead-letter queue"))
        for name, props in _resources(cfn, ["AWS::Events::Rule"]):
            for i, target in enumerate(_items(props.get("Targets"))):
                if not _present_on_all_branches(target, "DeadLetterConfig", "Arn"):
                    tid = target.get("Id", i) if isinstance(target, dict) else i
                    matches.append(RuleMatch(["Resources", name, "Properties", "Targets"], f"{name}: target {tid} has no DeadLetterConfig"))
        for name, props in _resources(cfn, ["AWS::Lambda::EventInvokeConfig"]):
            if not _present_on_all_branches(props, "DestinationConfig", "OnFailure", "Destination"):
                matches.append(RuleMatch(["Resources", name, "Properties"], f"{name}: no DestinationConfig.OnFailure"))
        return matches


def _norm_name(value: Any) -> Any:
    """A log group / function name as a comparable value: `!Sub "x"` and "x" compare equal, and so do
    `!Sub ["x", vars]` forms with equal variables (as a string plus the variables' JSON)."""
    if isinstance(value, dict) and list(value) == ["Fn::Sub"]:
        sub = value["Fn::Sub"]
        if isinstance(sub, str):
            return sub
        if isinstance(sub, list) and len(sub) == 2 and isinstance(sub[0], str):
            return (sub[0], json.dumps(sub[1], sort_keys=True, default=str))
    return value


class LogRetention(CloudFormationLintRule):
    """Logs expire: every log group has a retention, and functions log only to such groups."""

    id = "E9105"
    shortdesc = "gdfwd: log groups set RetentionInDays; functions use them"
    description = (
        "Each AWS::Logs::LogGroup sets RetentionInDays; each Lambda function either sets LoggingConfig.LogGroup "
        "or has a log group named /aws/lambda/<FunctionName> in the same template."
    )
    source_url = "docs/architecture.md"
    tags = ["gdfwd", "logs", "cost"]

    def match(self, cfn: Any) -> list[RuleMatch]:
        matches = []
        group_names = []
        for name, props in _resources(cfn, ["AWS::Logs::LogGroup"]):
            if not _present_on_all_branches(props, "RetentionInDays"):
                matches.append(RuleMatch(["Resources", name, "Properties"], f"{name}: RetentionInDays is not set"))
            if "LogGroupName" in props:
                group_names.append(_norm_name(props["LogGroupName"]))
        for name, props in _resources(cfn, ["AWS::Lambda::Function"]):
            if _present_on_all_branches(props, "LoggingConfig", "LogGroup"):
                continue
            fn_name = _norm_name(props.get("FunctionName"))
            expected: Any = None
            if isinstance(fn_name, str):
                expected = "/aws/lambda/" + fn_name
            elif isinstance(fn_name, tuple):
                expected = ("/aws/lambda/" + fn_name[0], fn_name[1])
            if expected is None or expected not in group_names:
                matches.append(
                    RuleMatch(
                        ["Resources", name, "Properties"],
                        f"{name}: no log group with retention for this function (Lambda would create one that never expires)",
                    )
                )
        return matches


def _is_tls_deny(stmt: Any) -> bool:
    """A statement denying every SQS action to everyone when the request is not over TLS."""
    if not isinstance(stmt, dict) or stmt.get("Effect") != "Deny":
        return False
    actions = set(_strings(stmt.get("Action")))
    principal = stmt.get("Principal")
    everyone = principal == "*" or (isinstance(principal, dict) and principal.get("AWS") == "*")
    cond = stmt.get("Condition")
    flag = None
    if isinstance(cond, dict) and isinstance(cond.get("Bool"), dict):
        flag = cond["Bool"].get("aws:SecureTransport")
    return everyone and actions & {"sqs:*", "*"} != set() and flag in ("false", False)


class QueuesRequireTls(CloudFormationLintRule):
    """Queues refuse plain-HTTP access."""

    id = "E9106"
    shortdesc = "gdfwd: every SQS queue denies access without TLS"
    description = (
        "Each AWS::SQS::Queue is listed in an AWS::SQS::QueuePolicy of this template whose document denies "
        "sqs:* to Principal * on Bool aws:SecureTransport false."
    )
    source_url = "docs/architecture.md"
    tags = ["gdfwd", "sqs", "security"]

    def match(self, cfn: Any) -> list[RuleMatch]:
        protected: set[str] = set()
        for _, props in _resources(cfn, ["AWS::SQS::QueuePolicy"]):
            statements = [s for stmts in _get(props, "PolicyDocument", "Statement") for s in _items(stmts)]
            if not any(_is_tls_deny(s) for s in statements):
                continue
            for q in _items(props.get("Queues")):
                protected.add(_ref_target(q) or "")
        return [
            RuleMatch(["Resources", name, "Properties"], f"{name}: no queue policy denies access without TLS (aws:SecureTransport false)")
            for name, _ in _resources(cfn, ["AWS::SQS::Queue"])
            if name not in protected
        ]


def _refs_boundary_parameter(value: Any, parameters: dict) -> bool:
    """The value is a Ref to a PermissionsBoundary* parameter, directly, through Fn::If (the other branch
    AWS::NoValue), or inside a Fn::Sub that uses one."""
    for concrete in _branches(value):
        if isinstance(concrete, dict) and "Ref" in concrete:
            if not (str(concrete["Ref"]).startswith("PermissionsBoundary") and concrete["Ref"] in parameters):
                return False
        elif isinstance(concrete, dict) and "Fn::Sub" in concrete:
            text = " ".join(_strings(concrete["Fn::Sub"]))
            if not any(f"${{{p}}}" in text for p in parameters if p.startswith("PermissionsBoundary")):
                return False
        else:
            return False
    return True


class RolesTakeTheBoundary(CloudFormationLintRule):
    """Roles carry the organization's permissions boundary when one is given."""

    id = "E9107"
    shortdesc = "gdfwd: every IAM role takes the PermissionsBoundary parameter"
    description = (
        "Each AWS::IAM::Role sets PermissionsBoundary from a PermissionsBoundary* parameter of the template "
        "(an Fn::If whose other branch is AWS::NoValue is fine)."
    )
    source_url = "docs/architecture.md"
    tags = ["gdfwd", "iam", "security"]

    def match(self, cfn: Any) -> list[RuleMatch]:
        parameters = cfn.template.get("Parameters") or {}
        matches = []
        for name, props in _resources(cfn, ["AWS::IAM::Role"]):
            value = props.get("PermissionsBoundary")
            if value is None or not _refs_boundary_parameter(value, parameters):
                matches.append(
                    RuleMatch(["Resources", name, "Properties"], f"{name}: PermissionsBoundary must come from a PermissionsBoundary* parameter")
                )
        return matches
