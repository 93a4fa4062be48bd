"""A signature the proxy withholds because the wallet was frozen while the request was under way.

A request (an agent's signing request, an owner's approve, an off-chain message) reads the wallet, finds it not
frozen, and goes to the enclave. If the owner's freeze is stored meanwhile and reaches that enclave only after the
request did (in a fleet: at another host's next relay), the enclave signs. The transaction that would record the
signature carries the condition `StillUnfrozen` (the wallet not frozen, its owner-order sequence the one read: a
freeze then an unfreeze is caught too), so it is refused (`FrozenMeanwhile`) when the freeze came first, and then:

1. nothing signed is handed out, stored under the key or broadcast;
2. the reservation is released (`give_back.release_quietly`);
3. the record ``transaction.withheld`` / ``message.withheld`` is written with the enclave's receipt and the answer
   stored under the idempotency key (403 ``wallet_frozen``, the body of any frozen wallet's refusal: a decision,
   replayed), in one store transaction; if it cannot be written, everything is given back as for any store failure
   (`give_back.give_back`, the key freed) and that error is raised;
4. an owner approval goes back to pending (`give_back.reopen_quietly`: ``approval.reopened`` and its webhook), as
   after any failure before a signature left the proxy: the owner rejects it, or approves it again once the wallet
   is unfrozen.

Why the receipt is recorded: every receipt the enclave issues takes the next counter of its session, and
``waiaas audit verify --receipts`` fails on a counter missing from the log. A freeze racing a signature is an
ordinary event, not an anomaly, so its receipt goes into the log with a record that says the signature was withheld
(`parent_proxy.audit_receipts` checks it as a receipt stating a signature, and reports how many were withheld).
What the record holds is the receipt (which states that the enclave signed, not the signature) and the request's
``message_sha256``, never the signature or the signed transaction: with those, anyone reading the log could send
the transaction the freeze stopped. What it cannot prove: that the parent really kept the signature to itself. A
parent that hands a signature out and logs it as withheld is a compromised parent, which the enclave's own freeze
(and, on chain, the Squads threshold) is there for; the record names the message, so the auditor can look for it
on chain. The auditor does require its cause before it in the log (`parent_proxy.audit_withheld`: the record of the
freeze, unfreeze or owner order of the same wallet that made `StillUnfrozen` refuse it), so such a parent must also
log a freeze the owner can check.
"""

from __future__ import annotations

import logging
from typing import Any

from parent_proxy import give_back
from parent_proxy.api_errors import ApiError, Code
from parent_proxy.services import Services, canonical
from parent_proxy.sign_parts import Prepared, error_answer
from parent_proxy.store.model import IdempotentAnswer, Wallet
from parent_proxy.store.state_changes import CompleteIdempotent, StateChange

logger = logging.getLogger(__name__)

FROZEN_MEANWHILE = "the wallet was frozen, or took an owner order, while the request was being signed"
"""The ``reason`` of a ``transaction.withheld`` / ``message.withheld`` record."""


def frozen_error() -> ApiError:
    """The answer: the refusal of any request on a frozen wallet."""
    return ApiError(Code.WALLET_FROZEN, "the wallet is frozen until the owner unfreezes it")


def withhold_transaction(s: Services, prepared: Prepared, base: dict[str, Any], receipt: bytes) -> ApiError:
    """Steps 2-4 of the module docstring for a signed transaction whose record `FrozenMeanwhile` refused (``base``:
    the record's payload, ``receipt``: the enclave's receipt and its signature); the 403 to raise."""
    wallet_id = prepared.wallet.wallet_id
    logger.warning("wallet %s: signature of request %s withheld (frozen meanwhile)", wallet_id, prepared.request_id)
    error = frozen_error()
    give_back.release_quietly(s, prepared)
    changes: list[StateChange] = []
    if prepared.idempotent:
        answer = IdempotentAnswer(wallet_id, prepared.key, prepared.digest, canonical(error_answer(error)))
        changes.append(CompleteIdempotent(answer))
    try:
        s.audit.append("transaction.withheld", {**base, "reason": FROZEN_MEANWHILE}, wallet_id=wallet_id,
                       receipt=receipt, changes=changes)  # fmt: skip
    except BaseException:  # not recorded: given back as for any store failure (the receipt's counter a gap)
        give_back.give_back(s, prepared)
        raise
    if prepared.approval is not None:
        give_back.reopen_quietly(s, prepared.request_id, wallet_id, prepared.approval)
    return error


def withhold_message(s: Services, wallet: Wallet, audit: dict[str, Any], receipt: bytes) -> ApiError:
    """Step 3 for a signed off-chain message (nothing reserved, no key): its ``message.withheld`` record with the
    receipt; the 403 to raise."""
    logger.warning("wallet %s: message signature withheld (frozen meanwhile)", wallet.wallet_id)
    s.audit.append("message.withheld", {**audit, "reason": FROZEN_MEANWHILE}, wallet_id=wallet.wallet_id,
                   receipt=receipt)  # fmt: skip
    return frozen_error()
