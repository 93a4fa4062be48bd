"""Context validation: no defaults for the measurements, every problem named, strict parsing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from cdk import naming
from cdk.config import ConfigError, load_config
from cdk.synth import REPO_ROOT, committed_context, example_context, example_pcrs
from tests.cdk.conftest import PCR0, PCR8


def _context(**overrides: Any) -> dict[str, object]:
    context = example_context(pcr0=PCR0, pcr8=PCR8)
    for key, value in overrides.items():
        if value is None:
            context.pop("waiaas:" + key, None)
        else:
            context["waiaas:" + key] = value
    return context


def test_example_context_is_valid() -> None:
    config = load_config(_context())
    assert config.enclave.pcr0 == PCR0
    assert config.enclave.pcr8 == PCR8
    assert config.availability_zones == ("eu-west-1a", "eu-west-1b")


def test_committed_cdk_json_pins_no_measurement() -> None:
    context = committed_context()
    assert not {"waiaas:enclavePcr0", "waiaas:enclavePcr8", "waiaas:enclaveImageSigned"} & context.keys()
    with pytest.raises(ConfigError, match=r"waiaas:enclavePcr0 is missing"):
        load_config(context)


def test_example_pcrs_file_matches_test_values() -> None:
    assert example_pcrs() == {
        "waiaas:enclavePcr0": PCR0,
        "waiaas:enclaveImageSigned": True,
        "waiaas:enclavePcr8": PCR8,
    }


def test_missing_pcr0_is_named() -> None:
    with pytest.raises(ConfigError, match=r"waiaas:enclavePcr0 is missing"):
        load_config(_context(enclavePcr0=None))


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("abc", r"96 lowercase hex"),
        (PCR0.upper(), r"96 lowercase hex"),
        (PCR0 + "00", r"96 lowercase hex"),
        (PCR0 + "\n", r"96 lowercase hex"),  # Python's "$" would match before it
        ("0" * 96, r"all zeros"),
        (12, r"non-empty string"),
    ],
)
def test_malformed_pcr0_is_named(value: object, reason: str) -> None:
    with pytest.raises(ConfigError, match=rf"waiaas:enclavePcr0 .*{reason}"):
        load_config(_context(enclavePcr0=value))


def test_signed_image_requires_pcr8() -> None:
    with pytest.raises(ConfigError, match=r"waiaas:enclavePcr8 is missing"):
        load_config(_context(enclavePcr8=None))


def test_malformed_pcr8_is_named() -> None:
    with pytest.raises(ConfigError, match=r"waiaas:enclavePcr8 must be 96 lowercase hex"):
        load_config(_context(enclavePcr8="xyz"))


def test_signed_flag_has_no_default_and_is_strict() -> None:
    with pytest.raises(ConfigError, match=r"waiaas:enclaveImageSigned is missing"):
        load_config(_context(enclaveImageSigned=None))
    with pytest.raises(ConfigError, match=r"waiaas:enclaveImageSigned must be true or false"):
        load_config(_context(enclaveImageSigned="yes"))


def test_unsigned_image_refuses_a_stray_pcr8() -> None:
    with pytest.raises(ConfigError, match=r"waiaas:enclavePcr8 is set but enclaveImageSigned is false"):
        load_config(_context(enclaveImageSigned=False))
    config = load_config(_context(enclaveImageSigned="false", enclavePcr8=None))
    assert config.enclave.pcr8 is None


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(_context(enclavePcr0=None, account="12", enclaveCpuCount=3))
    message = str(info.value)
    for key in ("waiaas:enclavePcr0", "waiaas:account", "waiaas:enclaveCpuCount"):
        assert key in message


@pytest.mark.parametrize(
    ("key", "value", "reason"),
    [
        ("allowedClientCidrs", ["0.0.0.0/0"], r"not a private network"),
        ("allowedClientCidrs", ["8.8.8.0/24"], r"not a private network"),
        ("ownerPrincipals", ["arn:aws:iam::111111111111:root"], r"not an IAM role or user ARN"),
        ("ownerPrincipals", ["*"], r"not an IAM role or user ARN"),
        ("ownerPrincipals", [], r"must not be empty"),
        ("keyAdminPrincipals", ["arn:aws:iam::222222222222:role/admin"], r"deployment account"),
        ("instanceType", "t3.xlarge", r"cannot host a Nitro Enclave"),
        ("availabilityZones", ["eu-west-1a"], r"at least two zones"),
        ("availabilityZones", ["us-east-1a", "us-east-1b"], r"zones of eu-west-1"),
        (
            "certificateArn",
            "arn:aws:acm:us-east-1:111111111111:certificate/00000000-0000-4000-8000-000000000000",
            r"in eu-west-1",
        ),
        ("enclaveMemoryMiB", 128, r"at least 512"),
        ("hostCount", True, r"not a boolean"),
    ],
)
def test_malformed_values_are_named(key: str, value: object, reason: str) -> None:
    with pytest.raises(ConfigError, match=rf"waiaas:{key} .*{reason}"):
        load_config(_context(**{key: value}))


@pytest.mark.parametrize("key", ["ownerPrincipals", "operatorPrincipals", "keyAdminPrincipals"])
@pytest.mark.parametrize("role", sorted(naming.OWN_ROLES))
def test_the_deployments_own_roles_are_refused_as_principals(key: str, role: str) -> None:
    """Listing e.g. the enclave host role as a key administrator would let every host re-policy the keys."""
    own = f"arn:aws:iam::111111111111:role/{role}"
    with pytest.raises(ConfigError, match=rf"waiaas:{key} names {own}, a role this deployment creates") as info:
        load_config(_context(**{key: ["arn:aws:iam::111111111111:role/example-person", own]}))
    assert str(info.value).count(role) == 1  # named once, for the list that holds it


def test_own_role_names_are_refused_under_any_path_but_not_in_other_accounts() -> None:
    # IAM role names are unique in an account whatever the path: a path does not make it another role.
    with pytest.raises(ConfigError, match=r"waiaas:keyAdminPrincipals names .*/ops/waiaas-operator"):
        load_config(_context(keyAdminPrincipals=["arn:aws:iam::111111111111:role/ops/waiaas-operator"]))
    other_account = "arn:aws:iam::222222222222:role/waiaas-enclave-host"
    config = load_config(_context(ownerPrincipals=[other_account], operatorPrincipals=[other_account]))
    assert config.owner_principals == (other_account,)
    # A name that merely starts like ours is not ours.
    similar = "arn:aws:iam::111111111111:role/waiaas-enclave-host-admins"
    assert load_config(_context(keyAdminPrincipals=[similar])).key_admin_principals == (similar,)


def test_cli_style_string_values_are_parsed() -> None:
    config = load_config(
        _context(hostCount="3", enclaveImageSigned="true", allowedClientCidrs='["10.1.0.0/16", "192.168.0.0/24"]')
    )
    assert config.host_count == 3
    assert config.allowed_client_cidrs == ("10.1.0.0/16", "192.168.0.0/24")


def test_app_entry_point_stops_on_missing_pcr0() -> None:
    """`cdk synth` runs `python -m cdk.app` with the context in CDK_CONTEXT_JSON; without PCR0 it must stop."""
    context = committed_context()
    env = {**os.environ, "CDK_CONTEXT_JSON": json.dumps(context), "CDK_OUTDIR": str(Path("/nonexistent"))}
    result = subprocess.run(
        [sys.executable, "-m", "cdk.app"],
        check=False,
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert "waiaas:enclavePcr0 is missing" in result.stderr
    assert "waiaas:enclaveImageSigned is missing" in result.stderr
