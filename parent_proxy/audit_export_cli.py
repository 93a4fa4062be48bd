"""``waiaas audit export``: write the audit records appended since the last export to the data bucket, and the
reading of downloaded exports for ``waiaas audit verify --exports DIR``.

    waiaas audit export (--db PATH | --state SPEC) --bucket NAME[@REGION] [--prefix audit/]

The cloud hosts run it every 15 minutes (``waiaas-audit-export.timer``, cdk/user_data.py) with the proxy's state
table and the deployment's data bucket. Each run, several hosts alike:

1. lists the keys under the prefix (``ListObjectsV2``, at most `MAX_LISTED_KEYS`: past that FAILED, nothing
   written) and parses the names of those named as exports (`audit_exports.parse_export_name`; other keys are
   ignored and counted); no object is read;
2. finds the last export: the highest one the log confirms, its record at the export's last seq having the export's
   head (`audit_export_names.check_export_names`, a bounded number of log reads). Every key named as an export above
   it (past the log's end, or with another head), or overlapping another export below it with another head, is
   contradicted: the host role may put any new key under the prefix, so a name proves nothing until the log
   confirms it. When there are exports but the log confirms none, the run is FAILED and writes nothing (the history
   was rewritten or cut short since). Overlapping names below the last export are read in a rotating slice past
   `audit_export_names.SUSPECTS_PER_RUN` (the others: a WARNING line). This is an early warning on the host, not
   the audit: ``waiaas audit verify --exports`` checks every exported record, and every export's content, against
   the whole verified log;
3. reads the records after the last export, at most `MAX_RECORDS_PER_EXPORT` at a time, checks that they chain on
   from it (`verify_audit_chain`), and writes each batch as one object (`audit_exports.encode_export`), write
   once (`data_bucket.DataBucket.put_new_or_same`). Just before its first put it lists the keys again: when an
   export name that appeared meanwhile covers the first seq it would write and the log confirms it
   (`audit_export_names.covering_export`), another host exported since this run listed, maybe up to records this
   run did not read; the run writes nothing (its OK line says so) rather than a second export overlapping that one,
   and the next run goes on after it. Two hosts exporting the same records at once write the same bytes under the
   same key: an object that is there already, or that appears while this run writes (S3's 409, then 412), is read
   back, and counts as written when it holds exactly the bytes this run would write. Any other object there is
   FAILED, naming its key, and nothing more is written: something other than this exporter wrote under an export's
   name.

Exit 0 when everything new is exported (or nothing is new, or another host exported it meanwhile) and no key read
contradicts the log; 1 when the log confirms none of the exports, the new records do not chain, an object under an
export's name is not that export, or keys are more than a run checks (FAILED: nothing more is written), and also
when the run exported everything new but keys named as exports contradict the log (its OK line, then a FAILED line
naming them: on every run that reads them, which is every run while they are above the last export, or below it
among no more overlapping names than a run reads, `audit_export_names.SUSPECTS_PER_RUN`); 2 when the log or the
bucket cannot be read or written, or an argument is bad (ERROR: the next run tries again). The host role may list
only this prefix, and put into and read only it (cdk/identity_stack.py).

Each run prints one line that starts with a fixed marker, which the deployment's alarms match (cdk/
audit_export_alarms.py): `OK_MARKER` on stdout when it exports (or nothing is new), `FAILED_MARKER` or `ERROR_MARKER`
on stderr when it does not (exit 1 and 2); `WARNING_MARKER` lines (keys not named as exports, overlapping names
left for later runs) may come before an OK line, and a FAILED line after it when keys contradict the log (exit 1:
the records are exported, and something there needs a look).
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from parent_proxy.audit import verify_audit_chain
from parent_proxy.audit_export_names import (
    TURN_SECONDS,
    Contradicted,
    check_export_names,
    covering_export,
    turns_to_check_all,
)
from parent_proxy.audit_exports import (
    CONTENT_TYPE,
    DEFAULT_PREFIX,
    MAX_RECORDS_PER_EXPORT,
    Export,
    ExportError,
    ExportName,
    decode_export,
    encode_export,
    parse_export_name,
)
from parent_proxy.audit_source import AuditSource, AuditSourceError, add_source_arguments, open_audit_source
from parent_proxy.data_bucket import BucketUnavailable, DataBucket, ObjectMismatch, parse_bucket, s3_client
from parent_proxy.errors import AuditChainError
from parent_proxy.store.model import GENESIS_PREV_HASH
from policies.terminal_text import terminal_safe

PREFIX = re.compile(r"(?:[A-Za-z0-9._-]+/)+")
"""One or more key segments, each ending in ``/``."""
MAX_EXPORT_BYTES = 64 * 1024 * 1024
"""Largest export file read (`MAX_RECORDS_PER_EXPORT` records of a few KiB each stay far below it)."""
EXIT_OK = 0
EXIT_FAILED = 1
EXIT_UNREADABLE = 2
OK_MARKER = "audit export: OK: "
FAILED_MARKER = "audit export: FAILED: "
"""Exit 1: the log contradicts the exports, or the bucket holds an object under an export's name that is not it."""
ERROR_MARKER = "audit export: ERROR: "
"""Exit 2: the log or the bucket could not be read or written, or an argument is bad; the next run tries again."""
WARNING_MARKER = "audit export: WARNING: "
MAX_LISTED_KEYS = 500_000
"""Keys under the prefix a run lists (500 ``ListObjectsV2`` pages: the exports of about 14 years at one per timer
run); past it the run is FAILED and writes nothing, rather than hold a host for ever."""
MAX_NAMED = 5
"""Contradicted keys a FAILED line names (the rest are counted)."""


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    export = commands.add_parser("export", help="write the audit records since the last export to the data bucket")
    add_source_arguments(export)
    export.add_argument("--bucket", required=True, help="the data bucket, NAME[@REGION]")
    export.add_argument(
        "--prefix", default=DEFAULT_PREFIX, help=f"key prefix of the exports, ending in / (default {DEFAULT_PREFIX})"
    )
    export.set_defaults(func=run_export)


@dataclass
class ExportRun:
    last: ExportName | None
    """The last export found before this run: the highest the log confirms (`audit_export_names`)."""
    written: list[ExportName] = field(default_factory=list)
    present: int = 0
    """Of ``written``, objects that were there already with the same bytes (another host wrote the same records)."""
    ignored: int = 0
    """Keys under the prefix not named as exports."""
    contradicted: list[Contradicted] = field(default_factory=list)
    """Keys named as exports that the log contradicts (they run past its end, or end with another head)."""
    suspects: int = 0
    """Export names below ``last`` that overlap another (`audit_export_names`, step 3)."""
    unchecked: int = 0
    """Of ``suspects``, those not checked against the log this run (`audit_export_names.SUSPECTS_PER_RUN`): later
    runs check them."""
    overtaken: ExportName | None = None
    """An export another host wrote after this run listed the keys, covering the first seq this run was about to
    write: this run wrote nothing."""


def list_export_names(bucket: DataBucket, prefix: str) -> tuple[list[ExportName], int]:
    """The export names of the keys under ``prefix``, and how many keys there are not named as exports. Only names
    are read, never an object; `ExportError` past `MAX_LISTED_KEYS` keys."""
    names, ignored = [], 0
    for count, key in enumerate(bucket.keys(prefix), 1):
        if count > MAX_LISTED_KEYS:
            raise ExportError(f"more than {MAX_LISTED_KEYS} keys under {prefix}, more than a run lists; nothing was "
                              "written (keys there that are not this exporter's: docs/deploy.md)")  # fmt: skip
        name = parse_export_name(key[len(prefix) :])
        if name is None:
            ignored += 1
        else:
            names.append(name)
    return names, ignored


def current_turn() -> int:
    """The rotation's turn now (`audit_export_names.suspects_of_turn`)."""
    return int(time.time()) // TURN_SECONDS


def export_new_records(source: AuditSource, bucket: DataBucket, prefix: str, turn: int | None = None) -> ExportRun:
    """Steps 1-3 of the module docstring (``turn``: `current_turn` unless given). `AuditChainError` (nothing
    written) when there are exports but the log confirms none of them, or (nothing more written) when the new
    records do not chain on; `ExportError` (nothing more written) when an export's key holds another object, or the
    keys or names are more than a run checks; `AuditSourceError` or `BucketUnavailable` when either cannot be used
    (what was written before stays: the next run starts after it). Keys the log contradicts while it confirms
    another export are in the result's ``contradicted``: the run goes on after the export it confirms."""
    names, ignored = list_export_names(bucket, prefix)
    checked = check_export_names(source, names, current_turn() if turn is None else turn)
    run = ExportRun(checked.last, ignored=ignored, contradicted=checked.contradicted, suspects=checked.suspects,
                    unchecked=checked.unchecked)  # fmt: skip
    after_seq, after_hash = 0, GENESIS_PREV_HASH
    if checked.last is not None:
        after_seq, after_hash = checked.last.last_seq, checked.last.head
    elif checked.contradicted:
        first = checked.contradicted[0]
        found = describe(prefix, checked.contradicted)
        raise AuditChainError(first.name.last_seq, f"the log confirms none of the {len(names)} exports under "
                              f"{prefix}, so nothing was written: {found}")  # fmt: skip
    while records := source.records_after(after_seq, MAX_RECORDS_PER_EXPORT):
        verify_audit_chain(records, after_seq=after_seq, after_hash=after_hash)
        name, body = encode_export(records)
        if not run.written:  # just before the first put: has another host exported meanwhile?
            appeared = set(list_export_names(bucket, prefix)[0]).difference(names)
            run.overtaken = covering_export(source, list(appeared), name.first_seq, name)
            if run.overtaken is not None:
                return run
        key = prefix + name.file_name()
        try:
            written = bucket.put_new_or_same(key, body, content_type=CONTENT_TYPE)
        except ObjectMismatch as exc:
            raise ExportError(f"{exc}: not the export of these records, which another host would have written byte "
                              "for byte; nothing more was written") from None  # fmt: skip
        if not written:
            run.present += 1
        run.written.append(name)
        after_seq, after_hash = name.last_seq, name.head
    return run


def describe(prefix: str, contradicted: Sequence[Contradicted]) -> str:
    """The first `MAX_NAMED` contradicted keys, each with how the log contradicts it, and how many more."""
    parts = [f"{prefix}{c.name.file_name()}: {c.reason}" for c in contradicted[:MAX_NAMED]]
    if len(contradicted) > MAX_NAMED:
        parts.append(f"and {len(contradicted) - MAX_NAMED} more")
    return "; ".join(parts)


def run_export(args: argparse.Namespace) -> int:
    def fail(marker: str, message: str, code: int) -> int:
        print(terminal_safe(f"{marker}{message}"), file=sys.stderr)  # the log and the bucket are the parent's
        return code

    try:
        bucket_name = parse_bucket(args.bucket)
    except ValueError as exc:
        return fail(ERROR_MARKER, f"--bucket {exc}", EXIT_UNREADABLE)
    if not PREFIX.fullmatch(args.prefix):
        return fail(ERROR_MARKER, "--prefix must be key segments each ending in / (like audit/)", EXIT_UNREADABLE)
    try:
        source = open_audit_source(args.db, args.state)
        bucket = DataBucket(s3_client(bucket_name.region), bucket_name.name)
        run = export_new_records(source, bucket, args.prefix)
    except (AuditChainError, ExportError) as exc:
        return fail(FAILED_MARKER, str(exc), EXIT_FAILED)
    except (AuditSourceError, BucketUnavailable) as exc:
        return fail(ERROR_MARKER, str(exc), EXIT_UNREADABLE)
    where = f"s3://{bucket_name.name}/{args.prefix}"
    _report(run, where)
    if run.contradicted:
        last = "none" if run.last is None else f"{args.prefix}{run.last.file_name()}"
        count = f"{len(run.contradicted)} keys under {where} named as exports contradict the log"
        return fail(FAILED_MARKER, f"{count}; the export went on after the last one the log confirms ({last}): "
                    f"{describe(args.prefix, run.contradicted)}", EXIT_FAILED)  # fmt: skip
    return EXIT_OK


def _report(run: ExportRun, where: str) -> None:
    if run.ignored:
        print(f"{WARNING_MARKER}{run.ignored} keys under {where} are not named as exports (ignored)", file=sys.stderr)
    if run.unchecked:
        checked, every = run.suspects - run.unchecked, turns_to_check_all(run.suspects)
        print(f"{WARNING_MARKER}{run.unchecked} of the {run.suspects} export names under {where} that overlap another "
              f"below the last export were not checked against the log in this run (a run checks {checked}, "
              f"in turn: each one at least once in any {every} timer intervals)", file=sys.stderr)  # fmt: skip
    if run.overtaken is not None:
        print(f"{OK_MARKER}nothing written: another host exported records {run.overtaken.first_seq}-"
              f"{run.overtaken.last_seq} after this run listed the keys (the next run checks that export against the "
              "log like any other, and goes on after the last one the log confirms)")  # fmt: skip
        return
    if not run.written:
        since = "the log is empty" if run.last is None else f"the log ends at seq {run.last.last_seq}, exported"
        print(f"{OK_MARKER}nothing new ({since})")
        return
    first, last = run.written[0], run.written[-1]
    present = f" ({run.present} there already, the same bytes: another host exported them)" if run.present else ""
    print(f"{OK_MARKER}{len(run.written)} exports to {where}{present}: records {first.first_seq}-{last.last_seq}, "
          f"head {last.head.hex()}")  # fmt: skip


def read_exports(directory: Path) -> tuple[list[Export], list[str]]:
    """The exports in ``directory`` (the objects of the bucket's prefix, downloaded: ``aws s3 cp --recursive``),
    each checked whole (`decode_export`: `ExportError` for one that is not what the exporter writes), and the names
    of the files there not named as exports (skipped). `AuditSourceError` when the directory cannot be read or holds
    no export: a check against nothing is not a pass."""
    try:
        files = sorted(p for p in directory.iterdir() if p.is_file())
    except OSError as exc:
        raise AuditSourceError(f"cannot read the exports directory {directory} ({exc.strerror})") from None
    exports, skipped = [], []
    for path in files:
        name = parse_export_name(path.name)
        if name is None:
            skipped.append(path.name)
            continue
        try:
            if path.stat().st_size > MAX_EXPORT_BYTES:
                raise ExportError(f"export {path.name}: larger than {MAX_EXPORT_BYTES} bytes")
            data = path.read_bytes()
        except OSError as exc:
            raise AuditSourceError(f"cannot read {path} ({exc.strerror})") from None
        exports.append(decode_export(path.name, name, data))
    if not exports:
        raise AuditSourceError(f"no exports in {directory} (files named <first>-<last>-<head>.jsonl)")
    return exports, skipped
