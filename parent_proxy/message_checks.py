"""Check 1 for an off-chain message (`POST /v1/wallets/{id}/messages/sign`), in one worker-thread hop.

A message moves no funds, so only the policy's request rules apply (`policies.evaluate.evaluate_message`):
``offchain_messages`` must allow it, the policy must be in force, the time windows and the request rate apply, and
a denial that completes a burst freezes the wallet. Every message request is recorded for the rate rule, and every
refusal as a denial, as for transactions (a refusal's request, denial, freeze, audit record and webhook item in one
store transaction); the enclave applies the same rules again with its own counters (check 2).
"""

from __future__ import annotations

from parent_proxy.api_errors import ApiError, Code
from parent_proxy.clock import read_clock
from parent_proxy.services import Services
from parent_proxy.sign_parts import denial_changes, refusal, request_context
from parent_proxy.store.model import Wallet
from policies.decision import Verdict
from policies.errors import PolicyEngineError
from policies.evaluate import evaluate_message


def check_message(services: Services, wallet_id: str, audit: dict[str, str]) -> Wallet:
    """The wallet, if its policy lets the agent have a message signed now; else raise the `ApiError` (403)."""
    s = services
    now = read_clock(s.clock)
    wallet = s.store.get_wallet(wallet_id)
    if wallet.frozen:
        raise ApiError(Code.WALLET_FROZEN, "the wallet is frozen until the owner unfreezes it")
    try:
        policy = s.policy_for(wallet)
    except PolicyEngineError as exc:
        raise ApiError(Code.ENCLAVE_REFUSED, "the wallet's installed policy does not verify") from exc
    if policy is None:
        raise ApiError(Code.NO_POLICY, "the wallet has no installed policy")
    decision = evaluate_message(policy, request_context(s, wallet, policy, now))
    s.metrics.count("waiaas_decisions_total", verdict=decision.verdict.label, stage="proxy")
    if decision.verdict < Verdict.DENY:
        s.store.record_request(wallet_id, now)
        return wallet
    frozen = decision.verdict is Verdict.FREEZE
    payload = {**audit, "decision": decision.to_json()}
    webhook = s.webhook_item(wallet_id, "wallet.frozen" if frozen else "message.denied", payload)
    changes = denial_changes(wallet_id, now, "policy freeze trigger: freeze.denials" if frozen else None)
    event = "message.frozen" if frozen else "message.denied"
    s.audit.append(event, payload, wallet_id=wallet_id, webhook=webhook, changes=changes)  # one transaction
    raise refusal(decision, frozen)
