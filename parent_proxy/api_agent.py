"""Agent routes: sign a transaction, sign an off-chain message, read the wallet. Bearer token bound to one wallet.

Every route authenticates first (`AgentRoute`): the token, its wallet and the per-token rate limit are checked
before FastAPI reads, parses or validates anything else of the request, so a caller without a valid token gets 401
whatever the body, and learns nothing about the request schema.
"""

from __future__ import annotations

import base64
import hashlib
import logging
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Path, Request, Response
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from solders.pubkey import Pubkey
from solders.signature import Signature

from enclave_app.receipts import Receipt as DecisionReceipt
from parent_proxy.api_errors import ApiError, Code, translate
from parent_proxy.api_security import AGENT_SECURITY, declare
from parent_proxy.auth import Agent, authenticate_agent
from parent_proxy.chain import ChainError
from parent_proxy.clock import read_clock
from parent_proxy.enclave_sessions import Checked
from parent_proxy.errors import ProxyError
from parent_proxy.message_checks import check_message, record_enclave_refusal, record_signed_message
from parent_proxy.multisig_onchain import shown_vault
from parent_proxy.receipt_checks import Expected
from parent_proxy.schemas import (
    WALLET_ID,
    LimitLeft,
    PendingApproval,
    Receipt,
    SignedEnvelope,
    SignedMessage,
    SignedTransaction,
    SignMessageBody,
    SignTransactionBody,
    WalletView,
    decode_base64,
)
from parent_proxy.services import Services
from parent_proxy.sign_flow import Answer, Prepared, SignFlow, SignRequest, TablesNeeded
from parent_proxy.sign_parts import agent_key, verified_policy
from policies.errors import PolicyEngineError

logger = logging.getLogger(__name__)
T = TypeVar("T")

WalletId = Annotated[str, Path(pattern=WALLET_ID)]


def services_of(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


def _authenticate(services: Services, header: str | None, wallet_id: str) -> Agent:
    agent = authenticate_agent(services.store, header, wallet_id)
    services.rate_limiter.check(agent.token_id, read_clock(services.clock))
    return agent


async def authenticate(services: Services, header: str | None, wallet_id: str) -> Agent:
    try:
        return await services.run(_authenticate, services, header, wallet_id)
    except (ProxyError, PolicyEngineError) as exc:
        raise translate(exc) from exc


class AgentRoute(APIRoute):
    """A route that authenticates the agent before FastAPI's own handler parses and validates the request; its
    OpenAPI operation declares the bearer token (`parent_proxy.api_security`)."""

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        super().__init__(path, endpoint, **kwargs)
        self.openapi_extra = declare(self.openapi_extra, AGENT_SECURITY)

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        validate_and_run = super().get_route_handler()

        async def authenticated(request: Request) -> Response:
            # The raw path value: a token is bound to a valid wallet id, so an invalid one can only mismatch (404).
            wallet_id = str(request.path_params.get("wallet_id", ""))
            request.state.agent = await authenticate(
                services_of(request), request.headers.get("Authorization"), wallet_id
            )
            return await validate_and_run(request)

        return authenticated


def agent_of(request: Request) -> Agent:
    """The agent `AgentRoute` authenticated for this request; 401 if there is none (a route outside `AgentRoute`)."""
    agent = getattr(request.state, "agent", None)
    if not isinstance(agent, Agent):
        raise ApiError(Code.UNAUTHORIZED, "missing bearer token")
    return agent


router = APIRouter(prefix="/v1/wallets", tags=["agent"], route_class=AgentRoute)


def parse_tables(addresses: Sequence[str]) -> tuple[Pubkey, ...]:
    try:
        tables = tuple(Pubkey.from_string(a) for a in addresses)
    except ValueError as exc:
        raise ApiError(Code.INVALID_REQUEST, "lookup_tables: not base58 addresses") from exc
    if len(set(tables)) != len(tables):
        raise ApiError(Code.INVALID_REQUEST, "lookup_tables: duplicate address")
    return tables


@dataclass(frozen=True, slots=True)
class ChainReadPlan:
    """What `before_chain_read` found. ``stored``: the answer stored under the request's key; ``unpinned``: the
    named tables the wallet's policy does not pin; ``refused``: the wallet is frozen or has no policy that
    verifies, which the checks refuse whatever the tables hold."""

    stored: Answer | None
    unpinned: tuple[Pubkey, ...]
    refused: bool


def before_chain_read(flow: SignFlow, wallet_id: str, request: SignRequest) -> ChainReadPlan:
    """What a request naming lookup tables needs before they are read, in one worker-thread hop: the answer stored
    under its idempotency key (`SignFlow.stored_answer`: a replay, or 409), whether the wallet is refused before any
    decision (frozen, no policy that verifies: `SignFlow.prepare` refuses it as such, 403 ``wallet_frozen`` /
    ``no_policy``, without looking at the tables), and the named tables the wallet's installed policy does not pin
    (`rules.lookup_tables`; all of them when it has no policy that verifies). A table the policy does not pin is
    denied whatever the chain holds (`policies.lookup_tables.resolve_lookup_tables`), so a request naming one reads
    nothing from the chain: an agent names these addresses, and any account, of any size, could be one."""
    key, digest = agent_key(request.idempotency_key), request.digest()
    stored = flow.stored_answer(wallet_id, key, digest)
    if stored is not None:
        return ChainReadPlan(stored, (), refused=False)
    services = flow.s
    wallet = services.store.get_wallet(wallet_id)
    try:
        policy = services.policy_for(wallet)
    except PolicyEngineError:  # refused by the checks (`SignFlow.prepare`), which log it
        policy = None
    pins = {} if policy is None else policy.rules.lookup_tables
    unpinned = tuple(t for t in request.lookup_tables if t not in pins)
    return ChainReadPlan(None, unpinned, refused=wallet.frozen or policy is None)


async def sign_with_tables(services: Services, flow: SignFlow, agent: Agent, request: SignRequest) -> Answer:
    """The sign flow of a request naming lookup tables, which are read from the chain between authentication and
    the checks, and only when a decision may need them (`before_chain_read`). A stored answer needs no read (a
    replay: the RPC may be down, a table closed since; its digest covers the table addresses, not their contents),
    nor a wallet the checks refuse before any decision: a frozen wallet's agent (or one without a policy) cannot
    make the proxy ask the RPC node, whose quota all wallets share, at every request. If the wallet is no longer
    refused when the checks run (unfrozen in between), they stop before writing anything (`TablesNeeded`) and the
    request goes the common way. Tables the policy does not pin are not read either: denied whatever the chain
    holds (`unread_tables`)."""
    plan = await run_translated(services, before_chain_read, flow, agent.wallet_id, request)
    if plan.stored is not None:
        return plan.stored
    if plan.refused:
        try:
            return await flow.run(agent, request, None)
        except TablesNeeded:
            plan = await run_translated(services, before_chain_read, flow, agent.wallet_id, request)
            if plan.stored is not None:
                return plan.stored
    if plan.unpinned:  # denied whatever the chain holds: not read (the agent chose these addresses)
        tables = unread_tables(plan.unpinned)
    else:  # a wallet refused again by now is refused with the tables read, as any request
        tables = await fetch_tables(services, request.lookup_tables)
    return await flow.run(agent, request, tables)


async def run_translated(services: Services, function: Callable[..., T], *args: Any) -> T:
    """``function(*args)`` in a worker thread, the store's and the policy engine's errors as API errors."""
    try:
        return await services.run(function, *args)
    except (ProxyError, PolicyEngineError) as exc:
        raise translate(exc) from exc


def unread_tables(unpinned: Sequence[Pubkey]) -> Mapping[Pubkey, Sequence[Pubkey]]:
    """The contents the checks get for tables not read from the chain: none. The policy's cross-check denies each
    as today when read (``decode``: "lookup table ... is not pinned by the owner's policy", a counted denial, the
    answer stored under the key), and so also one the owner pinned in between: a pin is never empty, so no contents
    are shorter than it. These contents therefore never reach a decision that allows, nor the enclave."""
    return {table: () for table in unpinned}


async def fetch_tables(services: Services, tables: Sequence[Pubkey]) -> Mapping[Pubkey, Sequence[Pubkey]]:
    if not tables:
        return {}
    try:
        return await services.chain.lookup_tables(tables)
    except ChainError as exc:
        raise ApiError(Code.CHAIN_UNAVAILABLE, "the lookup tables could not be read from the chain") from exc


@router.post(
    "/{wallet_id}/transactions/sign",
    response_model=SignedTransaction,
    responses={202: {"model": PendingApproval, "description": "escalated: waiting for the owner"}},
)
async def sign_transaction(wallet_id: WalletId, body: SignTransactionBody, request: Request) -> JSONResponse:
    """Sign a transaction if the policy allows it (200), escalate it to the owner (202), or refuse it (403)."""
    services = services_of(request)
    agent = agent_of(request)
    flow = SignFlow(services)
    if body.lookup_tables:  # the tables are read from the chain between authentication and the checks, if at all
        raw = decode_base64("transaction", body.transaction)
        sign_request = SignRequest(raw, body.idempotency_key, parse_tables(body.lookup_tables), body.submit)
        answer = await bringing_orders(services, agent.wallet_id, sign_with_tables(services, flow, agent, sign_request))
    else:  # the same steps in the same order, in one worker-thread hop

        def checks() -> tuple[SignRequest, Prepared | Answer]:
            raw = decode_base64("transaction", body.transaction)
            sign_request = SignRequest(raw, body.idempotency_key, (), body.submit)
            return sign_request, flow.prepare(agent, sign_request, {})

        answer = await bringing_orders(services, agent.wallet_id, flow.run_checks(checks, {}))
    headers = {"Cache-Control": "no-store"}
    if answer.replayed:
        headers["Idempotent-Replayed"] = "true"
    return JSONResponse(answer.body, status_code=answer.status, headers=headers)


async def bringing_orders(services: Services, wallet_id: str, work: Awaitable[T]) -> T:
    """``work``; when it is refused because the wallet is frozen (403 ``wallet_frozen``), this host's enclave is
    first sent the stored owner order if it holds the wallet and may not have it yet
    (`EnclaveRelay.bring_stored_order`): a freeze that went to another host reaches this one's enclave at the first
    request refused here, not only at the next one that reaches the enclave. Best effort: the refusal stands."""
    try:
        return await work
    except ApiError as exc:
        if exc.code is not Code.WALLET_FROZEN:
            raise
        try:
            wallet = await services.run(services.store.get_wallet, wallet_id)
            await services.relay.bring_stored_order(wallet)
        except (ProxyError, ApiError) as failure:
            logger.warning("wallet %s: the stored owner order was not sent: %s", wallet_id, type(failure).__name__)
        raise


def _message_failed(services: Services, wallet_id: str, audit: dict[str, str], error: str) -> None:
    """Audit ``message.failed`` naming ``error`` (an API code): nothing was signed (or nobody got the signature)."""
    services.audit_safely("message.failed", {**audit, "error": error}, wallet_id=wallet_id)


@router.post("/{wallet_id}/messages/sign", response_model=SignedMessage)
async def sign_message(wallet_id: WalletId, body: SignMessageBody, request: Request) -> SignedMessage:
    """Sign a Solana off-chain message (the enclave decodes it and refuses anything else)."""
    services = services_of(request)
    agent_of(request)
    message = decode_base64("message", body.message)
    sent_hash = hashlib.sha256(message).digest()  # the enclave's receipt hashes the whole off-chain message
    audit = {"message_sha256": sent_hash.hex()}
    try:  # check 1 (`parent_proxy.message_checks`); the enclave applies the same rules (check 2)
        wallet = await bringing_orders(
            services, wallet_id, services.run(check_message, services, wallet_id, message, audit)
        )
    except (ProxyError, PolicyEngineError) as exc:
        raise translate(exc) from exc
    try:
        await services.relay.ensure_wallet(wallet)
    except ApiError as exc:
        await services.run(_message_failed, services, wallet_id, audit, exc.code.value)
        raise
    try:
        answer = await services.relay.sign_message(wallet_id, message)
    except ApiError as exc:
        if exc.status != 403:  # the enclave unavailable, say: nothing decided
            await services.run(_message_failed, services, wallet_id, audit, exc.code.value)
            raise
        try:  # the enclave's refusal (its check 2): recorded, as a denial where its ledger counts one
            await services.run(record_enclave_refusal, services, wallet_id, exc, audit)
        except (ProxyError, PolicyEngineError) as failure:
            raise translate(failure) from failure
        raise

    # The receipt must verify under the attested session key and be about this message (`parent_proxy.
    # enclave_sessions`), then the signature under the stored agent key (`message_checks.record_signed_message`), in
    # the same hop; else no audit record, no signature.
    def record(checked: Checked[DecisionReceipt]) -> bytes:
        record_signed_message(services, wallet, message, answer, audit)
        return checked.session_public_key

    session_key = await services.sessions.record_checked(
        services, answer.receipt, answer.receipt_signature,
        Expected("message", wallet_id, sent_hash, signed=True, decision=None),
        on_failure=lambda error: _message_failed(services, wallet_id, audit, error), record=record,
    )  # fmt: skip
    return SignedMessage(
        signature=str(Signature.from_bytes(answer.signature)),
        receipt=Receipt(
            receipt=base64.b64encode(answer.receipt).decode(),
            signature=str(Signature.from_bytes(answer.receipt_signature)),
            session_public_key=str(Pubkey.from_bytes(session_key)),
        ),
    )


def _wallet_view(services: Services, wallet_id: str) -> WalletView:
    wallet = services.store.get_wallet(wallet_id)
    policy = verified_policy(services, wallet)  # one that no longer verifies: 403 no_policy, never limits of none
    limits: list[LimitLeft] = []
    if policy is not None:
        now = read_clock(services.clock)
        for asset, periods in policy.periods_by_asset.items():
            for period in periods:
                spent = services.store.spent_in_window(wallet_id, asset, period.window_seconds, now)
                limits.append(
                    LimitLeft(
                        asset=asset,
                        window_seconds=period.window_seconds,
                        spent=str(spent),
                        automatic_left=str(max(0, period.tier.automatic - spent)),
                        approval_left=str(max(0, period.tier.approval - spent)),
                    )
                )
    document = wallet.policy_document
    multisig = None if policy is None else policy.rules.squads_multisig
    return WalletView(
        wallet_id=wallet.wallet_id,
        agent_public_key=str(Pubkey.from_bytes(wallet.agent_pubkey)),
        owner_public_key=str(Pubkey.from_bytes(wallet.owner_pubkey)),
        vault_address=str(shown_vault(services.store, wallet, policy)),
        frozen=wallet.frozen,
        frozen_reason=wallet.frozen_reason,
        policy_sequence=wallet.policy_sequence,
        order_sequence=wallet.order_sequence,
        policy_sha256=None if document is None else hashlib.sha256(document).hexdigest(),
        policy_document_sha256=None if policy is None else hashlib.sha256(policy.canonical).hexdigest(),
        policy_expires_at=None if policy is None else policy.expires_at,
        squads_multisig=None if multisig is None else str(multisig),
        limits=limits,
    )


def _policy_envelope(services: Services, wallet_id: str) -> bytes:
    document = services.store.get_wallet(wallet_id).policy_document
    if document is None:
        raise ApiError(Code.NOT_FOUND, "the wallet has no policy")
    return document


@router.get("/{wallet_id}/policy", response_model=SignedEnvelope)
async def get_policy(wallet_id: WalletId, request: Request) -> Response:
    """The installed policy's envelope as the owner signed it and the proxy stored it (404 without a policy): the
    agent checks the owner's signature itself and computes the document hash its receipts state
    (``waiaas agent verify-receipt --policy``)."""
    services = services_of(request)
    agent_of(request)
    try:
        envelope = await services.run(_policy_envelope, services, wallet_id)
    except ProxyError as exc:
        raise translate(exc) from exc
    return Response(envelope, media_type="application/json", headers={"Cache-Control": "no-store"})


@router.get("/{wallet_id}", response_model=WalletView)
async def get_wallet(wallet_id: WalletId, request: Request) -> Any:
    """Addresses, policy sequence and hash, the Squads multisig the policy declares (null: nothing on chain bounds
    the agent key), frozen or not, and what is left of each period limit."""
    services = services_of(request)
    agent_of(request)
    try:
        return await services.run(_wallet_view, services, wallet_id)
    except (ProxyError, PolicyEngineError) as exc:
        raise translate(exc) from exc
