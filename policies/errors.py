"""Errors raised by the `policies` package.

    PolicyEngineError
    +-- DecodeError              the bytes are not a transaction / message the engine fully understands
    +-- PolicyDocumentError      a policy document is malformed (names the field and the reason)
    +-- PolicySignatureError     the owner signature does not verify (opaque on purpose)
    +-- RotationTransactionError a transaction is not exactly an agent-key rotation (`policies.rotation`)

Lower-layer exceptions (solders, json, cryptography) are translated where they are caught, with
``raise ... from exc``. Nothing else escapes the package's public functions.
"""

from __future__ import annotations


class PolicyEngineError(Exception):
    """Base class of every error the policy engine raises."""


class DecodeError(PolicyEngineError):
    """A transaction, instruction or off-chain message could not be fully decoded.

    A decode failure is never guessed around: the evaluator turns it into DENY. ``instruction_index`` names
    the instruction that failed, when the failure belongs to one.
    """

    def __init__(self, message: str, *, instruction_index: int | None = None) -> None:
        super().__init__(message)
        self.instruction_index = instruction_index


class PolicyDocumentError(PolicyEngineError):
    """A policy document is malformed. ``field`` is a JSON-pointer-like path (``rules.limits[0].asset``)."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


class PolicySignatureError(PolicyEngineError):
    """The owner signature over a policy document (or other owner-signed object) is invalid."""

    def __init__(self) -> None:
        super().__init__("owner signature is invalid")
