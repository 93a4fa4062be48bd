"""``waiaas audit verify --db PATH``: check the hash chain of a SQLite state database's audit log.

Exit code 0 when the chain is intact, 1 when it is broken (the message names the first bad seq), 2 when the
database cannot be read.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from parent_proxy.audit import iter_audit_records, verify_audit_chain
from parent_proxy.errors import AuditChainError, StoreError
from parent_proxy.store.sqlite import SqliteStore

EXIT_OK = 0
EXIT_BROKEN = 1
EXIT_UNREADABLE = 2


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("audit", help="inspect the audit log")
    commands = parser.add_subparsers(dest="audit_command", required=True, metavar="ACTION")
    verify = commands.add_parser("verify", help="verify the audit log's hash chain")
    verify.add_argument("--db", required=True, type=Path, help="path of the SQLite state database")
    verify.add_argument("--expect-head", help="hex SHA-256 the chain must end at (an anchor kept elsewhere)")
    verify.set_defaults(func=run_verify)


def run_verify(args: argparse.Namespace) -> int:
    path: Path = args.db
    if not path.is_file():
        print(f"audit verify: no database at {path}", file=sys.stderr)
        return EXIT_UNREADABLE
    try:
        expected = None if args.expect_head is None else bytes.fromhex(args.expect_head)
    except ValueError:
        print("audit verify: --expect-head is not hex", file=sys.stderr)
        return EXIT_UNREADABLE
    try:
        store = SqliteStore(path)
    except StoreError as exc:
        print(f"audit verify: {exc}", file=sys.stderr)
        return EXIT_UNREADABLE
    try:
        records = list(iter_audit_records(store))
        verify_audit_chain(records, expected_head=expected)
    except AuditChainError as exc:
        print(f"audit verify: FAILED: {exc}", file=sys.stderr)
        return EXIT_BROKEN
    except StoreError as exc:
        print(f"audit verify: {exc}", file=sys.stderr)
        return EXIT_UNREADABLE
    finally:
        store.close()
    head = records[-1].hash.hex() if records else "(empty log)"
    print(f"audit verify: OK: {len(records)} records, head {head}")
    return EXIT_OK
