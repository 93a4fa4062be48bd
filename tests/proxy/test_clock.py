"""The clock seam: a failing or nonsensical clock is an error, never a default time."""

from __future__ import annotations

import time

import pytest

from parent_proxy.clock import SystemClock, read_clock
from parent_proxy.errors import ClockUnavailable


class Returns:
    def __init__(self, value: object) -> None:
        self.value = value

    def now(self) -> float:
        return self.value  # type: ignore[return-value]


class Raises:
    def now(self) -> float:
        raise OSError("no clock")


def test_system_clock_is_read() -> None:
    before = time.time()
    assert before <= read_clock(SystemClock()) <= time.time()
    assert read_clock(Returns(5)) == 5.0


@pytest.mark.parametrize(
    ("clock", "match"),
    [
        (Raises(), "the clock could not be read"),
        (Returns(None), "returned a NoneType, not a number"),
        (Returns(True), "returned a bool, not a number"),
        (Returns("1700000000"), "returned a str"),
        (Returns(float("inf")), "impossible time: inf"),
        (Returns(-1.0), "impossible time: -1.0"),
    ],
)
def test_bad_clocks_raise(clock: object, match: str) -> None:
    with pytest.raises(ClockUnavailable, match=match):
        read_clock(clock)  # type: ignore[arg-type]
