"""Address lookup tables, resolved from the owner's pins only.

A v0 message names accounts by (table, index). The signer has no chain to read tables from, and the parent that
supplies their contents is not trusted (DESIGN.md section 1): a parent could claim that an index holds an
allowlisted merchant while on chain it holds the parent's own address. So the owner pins, in the signed policy
(`rules.lookup_tables`), the contents of every table the wallet may use, and lookups resolve from those pins alone.
Pinning is sound because a table only grows (entries are appended, never changed) and its address cannot be
recreated once closed; a pinned prefix of what the table holds therefore stays true, and an index past the pin does
not resolve. A pin longer than the table is not such a prefix: its extra entries name addresses the table does not
hold yet, and whoever holds the table's authority may append different ones, so the cross-check refuses it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from solders.pubkey import Pubkey

from policies.document import Policy
from policies.errors import DecodeError


def resolve_lookup_tables(
    policy: Policy, supplied: Mapping[Pubkey, Sequence[Pubkey]] | None = None
) -> Mapping[Pubkey, tuple[Pubkey, ...]]:
    """The table contents to decode with: the policy's pins.

    ``supplied`` (contents read from the chain, or handed over by the parent) is only cross-checked: a supplied
    table that is not pinned, that holds fewer entries than its pin, or whose entries disagree with the pin where
    both have one, is a `DecodeError` (the caller denies), since one of the two is wrong and the pin is what the
    owner signed. Supplied contents longer than the pin are fine: the pin is a prefix of the table.
    """
    pins = policy.rules.lookup_tables
    for address, contents in (supplied or {}).items():
        pinned = pins.get(address)
        if pinned is None:
            raise DecodeError(f"lookup table {address} is not pinned by the owner's policy")
        if len(contents) < len(pinned):
            raise DecodeError(
                f"lookup table {address} is shorter than the owner's pin ({len(contents)} < {len(pinned)} entries): "
                "a pin must be a prefix of the table"
            )
        if any(a != b for a, b in zip(pinned, contents, strict=False)):
            raise DecodeError(f"lookup table {address} contents differ from the owner's pin")
    return pins
