"""A Solana RPC node stand-in at the HTTP seam: selfhost.local_chain's JSON-RPC methods over a real LiteSVM behind an
httpx MockTransport, applying ``getMultipleAccounts``' ``dataSlice`` as a Solana node does (the local chain itself
returns whole accounts), recording what it was asked and how much it answered."""

from __future__ import annotations

import base64
import json
from typing import Any

import httpx
from solders.litesvm import LiteSVM

from selfhost import local_chain


def sliced(body: dict[str, Any], answer: dict[str, Any], *, space: bool) -> dict[str, Any]:
    """``answer`` with the request's ``getMultipleAccounts`` dataSlice applied to each account's data, as a Solana
    node does (``space`` stays the whole account's size; without ``space``, as from a node that does not say it)."""
    if body.get("method") != "getMultipleAccounts" or "result" not in answer:
        return answer
    window = body["params"][1].get("dataSlice")
    for value in answer["result"]["value"]:
        if value is not None and window is not None:
            data = base64.b64decode(value["data"][0])[window["offset"] : window["offset"] + window["length"]]
            value["data"][0] = base64.b64encode(data).decode()
        if value is not None and not space:
            del value["space"]
    return answer


def node(
    svm: LiteSVM, seen: list[dict[str, Any]], sizes: list[int] | None = None, *, space: bool = True
) -> httpx.AsyncClient:
    """A client whose transport is a Solana node stand-in over ``svm``; ``seen``: the request bodies it got;
    ``sizes``: the byte length of each answer it gave; ``space``: whether its accounts say their size."""
    backend = local_chain.LocalChain(svm)

    def handle(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        seen.append(body)
        answer = json.dumps(sliced(body, local_chain.handle_body(backend, request.content), space=space)).encode()
        if sizes is not None:
            sizes.append(len(answer))
        return httpx.Response(200, content=answer, headers={"Content-Type": "application/json"})

    return httpx.AsyncClient(transport=httpx.MockTransport(handle))
