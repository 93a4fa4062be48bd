"""Read a Squads v4 ``SpendingLimit`` account: which keys may spend through it, how much, to where.

Why it is read: ``spending_limit_use`` only checks ``spending_limit.members.contains(member)``, not that the signer
is still a member of the multisig, so a key removed from the multisig keeps spending through every limit that names
it. Agent-key rotation therefore needs to know which of the multisig's limits name the old agent key
(`SpendingLimitAccount.names`).

The layout is the program's (``state/spending_limit.rs``; the IDL ``squads_multisig_program.json`` of
``@sqds/multisig`` 2.1.4, account ``SpendingLimit``), Borsh after Anchor's 8-byte account discriminator
``sha256("account:SpendingLimit")[:8]``::

    discriminator           [u8; 8]
    multisig                Pubkey
    create_key              Pubkey
    vault_index             u8
    mint                    Pubkey             Pubkey::default() = SOL
    amount                  u64
    period                  Period             enum tag u8: 0 OneTime, 1 Day, 2 Week, 3 Month (no fields)
    remaining_amount        u64
    last_reset              i64
    bump                    u8
    members                 Vec<Pubkey>        u32 count, then 32 bytes each
    destinations            Vec<Pubkey>        u32 count, then 32 bytes each (empty: any destination)

No trailing bytes: unlike ``Multisig`` (whose reader accepts reserved and left-over space), a spending limit is
created at exactly ``SpendingLimit::size(members.len(), destinations.len())`` bytes, by both
``multisig_add_spending_limit`` (``space = SpendingLimit::size(...)``) and ``config_transaction_execute``'s
``AddSpendingLimit`` (``create_account(..., SpendingLimit::size(...))``), and never reallocated
(``spending_limit_use`` only rewrites ``remaining_amount`` and ``last_reset`` in place). Bytes after
``destinations`` are therefore something the program never writes, and are refused rather than guessed at.

Checks, in order (`parse_spending_limit_account`); any failure is a `SpendingLimitAccountError`, which
`parent_proxy.chain` turns into its `ChainError`:

1. owned by the Squads v4 program (anyone can write these bytes into an account they own);
2. at most `MAX_ACCOUNT_BYTES`, and long enough for the fixed part;
3. the ``SpendingLimit`` discriminator;
4. the fields, with the ``Period`` tag 0..3 only and each vector count one the remaining data can hold (checked
   before anything is allocated), and nothing after ``destinations``;
5. the account address is the spending-limit PDA of ``(multisig, create_key)`` (seeds ``[b"multisig", multisig,
   b"spending_limit", create_key]``) and ``bump`` its canonical bump (both creating instructions derive it with
   ``find_program_address``; ``spending_limit_use`` checks ``seeds = ..., bump = spending_limit.bump``).

The program's ``SpendingLimit::invariant`` (amount non-zero, members non-empty, no adjacent duplicate members) is
not checked here: it is enforced at creation only, members have been sorted before that check only since a later
program version, and whether a limit *names* a key does not depend on any of it. Refusing an account the program
holds would make every read of the multisig's limits fail.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from typing import Final

from solders.pubkey import Pubkey

from policies.decoders.squads_vault import SEED_PREFIX
from policies.programs import SQUADS_V4_PROGRAM

SPENDING_LIMIT_DISCRIMINATOR: Final = hashlib.sha256(b"account:SpendingLimit").digest()[:8]
"""Anchor's account discriminator of ``SpendingLimit``."""
SEED_SPENDING_LIMIT: Final = b"spending_limit"
"""``state/seeds.rs``: the spending-limit PDA is ``[SEED_PREFIX, multisig, SEED_SPENDING_LIMIT, create_key]``."""
MAX_ACCOUNT_BYTES: Final = 10 * 1024 * 1024
"""Solana's ``MAX_PERMITTED_DATA_LENGTH``: no account holds more."""

PERIOD_ONE_TIME: Final = 0
PERIOD_DAY: Final = 1
PERIOD_WEEK: Final = 2
PERIOD_MONTH: Final = 3
PERIOD_NAMES: Final = ("OneTime", "Day", "Week", "Month")
"""``Period`` variants in IDL order (the Borsh enum tag is the index)."""

_HEAD = struct.Struct("<8s32s32sB32sQBQqB")
"""discriminator, multisig, create_key, vault_index, mint, amount, period, remaining_amount, last_reset, bump."""
_MIN_BYTES: Final = _HEAD.size + 4 + 4
"""The fixed part with no members and no destinations (the two vector counts)."""


class SpendingLimitAccountError(ValueError):
    """The account is not a well-formed Squads v4 spending limit (the message says which check failed)."""


def spending_limit_address(multisig: Pubkey, create_key: Pubkey) -> tuple[Pubkey, int]:
    """The spending-limit PDA of ``create_key`` under ``multisig``, and its canonical bump."""
    return Pubkey.find_program_address(
        [SEED_PREFIX, bytes(multisig), SEED_SPENDING_LIMIT, bytes(create_key)], SQUADS_V4_PROGRAM
    )


@dataclass(frozen=True)
class SpendingLimitAccount:
    address: Pubkey
    multisig: Pubkey
    create_key: Pubkey
    vault_index: int
    mint: Pubkey
    """``Pubkey.default()`` means SOL."""
    amount: int
    period: int
    """``Period`` tag: `PERIOD_ONE_TIME`, `PERIOD_DAY`, `PERIOD_WEEK` or `PERIOD_MONTH`."""
    remaining_amount: int
    last_reset: int
    bump: int
    members: tuple[Pubkey, ...]
    """The keys that may spend through this limit (membership of the multisig is not checked by the program)."""
    destinations: tuple[Pubkey, ...]
    """Allowed destinations; empty means any."""

    def names(self, key: Pubkey) -> bool:
        """Whether ``key`` may spend through this limit (it is one of its members)."""
        return key in self.members


def _keys(data: bytes, at: int, what: str) -> tuple[tuple[Pubkey, ...], int]:
    """A Borsh ``Vec<Pubkey>`` at ``at``: the keys and the offset after them."""
    if len(data) - at < 4:
        raise SpendingLimitAccountError("spending limit account data too short")
    count = int.from_bytes(data[at : at + 4], "little")
    at += 4
    if count * 32 > len(data) - at:
        raise SpendingLimitAccountError(f"spending limit {what} count {count} is more than the account holds")
    end = at + count * 32
    return tuple(Pubkey.from_bytes(data[i : i + 32]) for i in range(at, end, 32)), end


def parse_spending_limit_account(address: Pubkey, owner: Pubkey, data: bytes) -> SpendingLimitAccount:
    """The spending limit stored at ``address`` (an account owned by ``owner`` holding ``data``), after the checks in
    the module docstring."""
    # 1. Owned by the Squads v4 program.
    if owner != SQUADS_V4_PROGRAM:
        raise SpendingLimitAccountError("account is not owned by the Squads v4 program")
    # 2. Size.
    if len(data) > MAX_ACCOUNT_BYTES:
        raise SpendingLimitAccountError("spending limit account larger than any Solana account")
    if len(data) < _MIN_BYTES:
        raise SpendingLimitAccountError("spending limit account data too short")
    # 3. Discriminator.
    (discriminator, multisig, create_key, vault_index, mint, amount, period, remaining, last_reset,
     bump) = _HEAD.unpack_from(data)  # fmt: skip
    if discriminator != SPENDING_LIMIT_DISCRIMINATOR:
        raise SpendingLimitAccountError("account is not a Squads spending limit (wrong discriminator)")
    # 4. Fields.
    if period >= len(PERIOD_NAMES):
        raise SpendingLimitAccountError(f"spending limit period: bad enum tag {period}")
    members, at = _keys(data, _HEAD.size, "member")
    destinations, at = _keys(data, at, "destination")
    if at != len(data):
        raise SpendingLimitAccountError(f"spending limit account has {len(data) - at} bytes after its fields")
    # 5. The address is the spending-limit PDA of (multisig, create_key), with the canonical bump.
    multisig_key = Pubkey.from_bytes(multisig)
    create = Pubkey.from_bytes(create_key)
    expected, canonical_bump = spending_limit_address(multisig_key, create)
    if expected != address or bump != canonical_bump:
        raise SpendingLimitAccountError(
            "account address is not the spending limit PDA of its multisig, create_key and bump"
        )
    return SpendingLimitAccount(
        address=address,
        multisig=multisig_key,
        create_key=create,
        vault_index=vault_index,
        mint=Pubkey.from_bytes(mint),
        amount=amount,
        period=period,
        remaining_amount=remaining,
        last_reset=last_reset,
        bump=bump,
        members=members,
        destinations=destinations,
    )
