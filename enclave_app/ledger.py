"""Per-boot counters of one wallet (:class:`Ledger`): what the enclave signed and refused since boot, with the times.

The sign path (`enclave_app.signer`) reads the amounts signed in each of the installed policy's spending windows
and the requests and denials in its rate and denial windows from here, so a parent that reports too little is
capped by what this boot signed; each `enclave_app.state.Wallet` holds one. Memory only, lost on restart by design.
"""

from __future__ import annotations

import bisect
from collections import deque
from collections.abc import Iterable

from enclave_app.errors import StateError
from enclave_app.protocol import ErrorCode
from policies.decision import Reservation
from policies.document import MAX_WINDOW_SECONDS

MAX_LEDGER_ENTRIES = 100_000
"""Entries per wallet ledger (ours: ~100 bytes each, 10 MB per wallet at most): signed amounts, archive buckets,
request and denial times; when full, signing is refused."""
COMPACT_AFTER = 4096
"""Pruned timestamps are dropped from memory once this many (and over half the list) have expired."""
ARCHIVE_BUCKET_SECONDS = 600
"""Signed amounts older than the installed policy's horizon are kept summed per asset in buckets of this length."""
ARCHIVE_SECONDS = MAX_WINDOW_SECONDS
"""How long archived amounts are kept: the longest window any policy may have (31 days, 4464 buckets per asset)."""


class _Times:
    """Non-decreasing timestamps with O(log n) counting over a trailing window."""

    __slots__ = ("head", "times")

    def __init__(self) -> None:
        self.times: list[float] = []
        self.head = 0

    def __len__(self) -> int:
        return len(self.times) - self.head

    def append(self, at: float) -> None:
        self.times.append(at)

    def count_after(self, cutoff: float) -> int:
        return len(self.times) - bisect.bisect_right(self.times, cutoff, lo=self.head)

    def prune(self, cutoff: float) -> None:
        self.head = bisect.bisect_right(self.times, cutoff, lo=self.head)
        if self.head > COMPACT_AFTER and self.head * 2 > len(self.times):
            del self.times[: self.head]
            self.head = 0


class _Window:
    """Amounts of one asset inside one trailing window, with their running total."""

    __slots__ = ("entries", "seconds", "total")

    def __init__(self, seconds: int, entries: Iterable[tuple[float, int]]) -> None:
        self.seconds = seconds
        self.entries = deque(entries)
        self.total = sum(amount for _, amount in self.entries)

    def add(self, at: float, amount: int) -> None:
        self.entries.append((at, amount))
        self.total += amount

    def slide(self, now: float) -> int:
        cutoff = now - self.seconds
        while self.entries and self.entries[0][0] <= cutoff:
            self.total -= self.entries.popleft()[1]
        return self.total


class Ledger:
    """Per-boot counters of one wallet: amounts signed per asset, requests and denials, with their times.

    Times never go backwards here (a clock step back is recorded at the last time seen), so windows only slide.
    Queries cost O(log n) (counts) or amortized O(1) (running totals per (asset, window)).

    Signed amounts are kept exactly for the installed policy's horizon, then summed per asset into
    `ARCHIVE_BUCKET_SECONDS` buckets kept for `ARCHIVE_SECONDS`. A bucket counts as if all of it were signed at
    its latest possible time (its end, or the prune cutoff when that is earlier, so that it stays older than every
    exact entry), so a window the policy lengthens later (a weekly limit replacing a daily one) still counts what
    was signed before, at most one bucket longer than exactly: never less. A parent that reports too little is
    therefore capped by the enclave over any window a policy can have, not only the horizon of the policy that
    was installed when the amounts were signed. Request and denial times are kept for the horizon only.
    Buckets count against `MAX_LEDGER_ENTRIES` as entries do: there are up to 4465 per asset, and a policy may allow
    up to 256 mints, so uncounted they could hold about 110 MB for one wallet (enclave memory all wallets share).
    """

    __slots__ = (
        "_archive", "_archived", "_last", "_longest", "_outflow_count", "_outflows", "_windows", "denials", "requests",
    )  # fmt: skip

    def __init__(self) -> None:
        self._outflows: dict[str, deque[tuple[float, int]]] = {}
        self._archive: dict[str, deque[tuple[float, float, int]]] = {}  # per asset: (end, counted at, sum)
        self._archived = 0  # buckets in _archive (they count against MAX_LEDGER_ENTRIES, as entries do)
        self._outflow_count = 0
        self._windows: dict[tuple[str, int], _Window] = {}
        self._longest = 0  # longest window in _windows (0: none)
        self.requests = _Times()
        self.denials = _Times()
        self._last = float("-inf")

    def time(self, now: float) -> float:
        self._last = max(self._last, now)
        return self._last

    def prune(self, now: float, horizon: int) -> None:
        cutoff = self.time(now) - horizon
        self.requests.prune(cutoff)
        self.denials.prune(cutoff)
        for asset, entries in self._outflows.items():
            while entries and entries[0][0] <= cutoff:
                self._archive_add(asset, *entries.popleft(), cutoff)
                self._outflow_count -= 1
        archive_cutoff = self._last - ARCHIVE_SECONDS
        for buckets in self._archive.values():
            while buckets and buckets[0][1] <= archive_cutoff:  # every amount in it is older than any window
                buckets.popleft()
                self._archived -= 1
        # Windows longer than the horizon are rebuilt from what is kept if a policy needs them again.
        if self._longest > horizon:
            self._windows = {key: window for key, window in self._windows.items() if key[1] <= horizon}
            self._longest = max((key[1] for key in self._windows), default=0)

    def _archive_add(self, asset: str, at: float, amount: int, cutoff: float) -> None:
        """Add an amount signed at ``at`` (<= ``cutoff``, the prune cutoff) to its bucket, counted at the bucket's
        end or ``cutoff``, whichever is earlier: never before ``at``, never after an exact entry (> ``cutoff``)."""
        end = (at // ARCHIVE_BUCKET_SECONDS + 1) * ARCHIVE_BUCKET_SECONDS
        counted_at = min(end, cutoff)
        buckets = self._archive.setdefault(asset, deque())
        if buckets and buckets[-1][0] == end:
            buckets[-1] = (end, max(counted_at, buckets[-1][1]), buckets[-1][2] + amount)
        else:
            buckets.append((end, counted_at, amount))
            self._archived += 1

    @property
    def held(self) -> int:
        """Entries held against `MAX_LEDGER_ENTRIES`: signed amounts, archive buckets, request and denial times."""
        return self._outflow_count + self._archived + len(self.requests) + len(self.denials)

    def check_room(self, entries: int) -> None:
        if self.held + entries > MAX_LEDGER_ENTRIES:
            raise StateError(ErrorCode.LEDGER_FULL, "per-boot counters are full")

    def spent(self, asset: str, window: int, now: float) -> int:
        now = self.time(now)
        key = (asset, window)
        view = self._windows.get(key)
        if view is None:
            cutoff = now - window
            archived = [(at, amount) for _, at, amount in self._archive.get(asset, ()) if at > cutoff]
            kept = [e for e in self._outflows.get(asset, ()) if e[0] > cutoff]
            view = self._windows[key] = _Window(window, archived + kept)  # in time order: archived ones are older
            self._longest = max(self._longest, window)
        return view.slide(now)

    def count(self, times: _Times, window: int, now: float) -> int:
        return times.count_after(self.time(now) - window)

    def record(self, now: float, *, denied: bool, signed: tuple[Reservation, ...]) -> None:
        now = self.time(now)
        self.requests.append(now)
        if denied:
            self.denials.append(now)
        for reservation in signed:
            self._outflows.setdefault(reservation.asset, deque()).append((now, reservation.amount))
            self._outflow_count += 1
            for (asset, _), view in self._windows.items():
                if asset == reservation.asset:
                    view.add(now, reservation.amount)
