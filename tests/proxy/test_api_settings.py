"""Start-up settings: required values, strict parsing, no defaults for security settings."""

from __future__ import annotations

import pytest

from parent_proxy.settings import DynamoState, SettingsError, SqliteState, load_settings, parse_bool
from tests.proxy.minimal_settings import BASE, OWNER


def test_minimal_settings_and_defaults() -> None:
    settings = load_settings(BASE)
    assert settings.state == SqliteState("/var/lib/waiaas/state.db")
    assert settings.host == "127.0.0.1" and settings.port == 8080 and settings.workers == 1
    assert str(next(iter(settings.owner_keys))) == OWNER
    assert (settings.attestation_rate_per_second, settings.attestation_burst) == (2.0, 10)
    dynamo = load_settings({**BASE, "WAIAAS_STATE": "dynamodb:waiaas-state@eu-west-1"})
    assert dynamo.state == DynamoState("waiaas-state", "eu-west-1")


@pytest.mark.parametrize("name", sorted(BASE))
def test_each_required_value_stops_start_up(name: str) -> None:
    env = {k: v for k, v in BASE.items() if k != name}
    with pytest.raises(SettingsError, match=name):
        load_settings(env)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("WAIAAS_STATE", "sqlite:relative.db"),
        ("WAIAAS_ENCLAVE", "http://enclave"),
        ("WAIAAS_OWNER_KEYS", "not-a-key"),
        ("WAIAAS_CHAIN", "mainnet"),
        ("WAIAAS_PORT", "80000"),
        ("WAIAAS_RATE_PER_SECOND", "nan"),
        ("WAIAAS_MAX_BODY_BYTES", "-1"),
        ("WAIAAS_ATTESTATION_RATE_PER_SECOND", "0"),
        ("WAIAAS_ATTESTATION_RATE_PER_SECOND", "inf"),
        ("WAIAAS_ATTESTATION_BURST", "0"),
    ],
)
def test_malformed_values_are_refused_by_name(name: str, value: str) -> None:
    with pytest.raises(SettingsError, match=name):
        load_settings({**BASE, name: value})


@pytest.mark.parametrize(
    "url", ["http://rpc.example/", "http://10.0.0.5:8899/", "http://127.0.0.1.example/", "http://[::ffff:10.0.0.1]/"]
)
def test_a_plain_http_rpc_is_refused_unless_on_this_machine(url: str) -> None:
    """A plain http RPC's answers (a multisig's conformance at policy install, pinned lookup tables) could be
    rewritten by anyone on the way: only a loopback host may be reached without TLS, as the owner's --rpc-url."""
    with pytest.raises(SettingsError, match=r"^WAIAAS_CHAIN's rpc url must be https \(plain http only to localhost"):
        load_settings({**BASE, "WAIAAS_CHAIN": f"rpc:{url}"})
    for fine in ("https://rpc.example/", "http://127.0.0.1:8899/", "http://[::1]:8899/", "http://LOCALHOST/"):
        assert load_settings({**BASE, "WAIAAS_CHAIN": f"rpc:{fine}"}).chain == f"rpc:{fine}"


def test_booleans_are_strict() -> None:
    assert parse_bool("X", "TRUE") is True and parse_bool("X", "false") is False
    with pytest.raises(SettingsError, match="X must be true or false"):
        parse_bool("X", "1")


def test_every_policy_must_declare_a_multisig_unless_the_setting_says_false() -> None:
    on_chain = {**BASE, "WAIAAS_CHAIN": "rpc:https://rpc.example"}
    del on_chain["WAIAAS_REQUIRE_MULTISIG"]
    assert load_settings(on_chain).require_multisig is True  # secure by default (DESIGN.md section 10)
    assert load_settings({**on_chain, "WAIAAS_REQUIRE_MULTISIG": "false"}).require_multisig is False
    assert load_settings({**on_chain, "WAIAAS_REQUIRE_MULTISIG": " True "}).require_multisig is True


def test_the_embedded_chain_without_squads_needs_the_requirement_off() -> None:
    """LiteSVM here has no Squads program: under the requirement every policy install would be a 422, so the pair
    stops start-up with a message saying what to change (before, the proxy started and refused every policy)."""
    for value in (None, "true"):
        env = {k: v for k, v in BASE.items() if k != "WAIAAS_REQUIRE_MULTISIG"}
        if value is not None:
            env["WAIAAS_REQUIRE_MULTISIG"] = value
        with pytest.raises(SettingsError, match=r"^WAIAAS_CHAIN=litesvm has no Squads program.*use rpc:<url>, or "
                                                r"set WAIAAS_REQUIRE_MULTISIG=false"):  # fmt: skip
            load_settings(env)
    assert load_settings(BASE).require_multisig is False


@pytest.mark.parametrize("value", ["", "0", "1", "no", "off", "yes", "disabled", "false,"])
def test_a_malformed_multisig_requirement_stops_start_up(value: str) -> None:
    # Never read as false: a typo must not turn the on-chain limits off.
    with pytest.raises(SettingsError, match=r"^WAIAAS_REQUIRE_MULTISIG must be true or false \(any letter case\)$"):
        load_settings({**BASE, "WAIAAS_REQUIRE_MULTISIG": value})


def test_public_origins_are_normalized() -> None:
    """``WAIAAS_PUBLIC_ORIGINS``: the audiences owner requests may be signed for, each in normal form
    (`owner_auth.normalize_origin`), so that the comparison with the signed audience is exact."""
    assert load_settings(BASE).public_origins == frozenset({"https://wallets.example.com"})
    text = " HTTPS://Wallets.Example.com:443/ , http://127.0.0.1:8080,http://localhost:8080 "
    assert load_settings({**BASE, "WAIAAS_PUBLIC_ORIGINS": text}).public_origins == frozenset(
        {"https://wallets.example.com", "http://127.0.0.1:8080", "http://localhost:8080"}
    )


@pytest.mark.parametrize(
    ("value", "entry"),
    [
        (" ", None),  # blank: as missing
        ("wallets.example.com", 1),
        ("https://wallets.example.com,", 2),
        ("https://a.example,,https://b.example", 2),
        ("https://wallets.example.com/v1", 1),
        ("http://127.0.0.1:8080,ftp://files.example", 2),
        ("https://*.example.com", 1),
        ("*", 1),
    ],
)
def test_malformed_public_origins_stop_start_up(value: str, entry: int | None) -> None:
    expected = "WAIAAS_PUBLIC_ORIGINS is required" if entry is None else f"^WAIAAS_PUBLIC_ORIGINS: entry {entry} "
    with pytest.raises(SettingsError, match=expected):
        load_settings({**BASE, "WAIAAS_PUBLIC_ORIGINS": value})


def test_a_refused_origin_is_not_echoed() -> None:
    """An origin with a user and password in it is refused by position: the password does not reach the log."""
    with pytest.raises(SettingsError) as refused:
        load_settings({**BASE, "WAIAAS_PUBLIC_ORIGINS": "https://admin:hunter2@wallets.example.com"})
    assert "hunter2" not in str(refused.value) and "entry 1" in str(refused.value)
