"""Owner route: does the wallet's Squads v4 multisig on chain conform to DESIGN.md section 10 and the signed policy?

    GET /v1/wallets/{id}/multisig   the report of `parent_proxy.multisig_conformance` (200 whether or not it
                                    conforms; ``conforms`` and each check say)

Owner-authenticated (`parent_proxy.owner_route.OwnerRoute`). 403 ``no_policy`` without a policy (or with a stored one
that no longer verifies); 409 when the policy declares no multisig. A multisig account that does not exist is a
report (200) with one failed ``multisig.exists`` check; 503 ``chain_unavailable`` when the multisig or its spending
limits cannot be read or are malformed (`parent_proxy.multisig_onchain`: nothing is reported as a pass that was
not read). A wallet created without a vault address is compared with its multisig's vault 0.

The parent is not trusted (DESIGN.md section 1): this report is what the parent's chain adapter read, a check for
the owner's setup and for monitoring, not a proof. An owner who doubts the parent reads the same accounts through
an RPC endpoint of their own: ``waiaas owner check-multisig --rpc-url`` (`parent_proxy.owner_multisig_cli`) makes
the same comparison, with the owner's copy of the signed policy, without the parent.
"""

from __future__ import annotations

from fastapi import APIRouter, Request

from parent_proxy.api_agent import services_of
from parent_proxy.api_errors import ApiError, Code
from parent_proxy.multisig_onchain import wallet_report
from parent_proxy.owner_route import OwnerRoute, WalletId, assert_wallet, verified_owner
from parent_proxy.schemas import MultisigConformance
from parent_proxy.sign_parts import verified_policy

router = APIRouter(prefix="/v1/wallets", tags=["owner"], route_class=OwnerRoute)


@router.get("/{wallet_id}/multisig", response_model=MultisigConformance)
async def multisig_conformance_report(wallet_id: WalletId, request: Request) -> MultisigConformance:
    """The wallet's multisig and spending limits on chain, checked against DESIGN.md section 10 and its policy. A
    multisig that does not exist is a report with one failed ``multisig.exists`` check; 503 ``chain_unavailable``
    only when the chain cannot be read."""
    services = services_of(request)
    wallet = assert_wallet(verified_owner(request))
    # 1. The owner-signed policy, verified again (`sign_parts.verified_policy`), and the multisig it declares.
    policy = verified_policy(services, wallet)
    if policy is None:
        raise ApiError(Code.NO_POLICY, "the wallet has no policy: nothing to compare the multisig with")
    multisig = policy.rules.squads_multisig
    if multisig is None:
        raise ApiError(Code.CONFLICT, "the wallet's policy declares no Squads multisig")
    # 2. The accounts, each checked by its reader, and the comparison: unreadable is a 503, never a pass; no
    #    account at the declared address is a failed multisig.exists.
    return MultisigConformance.of(wallet_id, await wallet_report(services, wallet, policy, multisig))
