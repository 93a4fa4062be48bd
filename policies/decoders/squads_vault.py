"""Squads v4 vaults: PDA derivations, decoding the instructions of a vault transaction message, and linking
approvals to a vault transaction created in the same Solana transaction.

Seeds are the program's (``state/seeds.rs``); every derivation is ``find_program_address`` under the Squads v4
program id. The evaluator treats `squads_vault_address` of the policy's multisig as a wallet key inside that
multisig's instructions, so that the effects of vault-message instructions (whose authority is the vault) count as
the wallet's.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from types import MappingProxyType
from typing import Final

from solders.pubkey import Pubkey

from policies import programs
from policies.decoders.squads_message import VaultMessage, parse_vault_message
from policies.errors import DecodeError
from policies.model import AccountView, DecodedInstruction, Effect, Opaque

SEED_PREFIX, SEED_VAULT, SEED_TRANSACTION = b"multisig", b"vault", b"transaction"
SEED_PROPOSAL, SEED_EPHEMERAL_SIGNER = b"proposal", b"ephemeral_signer"

UNSEEN: Final = "the transaction it approves or executes is stored on chain, not in this transaction"
"""The `Opaque` reason of approvals and executions; `link_vault_transactions` clears exactly this effect."""

Decoder = Callable[[int, Pubkey, tuple[AccountView, ...], bytes], DecodedInstruction]


@lru_cache(maxsize=1024)
def squads_vault_address(multisig: Pubkey, vault_index: int) -> Pubkey:
    """The vault PDA: seeds ``[b"multisig", multisig, b"vault", vault_index u8]``."""
    seeds = [SEED_PREFIX, bytes(multisig), SEED_VAULT, bytes([vault_index])]
    return Pubkey.find_program_address(seeds, programs.SQUADS_V4_PROGRAM)[0]


@lru_cache(maxsize=1024)
def squads_transaction_address(multisig: Pubkey, transaction_index: int) -> Pubkey:
    """The (vault or config) transaction PDA: ``[b"multisig", multisig, b"transaction", index u64 LE]``."""
    seeds = [SEED_PREFIX, bytes(multisig), SEED_TRANSACTION, transaction_index.to_bytes(8, "little")]
    return Pubkey.find_program_address(seeds, programs.SQUADS_V4_PROGRAM)[0]


@lru_cache(maxsize=1024)
def squads_proposal_address(multisig: Pubkey, transaction_index: int) -> Pubkey:
    """The proposal PDA: ``[b"multisig", multisig, b"transaction", index u64 LE, b"proposal"]``."""
    index = transaction_index.to_bytes(8, "little")
    seeds = [SEED_PREFIX, bytes(multisig), SEED_TRANSACTION, index, SEED_PROPOSAL]
    return Pubkey.find_program_address(seeds, programs.SQUADS_V4_PROGRAM)[0]


def squads_ephemeral_signer_address(transaction: Pubkey, signer_index: int) -> Pubkey:
    """An ephemeral signer PDA: ``[b"multisig", transaction, b"ephemeral_signer", signer_index u8]``."""
    seeds = [SEED_PREFIX, bytes(transaction), SEED_EPHEMERAL_SIGNER, bytes([signer_index])]
    return Pubkey.find_program_address(seeds, programs.SQUADS_V4_PROGRAM)[0]


def decode_vault_message(
    raw: bytes,
    *,
    index: int,
    vault: Pubkey,
    transaction: Pubkey,
    ephemeral_signers: int,
    decoder_for: Callable[[Pubkey], Decoder | None],
) -> tuple[tuple[Effect, ...], tuple[DecodedInstruction, ...], VaultMessage]:
    """Parse a vault transaction message and decode its instructions: (effects of the carrying instruction,
    inner instructions, the parsed message). ``index`` is the carrying instruction's; inner instructions are
    numbered from 0.

    1. parse and check the structure (`parse_vault_message`; failures are `DecodeError`s);
    2. address lookup tables: `Opaque` and no inner instructions (their contents are not in view);
    3. every signer must be the vault or one of the ``ephemeral_signers`` PDAs of ``transaction``, else `Opaque`;
    4. each instruction is decoded by ``decoder_for(program id)`` (an unknown program yields an `Opaque` inner
       instruction); any failure is a `DecodeError` of the carrying instruction.
    """
    name = "vault_transaction_create"
    message = parse_vault_message(raw, index=index, name=name)
    if message.lookups:
        lookups = Opaque("the vault transaction message uses address lookup tables, whose contents are not in view")
        return (lookups,), (), message
    effects: tuple[Effect, ...] = ()
    ephemeral: set[Pubkey] | None = None
    for key in message.account_keys[: message.num_signers]:
        if key == vault:
            continue
        if ephemeral is None:
            ephemeral = {squads_ephemeral_signer_address(transaction, k) for k in range(ephemeral_signers)}
        if key not in ephemeral:
            effects = (Opaque(f"the vault transaction message asks {key} to sign (neither the vault nor an "
                              "ephemeral signer)"),)  # fmt: skip
            break
    keys = message.account_keys
    views = [AccountView(key, message.is_signer(i), message.is_writable(i)) for i, key in enumerate(keys)]
    inner = []
    for j, compiled in enumerate(message.instructions):
        program_id = keys[compiled.program_id_index]
        accounts = tuple([views[i] for i in compiled.account_indexes])
        inner.append(_decode_inner(index, j, program_id, accounts, compiled.data, decoder_for(program_id)))
    return effects, tuple(inner), message


def _decode_inner(  # noqa: PLR0917 - the decoder call and where it sits
    index: int, j: int, program_id: Pubkey, accounts: tuple[AccountView, ...], data: bytes, decoder: Decoder | None
) -> DecodedInstruction:
    where = f"vault_transaction_create: inner instruction {j}"
    if decoder is None:
        args = MappingProxyType({"data_len": len(data)})
        return DecodedInstruction(j, program_id, "unknown", "unknown", accounts, args,
                                  (Opaque(f"no decoder for program {program_id}"),))  # fmt: skip
    try:
        result = decoder(j, program_id, accounts, data)
    except DecodeError as exc:
        raise DecodeError(f"{where}: {exc}", instruction_index=index) from exc
    except Exception as exc:
        raise DecodeError(f"{where}: decoder for program {program_id} failed", instruction_index=index) from exc
    if not isinstance(result, DecodedInstruction) or result.index != j:
        raise DecodeError(f"{where}: decoder for program {program_id} returned a malformed result",
                          instruction_index=index)  # fmt: skip
    return result


def link_vault_transactions(instructions: list[DecodedInstruction]) -> list[DecodedInstruction]:
    """Clear the `Opaque` effect of approvals and executions whose vault transaction this transaction creates.

    A top-level ``proposal_approve`` / ``proposal_activate`` of proposal P, or ``vault_transaction_execute`` of
    (P, T), becomes benign when the same transaction holds a ``vault_transaction_create`` of T whose message was
    decoded (it has inner instructions and no `Opaque` effect of its own; its rent ``Outflow`` does not count) and
    a ``proposal_create`` of P for the index whose transaction address is T, all on the same multisig. Everything
    else is returned unchanged; instructions inside a vault message are never linked.
    """
    squads = [ix for ix in instructions if ix.program_id == programs.SQUADS_V4_PROGRAM]
    created = {
        (ix.args["multisig"], ix.args["transaction"])
        for ix in squads
        if ix.name == "vault_transaction_create" and ix.inner and not any(isinstance(e, Opaque) for e in ix.effects)
    }
    if not created:
        return instructions
    linked: set[tuple[object, object, object]] = set()
    for ix in squads:
        if ix.name != "proposal_create":
            continue
        multisig, transaction_index = ix.args["multisig"], ix.args["transaction_index"]
        if isinstance(multisig, Pubkey) and isinstance(transaction_index, int):
            transaction = squads_transaction_address(multisig, transaction_index)
            if (multisig, transaction) in created:
                linked.add((multisig, ix.args["proposal"], transaction))
    proposals = {(multisig, proposal) for multisig, proposal, _ in linked}
    unseen = (Opaque(UNSEEN),)
    out = []
    for ix in instructions:
        args = ix.args
        if (
            ix.program_id == programs.SQUADS_V4_PROGRAM
            and ix.effects == unseen
            and (
                (
                    ix.name in ("proposal_approve", "proposal_activate")
                    and (args["multisig"], args["proposal"]) in proposals
                )
                or (
                    ix.name == "vault_transaction_execute"
                    and (args["multisig"], args["proposal"], args["transaction"]) in linked
                )
            )
        ):
            out.append(
                DecodedInstruction(ix.index, ix.program_id, ix.program, ix.name, ix.accounts, args, (), ix.inner)
            )
        else:
            out.append(ix)
    return out
