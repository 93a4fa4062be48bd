"""What enclave tests send: a wallet id, spent reports, SOL transfers; a provisioned wallet, a verdict."""

from __future__ import annotations

from solders.compute_budget import set_compute_unit_limit, set_compute_unit_price
from solders.hash import Hash
from solders.message import Message
from solders.pubkey import Pubkey
from solders.system_program import TransferParams, transfer
from solders.transaction import Transaction

from enclave_app.client import EnclaveClient
from enclave_app.protocol import SpentEntry, TransactionDecisionResponse
from policies.model import FEES
from tests.support.enclave_world import EnclaveWorld
from tests.support.policies import EXAMPLE_MINT, MERCHANT

WALLET = "wallet-7f3a"
DAY = 86400
BLOCKHASH = Hash.new_unique()


def spent(sol: int = 0, token: int = 0, fees: int = 0) -> tuple[SpentEntry, ...]:
    """What the parent reports for the example policy's windows."""
    return (SpentEntry("SOL", DAY, sol), SpentEntry(str(EXAMPLE_MINT), DAY, token), SpentEntry(FEES, DAY, fees))


def transfer_tx(agent: Pubkey, lamports: int, *, to: Pubkey = MERCHANT, blockhash: Hash = BLOCKHASH) -> bytes:
    ixs = [
        set_compute_unit_price(1_000),
        set_compute_unit_limit(50_000),
        transfer(TransferParams(from_pubkey=agent, to_pubkey=to, lamports=lamports)),
    ]
    return bytes(Transaction.new_unsigned(Message.new_with_blockhash(ixs, agent, blockhash)))


async def ready_wallet(world: EnclaveWorld, client: EnclaveClient, wallet: str = WALLET) -> Pubkey:
    provisioned = await client.provision_wallet(wallet, world.owner_public)
    await client.install_policy(wallet, world.policy(wallet))
    return Pubkey.from_bytes(provisioned.agent_public_key)


def verdict(answer: TransactionDecisionResponse) -> str:
    return str(answer.decision["verdict"])
