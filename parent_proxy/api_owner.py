"""Owner routes. Every request carries an owner request signature (`parent_proxy.owner_auth`); policies, approvals
and freeze orders additionally carry their own signed document (`policies.signing`, `policies.orders`).

Every route authenticates first (`parent_proxy.owner_route.OwnerRoute`): the owner request signature is verified
over the raw body before FastAPI parses or validates the body, so a caller who is not the owner gets 401 whatever
the body.
"""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Annotated

from fastapi import APIRouter, Path, Request
from fastapi.responses import JSONResponse, Response
from solders.pubkey import Pubkey

from parent_proxy.api_agent import fetch_tables, services_of
from parent_proxy.api_errors import ApiError, Code, owner_document_refused
from parent_proxy.approvals import ApprovalFlow
from parent_proxy.attestation import OptionalNonceQuery, attest
from parent_proxy.clock import read_clock
from parent_proxy.errors import AlreadyRevoked
from parent_proxy.multisig_onchain import check_install
from parent_proxy.order_receipts import receipt_fields
from parent_proxy.owner_route import (
    OwnerRoute,
    WalletId,
    assert_wallet,
    envelope_bytes,
    run_store,
    verified_owner,
    verified_owner_key,
    wallet_or_none,
)
from parent_proxy.schemas import (
    ApprovalDecided,
    CreatedWallet,
    CreateWalletBody,
    EnvelopeBody,
    FreezeState,
    IssuedTokenView,
    PendingApprovalView,
    PolicyInstalled,
    WebhookBody,
    decode_base64,
)
from parent_proxy.sealed_copies import keep_sealed_copy
from parent_proxy.sign_flow import Answer, SignFlow
from parent_proxy.signer_secret import provision_checked
from parent_proxy.store.model import Wallet, WebhookConfig
from parent_proxy.store.state_changes import CreateWallet, InstallPolicy, RevokeToken, SetFrozen, SetWebhook, StoreToken
from parent_proxy.store.tokens import new_token
from parent_proxy.webhook_urls import redact_url
from policies.errors import PolicyEngineError
from policies.orders import check_freeze_order
from policies.signing import load_signed_policy

Id = Annotated[str, Path(pattern=r"^[A-Za-z0-9._:-]{1,128}$")]
NO_STORE = {"Cache-Control": "no-store"}

router = APIRouter(prefix="/v1/wallets", tags=["owner"], route_class=OwnerRoute)


@router.post("", status_code=201, response_model=CreatedWallet)
async def create_wallet(body: CreateWalletBody, request: Request, nonce: OptionalNonceQuery = None) -> CreatedWallet:
    """Create a wallet: the enclave generates the agent key and returns it sealed; the parent stores the blob. The
    answer carries the enclave's provisioning receipt (with ``?nonce=``, that enclave's attestation too): the owner
    verifies it before adding the agent key on chain. Only an enclave session that opens the stored wallets makes
    one (503 otherwise: `parent_proxy.signer_secret`)."""
    services = services_of(request)
    signer = verified_owner_key(request)
    # Every input is checked before the enclave makes a key: nothing is provisioned for a request that fails.
    owner = _public_key("owner_public_key", body.owner_public_key)
    vault_key = None if body.vault_address is None else _public_key("vault_address", body.vault_address)
    if owner != signer:
        raise ApiError(Code.OWNER_SIGNATURE_INVALID, "the wallet's owner key must sign its creation")
    if await run_store(services, wallet_or_none, services, body.wallet_id) is not None:
        raise ApiError(Code.CONFLICT, "the wallet already exists")
    # This host's enclave, before its key; counted in the owner key's own bucket (anonymous callers cannot empty it).
    attestation = None if nonce is None else await attest(services, nonce, owner=bytes(owner))
    created = await provision_checked(services, body.wallet_id, bytes(owner))
    sealed = created.sealed_blob or b""
    vault = created.agent_public_key if vault_key is None else bytes(vault_key)
    wallet = Wallet(body.wallet_id, created.agent_public_key, bytes(owner), vault, sealed)

    def persist() -> None:  # the wallet and its record: one store transaction
        services.audit.append(
            "wallet.created", {"agent_public_key": str(Pubkey.from_bytes(created.agent_public_key)),
                               "owner_public_key": str(owner)}, wallet_id=body.wallet_id,
            changes=[CreateWallet(wallet)],
        )  # fmt: skip

    try:
        await keep_sealed_copy(services, body.wallet_id, created.agent_public_key, sealed)  # first: else nothing kept
        await run_store(services, persist)
    except Exception:
        # Not stored: the enclave drops the key it made, so the owner can send the creation again.
        await services.relay.discard_wallet(body.wallet_id, created.agent_public_key)
        raise
    return CreatedWallet(
        wallet_id=body.wallet_id,
        agent_public_key=str(Pubkey.from_bytes(created.agent_public_key)),
        vault_address=str(Pubkey.from_bytes(vault)),
        provision_receipt=_b64(created.receipt),
        provision_receipt_signature=_b64(created.receipt_signature),
        attestation=attestation,
    )


def _b64(data: bytes | None) -> str | None:
    return None if data is None else base64.b64encode(data).decode()


def _public_key(field: str, text: str) -> Pubkey:
    """A 32-byte base58 public key (the schema's pattern admits strings of other lengths), else 422."""
    try:
        return Pubkey.from_string(text)
    except ValueError as exc:
        raise ApiError(Code.INVALID_REQUEST, f"{field}: not a 32-byte base58 public key") from exc


@router.post("/{wallet_id}/tokens", status_code=201, response_model=IssuedTokenView)
async def issue_token(wallet_id: WalletId, request: Request) -> JSONResponse:
    """Issue an agent token bound to this wallet. The clear token is in this answer only."""
    services = services_of(request)
    verified_owner(request)

    def issue() -> IssuedTokenView:  # the token (its hash) and its record: one store transaction
        token_id, token, secret_hash = new_token()
        stored = StoreToken(token_id, wallet_id, secret_hash, read_clock(services.clock))
        services.audit.append("token.issued", {"token_id": token_id}, wallet_id=wallet_id, changes=[stored])
        return IssuedTokenView(token_id=token_id, token=token)

    view: IssuedTokenView = await run_store(services, issue)
    return JSONResponse(view.model_dump(), status_code=201, headers=NO_STORE)


@router.delete("/{wallet_id}/tokens/{token_id}", status_code=204)
async def revoke_token(wallet_id: WalletId, token_id: Id, request: Request) -> Response:
    """Revoke an agent token. Idempotent: a token revoked already is 204 again, and nothing is written."""
    services = services_of(request)
    verified_owner(request)

    def revoke() -> None:  # the revocation and its record: one store transaction
        # Only a token of the wallet in the path: another wallet's token is 404, as an unknown one.
        revoked = RevokeToken(token_id, wallet_id, read_clock(services.clock))
        try:
            services.audit.append("token.revoked", {"token_id": token_id}, wallet_id=wallet_id, changes=[revoked])
        except AlreadyRevoked:
            return  # the store refused the whole transaction: no second record, the first revocation stands

    await run_store(services, revoke)
    return Response(status_code=204)


@router.put("/{wallet_id}/policy", response_model=PolicyInstalled)
async def install_policy(wallet_id: WalletId, body: EnvelopeBody, request: Request) -> PolicyInstalled:
    """Install an owner-signed policy whose sequence is above the installed one; the enclave gets it too. A policy
    that declares a Squads multisig is installed only if the multisig on chain conforms to it (409
    ``multisig_nonconforming`` naming the failed checks; 503 ``chain_unavailable`` if the chain cannot be read); one
    that declares none is 422 ``invalid_request`` unless the proxy runs with ``WAIAAS_REQUIRE_MULTISIG=false`` and
    the enclave does not require a multisig either (``WAIAAS_ENCLAVE_REQUIRE_MULTISIG``, true in the enclave image;
    503 ``enclave_unavailable`` if the enclave cannot be asked)."""
    services = services_of(request)
    wallet = assert_wallet(verified_owner(request))
    envelope = envelope_bytes(body, "policy")
    try:
        policy = load_signed_policy(envelope, owner=Pubkey.from_bytes(wallet.owner_pubkey), wallet_id=wallet_id)
    except PolicyEngineError as exc:
        raise owner_document_refused("policy", exc) from exc
    now = read_clock(services.clock)
    if policy.expires_at is not None and now >= policy.expires_at:
        raise ApiError(Code.STALE_POLICY, f"the policy expired at {policy.expires_at} (Unix seconds)")
    # The multisig it declares, on chain, before anything is stored or sent (`parent_proxy.multisig_onchain`).
    await check_install(services, wallet, policy)

    def persist() -> Wallet:  # the policy and its record: one store transaction
        services.audit.append(
            "policy.installed",
            {"sequence": policy.sequence, "policy_sha256": hashlib.sha256(envelope).hexdigest()},
            wallet_id=wallet_id,
            changes=[InstallPolicy(wallet_id, envelope, policy.sequence)],
        )
        return services.store.get_wallet(wallet_id)

    updated: Wallet = await run_store(services, persist)
    services.relay.forget(wallet_id)
    applied = None
    try:
        await services.relay.ensure_wallet(updated)  # its order receipt checked and recorded (`order_receipts`)
        installed = True
        applied = services.relay.installed_answer(wallet_id)
    except ApiError:
        installed = False  # the next request installs it (the store holds the authoritative copy)
    if applied is not None and applied.answer.sequence != policy.sequence:
        applied = None  # a newer policy went in meanwhile: no receipt of this one to show
    return PolicyInstalled(
        wallet_id=wallet_id,
        sequence=policy.sequence,
        policy_sha256=hashlib.sha256(envelope).hexdigest(),
        enclave_installed=installed,
        **receipt_fields(services, applied),
    )


@router.get("/{wallet_id}/approvals", response_model=list[PendingApprovalView])
async def pending_approvals(wallet_id: WalletId, request: Request) -> list[PendingApprovalView]:
    """Pending approvals of the wallet, with the request each would sign."""
    services = services_of(request)
    verified_owner(request)
    approvals = await run_store(services, services.store.pending_approvals, wallet_id)
    views = []
    for approval in approvals:
        stored = json.loads(approval.request_payload)
        views.append(
            PendingApprovalView(
                approval_id=approval.approval_id,
                created_at=approval.created_at,
                request_sha256=hashlib.sha256(approval.request_payload).hexdigest(),
                request=stored,
            )
        )
    return views


@router.post("/{wallet_id}/approvals/{approval_id}/approve", response_model=ApprovalDecided)
async def approve(wallet_id: WalletId, approval_id: Id, body: EnvelopeBody, request: Request) -> JSONResponse:
    """Approve a pending request with a signed approval of its message: it is signed now (approval ceilings)."""
    services = services_of(request)
    verified_owner(request)
    flow = SignFlow(services)
    approvals = ApprovalFlow(services, flow)
    envelope = envelope_bytes(body, "approval")
    tables = await fetch_tables(services, await run_store(services, approvals.stored_tables, wallet_id, approval_id))
    pending = await run_store(services, approvals.prepare, wallet_id, approval_id, envelope, tables)
    answer = await flow.sign_prepared(pending.prepared, pending.transaction, tables, pending.prepared.submit)
    result = {"status": "signed", "approval_id": approval_id, "transaction": answer.body}
    return JSONResponse(result, status_code=200, headers=NO_STORE)


@router.post("/{wallet_id}/approvals/{approval_id}/reject", response_model=ApprovalDecided)
async def reject(wallet_id: WalletId, approval_id: Id, request: Request) -> JSONResponse:
    """Reject a pending request (the owner request signature is the decision)."""
    services = services_of(request)
    verified_owner(request)
    approvals = ApprovalFlow(services, SignFlow(services))
    answer: Answer = await run_store(services, approvals.reject, wallet_id, approval_id)
    return JSONResponse(answer.body, status_code=answer.status, headers=NO_STORE)


async def _freeze(wallet_id: str, body: EnvelopeBody, request: Request, frozen: bool) -> FreezeState:
    services = services_of(request)
    wallet = assert_wallet(verified_owner(request))
    envelope = envelope_bytes(body, "freeze order")
    try:
        sequence = check_freeze_order(
            envelope, freeze=frozen, owner=Pubkey.from_bytes(wallet.owner_pubkey), wallet_id=wallet_id,
            now=read_clock(services.clock),
        )  # fmt: skip
    except PolicyEngineError as exc:
        raise owner_document_refused("freeze order", exc) from exc
    reason = f"owner freeze order {sequence}" if frozen else None

    def persist() -> None:
        event = "wallet.frozen" if frozen else "wallet.unfrozen"
        webhook = services.webhook_item(wallet_id, event, {"sequence": sequence})  # a read, before any write
        payload = {"sequence": sequence, "order_sha256": hashlib.sha256(envelope).hexdigest()}
        change = SetFrozen(wallet_id, frozen, reason, order_sequence=sequence, order=envelope)  # above the last only
        services.audit.append(event, payload, wallet_id=wallet_id, webhook=webhook, changes=[change])  # one transaction

    await run_store(services, persist)
    # The proxy enforces the freeze from the store; the enclave is told too (it refuses on its own when it agrees),
    # and its order receipt is checked and recorded (`parent_proxy.order_receipts`) and shown to the owner.
    applied = None
    try:
        await services.relay.ensure_wallet(wallet)
        applied = await services.relay.set_frozen(wallet_id, frozen, envelope)
        acknowledged = True
    except ApiError:
        acknowledged = False
    return FreezeState(wallet_id=wallet_id, frozen=frozen, enclave_acknowledged=acknowledged, order_sequence=sequence,
                       **receipt_fields(services, applied))  # fmt: skip


@router.post("/{wallet_id}/freeze", response_model=FreezeState)
async def freeze(wallet_id: WalletId, body: EnvelopeBody, request: Request) -> FreezeState:
    """Freeze the wallet: every request is refused until an owner-signed unfreeze."""
    return await _freeze(wallet_id, body, request, True)


@router.post("/{wallet_id}/unfreeze", response_model=FreezeState)
async def unfreeze(wallet_id: WalletId, body: EnvelopeBody, request: Request) -> FreezeState:
    """Unfreeze the wallet (owner-signed order)."""
    return await _freeze(wallet_id, body, request, False)


@router.put("/{wallet_id}/webhook", status_code=204)
async def set_webhook(wallet_id: WalletId, body: WebhookBody, request: Request) -> Response:
    """Where the wallet's signed notifications go (the secret signs them; it is never returned)."""
    services = services_of(request)
    verified_owner(request)
    secret = decode_base64("secret", body.secret)

    def persist() -> None:  # the configuration and its record: one store transaction
        # The record says where notifications go, not the credential some receivers carry in the path or query.
        configured = SetWebhook(WebhookConfig(wallet_id, body.url, secret))
        services.audit.append("webhook.configured", {"url": redact_url(body.url)}, wallet_id=wallet_id,
                              changes=[configured])  # fmt: skip

    await run_store(services, persist)
    return Response(status_code=204)
