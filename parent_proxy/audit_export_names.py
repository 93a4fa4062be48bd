"""Which of the export names under the bucket's prefix the audit log confirms: where ``waiaas audit export``
(`audit_export_cli`) goes on from, and which keys it reports as contradicting the log.

The host role may put any new key under the prefix, so a key named as an export proves nothing by itself: a
taken-over host (or its role's credentials used elsewhere) can put one that ends past the log's end, or at the
log's last seq with another head. Only the log can confirm a name: the log's record at the name's last seq must
have the name's head. The head is the hash of that record, and every record's hash covers its predecessor's, so a
confirmed name pins the whole log up to its last seq, whatever its object holds. The object's content is checked by
``waiaas audit verify --exports`` (`audit_exports.decode_export`, `check_log_against_exports`), which reads every
export whole; this module reads names and log records only, never an object.

`check_export_names`, over the names listed:

1. finds the ends the log does not reach, by a binary search over the names' distinct last seqs (a log holds every
   seq from 1 to its end): those names run past the log's end, and are contradicted without a read each;
2. walks down the other ends from the highest, reading the log's record at each: a name with that record's hash
   is confirmed, and the highest confirmed is the last export, the one the exporter goes on after; every name
   above it, and every name at its seq with another head, is contradicted;
3. below the last export, reads the log's record at the end of every name whose seq range overlaps another
   name's: the exporter writes consecutive ranges, so an overlap is another writer's key, a history rewritten and
   exported again, or two hosts that exported at once (which write ranges that start alike and both hold). Names
   that overlap nothing below a confirmed name are not read each run: the confirmed name already pins the log
   they end in.

The work is bounded: at most `MAX_LOG_READS` record reads a run (each a one-item ``Query`` on DynamoDB). A walk that
needs more is `ExportError` (nothing written); overlapping names left unread are counted as unchecked.
"""

from __future__ import annotations

import hmac
from collections.abc import Sequence
from dataclasses import dataclass, field

from parent_proxy.audit_exports import ExportError, ExportName
from parent_proxy.audit_source import AuditSource
from parent_proxy.store.model import AuditRecord

MAX_LOG_READS = 1000
"""Records read from the log by seq in one run to check names (the binary search takes about 20 of them)."""
NOT_HELD = "the log does not hold seq {seq}, which it ends with (the log was cut short, or it is not this exporter's)"
OTHER_HEAD = (
    "the log's record at seq {seq} is not the one it ends with (the history was rewritten after it was exported, "
    "or it is not this exporter's)"
)


@dataclass(frozen=True, slots=True)
class Contradicted:
    """An export name the log contradicts, and how."""

    name: ExportName
    reason: str


@dataclass
class CheckedNames:
    last: ExportName | None
    """The highest export the log confirms (None: none does, or there is none)."""
    contradicted: list[Contradicted] = field(default_factory=list)
    unchecked: int = 0
    """Overlapping names below ``last`` not read this run (`MAX_LOG_READS`)."""


class _OutOfReads(Exception):
    pass


class _LogReads:
    """The log's record at a seq (None when the log does not hold it), each read once, at most `MAX_LOG_READS`."""

    def __init__(self, source: AuditSource) -> None:
        self._source = source
        self._held: dict[int, AuditRecord | None] = {}

    def at(self, seq: int) -> AuditRecord | None:
        if seq not in self._held:
            if len(self._held) >= MAX_LOG_READS:
                raise _OutOfReads
            held = self._source.records_after(seq - 1, 1)
            self._held[seq] = held[0] if held and held[0].seq == seq else None
        return self._held[seq]


def _check(name: ExportName, record: AuditRecord | None) -> Contradicted | None:
    if record is None:
        return Contradicted(name, NOT_HELD.format(seq=name.last_seq))
    if not hmac.compare_digest(record.hash, name.head):
        return Contradicted(name, OTHER_HEAD.format(seq=name.last_seq))
    return None


def check_export_names(source: AuditSource, names: Sequence[ExportName]) -> CheckedNames:
    """Steps 1-3 of the module docstring. `ExportError` when the walk down needs more than `MAX_LOG_READS` reads;
    `AuditSourceError` or `AuditChainError` from ``source``."""
    by_end: dict[int, list[ExportName]] = {}
    for name in sorted(set(names), key=lambda n: (n.first_seq, n.head)):
        by_end.setdefault(name.last_seq, []).append(name)
    ends = sorted(by_end, reverse=True)
    log = _LogReads(source)
    checked = CheckedNames(None)
    try:
        # 1. ends[:reached] are past the log's end.
        reached, above = 0, len(ends)
        while reached < above:
            middle = (reached + above) // 2
            if log.at(ends[middle]) is None:
                reached = middle + 1
            else:
                above = middle
        for end in ends[:reached]:
            checked.contradicted += [Contradicted(n, NOT_HELD.format(seq=end)) for n in by_end[end]]
        # 2. The highest confirmed name, from the highest end the log holds down.
        for end in ends[reached:]:
            record = log.at(end)
            for name in by_end[end]:
                wrong = _check(name, record)
                if wrong is not None:
                    checked.contradicted.append(wrong)
                elif checked.last is None:
                    checked.last = name
            if checked.last is not None:
                break
    except _OutOfReads:
        raise ExportError(f"more than {MAX_LOG_READS} reads of the log to find the last export the log confirms "
                          f"among {len(set(names))} export names; nothing was written") from None  # fmt: skip
    if checked.last is not None:
        _check_overlaps(log, by_end, checked.last, checked)
    return checked


def _check_overlaps(
    log: _LogReads, by_end: dict[int, list[ExportName]], last: ExportName, checked: CheckedNames
) -> None:
    """3. of the module docstring: the names below ``last`` that overlap another name, read and checked."""
    everything = sorted((n for names in by_end.values() for n in names), key=lambda n: (n.first_seq, n.last_seq))
    suspects = [n for n in _overlapping(everything) if n.last_seq < last.last_seq]
    suspects.sort(key=lambda n: (n.last_seq, n.first_seq, n.head), reverse=True)
    for index, name in enumerate(suspects):
        try:
            record = log.at(name.last_seq)
        except _OutOfReads:
            checked.unchecked = len(suspects) - index
            return
        wrong = _check(name, record)
        if wrong is not None:
            checked.contradicted.append(wrong)


def _overlapping(names: Sequence[ExportName]) -> set[ExportName]:
    """The names (sorted by first seq) whose seq range shares a seq with another name's."""
    found: set[ExportName] = set()
    reach: ExportName | None = None  # of the names so far, the one that reaches the highest seq
    for name in names:
        if reach is not None and name.first_seq <= reach.last_seq:
            found.update((name, reach))
        if reach is None or name.last_seq > reach.last_seq:
            reach = name
    return found
