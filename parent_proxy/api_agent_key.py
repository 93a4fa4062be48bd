"""Owner routes for agent-key rotation (DESIGN.md section 3; the enclave's side is `enclave_app.rotation`).

    GET  /v1/wallets/{id}/agent-key            the agent key, the candidate (if any), the retired keys
    POST /v1/wallets/{id}/agent-key/candidate  step 1: the enclave makes and seals a candidate; the store keeps it
    POST /v1/wallets/{id}/agent-key/rotation   step 2: the current agent key co-signs the Squads membership change
    POST /v1/wallets/{id}/agent-key/switch     step 3: once the change is on chain, the wallet signs with the candidate

Every route is owner-authenticated (`parent_proxy.owner_route.OwnerRoute`); steps 2 and 3 also carry the owner's order
(`policies.orders`, purposes ``agent-key-rotation`` / ``agent-key-switch``), checked here first and again by the
enclave. Rotation exists only for wallets whose installed policy declares a Squads multisig.

Safety rules, each because a mistake here could strand the wallet's funds (a 2-of-2 multisig needs the agent key
that is a member on chain):

- One candidate per wallet, never replaced or dropped by the API: once its key may be a member on chain, its blob
  must stay. Asking again while one exists is 409 and names it (`GET .../agent-key` shows it too).
- The switch happens only when the chain adapter shows the multisig with the candidate as a member and the old key
  no longer one (409 otherwise: the switch would leave the wallet signing with a key the multisig does not know),
  and no spending limit of the multisig naming the old key (409: the new key could not use it, and where Squads'
  ``spending_limit_use`` checks only the limit's own members the retired key could go on spending through it). A
  multisig the chain answers does not exist is 409 ``multisig_nonconforming`` with the failed ``multisig.exists``
  check, as at policy install (`parent_proxy.multisig_onchain`); only a chain that cannot be read is 503.
- The enclave switches first, then the store (key, blob, retired old key, audit record: one transaction). If the
  store write fails the owner repeats the switch: the enclave answers the same and the store catches up. The old
  key's blob is kept as a retired key, never deleted. A proxy that did not send the first switch (restarted since,
  or another process) finds the enclave holding the wallet with other keys than the stored ones when it loads the
  wallet (`enclave_relay.HeldWithOtherKeys`); for a switch order naming the stored key and the stored candidate it
  sends the order all the same (`_send_switch`): the enclave decides, answering the same only if it holds the
  wallet with that candidate already, and its answer is checked as any switch's.
"""

from __future__ import annotations

import base64
import hashlib
import logging
from collections.abc import Callable
from typing import Any, NoReturn, TypeVar

from fastapi import APIRouter, Request
from solders.pubkey import Pubkey
from solders.signature import Signature

from enclave_app.protocol import AgentKeyResponse
from parent_proxy.agent_key_receipts import ExpectedAgentKey
from parent_proxy.api_agent import services_of
from parent_proxy.api_errors import ApiError, Code, owner_document_refused
from parent_proxy.attestation import OptionalNonceQuery, attest
from parent_proxy.chain import AccountNotFound, ChainError
from parent_proxy.clock import read_clock
from parent_proxy.enclave_relay import HeldWithOtherKeys, signed_by
from parent_proxy.multisig_conformance import missing_multisig
from parent_proxy.multisig_onchain import nonconforming
from parent_proxy.owner_route import OwnerRoute, WalletId, assert_wallet, envelope_bytes, run_store, verified_owner
from parent_proxy.schemas import (
    AgentKeyCandidateView,
    AgentKeyReceipt,
    AgentKeyRotationBody,
    AgentKeyRotationSigned,
    AgentKeyStatus,
    AgentKeySwitched,
    EnvelopeBody,
    RetiredAgentKeyView,
    decode_base64,
)
from parent_proxy.sealed_copies import keep_sealed_copy
from parent_proxy.services import Services
from parent_proxy.sign_parts import verified_policy
from parent_proxy.squads_multisig_account import PERMISSION_VOTE
from parent_proxy.store.model import AgentKeyCandidate, Wallet
from parent_proxy.store.state_changes import SetAgentKeyCandidate, SwitchAgentKey
from policies.errors import PolicyEngineError
from policies.orders import AgentKeyOrder, check_rotation_order, check_switch_order
from policies.transaction import decode_transaction

T = TypeVar("T")

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/v1/wallets", tags=["owner"], route_class=OwnerRoute)


def _key(data: bytes) -> str:
    return str(Pubkey.from_bytes(data))


def _receipt(answer: Any) -> AgentKeyReceipt:
    return AgentKeyReceipt(
        receipt=base64.b64encode(answer.receipt).decode(), signature=str(Signature.from_bytes(answer.receipt_signature))
    )


def _audit_failure(services: Services, expected: ExpectedAgentKey, step: str, error: str) -> None:
    """The ``agent_key.failed`` record of an enclave answer the proxy refused (never raises)."""
    payload = {"step": step, "error": error, "agent_public_key": _key(expected.agent_public_key),
               "new_agent_public_key": _key(expected.new_agent_public_key)}  # fmt: skip
    services.audit_safely("agent_key.failed", payload, wallet_id=expected.wallet_id)


async def _refuse_answer(services: Services, expected: ExpectedAgentKey, step: str, message: str) -> NoReturn:
    """503 for an enclave answer that contradicts the request, recorded like a receipt that does not check."""
    await services.run(_audit_failure, services, expected, step, Code.ENCLAVE_UNAVAILABLE.value)
    raise ApiError(Code.ENCLAVE_UNAVAILABLE, message)


async def _record_checked(
    services: Services, answer: Any, expected: ExpectedAgentKey, step: str, record: Callable[[], T]
) -> T:
    """``record()`` once the answer's agent-key receipt verifies under the attested session key in force and states
    ``expected`` (`parent_proxy.enclave_sessions`); else 503 and an ``agent_key.failed`` record naming the step."""
    return await services.sessions.record_checked(
        services, answer.receipt, answer.receipt_signature, expected, record=lambda _: record(),
        on_failure=lambda error: _audit_failure(services, expected, step, error),
    )  # fmt: skip


def _multisig(services: Services, wallet: Wallet) -> Pubkey:
    """The multisig the wallet's installed policy declares; 403 ``no_policy`` without a policy, or with a stored one
    that no longer verifies (logged, as the sign path answers it: `sign_parts.verified_policy`); 409 without one."""
    policy = verified_policy(services, wallet)
    if policy is None:
        raise ApiError(Code.NO_POLICY, "the wallet has no policy: rotation needs its declared Squads multisig")
    if policy.rules.squads_multisig is None:
        raise ApiError(Code.CONFLICT, "the wallet's policy declares no Squads multisig: rotation is for multisig "
                       "wallets (make a new wallet instead)")  # fmt: skip
    return policy.rules.squads_multisig


def _candidate(services: Services, wallet: Wallet) -> AgentKeyCandidate:
    candidate = services.store.get_agent_key_candidate(wallet.wallet_id)
    if candidate is None:
        raise ApiError(Code.CONFLICT, "the wallet has no candidate agent key: ask for one first")
    return candidate


def _order_keys(order: AgentKeyOrder, wallet: Wallet, candidate: AgentKeyCandidate) -> None:
    """A signed order for another agent key or candidate than the wallet's now (signed before a switch or a new
    candidate, say): 409, as any request the wallet's state has moved past."""
    if bytes(order.agent) != wallet.agent_pubkey:
        raise ApiError(Code.CONFLICT, "the order replaces another agent key than the wallet's")
    if bytes(order.new_agent) != candidate.candidate_pubkey:
        raise ApiError(Code.CONFLICT, "the order names another key than the wallet's candidate")


@router.get("/{wallet_id}/agent-key", response_model=AgentKeyStatus)
async def agent_key_status(wallet_id: WalletId, request: Request) -> AgentKeyStatus:
    """The wallet's agent key, its candidate (if a rotation is under way) and the keys earlier switches retired."""
    services = services_of(request)
    assert_wallet(verified_owner(request))

    def read() -> AgentKeyStatus:
        candidate = services.store.get_agent_key_candidate(wallet_id)
        retired = services.store.retired_agent_keys(wallet_id)
        return AgentKeyStatus(
            wallet_id=wallet_id, agent_public_key=_key(services.store.get_wallet(wallet_id).agent_pubkey),
            candidate_public_key=None if candidate is None else _key(candidate.candidate_pubkey),
            retired=[RetiredAgentKeyView(agent_public_key=_key(r.agent_pubkey), retired_at=r.retired_at)
                     for r in retired],
        )  # fmt: skip

    status: AgentKeyStatus = await run_store(services, read)
    return status


@router.post("/{wallet_id}/agent-key/candidate", status_code=201, response_model=AgentKeyCandidateView)
async def prepare_candidate(
    wallet_id: WalletId, request: Request, nonce: OptionalNonceQuery = None
) -> AgentKeyCandidateView:
    """Step 1: the enclave makes a candidate agent key and seals it; the proxy keeps it (one per wallet). With
    ``?nonce=``, the answer carries the attestation of the enclave that made it (the receipt's key)."""
    services = services_of(request)
    wallet = assert_wallet(verified_owner(request))
    _multisig(services, wallet)
    held = await run_store(services, services.store.get_agent_key_candidate, wallet_id)
    if held is not None:
        raise ApiError(Code.CONFLICT, f"the wallet already has a candidate agent key ({_key(held.candidate_pubkey)}): "
                       "finish its rotation")  # fmt: skip
    # This host's enclave, before its key; counted in the owner key's own bucket (anonymous callers cannot empty it).
    attestation = None if nonce is None else await attest(services, nonce, owner=wallet.owner_pubkey)
    await services.relay.ensure_wallet(wallet)
    answer: AgentKeyResponse = await services.relay.prepare_agent_key(wallet_id)
    expected = ExpectedAgentKey("agent_key_candidate", wallet_id, wallet.agent_pubkey, answer.new_agent_public_key,
                                wallet.owner_pubkey)  # fmt: skip
    if answer.wallet_id != wallet_id or answer.agent_public_key != wallet.agent_pubkey:
        await _refuse_answer(services, expected, "candidate",
                             "the enclave made a candidate for another agent key or wallet")  # fmt: skip
    if answer.sealed_blob is None:
        await _refuse_answer(services, expected, "candidate", "the enclave answered a candidate without its sealed key")
    # Its copy (data bucket or sealed-keys directory) first (`parent_proxy.sealed_copies`): refused, nothing kept (503).
    await keep_sealed_copy(services, wallet_id, answer.new_agent_public_key, answer.sealed_blob)
    candidate = AgentKeyCandidate(wallet_id, wallet.agent_pubkey, answer.new_agent_public_key, answer.sealed_blob,
                                  read_clock(services.clock))  # fmt: skip
    receipt = _receipt(answer)

    def persist() -> None:
        payload = {"agent_public_key": _key(wallet.agent_pubkey),
                   "candidate_public_key": _key(candidate.candidate_pubkey),
                   "owner_public_key": _key(wallet.owner_pubkey), "receipt": receipt.receipt,
                   "receipt_signature": receipt.signature}  # fmt: skip
        services.audit.append("agent_key.candidate", payload, wallet_id=wallet_id,
                              changes=[SetAgentKeyCandidate(candidate)])  # fmt: skip

    await _record_checked(services, answer, expected, "candidate", persist)
    return AgentKeyCandidateView(wallet_id=wallet_id, agent_public_key=_key(wallet.agent_pubkey),
                                 candidate_public_key=_key(candidate.candidate_pubkey), receipt=receipt,
                                 attestation=attestation)  # fmt: skip


@router.post("/{wallet_id}/agent-key/rotation", response_model=AgentKeyRotationSigned)
async def cosign_rotation(wallet_id: WalletId, body: AgentKeyRotationBody, request: Request) -> AgentKeyRotationSigned:
    """Step 2: the current agent key co-signs the Squads membership change the owner's order names."""
    services = services_of(request)
    wallet = assert_wallet(verified_owner(request))
    _multisig(services, wallet)
    raw = decode_base64("transaction", body.transaction)
    envelope = envelope_bytes(EnvelopeBody(envelope=body.envelope), "rotation order")
    try:
        message_hash = hashlib.sha256(decode_transaction(raw).message_bytes).digest()
    except PolicyEngineError as exc:
        raise ApiError(Code.INVALID_REQUEST, f"transaction: {exc}") from exc
    candidate: AgentKeyCandidate = await run_store(services, _candidate, services, wallet)
    try:
        order = check_rotation_order(envelope, owner=Pubkey.from_bytes(wallet.owner_pubkey), wallet_id=wallet_id,
                                     message_hash=message_hash, now=read_clock(services.clock))  # fmt: skip
    except PolicyEngineError as exc:
        raise owner_document_refused("rotation order", exc) from exc
    _order_keys(order, wallet, candidate)
    await services.relay.ensure_wallet(wallet)
    answer = await services.relay.sign_agent_key_rotation(
        wallet_id, transaction=raw, order=envelope, candidate_sealed_blob=candidate.sealed_key
    )
    expected = ExpectedAgentKey("agent_key_rotation", wallet_id, wallet.agent_pubkey, candidate.candidate_pubkey,
                                wallet.owner_pubkey, message_hash)  # fmt: skip
    if not signed_by(answer.signed_transaction, answer.signature, raw, wallet.agent_pubkey):
        await _refuse_answer(services, expected, "rotation", "the enclave's co-signature does not check")
    receipt = _receipt(answer)
    signature = str(Signature.from_bytes(answer.signature))

    def persist() -> None:
        payload = {"message_sha256": message_hash.hex(), "agent_public_key": _key(wallet.agent_pubkey),
                   "candidate_public_key": _key(candidate.candidate_pubkey),
                   "owner_public_key": _key(wallet.owner_pubkey), "signature": signature,
                   "receipt": receipt.receipt, "receipt_signature": receipt.signature}  # fmt: skip
        services.audit.append("agent_key.rotation_signed", payload, wallet_id=wallet_id)

    await _record_checked(services, answer, expected, "rotation", persist)
    return AgentKeyRotationSigned(
        wallet_id=wallet_id, message_sha256=message_hash.hex(), signature=signature,
        signed_transaction=base64.b64encode(answer.signed_transaction).decode(), receipt=receipt,
    )  # fmt: skip


async def _on_chain(services: Services, multisig: Pubkey, old: bytes, new: bytes) -> None:
    """409 unless the chain shows the multisig with ``new`` as a voting member and without ``old``, and no spending
    limit of the multisig naming ``old`` (``multisig_nonconforming`` when there is no multisig); 503 when the chain
    cannot be read."""
    try:
        account = await services.chain.multisig_account(multisig)
    except AccountNotFound as exc:  # an answer about the chain, not a failure to read it: retrying changes nothing
        refused = f"switch refused: the multisig {multisig} the policy declares does not exist on chain"
        raise nonconforming(missing_multisig(multisig), refused) from exc
    except ChainError as exc:
        raise ApiError(Code.CHAIN_UNAVAILABLE, f"the multisig could not be read: {exc}") from exc
    member = account.member(Pubkey.from_bytes(new))
    if member is None or not member.has(PERMISSION_VOTE) or account.member(Pubkey.from_bytes(old)) is not None:
        raise ApiError(Code.CONFLICT, "the multisig on chain does not show the membership change yet (candidate a "
                       "member, old agent key removed): switch after the rotation transaction has landed")  # fmt: skip
    try:
        limits = await services.chain.spending_limits(multisig)
    except ChainError as exc:
        raise ApiError(Code.CHAIN_UNAVAILABLE, f"the multisig's spending limits could not be read: {exc}") from exc
    naming = [str(limit.address) for limit in limits if limit.names(Pubkey.from_bytes(old))]
    if naming:
        message = (
            f"spending limit(s) {', '.join(naming)} still name the old agent key (the new key cannot use them, and "
            "some Squads versions would let the old key go on spending through them): replace them in the rotation "
            "transaction (waiaas owner rotation-transaction does)"
        )
        raise ApiError(Code.CONFLICT, message)


async def _send_switch(
    services: Services, wallet: Wallet, candidate: AgentKeyCandidate, envelope: bytes
) -> AgentKeyResponse:
    """Load the stored wallet and send the owner's switch order (checked by the caller to name the stored agent key
    and the stored candidate). If the enclave holds the wallet with other keys than the stored ones, the order is
    sent all the same: that is how a switch the enclave made and the store did not record looks to a proxy process
    that did not send it. The enclave decides: it answers the same only if it holds the wallet with that candidate
    already (`enclave_app.rotation.switch_agent_key`); any refusal stays the refusal of the load (503), nothing
    changed. The relay records nothing as loaded on this path (`EnclaveRelay.switched`)."""
    send = services.relay.switch_agent_key
    try:
        await services.relay.ensure_wallet(wallet)
    except HeldWithOtherKeys as held:
        logger.warning("sending the switch order of wallet %s to the enclave that holds it with other keys (a switch "
                       "the store did not record?)", wallet.wallet_id)  # fmt: skip
        try:
            return await send(wallet.wallet_id, order=envelope, candidate_sealed_blob=candidate.sealed_key)
        except ApiError as refused:
            logger.error("the enclave refused the switch order of wallet %s it holds with other keys: %s",
                         wallet.wallet_id, refused.code.value)  # fmt: skip
            raise held from refused
    return await send(wallet.wallet_id, order=envelope, candidate_sealed_blob=candidate.sealed_key)


@router.post("/{wallet_id}/agent-key/switch", response_model=AgentKeySwitched)
async def switch(wallet_id: WalletId, body: EnvelopeBody, request: Request) -> AgentKeySwitched:
    """Step 3: the wallet signs with the candidate from now on (policy, freeze, limits and tokens stay)."""
    services = services_of(request)
    wallet = assert_wallet(verified_owner(request))
    multisig = _multisig(services, wallet)
    envelope = envelope_bytes(body, "switch order")
    candidate: AgentKeyCandidate = await run_store(services, _candidate, services, wallet)
    try:
        order = check_switch_order(envelope, owner=Pubkey.from_bytes(wallet.owner_pubkey), wallet_id=wallet_id,
                                   now=read_clock(services.clock))  # fmt: skip
    except PolicyEngineError as exc:
        raise owner_document_refused("switch order", exc) from exc
    _order_keys(order, wallet, candidate)
    await _on_chain(services, multisig, wallet.agent_pubkey, candidate.candidate_pubkey)
    answer = await _send_switch(services, wallet, candidate, envelope)
    expected = ExpectedAgentKey("agent_key_switch", wallet_id, wallet.agent_pubkey, candidate.candidate_pubkey,
                                wallet.owner_pubkey)  # fmt: skip
    keys = (answer.wallet_id, answer.agent_public_key, answer.new_agent_public_key)
    if keys != (wallet_id, wallet.agent_pubkey, candidate.candidate_pubkey):
        await _refuse_answer(services, expected, "switch", "the enclave switched other keys")
    receipt = _receipt(answer)
    now = read_clock(services.clock)

    def persist() -> Wallet:
        new_key = _key(candidate.candidate_pubkey)
        payload = {"previous_agent_public_key": _key(wallet.agent_pubkey), "agent_public_key": new_key,
                   "owner_public_key": _key(wallet.owner_pubkey), "order_sha256": hashlib.sha256(envelope).hexdigest(),
                   "receipt": receipt.receipt, "receipt_signature": receipt.signature}  # fmt: skip
        webhook = services.webhook_item(wallet_id, "agent_key.switched", {"agent_public_key": new_key})
        change = SwitchAgentKey(wallet_id, wallet.agent_pubkey, candidate.candidate_pubkey, now)
        services.audit.append("agent_key.switched", payload, wallet_id=wallet_id, webhook=webhook, changes=[change])
        return services.store.get_wallet(wallet_id)

    switched: Wallet = await _record_checked(services, answer, expected, "switch", persist)
    services.relay.switched(switched)
    return AgentKeySwitched(wallet_id=wallet_id, agent_public_key=_key(candidate.candidate_pubkey),
                            previous_agent_public_key=_key(wallet.agent_pubkey), receipt=receipt)  # fmt: skip
