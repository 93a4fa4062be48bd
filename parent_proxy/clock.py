"""The clock seam: everything time-dependent reads time through a `Clock`, injected by the caller.

A clock that raises, or returns something that is not a finite, non-negative number of seconds since the Unix
epoch, is an error (`ClockUnavailable`); no code falls back to a default time.
"""

from __future__ import annotations

import math
import time
from typing import Protocol

from parent_proxy.errors import ClockUnavailable


class Clock(Protocol):
    """A source of wall-clock time, in seconds since the Unix epoch."""

    def now(self) -> float: ...


class SystemClock:
    """The production clock: `time.time()`."""

    def now(self) -> float:
        return time.time()


def read_clock(clock: Clock) -> float:
    """Return ``clock.now()`` after checking it, or raise `ClockUnavailable` (chained to the cause)."""
    try:
        value = clock.now()
    except Exception as exc:
        raise ClockUnavailable("the clock could not be read") from exc
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ClockUnavailable(f"the clock returned a {type(value).__name__}, not a number")
    if not math.isfinite(value) or value < 0:
        raise ClockUnavailable(f"the clock returned an impossible time: {value!r}")
    return float(value)
