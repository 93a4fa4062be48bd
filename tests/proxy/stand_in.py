"""A stand-in enclave on the API harness's socket for a provisioned wallet, what the chain was sent, a refusal."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from enclave_app.receipts import SessionKey
from tests.proxy.api_harness import (
    Harness,
    LoopThread,
    agent_private_key,
    new_session_key,
    spy_calls,
    start_stand_in_enclave,
)

CONTRADICTS = "the enclave answered a receipt that contradicts its answer; nothing was signed"


class StandIn:
    """A provisioned wallet (messages allowed), its real agent key, and a stand-in enclave put on the socket by
    `answer`; ``calls`` counts the signing requests it answered."""

    def __init__(self, h: Harness, loop: LoopThread, servers: list[Any]) -> None:
        self.h, self.loop, self.servers = h, loop, servers
        self.agent = agent_private_key(h)
        self.session = new_session_key()
        self.calls = 0

    def answer(self, make: Callable[[SessionKey], Any]) -> None:
        def counted() -> Any:
            self.calls += 1
            return make(self.session)

        self.servers.append(start_stand_in_enclave(self.loop, self.h.socket, self.session, counted))
        self.h.services.relay._loaded[self.h.wallet_id] = 1  # the stand-in answers the signing request itself


def submissions(h: Harness) -> list[bytes]:
    """Wrap the chain adapter's submit; the list grows by each transaction submitted."""
    return spy_calls(h.services.chain, "submit")
