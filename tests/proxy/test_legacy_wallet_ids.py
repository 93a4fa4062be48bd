"""A wallet whose id an earlier build took (1-128 of ``A-Z a-z 0-9 . _ : -``) and the one wallet-id rule now refuses
(`policies.identifiers`), found in a self-host state after an upgrade.

Review s21 (old_wallet_id_readyz.py): the signer-secret check tried it first (the most recent audit record named
it), the enclave refused its id (a protocol error, not among the failures the check passes over), and ``/readyz``
and every wallet creation were 503 for the whole proxy. Now it is skipped before any enclave call, logged once, and
its owner routes answer a 404 that says why.
"""

from __future__ import annotations

import logging

import pytest

from parent_proxy.owner_route import OUTSIDE_THE_RULE
from parent_proxy.signer_secret import SignerSecretCheck
from tests.proxy.api_harness import Harness, provision, spy_calls

LEGACY = "team:alpha"


def store_legacy_wallet(h: Harness, like: str) -> None:
    """The row and record an earlier build wrote for ``POST /v1/wallets {"wallet_id": "team:alpha"}`` (then 201),
    made from wallet ``like``'s row; then a new signer-secret check, as after a proxy or signer restart."""
    conn = h.store.inner._conn()
    row = conn.execute("SELECT * FROM wallets WHERE wallet_id = ?", (like,)).fetchone()
    old = (LEGACY, *row[1:])
    conn.execute("INSERT INTO wallets VALUES (" + ",".join("?" * len(old)) + ")", old)  # noqa: S608 (only ?s)
    conn.commit()
    h.services.audit.append("wallet.created", {"wallet_id": LEGACY}, wallet_id=LEGACY)
    h.services.signer_secret = SignerSecretCheck()


def skip_logs(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "wallet-id rule refuses" in r.getMessage()]


def test_an_earlier_builds_wallet_id_does_not_take_readiness_or_creation_down(
    h: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    provision(h)
    store_legacy_wallet(h, "w1")
    opened = spy_calls(h.services.relay, "open_wallet")
    caplog.set_level(logging.WARNING, logger="parent_proxy.signer_secret")

    assert h.client.get("/readyz").status_code == 200
    created = h.owner_call("POST", "/v1/wallets", {"wallet_id": "w2", "owner_public_key": str(h.owner_pub)})

    assert created.status_code == 201, created.text
    assert [w.wallet_id for w in opened] == ["w1"]  # the legacy wallet, newest in the log, never sent
    assert len(skip_logs(caplog)) == 1 and repr(LEGACY) in skip_logs(caplog)[0]


def test_a_store_of_legacy_wallets_only_is_checked_as_an_empty_one_and_logged_once(
    h: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    provision(h)
    store_legacy_wallet(h, "w1")
    conn = h.store.inner._conn()
    conn.execute("PRAGMA foreign_keys = OFF")  # w1's tokens and policy stay behind, naming no stored wallet
    conn.execute("UPDATE wallets SET wallet_id = 'team:beta' WHERE wallet_id = 'w1'")  # w1 too from then
    conn.commit()
    conn.execute("PRAGMA foreign_keys = ON")
    opened = spy_calls(h.services.relay, "open_wallet")
    caplog.set_level(logging.WARNING, logger="parent_proxy.signer_secret")

    assert [h.client.get("/readyz").status_code for _ in range(3)] == [200] * 3  # no usable wallet: nothing to open

    assert opened == []
    assert len(skip_logs(caplog)) == 1  # team:alpha only: team:beta has no record naming it (w1's name it as w1)


def test_an_owner_route_of_an_earlier_builds_id_says_why_it_is_404(h: Harness) -> None:
    provision(h)
    store_legacy_wallet(h, "w1")
    for method, path in [("GET", f"/v1/wallets/{LEGACY}/approvals"), ("POST", "/v1/wallets/no:such/tokens")]:
        answer = h.owner_call(method, path)  # stored or not: the same answer, no existence told
        assert answer.status_code == 404, answer.text
        assert answer.json()["error"] == {"code": "not_found", "message": OUTSIDE_THE_RULE}
    assert "earlier build" in OUTSIDE_THE_RULE and "1-64 characters" in OUTSIDE_THE_RULE
