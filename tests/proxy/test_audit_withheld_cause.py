"""``audit verify --receipts`` accepts a withheld signature only with its cause before it in the log
(`parent_proxy.audit_withheld`): a freeze, an unfreeze or an owner order of the same wallet, recorded before the
withheld record and no earlier than its receipt's time less `WITHHELD_CAUSE_WINDOW_SECONDS`; else it fails as a
counter gap does, unless gaps are allowed.

Honest logs come from the real race through the API (the owner's order, or a request the policy freezes, sent from
the store seam while the signature's record waits, as in `test_api_freeze_withholds`). The hostile one is a parent
that kept a signature it handed out and logged it as withheld, with no freeze anywhere.

Before (review s21): the hostile log passed (withheld 1, counter gaps 0), and so did a withheld record whose only
freeze was of another wallet, or after it.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from solders.pubkey import Pubkey
from solders.system_program import AssignParams, assign

from parent_proxy.audit_receipts import verify_audit_receipts
from parent_proxy.audit_withheld import WITHHELD_CAUSE_WINDOW_SECONDS, moves_freeze
from parent_proxy.errors import AuditChainError, FrozenMeanwhile
from parent_proxy.store.model import AuditRecord
from tests.proxy.api_harness import Harness, provision, running_harness
from tests.proxy.audit_log_rewrites import cli
from tests.proxy.harness_calls import order, records, send
from tests.support.policies import MERCHANT

SMALL = 1_000_000
NO_CAUSE = r"transaction\.withheld record without a cause: no freeze, unfreeze or owner order of wallet w\w*"


@pytest.fixture
def h(tmp_path: Path) -> Any:
    for harness in running_harness(tmp_path, store_threads=2):
        provision(harness)
        yield harness


def withheld_while(h: Harness, meanwhile: Any) -> list[AuditRecord]:
    """An agent's signature withheld because ``meanwhile`` ran from the store seam before its record; the log."""

    def hook() -> None:
        h.store.before.pop("finish_signing")
        meanwhile()

    h.store.before["finish_signing"] = hook
    answer = h.sign(h.transfer(SMALL, MERCHANT))
    assert answer.status_code == 403 and answer.json()["error"]["code"] == "wallet_frozen", answer.text
    log = records(h)
    assert [r.event_type for r in log].count("transaction.withheld") == 1
    return log


def owner_froze(h: Harness) -> list[AuditRecord]:
    return withheld_while(h, lambda: send(h, order(h, 1, "freeze"), "freeze"))


def at(log: list[AuditRecord], event: str) -> int:
    return next(i for i, r in enumerate(log) if r.event_type == event)


def test_a_signature_logged_as_withheld_with_no_freeze_fails(h: Harness) -> None:
    """The hostile parent: it refuses its own record as if frozen (the enclave's signature is in its hands)."""

    def hostile() -> None:
        raise FrozenMeanwhile(h.wallet_id)

    log = withheld_while(h, hostile)
    assert not any(moves_freeze(r) for r in log)
    with pytest.raises(AuditChainError, match=NO_CAUSE):
        verify_audit_receipts(log)
    report = verify_audit_receipts(log, allow_gaps=True)  # accepted only as a gap would be, and counted
    assert (report.withheld, report.withheld_unexplained, report.counter_gaps) == (1, 1, 0)


@pytest.mark.parametrize(
    "orders", [[(1, "freeze")], [(1, "freeze"), (2, "unfreeze")], [(1, "unfreeze")]], ids=["freeze", "both", "unfreeze"]
)
def test_an_owner_order_meanwhile_explains_it(h: Harness, orders: list[tuple[int, str]]) -> None:
    """Any owner order moves the sequence the request read: an unfreeze of an unfrozen wallet too."""
    log = withheld_while(h, lambda: [send(h, order(h, n, purpose), purpose) for n, purpose in orders])
    report = verify_audit_receipts(log)
    assert (report.withheld, report.withheld_unexplained) == (1, 0)


def test_a_policy_freeze_meanwhile_explains_it(h: Harness) -> None:
    """Another request of the agent that the policy freezes (the proxy's own freeze, no owner order)."""

    def attack() -> None:
        handed_away = assign(AssignParams(pubkey=h.agent, owner=Pubkey.new_unique()))
        frozen = h.sign(h.transfer(1, MERCHANT, instructions=(handed_away,)))
        assert frozen.status_code == 403, frozen.text

    log = withheld_while(h, attack)
    assert at(log, "transaction.frozen") < at(log, "transaction.withheld")
    assert verify_audit_receipts(log).withheld_unexplained == 0


def test_a_freeze_of_another_wallet_explains_nothing(h: Harness) -> None:
    log = owner_froze(h)
    i = at(log, "wallet.frozen")
    other = [*log[:i], replace(log[i], wallet_id="w-other"), *log[i + 1 :]]
    with pytest.raises(AuditChainError, match=NO_CAUSE):
        verify_audit_receipts(other)


def test_a_freeze_recorded_after_it_explains_nothing(h: Harness) -> None:
    log = owner_froze(h)
    i, w = at(log, "wallet.frozen"), at(log, "transaction.withheld")
    later = [*log[:i], *log[i + 1 : w + 1], log[i], *log[w + 1 :]]
    with pytest.raises(AuditChainError, match=NO_CAUSE):
        verify_audit_receipts(later)


def test_a_freeze_recorded_long_before_its_receipt_explains_nothing(h: Harness) -> None:
    """The request would have read that freeze: only one within the window of the receipt's time counts."""
    log = owner_froze(h)
    i, w = at(log, "wallet.frozen"), at(log, "transaction.withheld")
    receipt_time = log[w].time  # within a second of the receipt's here (one clock)
    for earlier, fails in ((WITHHELD_CAUSE_WINDOW_SECONDS - 5, False), (WITHHELD_CAUSE_WINDOW_SECONDS + 5, True)):
        moved = [*log[:i], replace(log[i], time=receipt_time - earlier), *log[i + 1 :]]
        if fails:
            with pytest.raises(AuditChainError, match=rf"recorded more than {WITHHELD_CAUSE_WINDOW_SECONDS} s before"):
                verify_audit_receipts(moved)
        else:
            assert verify_audit_receipts(moved).withheld == 1


def record(event: str, payload: dict[str, Any], receipt: bytes | None, wallet_id: str | None = "w1") -> AuditRecord:
    return AuditRecord(1, 0.0, wallet_id, event, json.dumps(payload).encode(), receipt, b"", b"")


def test_which_records_move_a_wallets_freeze_state() -> None:
    """The records written with a `SetFrozen` (an enclave freeze decision only with its receipt: the proxy's own
    refusals hold no decision of the enclave)."""
    freeze = {"decision": {"verdict": "freeze"}}
    assert all(moves_freeze(record(e, {}, None)) for e in ("wallet.frozen", "wallet.unfrozen", "transaction.frozen"))
    assert moves_freeze(record("message.frozen", {}, None))
    assert moves_freeze(record("transaction.refused", freeze, b"r"))
    assert not moves_freeze(record("transaction.refused", freeze, None))
    assert not moves_freeze(record("transaction.refused", {"decision": {"verdict": "deny"}}, b"r"))
    assert not moves_freeze(record("transaction.denied", {"decision": {"verdict": "deny"}}, None))
    assert not moves_freeze(record("wallet.enclave_frozen", {}, b"r"))
    assert not moves_freeze(record("wallet.frozen", {}, None, wallet_id=None))


def test_audit_verify_fails_on_it_and_allow_gaps_warns(h: Harness, tmp_path: Path, capsys: Any) -> None:
    def hostile() -> None:
        raise FrozenMeanwhile(h.wallet_id)

    withheld_while(h, hostile)
    code, out, err = cli(capsys, tmp_path / "state.db", "--receipts")
    assert code == 1 and "transaction.withheld record without a cause" in out + err
    code, out, err = cli(capsys, tmp_path / "state.db", "--receipts", "--allow-gaps")
    assert code == 0 and "1 of them with no freeze, unfreeze or owner order" in err, out + err
