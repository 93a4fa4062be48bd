"""Contract tests for agent-key rotation in the store, on every adapter (`parent_proxy.store.agent_keys`): a wallet's
one candidate key (`SetAgentKeyCandidate`), the owner-signed switch (`SwitchAgentKey`) that installs it and retires
the old key, and the reads `get_agent_key_candidate` / `retired_agent_keys`. Both changes are written with their
audit record by `Store.apply_audited`, or not at all. Then SQLite's migration from schema version 5, and DynamoDB's
conditions under concurrent writes and a resent transaction.
"""

from __future__ import annotations

import dataclasses
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from parent_proxy.audit import AuditLog, iter_audit_records, verify_audit_chain
from parent_proxy.errors import Conflict, InvalidInput, NotFound, StoreUnavailable
from parent_proxy.store.model import (
    AgentKeyCandidate,
    Approval,
    ApprovalStatus,
    AuditRecord,
    OutboxItem,
    RetiredAgentKey,
)
from parent_proxy.store.protocol import AuditSealer, Store
from parent_proxy.store.sealed_keys import SealedKeyReplacement
from parent_proxy.store.sqlite import SqliteStore
from parent_proxy.store.sqlite_schema import SCHEMA_VERSION
from parent_proxy.store.state_changes import (
    CreateApproval,
    RecordEvent,
    SetAgentKeyCandidate,
    SetFrozen,
    StateChange,
    SwitchAgentKey,
)
from tests.proxy.conftest import FakeClock, make_wallet, moto_dynamo_store
from tests.proxy.hooked_client import Hooked, transaction_answer_lost

T0 = 1_700_000_000.0
AGENT = b"\x01" * 32  # make_wallet's agent key
OLD_BLOB = b"sealed-blob"  # make_wallet's sealed key
NEW = b"\x11" * 32
OTHER = b"\x22" * 32
BLOB = b"SECRET-candidate-blob"


def candidate(wallet_id: str = "w1", agent: bytes = AGENT, key: bytes = NEW, blob: bytes = BLOB) -> AgentKeyCandidate:
    return AgentKeyCandidate(wallet_id, agent, key, blob, T0)


def sealer(s: Store, clock: FakeClock, event_type: str = "agent_key.changed") -> AuditSealer:
    return AuditLog(s, clock).sealer(event_type, {}, wallet_id="w1")


def set_candidate(s: Store, clock: FakeClock, c: AgentKeyCandidate) -> AuditRecord:
    return s.apply_audited([SetAgentKeyCandidate(c)], sealer(s, clock, "agent_key.candidate"))


def switch(s: Store, clock: FakeClock, agent: bytes = AGENT, key: bytes = NEW, now: float = T0 + 5) -> AuditRecord:
    return s.apply_audited([SwitchAgentKey("w1", agent, key, now)], sealer(s, clock, "agent_key.switched"))


def state(s: Store) -> tuple[Any, ...]:
    """Everything a rotation change may write, for before/after comparisons."""
    return (
        s.get_wallet("w1"),
        s.get_agent_key_candidate("w1"),
        s.retired_agent_keys("w1"),
        s.get_wallet("w2"),
        s.get_agent_key_candidate("w2"),
        s.audit_head(),
    )


# -- the candidate ---------------------------------------------------------------------------------------------------
def test_a_candidate_is_kept_and_read_back(wallet_store: Store, clock: FakeClock) -> None:
    s = wallet_store
    assert s.get_agent_key_candidate("w1") is None and s.retired_agent_keys("w1") == []
    record = set_candidate(s, clock, candidate())
    assert s.audit_head() == record and record.event_type == "agent_key.candidate"
    verify_audit_chain(iter_audit_records(s))
    assert s.get_agent_key_candidate("w1") == candidate()
    assert s.get_agent_key_candidate("w2") is None
    assert s.get_wallet("w1") == make_wallet("w1")  # the wallet itself is untouched until the switch


def test_a_second_candidate_is_refused_and_the_first_kept(wallet_store: Store, clock: FakeClock) -> None:
    """One candidate per wallet, never replaced (its key may already be a member on chain)."""
    s = wallet_store
    set_candidate(s, clock, candidate())
    before = state(s)
    for second in (candidate(key=OTHER, blob=b"other blob"), candidate()):  # another, or the same again
        with pytest.raises(Conflict, match="wallet w1 already has an agent key candidate"):
            set_candidate(s, clock, second)
        assert state(s) == before
    assert s.get_agent_key_candidate("w1") == candidate()


def test_a_candidate_for_another_agent_key_is_refused(wallet_store: Store, clock: FakeClock) -> None:
    s = wallet_store
    before = state(s)
    with pytest.raises(Conflict, match="wallet w1: its agent key is not the one given"):
        set_candidate(s, clock, candidate(agent=OTHER))
    assert state(s) == before and s.get_agent_key_candidate("w1") is None


def test_an_unknown_wallet_is_not_found(wallet_store: Store, clock: FakeClock) -> None:
    s = wallet_store
    before = state(s)
    with pytest.raises(NotFound, match="wallet w9 not found"):
        set_candidate(s, clock, candidate("w9"))
    with pytest.raises(NotFound, match="wallet w9 not found"):
        s.apply_audited([SwitchAgentKey("w9", AGENT, NEW, T0)], sealer(s, clock))
    with pytest.raises(NotFound, match="wallet w9 not found"):
        s.get_agent_key_candidate("w9")
    with pytest.raises(NotFound, match="wallet w9 not found"):
        s.retired_agent_keys("w9")
    assert state(s) == before


@pytest.mark.parametrize("read", ["get_agent_key_candidate", "retired_agent_keys"])
def test_the_reads_refuse_a_malformed_wallet_id(wallet_store: Store, read: str) -> None:
    with pytest.raises(InvalidInput, match=r"^wallet_id: must be 1-128 characters") as refused:
        getattr(wallet_store, read)("w 1")
    assert refused.value.field == "wallet_id"


# -- the switch ------------------------------------------------------------------------------------------------------
def test_a_switch_installs_the_candidate_and_retires_the_old_key(wallet_store: Store, clock: FakeClock) -> None:
    s = wallet_store
    s.install_policy("w1", b"policy-3", 3)
    s.set_frozen("w1", True, "owner froze it")
    token = s.issue_token("w1", T0)
    s.record_request("w1", T0)
    s.commit(s.reserve("w1", "r1", {"SOL": 7}, {}, T0))
    set_candidate(s, clock, candidate())
    before, w2 = s.get_wallet("w1"), s.get_wallet("w2")
    record = switch(s, clock, now=T0 + 5)
    assert s.audit_head() == record and record.event_type == "agent_key.switched"
    verify_audit_chain(iter_audit_records(s))
    # Key and blob are the candidate's; vault, owner, policy and frozen flag are unchanged.
    assert s.get_wallet("w1") == dataclasses.replace(before, agent_pubkey=NEW, sealed_key=BLOB)
    assert s.get_agent_key_candidate("w1") is None
    assert s.retired_agent_keys("w1") == [RetiredAgentKey("w1", AGENT, OLD_BLOB, T0 + 5)]
    # Tokens, counters and spending are the wallet's, not the key's.
    assert s.authenticate_token(token.token) == "w1"
    assert s.count_requests("w1", 0.0) == 1 and s.spent_in_window("w1", "SOL", 3600, T0) == 7
    assert s.get_wallet("w2") == w2 and s.retired_agent_keys("w2") == []


@pytest.mark.parametrize(
    ("with_candidate", "change", "match"),
    [
        (True, SwitchAgentKey("w1", OTHER, NEW, T0), "wallet w1: its agent key is not the one given"),
        (True, SwitchAgentKey("w1", AGENT, OTHER, T0), "wallet w1: no agent key candidate with the key given"),
        (False, SwitchAgentKey("w1", AGENT, NEW, T0), "wallet w1: no agent key candidate with the key given"),
    ],
    ids=["wrong-agent", "wrong-candidate", "no-candidate"],
)
def test_a_refused_switch_writes_nothing(
    wallet_store: Store, clock: FakeClock, with_candidate: bool, change: SwitchAgentKey, match: str
) -> None:
    s = wallet_store
    if with_candidate:
        set_candidate(s, clock, candidate())
    before = state(s)
    with pytest.raises(Conflict, match=match):
        s.apply_audited([change], sealer(s, clock))
    assert state(s) == before


def test_a_switch_happens_once(wallet_store: Store, clock: FakeClock) -> None:
    s = wallet_store
    set_candidate(s, clock, candidate())
    switch(s, clock)
    before = state(s)
    with pytest.raises(Conflict, match="wallet w1: its agent key is not the one given"):
        switch(s, clock)  # the same owner-signed switch again
    with pytest.raises(Conflict, match="wallet w1: no agent key candidate with the key given"):
        switch(s, clock, agent=NEW, key=NEW[:31] + b"\x00")  # from the new key, but there is no candidate
    assert state(s) == before and len(s.retired_agent_keys("w1")) == 1


def test_after_a_switch_the_next_rotation_starts_from_the_new_key(wallet_store: Store, clock: FakeClock) -> None:
    """Retired keys are listed in the order of the switches (oldest first), whatever times the callers passed, and
    past nine switches too (DynamoDB sorts their keys as text)."""
    s = wallet_store
    set_candidate(s, clock, candidate())
    switch(s, clock, now=T0 + 5)
    with pytest.raises(Conflict, match="its agent key is not the one given"):
        set_candidate(s, clock, candidate(key=OTHER))  # still naming the retired key
    keys = [AGENT, NEW] + [bytes([0x30 + i]) * 32 for i in range(10)]
    blobs = [OLD_BLOB, BLOB] + [f"blob-{i}".encode() for i in range(10)]
    for i in range(1, len(keys) - 1):
        set_candidate(s, clock, candidate(agent=keys[i], key=keys[i + 1], blob=blobs[i + 1]))
        switch(s, clock, agent=keys[i], key=keys[i + 1], now=T0 + 5 - i)  # each switch given an earlier time
    assert s.retired_agent_keys("w1") == [
        RetiredAgentKey("w1", keys[i], blobs[i], T0 + 5 - i) for i in range(len(keys) - 1)
    ]
    wallet = s.get_wallet("w1")
    assert (wallet.agent_pubkey, wallet.sealed_key) == (keys[-1], blobs[-1])
    assert s.get_agent_key_candidate("w1") is None


# -- input checks ----------------------------------------------------------------------------------------------------
def _cand(**changes: Any) -> SetAgentKeyCandidate:
    return SetAgentKeyCandidate(dataclasses.replace(candidate(), **changes))


def _switch(**changes: Any) -> SwitchAgentKey:
    return dataclasses.replace(SwitchAgentKey("w1", AGENT, NEW, T0), **changes)


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ([_cand(wallet_id="bad id!")], "wallet_id: must be 1-128 characters"),
        ([_cand(agent_pubkey=AGENT[:31])], "agent_pubkey: must be 32 bytes"),
        ([_cand(candidate_pubkey=NEW + b"\x00")], "candidate_pubkey: must be 32 bytes"),
        ([_cand(candidate_pubkey=AGENT)], "candidate_pubkey: is the agent key it would replace"),
        ([_cand(candidate_pubkey="11" * 32)], "candidate_pubkey: must be 32 bytes"),
        ([_cand(sealed_key=b"")], "sealed_key: must not be empty"),
        ([_cand(sealed_key="blob")], "sealed_key: must be bytes"),
        ([_cand(sealed_key=b"x" * 70_000)], "sealed_key: is 70000 bytes, more than"),
        ([_cand(created_at=float("nan"))], "created_at: must be a finite"),
        ([SetAgentKeyCandidate("w1")], "candidate: must be an AgentKeyCandidate"),  # type: ignore[arg-type]
        ([_switch(wallet_id="")], "wallet_id: must be 1-128 characters"),
        ([_switch(agent_pubkey=None)], "agent_pubkey: must be 32 bytes"),
        ([_switch(candidate_pubkey=NEW[:16])], "candidate_pubkey: must be 32 bytes"),
        ([_switch(candidate_pubkey=AGENT)], "candidate_pubkey: is the agent key it would replace"),
        ([_switch(now=-1.0)], "now: must be a finite, non-negative"),
        ([SetFrozen("w1", False, None), _switch()], "wallet w1: at most one change of its wallet"),
        ([_switch(), SetFrozen("w1", False, None)], "wallet w1: at most one change of its wallet"),
        ([SetAgentKeyCandidate(candidate(key=OTHER)), _switch()], "wallet w1: at most one change of its wallet"),
    ],
    ids=["bad-id", "short-agent", "long-candidate", "candidate-is-agent", "text-key", "empty-blob", "text-blob",
         "large-blob", "nan-time", "not-a-candidate", "switch-bad-id", "switch-no-agent", "switch-short-candidate",
         "switch-candidate-is-agent", "switch-negative-time", "freeze-then-switch", "switch-then-freeze",
         "set-then-switch"],
)  # fmt: skip
def test_malformed_changes_are_refused_before_anything_is_written(
    wallet_store: Store, clock: FakeClock, changes: list[StateChange], match: str
) -> None:
    """With a candidate in place, so that each change would otherwise be written (or get further)."""
    s = wallet_store
    set_candidate(s, clock, candidate())
    before = state(s)
    with pytest.raises(InvalidInput, match=match):
        s.apply_audited(changes, sealer(s, clock))
    assert state(s) == before


def test_another_wallets_changes_may_go_with_a_switch(wallet_store: Store, clock: FakeClock) -> None:
    s = wallet_store
    set_candidate(s, clock, candidate())
    changes: list[StateChange] = [SetFrozen("w2", True, "r"), RecordEvent("w1", "request", T0), _switch()]
    s.apply_audited(changes, sealer(s, clock))
    assert s.get_wallet("w1").agent_pubkey == NEW and s.get_wallet("w2").frozen
    assert s.count_requests("w1", 0.0) == 1


def test_blobs_stay_out_of_reprs_and_refusals(wallet_store: Store, clock: FakeClock) -> None:
    s = wallet_store
    set_candidate(s, clock, candidate())
    shown = [repr(candidate()), repr(SetAgentKeyCandidate(candidate())), repr(s.get_agent_key_candidate("w1"))]
    with pytest.raises(Conflict, match="wallet w1 already has an agent key candidate") as refused:
        set_candidate(s, clock, candidate(key=OTHER))
    switch(s, clock)
    shown += [str(refused.value), repr(s.retired_agent_keys("w1")), repr(s.get_wallet("w1"))]
    assert all("SECRET" not in text and "sealed-blob" not in text for text in shown), shown
    assert "candidate_pubkey" in shown[0]  # the repr is there, without the blob


# -- all or nothing --------------------------------------------------------------------------------------------------
def _raising(_head: AuditRecord | None) -> AuditRecord:
    raise StoreUnavailable("the clock could not be read")


PENDING = Approval("a1", "w1", b"{}", ApprovalStatus.PENDING, T0)


@pytest.mark.parametrize(
    ("later", "error", "match"),
    [
        (CreateApproval(PENDING), Conflict, "approval a1 already exists"),
        (SetFrozen("w9", True, "r"), NotFound, "wallet w9 not found"),
        (None, StoreUnavailable, "clock"),
    ],
    ids=["later-change-refused", "later-change-unknown-wallet", "audit-record-fails"],
)
def test_a_later_failure_leaves_no_candidate_and_no_switch(
    wallet_store: Store, clock: FakeClock, later: StateChange | None, error: type[Exception], match: str
) -> None:
    s = wallet_store
    s.create_approval(PENDING)
    seal = _raising if later is None else sealer(s, clock)
    tail: list[StateChange] = [] if later is None else [later]
    before = state(s)
    with pytest.raises(error, match=match):
        s.apply_audited([SetAgentKeyCandidate(candidate()), *tail], seal)
    assert state(s) == before and s.get_agent_key_candidate("w1") is None
    set_candidate(s, clock, candidate())
    before = state(s)
    with pytest.raises(error, match=match):
        s.apply_audited([SwitchAgentKey("w1", AGENT, NEW, T0), *tail], seal)
    assert state(s) == before and s.get_wallet("w1").agent_pubkey == AGENT and s.retired_agent_keys("w1") == []


def test_a_refused_webhook_item_leaves_the_wallet_unswitched(wallet_store: Store, clock: FakeClock) -> None:
    s = wallet_store
    item = OutboxItem("e1", "w1", "agent_key.switched", b"{}", created_at=T0, next_attempt_at=T0)
    s.enqueue_webhook(item)
    set_candidate(s, clock, candidate())
    before = state(s)
    with pytest.raises(Conflict, match="outbox item e1 already exists"):
        s.apply_audited([_switch()], sealer(s, clock), item)
    assert state(s) == before


# -- SQLite: schema version 5 ----------------------------------------------------------------------------------------
def test_a_version_5_database_gets_the_agent_key_tables(tmp_path: Path, clock: FakeClock) -> None:
    path = tmp_path / "state.db"
    store = SqliteStore(path)
    store.create_wallet(make_wallet("w1"))
    store.create_wallet(make_wallet("w2", agent_pubkey=OTHER))
    token = store.issue_token("w1", T0)
    AuditLog(store, clock).append("wallet.created", {}, wallet_id="w1")
    store.close()
    with sqlite3.connect(path) as conn:  # version 5: no agent-key tables
        conn.execute("DROP TABLE agent_key_candidates")
        conn.execute("DROP TABLE retired_agent_keys")
        conn.execute("PRAGMA user_version = 5")
    migrated = SqliteStore(path)
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert (migrated.get_wallet("w1"), migrated.get_wallet("w2")) == (
        make_wallet("w1"), make_wallet("w2", agent_pubkey=OTHER),
    )  # fmt: skip
    assert migrated.authenticate_token(token.token) == "w1" and migrated.audit_head() is not None
    assert migrated.get_agent_key_candidate("w1") is None and migrated.retired_agent_keys("w1") == []
    set_candidate(migrated, clock, candidate())
    switch(migrated, clock)
    assert migrated.retired_agent_keys("w1") == [RetiredAgentKey("w1", AGENT, OLD_BLOB, T0 + 5)]
    verify_audit_chain(iter_audit_records(migrated))
    migrated.close()
    again = SqliteStore(path)  # opening a version-6 database again changes nothing
    assert again.get_wallet("w1").agent_pubkey == NEW and len(again.retired_agent_keys("w1")) == 1
    again.close()


# -- DynamoDB: the transaction's conditions ------------------------------------------------------------------------
@pytest.fixture
def dynamo(aws_env: None) -> Iterator[tuple[Any, Hooked]]:
    with moto_dynamo_store(Hooked) as (store, client):
        store.create_wallet(make_wallet("w1"))
        store.create_wallet(make_wallet("w2"))
        yield store, client


def _before_first_transaction(client: Hooked, write: Callable[[], object]) -> list[int]:
    """Run ``write`` (another proxy's write) once, between the adapter's reads and its first transaction."""
    calls: list[int] = []

    def hook(real: Callable[..., Any], **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 1:
            write()  # nested calls go through this hook too
        return real(**kwargs)

    client.hooks["transact_write_items"] = hook
    return calls


def test_dynamodb_a_reseal_between_read_and_switch_refuses_the_switch(dynamo: tuple[Any, Hooked]) -> None:
    """The retired record must hold the blob the wallet had: a blob re-sealed after the read fails the condition."""
    s, client = dynamo
    clock = FakeClock()
    set_candidate(s, clock, candidate())
    resealed = [SealedKeyReplacement("w1", OLD_BLOB, b"resealed")]
    _before_first_transaction(client, lambda: s.replace_sealed_keys(resealed, sealer(s, clock, "resealed")))
    with pytest.raises(Conflict, match="wallet w1: its agent key, sealed key or candidate changed while the switch"):
        switch(s, clock)
    del client.hooks["transact_write_items"]
    assert (s.get_wallet("w1").agent_pubkey, s.get_wallet("w1").sealed_key) == (AGENT, b"resealed")
    assert s.get_agent_key_candidate("w1") == candidate() and s.retired_agent_keys("w1") == []
    assert [r.event_type for r in iter_audit_records(s)] == ["agent_key.candidate", "resealed"]


def test_dynamodb_two_concurrent_switches_write_one(dynamo: tuple[Any, Hooked]) -> None:
    s, client = dynamo
    clock = FakeClock()
    set_candidate(s, clock, candidate())
    _before_first_transaction(client, lambda: switch(s, clock, now=T0 + 1))
    with pytest.raises(Conflict, match="wallet w1: its agent key, sealed key or candidate changed while the switch"):
        switch(s, clock, now=T0 + 2)
    assert s.retired_agent_keys("w1") == [RetiredAgentKey("w1", AGENT, OLD_BLOB, T0 + 1)]
    assert [r.event_type for r in iter_audit_records(s)] == ["agent_key.candidate", "agent_key.switched"]
    assert s.get_wallet("w1").agent_pubkey == NEW


def test_dynamodb_two_concurrent_candidates_keep_the_first(dynamo: tuple[Any, Hooked]) -> None:
    s, client = dynamo
    clock = FakeClock()
    _before_first_transaction(client, lambda: set_candidate(s, clock, candidate(key=OTHER)))
    with pytest.raises(Conflict, match="wallet w1 already has an agent key candidate"):
        set_candidate(s, clock, candidate())
    assert s.get_agent_key_candidate("w1") == candidate(key=OTHER)


def test_dynamodb_item_layout(dynamo: tuple[Any, Hooked]) -> None:
    """The keys `dynamodb_agent_keys` documents: the candidate, the retired keys numbered by switch, the count."""
    s, client = dynamo
    clock = FakeClock()
    set_candidate(s, clock, candidate())

    def get(sk: str) -> Any:
        return client.inner.get_item(TableName="waiaas-test", Key={"pk": {"S": "W#w1"}, "sk": {"S": sk}}).get("Item")

    assert get("AGENT_KEY_CANDIDATE")["candidate_pubkey"] == {"B": NEW}
    switch(s, clock)
    assert get("AGENT_KEY_CANDIDATE") is None
    assert get("AKR#00000000000000000001")["sealed_key"] == {"B": OLD_BLOB}
    assert get("WALLET")["agent_key_switches"] == {"N": "1"}


def test_dynamodb_a_resent_switch_is_this_switch(dynamo: tuple[Any, Hooked]) -> None:
    """A resend carries the first send's token (botocore fills it in once per call), so it is not refused by the
    switch it resends: one switch, one record."""
    s, client = dynamo
    clock = FakeClock()
    with transaction_answer_lost(client) as resent:
        set_candidate(s, clock, candidate())
        record = switch(s, clock)
    assert len(resent) == 2 and s.audit_head() == record
    assert [r.event_type for r in iter_audit_records(s)] == ["agent_key.candidate", "agent_key.switched"]
    assert s.get_wallet("w1").agent_pubkey == NEW and len(s.retired_agent_keys("w1")) == 1
