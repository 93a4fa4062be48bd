"""Replacing wallets' sealed agent keys: the value `Store.replace_sealed_keys` takes, and its input checks.

One caller: ``waiaas selfhost reseal`` (`selfhost.reseal`), which moves every wallet's blob from the self-host
unseal secret to a new one. A wallet is sealed under one secret or the other, never "mostly" under the new one, so
the replacements of one call are written together with the audit record that names them, or not at all; each only
if the wallet's blob is still the one the caller read (compare-and-swap), so a blob written in between (a wallet
re-provisioned by a signer that should not have been running) is never overwritten blind.

The store keeps blobs opaque: it neither opens nor parses them. That the new blob holds the same key, bound to the
same wallet, is the caller's check (it has the secrets; the store never does).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from parent_proxy.errors import InvalidInput
from parent_proxy.store import validation as v


@dataclass(frozen=True)
class SealedKeyReplacement:
    """Wallet ``wallet_id``'s sealed key becomes ``new_sealed_key``, if it is still ``old_sealed_key``."""

    wallet_id: str
    old_sealed_key: bytes = field(repr=False)
    new_sealed_key: bytes = field(repr=False)


def check_replacements(replacements: object) -> list[SealedKeyReplacement]:
    """The replacements as a list, or `InvalidInput`: at least one, each wallet once, blobs non-empty and changed."""
    if not isinstance(replacements, Sequence) or isinstance(replacements, str | bytes) or not replacements:
        raise InvalidInput("replacements", "must be a non-empty sequence of SealedKeyReplacement")
    seen: set[str] = set()
    checked: list[SealedKeyReplacement] = []
    for i, r in enumerate(replacements):
        if not isinstance(r, SealedKeyReplacement):
            raise InvalidInput(f"replacements[{i}]", "must be a SealedKeyReplacement")
        v.check_id(f"replacements[{i}].wallet_id", r.wallet_id)
        if r.wallet_id in seen:
            raise InvalidInput(f"replacements[{i}].wallet_id", f"wallet {r.wallet_id} named twice")
        seen.add(r.wallet_id)
        for name in ("old_sealed_key", "new_sealed_key"):
            if not v.check_blob(f"replacements[{i}].{name}", getattr(r, name)):
                raise InvalidInput(f"replacements[{i}].{name}", "must not be empty")
        if r.old_sealed_key == r.new_sealed_key:
            raise InvalidInput(f"replacements[{i}].new_sealed_key", "is the old sealed key")
        checked.append(r)
    return checked
