"""GET /v1/wallets/{id}/multisig through the HTTP API: the real proxy, store, enclave and embedded chain (LiteSVM).
The Squads program is not available offline, so the multisig and spending-limit accounts its instructions would
leave are written into the chain by the test (`tests.support.squads_rotation`), as the rotation tests do."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from solders.account import Account
from solders.pubkey import Pubkey

from parent_proxy.owner_signers import write_keypair_file
from parent_proxy.squads_spending_limit_account import SPENDING_LIMIT_DISCRIMINATOR
from policies.cli import main
from tests.proxy.api_harness import Harness, svm
from tests.proxy.hooked_client import Borrowed
from tests.support.policies import MERCHANT
from tests.support.squads_encoder import PROGRAM_ID
from tests.support.squads_rotation import (
    EXAMPLE_CREATE_KEY,
    EXAMPLE_MULTISIG,
    EXAMPLE_VAULT,
    put_conforming_chain,
    put_multisig,
    put_spending_limit,
)

CREATE_KEY, MULTISIG, VAULT = EXAMPLE_CREATE_KEY, EXAMPLE_MULTISIG, EXAMPLE_VAULT


def create_wallet(h: Harness, policy: dict[str, Any] | None, *, vault: Pubkey | None = VAULT) -> None:
    """Wallet ``h.wallet_id`` whose vault is ``vault`` (default the multisig's vault 0; None: created without one),
    with ``policy`` installed (None: no policy)."""
    body = {"wallet_id": h.wallet_id, "owner_public_key": str(h.owner_pub)}
    if vault is not None:
        body["vault_address"] = str(vault)
    created = h.owner_call("POST", "/v1/wallets", body)
    assert created.status_code == 201, created.text
    h.agent = Pubkey.from_string(created.json()["agent_public_key"])
    if policy is not None:
        install(h, policy)


def install(h: Harness, policy: dict[str, Any]) -> None:
    installed = h.owner_call("PUT", f"/v1/wallets/{h.wallet_id}/policy", {"envelope": policy})
    assert installed.status_code == 200, installed.text


def multisig_wallet(h: Harness, **multisig: Any) -> None:
    """A wallet whose policy declares the multisig, installed while the chain shows it conforming
    (`put_conforming_chain`); then the multisig is written again with ``multisig`` (its fields), if any."""
    create_wallet(h, None)
    put_conforming_chain(svm(h), h.owner_pub, h.agent)
    install(h, h.policy(squads_multisig=str(MULTISIG)))
    if multisig:
        put_multisig(svm(h), CREATE_KEY, [h.owner_pub, h.agent], **multisig)


def path(h: Harness) -> str:
    return f"/v1/wallets/{h.wallet_id}/multisig"


def error_code(response: Any) -> str:
    return str(response.json()["error"]["code"])


def test_a_conforming_multisig(h: Harness) -> None:
    multisig_wallet(h)
    answer = h.owner_call("GET", path(h))
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert (body["wallet_id"], body["multisig"], body["conforms"]) == (h.wallet_id, str(MULTISIG), True)
    assert len(body["checks"]) == 8 + 2 * 4 and all(check["ok"] for check in body["checks"])
    assert set(body["checks"][0]) == {"id", "subject", "ok", "seen", "expected"}


def test_a_non_conforming_multisig_names_its_failed_checks(h: Harness) -> None:
    multisig_wallet(h, threshold=1)
    put_spending_limit(svm(h), MULTISIG, Pubkey.new_unique(), members=[h.owner_pub, h.agent], amount=5_000_000_000,
                       destinations=[MERCHANT])  # fmt: skip
    answer = h.owner_call("GET", path(h))
    assert answer.status_code == 200, answer.text
    body = answer.json()
    failed = [(check["id"], check["seen"]) for check in body["checks"] if not check["ok"]]
    members = "[" + ", ".join(str(k) for k in sorted([h.owner_pub, h.agent], key=bytes)) + "]"
    assert body["conforms"] is False
    assert failed == [("multisig.threshold", "1"), ("spending_limit.members", members)]


def test_without_a_policy_no_policy(h: Harness) -> None:
    create_wallet(h, None)
    put_multisig(svm(h), CREATE_KEY, [h.owner_pub, h.agent])
    answer = h.owner_call("GET", path(h))
    assert (answer.status_code, error_code(answer)) == (403, "no_policy")


def test_a_policy_without_a_multisig_conflicts(h: Harness) -> None:
    create_wallet(h, h.policy())
    answer = h.owner_call("GET", path(h))
    assert (answer.status_code, error_code(answer)) == (409, "conflict")
    assert "declares no Squads multisig" in answer.json()["error"]["message"]


def close_account(h: Harness, address: Pubkey) -> None:
    """The account is gone from the chain (closed: no lamports left), as after Squads closes it."""
    svm(h).set_account(address, Account(lamports=0, data=b"", owner=Pubkey.default(), executable=False))
    assert svm(h).get_account(address) is None


def test_a_multisig_that_does_not_exist_is_a_failed_exists_check_not_a_chain_failure(h: Harness) -> None:
    multisig_wallet(h)
    close_account(h, MULTISIG)
    answer = h.owner_call("GET", path(h))
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert (body["multisig"], body["conforms"]) == (str(MULTISIG), False)
    assert body["checks"] == [{"id": "multisig.exists", "subject": str(MULTISIG), "ok": False,
                               "seen": "no account at this address",
                               "expected": "the Squads v4 multisig the policy declares, set up on chain"}]  # fmt: skip


def test_an_unreadable_chain_is_chain_unavailable_never_a_pass(h: Harness) -> None:
    multisig_wallet(h)
    # An account at the address that is not the Squads program's: unreadable as a multisig, not missing.
    svm(h).set_account(MULTISIG, Account(lamports=10**9, data=b"\x00" * 64, owner=Pubkey.default(), executable=False))
    foreign = h.owner_call("GET", path(h))
    assert (foreign.status_code, error_code(foreign)) == (503, "chain_unavailable")
    assert "not owned by the Squads v4 program" in foreign.json()["error"]["message"]
    # The multisig is there, but one of its spending limits is malformed.
    put_multisig(svm(h), CREATE_KEY, [h.owner_pub, h.agent])
    garbage = SPENDING_LIMIT_DISCRIMINATOR + bytes(MULTISIG) + b"\x00" * 7
    svm(h).set_account(Pubkey.new_unique(), Account(lamports=10**9, data=garbage, owner=PROGRAM_ID, executable=False))
    malformed = h.owner_call("GET", path(h))
    assert (malformed.status_code, error_code(malformed)) == (503, "chain_unavailable")
    assert "spending limit account data too short" in malformed.json()["error"]["message"]


def test_only_the_wallets_owner_may_ask(h: Harness) -> None:
    multisig_wallet(h)
    answer = h.owner_call("GET", path(h), key=Ed25519PrivateKey.generate())
    assert (answer.status_code, error_code(answer)) == (401, "owner_signature_invalid")


# -- waiaas owner check-multisig ------------------------------------------------------------------------------------


def check_multisig(h: Harness, tmp_path: Path, capsys: pytest.CaptureFixture[str], wallet: str) -> tuple[int, str, str]:
    key_file = tmp_path / "owner.json"
    if not key_file.exists():
        write_keypair_file(key_file, h.owner)
    code = main(["owner", "--keypair", str(key_file), "check-multisig", "--url", "http://testserver",
                 "--wallet", wallet])  # fmt: skip
    out, err = capsys.readouterr()
    return code, out, err


def test_the_owner_cli_exits_0_only_for_a_conforming_multisig(
    h: Harness, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("httpx.Client", lambda **_: Borrowed(h.client))
    multisig_wallet(h)
    code, out, err = check_multisig(h, tmp_path, capsys, h.wallet_id)
    assert code == 0 and json.loads(out)["conforms"] is True and "failed" not in err
    put_multisig(svm(h), CREATE_KEY, [h.owner_pub, h.agent], config_authority=h.owner_pub)
    code, out, err = check_multisig(h, tmp_path, capsys, h.wallet_id)
    assert code == 1 and json.loads(out)["conforms"] is False
    assert f"owner check-multisig: failed: multisig.config_authority ({MULTISIG}): seen {h.owner_pub}" in err
    close_account(h, MULTISIG)  # no multisig at all: a failed multisig.exists, not "the API refused"
    code, out, err = check_multisig(h, tmp_path, capsys, h.wallet_id)
    assert code == 1 and json.loads(out)["conforms"] is False
    assert f"owner check-multisig: failed: multisig.exists ({MULTISIG}): seen no account at this address" in err
    code, out, _ = check_multisig(h, tmp_path, capsys, "another-wallet")  # refused: 401
    assert code == 1 and json.loads(out)["error"]["code"] == "owner_signature_invalid"
    code, _, err = check_multisig(h, tmp_path, capsys, "not a wallet/id")
    assert code == 2 and "--wallet is not a wallet id" in err
