"""Two hosts over one store: proxies A and B (`api_harness`) with an enclave each, one owner, one wallet.

What a fleet of enclave hosts behind one load balancer looks like to the code (`cdk` ``waiaas:hostCount`` > 1): the
store (here one SQLite file) is shared, each proxy relays to its own enclave, and every enclave chains to one root
(one development NSM here, as every Nitro host chains to AWS's).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from enclave_app.dev_nsm import UnsafeDevelopmentNsm
from tests.proxy.api_harness import Harness, LoopThread, build_harness, provision, start_enclave


@contextmanager
def two_hosts(
    tmp_path: Path, nsm: UnsafeDevelopmentNsm
) -> Iterator[tuple[Harness, Harness, LoopThread, list[asyncio.Server]]]:
    """A and B (their folders ``tmp_path/a`` and ``tmp_path/b``), a wallet created and given its policy through A and
    known to B's harness (B's enclave has not loaded it yet), the event loop, and the enclave servers (A's, then
    B's: a test restarting one replaces it in the list). Everything is stopped on exit."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    loop = LoopThread()
    servers: list[asyncio.Server] = []
    try:
        a = build_harness(tmp_path / "a", loop)
        b = build_harness(tmp_path / "b", loop, store=a.store)  # the shared store, B's own enclave
        b.owner = a.owner  # one owner for the fleet
        servers.extend(start_enclave(loop, h.socket, nsm=nsm, clock=h.clock) for h in (a, b))
        with a.client, b.client:
            provision(a)
            b.wallet_id, b.agent, b.token = a.wallet_id, a.agent, a.token
            yield a, b, loop, servers
    finally:
        for server in servers:
            server.close()
        loop.stop()
