"""The parent proxy's settings on a host: the boot script's proxy.env, as synthesized, is what
`parent_proxy.settings.load_settings` reads, and it names the deployment's table, enclave, owners and chain.

Before: the file held variables the proxy does not read (WAIAAS_STATE_TABLE, WAIAAS_ENCLAVE_CID, ...), so a
deployed proxy stopped at start-up on the first required setting.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from cdk import naming, user_data
from cdk.config import ConfigError, load_config
from cdk.synth import REPO_ROOT, example_context
from enclave_app.constants import ENCLAVE_VSOCK_PORT, PROXY_HTTP_PORT
from enclave_app.transport import VsockAddress
from parent_proxy.owner_auth import normalize_origin
from parent_proxy.settings import DynamoState, load_settings
from tests.cdk.boot_script import PROXY_ENV, boot_script, proxy_env, unit_file
from tests.cdk.conftest import PCR0, PCR8


def test_the_proxy_starts_from_the_environment_the_hosts_write(templates: dict[str, Any], config: Any) -> None:
    env = proxy_env(templates)
    settings = load_settings(env)  # raises SettingsError, naming the variable, on anything it cannot use
    assert settings.state == DynamoState(table=naming.STATE_TABLE, region=config.region)
    assert settings.enclave == VsockAddress(cid=user_data.ENCLAVE_CID, port=ENCLAVE_VSOCK_PORT)
    assert sorted(str(key) for key in settings.owner_keys) == sorted(config.owner_public_keys)
    # Owner requests are accepted only if signed for the origins owners reach the load balancer at.
    assert settings.public_origins == frozenset(config.public_origins) == frozenset({"https://wallets.example.com"})
    assert settings.chain == f"rpc:{config.solana_rpc_url}"
    assert (settings.host, settings.port) == ("0.0.0.0", PROXY_HTTP_PORT)  # noqa: S104 - behind the LB's group
    assert settings.enclave_kms_credentials == "host"  # the enclave's KMS sealer has no credentials of its own
    # Every policy must declare a Squads multisig (DESIGN.md section 10), said explicitly, not left to a default.
    assert env["WAIAAS_REQUIRE_MULTISIG"] == "true" and settings.require_multisig is True
    # GET /metrics only to a client on the host: the load balancer's requests are refused (404) by the proxy too.
    assert settings.metrics_access == "loopback"
    proxy_unit = unit_file(boot_script(templates), "/etc/systemd/system/waiaas-proxy.service")
    assert f"EnvironmentFile={PROXY_ENV}" in proxy_unit


def test_every_variable_the_hosts_write_is_one_the_proxy_reads(templates: dict[str, Any]) -> None:
    from parent_proxy import settings

    documented = settings.__doc__ or ""
    for name in proxy_env(templates):
        assert f"``{name}``" in documented, f"{name} is not a parent proxy setting"


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("ownerPublicKeys", [], "must not be empty"),
        ("ownerPublicKeys", ["not-a-key"], "'not-a-key' is not a base58 Ed25519 public key"),
        ("ownerPublicKeys", ["1" * 31], "'1{31}' is not a base58 Ed25519 public key"),
        ("solanaRpcUrl", "http://rpc.example.com", "must be an https:// URL"),
        ("solanaRpcUrl", "https://rpc.example.com/?api-key=secret", "must be an https:// URL"),
        ("solanaRpcUrl", "https://user:pass@rpc.example.com", "must be an https:// URL"),
        ("internetEgress", "yes", "must be true or false"),
        ("publicOrigins", [], "must not be empty"),
        ("publicOrigins", "https://wallets.example.com", r"must be a list \(or a JSON-encoded list\)"),
        ("publicOrigins", ["https://Wallets.example.com"], "'https://Wallets.example.com' is not an https origin"),
        ("publicOrigins", ["https://wallets.example.com:443"], "'[^']*' is not an https origin in normal form"),
        ("publicOrigins", ["https://wallets.example.com/"], "'[^']*' is not an https origin in normal form"),
        ("publicOrigins", ["https://wallets.example.com/waiaas"], "'[^']*' is not an https origin in normal form"),
        ("publicOrigins", ["http://wallets.example.com"], "'[^']*' is not an https origin in normal form"),
        ("publicOrigins", ["https://10.0.0.1"], "'[^']*' is not an https origin in normal form"),
        ("publicOrigins", ["https://a.example", "https://a.example"], "must not repeat an entry"),
    ],
)
def test_cloud_proxy_settings_are_validated(key: str, value: object, message: str) -> None:
    context = example_context(pcr0=PCR0, pcr8=PCR8)
    context["waiaas:" + key] = value
    with pytest.raises(ConfigError, match=f"waiaas:{key} {message}"):
        load_config(context)


@pytest.mark.parametrize("key", ["ownerPublicKeys", "solanaRpcUrl", "internetEgress", "publicOrigins"])
def test_cloud_proxy_settings_have_no_default(key: str) -> None:
    context = example_context(pcr0=PCR0, pcr8=PCR8)
    del context["waiaas:" + key]
    with pytest.raises(ConfigError, match=f"waiaas:{key} is missing"):
        load_config(context)


def test_synth_stops_without_public_origins() -> None:
    """``cdk synth`` (``python -m cdk.app``, its context in ``CDK_CONTEXT_JSON``) with everything but the public
    origins: it stops, naming the key, before anything is synthesized."""
    context = example_context(pcr0=PCR0, pcr8=PCR8)
    del context["waiaas:publicOrigins"]
    env = {**os.environ, "CDK_CONTEXT_JSON": json.dumps(context), "CDK_OUTDIR": str(Path("/nonexistent"))}
    result = subprocess.run(
        [sys.executable, "-m", "cdk.app"], check=False, cwd=REPO_ROOT, env=env, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    assert result.returncode != 0
    assert "waiaas:publicOrigins is missing" in result.stderr


ORIGIN_CANDIDATES = [
    f"{scheme}://{host}{port}{tail}"
    for scheme in ("https", "http", "HTTPS")
    for host in ("wallets.example.com", "Wallets.example.com", "a", "a-b.c1", "xn--bcher-kva.example", "10.0.0.1",
                 "-a.example", "a..example", "1.example", "example.123")
    for port in ("", ":443", ":8443", ":1", ":0", ":0443", ":65535", ":65536")
    for tail in ("", "/", "/x")
]  # fmt: skip
"""Origins and near misses: schemes, case, DNS names and addresses, ports in and out of range, paths."""


def test_every_origin_the_context_accepts_is_in_the_proxys_normal_form() -> None:
    """The CDK app may not import the proxy's `normalize_origin`, so it accepts only https origins already in
    normal form: each one is a fixed point of the proxy's function (a proxy never fails to start on one); and it
    accepts every https origin in normal form that names a DNS name."""
    accepted = []
    for origin in ORIGIN_CANDIDATES:
        context = example_context(pcr0=PCR0, pcr8=PCR8)
        context["waiaas:publicOrigins"] = [origin]
        try:
            assert load_config(context).public_origins == (origin,)
        except ConfigError:
            continue
        assert normalize_origin(origin) == origin, origin
        accepted.append(origin)
    assert accepted == [origin for origin in ORIGIN_CANDIDATES if _https_dns_origin_in_normal_form(origin)]


def _https_dns_origin_in_normal_form(origin: str) -> bool:
    """https, a host whose last label starts with a letter (a DNS name, not an address), already in normal form."""
    host = origin.removeprefix("https://").partition(":")[0]
    try:
        normal = normalize_origin(origin)
    except ValueError:
        return False
    return origin.startswith("https://") and host.rpartition(".")[2][:1].isalpha() and normal == origin
