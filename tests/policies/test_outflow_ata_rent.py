"""The rent the engine counts for a new Token-2022 associated account (`ATA_RENT_ESTIMATE`, an upper bound: the
transaction does not show the mint's extensions) is never below what the ATA program takes from the payer, for
mints carrying the extensions that make the program add account extensions (transfer fee, transfer hook,
non-transferable, pausable), alone and together, and with every other mint extension besides (which add none).

The differential test (`test_outflow_differential`) checks the estimate against plain mints only; these mints are
written byte for byte (TLV after the account-type byte) and the associated account is created by the real programs
on LiteSVM. All four together reach the bound exactly (195 bytes)."""

from __future__ import annotations

import struct

import pytest
from solders.account import Account
from solders.instruction import AccountMeta, Instruction
from solders.keypair import Keypair
from solders.message import Message
from solders.transaction import VersionedTransaction
from solders.transaction_metadata import FailedTransactionMetadata

from policies import programs
from policies.decoders.ata import ATA_RENT_ESTIMATE, TOKEN_2022_ACCOUNT_LEN_BOUND
from policies.evaluate import EvalContext, evaluate
from policies.model import NATIVE_SOL
from policies.transaction import decode_transaction
from tests.support.chain import ata_address, fresh_chain, funded_keypair
from tests.support.scenario import NOON, Scenario

# Mint extension types (Token-2022 `ExtensionType`) and their lengths.
TRANSFER_FEE, TRANSFER_HOOK, NON_TRANSFERABLE, PAUSABLE = (1, 108), (14, 64), (9, 0), (26, 33)
OTHERS = [(3, 32), (4, 65), (10, 52), (12, 32), (16, 73), (18, 64), (20, 64), (22, 64), (25, 56)]
"""Close authority, confidential transfers, interest, permanent delegate, confidential fees, metadata, group and
member pointers, scaled UI amount: none adds an account extension."""
FORCING = [TRANSFER_FEE, TRANSFER_HOOK, NON_TRANSFERABLE, PAUSABLE]
PLAIN_ACCOUNT_LEN = 165 + 1 + 4
"""A Token-2022 associated account of a mint without extensions: base, account type, ImmutableOwner."""


def mint_with(extensions: list[tuple[int, int]]) -> bytes:
    """An initialised Token-2022 mint (no authorities, 6 decimals) holding ``extensions`` zero-filled."""
    base = struct.pack("<I32sQBBI32s", 0, bytes(32), 0, 6, 1, 0, bytes(32))
    tlv = b"".join(struct.pack("<HH", kind, length) + bytes(length) for kind, length in extensions)
    return base + bytes(165 - len(base)) + b"\x01" + tlv


@pytest.mark.parametrize(
    "extensions",
    [[e] for e in FORCING] + [FORCING, FORCING + OTHERS],
    ids=["fee", "hook", "non_transferable", "pausable", "all_forcing", "every"],
)
def test_the_counted_rent_covers_what_the_ata_program_takes(extensions: list[tuple[int, int]]) -> None:
    svm = fresh_chain()
    s = Scenario(agent=funded_keypair(svm), blockhash=svm.latest_blockhash())
    s.doc["rules"]["destinations"]["allow"] = "any"
    mint, owner = Keypair().pubkey(), Keypair().pubkey()
    data = mint_with(extensions)
    svm.set_account(mint, Account(svm.minimum_balance_for_rent_exemption(len(data)), data,
                                  programs.TOKEN_2022_PROGRAM, False, 0))  # fmt: skip
    associated = ata_address(owner, mint, programs.TOKEN_2022_PROGRAM)
    create = Instruction(programs.ASSOCIATED_TOKEN_PROGRAM, b"\x01", [
        AccountMeta(s.wallet, True, True), AccountMeta(associated, False, True), AccountMeta(owner, False, False),
        AccountMeta(mint, False, False), AccountMeta(programs.SYSTEM_PROGRAM, False, False),
        AccountMeta(programs.TOKEN_2022_PROGRAM, False, False),
    ])  # fmt: skip
    raw = s.legacy(create, budget=False)
    decision = evaluate(s.policy, decode_transaction(raw), EvalContext(
        NOON, frozenset({s.wallet}), dict.fromkeys(s.policy.spend_windows(), 0), 0, 0))  # fmt: skip
    counted = {r.asset: r.amount for r in decision.reservations}[NATIVE_SOL]
    assert counted == ATA_RENT_ESTIMATE[programs.TOKEN_2022_PROGRAM]
    message = Message.new_with_blockhash([create], s.wallet, svm.latest_blockhash())
    result = svm.simulate_transaction(VersionedTransaction(message, [s.agent]))
    assert not isinstance(result, FailedTransactionMetadata), result.err()
    account = dict(result.post_accounts())[associated]
    assert account.lamports <= counted
    assert PLAIN_ACCOUNT_LEN < len(bytes(account.data)) <= TOKEN_2022_ACCOUNT_LEN_BOUND  # the mint's TLV was read
    if extensions[: len(FORCING)] == FORCING:
        assert account.lamports == counted  # the bound is reached exactly: it is as tight as it can be
