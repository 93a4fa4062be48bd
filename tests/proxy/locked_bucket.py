"""A data bucket as the state stack makes it (versioned, object lock in governance mode for a year, private), on
moto's in-process S3; the tests that use it need the `aws_env` fixture's fake credentials."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

BUCKET = "waiaas-data-111111111111-eu-west-1"
REGION = "eu-west-1"


@contextmanager
def locked_bucket(name: str = BUCKET, region: str = REGION) -> Iterator[Any]:
    """moto's S3 with the bucket ``name`` created; yields a boto3 S3 client to look into it."""
    import boto3
    from moto import mock_aws

    with mock_aws():
        client = boto3.client("s3", region_name=region)
        create_locked_bucket(client, name, region)
        yield client


def create_locked_bucket(client: Any, name: str, region: str) -> None:
    """Create the bucket ``name`` through the S3 ``client`` as the state stack makes it."""
    location = {} if region == "us-east-1" else {"CreateBucketConfiguration": {"LocationConstraint": region}}
    client.create_bucket(Bucket=name, ObjectLockEnabledForBucket=True, **location)
    client.put_object_lock_configuration(
        Bucket=name,
        ObjectLockConfiguration={
            "ObjectLockEnabled": "Enabled",
            "Rule": {"DefaultRetention": {"Mode": "GOVERNANCE", "Days": 365}},
        },
    )


def keys(client: Any, prefix: str, name: str = BUCKET) -> list[str]:
    return [entry["Key"] for entry in client.list_objects_v2(Bucket=name, Prefix=prefix).get("Contents", [])]


def body(client: Any, key: str, name: str = BUCKET) -> bytes:
    data: bytes = client.get_object(Bucket=name, Key=key)["Body"].read()
    return data
