"""``<bucket>[@<region>]`` (`parent_proxy.data_bucket.parse_bucket`), as ``WAIAAS_DATA_BUCKET`` and ``waiaas audit
export --bucket`` take it: what it accepts, boto3 takes (a client can be made for its region), and what it refuses
is a `SettingsError` at start-up, never a botocore traceback when the services are built."""

from __future__ import annotations

import pytest

from parent_proxy.data_bucket import BucketName, parse_bucket, s3_client
from parent_proxy.settings import SettingsError, load_settings
from tests.proxy.minimal_settings import BASE


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("waiaas-data", BucketName("waiaas-data", None)),
        ("waiaas.data-1@eu-west-1", BucketName("waiaas.data-1", "eu-west-1")),
        (" waiaas-data@us-gov-west-1 ", BucketName("waiaas-data", "us-gov-west-1")),
    ],
)
def test_a_bucket_and_its_region_are_read(text: str, parsed: BucketName) -> None:
    assert parse_bucket(text) == parsed
    s3_client(parsed.region)  # boto3 takes the region


@pytest.mark.parametrize(
    "text",
    ["", "Waiaas-data", "ab", "waiaas..data", "-waiaas", "waiaas_data", "waiaas-data@", "waiaas-data@EU-WEST-1",
     "waiaas-data@eu-west-", "waiaas-data@-eu-west-1", "waiaas-data@123", "waiaas-data@eu-west-1@x"],
)  # fmt: skip
def test_anything_else_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match=r"^must be <bucket>\[@<region>\]"):
        parse_bucket(text)


def test_the_setting_is_read_or_stops_start_up() -> None:
    assert load_settings(BASE).data_bucket is None  # self-host: no copies
    assert load_settings({**BASE, "WAIAAS_DATA_BUCKET": "waiaas-data@eu-west-1"}).data_bucket == BucketName(
        "waiaas-data", "eu-west-1"
    )
    for value in ("waiaas-data@eu-west-", "s3://waiaas-data"):
        with pytest.raises(SettingsError, match=r"^WAIAAS_DATA_BUCKET must be <bucket>\[@<region>\]"):
            load_settings({**BASE, "WAIAAS_DATA_BUCKET": value})
