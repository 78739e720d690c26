"""cfn-lint (with gdfwd's rules in cloudformation/rules/) over every template, and proof that each rule bites.

Each rule is shown to fail on a deliberately bad template in tests/infra/fixtures/bad/ (named after the rule it
breaks, and breaking only that one), and on a copy of the real forwarder template with the protection it
checks removed: a rule that passes everything would fail these tests.
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest
from cfnlint.api import ManualArgs, lint_file

from gdfwd_infra import ALL_TEMPLATES, FIXTURES, FORWARDER, MEMBER_ROLE, REGION_RELAY, RELAY_ROLES, RULES_DIR, load_template

GDFWD_RULES = ["E9101", "E9102", "E9103", "E9104", "E9105", "E9106", "E9107"]
# cfn-lint of the interpreter running the tests (its console script is `cfnlint.runner:main`).
CFN_LINT = [sys.executable, "-c", "import sys; from cfnlint.runner import main; sys.exit(main())"]
BAD = sorted((FIXTURES / "bad").glob("*.yaml"))


def lint(path: Path) -> list[dict]:
    """cfn-lint (in process) with our rules appended; its findings as cfn-lint's JSON format has them."""
    matches = lint_file(path, ManualArgs(append_rules=[str(RULES_DIR)]))
    return [{"Rule": {"Id": m.rule.id}, "Message": m.message} for m in matches]


def lint_cli(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*CFN_LINT, "--append-rules", str(RULES_DIR), "--format", "json", "--", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )


def ids(findings: list[dict]) -> set[str]:
    return {f["Rule"]["Id"] for f in findings}


@pytest.mark.parametrize("template", ALL_TEMPLATES, ids=lambda p: p.name)
def test_every_template_is_clean(template: Path) -> None:
    findings = lint(template)
    assert findings == [], json.dumps(findings, indent=1)


def test_cli_exit_status_follows_the_rules() -> None:
    # scripts/check-infra relies on the command line: non-zero with a gdfwd finding, zero without.
    bad = lint_cli(FIXTURES / "bad" / "E9103-table-no-pitr.yaml")
    assert bad.returncode != 0
    assert [f["Rule"]["Id"] for f in json.loads(bad.stdout)] == ["E9103"]
    good = lint_cli(FORWARDER)
    assert (good.returncode, json.loads(good.stdout)) == (0, [])


def test_all_templates_are_checked() -> None:
    names = {p.name for p in ALL_TEMPLATES}
    assert {
        "forwarder.yaml", "organization.yaml", "member-alias-role.yaml", "region-relay.yaml", "relay-stackset-roles.yaml",
    } <= names


@pytest.mark.parametrize("bad", BAD, ids=lambda p: p.stem)
def test_bad_fixture_fails_exactly_its_rule(bad: Path) -> None:
    expected = bad.stem.split("-", 1)[0]
    assert expected in GDFWD_RULES, f"fixture {bad.name} must be named <rule id>-<what>.yaml"
    found = ids(lint(bad))
    assert found == {expected}, f"{bad.name}: expected only {expected}, got {found}"


def test_every_rule_has_a_bad_fixture() -> None:
    covered = {p.stem.split("-", 1)[0] for p in BAD}
    assert covered == set(GDFWD_RULES)


def _write(tmp_path: Path, template: dict, name: str) -> Path:
    out = tmp_path / f"{name}.json"
    out.write_text(json.dumps(template, indent=1))
    return out


def _forwarder() -> dict:
    return copy.deepcopy(json.loads(json.dumps(load_template(FORWARDER))))


def _role_statements(t: dict) -> list:
    return t["Resources"]["ForwarderRole"]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"]


def _mut_wildcard(t: dict) -> None:
    _role_statements(t)[1]["Action"].append("dynamodb:*")


def _mut_managed(t: dict) -> None:
    t["Resources"]["ForwarderRole"]["Properties"]["ManagedPolicyArns"] = [
        "arn:aws:iam::aws:policy/AmazonDynamoDBFullAccess"
    ]


def _mut_table_sse(t: dict) -> None:
    del t["Resources"]["DedupTable"]["Properties"]["SSESpecification"]


def _mut_dlq_sse(t: dict) -> None:
    t["Resources"]["DeadLetterQueue"]["Properties"]["SqsManagedSseEnabled"] = False


def _mut_pitr(t: dict) -> None:
    t["Resources"]["DedupTable"]["Properties"]["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"] = False


def _mut_redrive(t: dict) -> None:
    del t["Resources"]["FindingsQueue"]["Properties"]["RedrivePolicy"]


def _mut_direct_target_dlq(t: dict) -> None:
    # Only the `direct` branch of the Fn::If loses its DLQ: the rule must look into both branches.
    targets = t["Resources"]["FindingsRule"]["Properties"]["Targets"]["Fn::If"]
    del targets[2][0]["DeadLetterConfig"]


def _mut_on_failure(t: dict) -> None:
    del t["Resources"]["DirectInvokeConfig"]["Properties"]["DestinationConfig"]


def _mut_retention(t: dict) -> None:
    del t["Resources"]["ForwarderLogGroup"]["Properties"]["RetentionInDays"]


def _mut_log_group_name(t: dict) -> None:
    t["Resources"]["ForwarderLogGroup"]["Properties"]["LogGroupName"] = {"Fn::Sub": "/gdfwd/${AWS::StackName}"}


def _mut_queue_tls(t: dict) -> None:
    # The DLQ's policy keeps only its Allow: the TLS deny is gone.
    statements = t["Resources"]["DeadLetterQueuePolicy"]["Properties"]["PolicyDocument"]["Statement"]
    statements[:] = [s for s in statements if s["Effect"] != "Deny"]


def _mut_queue_tls_send_only(t: dict) -> None:
    # A deny of SendMessage alone leaves plain-HTTP receives open.
    statements = t["Resources"]["FindingsQueuePolicy"]["Properties"]["PolicyDocument"]["Statement"]
    statements[0]["Action"] = "sqs:SendMessage"


def _mut_role_boundary(t: dict) -> None:
    del t["Resources"]["ForwarderRole"]["Properties"]["PermissionsBoundary"]


def _mut_role_boundary_literal(t: dict) -> None:
    # A fixed boundary instead of the parameter: the organization's own boundary could not be given.
    t["Resources"]["ForwarderRole"]["Properties"]["PermissionsBoundary"] = "arn:aws:iam::aws:policy/ReadOnlyAccess"


MUTATIONS = [
    ("E9101", _mut_wildcard),
    ("E9101", _mut_managed),
    ("E9102", _mut_table_sse),
    ("E9102", _mut_dlq_sse),
    ("E9103", _mut_pitr),
    ("E9104", _mut_redrive),
    ("E9104", _mut_direct_target_dlq),
    ("E9104", _mut_on_failure),
    ("E9105", _mut_retention),
    ("E9105", _mut_log_group_name),
    ("E9106", _mut_queue_tls),
    ("E9106", _mut_queue_tls_send_only),
    ("E9107", _mut_role_boundary),
    ("E9107", _mut_role_boundary_literal),
]


@pytest.mark.parametrize(("rule", "mutate"), MUTATIONS, ids=[f"{r}-{m.__name__[5:]}" for r, m in MUTATIONS])
def test_rule_fails_on_weakened_forwarder(tmp_path: Path, rule: str, mutate) -> None:
    template = _forwarder()
    mutate(template)
    found = ids(lint(_write(tmp_path, template, rule)))
    assert rule in found, f"{rule} did not fire; found {found}"
    assert found & set(GDFWD_RULES) == {rule}, found


@pytest.mark.parametrize("template", [REGION_RELAY, RELAY_ROLES, MEMBER_ROLE], ids=lambda p: p.name)
def test_stackset_roles_without_boundary_fail(tmp_path: Path, template: Path) -> None:
    t = json.loads(json.dumps(load_template(template)))
    roles = [n for n, r in t["Resources"].items() if r["Type"] == "AWS::IAM::Role"]
    assert roles
    for name in roles:
        del t["Resources"][name]["Properties"]["PermissionsBoundary"]
    found = [f for f in lint(_write(tmp_path, t, "noboundary")) if f["Rule"]["Id"] == "E9107"]
    assert len(found) == len(roles), found


def test_relay_without_target_dlq_fails(tmp_path: Path) -> None:
    template = json.loads(json.dumps(load_template(REGION_RELAY)))
    del template["Resources"]["RelayRule"]["Properties"]["Targets"][0]["DeadLetterConfig"]
    # The relay DLQ is then referenced by nothing: E9104 fires for the target and for the orphaned queue.
    findings = [f for f in lint(_write(tmp_path, template, "relay")) if f["Rule"]["Id"] == "E9104"]
    messages = " ".join(f["Message"] for f in findings)
    assert "target home-region-default-bus has no DeadLetterConfig" in messages
    assert "RelayDeadLetterQueue: queue has no RedrivePolicy" in messages
