"""The proxy's checks of an off-chain message (`POST /v1/wallets/{id}/messages/sign`): check 1 before the enclave,
and the signer check of its answer.

A message moves no funds, so only the policy's request rules apply (`policies.evaluate.evaluate_message`):
``offchain_messages`` must allow it, the policy must be in force, the time windows and the request rate apply, and
a denial that completes a burst freezes the wallet. Every message request is recorded for the rate rule, and every
refusal as a denial, as for transactions (a refusal's request, denial, freeze, audit record and webhook item in one
store transaction); the enclave applies the same rules again with its own counters (check 2).

After the enclave's receipt verified and was found to be about the message sent (the SHA-256 of the whole message:
`parent_proxy.enclave_sessions`), `record_signed_message` checks that the answered signature verifies over the
message, exactly the bytes sent (what the agent key signs: `policies.offchain`), under the wallet's stored agent
key, before anything is recorded or handed out; if not, the answer is refused as a receipt that does not verify is:
503 ``enclave_unavailable``, audit ``message.failed``.
"""

from __future__ import annotations

import logging
from typing import Any

from enclave_app.protocol import MessageSignatureResponse
from parent_proxy.api_errors import ApiError, Code
from parent_proxy.clock import read_clock
from parent_proxy.services import Services
from parent_proxy.sign_parts import denial_changes, refusal, request_context, verified_policy
from parent_proxy.store.model import Wallet
from policies.decision import Verdict
from policies.ed25519 import verify_ed25519
from policies.evaluate import evaluate_message

logger = logging.getLogger(__name__)

NOT_THE_AGENT_KEY = "the signature is not the stored agent key's over the requested message"
"""The audit reason of a ``message.failed`` record for a signature the stored agent key did not make."""


def check_message(services: Services, wallet_id: str, audit: dict[str, str]) -> Wallet:
    """The wallet, if its policy lets the agent have a message signed now; else raise the `ApiError` (403)."""
    s = services
    now = read_clock(s.clock)
    wallet = s.store.get_wallet(wallet_id)
    if wallet.frozen:
        raise ApiError(Code.WALLET_FROZEN, "the wallet is frozen until the owner unfreezes it")
    policy = verified_policy(s, wallet)  # one that no longer verifies: 403 no_policy (the enclave is not asked)
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


def record_signed_message(
    services: Services, wallet: Wallet, message: bytes, answer: MessageSignatureResponse, audit: dict[str, Any]
) -> None:
    """Record ``message.signed`` (with the receipt) once the answer's signature verifies over ``message`` under the
    wallet's stored agent key; else audit ``message.failed`` with the reason and raise 503 ``enclave_unavailable``
    (nothing recorded as signed, nothing handed out). Called after the receipt check, in its hop."""
    agent = wallet.agent_pubkey
    if agent is None or not verify_ed25519(agent, answer.signature, message):
        logger.error("enclave signature for wallet %s is not the stored agent key's: refused", wallet.wallet_id)
        error = ApiError(
            Code.ENCLAVE_UNAVAILABLE,
            "the enclave answered a signature that is not the wallet's agent key's; nothing was signed",
        )
        failure = {**audit, "error": error.code.value, "reason": NOT_THE_AGENT_KEY}
        services.audit_safely("message.failed", failure, wallet_id=wallet.wallet_id)
        raise error
    receipt = answer.receipt + answer.receipt_signature
    services.audit.append("message.signed", audit, wallet_id=wallet.wallet_id, receipt=receipt)
