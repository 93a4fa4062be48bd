"""The enclave's clock seam: every time the enclave acts on (request windows, policy expiry, attestation and
certificate validity, order lifetimes) is read through a `Clock`, passed in by whoever builds the enclave.

The enclave's own clock, never the parent's: request times come from here, not from anything the parent sends.
`utc_now` is the production adapter; tests pass a fixed or stepping clock.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Protocol


class Clock(Protocol):
    def __call__(self) -> datetime:
        """The current time, timezone-aware."""
        ...


def utc_now() -> datetime:
    """The system clock, in UTC (the production `Clock`)."""
    return datetime.now(UTC)
