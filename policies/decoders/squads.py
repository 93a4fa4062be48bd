"""Decoder of the Squads v4 multisig program (``SQDS4ep65T869zMMBKyuUq6aD6EgTu8psMjkvj52pCf``).

Every instruction of the program's IDL (``@sqds/multisig`` 2.1.4) is recognised by its Anchor discriminator,
``sha256("global:<name>")[:8]``; an unknown discriminator, a wrong account count, short arguments or trailing bytes
are `DecodeError`s. `SquadsDecoder` dispatches on the discriminator and decodes ``vault_transaction_create`` itself,
since only that one needs the registry; every other instruction is decoded from its own accounts and arguments by
`policies.decoders.squads_instructions` (its docstring gives their effects, and why), and the rent of the accounts
they create is `policies.decoders.squads_rent`'s.

- ``vault_transaction_create``: the carried message is parsed (`policies.decoders.squads_message`) and each of its
  instructions is decoded with the same registry into ``inner``, where the evaluator checks them like top-level
  ones. Inside the message the vault PDA (`squads_vault_address`) and the ephemeral signer PDAs are the signers.
  Inner effects count as the wallet's because the evaluator treats the vault (``args["vault"]``) as a wallet key
  while it checks an instruction on the policy's ``squads_multisig`` and what it carries; callers do not put the
  vault into ``EvalContext.wallet_keys``. `Opaque` when the message uses address lookup tables
  (their contents are not in view), when it asks for a signer that is neither the vault nor an ephemeral signer,
  or when it is nested more than `MAX_VAULT_NESTING` deep (a vault message holding a vault_transaction_create).
  The vault transaction account's rent (`squads_rent.vault_transaction_rent`), paid by ``rent_payer``, is an
  ``Outflow`` of kind ``squads_rent``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Final

from solders.pubkey import Pubkey

from policies import programs
from policies.decoders.squads_instructions import PROGRAM, SPECS, Handler, build
from policies.decoders.squads_message import BorshReader
from policies.decoders.squads_rent import vault_transaction_rent
from policies.decoders.squads_vault import (
    Decoder,
    decode_vault_message,
    link_vault_transactions,
    squads_vault_address,
)
from policies.errors import DecodeError
from policies.model import NATIVE_SOL, AccountView, DecodedInstruction, Opaque, Outflow

MAX_VAULT_NESTING: Final = 1
"""Vault messages may hold Squads instructions, but a vault message inside a vault message is refused."""
VAULT_TRANSACTION_CREATE: Final = "vault_transaction_create"
"""The one instruction decoded here; the others are `squads_instructions.SPECS`'."""

__all__ = ["INSTRUCTION_NAMES", "SquadsDecoder", "discriminator", "link_vault_transactions", "squads_vault_address"]

Lookup = Callable[[Pubkey], Decoder | None]


class SquadsDecoder:
    """The Squads v4 decoder, bound to the registry lookup that decodes vault-message instructions.

    ``lookup`` is normally ``registry.get`` of the registry this decoder is registered in (a copy of that registry
    keeps using the original's lookup). ``depth`` counts the vault messages around the instruction.
    """

    __slots__ = ("_depth", "_lookup", "_nested")

    def __init__(self, lookup: Lookup, *, depth: int = 0) -> None:
        self._lookup = lookup
        self._depth = depth
        self._nested: SquadsDecoder | None = None

    def __call__(
        self, index: int, program_id: Pubkey, accounts: tuple[AccountView, ...], data: bytes
    ) -> DecodedInstruction:
        name = _NAMES.get(data[:8])
        if name is None:
            if len(data) < 8:
                raise DecodeError(f"{PROGRAM}: data shorter than the 8-byte discriminator", instruction_index=index)
            raise DecodeError(f"{PROGRAM}: unknown instruction discriminator {data[:8].hex()}", instruction_index=index)
        handler: Handler
        most: int | None
        if name == VAULT_TRANSACTION_CREATE:  # accounts: multisig, transaction, creator, rent payer, system program
            handler, least, most = self.vault_transaction_create, 5, 5
        else:
            handler, least, most = SPECS[name]
        if len(accounts) < least or (most is not None and len(accounts) > most):
            expected = f"{least}" if least == most else f"{least} to {most if most is not None else 'any'}"
            raise DecodeError(f"{name}: {len(accounts)} accounts, expected {expected}", instruction_index=index)
        reader = BorshReader(data, index=index, name=name, offset=8)
        return handler(index, program_id, name, accounts, reader)

    # -- vault messages ----------------------------------------------------------------------------------------

    def nested(self) -> SquadsDecoder:
        if self._nested is None:
            self._nested = SquadsDecoder(self._lookup, depth=self._depth + 1)
        return self._nested

    def vault_transaction_create(
        self, index: int, pid: Pubkey, name: str, accounts: tuple[AccountView, ...], r: BorshReader
    ) -> DecodedInstruction:
        vault_index, ephemeral = r.u8("vault_index"), r.u8("ephemeral_signers")
        message_bytes, memo = r.byte_vec("transaction_message"), r.option_string("memo")
        r.finish()
        multisig, transaction = accounts[0].pubkey, accounts[1].pubkey
        vault = squads_vault_address(multisig, vault_index)
        args = {"multisig": multisig, "transaction": transaction, "creator": accounts[2].pubkey,
                "rent_payer": accounts[3].pubkey, "vault_index": vault_index, "vault": vault,
                "ephemeral_signers": ephemeral, "memo": memo}  # fmt: skip
        if self._depth >= MAX_VAULT_NESTING:
            reason = f"vault transaction message nested deeper than {MAX_VAULT_NESTING} is refused"
            return build(index, pid, name, accounts, args, (Opaque(reason),))
        effects, inner, message = decode_vault_message(
            message_bytes,
            index=index,
            vault=vault,
            transaction=transaction,
            ephemeral_signers=ephemeral,
            decoder_for=self._decoder_for,
        )
        rent = Outflow(NATIVE_SOL, vault_transaction_rent(ephemeral, message), accounts[3].pubkey,
                       accounts[3].pubkey, transaction, "squads_rent")  # fmt: skip
        return build(index, pid, name, accounts, args, (*effects, rent), inner)

    def _decoder_for(self, program_id: Pubkey) -> Decoder | None:
        return self.nested() if program_id == programs.SQUADS_V4_PROGRAM else self._lookup(program_id)


def discriminator(name: str) -> bytes:
    """Anchor's instruction discriminator: ``sha256("global:<snake_case name>")[:8]``."""
    return hashlib.sha256(f"global:{name}".encode()).digest()[:8]


INSTRUCTION_NAMES: Final = frozenset({*SPECS, VAULT_TRANSACTION_CREATE})
_NAMES: Final = {discriminator(name): name for name in INSTRUCTION_NAMES}
