"""Table layout, the one place botocore errors are translated, and the conditional-write and transaction helpers,
for `DynamoStore` (its attribute values are encoded and decoded by `dynamodb_attributes`).

One table, string keys ``pk`` (HASH) and ``sk`` (RANGE), TTL attribute ``expires_at``, and one global secondary
index, `OUTBOX_DUE_INDEX` (HASH ``pk``, RANGE ``due_key``, all attributes projected), which holds the outbox's
wallet heads and newcomer marks only (the CDK stack must create it that way; `create_table` does it for tests and
local runs, and ``tests/cdk/test_state_table_matches_store.py`` compares the two). Item layout:

    pk            sk                    item
    W#<wallet>    WALLET                wallet fields + ``ledger_version`` (bumped by every reservation); the
                                        last owner order in ``order_envelope`` / ``order_freeze`` (absent on
                                        items written before they were kept: no order)
    W#<wallet>    RT#<t>#<request>      reservation: amounts (JSON), created_at, status (keyed by time, so that a
                                        limit check reads only its window)
    W#<wallet>    R#<request>           the reservation's created_at (finds ``RT#`` by request id; unique ids)
    W#<wallet>    E#<kind>#<t>#<uuid>   request / denial timestamp
    W#<wallet>    I#<key>               idempotency record
    W#<wallet>    AP#<approval>         approval; ``A#<approval>/APPROVAL`` points back to the wallet
    W#<wallet>    APPROVALS             ``pending``: how many of the wallet's approvals are open: pending, or
                                        approved with a signing under way (see `dynamodb_approvals`)
    W#<wallet>    AM#<message hash>     ``approval_id``: the wallet's one open, or signed, approval of that
                                        transaction message (see `dynamodb_message_marks`)
    SIGNING       <approval>            an approved approval whose signing is under way (``wallet_id``,
                                        ``decided_at``), found by `stalled_approvals` (see `dynamodb_approvals`)
    W#<wallet>    WEBHOOK               webhook url + secret
    W#<wallet>    AGENT_KEY_CANDIDATE   the wallet's candidate agent key; ``AKR#<seq>``: retired agent keys (see
                                        `dynamodb_agent_keys`, which also adds ``agent_key_switches`` to WALLET)
    T#<token id>  TOKEN                 wallet id, SHA-256 of the secret, revoked_at
    OUTBOX        <event id>            a pending outbox item (moved to ``O#<event>/ITEM`` when finished, with
                                        ``expires_at``: `validation.OUTBOX_RETENTION_SECONDS` after its last attempt;
                                        see `dynamodb_outbox`)
    W#<wallet>    OUTBOX#<due key>      a pointer to a pending item of the wallet, in due order (see
                                        `dynamodb_outbox_heads`)
    OUTBOX_WALLETS <wallet>#HEAD        the wallet's head: ``due_key`` of its earliest pending item, held back to
                                        the end of its pause (``paused_until``) (its key in `OUTBOX_DUE_INDEX`),
                                        its delivery in flight, ``version``
    OUTBOX_WALLETS <wallet>#NEW         its newcomer mark: ``due_key`` of the first item enqueued since a claim last
                                        folded it into the head (in the index too), ``version``
    O#<event>     D#<attempt>           delivery log line (``expires_at``: the retention after its attempt)
    AUDIT         HEAD / R#<seq>        audit head (seq, hash) and records
    LAYOUT        OUTBOX_HEADS          present once outbox items written before heads have been moved over
                                        (`dynamodb_outbox_layout`)
    CN#<owner>    N#<nonce>             a wallet-creation nonce of that owner key (hex): ``held_until`` (see
                                        `dynamodb_creation_nonces`)

Wallets, tokens, idempotency records and approvals also carry ``write_id``: the id of the last conditional write
of theirs that is not idempotent by itself (creation, policy install, claim, stored answer, decision, reopening); it
tells a botocore resend of that write from a refusal (`DynamoBase._write_once`). (Outbox items written before the
claim became a transaction carry one too: their last lease id.) Audit records carry one as well, fresh for each
transaction that appends one: after a transaction whose answer never came, it tells whether the record at its
seq is this transaction's (`DynamoOutboxAudit._transact_recorded`).

Every ``TransactWriteItems`` carries a request token (``ClientRequestToken``) of its own; a send whose answer was
lost is sent again under the same token, which DynamoDB applies once (`DynamoBase._transact`); a transaction still
unanswered after those resends raises `StoreOutcomeUnknown`: written in full or not at all. One that appends an
audit record, reserves, or claims an idempotency key first looks for the item only it can have written (its
record's write id, the reservation's ``R#`` pointer, the claim's write id: `DynamoBase._written`); otherwise the
caller must find out before it gives anything back.

Layout versions are not detected. The adapter never creates the production table (the CDK stack does, and the
instance role may not scan it), so it cannot mark a new table with its layout, and an unmarked table could be new
or old. Before the ``RT#`` keys (commit 532a17c) a reservation was the item ``W#<wallet>/R#<request>`` itself: this
adapter does not see such reservations, so on a table written by an older one its limit checks would not count
them (failing open for the windows they fall in, up to `validation.MAX_WINDOW_SECONDS`) and their commit or
release would be `NotFound`. Such a deployment moves to a new table. Pending outbox items written before wallet
heads have no pointer; the first claim of each store moves them over once per table (`dynamodb_outbox_layout`;
items of the layouts before that, with their own ``due_key`` or none, and ``W#<wallet>/OUTBOX_LEASE`` items, which
are left unread).
A layout-version item, written by the stack
that creates the table and checked when the store opens, would make the next layout change detectable.
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError, ParamValidationError

from parent_proxy.errors import Conflict, NotFound, StoreError, StoreOutcomeUnknown, StoreUnavailable
from parent_proxy.store.dynamodb_attributes import s

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.client import DynamoDBClient

Item = dict[str, Any]

TTL_ATTRIBUTE = "expires_at"
OUTBOX_DUE_INDEX = "outbox_due"
"""The global secondary index of the outbox's wallet heads and newcomer marks by due time
(`dynamodb_outbox_heads`)."""
DUE_ATTRIBUTE = "due_key"
"""Its sort key: present on heads and marks only, so the index holds nothing else."""
CONDITION_FAILED = "ConditionalCheckFailed"
WRITE_ID = "write_id"
"""A fresh random id stored by each single-item conditional write that is not idempotent (see `_write_once`)."""
TRANSIENT_REASONS = frozenset({"TransactionConflict", "ThrottlingError", "ProvisionedThroughputExceeded"})
"""Cancellation reasons that say nothing about the stored state (another transaction held one of the items, or the
table was throttled): the same transaction may succeed when sent again. ``None`` marks the actions that were fine."""
TRANSACT_ATTEMPTS = 5
"""Sends of one transaction cancelled for `TRANSIENT_REASONS` only, before the store reports itself unavailable."""
TRANSACT_BACKOFF_SECONDS = 0.003
"""Upper bound of the first jittered pause between those sends; it doubles with each one (at most ~0.1 s in all)."""
UNANSWERED_CODES = frozenset({"InternalServerError", "ServiceUnavailable", "TransactionInProgressException"})
"""Error codes after which a ``TransactWriteItems`` may have been applied (or, in progress, may still be): with a
5xx status, they leave its outcome unknown (see `unanswered`)."""
UNANSWERED_RESENDS = 3
"""Resends of a transaction whose outcome is unknown, with its own request token, before `StoreOutcomeUnknown`."""
UNANSWERED_BACKOFF_SECONDS = 0.05
"""Upper bound of the first jittered pause before such a resend; it doubles with each one (at most ~0.35 s in all:
each send is already botocore's, with its own retries)."""


class ConditionFailed(Conflict):
    """A conditional write (or one action of a transaction) did not hold. ``reasons``: per-action codes; ``item``:
    the stored item, when a single-item write asked for it (``ReturnValuesOnConditionCheckFailure``) and it exists."""

    def __init__(self, reasons: list[str], item: Item | None = None) -> None:
        super().__init__(f"conditional write refused: {reasons}")
        self.reasons = reasons
        self.item = item


class Contended(StoreUnavailable):
    """A transaction cancelled for `TRANSIENT_REASONS` only: nothing was written; it may be sent again."""

    def __init__(self, reasons: list[str]) -> None:
        super().__init__(f"dynamodb store unavailable: transaction cancelled {reasons}")
        self.reasons = reasons


def translation(exc: ClientError | BotoCoreError) -> StoreError:
    """The one place where botocore errors become store errors. A cancelled transaction is `ConditionFailed` only
    when one of its conditions failed; cancelled for transient reasons only it is `Contended`; otherwise (e.g. a
    ``ValidationError``) `StoreUnavailable`: never a refusal that the stored state did not make."""
    if isinstance(exc, BotoCoreError):
        return StoreUnavailable(f"dynamodb store unavailable: {type(exc).__name__}")
    code = exc.response.get("Error", {}).get("Code", "")
    if code == "ConditionalCheckFailedException":
        stored = exc.response.get("Item")  # present when the write asked for it and the item exists
        return ConditionFailed([CONDITION_FAILED], stored if isinstance(stored, dict) else None)
    if code == "TransactionCanceledException":
        reasons = [r.get("Code", "None") for r in exc.response.get("CancellationReasons", [])]
        if CONDITION_FAILED in reasons:
            return ConditionFailed(reasons)
        causes = set(reasons) - {"None"}
        if causes and causes <= TRANSIENT_REASONS:
            return Contended(reasons)
        return StoreUnavailable(f"dynamodb store unavailable: transaction cancelled {reasons}")
    return StoreUnavailable(f"dynamodb store unavailable: {code or 'error'}")


@contextmanager
def translate() -> Iterator[None]:
    """Raise botocore's errors as their `translation`, chained to them."""
    try:
        yield
    except (ClientError, BotoCoreError) as exc:
        raise translation(exc) from exc


def cancelled(exc: ClientError | BotoCoreError) -> bool:
    """A ``TransactionCanceledException``: DynamoDB ran the transaction (under its token) and wrote nothing."""
    return isinstance(exc, ClientError) and exc.response.get("Error", {}).get("Code") == "TransactionCanceledException"


def unanswered(exc: ClientError | BotoCoreError) -> bool:
    """Whether a failed ``TransactWriteItems`` may have been applied all the same.

    botocore resends a request whose answer was lost (connection closed, read timeout, a 5xx, throttling) with the
    same token, up to its retry limit, and raises the last send's error: any send before it may have been applied.
    So the outcome is unknown after a transport error (any `BotoCoreError` but a request refused before it was
    sent, `ParamValidationError`), after `UNANSWERED_CODES` or a 5xx status, and after any other error but a
    cancellation once botocore has retried (``RetryAttempts``): DynamoDB answers a resend whose token it applied
    with success, so only a cancellation or an error on the first send says that nothing was written."""
    if isinstance(exc, BotoCoreError):
        return not isinstance(exc, ParamValidationError)
    if cancelled(exc):
        return False
    code = exc.response.get("Error", {}).get("Code", "")
    metadata = exc.response.get("ResponseMetadata", {})
    status = metadata.get("HTTPStatusCode", 0)
    return code in UNANSWERED_CODES or status >= 500 or metadata.get("RetryAttempts", 0) > 0


def _named(exc: ClientError | BotoCoreError) -> str:
    return exc.response.get("Error", {}).get("Code", "error") if isinstance(exc, ClientError) else type(exc).__name__


def _pause(upper_bound: float, attempt: int) -> None:
    time.sleep(random.uniform(0, upper_bound * 2 ** (attempt - 1)))  # noqa: S311 - jitter only


def create_table(client: DynamoDBClient, table: str) -> None:
    """Create the table (on-demand billing) with its index and enable TTL. For tests and local runs; CDK owns
    production (``cdk/state_stack.py``, which must declare the same keys and index)."""
    with translate():
        client.create_table(
            TableName=table,
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
            AttributeDefinitions=[
                {"AttributeName": "pk", "AttributeType": "S"},
                {"AttributeName": "sk", "AttributeType": "S"},
                {"AttributeName": DUE_ATTRIBUTE, "AttributeType": "S"},
            ],
            GlobalSecondaryIndexes=[
                {
                    "IndexName": OUTBOX_DUE_INDEX,
                    "KeySchema": [
                        {"AttributeName": "pk", "KeyType": "HASH"},
                        {"AttributeName": DUE_ATTRIBUTE, "KeyType": "RANGE"},
                    ],
                    "Projection": {"ProjectionType": "ALL"},
                }
            ],
            BillingMode="PAY_PER_REQUEST",
        )
        client.get_waiter("table_exists").wait(TableName=table)
        client.update_time_to_live(
            TableName=table, TimeToLiveSpecification={"Enabled": True, "AttributeName": TTL_ATTRIBUTE}
        )


def new_write_id() -> str:
    return uuid.uuid4().hex


class DynamoBase:
    """Client, table name and small read helpers shared by the halves of `DynamoStore`."""

    def __init__(self, client: DynamoDBClient, table: str) -> None:
        self._client = client
        self._table = table

    def _get(self, pk: str, sk: str) -> Item | None:
        with translate():
            response = self._client.get_item(TableName=self._table, Key={"pk": s(pk), "sk": s(sk)}, ConsistentRead=True)
        item: Item | None = response.get("Item")
        return item

    def _query(
        self, pk: str, *, prefix: str | None = None, between: tuple[str, str] | None = None, limit: int = 0
    ) -> list[Item]:
        """All items of partition ``pk`` whose sort key begins with ``prefix`` or lies ``between``, in order."""
        if prefix is not None:
            condition, values = "pk = :pk AND begins_with(sk, :p)", {":pk": s(pk), ":p": s(prefix)}
        elif between is not None:
            condition = "pk = :pk AND sk BETWEEN :lo AND :hi"
            values = {":pk": s(pk), ":lo": s(between[0]), ":hi": s(between[1])}
        else:
            condition, values = "pk = :pk", {":pk": s(pk)}
        items: list[Item] = []
        kwargs: dict[str, Any] = {}
        while True:
            if limit:
                kwargs["Limit"] = limit - len(items)
            with translate():
                page = self._client.query(
                    TableName=self._table,
                    KeyConditionExpression=condition,
                    ExpressionAttributeValues=values,
                    ConsistentRead=True,
                    **kwargs,
                )
            items.extend(page.get("Items", []))
            if "LastEvaluatedKey" not in page or (limit and len(items) >= limit):
                return items
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def _transact(self, actions: list[Any]) -> None:
        """One ``TransactWriteItems`` of ``actions``, under a request token of its own (``ClientRequestToken``:
        DynamoDB applies a token once, and answers a resend of an applied one, within 10 minutes, with success).

        1. Cancelled for transient reasons only (`Contended`: nothing was written), it is sent again, under a new
           token, after a short jittered pause, at most `TRANSACT_ATTEMPTS` times in all; then `Contended` (a
           `StoreUnavailable`, 503) is raised. A failed condition raises `ConditionFailed` at once.
        2. A send that may have been applied (`unanswered`) is sent again under the same token, at most
           `UNANSWERED_RESENDS` times, until DynamoDB answers it: with success (applied, by this send or an earlier
           one) or a cancellation (not applied: as in 1). Any other error leaves it unknown; still unknown after
           the last resend, `StoreOutcomeUnknown` is raised: the transaction was applied in full or not at all."""
        token, contended, resends = new_write_id(), 0, 0
        while True:
            try:
                self._client.transact_write_items(TransactItems=actions, ClientRequestToken=token)
                return
            except (ClientError, BotoCoreError) as exc:
                if (resends or unanswered(exc)) and not cancelled(exc):
                    resends += 1
                    if resends > UNANSWERED_RESENDS:
                        raise StoreOutcomeUnknown(f"dynamodb store unavailable: unanswered ({_named(exc)})") from exc
                    _pause(UNANSWERED_BACKOFF_SECONDS, resends)
                    continue
                error = translation(exc)
                contended += 1
                if not isinstance(error, Contended) or contended == TRANSACT_ATTEMPTS:
                    raise error from exc
            token, resends = new_write_id(), 0  # nothing was written under the old token
            _pause(TRANSACT_BACKOFF_SECONDS, contended)

    def _written(self, pk: str, sk: str, write_id: str | None = None) -> bool | None:
        """After a transaction whose outcome is unknown (`StoreOutcomeUnknown`), whether the item ``pk``/``sk``
        that it puts is there (with ``write_id`` as its `WRITE_ID`, if given): True: the transaction was applied.
        False: the item is another write's. None: no such item, or it cannot be read: still unknown."""
        try:
            item = self._get(pk, sk)
        except StoreUnavailable:
            return None
        if item is None:
            return None
        return write_id is None or item.get(WRITE_ID) == s(write_id)

    def _write_once(self, operation: str, request: dict[str, Any], write_id: str) -> None:
        """Send one conditional single-item write (``put_item`` or ``update_item``) whose ``request`` stores
        ``write_id`` (from `new_write_id`) in the item's `WRITE_ID` attribute; the stored item is asked for if the
        condition fails.

        botocore resends a write whose response was lost (a timeout, a 500); if the first send was applied, the
        resend fails its condition against this very write. The stored item then carries this call's write id:
        that is success, not a refusal. Any other refusal raises `ConditionFailed` with the stored item (None:
        there is none). Nothing is returned: no caller reads the item back from its write."""
        call = getattr(self._client, operation)
        try:
            with translate():
                call(**request, ReturnValuesOnConditionCheckFailure="ALL_OLD")
        except ConditionFailed as exc:
            if exc.item is None or exc.item.get(WRITE_ID) != s(write_id):
                raise

    def _require_wallet(self, wallet_id: str) -> Item:
        item = self._get(f"W#{wallet_id}", "WALLET")
        if item is None:
            raise NotFound(f"wallet {wallet_id} not found")
        return item

    def close(self) -> None:
        self._client.close()
