"""Read a System program durable-nonce account: who may advance it, and the value a transaction uses as blockhash.

A transaction whose first instruction is the System ``AdvanceNonceAccount`` of an initialized nonce account, and
whose ``recent_blockhash`` is that account's stored nonce, does not expire after about a minute as a recent
blockhash does: it stays valid until the nonce advances (which the transaction itself does when it lands). The
agent-key rotation uses one when the owner needs more time between building the transaction and submitting it
(an MFA prompt per KMS signature, `parent_proxy.owner_rotation_cli`).

The layout is the runtime's (``solana-nonce``: ``Versions`` / ``State`` / ``Data``), bincode with ``u32`` enum tags,
created at exactly ``NONCE_ACCOUNT_BYTES`` by ``create_nonce_account``::

    version                 u32     0 Legacy, 1 Current
    state                   u32     0 Uninitialized, 1 Initialized (the fields below only then)
    authority               Pubkey  the key that must sign ``AdvanceNonceAccount``
    durable_nonce           Hash    the value a durable transaction carries as its blockhash
    lamports_per_signature  u64     the fee calculator at the last advance

Checks, in order (`parse_nonce_account`); any failure is a `NonceAccountError`, which `parent_proxy.chain` turns
into its `ChainError`:

1. owned by the System program (anyone can write these bytes into an account their program owns);
2. exactly `NONCE_ACCOUNT_BYTES` long;
3. version Current: the runtime no longer accepts a Legacy nonce as a blockhash (its stored value is a plain
   blockhash, not a durable nonce); ``UpgradeNonceAccount`` makes it Current;
4. state Initialized.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final

from solders.hash import Hash
from solders.pubkey import Pubkey

from policies.programs import SYSTEM_PROGRAM

NONCE_ACCOUNT_BYTES: Final = 80
_VERSION_LEGACY, _VERSION_CURRENT = 0, 1
_STATE_UNINITIALIZED, _STATE_INITIALIZED = 0, 1


class NonceAccountError(ValueError):
    """The account is not an initialized, current System nonce account."""


@dataclass(frozen=True)
class NonceAccount:
    address: Pubkey
    authority: Pubkey
    durable_nonce: Hash
    lamports_per_signature: int


def parse_nonce_account(address: Pubkey, owner: Pubkey, data: bytes) -> NonceAccount:
    """The nonce account at ``address`` from its owner and data (checks in the module docstring)."""
    if owner != SYSTEM_PROGRAM:
        raise NonceAccountError("the nonce account is not owned by the System program")
    if len(data) != NONCE_ACCOUNT_BYTES:
        raise NonceAccountError(f"the nonce account holds {len(data)} bytes, not {NONCE_ACCOUNT_BYTES}")
    version, state = struct.unpack_from("<II", data, 0)
    if version == _VERSION_LEGACY:
        raise NonceAccountError("legacy nonce account: upgrade it first (System UpgradeNonceAccount)")
    if version != _VERSION_CURRENT:
        raise NonceAccountError(f"unknown nonce account version {version}")
    if state == _STATE_UNINITIALIZED:
        raise NonceAccountError("the nonce account is not initialized")
    if state != _STATE_INITIALIZED:
        raise NonceAccountError(f"unknown nonce account state {state}")
    (lamports_per_signature,) = struct.unpack_from("<Q", data, 72)
    return NonceAccount(address, Pubkey.from_bytes(data[8:40]), Hash(data[40:72]), lamports_per_signature)
