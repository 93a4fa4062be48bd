"""Wallet ids: one definition for the proxy's API, the enclave's protocol and the owner's tools.

A wallet id is chosen by whoever creates the wallet and then travels everywhere: in URLs, in the audit log, in the
enclave's sealed state and in the receipts it signs, and back to the owner's terminal (``waiaas owner
verify-wallet`` prints the id its receipt names). The proxy's API has always taken only :data:`WALLET_ID_PATTERN`;
the enclave takes the same (`enclave_app.protocol_wire`), so a taken-over parent that talks to the enclave directly
cannot provision a wallet whose id carries control characters, spaces or look-alike Unicode. It lives here because
both services may import `policies` (DESIGN.md section 2: the enclave never imports the proxy).
"""

from __future__ import annotations

import re
from typing import Final, TypeGuard

MAX_WALLET_ID_CHARS: Final = 128
"""The longest wallet id (the enclave's sealing binding and protocol take the same bound from here)."""
WALLET_ID_PATTERN: Final = (
    rf"^(?:[A-Za-z0-9._:-]{{3,{MAX_WALLET_ID_CHARS}}}|[A-Za-z0-9_:-][A-Za-z0-9._:-]?|\.[A-Za-z0-9_:-])$"
)
"""1-128 ASCII letters, digits, ``.``, ``_``, ``:`` and ``-``, but not ``.`` or ``..``: a wallet id is a segment of
the API's paths, and those two are the dot segments that URL clients remove (``/v1/wallets/../policy`` is sent as
``/v1/policy``). Spelled without look-ahead (three alternatives: three characters or more; one or two not starting
with a dot; a dot and one other), which pydantic's regex engine lacks. The anchored form is what OpenAPI and
pydantic take; :func:`is_wallet_id` matches it against the whole string (a trailing newline does not pass, as it
would with a bare ``re.match`` on ``$``)."""

_WALLET_ID: Final = re.compile(WALLET_ID_PATTERN)


def is_wallet_id(value: object) -> TypeGuard[str]:
    """Whether ``value`` is a string of :data:`WALLET_ID_PATTERN`, all of it."""
    return type(value) is str and _WALLET_ID.fullmatch(value) is not None
