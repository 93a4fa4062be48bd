"""The data bucket as the hosts use it: the host role's S3 grants are exactly what the proxy's sealed-key copies and
the audit export use, the bucket refuses a put that could replace an object, and the hosts run the export from a
timer. The calls are the real code's, made against moto (DynamoDB and S3 with object lock) from the synthesized
proxy environment and unit, and evaluated against the synthesized host role and S3 endpoint policies.

Before: the host role had s3:GetObject on the sealed blobs and nothing wrote to the bucket; no unit exported the log."""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator
from typing import Any

import pytest

from cdk import naming, user_data
from cdk.state_stack import OBJECT_LOCK_DAYS
from parent_proxy import audit_exports, sealed_copies
from tests.cdk.boot_script import boot_script, proxy_env, unit_file
from tests.cdk.policy_walk import allows, as_list, find_one, resources_of_type, role_statements, statements

IDENTITY = "WaiaasIdentity"
STATE = "WaiaasState"
NETWORK = "WaiaasNetwork"
EXPORT_UNIT = "/etc/systemd/system/waiaas-audit-export.service"
EXPORT_TIMER = "/etc/systemd/system/waiaas-audit-export.timer"


def _host_statements(templates: dict[str, Any]) -> list[dict[str, Any]]:
    return role_statements(templates[IDENTITY], naming.ENCLAVE_HOST_ROLE)


def _data_arn(config: Any) -> str:
    return f"arn:aws:s3:::{naming.data_bucket_name(config)}"


def _s3_endpoint(templates: dict[str, Any]) -> list[dict[str, Any]]:
    (endpoint,) = [
        e["Properties"]
        for e in resources_of_type(templates[NETWORK], "AWS::EC2::VPCEndpoint").values()
        if e["Properties"].get("VpcEndpointType") == "Gateway" and "s3" in str(e["Properties"]["ServiceName"])
    ]
    found: list[dict[str, Any]] = endpoint["PolicyDocument"]["Statement"]
    return found


def _data_bucket_policy(templates: dict[str, Any], config: Any) -> list[dict[str, Any]]:
    bucket_id, _ = find_one(templates[STATE], "AWS::S3::Bucket", BucketName=naming.data_bucket_name(config))
    (policy,) = [
        p for p in resources_of_type(templates[STATE], "AWS::S3::BucketPolicy").values()
        if p["Properties"]["Bucket"] == {"Ref": bucket_id}
    ]  # fmt: skip
    return list(statements(policy))


def test_host_role_s3_grants_are_put_and_read_back_outside_the_releases(templates: dict[str, Any], config: Any) -> None:
    data = _data_arn(config)
    s3 = [
        (action, resource, s.get("Condition"))
        for s in _host_statements(templates)
        for action in as_list(s["Action"])
        if action.startswith("s3:")
        for resource in as_list(s["Resource"])
    ]
    assert sorted(s3, key=str) == sorted(
        [
            ("s3:GetObject", f"{data}/{naming.RELEASES_PREFIX}*", None),
            ("s3:PutObject", f"{data}/{naming.SEALED_PREFIX}*", None),
            ("s3:PutObject", f"{data}/{naming.AUDIT_PREFIX}*", None),
            ("s3:GetObject", f"{data}/{naming.AUDIT_PREFIX}*", None),  # an export met under its key, read back
            ("s3:ListBucket", data, {"StringEquals": {"s3:prefix": naming.AUDIT_PREFIX}}),
        ],
        key=str,
    )
    # The runtime's prefixes are the ones granted.
    assert sealed_copies.SEALED_PREFIX == naming.SEALED_PREFIX and audit_exports.DEFAULT_PREFIX == naming.AUDIT_PREFIX


def test_the_s3_endpoint_admits_the_data_bucket_only_as_the_role_uses_it(
    templates: dict[str, Any], config: Any
) -> None:
    data, endpoint = _data_arn(config), _s3_endpoint(templates)
    anyone: dict[str, str] = {}
    for action, resource, allowed in [
        ("s3:GetObject", f"{data}/{naming.RELEASES_PREFIX}r1/waiaas-enclave.eif", True),
        ("s3:PutObject", f"{data}/{naming.SEALED_PREFIX}w1/key", True),
        ("s3:PutObject", f"{data}/{naming.AUDIT_PREFIX}export.jsonl", True),
        ("s3:ListBucket", data, True),
        ("s3:GetObject", f"{data}/{naming.AUDIT_PREFIX}export.jsonl", True),
        ("s3:GetObject", f"{data}/{naming.SEALED_PREFIX}w1/key", False),
        ("s3:PutObject", f"{data}/{naming.RELEASES_PREFIX}r1/waiaas-enclave.eif", False),
        ("s3:DeleteObject", f"{data}/{naming.SEALED_PREFIX}w1/key", False),
        ("s3:PutObject", "arn:aws:s3:::someone-elses-bucket/x", False),
    ]:
        assert allows(endpoint, action=action, resource=resource, context=anyone) is allowed, (action, resource)


def test_the_data_bucket_refuses_a_put_that_could_replace_a_copy_or_an_export(
    templates: dict[str, Any], config: Any
) -> None:
    (deny,) = [s for s in _data_bucket_policy(templates, config) if s["Effect"] == "Deny" and "Null" in
               s.get("Condition", {})]  # fmt: skip
    assert deny["Principal"] == {"AWS": "*"} and as_list(deny["Action"]) == ["s3:PutObject"]
    assert deny["Condition"] == {"Null": {"s3:if-none-match": "true"}}
    bucket_id, _ = find_one(templates[STATE], "AWS::S3::Bucket", BucketName=naming.data_bucket_name(config))
    arn = {"Fn::GetAtt": [bucket_id, "Arn"]}
    assert as_list(deny["Resource"]) == [
        {"Fn::Join": ["", [arn, f"/{naming.SEALED_PREFIX}*"]]},
        {"Fn::Join": ["", [arn, f"/{naming.AUDIT_PREFIX}*"]]},
    ]
    (bucket,) = [
        b["Properties"] for b in resources_of_type(templates[STATE], "AWS::S3::Bucket").values()
        if b["Properties"].get("BucketName") == naming.data_bucket_name(config)
    ]  # fmt: skip
    retention = bucket["ObjectLockConfiguration"]["Rule"]["DefaultRetention"]
    assert retention == {"Mode": "GOVERNANCE", "Days": OBJECT_LOCK_DAYS}


def test_the_hosts_export_the_audit_log_every_15_minutes_as_the_proxy_user(templates: dict[str, Any]) -> None:
    script = boot_script(templates)
    unit = unit_file(script, EXPORT_UNIT)
    assert re.findall(r"^User=(\S+)$", unit, re.MULTILINE) == [user_data.PROXY_USER]
    assert "Type=oneshot" in unit and "NoNewPrivileges=yes" in unit and "ProtectSystem=strict" in unit
    assert re.findall(r"^StandardError=(\S+)$", unit, re.MULTILINE) == ["append:/var/log/waiaas/proxy.log"]
    timer = unit_file(script, EXPORT_TIMER)
    assert re.findall(r"^OnUnitActiveSec=(\S+)$", timer, re.MULTILINE) == ["15min"]
    assert "WantedBy=timers.target" in timer
    enabled = script.replace("\\\n", "").splitlines()
    (enable,) = [line for line in enabled if line.startswith("systemctl enable --now waiaas-")]
    assert "waiaas-audit-export.timer" in enable.split()


class _Calls:
    """The AWS calls boto3 clients make (operation and parameters), hooked into boto3's default session, from which
    `parent_proxy.data_bucket.s3_client` and the audit source make theirs."""

    def __init__(self) -> None:
        self.made: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, params: dict[str, Any], model: Any, **_: Any) -> None:
        self.made.append((f"{model.service_model.service_name}:{model.name}", dict(params)))


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch, config: Any) -> Iterator[_Calls]:
    """moto's DynamoDB (the state table) and S3 (the data bucket, object lock on) in the deployment's region."""
    import boto3
    from moto import mock_aws

    from parent_proxy.store.dynamodb import create_table

    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_SESSION_TOKEN": "testing"}.items():  # fmt: skip
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)  # the units and proxy.env name the region themselves
    with mock_aws():
        create_table(boto3.client("dynamodb", region_name=config.region), naming.STATE_TABLE)
        s3 = boto3.client("s3", region_name=config.region)
        s3.create_bucket(Bucket=naming.data_bucket_name(config), ObjectLockEnabledForBucket=True,
                         CreateBucketConfiguration={"LocationConstraint": config.region})  # fmt: skip
        lock = {"ObjectLockEnabled": "Enabled", "Rule": {"DefaultRetention": {"Mode": "GOVERNANCE", "Days": 365}}}
        s3.put_object_lock_configuration(Bucket=naming.data_bucket_name(config), ObjectLockConfiguration=lock)
        calls = _Calls()
        boto3.setup_default_session()
        boto3.DEFAULT_SESSION.events.register("provide-client-params", calls)  # type: ignore[union-attr]
        yield calls
        boto3.DEFAULT_SESSION = None


def _iam_request(config: Any, operation: str, params: dict[str, Any]) -> tuple[str, str, dict[str, str]]:
    """(action, resource, condition context) of one call, as IAM and the bucket policy evaluate it."""
    if operation == "s3:PutObject":
        context = {} if "IfNoneMatch" not in params else {"s3:if-none-match": params["IfNoneMatch"]}
        return "s3:PutObject", f"arn:aws:s3:::{params['Bucket']}/{params['Key']}", context
    if operation == "s3:GetObject":
        return "s3:GetObject", f"arn:aws:s3:::{params['Bucket']}/{params['Key']}", {}
    if operation == "s3:ListObjectsV2":
        return "s3:ListBucket", f"arn:aws:s3:::{params['Bucket']}", {"s3:prefix": params["Prefix"]}
    if operation == "dynamodb:Query":
        return "dynamodb:Query", naming.table_arn(config), {}
    raise AssertionError(f"a call this test does not know: {operation}")


def test_the_proxy_and_the_export_make_only_calls_the_host_role_allows(
    templates: dict[str, Any], config: Any, aws: _Calls
) -> None:
    import boto3

    from parent_proxy.__main__ import open_sealed_copies
    from parent_proxy.audit import AuditLog
    from parent_proxy.clock import SystemClock
    from parent_proxy.settings import load_settings
    from parent_proxy.store.dynamodb import DynamoStore
    from policies.cli import main

    # The proxy, configured by the hosts' proxy.env, copies a sealed key; the log gets three records.
    copies = open_sealed_copies(load_settings(proxy_env(templates)))
    assert copies is not None
    copies.put("w1", bytes(range(32)), b"sealed-blob")
    store = DynamoStore(boto3.client("dynamodb", region_name=config.region), naming.STATE_TABLE)
    for i in range(3):
        AuditLog(store, SystemClock()).append("test.event", {"n": i})
    # The export, exactly as the unit runs it.
    argv = shlex.split(re.findall(r"^ExecStart=(.*)$", unit_file(boot_script(templates), EXPORT_UNIT), re.M)[0])
    assert argv[0] == f"{user_data.INSTALL_DIR}/venv/bin/waiaas"
    assert main(argv[1:]) == 0
    calls = list(aws.made)  # what the proxy and the export called (the test's own look below is not theirs)
    s3 = boto3.client("s3", region_name=config.region)
    listed = s3.list_objects_v2(Bucket=naming.data_bucket_name(config))["Contents"]
    assert sorted(o["Key"].split("/")[0] for o in listed) == ["audit", "sealed"]

    made = _allowed_calls(templates, config, calls)
    assert {op for op, _ in made} == {"s3:PutObject", "s3:ListObjectsV2", "dynamodb:Query"}, made
    assert not any(op in {"s3:GetObject", "s3:DeleteObject", "s3:HeadObject"} for op, _ in calls)


def _allowed_calls(
    templates: dict[str, Any], config: Any, calls: list[tuple[str, dict[str, Any]]]
) -> list[tuple[str, dict[str, Any]]]:
    """The S3 calls and DynamoDB queries among ``calls``, each checked against the host role, the S3 endpoint and
    the bucket policy's write-once deny."""
    role, endpoint = _host_statements(templates), _s3_endpoint(templates)
    deny = [s for s in _data_bucket_policy(templates, config) if "Null" in s.get("Condition", {})]
    made = [(op, params) for op, params in calls if op.startswith(("s3:", "dynamodb:Query"))]
    for operation, params in made:
        action, resource, context = _iam_request(config, operation, params)
        assert allows(role, action=action, resource=resource, context=context), (action, resource, context)
        if action.startswith("s3:"):
            assert allows(endpoint, action=action, resource=resource, context=context), (action, resource)
        if action == "s3:PutObject":  # the bucket policy's deny does not apply: the put cannot replace an object
            assert context == {"s3:if-none-match": "*"} and deny, params["Key"]
    return made


def test_an_export_that_meets_another_hosts_reads_back_only_what_the_role_allows(
    templates: dict[str, Any], config: Any, aws: _Calls, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two hosts export the same records at once: the run whose put meets the other's object reads it back
    (s3:GetObject on that export's key), which the host role and the S3 endpoint allow. Before: the role and the
    endpoint refused any read under audit/."""
    import boto3

    from parent_proxy import audit_export_cli, data_bucket
    from parent_proxy.audit import AuditLog
    from parent_proxy.audit_source import DynamoAuditSource
    from parent_proxy.clock import SystemClock
    from parent_proxy.store.dynamodb import DynamoStore
    from policies.cli import main
    from tests.support.audit_export_runs import RaceClient

    store = DynamoStore(boto3.client("dynamodb", region_name=config.region), naming.STATE_TABLE)
    for i in range(3):
        AuditLog(store, SystemClock()).append("test.event", {"n": i})
    bucket = naming.data_bucket_name(config)

    def other_host() -> None:
        audit_export_cli.export_new_records(
            DynamoAuditSource(naming.STATE_TABLE, config.region),
            data_bucket.DataBucket(data_bucket.s3_client(config.region), bucket),
            naming.AUDIT_PREFIX,
        )

    client = RaceClient(data_bucket.s3_client(config.region), meanwhile=other_host)
    monkeypatch.setattr(audit_export_cli, "s3_client", lambda region: client)
    argv = shlex.split(re.findall(r"^ExecStart=(.*)$", unit_file(boot_script(templates), EXPORT_UNIT), re.M)[0])
    assert main(argv[1:]) == 0
    made = _allowed_calls(templates, config, list(aws.made))
    (read,) = [params for op, params in made if op == "s3:GetObject"]
    assert read["Key"] == client.puts[0] and read["Key"].startswith(naming.AUDIT_PREFIX)


def test_the_hosts_give_the_proxy_its_data_bucket(templates: dict[str, Any], config: Any) -> None:
    from parent_proxy.settings import load_settings

    settings = load_settings(proxy_env(templates))
    assert settings.data_bucket is not None
    assert (settings.data_bucket.name, settings.data_bucket.region) == (naming.data_bucket_name(config), config.region)
