"""The SQLite adapter's schema and connection settings.

Versions: 1 the tables; 2 + running totals (``spend``) keyed by the REAL time; 3 ``spend`` keyed by
`sqlite_time.time_key` (v1/v2 rebuilt); 4 ``wallet_events`` keyed by `time_key` too (`sqlite_events.migrate`), and
the unused ``reservations_by_time`` index dropped (window totals come from ``spend`` since version 2); 5 the outbox
is claimed by ``due`` (`time_key` of ``next_attempt_at``; `sqlite_outbox_due.migrate`), not by the REAL time; 6
+ agent-key rotation (``agent_key_candidates``, ``retired_agent_keys``; `sqlite_agent_keys`): new tables only, so a
version-5 database migrates by creating them; 7 + ``wallets.order_sequence`` (the last owner freeze order accepted;
`add_order_sequence` adds it, 0, to an older ``wallets``) and the ``outbox_leased`` index (the claim's one item per
wallet; created like every index, on open); 8 + ``creation_nonces`` (`sqlite_creation_nonces`): a new table only, so
a version-7 database migrates by creating it; 9 + ``wallets.order_envelope`` and ``wallets.order_freeze`` (the last
owner order accepted, as sent, and whether it is a freeze; `add_order_envelope` adds them, NULL, to an older
``wallets``: no order kept); 10 + ``outbox_heads`` (one row per wallet with pending items and its pause after a
failed attempt, which the claim walks instead of the items: `sqlite_outbox_heads`, which also fills it from an older
outbox), the ``outbox_pending`` index (a wallet's earliest pending item), ``outbox.finished`` (`time_key` of the
attempt that delivered the item or gave it up, which retention prunes on: `sqlite_outbox_retention`), and the old
claim's ``outbox_due_key`` and ``outbox_leased`` indexes dropped. The first version 10 (merge 1a7850b) had heads
without the pause (``paused``, ``ready``): it came later under the same number, so `sqlite_outbox_heads.add_pause`
tells that shape by its columns, whatever the version. Since then ``tests/proxy/test_store_sqlite_schema_versions.py``
pins each version's ``SCHEMA`` text by its hash: the text cannot change without the version. 11 +
``approvals.signing`` (the request id of an approved approval's signing until it finishes, so that one whose process
died is found and reopened: `parent_proxy.stalled_approvals`; `add_approval_signing` adds it, NULL, to an older
``approvals``: their signings are not known, none is reopened) and its partial index ``approvals_signing``. 12 +
``approvals.message_hash`` (the SHA-256 of the transaction message an approval would sign, so that an escalation of
a message whose approval is still open is answered with it instead of a second approval; `add_approval_message_hash`
adds it, NULL, to an older ``approvals``: those are not matched) and its partial index ``approvals_by_message``. 13
+ ``approvals.signed_answer`` (an approval's signed answer, kept once its signing recorded a signature, so that the
same message escalated again is answered with it instead of a second approval; `add_approval_signed_answer` adds it,
NULL, to an older ``approvals``: approvals signed before are not matched).

WAL lets readers run alongside the single writer; ``synchronous=FULL`` because a lost counter or audit record is
worse than a slower commit (one exception: `SqliteStore.begin_signing`, made durable by the `finish_signing` that
must follow before anything is answered; see there); every writing transaction starts with ``BEGIN IMMEDIATE`` so
that two processes serialise on the write lock before reading what they are about to check, and wait up to
``busy_timeout``.
"""

from __future__ import annotations

import sqlite3

from parent_proxy.store import (
    sqlite_agent_keys,
    sqlite_creation_nonces,
    sqlite_events,
    sqlite_outbox_heads,
    sqlite_spend,
)

SCHEMA_VERSION = 13
DEFAULT_BUSY_TIMEOUT_SECONDS = 5.0
"""How long a writer waits for another process's write lock before the store reports itself unavailable."""

SYNCHRONOUS_FULL = "PRAGMA synchronous = FULL"
PRAGMAS = ("PRAGMA foreign_keys = ON", SYNCHRONOUS_FULL)
SYNCHRONOUS_NORMAL = "PRAGMA synchronous = NORMAL"
"""Only for the transaction of `SqliteBase._write(durable=False)`: its commit does not sync the log."""

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS wallets (
        wallet_id TEXT PRIMARY KEY, agent_pubkey BLOB NOT NULL, owner_pubkey BLOB NOT NULL,
        vault_address BLOB NOT NULL, sealed_key BLOB NOT NULL, frozen INTEGER NOT NULL,
        frozen_reason TEXT, policy_document BLOB, policy_sequence INTEGER NOT NULL,
        order_sequence INTEGER NOT NULL DEFAULT 0, order_envelope BLOB, order_freeze INTEGER)""",
    """CREATE TABLE IF NOT EXISTS tokens (
        token_id TEXT PRIMARY KEY, wallet_id TEXT NOT NULL REFERENCES wallets(wallet_id),
        secret_hash BLOB NOT NULL, created_at REAL NOT NULL, revoked_at REAL)""",
    """CREATE TABLE IF NOT EXISTS reservations (
        wallet_id TEXT NOT NULL REFERENCES wallets(wallet_id), request_id TEXT NOT NULL,
        amounts TEXT NOT NULL, created_at REAL NOT NULL, status TEXT NOT NULL,
        PRIMARY KEY (wallet_id, request_id))""",
    "CREATE INDEX IF NOT EXISTS reservations_by_age ON reservations (created_at)",
    *sqlite_spend.SCHEMA,
    *sqlite_events.SCHEMA,
    """CREATE TABLE IF NOT EXISTS idempotency (
        wallet_id TEXT NOT NULL REFERENCES wallets(wallet_id), key TEXT NOT NULL,
        request_hash BLOB NOT NULL, status TEXT NOT NULL, response BLOB, created_at REAL NOT NULL,
        PRIMARY KEY (wallet_id, key))""",
    """CREATE TABLE IF NOT EXISTS approvals (
        approval_id TEXT PRIMARY KEY, wallet_id TEXT NOT NULL REFERENCES wallets(wallet_id),
        request_payload BLOB NOT NULL, status TEXT NOT NULL, created_at REAL NOT NULL,
        decision BLOB, decided_at REAL, signing TEXT, message_hash BLOB, signed_answer BLOB)""",
    "CREATE INDEX IF NOT EXISTS approvals_by_wallet ON approvals (wallet_id, status)",
    "CREATE INDEX IF NOT EXISTS approvals_signing ON approvals (decided_at) WHERE signing IS NOT NULL",
    """CREATE INDEX IF NOT EXISTS approvals_by_message ON approvals (wallet_id, message_hash)
        WHERE message_hash IS NOT NULL""",
    """CREATE TABLE IF NOT EXISTS webhooks (
        wallet_id TEXT PRIMARY KEY REFERENCES wallets(wallet_id), url TEXT NOT NULL, secret BLOB NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS outbox (
        event_id TEXT PRIMARY KEY, wallet_id TEXT NOT NULL REFERENCES wallets(wallet_id),
        event_type TEXT NOT NULL, body BLOB NOT NULL, created_at REAL NOT NULL, status TEXT NOT NULL,
        attempts INTEGER NOT NULL, next_attempt_at REAL NOT NULL, lease_id TEXT, lease_until REAL,
        due BLOB NOT NULL, finished BLOB)""",
    "CREATE INDEX IF NOT EXISTS outbox_finished ON outbox (finished) WHERE finished IS NOT NULL",
    *sqlite_outbox_heads.SCHEMA,
    """CREATE TABLE IF NOT EXISTS deliveries (
        event_id TEXT NOT NULL REFERENCES outbox(event_id), attempt INTEGER NOT NULL, at REAL NOT NULL,
        delivered INTEGER NOT NULL, status_code INTEGER, error TEXT)""",
    "CREATE INDEX IF NOT EXISTS deliveries_by_event ON deliveries (event_id, attempt)",
    """CREATE TABLE IF NOT EXISTS audit_log (
        seq INTEGER PRIMARY KEY, time REAL NOT NULL, wallet_id TEXT, event_type TEXT NOT NULL,
        payload BLOB NOT NULL, receipt BLOB, prev_hash BLOB NOT NULL, hash BLOB NOT NULL)""",
    *sqlite_agent_keys.SCHEMA,
    *sqlite_creation_nonces.SCHEMA,
)


def add_order_sequence(conn: sqlite3.Connection) -> None:
    """Give a ``wallets`` table of versions 1 to 6 its ``order_sequence`` column (0: no owner order accepted yet;
    the enclave kept its own count, which a restart lost). A no-op on a new or already migrated database."""
    columns = {row[1] for row in conn.execute("PRAGMA table_info(wallets)")}
    if columns and "order_sequence" not in columns:
        conn.execute("ALTER TABLE wallets ADD COLUMN order_sequence INTEGER NOT NULL DEFAULT 0")


def add_order_envelope(conn: sqlite3.Connection) -> None:
    """Give a ``wallets`` table of versions 1 to 8 its ``order_envelope`` and ``order_freeze`` columns (NULL: the
    last order was not kept; `EnclaveRelay` then relies on the load's frozen flag, as before). After
    `add_order_sequence`, so the columns keep the order of `SCHEMA`'s table. A no-op on a new or migrated database."""
    columns = {row[1] for row in conn.execute("PRAGMA table_info(wallets)")}
    if columns and "order_envelope" not in columns:
        conn.execute("ALTER TABLE wallets ADD COLUMN order_envelope BLOB")
        conn.execute("ALTER TABLE wallets ADD COLUMN order_freeze INTEGER")


def add_approval_signing(conn: sqlite3.Connection) -> None:
    """Give an ``approvals`` table of versions 1 to 10 its ``signing`` column (NULL: no signing under way is known,
    so `SqliteStore.stalled_approvals` lists none of them). A no-op on a new or already migrated database."""
    columns = {row[1] for row in conn.execute("PRAGMA table_info(approvals)")}
    if columns and "signing" not in columns:
        conn.execute("ALTER TABLE approvals ADD COLUMN signing TEXT")


def add_approval_message_hash(conn: sqlite3.Connection) -> None:
    """Give an ``approvals`` table of versions 1 to 11 its ``message_hash`` column (NULL: not known, so an escalation
    of the same message is not matched with them). After `add_approval_signing`, so the columns keep the order of
    `SCHEMA`'s table. A no-op on a new or already migrated database."""
    columns = {row[1] for row in conn.execute("PRAGMA table_info(approvals)")}
    if columns and "message_hash" not in columns:
        conn.execute("ALTER TABLE approvals ADD COLUMN message_hash BLOB")


def add_approval_signed_answer(conn: sqlite3.Connection) -> None:
    """Give an ``approvals`` table of versions 1 to 12 its ``signed_answer`` column (NULL: no signed answer kept, so
    an escalation of the same message is not answered with it). After `add_approval_message_hash`, so the columns keep
    the order of `SCHEMA`'s table. A no-op on a new or already migrated database."""
    columns = {row[1] for row in conn.execute("PRAGMA table_info(approvals)")}
    if columns and "signed_answer" not in columns:
        conn.execute("ALTER TABLE approvals ADD COLUMN signed_answer BLOB")
