"""`SqliteStore`: the embedded `Store` adapter (one machine; several processes may share the file).

This module holds tokens, wallets, wallet-creation nonces (`sqlite_creation_nonces`), the signing path's two
transactions and `apply_audited`; idempotency is in `sqlite_idempotency`, approvals in `sqlite_approvals`, period
limits and rate/denial timestamps in `sqlite_limits`, webhooks and the audit log in `sqlite_outbox`, agent-key
rotation in `sqlite_agent_keys`, connections and error translation in `sqlite_base`.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence

from parent_proxy.errors import (
    AlreadyRevoked,
    Conflict,
    FrozenMeanwhile,
    NotFound,
    StaleOrderSequence,
    StalePolicySequence,
)
from parent_proxy.store import creation_nonces, sqlite_creation_nonces, tokens
from parent_proxy.store import sqlite_agent_keys as agent_keys
from parent_proxy.store import sqlite_events as events
from parent_proxy.store import sqlite_sealed_keys as sealed_keys
from parent_proxy.store import validation as v
from parent_proxy.store.model import (
    AgentKeyCandidate,
    AuditRecord,
    IdempotentAnswer,
    IssuedToken,
    OutboxItem,
    OwnerOrder,
    Reservation,
    ReservationStatus,
    RetiredAgentKey,
    SigningClaim,
    Wallet,
)
from parent_proxy.store.protocol import AuditSealer, Limits
from parent_proxy.store.sealed_keys import SealedKeyReplacement, check_replacements
from parent_proxy.store.sqlite_idempotency import SqliteIdempotency
from parent_proxy.store.state_changes import (
    ApprovalStillOpen,
    CompleteIdempotent,
    CreateApproval,
    CreateWallet,
    DecideApproval,
    FinishApproval,
    InstallPolicy,
    RecordEvent,
    ReopenApproval,
    ReplaceAnswer,
    RevokeToken,
    SetAgentKeyCandidate,
    SetFrozen,
    SetWebhook,
    StateChange,
    StillUnfrozen,
    StoreToken,
    SwitchAgentKey,
)
from parent_proxy.store.validation_changes import check_change, check_changes, check_replaced, check_unfrozen
from parent_proxy.store.validation_outbox import check_outbox_item


class SqliteStore(SqliteIdempotency):
    """SQLite-backed `Store`. ``path`` is a file path (``:memory:`` is refused: it cannot be shared)."""

    # -- agent tokens ---------------------------------------------------------------------------------------
    def issue_token(self, wallet_id: str, now: float) -> IssuedToken:
        v.check_id("wallet_id", wallet_id)
        now = v.check_time("now", now)
        token_id, token, secret_hash = tokens.new_token()
        with self._write() as conn:
            self._store_token_in(conn, StoreToken(token_id, wallet_id, secret_hash, now))
        return IssuedToken(token_id=token_id, wallet_id=wallet_id, token=token)

    @classmethod
    def _store_token_in(cls, conn: sqlite3.Connection, t: StoreToken) -> None:
        cls._require_wallet(conn, t.wallet_id)
        if conn.execute("SELECT 1 FROM tokens WHERE token_id = ?", (t.token_id,)).fetchone():
            raise Conflict(f"token {t.token_id} already exists")
        conn.execute(
            "INSERT INTO tokens (token_id, wallet_id, secret_hash, created_at) VALUES (?, ?, ?, ?)",
            (t.token_id, t.wallet_id, t.secret_hash, t.created_at),
        )

    def authenticate_token(self, token: str) -> str:
        parsed = tokens.parse_token(token)
        if parsed is None:
            raise NotFound("unknown or revoked token")
        token_id, secret = parsed
        with self._read() as conn:
            row = conn.execute(
                "SELECT wallet_id, secret_hash, revoked_at FROM tokens WHERE token_id = ?", (token_id,)
            ).fetchone()
        if not tokens.secret_matches(secret, None if row is None else row[1]) or row[2] is not None:
            raise NotFound("unknown or revoked token")
        return str(row[0])

    def revoke_token(self, token_id: str, now: float) -> None:
        v.check_id("token_id", token_id)
        now = v.check_time("now", now)
        with self._write() as conn:
            self._revoke_token_in(conn, token_id, None, now, refuse_revoked=False)

    @staticmethod
    def _revoke_token_in(
        conn: sqlite3.Connection, token_id: str, wallet_id: str | None, now: float, *, refuse_revoked: bool
    ) -> None:
        """Revoke ``token_id`` (of ``wallet_id``, if given: another wallet's token is `NotFound` as well). A token
        revoked already keeps its first time; with ``refuse_revoked`` it is `AlreadyRevoked` (`RevokeToken`)."""
        row = conn.execute("SELECT wallet_id, revoked_at FROM tokens WHERE token_id = ?", (token_id,)).fetchone()
        if row is None or wallet_id not in (None, row[0]):
            raise NotFound(f"token {token_id} not found")
        if row[1] is not None:
            if refuse_revoked:
                raise AlreadyRevoked(f"token {token_id} is revoked already")
            return
        conn.execute("UPDATE tokens SET revoked_at = ? WHERE token_id = ? AND revoked_at IS NULL", (now, token_id))

    def token_wallet(self, token_id: str) -> str:
        v.check_id("token_id", token_id)
        with self._read() as conn:
            row = conn.execute("SELECT wallet_id FROM tokens WHERE token_id = ?", (token_id,)).fetchone()
        if row is None:
            raise NotFound(f"token {token_id} not found")
        return str(row[0])

    # -- wallets --------------------------------------------------------------------------------------------
    def create_wallet(self, wallet: Wallet) -> None:
        w = v.check_wallet(wallet)
        with self._write() as conn:
            self._create_wallet_in(conn, w)

    @staticmethod
    def _create_wallet_in(conn: sqlite3.Connection, w: Wallet) -> None:
        if conn.execute("SELECT 1 FROM wallets WHERE wallet_id = ?", (w.wallet_id,)).fetchone():
            raise Conflict(f"wallet {w.wallet_id} already exists")
        order = w.last_order
        conn.execute(
            "INSERT INTO wallets VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (w.wallet_id, w.agent_pubkey, w.owner_pubkey, w.vault_address, w.sealed_key, int(w.frozen),
             w.frozen_reason, w.policy_document, w.policy_sequence, w.order_sequence,
             None if order is None else order.envelope, None if order is None else int(order.freeze)),
        )  # fmt: skip

    def get_wallet(self, wallet_id: str) -> Wallet:
        v.check_id("wallet_id", wallet_id)
        with self._read() as conn:
            row = conn.execute("SELECT * FROM wallets WHERE wallet_id = ?", (wallet_id,)).fetchone()
        if row is None:
            raise NotFound(f"wallet {wallet_id} not found")
        order = None if row[10] is None else OwnerOrder(bool(row[11]), row[10])
        return Wallet(row[0], row[1], row[2], row[3], row[4], bool(row[5]), row[6], row[7], row[8], row[9], order)

    def set_frozen(self, wallet_id: str, frozen: bool, reason: str | None) -> None:
        v.check_id("wallet_id", wallet_id)
        v.check_frozen(frozen, reason)
        with self._write() as conn:
            self._set_frozen_in(conn, SetFrozen(wallet_id, frozen, reason))

    @staticmethod
    def _set_frozen_in(conn: sqlite3.Connection, f: SetFrozen) -> None:
        row = conn.execute("SELECT order_sequence FROM wallets WHERE wallet_id = ?", (f.wallet_id,)).fetchone()
        if row is None:
            raise NotFound(f"wallet {f.wallet_id} not found")
        if f.order_sequence is None:  # a freeze of the parent's own: the last order stays as it is
            conn.execute(
                "UPDATE wallets SET frozen = ?, frozen_reason = ? WHERE wallet_id = ?",
                (int(f.frozen), f.reason, f.wallet_id),
            )
            return
        if f.order_sequence <= row[0]:
            raise StaleOrderSequence(f.wallet_id, f.order_sequence, row[0])
        conn.execute(
            "UPDATE wallets SET frozen = ?, frozen_reason = ?, order_sequence = ?, order_envelope = ?, order_freeze = ?"
            " WHERE wallet_id = ?",
            (int(f.frozen), f.reason, f.order_sequence, f.order, None if f.order is None else int(f.frozen),
             f.wallet_id),
        )  # fmt: skip

    @staticmethod
    def _still_unfrozen_in(conn: sqlite3.Connection, u: StillUnfrozen) -> None:
        row = conn.execute("SELECT frozen, order_sequence FROM wallets WHERE wallet_id = ?", (u.wallet_id,)).fetchone()
        if row is None:
            raise NotFound(f"wallet {u.wallet_id} not found")
        if row[0] or row[1] != u.order_sequence:
            raise FrozenMeanwhile(u.wallet_id)

    def install_policy(self, wallet_id: str, document: bytes, sequence: int) -> None:
        v.check_id("wallet_id", wallet_id)
        v.check_blob("document", document)
        v.check_count("sequence", sequence, minimum=1)
        with self._write() as conn:
            self._install_policy_in(conn, InstallPolicy(wallet_id, document, sequence))

    @staticmethod
    def _install_policy_in(conn: sqlite3.Connection, p: InstallPolicy) -> None:
        row = conn.execute("SELECT policy_sequence FROM wallets WHERE wallet_id = ?", (p.wallet_id,)).fetchone()
        if row is None:
            raise NotFound(f"wallet {p.wallet_id} not found")
        if p.sequence <= row[0]:
            raise StalePolicySequence(p.wallet_id, p.sequence, row[0])
        conn.execute(
            "UPDATE wallets SET policy_document = ?, policy_sequence = ? WHERE wallet_id = ?",
            (p.document, p.sequence, p.wallet_id),
        )

    # -- the signing path in two transactions ---------------------------------------------------------------
    def begin_signing(
        self,
        wallet_id: str,
        key: str,
        request_hash: bytes,
        *,
        request_id: str,
        amounts: Mapping[str, int],
        limits: Limits,
        now: float,
    ) -> SigningClaim:
        wanted, caps, now = v.check_signing_start(
            wallet_id, key, request_hash, request_id=request_id, amounts=amounts, limits=limits, now=now
        )
        # Committed without syncing the log (one fsync per signed request instead of two): nothing leaves the proxy
        # on the strength of this transaction. The answer goes out only after `finish_signing` (or the release and
        # abandon of a failure) commits durably, and that sync persists this transaction's earlier log frames too;
        # so does any later durable commit that another request based on what this one reserved. A power loss
        # before then loses a claim, a request timestamp and a reservation of a request nobody got an answer to.
        with self._write(durable=False) as conn:
            replay = self._claim_in(conn, wallet_id, key, request_hash, now)
            if replay is not None:
                return SigningClaim(replay=replay, reservation=None)
            events.record(conn, wallet_id, "request", now)
            reservation = self._reserve_in(conn, wallet_id, request_id, wanted, caps, now=now) if wanted else None
        return SigningClaim(replay=None, reservation=reservation)

    def finish_signing(
        self,
        reservation: Reservation | None,
        audit: AuditSealer,
        webhook: OutboxItem | None,
        answer: IdempotentAnswer | None,
        approval: FinishApproval | None = None,
        *,
        replaced: ReplaceAnswer | None = None,
        unfrozen: StillUnfrozen | None = None,
    ) -> AuditRecord:
        if unfrozen is not None:
            unfrozen = check_unfrozen(unfrozen)
        if reservation is not None:
            self._check_reservation(reservation)
        item = None if webhook is None else check_outbox_item(webhook)
        if answer is not None:
            answer = v.check_answer(answer)
        if approval is not None:
            check_change(approval)
        if replaced is not None:
            replaced = check_replaced(replaced, answer)
        with self._write() as conn:
            if unfrozen is not None:
                self._still_unfrozen_in(conn, unfrozen)
            if approval is not None:
                self._finish_approval_in(conn, approval)
            if reservation is not None:
                self._transition_in(conn, reservation, ReservationStatus.COMMITTED)
            record = self._seal_in(conn, audit)
            if item is not None:
                self._enqueue_in(conn, item)
            if answer is not None:
                self._complete_in(conn, answer.wallet_id, answer.key, answer.request_hash, answer.response)
            if replaced is not None:
                self._replace_answer_in(conn, replaced.answer, replaced.previous)
        return record

    # -- wallet-creation nonces ----------------------------------------------------------------------------
    def claim_creation_nonce(self, owner: bytes, nonce: str, now: float, held_until: float) -> None:
        checked = creation_nonces.check_claim(owner, nonce, now, held_until)
        with self._write() as conn:
            sqlite_creation_nonces.claim_in(conn, *checked)

    # -- re-sealed agent keys -------------------------------------------------------------------------------
    def replace_sealed_keys(self, replacements: Sequence[SealedKeyReplacement], audit: AuditSealer) -> AuditRecord:
        checked = check_replacements(replacements)
        with self._write() as conn:
            sealed_keys.replace_in(conn, checked)
            return self._seal_in(conn, audit)

    # -- agent-key rotation (written by `apply_audited`) -------------------------------------------------------
    def get_agent_key_candidate(self, wallet_id: str) -> AgentKeyCandidate | None:
        v.check_id("wallet_id", wallet_id)
        with self._read() as conn:
            return agent_keys.candidate(conn, wallet_id)

    def retired_agent_keys(self, wallet_id: str) -> list[RetiredAgentKey]:
        v.check_id("wallet_id", wallet_id)
        with self._read() as conn:
            return agent_keys.retired(conn, wallet_id)

    # -- an audited state change -----------------------------------------------------------------------------
    def apply_audited(
        self, changes: Sequence[StateChange], audit: AuditSealer, webhook: OutboxItem | None = None
    ) -> AuditRecord:
        checked = check_changes(changes)
        item = None if webhook is None else check_outbox_item(webhook)
        with self._write() as conn:
            for change in checked:
                self._apply_in(conn, change)
            self._check_pending_bounds_in(conn, checked)
            record = self._seal_in(conn, audit)
            if item is not None:
                self._enqueue_in(conn, item)
        return record

    def _apply_in(self, conn: sqlite3.Connection, change: StateChange) -> None:
        match change:
            case CreateWallet(wallet=wallet):
                self._create_wallet_in(conn, wallet)
            case InstallPolicy():
                self._install_policy_in(conn, change)
            case StoreToken():
                self._store_token_in(conn, change)
            case RevokeToken(token_id=token_id, wallet_id=wallet_id, now=now):
                self._revoke_token_in(conn, token_id, wallet_id, now, refuse_revoked=True)
            case SetWebhook(config=config):
                self._set_webhook_in(conn, config)
            case SetFrozen():
                self._set_frozen_in(conn, change)
            case RecordEvent(wallet_id=wallet_id, kind=kind, at=at):
                self._record_in(conn, kind, wallet_id, at)
            case CreateApproval(approval=approval):
                self._create_approval_in(conn, approval)
            case DecideApproval():
                self._decide_in(conn, change)
            case ReopenApproval():
                self._reopen_in(conn, change)
            case FinishApproval():
                self._finish_approval_in(conn, change)
            case StillUnfrozen():
                self._still_unfrozen_in(conn, change)
            case ApprovalStillOpen():
                self._still_open_in(conn, change)
            case CompleteIdempotent(answer=a):
                self._complete_in(conn, a.wallet_id, a.key, a.request_hash, a.response)
            case ReplaceAnswer(answer=a, previous=previous):
                self._replace_answer_in(conn, a, previous)
            case SetAgentKeyCandidate(candidate=candidate):
                agent_keys.set_candidate_in(conn, candidate)
            case SwitchAgentKey():
                agent_keys.switch_in(conn, change)
