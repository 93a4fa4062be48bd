"""The enclave's authoritative check (check 2) freezes a CreateAccount whose new account is the agent key, as the
policy engine does (`tests/policies/test_attack_create_account.py` shows the effect on chain).

Before: the instruction was decoded only as the funder's payment, the example policy allowed it, and the enclave
signed: the agent's address became an account of the attacker's program (found in the design audit).
"""

from __future__ import annotations

import asyncio

from solders.hash import Hash
from solders.keypair import Keypair
from solders.message import Message
from solders.pubkey import Pubkey
from solders.system_program import CreateAccountParams, create_account
from solders.transaction import Transaction

from enclave_app.protocol import ErrorCode, ErrorResponse, SignTransactionRequest, TransactionDecisionResponse
from tests.enclave.sign_requests import spent, transfer_tx
from tests.support.policy_handler import AGENT, WALLET, policy_handler

ATTACKER = Keypair().pubkey()
PROGRAM = Pubkey.from_string("9xQeWvG816bUx9EPjHmaT23yvVM2ZWbrrpZb9PusVFin")


def test_create_account_onto_the_agent_key_freezes_the_wallet_unsigned() -> None:
    handler = policy_handler()
    ix = create_account(
        CreateAccountParams(from_pubkey=ATTACKER, to_pubkey=AGENT, lamports=10_000_000, space=165, owner=PROGRAM)
    )
    raw = bytes(Transaction.new_unsigned(Message.new_with_blockhash([ix], ATTACKER, Hash.new_unique())))
    answer = asyncio.run(handler.handle(SignTransactionRequest(WALLET, raw, (), spent(), 0, 0, None)))
    assert isinstance(answer, TransactionDecisionResponse), answer
    assert answer.signature is None and answer.signed_transaction is None
    assert answer.decision["verdict"] == "freeze"
    assert [(r["rule"], r["seen"]) for r in answer.decision["reasons"]] == [("freeze.authority_change", str(AGENT))]
    # The wallet is frozen: even an allowed payment is refused now.
    after = asyncio.run(handler.handle(SignTransactionRequest(WALLET, transfer_tx(AGENT, 1_000), (), spent(), 0, 0)))
    assert isinstance(after, ErrorResponse) and after.code is ErrorCode.WALLET_FROZEN
