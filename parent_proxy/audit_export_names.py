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
3. below the last export, reads the log's record at the end of names whose seq range overlaps another name's: the
   exporter writes consecutive ranges, so an overlap is another writer's key, a history rewritten and exported
   again, or two hosts that exported at once (which write ranges that start alike and both hold; the exporter looks
   again just before it writes, `covering_export`, so this is rare). Names that overlap nothing below a confirmed
   name are not read: the confirmed name already pins the log they end in.

Why step 3 may read a slice of the overlapping names a run rather than all of them: a confirmed name pins the log up
to its seq, which changes below it only by a rewrite re-chained through that seq, and that contradicts it. So while
the last export an earlier run found is still confirmed (as it is under every export since, which the exporter
wrote chaining on from it), every name below it has the status it had then: a re-check finds nothing new, and a
name the log contradicted stays contradicted. A rewrite below the last export contradicts the last export itself,
which step 2 reads on every run: the next run reports it, with every name above the rewritten seq. (A record changed
without re-chaining the ones after it does not show in the hashes read here; ``waiaas audit verify`` finds it.) A
run reads all the overlapping names below the last export up to `SUSPECTS_PER_RUN`; past that, a slice of that many
that moves on by half its length every `TURN_SECONDS` (`suspects_of_turn`): a host that runs at least once every two
turns reads each of them at least once in any `turns_to_check_all` turns (while no overlapping name is added), and
reports a contradicted one on every run that reads it. The others are counted as unchecked: a warning, not a
failure (honest overlaps are no reason to fail every run, and a run that fails for them hides the one that matters).

The work is bounded: at most `MAX_LOG_READS` record reads (each a one-item ``Query`` on DynamoDB) to find the last
export, and `SUSPECTS_PER_RUN` more for step 3. A walk down that needs more is `ExportError` (nothing written: that
many names above the last export the log confirms were put in bulk, or a long history was rewritten).
"""

from __future__ import annotations

import hmac
from collections.abc import Sequence
from dataclasses import dataclass, field

from parent_proxy.audit_exports import ExportError, ExportName
from parent_proxy.audit_source import AuditSource
from parent_proxy.store.model import AuditRecord

MAX_LOG_READS = 1000
"""Records read from the log by seq in one run to find the last export (the binary search takes about 20 of them)."""
SUSPECTS_PER_RUN = 500
"""Overlapping names below the last export read in one run (at least 2); past it, a rotating slice."""
TURN_SECONDS = 15 * 60
"""How often the slice of `SUSPECTS_PER_RUN` moves on: the hosts' timer interval (``AUDIT_EXPORT_MINUTES`` in
cdk/user_data.py), so that each run of a host reads the next slice."""
MAX_COVERING_READS = 8
"""Records read by `covering_export`, one per name that appeared since the listing and covers the seq."""
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
    suspects: int = 0
    """Names below ``last`` that overlap another name (step 3)."""
    unchecked: int = 0
    """Of ``suspects``, those not read this run (`SUSPECTS_PER_RUN`): read in later turns."""


class _OutOfReads(Exception):
    pass


class _LogReads:
    """The log's record at a seq (None when the log does not hold it), each read once, at most ``limit`` reads."""

    def __init__(self, source: AuditSource, limit: int) -> None:
        self._source = source
        self._held: dict[int, AuditRecord | None] = {}
        self.limit = limit

    @property
    def count(self) -> int:
        return len(self._held)

    def at(self, seq: int) -> AuditRecord | None:
        if seq not in self._held:
            if len(self._held) >= self.limit:
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


def check_export_names(source: AuditSource, names: Sequence[ExportName], turn: int = 0) -> CheckedNames:
    """Steps 1-3 of the module docstring, step 3 with the slice of ``turn`` (`suspects_of_turn`). `ExportError`
    when the walk down needs more than `MAX_LOG_READS` reads; `AuditSourceError` or `AuditChainError` from
    ``source``."""
    by_end: dict[int, list[ExportName]] = {}
    for name in sorted(set(names), key=lambda n: (n.first_seq, n.head)):
        by_end.setdefault(name.last_seq, []).append(name)
    ends = sorted(by_end, reverse=True)
    log = _LogReads(source, MAX_LOG_READS)
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
        _check_overlaps(log, by_end, checked.last, checked, turn)
    return checked


def _check_overlaps(
    log: _LogReads, by_end: dict[int, list[ExportName]], last: ExportName, checked: CheckedNames, turn: int
) -> None:
    """3. of the module docstring: the names below ``last`` that overlap another name, those of ``turn`` read and
    checked."""
    everything = sorted((n for names in by_end.values() for n in names), key=lambda n: (n.first_seq, n.last_seq))
    suspects = [n for n in _overlapping(everything) if n.last_seq < last.last_seq]
    suspects.sort(key=lambda n: (n.last_seq, n.first_seq, n.head), reverse=True)
    chosen = suspects_of_turn(suspects, turn)
    checked.suspects, checked.unchecked = len(suspects), len(suspects) - len(chosen)
    log.limit = log.count + len(chosen)
    for name in chosen:
        wrong = _check(name, log.at(name.last_seq))
        if wrong is not None:
            checked.contradicted.append(wrong)


def suspects_of_turn(suspects: Sequence[ExportName], turn: int) -> list[ExportName]:
    """The suspects a run in ``turn`` (its time in `TURN_SECONDS`) reads: all of them up to `SUSPECTS_PER_RUN`;
    past that, that many in a row (round from the last to the first), starting half that many further on each turn.
    Two runs at most two turns apart read slices that meet or overlap, so runs at most two turns apart read every
    suspect within `turns_to_check_all` turns."""
    if len(suspects) <= SUSPECTS_PER_RUN:
        return list(suspects)
    start = turn * _step() % len(suspects)
    return [suspects[(start + i) % len(suspects)] for i in range(SUSPECTS_PER_RUN)]


def turns_to_check_all(suspects: int) -> int:
    """Any this many consecutive turns hold a run of a host that runs at least once every two turns whose slices
    together cover ``suspects`` suspects (unchanged meanwhile): its first run there is at most one turn in, its last
    at most one turn before the end, and each slice reaches to the next one's start."""
    if suspects <= SUSPECTS_PER_RUN:
        return 1
    return -(-suspects // _step()) + 1


def _step() -> int:
    return max(1, SUSPECTS_PER_RUN // 2)


def covering_export(source: AuditSource, names: Sequence[ExportName], seq: int, own: ExportName) -> ExportName | None:
    """Of ``names`` (those that appeared since the run listed the keys), the one with the highest last seq that covers
    ``seq`` (the first seq of the run's first export, ``own``, which is left out: the same export, written by another
    host, is settled by the put) and that the log does not contradict at a seq it holds: the log's record at its last
    seq has its head, or the log as ``source`` reads it does not hold that seq (a source that read the log once, the
    other host having read records appended since). None when there is none among the first `MAX_COVERING_READS`
    such names read."""
    covering = sorted({n for n in names if n.first_seq <= seq <= n.last_seq and n != own},
                      key=lambda n: (n.last_seq, n.head), reverse=True)  # fmt: skip
    log = _LogReads(source, MAX_COVERING_READS)
    for name in covering:
        try:
            record = log.at(name.last_seq)
        except _OutOfReads:
            return None
        if record is None or hmac.compare_digest(record.hash, name.head):
            return name
    return None


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
