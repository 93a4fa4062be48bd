"""A boto3 client whose named methods run hooks instead, for faults moto does not produce by itself."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from botocore.awsrequest import AWSResponse, HTTPHeaders
from botocore.exceptions import ClientError, EndpointConnectionError

Hook = Callable[..., Any]


@dataclass
class Hooked:
    """The boto3 client, with ``hooks[method](real_method, **kwargs)`` run instead of the named methods."""

    inner: Any
    hooks: dict[str, Hook] = field(default_factory=dict)

    def __getattr__(self, name: str) -> Any:
        real = getattr(self.inner, name)
        hook = self.hooks.get(name)
        return real if hook is None else (lambda **kwargs: hook(real, **kwargs))


class CountingClient:
    """The boto3 client, counting the items DynamoDB read for its queries (``ScannedCount``: before any filter) and
    the items its ``get_item`` calls found."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.items_read = 0
        self.items_got = 0

    def query(self, **kwargs: Any) -> Any:
        page = self.inner.query(**kwargs)
        self.items_read += page["ScannedCount"]
        return page

    def get_item(self, **kwargs: Any) -> Any:
        answer = self.inner.get_item(**kwargs)
        self.items_got += "Item" in answer
        return answer

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


@contextmanager
def first_answer_lost(client: Hooked, operation: str) -> Iterator[list[int]]:
    """Make botocore resend ``operation`` once after its first send was applied, as it does when the answer is lost
    (a read timeout, a 500: "the request may or may not have succeeded"). Yields the list of resends."""
    resent: list[int] = []

    def needs_retry(response: Any, **_: Any) -> int | None:
        if not resent and response is not None and response[0].status_code == 200:
            resent.append(1)
            return 0  # resend now
        return None

    event = f"needs-retry.dynamodb.{operation}"
    client.inner.meta.events.register_first(event, needs_retry)
    try:
        yield resent
    finally:
        client.inner.meta.events.unregister(event, needs_retry)


@contextmanager
def transaction_answer_lost(client: Hooked) -> Iterator[list[str]]:
    """botocore resends a ``TransactWriteItems`` whose first send was applied (its answer lost), with the same
    ``ClientRequestToken``; DynamoDB answers a token it has applied with success and writes nothing (moto does
    not keep tokens, so this does it at the botocore seam). Yields the tokens of the resends."""
    applied: set[str] = set()
    resent: list[str] = []
    events = client.inner.meta.events

    def token(body: Any) -> str:
        return str(json.loads(body)["ClientRequestToken"])

    def before_send(request: Any, **_: Any) -> AWSResponse | None:
        if token(request.body) not in applied:
            return None
        from moto.core.botocore_stubber import MockRawResponse

        return AWSResponse(request.url, 200, HTTPHeaders(), MockRawResponse(b"{}"))

    def needs_retry(response: Any, request_dict: Any, **_: Any) -> int | None:
        sent = token(request_dict["body"])
        if response is not None and response[0].status_code == 200 and sent not in applied:
            applied.add(sent)
            resent.append(sent)
            return 0  # resend now
        return None

    events.register_first("before-send.dynamodb.TransactWriteItems", before_send)
    events.register_first("needs-retry.dynamodb.TransactWriteItems", needs_retry)
    try:
        yield resent
    finally:
        events.unregister("before-send.dynamodb.TransactWriteItems", before_send)
        events.unregister("needs-retry.dynamodb.TransactWriteItems", needs_retry)


ENDPOINT = "https://dynamodb.us-east-1.amazonaws.com"


def connection_lost() -> Exception:
    """The error botocore raises when a send's answer never came and its own retries ran out."""
    return EndpointConnectionError(endpoint_url=ENDPOINT)


@dataclass
class RequestTokens:
    """A ``transact_write_items`` hook: DynamoDB's rule for ``ClientRequestToken``, which moto does not keep (a send
    whose token was applied answers success and writes nothing), and sends that fail on the way.

    ``faults`` names what happens to each send, in order (then ``then`` for every later one, None: nothing):
    ``"applied"``: it reaches the table (applied under the token rule), then its answer is lost (``error()``);
    ``"lost"``: it never arrives (``error()``); ``"conflict"``: it is cancelled for a ``TransactionConflict``,
    nothing written. ``sends`` logs each send's token (a send without one gets a token of its own, as botocore
    gives it)."""

    faults: list[str] = field(default_factory=list)
    then: str | None = None
    error: Callable[[], Exception] = connection_lost
    applied: set[str] = field(default_factory=set)
    sends: list[str] = field(default_factory=list)

    def __call__(self, real: Hook, **kwargs: Any) -> Any:
        token = str(kwargs.get("ClientRequestToken") or uuid.uuid4())
        self.sends.append(token)
        fault = self.faults.pop(0) if self.faults else self.then
        if fault == "lost":
            raise self.error()
        if fault == "conflict":
            raise ClientError(
                {
                    "Error": {"Code": "TransactionCanceledException", "Message": "x"},
                    "CancellationReasons": [{"Code": "TransactionConflict"} for _ in kwargs["TransactItems"]],
                },
                "TransactWriteItems",
            )
        answer: Any = {}
        if token not in self.applied:
            answer = real(**kwargs)  # a cancellation is raised here: nothing applied under this token
            self.applied.add(token)
        if fault == "applied":
            raise self.error()
        return answer


def record_signs(client: Any) -> list[dict[str, Any]]:
    """Record every kms:Sign ``client`` is asked for (the calls still go to it); the list of their arguments."""
    signed: list[dict[str, Any]] = []
    real_sign = client.sign

    def sign(**kwargs: Any) -> Any:
        signed.append(kwargs)
        return real_sign(**kwargs)

    client.sign = sign
    return signed


class Borrowed:
    """A test client lent to the owner CLI, which closes the `httpx.Client` it makes: closing this leaves the
    harness's client open."""

    def __init__(self, client: Any) -> None:
        self._client = client

    def request(self, *args: Any, **kwargs: Any) -> Any:
        return self._client.request(*args, **kwargs)

    def stream(self, *args: Any, **kwargs: Any) -> Any:
        return self._client.stream(*args, **kwargs)

    def close(self) -> None:
        pass
