"""The proxy's checks of an off-chain message (`POST /v1/wallets/{id}/messages/sign`): check 1 before the enclave,
the record of an enclave refusal, and the signer check of its answer.

A message moves no funds, so only the policy's request rules apply, and the message must be one the agent key may
sign: the policy's decision is `policies.message_decision.judge_message`, the function the enclave's check 2 uses
(``offchain_messages`` must allow it, the policy must be in force, the time windows and the request rate apply, the
message must decode as a version-0 off-chain message naming the agent key among its signers; a denial that
completes a burst freezes the wallet). Every message request is recorded for the rate rule, and every refusal by
the policy or by decoding as a denial, as for transactions: the request, the denial, a freeze (``wallet.frozen``),
the audit record (``message.denied`` / ``message.frozen``) and the webhook item in one store transaction. A wallet
that is frozen or has no (valid) policy is refused with a ``message.refused`` record and no other change, as a
transaction is (``transaction.refused``).

An enclave refusal after check 1 allowed the message (`record_enclave_refusal`): ``enclave_refused`` (the enclave's
policy decision, decoding or signer check refused it) and ``no_policy`` (the policy expired in between) are denials
the enclave recorded in its ledger, so the proxy records the denial too (the request was recorded by check 1), with
its ``message.refused`` record and a ``message.denied`` webhook item, in one store transaction. ``wallet_frozen``
changes nothing but the record: the enclave holds the wallet frozen (an unfreeze it did not acknowledge, say; the
proxy does not freeze the wallet again behind the owner's back). The enclave's own burst does not fire before the
proxy's: check 1 counts every denial the enclave's per-boot ledger holds (unless a store write was lost), so it
freezes the wallet first, with its ``wallet.frozen`` webhook.

After the enclave's receipt verified and was found to be about the message sent (the SHA-256 of the whole message:
`parent_proxy.enclave_sessions`), `record_signed_message` checks that the answered signature verifies over the
message, exactly the bytes sent (what the agent key signs: `policies.offchain`), under the wallet's stored agent
key, before anything is recorded or handed out; if not, the answer is refused as a receipt that does not verify is:
503 ``enclave_unavailable``, audit ``message.failed``. A wallet frozen after check 1 read it gets no signature
(`parent_proxy.withheld`).
"""

from __future__ import annotations

import logging
from typing import Any

from enclave_app.protocol import MessageSignatureResponse
from parent_proxy import withheld
from parent_proxy.api_errors import ApiError, Code
from parent_proxy.clock import read_clock
from parent_proxy.errors import FrozenMeanwhile
from parent_proxy.services import Services
from parent_proxy.sign_parts import denial_changes, refusal, request_context, verified_policy
from parent_proxy.store.model import Wallet
from parent_proxy.store.state_changes import StillUnfrozen
from policies.decision import Verdict
from policies.ed25519 import verify_ed25519
from policies.message_decision import judge_message

logger = logging.getLogger(__name__)

NOT_THE_AGENT_KEY = "the signature is not the stored agent key's over the requested message"
"""The audit reason of a ``message.failed`` record for a signature the stored agent key did not make."""


def check_message(services: Services, wallet_id: str, message: bytes, audit: dict[str, str]) -> Wallet:
    """The wallet, if its policy lets the agent have ``message`` signed now; else raise the `ApiError` (403), its
    record written first (`Store.apply_audited`; a store failure raises instead, 503)."""
    s = services
    now = read_clock(s.clock)
    wallet = s.store.get_wallet(wallet_id)
    if wallet.frozen:
        error = ApiError(Code.WALLET_FROZEN, "the wallet is frozen until the owner unfreezes it")
        raise _refused(s, wallet_id, error, {**audit, "reason": "wallet frozen"})
    try:
        policy = verified_policy(s, wallet)  # one that no longer verifies: 403 no_policy (the enclave is not asked)
    except ApiError as exc:
        raise _refused(s, wallet_id, exc, {**audit, "reason": "stored policy does not verify"}) from exc
    if policy is None:
        error = ApiError(Code.NO_POLICY, "the wallet has no installed policy")
        raise _refused(s, wallet_id, error, {**audit, "reason": "no policy"})
    decision, _ = judge_message(policy, message, wallet.agent_pubkey, request_context(s, wallet, policy, now))
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


def _refused(services: Services, wallet_id: str, error: ApiError, payload: dict[str, Any]) -> ApiError:
    """Record ``message.refused`` for a wallet that is frozen or has no (valid) policy; the error to raise."""
    services.audit.append("message.refused", {**payload, "error": error.code.value}, wallet_id=wallet_id)
    return error


ENCLAVE_DENIALS = frozenset({Code.ENCLAVE_REFUSED, Code.NO_POLICY})
"""The enclave's refusals of a message check 1 allowed that its ledger counts as denials (see the module text)."""


def record_enclave_refusal(services: Services, wallet_id: str, error: ApiError, audit: dict[str, Any]) -> None:
    """Record the enclave's 403 refusal ``error`` of a message check 1 allowed: ``message.refused`` with, for a denial
    (`ENCLAVE_DENIALS`), the denial and a ``message.denied`` webhook item in the same store transaction."""
    s = services
    payload = {**audit, "error": error.code.value}
    if error.code not in ENCLAVE_DENIALS:
        s.audit.append("message.refused", payload, wallet_id=wallet_id)
        return
    now = read_clock(s.clock)
    webhook = s.webhook_item(wallet_id, "message.denied", payload)
    changes = denial_changes(wallet_id, now, None, request=False)  # the request was recorded by check 1
    s.audit.append("message.refused", payload, wallet_id=wallet_id, webhook=webhook, changes=changes)


def record_signed_message(
    services: Services, wallet: Wallet, message: bytes, answer: MessageSignatureResponse, audit: dict[str, Any]
) -> None:
    """Record ``message.signed`` (with the receipt) once the answer's signature verifies over ``message`` under the
    wallet's stored agent key; else audit ``message.failed`` with the reason and raise 503 ``enclave_unavailable``
    (nothing recorded as signed, nothing handed out). Recorded only if ``wallet`` (as check 1 read it) was not frozen
    since (`StillUnfrozen`), else withheld: ``message.withheld`` with the receipt, 403 ``wallet_frozen``
    (`parent_proxy.withheld`). Called after the receipt check, in its hop."""
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
    unfrozen = StillUnfrozen(wallet.wallet_id, wallet.order_sequence)  # as check 1 read the wallet
    try:
        services.audit.append("message.signed", audit, wallet_id=wallet.wallet_id, receipt=receipt, changes=[unfrozen])
    except FrozenMeanwhile as exc:  # frozen since check 1 read it: the signature is withheld
        raise withheld.withhold_message(services, wallet, audit, receipt) from exc
