"""Decisions: the verdict tiers, the reasons behind them, and the amounts to reserve (DESIGN.md section 4).

Tiers are ordered by severity; the strictest over all rules and instructions wins:
ALLOW < ESCALATE (owner approval needed) < DENY < FREEZE (an attack: refuse and lock the wallet).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from policies.fastinit import fast_init


class Verdict(IntEnum):
    ALLOW = 0
    ESCALATE = 1
    DENY = 2
    FREEZE = 3

    @property
    def label(self) -> str:
        return self.name.lower()


@fast_init
@dataclass(frozen=True, slots=True)
class Reason:
    """Why a rule raised the verdict: ``rule`` is a stable id (``limits.sol.per_transaction``,
    ``destinations.allow``, ``decode``, ...); ``instruction`` the top-level instruction index, ``inner`` the index
    inside it (vault transactions), ``seen`` what the transaction has and ``allowed`` what the policy permits."""

    verdict: Verdict
    rule: str
    message: str
    instruction: int | None = None
    inner: int | None = None
    seen: str | int | None = None
    allowed: str | int | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"verdict": self.verdict.label, "rule": self.rule, "message": self.message}
        for key in ("instruction", "inner", "seen", "allowed"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        return out


@fast_init
@dataclass(frozen=True, slots=True)
class Reservation:
    """``amount`` raw units of ``asset`` to reserve against every period window of that asset."""

    asset: str
    amount: int


@fast_init
@dataclass(frozen=True, slots=True)
class Decision:
    verdict: Verdict
    reasons: tuple[Reason, ...]
    reservations: tuple[Reservation, ...]
    policy_sequence: int | None

    @property
    def allowed(self) -> bool:
        return self.verdict is Verdict.ALLOW

    def to_json(self) -> dict[str, Any]:
        """JSON form; amounts are decimal strings like in policy documents."""
        return {
            "verdict": self.verdict.label,
            "policy_sequence": self.policy_sequence,
            "reasons": [r.to_json() for r in self.reasons],
            "reservations": [{"asset": r.asset, "amount": str(r.amount)} for r in self.reservations],
        }
