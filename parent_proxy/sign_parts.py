"""The values and pure steps of the signing flow (`parent_proxy.sign_flow`): the validated request, the answer,
the state carried from the checks to the relay, and the first policy check (evaluation context, decision,
reservation caps)."""

from __future__ import annotations

import base64
import hashlib
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from solders.message import to_bytes_versioned
from solders.pubkey import Pubkey
from solders.transaction import VersionedTransaction

from enclave_app.protocol import LookupTable, SpentEntry
from parent_proxy.api_errors import ApiError, Code
from parent_proxy.services import Services, canonical
from parent_proxy.store.model import IdempotencyRecord, Reservation, Wallet
from parent_proxy.store.state_changes import RecordEvent, SetFrozen, StateChange
from policies.decision import Decision
from policies.document import Policy
from policies.errors import DecodeError, PolicyEngineError
from policies.evaluate import EvalContext, evaluate
from policies.lookup_tables import resolve_lookup_tables
from policies.transaction import decode_transaction

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SignRequest:
    """A validated agent request (see `parent_proxy.schemas.SignTransactionBody`)."""

    transaction: bytes
    idempotency_key: str
    lookup_tables: tuple[Pubkey, ...]
    submit: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "transaction": base64.b64encode(self.transaction).decode(),
            "idempotency_key": self.idempotency_key,
            "lookup_tables": [str(t) for t in self.lookup_tables],
            "submit": self.submit,
        }

    def digest(self) -> bytes:
        return hashlib.sha256(canonical(self.to_json())).digest()


@dataclass(frozen=True, slots=True)
class Answer:
    """An HTTP answer: status and JSON body (errors are raised as `ApiError` instead)."""

    status: int
    body: dict[str, Any]
    replayed: bool = False


@dataclass(frozen=True, slots=True)
class AgentAnswer:
    """Where the agent waits for the owner's decision on its escalated request: its idempotency ``key`` (the store's,
    `agent_key`), the request's ``digest`` and the 202 stored under them (``pending``, the exact bytes), which the
    decision replaces (`parent_proxy.escalation_answers`)."""

    key: str
    digest: bytes
    pending: bytes


@dataclass(frozen=True, slots=True)
class OwnerApproval:
    """The owner's signed approval a request is relayed with, and the stored approval it decided. ``agent``: the
    agent's stored 202 the outcome replaces (None: the approval's stored request does not name it)."""

    approval_id: str
    envelope: bytes
    agent: AgentAnswer | None = None


@dataclass(frozen=True, slots=True)
class Origin:
    """The agent request a `Prepared` came from: what a pending approval is made of, should the enclave's check
    escalate a request the proxy's own check allowed (`parent_proxy.sign_flow`). ``base``: the request's audit
    fields (``request_id``, ``token_id``, ``request_sha256``)."""

    request: SignRequest
    base: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Prepared:
    """State carried from the checks (step 1-4) to the relay (step 5). ``origin``: the agent request (``None`` for
    an owner approval being signed)."""

    wallet: Wallet
    policy: Policy
    request_id: str
    key: str
    digest: bytes
    reservation: Reservation | None
    spent: tuple[SpentEntry, ...]
    requests_in_window: int
    denials_in_window: int
    decision: Decision
    idempotent: bool = True
    submit: bool = False
    approval: OwnerApproval | None = None
    origin: Origin | None = None


@dataclass(slots=True)
class Claim:
    """The idempotency key of one request, and whether this request holds its claim."""

    wallet_id: str
    key: str
    digest: bytes
    held: bool = False


def replayed(record: IdempotencyRecord) -> Answer:
    data = json.loads(record.response or b"{}")
    return Answer(int(data["status_code"]), data["body"], replayed=True)


def reserved_amounts(decision: Decision) -> dict[str, int]:
    return {r.asset: r.amount for r in decision.reservations if r.amount > 0}


def agent_key(idempotency_key: str) -> str:
    return f"agent:{idempotency_key}"


def verified_policy(services: Services, wallet: Wallet) -> Policy | None:
    """`Services.policy_for`, a stored policy that no longer verifies refused loudly: logged, 403 ``no_policy`` (the
    sign flow's answer, which also claims the key and audits: `parent_proxy.sign_flow`). For the routes that store
    nothing under a key: an owner approval, an off-chain message, the wallet view."""
    try:
        return services.policy_for(wallet)
    except PolicyEngineError as exc:
        logger.error("stored policy of wallet %s does not verify", wallet.wallet_id)
        raise ApiError(Code.NO_POLICY, "the wallet has no valid policy") from exc


def limits_for(policy: Policy, assets: set[str], *, approved: bool) -> dict[tuple[str, int], int]:
    """Reservation caps: the automatic thresholds for an ALLOW, the approval ceilings for an approved escalation."""
    caps: dict[tuple[str, int], int] = {}
    for asset, periods in policy.periods_by_asset.items():
        if asset in assets:
            for period in periods:
                caps[(asset, period.window_seconds)] = period.tier.approval if approved else period.tier.automatic
    return caps


def eval_context(services: Services, wallet: Wallet, policy: Policy, now: float) -> tuple[EvalContext, int, int]:
    store, wallet_id = services.store, wallet.wallet_id
    spent = {
        (asset, window): store.spent_in_window(wallet_id, asset, window, now)
        for asset, window in policy.spend_windows()
    }
    ctx = request_context(services, wallet, policy, now)
    return replace(ctx, spent=spent), ctx.requests_in_window, ctx.denials_in_window


def request_context(services: Services, wallet: Wallet, policy: Policy, now: float) -> EvalContext:
    """The evaluation context without spending (what an off-chain message is judged with): time, wallet keys,
    earlier requests in the rate window and earlier denials in the freeze window."""
    store, wallet_id = services.store, wallet.wallet_id
    requests = store.count_requests(wallet_id, now - policy.rules.rate.window_seconds)
    burst = policy.rules.freeze.denials
    denials = 0 if burst is None else store.count_denials(wallet_id, now - burst.window_seconds)
    keys = frozenset({Pubkey.from_bytes(wallet.agent_pubkey)})  # the same wallet keys as the enclave's check
    return EvalContext(datetime.fromtimestamp(now, UTC), keys, {}, requests, denials)


def decide(policy: Policy, raw: bytes, tables: Mapping[Pubkey, Sequence[Pubkey]], ctx: EvalContext) -> Decision:
    try:
        # Resolve from the owner's pins, as the enclave does; the chain's contents are cross-checked against them.
        tx: Any = decode_transaction(raw, lookup_tables=resolve_lookup_tables(policy, tables))
    except DecodeError as exc:
        tx = exc
    return evaluate(policy, tx, ctx)


def spent_entries(ctx: EvalContext) -> tuple[SpentEntry, ...]:
    return tuple(SpentEntry(asset, window, amount) for (asset, window), amount in sorted(ctx.spent.items()))


def wire_tables(tables: Mapping[Pubkey, Sequence[Pubkey]]) -> tuple[LookupTable, ...]:
    return tuple(LookupTable(bytes(k), tuple(bytes(a) for a in v)) for k, v in tables.items())


def message_hash(transaction: bytes) -> bytes:
    """SHA-256 of the message bytes the agent key would sign: what an owner approval binds and what the enclave's
    receipt states (an unparsable transaction is hashed as sent, as the enclave does)."""
    try:
        message = to_bytes_versioned(VersionedTransaction.from_bytes(transaction).message)
    except ValueError:
        message = transaction
    return hashlib.sha256(message).digest()


def denial_changes(wallet_id: str, now: float, freeze: str | None, *, request: bool = True) -> list[StateChange]:
    """What a refusal changes, written with its audit record (`Store.apply_audited`): the request (unless it was
    recorded already) and the denial for the rate and denial-burst rules, and a freeze with reason ``freeze``."""
    changes: list[StateChange] = [RecordEvent(wallet_id, "request", now)] if request else []
    changes.append(RecordEvent(wallet_id, "denial", now))
    if freeze is not None:
        changes.append(SetFrozen(wallet_id, True, freeze))
    return changes


def refusal(decision: Decision, frozen: bool) -> ApiError:
    reasons = [r.to_json() for r in decision.reasons]
    if frozen:
        return ApiError(Code.WALLET_FROZEN, "the request attacks the wallet: it is now frozen", reasons=reasons)
    return ApiError(Code.POLICY_DENIED, "the policy denies this request", reasons=reasons)


def error_answer(error: ApiError) -> dict[str, Any]:
    """What is stored under an idempotency key for a refusal (replayed verbatim)."""
    return {"status_code": error.status, "body": error.body()}
