"""The policy's decision on an off-chain message request, shared by both checks: the enclave's authoritative one
(`enclave_app.signer.sign_message`) and the proxy's first one (`parent_proxy.message_checks`)."""

from __future__ import annotations

import hmac

from policies.decision import Decision
from policies.document import Policy
from policies.errors import DecodeError
from policies.evaluate import EvalContext, evaluate, evaluate_message
from policies.offchain import OffchainMessage, decode_offchain_message


class NotASigner(DecodeError):
    """The off-chain message decodes but does not name the agent key among its signers."""


def judge_message(
    policy: Policy, raw: bytes, agent: bytes, ctx: EvalContext
) -> tuple[Decision, OffchainMessage | DecodeError]:
    """The policy's decision on signing the off-chain message ``raw`` with the agent key ``agent``, and the decoded
    message (or why it is not one). Both checks use it: the enclave (check 2, `sign_message`) and the proxy (check 1,
    `parent_proxy.message_checks`). The request rules apply as `policies.evaluate.evaluate_message` applies them; a
    message that does not decode as a version-0 off-chain message, or that does not name ``agent`` among its signers,
    is a DENY with rule ``decode``, as a transaction that does not decode is (`policies.evaluate.evaluate` given the
    `DecodeError`: the request rules, the ``decode`` reason and the denial burst). Either way a DENY that completes a
    burst of denials is a FREEZE. Pure."""
    decoded: OffchainMessage | DecodeError
    try:
        decoded = decode_offchain_message(raw)
        if not any(hmac.compare_digest(bytes(signer), agent) for signer in decoded.signers):
            raise NotASigner("the agent key is not a signer of this message")
    except DecodeError as exc:
        decoded = exc
    if isinstance(decoded, DecodeError) and policy.rules.offchain_messages:
        return evaluate(policy, decoded, ctx), decoded
    # Not allowed at all: that reason (and the request rules) is the answer, whether or not the message decodes.
    return evaluate_message(policy, ctx), decoded
