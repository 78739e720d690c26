"""Shared helpers and fixtures for the infrastructure tests: the repository paths, a moto server, and fresh AWS accounts in it.

Isolation: every test that deploys works in an account of its own (a random 12-digit id reached through
`sts:AssumeRole`, the way one administers an organization's member accounts), so tests never see each other's
stacks, rules or queues, and moto is never reset. A moto server shared with other suites
(`GDFWD_TEST_MOTO_ENDPOINT`) is therefore safe to use.
"""

from __future__ import annotations

import io
import json
import os
import secrets
import socket
import subprocess
import sys
import time
import uuid
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import boto3
import pytest
from botocore.config import Config
from cfnlint.decode import decode

REPO = Path(__file__).resolve().parents[2]
FORWARDER = REPO / "cloudformation" / "forwarder.yaml"
ORGANIZATION = REPO / "cloudformation" / "organization.yaml"
RELAY_ROLES = REPO / "stacksets" / "relay-stackset-roles.yaml"
MEMBER_ROLE = REPO / "stacksets" / "member-alias-role.yaml"
REGION_RELAY = REPO / "stacksets" / "region-relay.yaml"
RULES_DIR = REPO / "cloudformation" / "rules"
TABLE_DEFINITION = REPO / "cloudformation" / "table-definition.json"
FIXTURES = REPO / "tests" / "infra" / "fixtures"
GUARDDUTY_FIXTURES = REPO / "tests" / "fixtures" / "guardduty"

ALL_TEMPLATES = sorted([*(REPO / "cloudformation").glob("*.yaml"), *(REPO / "stacksets").glob("*.yaml")])

HOME_REGION = "us-east-1"
# A syntactically valid secret ARN; the stack only references it.
SECRET_ARN = "arn:aws:secretsmanager:us-east-1:111111111111:secret:dynatrace-aws-guardduty-event-forwarder-open-pipeline-ingest-api-token-AbCdEf"
ENDPOINT = "https://abc12345.apps.dynatrace.com/platform/ingest/v1/security.events"


def load_template(path: Path) -> dict:
    """A template as CloudFormation sees it (short-form tags expanded), via cfn-lint's decoder."""
    template, errors = decode(str(path))
    assert not errors, f"{path}: {errors}"
    assert template is not None
    return template


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def moto_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The moto endpoint: GDFWD_TEST_MOTO_ENDPOINT when set, else a moto_server of our own (stopped at the end)."""
    given = os.environ.get("GDFWD_TEST_MOTO_ENDPOINT")
    if given:
        yield given.rstrip("/")
        return
    port = _free_port()
    log = tmp_path_factory.mktemp("moto") / "moto_server.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                pytest.fail(f"moto_server exited with {proc.returncode}: {log.read_text()[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"moto_server did not listen on port {port}: {log.read_text()[-2000:]}")
                time.sleep(0.2)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


_CONFIG = Config(retries={"max_attempts": 2, "mode": "standard"})


@dataclass
class Account:
    """One AWS account inside moto, reached with assumed-role credentials."""

    endpoint: str
    account_id: str
    session: boto3.Session

    def client(self, service: str, region: str = HOME_REGION) -> Any:
        return self.session.client(service, endpoint_url=self.endpoint, region_name=region, config=_CONFIG)

    def deploy(
        self, name: str, template: Path, params: dict[str, str], region: str = HOME_REGION, body: str | None = None
    ) -> dict[str, str]:
        """Create a stack (from `body` when given, else the template file), require CREATE_COMPLETE, return its outputs."""
        cfn = self.client("cloudformation", region)
        cfn.create_stack(
            StackName=name,
            TemplateBody=body if body is not None else template.read_text(),
            Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in params.items()],
            Capabilities=["CAPABILITY_IAM", "CAPABILITY_NAMED_IAM"],
        )
        cfn.get_waiter("stack_create_complete").wait(StackName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 120})
        stack = cfn.describe_stacks(StackName=name)["Stacks"][0]
        assert stack["StackStatus"] == "CREATE_COMPLETE", stack.get("StackStatusReason")
        return {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}

    def resources(self, name: str, region: str = HOME_REGION) -> dict[str, dict]:
        cfn = self.client("cloudformation", region)
        summaries = cfn.list_stack_resources(StackName=name)["StackResourceSummaries"]
        return {r["LogicalResourceId"]: r for r in summaries if r.get("LogicalResourceId")}

    def upload_code(self, region: str = HOME_REGION) -> tuple[str, str]:
        """A code bucket holding a small bootstrap.zip (moto requires the object to exist)."""
        bucket = f"gdfwd-code-{uuid.uuid4().hex[:16]}"
        key = "gdfwd/bootstrap.zip"
        s3 = self.client("s3", region)
        if region == "us-east-1":
            s3.create_bucket(Bucket=bucket)
        else:
            s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": region})
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as z:
            z.writestr("bootstrap", "#!/bin/sh\nexit 1\n")
        s3.put_object(Bucket=bucket, Key=key, Body=buf.getvalue())
        return bucket, key

    def deploy_forwarder(self, name: str, **overrides: str) -> dict[str, str]:
        bucket, key = self.upload_code()
        params = {"AwsSecretArn": SECRET_ARN, "DynatraceOpenPipelineEndpoint": ENDPOINT}
        params.update(overrides)
        return self.deploy(name, FORWARDER, params, body=with_code_in_s3(FORWARDER, bucket, key))


@pytest.fixture
def new_account(moto_endpoint: str):
    """Factory: a fresh account (random id) with credentials assumed into it."""

    def make() -> Account:
        account_id = str(100000000000 + secrets.randbelow(899999999999))
        base = boto3.client(
            "sts",
            endpoint_url=moto_endpoint,
            region_name=HOME_REGION,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            config=_CONFIG,
        )
        creds = base.assume_role(
            RoleArn=f"arn:aws:iam::{account_id}:role/OrganizationAccountAccessRole",
            RoleSessionName="gdfwd-infra-tests",
        )["Credentials"]
        session = boto3.Session(
            aws_access_key_id=creds["AccessKeyId"],
            aws_secret_access_key=creds["SecretAccessKey"],
            aws_session_token=creds["SessionToken"],
        )
        account = Account(moto_endpoint, account_id, session)
        assert account.client("sts").get_caller_identity()["Account"] == account_id
        return account

    return make


def with_code_in_s3(template: Path, bucket: str, key: str) -> str:
    """The template as `aws cloudformation package` leaves it for a code object already in S3: every function's
    local Code path replaced by S3Bucket/S3Key (the deploy-guide test runs the real `package`)."""
    t = json.loads(json.dumps(load_template(template)))
    for res in t["Resources"].values():
        if res["Type"] == "AWS::Lambda::Function" and isinstance(res["Properties"].get("Code"), str):
            res["Properties"]["Code"] = {"S3Bucket": bucket, "S3Key": key}
    return json.dumps(t)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def guardduty_events() -> list[dict]:
    """The generated EventBridge GuardDuty events (one per line) shipped with the repository's fixtures."""
    path = GUARDDUTY_FIXTURES / "generated" / "eventbridge-60-findings-with-updates.ndjson"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def drain_queue(acct, queue_url: str) -> list[dict]:
    """Receives and deletes every message on `queue_url` now (no waiting); their bodies, parsed."""
    sqs = acct.client("sqs")
    bodies = []
    while True:
        msgs = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0).get("Messages", [])
        if not msgs:
            return bodies
        for m in msgs:
            bodies.append(json.loads(m["Body"]))
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=m["ReceiptHandle"])
