"""Read a Squads v4 ``Multisig`` account: who the members are, and the next transaction index.

The layout is the program's (``state/multisig.rs``; the IDL ``squads_multisig_program.json`` of ``@sqds/multisig``
2.1.4, account ``Multisig``), Borsh after Anchor's 8-byte account discriminator ``sha256("account:Multisig")[:8]``::

    discriminator           [u8; 8]
    create_key              Pubkey
    config_authority        Pubkey
    threshold               u16
    time_lock               u32
    transaction_index       u64
    stale_transaction_index u64
    rent_collector          Option<Pubkey>     tag u8 (0 or 1), then 32 bytes when 1
    bump                    u8
    members                 Vec<Member>        u32 count, then per member: key Pubkey, permissions.mask u8

Trailing bytes are normal and accepted: ``Multisig::size`` always reserves 32 bytes for ``rent_collector`` (so a
multisig without one ends 32 bytes early), ``realloc_if_needed`` grows the account by ten members at a time, and
removing a member never shrinks it (the shorter state is written at the front; what follows is left as it was).

Checks, in order (`parse_multisig_account`); any failure is a `MultisigAccountError`, which `parent_proxy.chain`
turns into its `ChainError`:

1. owned by the Squads v4 program (anyone can write these bytes into an account they own);
2. at most `MAX_ACCOUNT_BYTES`, and long enough for the fixed part;
3. the ``Multisig`` discriminator;
4. the fields, with the ``Option`` tag 0 or 1 only and a member count that the data can hold (checked before
   anything is allocated) and at most ``u16::MAX`` (the program's own bound);
5. the program's invariants on members: known permissions only (mask < 8), sorted by key with no duplicates
   (the program finds members by binary search);
6. the account address is the multisig PDA of ``create_key`` (seeds ``[b"multisig", b"multisig", create_key]``) and
   ``bump`` its canonical bump, as every Squads instruction checks (``seeds = ..., bump = multisig.bump``).

The caller still decides what the contents mean (which keys must be members, the threshold, the time lock).
"""

from __future__ import annotations

import hashlib
import itertools
import struct
from dataclasses import dataclass
from typing import Final

from solders.pubkey import Pubkey

from policies.decoders.squads_vault import SEED_PREFIX
from policies.programs import SQUADS_V4_PROGRAM

MULTISIG_DISCRIMINATOR: Final = hashlib.sha256(b"account:Multisig").digest()[:8]
"""Anchor's account discriminator of ``Multisig``."""
SEED_MULTISIG: Final = b"multisig"
"""``state/seeds.rs``: the multisig PDA is ``[SEED_PREFIX, SEED_MULTISIG, create_key]``."""
MEMBER_BYTES: Final = 33
"""``Member::INIT_SPACE``: key (32) + permissions mask (1)."""
MAX_MEMBERS: Final = 0xFFFF
"""``Multisig::invariant``: at most ``u16::MAX`` members."""
MAX_ACCOUNT_BYTES: Final = 10 * 1024 * 1024
"""Solana's ``MAX_PERMITTED_DATA_LENGTH``: no account holds more."""

PERMISSION_INITIATE: Final = 1
PERMISSION_VOTE: Final = 2
PERMISSION_EXECUTE: Final = 4
PERMISSIONS_ALL: Final = PERMISSION_INITIATE | PERMISSION_VOTE | PERMISSION_EXECUTE
"""``Permission`` bits (``state/multisig.rs``); a mask of 8 or more is an unknown permission."""
_PERMISSION_NAMES: Final = (
    (PERMISSION_INITIATE, "Initiate"),
    (PERMISSION_VOTE, "Vote"),
    (PERMISSION_EXECUTE, "Execute"),
)

_HEAD = struct.Struct("<8s32s32sHIQQ")
"""discriminator, create_key, config_authority, threshold, time_lock, transaction_index, stale_transaction_index."""
_MIN_BYTES: Final = _HEAD.size + 1 + 1 + 4
"""The fixed part with no rent collector and no members (the option tag, the bump, the member count)."""


class MultisigAccountError(ValueError):
    """The account is not a well-formed Squads v4 multisig (the message says which check failed)."""


def permission_names(mask: int) -> str:
    """``7`` -> ``"Initiate, Vote, Execute"``; ``"none"`` for a mask without a known bit."""
    return ", ".join(name for bit, name in _PERMISSION_NAMES if mask & bit) or "none"


@dataclass(frozen=True)
class Member:
    key: Pubkey
    permissions: int
    """``Permissions.mask``: `PERMISSION_INITIATE` | `PERMISSION_VOTE` | `PERMISSION_EXECUTE`."""

    def has(self, permission: int) -> bool:
        return self.permissions & permission == permission


@dataclass(frozen=True)
class MultisigAccount:
    address: Pubkey
    create_key: Pubkey
    config_authority: Pubkey
    threshold: int
    time_lock: int
    transaction_index: int
    """The last transaction's index (0: none yet); the next config or vault transaction takes this + 1."""
    stale_transaction_index: int
    rent_collector: Pubkey | None
    bump: int
    members: tuple[Member, ...]

    def member(self, key: Pubkey) -> Member | None:
        """The member with this key, or None."""
        for member in self.members:
            if member.key == key:
                return member
        return None


def parse_multisig_account(address: Pubkey, owner: Pubkey, data: bytes) -> MultisigAccount:
    """The multisig stored at ``address`` (an account owned by ``owner`` holding ``data``), after the checks in the
    module docstring."""
    # 1. Owned by the Squads v4 program.
    if owner != SQUADS_V4_PROGRAM:
        raise MultisigAccountError("account is not owned by the Squads v4 program")
    # 2. Size.
    if len(data) > MAX_ACCOUNT_BYTES:
        raise MultisigAccountError("multisig account larger than any Solana account")
    if len(data) < _MIN_BYTES:
        raise MultisigAccountError("multisig account data too short")
    # 3. Discriminator.
    discriminator, create_key, authority, threshold, time_lock, index, stale = _HEAD.unpack_from(data)
    if discriminator != MULTISIG_DISCRIMINATOR:
        raise MultisigAccountError("account is not a Squads multisig (wrong discriminator)")
    # 4. Fields.
    at = _HEAD.size
    tag = data[at]
    at += 1
    rent_collector: Pubkey | None = None
    if tag == 1:
        if len(data) < at + 32 + 1 + 4:
            raise MultisigAccountError("multisig account data too short")
        rent_collector = Pubkey.from_bytes(data[at : at + 32])
        at += 32
    elif tag != 0:
        raise MultisigAccountError(f"multisig rent_collector: bad option tag {tag}")
    bump = data[at]
    count = int.from_bytes(data[at + 1 : at + 5], "little")
    at += 5
    if count > MAX_MEMBERS or count * MEMBER_BYTES > len(data) - at:
        raise MultisigAccountError(f"multisig member count {count} is more than the account holds")
    members = tuple(
        Member(Pubkey.from_bytes(data[i : i + 32]), data[i + 32])
        for i in range(at, at + count * MEMBER_BYTES, MEMBER_BYTES)
    )
    # 5. Member invariants.
    if any(m.permissions > PERMISSIONS_ALL for m in members):
        raise MultisigAccountError("multisig member with unknown permissions")
    keys = [bytes(m.key) for m in members]
    if any(a >= b for a, b in itertools.pairwise(keys)):
        raise MultisigAccountError("multisig members are not sorted and unique")
    # 6. The address is the multisig PDA of create_key, with the canonical bump (``multisig_create_v2`` derives it
    # with ``find_program_address``).
    expected, canonical_bump = Pubkey.find_program_address([SEED_PREFIX, SEED_MULTISIG, create_key], SQUADS_V4_PROGRAM)
    if expected != address or bump != canonical_bump:
        raise MultisigAccountError("account address is not the multisig PDA of its create_key and bump")
    return MultisigAccount(
        address=address,
        create_key=Pubkey.from_bytes(create_key),
        config_authority=Pubkey.from_bytes(authority),
        threshold=threshold,
        time_lock=time_lock,
        transaction_index=index,
        stale_transaction_index=stale,
        rent_collector=rent_collector,
        bump=bump,
        members=members,
    )
