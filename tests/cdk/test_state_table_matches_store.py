"""The state table the CDK stack declares is the table the DynamoDB store is tested on: same keys, attribute types,
TTL attribute, billing mode and global secondary indexes (the store's `create_table`, on moto, described back),
and it has the index the store's webhook claims query; the host role and the DynamoDB gateway endpoint allow every
request the outbox makes (recorded at the botocore seam, on moto, which enforces no IAM). The stack may not import
the store (DESIGN.md section 2), so the declarations are compared here."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from cdk import naming
from parent_proxy.store.dynamodb_base import DUE_ATTRIBUTE, OUTBOX_DUE_INDEX, create_table
from parent_proxy.store.model import OutboxItem
from tests.cdk.policy_walk import allows, resources_of_type, statements
from tests.proxy.conftest import make_wallet

STATE = "WaiaasState"
IDENTITY = "WaiaasIdentity"
NETWORK = "WaiaasNetwork"
T0 = 1_700_000_000.0
ITEM_ACTIONS = {
    "Put": "PutItem",
    "Update": "UpdateItem",
    "Delete": "DeleteItem",
    "ConditionCheck": "ConditionCheckItem",
}
"""The IAM action of each kind of ``TransactWriteItems`` action (a transaction is authorised action by action)."""


def _indexes(indexes: list[dict[str, Any]]) -> dict[str, tuple[Any, Any]]:
    return {i["IndexName"]: (i["KeySchema"], i["Projection"]) for i in indexes}


@pytest.fixture
def moto_client(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A boto3 DynamoDB client on moto, holding the store's table (`create_table`) under the deployment's name."""
    import boto3
    from moto import mock_aws

    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.setenv(name, "testing")  # nothing can reach a real account
    with mock_aws():
        client = boto3.client("dynamodb", region_name="us-east-1")
        create_table(client, naming.STATE_TABLE)
        yield client


@pytest.fixture
def store_table(moto_client: Any) -> dict[str, Any]:
    """`create_table`'s table, as ``describe_table`` reports it, with its TTL attribute under ``ttl``."""
    table: dict[str, Any] = moto_client.describe_table(TableName=naming.STATE_TABLE)["Table"]
    ttl = moto_client.describe_time_to_live(TableName=naming.STATE_TABLE)["TimeToLiveDescription"]
    return {**table, "ttl": ttl["AttributeName"]}


def _outbox_requests(client: Any) -> set[tuple[str, str | None]]:
    """(IAM action, index name or None) of every request a webhook outbox's life makes: enqueue, claims, a
    delivery, a retry, a give-up."""
    from parent_proxy.store.dynamodb import DynamoStore

    made: set[tuple[str, str | None]] = set()

    def record(params: dict[str, Any], model: Any, **_: Any) -> None:
        if model.name == "TransactWriteItems":
            made.update((f"dynamodb:{ITEM_ACTIONS[next(iter(a))]}", None) for a in params["TransactItems"])
        else:
            made.add((f"dynamodb:{model.name}", params.get("IndexName")))

    store = DynamoStore(client, naming.STATE_TABLE)
    store.create_wallet(make_wallet("w1"))
    client.meta.events.register("before-parameter-build.dynamodb", record)
    for event_id in ("e1", "e2"):
        store.enqueue_webhook(OutboxItem(event_id, "w1", "t", b"{}", T0, next_attempt_at=T0))
    [first] = store.claim_webhooks(T0, 30, 10)
    store.mark_delivered(first.event_id, first.lease_id or "", now=T0 + 1, status_code=200)
    [second] = store.claim_webhooks(T0 + 1, 30, 10)
    store.mark_failed(second.event_id, second.lease_id or "", now=T0 + 2, error="x", status_code=500,
                      next_attempt_at=T0 + 60)  # fmt: skip
    [third] = store.claim_webhooks(T0 + 60, 30, 10)
    store.mark_failed(third.event_id, third.lease_id or "", now=T0 + 61, error="x", status_code=500,
                      next_attempt_at=None)  # fmt: skip
    return made


def test_the_cdk_table_is_the_table_the_store_is_tested_on(
    templates: dict[str, Any], store_table: dict[str, Any]
) -> None:
    (cdk_table,) = resources_of_type(templates[STATE], "AWS::DynamoDB::GlobalTable").values()
    declared = cdk_table["Properties"]
    assert declared["KeySchema"] == store_table["KeySchema"]
    assert sorted(declared["AttributeDefinitions"], key=str) == sorted(store_table["AttributeDefinitions"], key=str)
    assert declared["TimeToLiveSpecification"] == {"AttributeName": store_table["ttl"], "Enabled": True}
    assert declared["BillingMode"] == store_table["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
    assert _indexes(declared.get("GlobalSecondaryIndexes", [])) == _indexes(store_table["GlobalSecondaryIndexes"])


def test_the_cdk_table_has_the_index_webhook_claims_query(templates: dict[str, Any]) -> None:
    (cdk_table,) = resources_of_type(templates[STATE], "AWS::DynamoDB::GlobalTable").values()
    indexes = _indexes(cdk_table["Properties"].get("GlobalSecondaryIndexes", []))
    assert indexes.get(OUTBOX_DUE_INDEX) == (
        [{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": DUE_ATTRIBUTE, "KeyType": "RANGE"}],
        {"ProjectionType": "ALL"},
    )
    # Every replica keeps it (a global table's index is declared per replica too).
    for replica in cdk_table["Properties"]["Replicas"]:
        assert {"IndexName": OUTBOX_DUE_INDEX} in replica.get("GlobalSecondaryIndexes", [])


def test_the_host_may_make_every_request_of_the_outbox(
    templates: dict[str, Any], config: Any, moto_client: Any
) -> None:
    """Nothing on moto checks IAM: a role or endpoint policy that left out the index would pass every store test and
    fail every claim in a deployment."""
    made = _outbox_requests(moto_client)
    assert ("dynamodb:Query", OUTBOX_DUE_INDEX) in made
    roles = resources_of_type(templates[IDENTITY], "AWS::IAM::Role")
    (host,) = [lid for lid, role in roles.items() if role["Properties"].get("RoleName") == naming.ENCLAVE_HOST_ROLE]
    role = [
        s
        for policy in resources_of_type(templates[IDENTITY], "AWS::IAM::Policy").values()
        if {"Ref": host} in policy["Properties"]["Roles"]
        for s in statements(policy)
    ]
    (endpoint,) = [
        e["Properties"]["PolicyDocument"]["Statement"]
        for e in resources_of_type(templates[NETWORK], "AWS::EC2::VPCEndpoint").values()
        if e["Properties"].get("VpcEndpointType") == "Gateway" and "dynamodb" in str(e["Properties"]["ServiceName"])
    ]
    context = {"aws:PrincipalAccount": config.account}
    for action, index in sorted(made, key=str):
        resource = naming.table_arn(config) + ("" if index is None else f"/index/{index}")
        assert allows(role, action=action, resource=resource, context=context), (action, resource)
        assert allows(endpoint, action=action, resource=resource, context=context), (action, resource)
