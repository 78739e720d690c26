"""docs/deploy.md's "From zero" section, run as written against moto, so the guide cannot drift from the templates.

The section's commands are extracted from its fenced `bash` blocks (continuation lines joined, comments
dropped). There must be at most five of them besides the `export` of the region; the ones moto can run
(secret, `make cfn-package`, `aws cloudformation deploy`) run in bash in a copy of the repository's templates and
Makefile, with the AWS CLI pointed at moto (AWS_ENDPOINT_URL) in an organization account of its own and a
stand-in bootstrap.zip (CARGO_LAMBDA=true makes the build a no-op; the real `aws cloudformation package` uploads
the zip and the nested templates to moto's S3). The GuardDuty enrolment and `gdfwd doctor` are beyond moto: their
text is checked. The same is done for the single-account commands (Dynatrace's deploy command on the packaged
forwarder template).
"""

from __future__ import annotations

import ast
import io
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from gdfwd_infra import HOME_REGION, REPO, load_template

GUIDE = REPO / "docs" / "deploy.md"


def section(title_start: str) -> str:
    text = GUIDE.read_text()
    start = text.index("\n## " + title_start)
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else None]


def commands(text: str) -> list[str]:
    """The shell commands of the section's ```bash blocks, one string each (continuations joined)."""
    out = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        current = ""
        for line in block.splitlines():
            if not current and (not line.strip() or line.lstrip().startswith("#")):
                continue
            current += line.rstrip("\\").rstrip() + " " if line.endswith("\\") else line
            if not line.endswith("\\"):
                out.append(re.sub(r"\s+", " ", current).strip())
                current = ""
    return out


# The five commands are the section's text before its first subsection.
FROM_ZERO = commands(section("1. From zero").split("\n### ", 1)[0])
STEPS = [c for c in FROM_ZERO if not c.startswith("export ")]
SINGLE = commands(section("1. From zero").split("\n### One account only", 1)[1].split("\n### ", 1)[0])


def test_from_zero_is_five_commands_in_order() -> None:
    assert len(STEPS) == 5, STEPS[:5]
    secret, package, deploy, enrol, verify = STEPS
    assert secret.startswith("aws secretsmanager create-secret ")
    assert package.startswith("make cfn-package CODE_BUCKET=")
    assert deploy.startswith("aws cloudformation deploy --template-file target/organization.packaged.yaml ")
    # Every account, every enabled region, existing and future members.
    assert "aws ec2 describe-regions" in enrol and "aws guardduty update-organization-configuration" in enrol
    assert "--auto-enable-organization-members ALL" in enrol and "--region $r" in enrol
    assert verify.startswith("gdfwd doctor ")
    # Only the flags gdfwd doctor has.
    flags = set(re.findall(r"--[a-z-]+", verify))
    assert flags <= {"--regions", "--home-region", "--store", "--stack", "--since", "--output", "--check-endpoint"}, flags


def _moto_account_env(new_account, tmp_path: Path) -> tuple[dict[str, str], object]:
    acct = new_account()
    creds = acct.session.get_credentials().get_frozen_credentials()
    # moto reads a nested stack's TemplateURL from its own S3 only when the URL names "localhost".
    endpoint = acct.endpoint.replace("127.0.0.1", "localhost")
    env = {
        **os.environ,
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": creds.access_key,
        "AWS_SECRET_ACCESS_KEY": creds.secret_key,
        "AWS_SESSION_TOKEN": creds.token,
        "AWS_REGION": HOME_REGION,
        "AWS_DEFAULT_REGION": HOME_REGION,
        "CARGO_LAMBDA": "true",
        # The `aws` of the interpreter running the tests first (tests/infra/requirements.txt pins it).
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    for k in ("AWS_PROFILE", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
        env.pop(k, None)
    return env, acct


def _workdir(tmp_path: Path) -> Path:
    """The templates, the embed script's inputs and the Makefile, with a stand-in build in target/."""
    work = tmp_path / "repo"
    for d in ("cloudformation", "stacksets"):
        shutil.copytree(REPO / d, work / d)
    shutil.copy(REPO / "Makefile", work / "Makefile")
    dist = work / "target" / "lambda" / "dist" / "arm64"
    dist.mkdir(parents=True)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("bootstrap", "#!/bin/sh\nexit 1\n")
    (dist / "bootstrap.zip").write_bytes(buf.getvalue())
    return work


def _run(script: list[str], cwd: Path, env: dict[str, str]) -> None:
    if shutil.which("aws", path=env["PATH"]) is None:
        pytest.fail("the AWS CLI is not installed (tests/infra/requirements.txt: awscli)")
    proc = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", "\n".join(script)], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{proc.stdout[-4000:]}\nstderr:\n{proc.stderr[-4000:]}"


def _as_list(value: str) -> list[str]:
    """A CommaDelimitedList parameter's value as AWS returns it ("a,b") or as moto does ("['a', 'b']")."""
    return ast.literal_eval(value) if value.startswith("[") else value.split(",")


def test_from_zero_runs_against_moto(new_account, tmp_path: Path) -> None:
    env, acct = _moto_account_env(new_account, tmp_path)
    # The admin account is in an organization (describe-organization and list-roots answer).
    org = acct.client("organizations").create_organization(FeatureSet="ALL")["Organization"]
    work = _workdir(tmp_path)
    runnable = [c for c in FROM_ZERO if c.startswith(("export ", "aws secretsmanager", "make cfn-package", "aws cloudformation deploy"))]
    assert len(runnable) == 4
    _run(runnable, work, env)

    # package: no local path left; the code and the nested templates are in the code bucket.
    packaged = json.loads(json.dumps(load_template(work / "target" / "organization.packaged.yaml")))["Resources"]
    for nested in ("Forwarder", "RelayStackSetRoles"):
        assert packaged[nested]["Properties"]["TemplateURL"].startswith("http"), packaged[nested]
    bucket = f"gdfwd-code-{acct.account_id}-{HOME_REGION}"
    keys = [o["Key"] for o in acct.client("s3").list_objects_v2(Bucket=bucket)["Contents"]]
    assert sum(k.endswith(".template") for k in keys) == 2 and len(keys) == 3

    cfn = acct.client("cloudformation")
    stacks = {s["StackName"]: s["StackStatus"] for s in cfn.list_stacks()["StackSummaries"] if s["StackStatus"] != "DELETE_COMPLETE"}
    assert stacks.pop("gdfwd") == "CREATE_COMPLETE"
    nested = {name.split("-")[1]: status for name, status in stacks.items()}
    assert nested == {"Forwarder": "CREATE_COMPLETE", "RelayStackSetRoles": "CREATE_COMPLETE"}, stacks

    # The forwarder is named after the parent stack, with the guide's parameters and the relay bus.
    fn = acct.client("lambda").get_function_configuration(FunctionName="gdfwd-forwarder")
    env_vars = fn["Environment"]["Variables"]
    secret = acct.client("secretsmanager").describe_secret(
        SecretId="dynatrace-aws-guardduty-event-forwarder-open-pipeline-ingest-api-token"
    )
    assert env_vars["AWS_SECRET_ARN"] == secret["ARN"]
    assert env_vars["DYNATRACE_OPENPIPELINE_SECURITY_ENDPOINT"] == "https://<tenant>.apps.dynatrace.com/platform/ingest/v1/security.events"
    buses = [b["Name"] for b in acct.client("events").list_event_buses()["EventBuses"]]
    assert "gdfwd-findings" in buses
    # The parameters the guide computed reached the stack.
    params = {p["ParameterKey"]: p.get("ParameterValue") for p in cfn.describe_stacks(StackName="gdfwd")["Stacks"][0]["Parameters"]}
    assert params["OrganizationId"] == org["Id"]
    [root] = acct.client("organizations").list_roots()["Roots"]
    assert _as_list(params["MemberTargets"]) == [root["Id"]]
    regions = _as_list(params["RelayRegions"])
    assert HOME_REGION not in regions and "eu-west-1" in regions
    assert params["AlarmEmail"] == "security-oncall@example.com"
    # The relay StackSet's roles exist (moto skips the StackSet resources themselves: test_organization.py).
    iam = acct.client("iam")
    iam.get_role(RoleName="gdfwd-relay-stackset-administration")
    iam.get_role(RoleName="gdfwd-relay-stackset-execution")


def test_single_account_deploy_with_dynatraces_command(new_account, tmp_path: Path) -> None:
    """Dynatrace's documented deploy command (their two parameter names, CAPABILITY_IAM) on the packaged forwarder."""
    assert len(SINGLE) == 2, SINGLE
    package, deploy = SINGLE
    assert "TEMPLATE=cloudformation/forwarder.yaml" in package
    assert '"AwsSecretArn"=' in deploy and '"DynatraceOpenPipelineEndpoint"=' in deploy
    env, acct = _moto_account_env(new_account, tmp_path)
    work = _workdir(tmp_path)
    arn = acct.client("secretsmanager").create_secret(Name="dt-token", SecretString=json.dumps({"DYNATRACE_OPENPIPELINE_INGEST_API_TOKEN": "x"}))["ARN"]
    _run([package, deploy.replace("<secret ARN>", arn)], work, env)
    fn = acct.client("lambda").get_function_configuration(FunctionName="dynatrace-aws-guardduty-event-forwarder-forwarder")
    assert fn["Environment"]["Variables"]["AWS_SECRET_ARN"] == arn
