"""The audit log of a SQLite state database, read for ``waiaas audit verify`` without changing the file.

The database under audit may come from a hostile host, and may be a backup on read-only storage. So it is opened
read-only (SQLite URI ``mode=ro``: no migration, no journal-mode change, nothing written), every row of
``audit_log`` is read whatever its ``seq`` (rows outside 1..n are then refused by the chain check, not skipped), and
each column must have the type the proxy writes: anything else is a record that was not written by the proxy
(`AuditChainError`, naming the row), never a traceback.

A file that is not a state database, or one without an ``audit_log`` table, is `AuditFileError` (unreadable): an
audit of nothing is not a pass.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from urllib.parse import quote

from parent_proxy.errors import AuditChainError
from parent_proxy.store.model import AuditRecord

_SELECT = "SELECT seq, time, wallet_id, event_type, payload, receipt, prev_hash, hash FROM audit_log ORDER BY seq"
HASH_BYTES = 32


class AuditFileError(Exception):
    """The file cannot be read as a state database with an audit log (the message says why; never a record)."""


def read_audit_records(path: Path) -> list[AuditRecord]:
    """Every row of ``audit_log`` in ``path``, by ``seq``; `AuditFileError` or `AuditChainError` (a row of the
    wrong shape)."""
    uri = f"file:{quote(str(path.resolve()))}?mode=ro"
    try:
        conn = sqlite3.connect(uri, uri=True)
    except sqlite3.Error as exc:
        raise AuditFileError(f"cannot open {path} read-only ({exc})") from None
    try:
        try:
            tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if "audit_log" not in tables:
                raise AuditFileError(f"{path} holds no audit log (not a WAIaaS state database)")
            rows = conn.execute(_SELECT).fetchall()
        except sqlite3.DatabaseError as exc:
            hint = (
                " (a database in WAL mode cannot be read where SQLite may not create its -shm file: copy it to a "
                "writable place, or verify a backup made as docs/selfhost.md says)"
                if "readonly" in str(exc) or "unable to open" in str(exc)
                else ""
            )
            raise AuditFileError(f"cannot read the audit log of {path} ({exc}){hint}") from None
    finally:
        conn.close()
    return [_record(row) for row in rows]


def _record(row: tuple[object, ...]) -> AuditRecord:
    seq, time, wallet_id, event_type, payload, receipt, prev_hash, hash_ = row
    if type(seq) is not int:
        raise AuditChainError(0, f"a row whose seq is not an integer ({type(seq).__name__})")

    def wrong(column: str) -> AuditChainError:
        return AuditChainError(seq, f"{column} has the wrong type for an audit record")

    if type(time) not in (float, int):
        raise wrong("time")
    if wallet_id is not None and type(wallet_id) is not str:
        raise wrong("wallet_id")
    if type(event_type) is not str:
        raise wrong("event_type")
    if type(payload) is not bytes:
        raise wrong("payload")
    if receipt is not None and type(receipt) is not bytes:
        raise wrong("receipt")
    for column, value in (("prev_hash", prev_hash), ("hash", hash_)):
        if type(value) is not bytes or len(value) != HASH_BYTES:
            raise wrong(column)
    return AuditRecord(seq, float(time), wallet_id, event_type, payload, receipt, prev_hash, hash_)  # type: ignore[arg-type]
