"""``waiaas audit verify``: check the hash chain of the audit log (and ``waiaas audit export``: `audit_export_cli`).

    waiaas audit verify (--db PATH | --state dynamodb:<table>[@<region>]) [--expect-head HEX] [--exports DIR]
        [--receipts [--root-pem FILE --pcr I=HEX ... [--allow-debug]] [--require-attestation] [--allow-gaps]]

The log is only read (`parent_proxy.audit_source`): a SQLite database opened read-only (`parent_proxy.audit_file`,
nothing migrated or written), so a backup on read-only storage can be verified and stays as it was, or the cloud
deployment's DynamoDB table, by ``Query``. ``--expect-head`` is a head reported by an earlier verification and kept
elsewhere: the chain must still hold it. ``--exports DIR`` holds the audit exports downloaded from the data bucket
(`parent_proxy.audit_exports`): every exported record must be the log's record at its seq, so a history rewritten or
cut short after an export fails. ``--receipts`` also checks every enclave receipt in the log against the session
keys of the ``enclave.session`` records before it (a fleet's hosts interleave their sessions in one log:
`parent_proxy.audit_session_keys`), that every signed record has one, that each session's receipt counters have no
gap and that every withheld signature has a freeze of its wallet recorded before it (``--allow-gaps`` reports
either instead), and the session records' attestation documents against ``--root-pem`` and ``--pcr`` when given
(`parent_proxy.audit_receipts`).
With that anchor every session key must be attested: a session record in mode none fails (the anchor implies
``--require-attestation``, which is kept as an explicit spelling and needs the root and PCRs; so does
``--allow-debug``). Without an anchor, mode none records pass and the output says nothing was anchored (self-host
logs are all mode none).

Exit code 0 when the chain (and the exports, and the receipts) verify, 1 when they do not (the message names the
first bad seq, or the export, and why), 2 when the log or the exports cannot be read or an argument is bad. The log
is the parent's: a message that quotes it (an event type, a field) has its control characters escaped
(`policies.terminal_text`), so a record cannot erase the FAILED line or paint an OK over it. A whole enclave boot
left out of a re-chained log, its session record with all its receipts, is not seen (`parent_proxy.audit_receipts`):
only a head kept where the parent cannot change it catches that, an export (``--exports``) or a head this prints,
passed with ``--expect-head``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from parent_proxy.audit import verify_audit_chain
from parent_proxy.audit_export_cli import add_parser as add_export_parser
from parent_proxy.audit_export_cli import read_exports
from parent_proxy.audit_exports import ExportError, ExportsReport, check_log_against_exports
from parent_proxy.audit_receipts import (
    UNATTESTED_SESSIONS,
    UNVERIFIED_DOCUMENTS,
    ReceiptsReport,
    verify_audit_receipts,
)
from parent_proxy.audit_source import AuditSourceError, add_source_arguments, open_audit_source
from parent_proxy.errors import AuditChainError
from parent_proxy.trust_anchor import Anchor, AnchorError, anchor_from_options
from policies.terminal_text import terminal_safe

NOT_ANCHORED = (
    "not anchored (no --root-pem and --pcr): nothing ties the session keys to attested enclave code, so a parent "
    "that rewrites its log with session keys of its own passes this check"
)
EXIT_OK = 0
EXIT_BROKEN = 1
EXIT_UNREADABLE = 2


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("audit", help="inspect the audit log")
    commands = parser.add_subparsers(dest="audit_command", required=True, metavar="ACTION")
    verify = commands.add_parser("verify", help="verify the audit log's hash chain")
    add_source_arguments(verify)
    verify.add_argument(
        "--expect-head", help="hex SHA-256 of a head reported earlier and kept elsewhere: the chain must still hold it"
    )
    verify.add_argument(
        "--exports", type=Path, help="directory of the audit exports downloaded from the data bucket: the log must "
        "still hold every exported record"
    )  # fmt: skip
    verify.add_argument(
        "--receipts", action="store_true", help="also verify every enclave receipt under the recorded session keys"
    )
    verify.add_argument("--root-pem", type=Path, help="--receipts, nitro: the pinned root certificate (PEM)")
    verify.add_argument(
        "--pcr", action="append", default=[], help="--receipts, nitro: expected PCR, INDEX=HEX (repeatable)"
    )
    verify.add_argument(
        "--allow-debug", action="store_true", help="--receipts, nitro: accept debug-mode documents (PCR0 all zeros)"
    )
    verify.add_argument(
        "--require-attestation", action="store_true", help="--receipts: fail on any session key no document attests"
    )
    verify.add_argument(
        "--allow-gaps",
        action="store_true",
        help="--receipts: report missing receipt counters, and withheld signatures with no freeze recorded before "
        "them, instead of failing (once matched with *.failed records)",
    )
    verify.set_defaults(func=run_verify)
    add_export_parser(commands)


class _BadInput(Exception):
    pass


def _anchor(args: argparse.Namespace) -> Anchor | None:
    """The trust anchor for nitro documents, or None; `_BadInput` for an incomplete or unusable one (the rules
    ``waiaas owner verify-wallet`` shares: `parent_proxy.trust_anchor`)."""
    given = args.root_pem is not None or bool(args.pcr)
    if (given or args.require_attestation or args.allow_debug or args.allow_gaps) and not args.receipts:
        raise _BadInput("--root-pem, --pcr, --allow-debug, --require-attestation and --allow-gaps go with --receipts")
    if args.require_attestation and not given:
        raise _BadInput("--require-attestation needs --root-pem and --pcr")
    if args.allow_debug and not given:
        raise _BadInput("--allow-debug needs --root-pem and --pcr")
    try:
        return anchor_from_options(args.root_pem, args.pcr, allow_debug=args.allow_debug)
    except AnchorError as exc:
        raise _BadInput(str(exc)) from exc


def _say_receipts(report: ReceiptsReport, *, anchored: bool) -> None:
    print(
        f"audit verify: receipts OK: {report.receipts} receipts under {report.sessions} session records "
        f"({report.verified_documents} attestation documents verified)"
        + (f", {report.agent_key_receipts} agent-key receipts" if report.agent_key_receipts else "")
        + (f", {report.order_receipts} order receipts" if report.order_receipts else "")
        + ("" if anchored else "; not anchored")
    )
    if not anchored:
        print(f"audit verify: WARNING: {NOT_ANCHORED}", file=sys.stderr)
    if report.counter_gaps:
        print(f"audit verify: WARNING: {report.counter_gaps} receipt counters not in the log (allowed by "
              "--allow-gaps: answers that failed, or receipts withheld)", file=sys.stderr)  # fmt: skip
    if report.withheld:
        print(f"audit verify: WARNING: {report.withheld} signatures withheld (transaction.withheld, "
              "message.withheld: the wallet was frozen while they were made; the log says they were not handed "
              "out, look their messages up on chain to confirm)", file=sys.stderr)  # fmt: skip
    if report.withheld_unexplained:
        print(f"audit verify: WARNING: {report.withheld_unexplained} of them with no freeze, unfreeze or owner order "
              "of their wallet recorded before them (allowed by --allow-gaps: treat each as a signature handed out)",
              file=sys.stderr)  # fmt: skip
    if report.unattested_sessions:
        print(f"audit verify: WARNING: {report.unattested_sessions} session records: {UNATTESTED_SESSIONS}",
              file=sys.stderr)  # fmt: skip
    if report.unverified_documents:
        print(f"audit verify: WARNING: {report.unverified_documents} {UNVERIFIED_DOCUMENTS}", file=sys.stderr)


def _say_exports(report: ExportsReport, records: int, skipped: list[str]) -> None:
    print(
        f"audit verify: exports OK: {report.exports} exports agree with the log up to seq {report.exported_to}"
        + ("" if records <= report.exported_to else f"; seqs {report.exported_to + 1}-{records} not exported yet")
    )
    if skipped:
        print(
            terminal_safe(
                f"audit verify: WARNING: {len(skipped)} files not named as exports skipped: "
                + ", ".join(skipped[:5])
                + (", ..." if len(skipped) > 5 else "")
            ),
            file=sys.stderr,
        )


def run_verify(args: argparse.Namespace) -> int:
    try:
        expected = None if args.expect_head is None else bytes.fromhex(args.expect_head)
    except ValueError:
        print("audit verify: --expect-head is not hex", file=sys.stderr)
        return EXIT_UNREADABLE
    try:
        anchor = _anchor(args)
    except _BadInput as exc:
        print(terminal_safe(f"audit verify: {exc}"), file=sys.stderr)
        return EXIT_UNREADABLE
    receipts: ReceiptsReport | None = None
    exports: tuple[ExportsReport, list[str]] | None = None
    try:
        records = open_audit_source(args.db, args.state).read_all()
        verify_audit_chain(records, expected_head=expected)
        if args.exports is not None:
            found, skipped = read_exports(args.exports)
            exports = check_log_against_exports(records, found), skipped
        if args.receipts:
            receipts = verify_audit_receipts(  # an anchor implies require_attestation (mode none fails)
                records, anchor=anchor, require_attestation=args.require_attestation or anchor is not None,
                allow_gaps=args.allow_gaps,
            )  # fmt: skip
    except (AuditChainError, ExportError) as exc:
        print(terminal_safe(f"audit verify: FAILED: {exc}"), file=sys.stderr)  # the parent chose the log
        return EXIT_BROKEN
    except AuditSourceError as exc:
        print(terminal_safe(f"audit verify: {exc}"), file=sys.stderr)
        return EXIT_UNREADABLE
    head = records[-1].hash.hex() if records else "(empty log)"
    print(f"audit verify: OK: {len(records)} records, head {head}")
    if exports is not None:
        _say_exports(exports[0], len(records), exports[1])
    if receipts is not None:
        _say_receipts(receipts, anchored=anchor is not None)
    return EXIT_OK
