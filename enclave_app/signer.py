"""The sign path: check 2 of DESIGN.md section 4, authoritative, then the agent key's signature on ALLOW only.

For a transaction, in order:

1. the wallet is loaded, not frozen, the enclave is not failed, an owner-signed policy is installed (its
   signature was verified when it was installed; it cannot change without a higher sequence);
2. the enclave reads its own clock; the lookup-table contents become a map (a table named twice is refused);
3. the transaction is decoded here (a decode failure is judged by the policy: DENY);
4. the context: for every spending window of the policy, the larger of the parent's figure and the enclave's
   own per-boot ledger (a window the parent omits stays missing: DENY); requests and denials likewise;
5. evaluate; a FREEZE verdict freezes the wallet here too;
6. an approval, when sent with an ESCALATE verdict, must be the owner's valid approval of exactly this message;
   it turns the ESCALATE into a signature; with any other verdict it is ignored (it never lifts DENY or FREEZE,
   and never keeps a DENY or FREEZE from being recorded);
7. sign with the agent key at its signer slot, record the outcome in the ledger, and return the decision with a
   session-signed receipt (also for refusals).

Off-chain messages: signed only when the wallet is loaded and not frozen, a policy is installed, and the policy's
decision on the message (`policies.message_decision.judge_message`, which the proxy's check 1 uses too) is ALLOW:
it allows off-chain messages, has not expired, its time windows and request rate allow one now, the message decodes
as a version-0 Solana off-chain message and the agent key is one of its declared signers. A message refused on any of
these (all but the frozen wallet and the missing policy) is recorded in the ledger as a request and a denial, as a
denied transaction is, so it counts towards the denial burst, and the denial that completes a burst freezes the
wallet (answered ``wallet_frozen``). A signed message gets a receipt; a refused one gets an error, no receipt.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from solders.message import to_bytes_versioned
from solders.pubkey import Pubkey
from solders.transaction import VersionedTransaction

from enclave_app.errors import InconsistentStateError, StateError
from enclave_app.orders import verify_approval
from enclave_app.protocol import (
    SIGNATURE_BYTES,
    ErrorCode,
    MessageSignatureResponse,
    SignMessageRequest,
    SignTransactionRequest,
    TransactionDecisionResponse,
)
from enclave_app.receipts import encode_receipt, reasons_digest
from enclave_app.state import Enclave, InstalledPolicy, Wallet
from policies.decision import Verdict
from policies.document import Policy
from policies.errors import DecodeError
from policies.evaluate import EvalContext, evaluate
from policies.lookup_tables import resolve_lookup_tables
from policies.message_decision import NotASigner, judge_message
from policies.model import DecodedTransaction
from policies.offchain import OffchainMessage
from policies.transaction import decode_transaction


def ledger_entries_per_request(policy: Policy) -> int:
    """The most entries one transaction request can add to the wallet's ledger: its request time, a denial time,
    and one signed amount per asset it may reserve (each limit's asset, and the fees)."""
    return 1 + 1 + len(policy.rules.limits) + 1


def _signing_wallet(enclave: Enclave, wallet_id: str) -> Wallet:
    wallet = enclave.wallet(wallet_id)
    if wallet.frozen:
        raise StateError(ErrorCode.WALLET_FROZEN, "wallet is frozen")
    return wallet


def _lookup_tables(request: SignTransactionRequest) -> dict[Pubkey, Sequence[Pubkey]]:
    tables: dict[Pubkey, Sequence[Pubkey]] = {}
    for table in request.lookup_tables:
        address = Pubkey.from_bytes(table.address)
        if address in tables:
            raise StateError(ErrorCode.BAD_REQUEST, "lookup table supplied twice")
        tables[address] = [Pubkey.from_bytes(entry) for entry in table.addresses]
    return tables


def _context(
    wallet: Wallet, installed: InstalledPolicy, request: SignTransactionRequest, now: datetime, now_s: float
) -> EvalContext:
    parent: dict[tuple[str, int], int] = {}
    for entry in request.spent:
        key = (entry.asset, entry.window_seconds)
        if key in parent:
            raise StateError(ErrorCode.BAD_REQUEST, "spending window reported twice")
        parent[key] = entry.amount
    ledger = wallet.ledger
    # The parent's figures are a floor: the enclave's own ledger can only raise them.
    spent = {
        key: max(parent[key], ledger.spent(key[0], key[1], now_s)) for key in installed.spend_windows if key in parent
    }
    rules = installed.policy.rules
    requests = max(request.requests_in_window, ledger.count(ledger.requests, rules.rate.window_seconds, now_s))
    burst = rules.freeze.denials
    denials = request.denials_in_window
    if burst is not None:
        denials = max(denials, ledger.count(ledger.denials, burst.window_seconds, now_s))
    return EvalContext(now, wallet.agent_keys, spent, requests, denials)


def _message_bytes(raw: bytes) -> bytes:
    """The message of a transaction the policy engine could not decode (for the receipt's hash only)."""
    try:
        return to_bytes_versioned(VersionedTransaction.from_bytes(raw).message)
    except Exception:  # solders raises several types; an unparsable transaction is hashed as sent
        return raw


def _shortvec(value: int) -> bytes:
    """Solana's compact-u16 encoding (a signature count is a u8, so at most two bytes)."""
    if value < 0x80:
        return bytes((value,))
    return bytes((value & 0x7F | 0x80, value >> 7))


def sign_at_agent_slot(wallet: Wallet, raw: bytes, decoded: DecodedTransaction) -> tuple[bytes, bytes]:
    """The agent's signature over the decoded message, and the transaction with it in the agent's slot.

    ``decode_transaction`` required ``raw`` to re-serialize exactly, so ``raw`` is shortvec(n) + n signatures
    + message bytes; that layout is checked again here (cheaply) before the signature is spliced in.
    """
    # 1. Exactly one signer slot holds the agent key.
    signers = decoded.required_signers
    slots = [index for index, key in enumerate(signers) if key == wallet.agent]
    if len(slots) != 1:
        raise InconsistentStateError("allowed transaction has no single agent signer slot")
    # 2. The bytes are what was decoded.
    message = decoded.message_bytes
    count = _shortvec(len(signers))
    start = len(count) + SIGNATURE_BYTES * slots[0]
    if (
        len(raw) != len(count) + SIGNATURE_BYTES * len(signers) + len(message)
        or not raw.startswith(count)
        or not raw.endswith(message)
    ):
        raise InconsistentStateError("decoded transaction does not match its bytes")
    # 3. Sign the message; put the signature in the agent's slot.
    signature = wallet.agent_key.sign(message)
    return signature, raw[:start] + signature + raw[start + SIGNATURE_BYTES :]


def sign_transaction(enclave: Enclave, request: SignTransactionRequest) -> TransactionDecisionResponse:
    # 1. Wallet, state and policy (verified at installation; immutable until a verified replacement).
    wallet = _signing_wallet(enclave, request.wallet_id)
    installed = wallet.installed
    if installed is None:
        raise StateError(ErrorCode.NO_POLICY, "no policy installed for this wallet")
    policy = installed.policy
    # 2. Own clock; lookup tables.
    now = enclave.clock()
    now_s = now.timestamp()
    wallet.ledger.prune(now_s, installed.horizon)
    wallet.ledger.check_room(ledger_entries_per_request(policy))
    supplied = _lookup_tables(request) if request.lookup_tables else None
    # 3. Decode here, once: the decoded message is what is hashed, judged and signed. Lookups resolve from the
    #    owner's pins in the policy only; the parent's table contents are merely cross-checked against them.
    decoded: DecodedTransaction | DecodeError
    try:
        decoded = decode_transaction(request.transaction, lookup_tables=resolve_lookup_tables(policy, supplied))
        message = decoded.message_bytes
    except DecodeError as exc:
        decoded = exc
        message = _message_bytes(request.transaction)
    message_hash = hashlib.sha256(message).digest()
    # 4-5. Context with the enclave's own counters as a second cap; evaluate.
    decision = evaluate(policy, decoded, _context(wallet, installed, request, now, now_s))
    # 6. An approval lifts ESCALATE only, and only for this exact message. It is checked only then: for any other
    #    verdict it changes nothing, so it must not turn a DENY or FREEZE into an error that skips the freeze and
    #    the ledger.
    approved = False
    if request.approval is not None and decision.verdict is Verdict.ESCALATE:
        verify_approval(request.approval, owner=wallet.owner, wallet_id=wallet.wallet_id, message_hash=message_hash,
                        now=now)  # fmt: skip
        approved = True
    sign = decision.verdict is Verdict.ALLOW or approved
    if decision.verdict is Verdict.FREEZE:
        wallet.frozen = True
    # 7. Sign, record, receipt.
    signature = signed_tx = None
    if sign:
        if isinstance(decoded, DecodeError):
            raise InconsistentStateError("a transaction that did not decode was allowed")
        signature, signed_tx = sign_at_agent_slot(wallet, request.transaction, decoded)
    wallet.ledger.record(now_s, denied=decision.verdict >= Verdict.DENY,
                         signed=decision.reservations if sign else ())  # fmt: skip
    decision_json = decision.to_json()
    receipt, receipt_signature = _receipt(
        enclave,
        installed.transaction_receipt_prefix,
        verdict=_LABELS[decision.verdict],
        reasons=decision_json["reasons"],
        message_hash=message_hash,
        approved=approved,
        now_s=now_s,
    )
    return TransactionDecisionResponse(
        decision=decision_json,
        signature=signature,
        signed_transaction=signed_tx,
        receipt=receipt,
        receipt_signature=receipt_signature,
    )


_LABELS = {verdict: verdict.label for verdict in Verdict}


def _receipt(
    enclave: Enclave,
    prefix: bytes,
    *,
    verdict: str,
    reasons: list[dict[str, Any]],
    message_hash: bytes,
    approved: bool,
    now_s: float,
) -> tuple[bytes, bytes]:
    encoded = encode_receipt(
        prefix,
        message_hash=message_hash,
        verdict=verdict,
        approved=approved,
        reasons_digest=reasons_digest(reasons),
        time_ms=int(now_s * 1000),
        counter=enclave.session.next_counter(),
    )
    return encoded, enclave.session.sign_encoded(encoded)


def _message_refusal(policy: Policy, now: datetime, decoded: OffchainMessage | DecodeError) -> StateError:
    """The enclave's error for a message its policy decision refused (DENY; FREEZE is ``wallet_frozen``)."""
    if not policy.rules.offchain_messages:
        return StateError(ErrorCode.MESSAGE_INVALID, "the wallet's policy does not allow off-chain messages")
    if policy.expired(now):
        return StateError(ErrorCode.NO_POLICY, "the wallet's policy has expired")
    if isinstance(decoded, NotASigner):
        return StateError(ErrorCode.MESSAGE_INVALID, "the agent key is not a signer of this message")
    if isinstance(decoded, DecodeError):
        return StateError(ErrorCode.MESSAGE_INVALID, "not a valid off-chain message")
    return StateError(ErrorCode.MESSAGE_INVALID, "the wallet's policy refuses this message now")


def sign_message(enclave: Enclave, request: SignMessageRequest) -> MessageSignatureResponse:
    # 1. Wallet and state (frozen: refused, nothing recorded), a policy installed (none: refused, nothing recorded);
    #    2. the policy's decision (`judge_message`: request rules, decoding, the agent key a signer) with the
    #    enclave's own counters (the parent sends no figures for messages), the request and any denial recorded; a
    #    FREEZE freezes the wallet; 3. sign + receipt on ALLOW only.
    wallet = _signing_wallet(enclave, request.wallet_id)
    installed = wallet.installed
    if installed is None:
        raise StateError(ErrorCode.MESSAGE_INVALID, "the wallet's policy does not allow off-chain messages")
    policy, ledger, rules = installed.policy, wallet.ledger, installed.policy.rules
    now = enclave.clock()
    now_s = now.timestamp()
    ledger.prune(now_s, installed.horizon)
    ledger.check_room(2)
    burst = rules.freeze.denials
    requests = ledger.count(ledger.requests, rules.rate.window_seconds, now_s)
    denials = 0 if burst is None else ledger.count(ledger.denials, burst.window_seconds, now_s)
    ctx = EvalContext(now, wallet.agent_keys, {}, requests, denials)
    decision, decoded = judge_message(policy, request.message, bytes(wallet.agent), ctx)
    ledger.record(now_s, denied=decision.verdict >= Verdict.DENY, signed=())
    if decision.verdict is Verdict.FREEZE:
        wallet.frozen = True
        raise StateError(ErrorCode.WALLET_FROZEN, "a burst of denied requests froze the wallet")
    if decision.verdict >= Verdict.DENY:
        raise _message_refusal(policy, now, decoded)
    if isinstance(decoded, DecodeError):
        raise InconsistentStateError("a message that did not decode was allowed")
    signature = wallet.agent_key.sign(decoded.message_bytes)
    message_hash = hashlib.sha256(decoded.message_bytes).digest()
    receipt, receipt_signature = _receipt(
        enclave,
        installed.message_receipt_prefix,
        verdict="allow",
        reasons=[],
        message_hash=message_hash,
        approved=False,
        now_s=now_s,
    )
    return MessageSignatureResponse(signature=signature, receipt=receipt, receipt_signature=receipt_signature)
