"""Where ``waiaas audit verify`` and ``waiaas audit export`` read the audit log: a SQLite state database or the cloud
deployment's DynamoDB table, only ever read.

    --db PATH                              a SQLite state database, opened read-only (`parent_proxy.audit_file`)
    --state dynamodb:<table>[@<region>]    the table's audit partition, read by ``Query`` (``WAIAAS_STATE``'s form;
    --state sqlite:/abs/path.db            ``sqlite:`` is the same as ``--db``)

The log may come from a hostile parent. A SQLite row of the wrong shape is `AuditChainError` (`audit_file`); so is a
DynamoDB item of the audit partition whose attributes are missing or of the wrong type, or whose seqs do not go up
from one page to the next (a reader that followed them could loop for ever). Anything that stops the log being read
at all (no file, no table, no credentials, the network) is `AuditSourceError`: never an empty pass.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Protocol

import boto3
from botocore.exceptions import BotoCoreError

from parent_proxy.audit_file import AuditFileError, read_audit_records
from parent_proxy.errors import AuditChainError, StoreError
from parent_proxy.settings import DynamoState, SettingsError, SqliteState, parse_state
from parent_proxy.store.dynamodb import DynamoStore
from parent_proxy.store.model import AuditRecord

PAGE_RECORDS = 1000


class AuditSourceError(Exception):
    """The log cannot be read (the message says why; never a record)."""


class AuditSource(Protocol):
    def read_all(self) -> list[AuditRecord]:
        """Every record, in the order stored (the chain check then finds any that is out of place)."""
        ...

    def records_after(self, seq: int, limit: int) -> list[AuditRecord]:
        """Up to ``limit`` records with a seq above ``seq``, in order."""
        ...


class SqliteAuditSource:
    """The audit log of a SQLite state database, read once, read-only."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._records: list[AuditRecord] | None = None

    def read_all(self) -> list[AuditRecord]:
        if self._records is None:
            if not self._path.is_file():
                raise AuditSourceError(f"no database at {self._path}")
            try:
                self._records = read_audit_records(self._path)
            except AuditFileError as exc:
                raise AuditSourceError(str(exc)) from None
        return list(self._records)

    def records_after(self, seq: int, limit: int) -> list[AuditRecord]:
        return [r for r in self.read_all() if r.seq > seq][:limit]


class DynamoAuditSource:
    """The audit partition of the DynamoDB state table (the proxy's own reader, `DynamoStore.audit_records`)."""

    def __init__(self, table: str, region: str | None) -> None:
        self._table = table
        try:
            client = boto3.client("dynamodb", region_name=region)
        except BotoCoreError as exc:  # no region configured, say
            raise AuditSourceError(f"no DynamoDB client for table {table} ({type(exc).__name__})") from None
        self._store = DynamoStore(client, table)

    def records_after(self, seq: int, limit: int) -> list[AuditRecord]:
        try:
            page = self._store.audit_records(seq, min(limit, PAGE_RECORDS))
        except StoreError as exc:  # translated from botocore by the store (table missing, access denied, network)
            raise AuditSourceError(f"the audit log of table {self._table} cannot be read ({exc})") from None
        except (KeyError, ValueError, TypeError, ArithmeticError) as exc:
            wrong = f"an audit item after seq {seq} has the wrong shape ({type(exc).__name__})"
            raise AuditChainError(seq + 1, wrong) from None
        if page and page[-1].seq <= seq:
            raise AuditChainError(seq + 1, f"the audit items after seq {seq} are out of order")
        return page

    def read_all(self) -> list[AuditRecord]:
        records: list[AuditRecord] = []
        after = 0
        while page := self.records_after(after, PAGE_RECORDS):
            records.extend(page)
            after = page[-1].seq
        return records


def add_source_arguments(parser: argparse.ArgumentParser) -> None:
    """``--db PATH`` or ``--state SPEC``, exactly one (this module's docstring), for `open_audit_source`."""
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--db", type=Path, help="path of a SQLite state database (read-only)")
    source.add_argument(
        "--state", help="the proxy's WAIAAS_STATE: dynamodb:<table>[@<region>] (read by Query) or sqlite:/path"
    )


def open_audit_source(db: Path | None, state: str | None) -> AuditSource:
    """The source ``--db`` or ``--state`` names (exactly one of them is given: argparse's exclusive group)."""
    if db is not None:
        return SqliteAuditSource(db)
    try:
        parsed = parse_state(state or "")
    except SettingsError:
        raise AuditSourceError("--state must be dynamodb:<table>[@<region>] or sqlite:/absolute/path") from None
    if isinstance(parsed, SqliteState):
        return SqliteAuditSource(Path(parsed.path))
    if isinstance(parsed, DynamoState):
        return DynamoAuditSource(parsed.table, parsed.region)
    raise AuditSourceError("unknown state")  # pragma: no cover - parse_state returns one of the two
