"""The forwarder's filter parameters (docs/filters.md): every one reaches the function, and the rules' event
pattern carries the filters EventBridge can express, never more narrowly than the function.

The pattern is built from parameters with Fn::If, Fn::Select, Fn::Split and Fn::Sub; `_Eval` evaluates the
parsed template the way CloudFormation does (AWS::NoValue dropped from objects and lists) for a set of parameter
values. The evaluated pattern is then matched against the fixture findings with moto's EventBridge matcher and
compared with what the function keeps, computed here from the filter semantics (gdfwd_model::filter), not from
the pattern. One deployment into moto checks the same end to end: findings put on the bus reach the queue
exactly when the pattern says.
"""

from __future__ import annotations

import copy
import json
import re
from typing import Any, Callable

import pytest
from moto.events.models import EventPattern

from gdfwd_infra import FORWARDER, drain_queue, guardduty_events, load_template, unique

FILTER_ENV = {
    "MinSeverity": "MIN_SEVERITY",
    "ArchivedFindings": "ARCHIVED_FINDINGS",
    "SampleFindings": "SAMPLE_FINDINGS",
    "IncludeTypes": "INCLUDE_TYPES",
    "ExcludeTypes": "EXCLUDE_TYPES",
    "IncludeAccounts": "INCLUDE_ACCOUNTS",
    "ExcludeAccounts": "EXCLUDE_ACCOUNTS",
    "IncludeRegions": "INCLUDE_REGIONS",
    "ExcludeRegions": "EXCLUDE_REGIONS",
    "IncludeResourceTypes": "INCLUDE_RESOURCE_TYPES",
    "ExcludeResourceTypes": "EXCLUDE_RESOURCE_TYPES",
}

NO_VALUE = {"Ref": "AWS::NoValue"}


@pytest.fixture(scope="module")
def fwd() -> dict:
    return json.loads(json.dumps(load_template(FORWARDER)))


class _Eval:
    """CloudFormation's evaluation of conditions and of the intrinsic functions the rules use."""

    def __init__(self, t: dict, params: dict[str, str]) -> None:
        self.t = t
        unknown = set(params) - set(t["Parameters"])
        assert not unknown, unknown
        self.params = {k: v.get("Default") for k, v in t["Parameters"].items()} | params
        for name, value in self.params.items():
            pattern = t["Parameters"][name].get("AllowedPattern")
            if pattern is not None and isinstance(value, str):
                assert re.fullmatch(pattern, value), f"{name}={value!r} is refused by its AllowedPattern"

    def cond(self, name: str) -> bool:
        return bool(self.value(self.t["Conditions"][name]))

    def value(self, v: Any) -> Any:
        if isinstance(v, list):
            return [x for x in (self.value(i) for i in v) if x is not NO_VALUE]
        if not isinstance(v, dict):
            return v
        if len(v) == 1:
            (k, a), = v.items()
            if k == "Ref":
                if a == "AWS::NoValue":
                    return NO_VALUE
                # A resource or pseudo parameter: left as it is.
                return self.params.get(a, v)
            if k == "Condition":
                return self.cond(a)
            if k == "Fn::If":
                c, yes, no = a
                return self.value(yes if self.cond(c) else no)
            if k == "Fn::Equals":
                x, y = (self.value(i) for i in a)
                return str(x) == str(y)
            if k == "Fn::Not":
                return not self.value(a[0])
            if k == "Fn::And":
                return all(self.value(i) for i in a)
            if k == "Fn::Or":
                return any(self.value(i) for i in a)
            if k == "Fn::Split":
                sep, s = a
                return self.value(s).split(sep)
            if k == "Fn::Select":
                i, lst = a
                return self.value(lst)[int(i)]
            if k == "Fn::Sub":
                text, names = (a, {}) if isinstance(a, str) else a
                names = {n: self.value(x) for n, x in names.items()}
                return re.sub(r"\$\{([^}!]+)\}", lambda m: str(names.get(m.group(1), self.params.get(m.group(1)))), text)
        out = {}
        for k, x in v.items():
            x = self.value(x)
            if x is not NO_VALUE:
                out[k] = x
        return out


def pattern(t: dict, params: dict[str, str], rule: str = "FindingsRule") -> dict:
    return _Eval(t, params).value(t["Resources"][rule]["Properties"]["EventPattern"])


def environment(t: dict, params: dict[str, str]) -> dict:
    return _Eval(t, params).value(t["Resources"]["ForwarderFunction"]["Properties"]["Environment"]["Variables"])


# ------------------------------------------------------------------ what the function keeps (docs/filters.md)

def _glob(g: str) -> re.Pattern:
    return re.compile(".*".join(re.escape(p) for p in g.split("*")), re.S)


def function_keeps(params: dict[str, str], d: dict) -> bool:
    """The function's verdict on finding `d` (the EventBridge event's detail) for these parameter values."""
    p = {"ArchivedFindings": "exclude", "SampleFindings": "include", "MinSeverity": "0"} | params
    service = d.get("service") or {}
    if p["ArchivedFindings"] == "exclude" and service.get("archived") is True:
        return False
    if p["SampleFindings"] == "exclude" and (service.get("additionalInfo") or {}).get("sample") is True:
        return False
    if p["MinSeverity"] != "0" and not (isinstance(d.get("severity"), (int, float)) and d["severity"] >= float(p["MinSeverity"])):
        return False
    values = {
        "Types": d.get("type"),
        "Accounts": d.get("accountId"),
        "Regions": d.get("region"),
        "ResourceTypes": (d.get("resource") or {}).get("resourceType"),
    }
    for kind, value in values.items():
        match: Callable[[str], bool] = (
            (lambda e: value is not None and _glob(e).fullmatch(value) is not None)
            if kind == "Types"
            else (lambda e: e == value)
        )
        exclude = [e for e in p.get(f"Exclude{kind}", "").split(",") if e]
        include = [e for e in p.get(f"Include{kind}", "").split(",") if e]
        if any(match(e) for e in exclude):
            return False
        if include and not any(match(e) for e in include):
            return False
    return True


def rule_passes(pat: dict, event: dict) -> bool:
    return EventPattern(json.dumps(pat), pat).matches_event(event)


def events_with_samples() -> list[dict]:
    """The generated EventBridge findings, one version each, every fourth one a sample finding."""
    seen, out = set(), []
    for e in guardduty_events():
        if e["detail"]["id"] in seen:
            continue
        seen.add(e["detail"]["id"])
        e = copy.deepcopy(e)
        if len(out) % 4 == 1:
            e["detail"]["service"].setdefault("additionalInfo", {})["sample"] = True
        out.append(e)
    return out


# ------------------------------------------------------------------ tests


def test_every_filter_parameter_reaches_the_function(fwd: dict) -> None:
    env = fwd["Resources"]["ForwarderFunction"]["Properties"]["Environment"]["Variables"]
    for param, var in FILTER_ENV.items():
        expected = {"Ref": param}
        if param == "MinSeverity":
            # "0" (all) leaves the variable unset: no floor, not a floor of 0.
            expected = {"Fn::If": ["HasMinSeverity", {"Ref": "MinSeverity"}, NO_VALUE]}
        assert env[var] == expected, var
    assert fwd["Parameters"]["ArchivedFindings"]["Default"] == "exclude"
    assert fwd["Parameters"]["SampleFindings"]["Default"] == "include"
    defaults = environment(fwd, {})
    assert "MIN_SEVERITY" not in defaults
    assert environment(fwd, {"MinSeverity": "7"})["MIN_SEVERITY"] == "7"
    assert environment(fwd, {"IncludeTypes": "Recon:*,Backdoor:*"})["INCLUDE_TYPES"] == "Recon:*,Backdoor:*"


def test_the_default_pattern_drops_archived_findings_only(fwd: dict) -> None:
    base = {"source": ["aws.guardduty"], "detail-type": ["GuardDuty Finding"]}
    assert pattern(fwd, {}) == base | {"detail": {"service": {"archived": [False, {"exists": False}]}}}
    # Nothing to push down: no `detail` at all (an empty parameter adds nothing).
    assert pattern(fwd, {"ArchivedFindings": "include"}) == base
    for rule in ("FindingsRule", "RelayedFindingsRule"):
        assert pattern(fwd, {"ArchivedFindings": "include", "IncludeRegions": "eu-west-1"}, rule) == base


@pytest.mark.parametrize(
    ("params", "detail"),
    [
        ({"MinSeverity": "7"}, {"severity": [{"numeric": [">=", 7]}]}),
        ({"SampleFindings": "exclude"}, {"service": {"additionalInfo": {"sample": [False, {"exists": False}]}}}),
        (
            {"IncludeTypes": "Recon:*,*:Kubernetes/*,Backdoor:EC2/C&CActivity.B"},
            {"type": [{"wildcard": "Recon:*"}, {"wildcard": "*:Kubernetes/*"}, {"wildcard": "Backdoor:EC2/C&CActivity.B"},
                      {"wildcard": "Recon:*"}, {"wildcard": "*:Kubernetes/*"}]},
        ),
        # A sixth pattern would not fit: types are left to the function.
        ({"IncludeTypes": "A:*,B:*,C:*,D:*,E:*,F:*"}, {}),
        ({"IncludeAccounts": "111122223333,444455556666"}, {"accountId": ["111122223333", "444455556666"]}),
        ({"ExcludeAccounts": "111122223333"}, {"accountId": [{"anything-but": ["111122223333"]}]}),
        # Both: the include list alone (exclude wins in the function).
        ({"IncludeAccounts": "111122223333", "ExcludeAccounts": "444455556666"}, {"accountId": ["111122223333"]}),
        # Not expressed in the pattern: the function alone.
        ({"ExcludeTypes": "Recon:*", "IncludeRegions": "eu-west-1", "ExcludeResourceTypes": "Instance"}, {}),
    ],
)
def test_the_pattern_carries_what_eventbridge_can_express(fwd: dict, params: dict, detail: dict) -> None:
    got = pattern(fwd, {"ArchivedFindings": "include"} | params)
    assert got.get("detail", {}) == detail
    assert pattern(fwd, {"ArchivedFindings": "include"} | params, "RelayedFindingsRule") == got


COMBINATIONS = [
    {},
    {"ArchivedFindings": "include"},
    {"SampleFindings": "exclude"},
    {"MinSeverity": "4"},
    {"MinSeverity": "9", "SampleFindings": "exclude"},
    {"IncludeTypes": "Backdoor:*,*:Kubernetes/*"},
    {"IncludeTypes": "Execution:EC2/MaliciousFile"},
    {"IncludeTypes": "A:*,B:*,C:*,D:*,E:*,Execution:*"},
    {"ExcludeTypes": "Execution:*", "IncludeTypes": "Execution:*,Backdoor:*"},
    {"IncludeAccounts": "{a0},{a1}"},
    {"ExcludeAccounts": "{a0}"},
    {"IncludeAccounts": "{a0},{a1}", "ExcludeAccounts": "{a1}", "MinSeverity": "7"},
    {"IncludeRegions": "eu-west-1", "ExcludeResourceTypes": "Instance", "SampleFindings": "exclude"},
]


@pytest.mark.parametrize("combo", COMBINATIONS, ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()) or "defaults")
def test_the_pattern_never_drops_what_the_function_keeps(fwd: dict, combo: dict) -> None:
    events = events_with_samples()
    accounts = sorted({e["detail"]["accountId"] for e in events})
    params = {k: v.format(a0=accounts[0], a1=accounts[1]) for k, v in combo.items()}
    pat = pattern(fwd, params)
    passes = {e["detail"]["id"] for e in events if rule_passes(pat, e)}
    keeps = {e["detail"]["id"] for e in events if function_keeps(params, e["detail"])}
    assert keeps, "the combination keeps something"
    assert keeps <= passes, f"the rule drops findings the function keeps: {sorted(keeps - passes)[:3]}"
    # The filters the pattern expresses, it expresses exactly: only the others leave work to the function.
    pushed = {"ArchivedFindings", "SampleFindings", "MinSeverity", "IncludeTypes", "IncludeAccounts", "ExcludeAccounts"}
    exact = set(params) <= pushed and len(params.get("IncludeTypes", "").split(",")) <= 5
    if exact and not (params.keys() >= {"IncludeAccounts", "ExcludeAccounts"}):
        assert passes == keeps


def test_the_packaged_forwarder_fits_a_direct_deploy(fwd: dict) -> None:
    """`aws cloudformation deploy` without --s3-bucket (Dynatrace's documented command) takes templates up to
    51,200 bytes; `package` rewrites the template in long form, which is larger than the file."""
    from awscli.customizations.cloudformation.yamlhelper import yaml_dump, yaml_parse

    size = len(yaml_dump(yaml_parse(FORWARDER.read_text())).encode())
    assert size < 51_200 - 4_096, f"{size} bytes packaged: keep a margin below 51,200"


def test_the_deployed_rule_delivers_what_the_pattern_says(new_account) -> None:
    """Deployed into moto with filters set: findings put on the default bus reach the queue exactly when the
    function would keep them (every filter set here is one the pattern expresses)."""
    events = events_with_samples()
    accounts = sorted({e["detail"]["accountId"] for e in events})
    params = {
        "MinSeverity": "4",
        "SampleFindings": "exclude",
        "IncludeTypes": "Backdoor:*,Execution:*,*:Kubernetes/*",
        "ExcludeAccounts": accounts[0],
    }
    acct = new_account()
    out = acct.deploy_forwarder(unique("gdfwd-filters"), **params)
    lam = acct.client("lambda")
    [esm] = lam.list_event_source_mappings(FunctionName=out["FunctionName"])["EventSourceMappings"]
    lam.update_event_source_mapping(UUID=esm["UUID"], Enabled=False)
    env = lam.get_function_configuration(FunctionName=out["FunctionName"])["Environment"]["Variables"]
    assert {FILTER_ENV[k]: env[FILTER_ENV[k]] for k in params} == {FILTER_ENV[k]: v for k, v in params.items()}
    assert env["ARCHIVED_FINDINGS"] == "exclude"

    entries = [
        {"Source": e["source"], "DetailType": e["detail-type"], "Detail": json.dumps(e["detail"]), "EventBusName": "default"}
        for e in events
    ]
    client = acct.client("events")
    for i in range(0, len(entries), 10):
        assert client.put_events(Entries=entries[i : i + 10])["FailedEntryCount"] == 0
    delivered = sorted(b["detail"]["id"] for b in drain_queue(acct, out["QueueUrl"]))
    want = sorted(e["detail"]["id"] for e in events if function_keeps(params, e["detail"]))
    assert want and len(want) < len(events)
    assert delivered == want
