"""Agent-key rotation inside the enclave (DESIGN.md section 3): three owner-driven steps, each with a receipt.

1. ``prepare_agent_key``: a candidate key is made from NSM randomness and sealed for the wallet (bound to the
   wallet, the candidate's public key and the owner key, like any agent key); the parent keeps the blob. Nothing
   else changes, and the enclave keeps no copy: the later steps bring the blob back and the enclave opens it, which
   proves the candidate is a key this enclave image made for this wallet and owner.
2. ``sign_agent_key_rotation``: the current agent key co-signs the one Solana transaction that changes the Squads
   multisig's membership, only when (a) the owner's order (purpose ``agent-key-rotation``) names this wallet, the
   current agent key, the candidate and the exact message, (b) the transaction is nothing but that change on the
   policy's multisig (`policies.rotation.check_rotation_transaction`), and (c) the candidate's sealed blob opens to
   the candidate's key. A refusal signs nothing.
3. ``switch_agent_key``: under the owner's order (purpose ``agent-key-switch``) and the candidate's blob, the wallet
   signs with the candidate from then on. The policy, the freeze flag, the order sequence and the ledger stay: a
   rotation is no way around a limit or a freeze. Repeating a switch that already happened answers the same.

All three need an installed policy declaring the wallet's Squads multisig (``rules.squads_multisig``): without one
the agent key's own address is the wallet, and a new key would strand what it holds. All three are served while the
wallet is frozen (rotation is how an owner recovers from a suspected agent-key
compromise) but never in the failed state. Slow work (sealing, opening) runs in a worker thread; what depends on
the wallet is checked again after it.
"""

from __future__ import annotations

import asyncio
import hashlib

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from solders.pubkey import Pubkey

from enclave_app.errors import StateError
from enclave_app.orders import refused_order
from enclave_app.protocol import (
    AgentKeyResponse,
    AgentKeyRotationResponse,
    ErrorCode,
    PrepareAgentKeyRequest,
    SignAgentKeyRotationRequest,
    SwitchAgentKeyRequest,
)
from enclave_app.receipts import AgentKeyReceipt
from enclave_app.sealing import SealBinding, Sealers, seal_for_request, unseal_for_request
from enclave_app.signer import sign_at_agent_slot
from enclave_app.state import Enclave, Wallet, fresh_seed
from policies.errors import PolicyEngineError
from policies.orders import AgentKeyOrder, check_rotation_order, check_switch_order
from policies.rotation import check_rotation_transaction
from policies.transaction import decode_transaction


def _receipt(
    enclave: Enclave, purpose: str, wallet: Wallet, agent: bytes, new_agent: bytes, *, message_hash: bytes | None
) -> tuple[bytes, bytes]:
    time_ms = int(enclave.clock().timestamp() * 1000)
    return enclave.session.sign_agent_key(
        AgentKeyReceipt(purpose, wallet.wallet_id, agent, new_agent, bytes(wallet.owner), message_hash, time_ms)
    )


async def prepare_agent_key(enclave: Enclave, sealers: Sealers, request: PrepareAgentKeyRequest) -> AgentKeyResponse:
    # 1. A loaded wallet (frozen or not) with a declared multisig; 2. a fresh key, sealed off the loop; 3. a receipt
    #    naming both keys.
    wallet = enclave.wallet(request.wallet_id)
    _declared_multisig(wallet)
    agent = bytes(wallet.agent)
    key = Ed25519PrivateKey.from_private_bytes(fresh_seed(enclave.nsm))
    candidate = key.public_key().public_bytes_raw()
    binding = SealBinding(wallet.wallet_id, candidate, bytes(wallet.owner))
    blob = await asyncio.to_thread(seal_for_request, sealers, request.aws_credentials, key, binding)
    _still_held(enclave, wallet, agent)
    receipt, signature = _receipt(enclave, "agent_key_candidate", wallet, agent, candidate, message_hash=None)
    return AgentKeyResponse(
        wallet_id=wallet.wallet_id, agent_public_key=agent, new_agent_public_key=candidate, sealed_blob=blob,
        receipt=receipt, receipt_signature=signature,
    )  # fmt: skip


async def sign_agent_key_rotation(
    enclave: Enclave, sealers: Sealers, request: SignAgentKeyRotationRequest
) -> AgentKeyRotationResponse:
    # 1. Wallet and its declared multisig.
    wallet = enclave.wallet(request.wallet_id)
    multisig = _declared_multisig(wallet)
    # 2. The transaction, decoded here.
    try:
        decoded = decode_transaction(request.transaction)
    except PolicyEngineError as exc:
        raise StateError(ErrorCode.ROTATION_INVALID, f"rotation transaction does not decode: {exc}") from exc
    message_hash = hashlib.sha256(decoded.message_bytes).digest()
    # 3. The owner's order for exactly this message, replacing exactly this wallet's current agent key.
    try:
        order = check_rotation_order(
            request.order, owner=wallet.owner, wallet_id=wallet.wallet_id, message_hash=message_hash,
            now=enclave.clock().timestamp(),
        )  # fmt: skip
    except PolicyEngineError as exc:
        raise refused_order("agent_key_rotation", exc) from exc
    _names_current_key(wallet, order)
    # 4. The transaction is that membership change and nothing else.
    try:
        check_rotation_transaction(decoded, multisig=multisig, agent=wallet.agent, new_agent=order.new_agent)
    except PolicyEngineError as exc:
        raise StateError(ErrorCode.ROTATION_INVALID, str(exc)) from exc  # "rotation transaction refused: ..."
    # 5. The candidate is this enclave's own: its blob opens to it (off the loop), then the wallet is re-checked.
    agent = bytes(wallet.agent)
    await _open_candidate(sealers, request, wallet, order)
    _still_held(enclave, wallet, agent)
    if _declared_multisig(wallet) != multisig:  # a policy installed meanwhile names another multisig
        raise StateError(ErrorCode.WRONG_STATE, "the wallet's multisig changed during the request; try again")
    # 6. Sign at the agent's slot; the receipt names the message.
    signature, signed = sign_at_agent_slot(wallet, request.transaction, decoded)
    receipt, receipt_signature = _receipt(
        enclave, "agent_key_rotation", wallet, agent, bytes(order.new_agent), message_hash=message_hash
    )
    return AgentKeyRotationResponse(
        signature=signature, signed_transaction=signed, receipt=receipt, receipt_signature=receipt_signature
    )


async def switch_agent_key(enclave: Enclave, sealers: Sealers, request: SwitchAgentKeyRequest) -> AgentKeyResponse:
    # 1. Wallet (with a declared multisig) and the owner's order.
    wallet = enclave.wallet(request.wallet_id)
    _declared_multisig(wallet)
    try:
        order = check_switch_order(
            request.order, owner=wallet.owner, wallet_id=wallet.wallet_id, now=enclave.clock().timestamp()
        )
    except PolicyEngineError as exc:
        raise refused_order("agent_key_switch", exc) from exc
    # 2. Done already (a retry after a lost answer): the same answer, nothing opened.
    if wallet.agent != order.new_agent:
        _names_current_key(wallet, order)
        # 3. Open the candidate (off the loop); then switch, unless a concurrent switch did it meanwhile.
        key = await _open_candidate(sealers, request, wallet, order)
        if enclave.wallet(wallet.wallet_id) is not wallet:
            raise StateError(ErrorCode.WRONG_STATE, "the wallet changed during the request; try again")
        if wallet.agent != order.new_agent:
            _names_current_key(wallet, order)
            enclave.switch_agent_key(wallet, key, order.new_agent)
    receipt, signature = _receipt(
        enclave, "agent_key_switch", wallet, bytes(order.agent), bytes(order.new_agent), message_hash=None
    )
    return AgentKeyResponse(
        wallet_id=wallet.wallet_id, agent_public_key=bytes(order.agent), new_agent_public_key=bytes(order.new_agent),
        sealed_blob=None, receipt=receipt, receipt_signature=signature,
    )  # fmt: skip


def _declared_multisig(wallet: Wallet) -> Pubkey:
    """The Squads multisig the wallet's installed policy declares: rotation exists only for such wallets (without
    one the agent key's own address holds the funds, and a new key would leave them behind)."""
    policy = wallet.policy
    if policy is None:
        raise StateError(ErrorCode.NO_POLICY, "no policy installed: it declares the wallet's Squads multisig")
    if policy.rules.squads_multisig is None:
        raise StateError(ErrorCode.ROTATION_INVALID, "the wallet's policy declares no Squads multisig")
    return policy.rules.squads_multisig


def _names_current_key(wallet: Wallet, order: AgentKeyOrder) -> None:
    if order.agent != wallet.agent:
        raise StateError(ErrorCode.ORDER_INVALID, "the order replaces another agent key than the wallet's")


async def _open_candidate(
    sealers: Sealers, request: SignAgentKeyRotationRequest | SwitchAgentKeyRequest, wallet: Wallet, order: AgentKeyOrder
) -> Ed25519PrivateKey:
    """The candidate's key from its blob, bound to this wallet, the candidate's public key and the owner key (a blob
    that does not open to exactly that key is refused as ``unseal_failed``)."""
    binding = SealBinding(wallet.wallet_id, bytes(order.new_agent), bytes(wallet.owner))
    return await asyncio.to_thread(
        unseal_for_request, sealers, request.aws_credentials, request.candidate_sealed_blob, binding
    )


def _still_held(enclave: Enclave, wallet: Wallet, agent: bytes) -> None:
    """After a worker-thread step: the enclave is alive and still holds this wallet with the agent key read before
    it (a concurrent load, switch or failure refuses the request instead of acting on a stale view)."""
    held = enclave.wallet(wallet.wallet_id)
    if held is not wallet or bytes(held.agent) != agent:
        raise StateError(ErrorCode.WRONG_STATE, "the wallet changed during the request; try again")
