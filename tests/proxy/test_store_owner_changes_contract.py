"""Contract tests for the owner's changes as `Store.apply_audited` changes on every adapter: a wallet created, a
policy installed, an agent token stored or revoked, the webhook set, each written with its audit record or, when
refused or when the record is refused, not at all."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest

from parent_proxy.audit import AuditLog
from parent_proxy.errors import AlreadyRevoked, Conflict, InvalidInput, NotFound, StalePolicySequence
from parent_proxy.store.model import AuditRecord, Wallet, WebhookConfig
from parent_proxy.store.protocol import Store
from parent_proxy.store.state_changes import (
    CreateWallet,
    InstallPolicy,
    RevokeToken,
    SetFrozen,
    SetWebhook,
    StateChange,
    StoreToken,
)
from tests.proxy.conftest import FakeClock, make_wallet

T0 = 1_700_000_000.0
SECRET = "s" * 43
HASH = hashlib.sha256(SECRET.encode()).digest()
TOKEN = f"waiaas_{'a' * 16}_{SECRET}"


def state(s: Store) -> tuple[Any, ...]:
    def token() -> str | None:
        try:
            return s.authenticate_token(TOKEN)
        except NotFound:
            return None

    wallets: list[Wallet | None] = []
    for wallet_id in ("w1", "w2", "w3"):
        try:
            wallets.append(s.get_wallet(wallet_id))
        except NotFound:
            wallets.append(None)
    return (*wallets, token(), s.get_webhook("w1"), s.audit_head())


def apply(s: Store, clock: FakeClock, change: StateChange) -> AuditRecord:
    return s.apply_audited([change], AuditLog(s, clock).sealer("owner.change", {}, wallet_id="w1"))


def test_each_owner_change_is_written_with_its_record(wallet_store: Store, clock: FakeClock) -> None:
    s = wallet_store
    apply(s, clock, CreateWallet(make_wallet("w3")))
    assert s.get_wallet("w3") == make_wallet("w3")
    apply(s, clock, InstallPolicy("w1", b"policy-7", 7))
    assert (s.get_wallet("w1").policy_document, s.get_wallet("w1").policy_sequence) == (b"policy-7", 7)
    apply(s, clock, StoreToken("a" * 16, "w1", HASH, T0))
    assert s.authenticate_token(TOKEN) == "w1"
    apply(s, clock, SetWebhook(WebhookConfig("w1", "https://owner.example/h", b"k" * 32)))
    assert s.get_webhook("w1") == WebhookConfig("w1", "https://owner.example/h", b"k" * 32)
    apply(s, clock, RevokeToken("a" * 16, "w1", T0 + 1))
    with pytest.raises(NotFound, match="unknown or revoked token"):
        s.authenticate_token(TOKEN)
    assert s.audit_head().seq == 5  # type: ignore[union-attr]


def test_revoking_a_revoked_token_is_refused_and_writes_nothing(wallet_store: Store, clock: FakeClock) -> None:
    """The API answers a repeated revocation 204 (docs/api.md) from this refusal. Before: the change was accepted
    again, with a second ``token.revoked``-style record."""
    s = wallet_store
    apply(s, clock, StoreToken("a" * 16, "w1", HASH, T0))
    apply(s, clock, RevokeToken("a" * 16, "w1", T0 + 1))
    before = (state(s), s.token_wallet("a" * 16))
    with pytest.raises(AlreadyRevoked, match="token aaaaaaaaaaaaaaaa is revoked already"):
        apply(s, clock, RevokeToken("a" * 16, "w1", T0 + 2))
    with pytest.raises(NotFound, match="token aaaaaaaaaaaaaaaa not found"):  # another wallet's: still not found
        apply(s, clock, RevokeToken("a" * 16, "w2", T0 + 2))
    assert (state(s), s.token_wallet("a" * 16)) == before
    s.revoke_token("a" * 16, T0 + 3)  # the direct method, which writes no record, stays idempotent
    assert state(s) == before[0]


@pytest.mark.parametrize(
    ("change", "error", "match"),
    [
        (CreateWallet(make_wallet("w1")), Conflict, "wallet w1 already exists"),
        (InstallPolicy("w1", b"p", 1), StalePolicySequence, "policy sequence 1 is not greater than 1"),
        (InstallPolicy("w9", b"p", 2), NotFound, "wallet w9 not found"),
        (StoreToken("b" * 16, "w9", HASH, T0), NotFound, "wallet w9 not found"),
        (StoreToken("a" * 16, "w2", HASH, T0), Conflict, "token aaaaaaaaaaaaaaaa already exists"),
        (RevokeToken("a" * 16, "w2", T0), NotFound, "token aaaaaaaaaaaaaaaa not found"),
        (RevokeToken("c" * 16, "w1", T0), NotFound, "token cccccccccccccccc not found"),
        (SetWebhook(WebhookConfig("w9", "https://owner.example/h", b"k" * 32)), NotFound, "wallet w9 not found"),
    ],
    ids=["wallet-exists", "stale-policy", "policy-no-wallet", "token-no-wallet", "token-exists",
         "revoke-other-wallet", "revoke-unknown", "webhook-no-wallet"],
)  # fmt: skip
def test_a_refused_owner_change_writes_nothing(
    wallet_store: Store, clock: FakeClock, change: StateChange, error: type[Exception], match: str
) -> None:
    s = wallet_store
    apply(s, clock, InstallPolicy("w1", b"policy-1", 1))
    apply(s, clock, StoreToken("a" * 16, "w1", HASH, T0))
    before = state(s)
    with pytest.raises(error, match=match):
        apply(s, clock, change)
    assert state(s) == before


def test_a_refused_record_writes_no_owner_change(wallet_store: Store, clock: FakeClock) -> None:
    s = wallet_store

    def refused(head: AuditRecord | None) -> AuditRecord:
        raise StalePolicySequence("w1", 0, 0)  # any refusal while building the record

    before = state(s)
    for change in (CreateWallet(make_wallet("w3")), InstallPolicy("w1", b"p", 3),
                   StoreToken("a" * 16, "w1", HASH, T0),
                   SetWebhook(WebhookConfig("w1", "https://owner.example/h", b"k" * 32))):  # fmt: skip
        with pytest.raises(StalePolicySequence, match="policy sequence 0 is not greater than 0"):  # the builder's
            s.apply_audited([change], refused)
        assert state(s) == before


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ([StoreToken("a" * 16, "w1", b"short", T0)], "secret_hash: must be a 32-byte digest"),
        ([InstallPolicy("w1", b"p", 0)], "sequence: must be an integer"),
        ([RevokeToken("a" * 16, "w1", float("nan"))], "now: must be a finite"),
        ([InstallPolicy("w1", b"p", 2), SetFrozen("w1", True, "r")], "wallet w1: at most one change of its wallet"),
    ],
    ids=["short-hash", "sequence-zero", "nan-time", "two-wallet-changes"],
)
def test_malformed_owner_changes_are_refused_before_anything_is_written(
    wallet_store: Store, clock: FakeClock, changes: list[StateChange], match: str
) -> None:
    before = state(wallet_store)
    with pytest.raises(InvalidInput, match=match):
        wallet_store.apply_audited(changes, AuditLog(wallet_store, clock).sealer("x", {}, wallet_id="w1"))
    assert state(wallet_store) == before
