"""``POST /v1/wallets/{wallet_id}/orders/receipts?nonce=HEX``: what ``waiaas owner verify-order`` needs to check the
enclave of the host that answers, in one exchange with that host.

With several hosts over one store (`cdk.json` ``waiaas:hostCount``), an owner order goes to the host the load
balancer picks, and a later ``GET /v1/attestation`` may come from another host, whose session key did not sign the
order's receipt. This route answers from one host: it brings the wallet's stored owner order and policy to this
host's enclave first (`EnclaveRelay.ensure_wallet`, which sends what that enclave session is not known to hold, its
receipts checked and recorded: `parent_proxy.relay_orders`), then returns that session's receipts of the wallet's
last freeze or unfreeze order and of its policy (`parent_proxy.order_receipts.receipt_fields`; null when the
session has none of the stored one) and the enclave's attestation over the owner's nonce, made after them. So asking
a host also updates it; asking again (the load balancer picks again) checks the others. An enclave that restarted
since the proxy last checked one of its receipts (its status names another session key) has everything loaded again
first, so the answer shows the running boot's receipts.

A POST, not a GET: it may send orders to the enclave, and the app runs only requests other than GET and HEAD to
their end when the caller goes away (`parent_proxy.completions`), so an order applied is always recorded.
"""

from __future__ import annotations

from fastapi import APIRouter, Request

from parent_proxy.api_agent import services_of
from parent_proxy.attestation import NonceQuery, attest
from parent_proxy.order_receipts import receipt_fields
from parent_proxy.owner_route import OwnerRoute, WalletId, assert_wallet, verified_owner
from parent_proxy.schemas import HostOrderReceipt, HostOrderReceipts

router = APIRouter(prefix="/v1/wallets", tags=["owner"], route_class=OwnerRoute)


@router.post("/{wallet_id}/orders/receipts", response_model=HostOrderReceipts)
async def order_receipts(wallet_id: WalletId, nonce: NonceQuery, request: Request) -> HostOrderReceipts:
    """This host's enclave receipts of the wallet's last owner order and policy, and its attestation over ``nonce``
    (the module docstring): verify them with ``waiaas owner verify-order``. 503 when the enclave cannot be brought
    up to date (nothing is shown then), 429 over the owner key's attestation limit."""
    services = services_of(request)
    wallet = assert_wallet(verified_owner(request))
    status = await services.relay.ping()
    if status.session_public_key != services.sessions.current:
        # Another boot than the one whose receipts were last checked (a restart nothing has noticed yet, a frozen
        # wallet's requests never reaching the enclave): what the relay kept is of the old boot. Load again.
        services.relay.forget()
    await services.relay.ensure_wallet(wallet)
    order = services.relay.applied_order(wallet_id)
    if order is not None and order.answer.order_sequence != wallet.order_sequence:
        order = None  # a receipt of an earlier order: not the stored one (a newer one is on its way)
    policy = services.relay.installed_answer(wallet_id)
    if policy is not None and policy.answer.sequence != wallet.policy_sequence:
        policy = None
    # After the receipts: the session that holds them, unless it restarted. Counted in the owner key's own bucket
    # (`parent_proxy.auth.owner_attestation_bucket`): anonymous callers cannot hold the owner at 429.
    attestation = await attest(services, nonce, owner=wallet.owner_pubkey)
    return HostOrderReceipts(
        wallet_id=wallet_id,
        frozen=wallet.frozen,
        order=HostOrderReceipt(sequence=wallet.order_sequence, **receipt_fields(services, order)),
        policy=HostOrderReceipt(sequence=wallet.policy_sequence, **receipt_fields(services, policy)),
        attestation=attestation,
    )
