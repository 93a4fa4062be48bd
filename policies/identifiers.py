"""Wallet ids: one rule for the proxy's API, the policy documents, the enclave's protocol and the owner's tools.

A wallet id is chosen by whoever creates the wallet and then travels everywhere: in URLs, in every policy the owner
signs for it (the document's ``wallet_id``, `policies.document`, and the published schema's ``$defs/wallet_id``), in
the audit log, in the store's keys (DynamoDB ``W#<id>``, the data bucket's ``sealed/<id>/<key>``), in the enclave's
sealed state and in the receipts it signs, and back to the owner's terminal (``waiaas owner verify-wallet`` prints
the id its receipt names). Every one of them takes :data:`WALLET_ID_PATTERN` and nothing else: an id the API took
and a policy could not name would be a wallet that can never sign (its agent key made and sealed, and a vault funded
before the first policy was refused, recoverable only by the owner's recovery path).

The rule is the narrowest that every id the API ever documented still passes: 1-64 ASCII letters, digits, ``.``,
``_`` and ``-``, the first a letter or a digit (the policy documents' rule; the API took up to 128 characters,
``:`` and a leading ``.``, ``_`` or ``-`` too, before nothing was deployed). So no id is a URL dot segment (``.``,
``..``), and none carries a separator of the store's keys (``#``, ``/``), control characters, spaces or look-alike
Unicode. It lives here because both services may import `policies` (DESIGN.md section 2: the enclave never imports
the proxy).
"""

from __future__ import annotations

import re
from typing import Final, TypeGuard

MAX_WALLET_ID_CHARS: Final = 64
"""The longest wallet id (the enclave's sealing binding and protocol take the same bound from here)."""
WALLET_ID_PATTERN: Final = rf"^[A-Za-z0-9][A-Za-z0-9._-]{{0,{MAX_WALLET_ID_CHARS - 1}}}$"
"""The anchored form OpenAPI, pydantic and the JSON Schema take (their ``$`` is the end of the string);
:func:`is_wallet_id` matches it against the whole string (a trailing newline does not pass, as it would with a bare
``re.match`` on ``$``)."""
WALLET_ID_RULE: Final = f"1-{MAX_WALLET_ID_CHARS} characters of A-Z a-z 0-9 . _ -, the first a letter or digit"
"""The rule in words, for every error that refuses a wallet id."""

_WALLET_ID: Final = re.compile(WALLET_ID_PATTERN)


def is_wallet_id(value: object) -> TypeGuard[str]:
    """Whether ``value`` is a string of :data:`WALLET_ID_PATTERN`, all of it."""
    return type(value) is str and _WALLET_ID.fullmatch(value) is not None
