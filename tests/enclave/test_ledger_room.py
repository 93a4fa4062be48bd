"""The room the sign path asks of a wallet's ledger (`ledger_entries_per_request`) covers what a request adds: a
transaction moving every limited asset adds one entry per asset, the fee, and its request time; a denial adds
its request and denial times. With one entry too few left the request is refused ``ledger_full`` before it is
judged, and the ledger is unchanged."""

from __future__ import annotations

import asyncio

import pytest
import spl.token.instructions as tok
import spl.token.models as spl
from solders.compute_budget import set_compute_unit_limit, set_compute_unit_price
from solders.message import Message
from solders.pubkey import Pubkey
from solders.system_program import TransferParams, transfer
from solders.transaction import Transaction
from spl.token.constants import TOKEN_PROGRAM_ID

from enclave_app.errors import EnclaveRequestError
from enclave_app.signer import ledger_entries_per_request
from policies.model import FEES
from tests.enclave.sign_requests import BLOCKHASH, WALLET, ready_wallet, spent, transfer_tx, verdict
from tests.support.chain import ata_address
from tests.support.enclave_world import EnclaveWorld, serving
from tests.support.policies import BLOCKED, EXAMPLE_MINT, MERCHANT


def sol_and_token_tx(agent: Pubkey) -> bytes:
    """0.001 SOL and 0.01 of the example mint to the merchant: every asset the example policy limits."""
    ixs = [
        set_compute_unit_price(1_000),
        set_compute_unit_limit(50_000),
        transfer(TransferParams(from_pubkey=agent, to_pubkey=MERCHANT, lamports=1_000_000)),
        tok.transfer_checked(spl.TransferCheckedParams(
            program_id=TOKEN_PROGRAM_ID, source=ata_address(agent, EXAMPLE_MINT), mint=EXAMPLE_MINT,
            dest=ata_address(MERCHANT, EXAMPLE_MINT), owner=agent, amount=10_000, decimals=6)),
    ]  # fmt: skip
    return bytes(Transaction.new_unsigned(Message.new_with_blockhash(ixs, agent, BLOCKHASH)))


def test_the_room_asked_covers_what_a_request_adds(world: EnclaveWorld, monkeypatch: pytest.MonkeyPatch) -> None:
    async def run() -> None:
        boot = world.boot()
        async with serving(boot) as (client, _):
            agent = await ready_wallet(world, client)
            wallet = boot.enclave.wallet(WALLET)
            policy = wallet.installed.policy  # type: ignore[union-attr]
            needed = ledger_entries_per_request(policy)

            # The worst a signed transaction adds: its request time and one amount per limited asset and the fee.
            before = wallet.ledger.held
            answer = await client.sign_transaction(WALLET, sol_and_token_tx(agent), spent=spent())
            assert verdict(answer) == "allow"
            assets = {r["asset"] for r in answer.decision["reservations"]}
            assert assets == {"SOL", str(EXAMPLE_MINT), FEES} and len(assets) == len(policy.rules.limits) + 1
            assert wallet.ledger.held - before == 1 + len(assets) <= needed

            # A denial adds its request and denial times.
            before = wallet.ledger.held
            denied = await client.sign_transaction(WALLET, transfer_tx(agent, 1_000, to=BLOCKED), spent=spent())
            assert verdict(denied) == "deny"
            assert wallet.ledger.held - before == 2 <= needed

            # One entry short of the room: refused before judging, nothing recorded.
            monkeypatch.setattr("enclave_app.ledger.MAX_LEDGER_ENTRIES", wallet.ledger.held + needed - 1)
            before = wallet.ledger.held
            with pytest.raises(EnclaveRequestError) as refused:
                await client.sign_transaction(WALLET, sol_and_token_tx(agent), spent=spent())
            assert refused.value.code == "ledger_full" and wallet.ledger.held == before

            # Exactly the room: signed, and the ledger stays within its bound.
            monkeypatch.setattr("enclave_app.ledger.MAX_LEDGER_ENTRIES", wallet.ledger.held + needed)
            answer = await client.sign_transaction(WALLET, sol_and_token_tx(agent), spent=spent())
            assert verdict(answer) == "allow" and wallet.ledger.held == before + 1 + len(assets)

    asyncio.run(run())
