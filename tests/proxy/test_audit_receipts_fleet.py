"""``waiaas audit verify --receipts`` on the log of a fleet: two hosts (cdk.json's default ``waiaas:hostCount`` is
2), each a proxy and its own real enclave, over one store, so their enclave sessions and receipts interleave in one
log. Every receipt must verify under the key of some session record before it (`parent_proxy.audit_session_keys`),
and each session's counters are checked on their own; what a hostile parent could do to such a log still fails.

Before (found this session): each receipt was checked under the key of the latest session record only, so host A's
freeze receipt, recorded after host B's session record, failed the check of every honest fleet log.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections import Counter
from pathlib import Path

import pytest
from solders.pubkey import Pubkey

import enclave_app.receipts
from enclave_app.dev_nsm import UnsafeDevelopmentNsm
from enclave_app.errors import ReceiptError
from enclave_app.order_receipts import verify_order_receipt
from enclave_app.receipts import verify_receipt
from parent_proxy.audit_receipts import verify_audit_receipts
from parent_proxy.enclave_sessions import ENCLAVE_SESSION_EVENT
from parent_proxy.order_receipts import ORDER_RECEIPT_EVENTS
from parent_proxy.receipt_checks import split_receipt
from parent_proxy.store.model import AuditRecord
from policies.ed25519 import verify_ed25519
from tests.proxy.api_harness import (
    Harness,
    LoopThread,
    new_session_key,
    start_enclave,
    stop_enclave,
)
from tests.proxy.audit_log_rewrites import cli, copy_of, read, rewrite
from tests.proxy.fleet_harness import two_hosts
from tests.proxy.harness_calls import order, send
from tests.support.policies import MERCHANT

PCR0 = bytes([9]) * 48
A_RESTARTS = 3


def signs(h: Harness) -> None:
    answer = h.sign(h.transfer(1000, MERCHANT))
    assert answer.status_code == 200, answer.text


def restart(h: Harness, loop: LoopThread, servers: list[asyncio.Server], nsm: UnsafeDevelopmentNsm) -> None:
    """``h``'s enclave (its server is ``servers[0]``) restarts; its proxy finds out at its next request, which fails
    (the new boot has not loaded the wallet: docs/api.md), and the one after it records the new session."""
    stop_enclave(h, loop, servers[0])
    servers[0] = start_enclave(loop, h.socket, nsm=nsm, clock=h.clock)
    lost = h.sign(h.transfer(1000, MERCHANT))
    assert lost.status_code == 503, lost.text


@pytest.fixture(scope="module")
def fleet_log(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The state database two hosts A and B wrote (the shared store), and the root PEM of their NSM: a wallet
    created through A, an agent request through B, a freeze and an unfreeze through A (which B's enclave gets at its
    next request), requests through both, then A's enclave restarting three times between requests while B's runs
    on. In mode nitro, one development NSM for the fleet (one root, as every Nitro host chains to AWS's)."""
    tmp_path = tmp_path_factory.mktemp("fleet")
    nsm = UnsafeDevelopmentNsm(pcrs={0: PCR0})
    (tmp_path / "root.pem").write_bytes(nsm.root_certificate_pem)
    with two_hosts(tmp_path, nsm) as (a, b, loop, servers):
        signs(b)
        send(a, order(a, 1))
        assert b.sign(b.transfer(1000, MERCHANT)).status_code == 403  # B's enclave is sent the freeze
        send(a, order(a, 2, "unfreeze"), "unfreeze")
        for h in (b, a, b):
            signs(h)
        for _ in range(A_RESTARTS):
            restart(a, loop, servers, nsm)
            signs(a)
            signs(b)
        for h in (b, a, b, b):
            signs(h)
    return tmp_path / "a" / "state.db", tmp_path / "root.pem"


@pytest.fixture
def db(fleet_log: tuple[Path, Path], tmp_path: Path) -> Path:
    return copy_of(fleet_log[0], tmp_path)


def session_seqs(records: list[AuditRecord]) -> list[int]:
    """The seqs of the session records: A's first boot, B's (its only one), then A's later boots."""
    return [r.seq for r in records if r.event_type == ENCLAVE_SESSION_EVENT]


def session_key_of(records: list[AuditRecord], seq: int) -> bytes:
    """The key the session record at ``seq`` names."""
    record = records[index_of(records, seq)]
    return bytes(Pubkey.from_string(json.loads(record.payload)["session_public_key"]))


def signers(records: list[AuditRecord]) -> dict[int, int]:
    """Receipt record seq -> the seq of the session record whose key signed it (found by trying every key)."""
    keys = {seq: session_key_of(records, seq) for seq in session_seqs(records)}
    found = {}
    for record in records:
        if record.receipt is None:
            continue
        verify = verify_order_receipt if record.event_type in ORDER_RECEIPT_EVENTS else verify_receipt
        for seq, key in keys.items():
            try:
                verify(*split_receipt(record.receipt), key)
            except ReceiptError:
                continue
            found[record.seq] = seq
    return found


def index_of(records: list[AuditRecord], seq: int) -> int:
    return next(i for i, r in enumerate(records) if r.seq == seq)


def test_an_honest_fleet_log_verifies(
    fleet_log: tuple[Path, Path], db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    records = read(db)
    sessions = session_seqs(records)
    assert len(sessions) == 2 + A_RESTARTS
    by_session = signers(records)
    latest = {seq: max(s for s in sessions if s < seq) for seq in by_session}
    assert all(by_session[seq] < seq for seq in by_session)  # each after its own session record ...
    interleaved = [seq for seq in by_session if by_session[seq] != latest[seq]]
    assert {by_session[seq] for seq in interleaved} == set(sessions[:2])  # A's first boot, B's one boot
    assert len(interleaved) == 9  # A's freeze, unfreeze and request after B's session record; B's 6 after A's restarts
    anchor = ("--root-pem", str(fleet_log[1]), "--pcr", f"0={PCR0.hex()}")
    code, out, err = cli(capsys, db, "--receipts", *anchor)
    assert code == 0, err
    assert f"under {len(sessions)} session records ({len(sessions)} attestation documents verified)" in out
    assert "WARNING" not in err


def test_a_receipt_of_the_old_boot_after_the_new_boots_session_record_verifies(
    db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two proxy processes on one host, one enclave: a request in flight across the restart is recorded after the
    new session's record (the other process's) though the old boot signed it."""
    records = read(db)
    a1, _, first_restart = session_seqs(records)[:3]
    old = max(seq for seq, session in signers(records).items() if session == a1)  # A's last receipt of its first boot
    assert old < first_restart
    moved = records.pop(index_of(records, old))
    i = index_of(records, first_restart)
    rewrite(db, [*records[: i + 1], moved, *records[i + 1 :]])
    code, out, err = cli(capsys, db, "--receipts")
    assert code == 0 and "receipts OK" in out, err


def test_the_check_tries_the_keys_in_force_first(db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The receipts name no session: each costs one Ed25519 verification per key tried. The keys in force (A's
    latest boot, B's boot) are tried before those of A's boots that ended, so no receipt costs more than two,
    however many restarts came before (trying the latest session record first would cost B's last receipts four)."""
    tries: Counter[bytes] = Counter()  # the signed message (a receipt) -> the keys tried on it

    def counted(public_key: bytes, signature: bytes, message: bytes) -> bool:
        tries[message] += 1
        return verify_ed25519(public_key, signature, message)

    monkeypatch.setattr(enclave_app.receipts, "verify_ed25519", counted)
    report = verify_audit_receipts(read(db))
    assert len(tries) == report.receipts + report.order_receipts
    assert max(tries.values()) == 2, sorted(tries.values())


def test_a_receipt_before_its_session_record_fails(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """B's first signed transfer moved before B's session record, after A's: no key recorded before it signed it
    (B's session record, one seq later now, names the key that did)."""
    records = read(db)
    b1 = session_seqs(records)[1]
    signed = next(r for r in records if r.event_type == "transaction.signed")
    assert signers(records)[signed.seq] == b1
    records.remove(signed)
    i = index_of(records, b1)
    rewrite(db, [*records[:i], signed, *records[i:]])
    code, _, err = cli(capsys, db, "--receipts")
    assert code == 1, err
    message = f"broken at seq {i + 1}: receipt signed by the session key of seq {b1 + 1}, which is recorded after it"
    assert message in err, err


def test_a_receipt_re_signed_by_an_unrecorded_key_fails(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    records = read(db)
    i = max(j for j, r in enumerate(records) if r.event_type == "transaction.signed")  # B's, after 5 sessions
    receipt, _ = split_receipt(records[i].receipt or b"")
    records[i] = dataclasses.replace(records[i], receipt=receipt + new_session_key().sign_encoded(receipt))
    rewrite(db, records)
    assert cli(capsys, db)[0] == 0  # the chain alone cannot tell
    code, _, err = cli(capsys, db, "--receipts")
    assert code == 1 and f"broken at seq {i + 1}: receipt not signed by any of the 5 session keys recorded" in err, err


@pytest.mark.parametrize("event", ["transaction.signed", "wallet.enclave_frozen"])
def test_a_receipt_copied_under_another_session_fails(event: str, db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """B's first receipt of ``event`` copied to the end of the log, after A's later sessions: its counter is recorded
    twice under B's key."""
    records = read(db)
    b1 = session_seqs(records)[1]
    by_session = signers(records)
    copied = next(r for r in records if r.event_type == event and by_session.get(r.seq) == b1)
    verify = verify_order_receipt if event in ORDER_RECEIPT_EVENTS else verify_receipt
    counter = verify(*split_receipt(copied.receipt or b""), session_key_of(records, b1)).counter
    rewrite(db, [*records, copied])
    code, _, err = cli(capsys, db, "--receipts")
    assert code == 1, err
    message = f"receipt counter {counter} recorded twice under the session key of seq {b1}"
    assert f"broken at seq {len(records) + 1}: {message}" in err, err


def test_a_gap_in_one_sessions_counters_fails_unless_allowed(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """One of B's signed transfers (between A's receipts) dropped: B's counters have a gap, A's have none."""
    records = read(db)
    b1 = session_seqs(records)[1]
    by_session = signers(records)
    dropped = [r for r in records if r.event_type == "transaction.signed" and by_session.get(r.seq) == b1][2]
    counter = verify_receipt(*split_receipt(dropped.receipt or b""), session_key_of(records, b1)).counter
    records.remove(dropped)
    rewrite(db, records)
    code, _, err = cli(capsys, db, "--receipts")
    assert code == 1, err
    message = f"1 receipt counter(s) of this session missing from the log, the first {counter}"
    assert f"broken at seq {b1}: {message}" in err, err
    code, out, err = cli(capsys, db, "--receipts", "--allow-gaps")
    assert code == 0 and "receipts OK" in out and "WARNING: 1 receipt counters not in the log" in err, err
