"""What the HTTP layer needs, assembled once: store, clock, enclave relay, chain, audit log, limits, caches.

`Services` is built by `parent_proxy.app.build_services` from `Settings` in production and directly by tests
(with a real store, the real enclave app or a seam double, and a settable clock).
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from solders.pubkey import Pubkey

from parent_proxy.audit import AuditLog
from parent_proxy.auth import RateLimiter
from parent_proxy.chain import Chain
from parent_proxy.clock import Clock
from parent_proxy.completions import Completions
from parent_proxy.enclave_relay import EnclaveRelay
from parent_proxy.enclave_sessions import EnclaveSessions
from parent_proxy.metrics import Metrics
from parent_proxy.order_receipts import OrderReceipts
from parent_proxy.owner_audience_log import ForeignAudienceLog
from parent_proxy.owner_auth import NonceRegistry
from parent_proxy.sealed_copies import SealedCopies
from parent_proxy.signer_secret import SignerSecretCheck
from parent_proxy.store.model import OutboxItem, Wallet
from parent_proxy.store.protocol import Store
from parent_proxy.webhooks import event_item
from parent_proxy.worker_threads import WorkerThreads
from policies.document import Policy
from policies.signing import load_signed_policy

logger = logging.getLogger(__name__)
T = TypeVar("T")
MAX_CACHED_POLICIES = 10_000


@dataclass
class Services:
    store: Store
    clock: Clock
    relay: EnclaveRelay
    chain: Chain
    rate_limiter: RateLimiter
    attestation_limiter: RateLimiter
    """``GET /v1/attestation``'s one bucket, and one per owner key for the owner routes' ``?nonce=``
    (`parent_proxy.auth.attestation_limiter`)."""
    nonces: NonceRegistry
    owner_keys: frozenset[Pubkey]
    public_origins: frozenset[str]
    """`Settings.public_origins`: the audiences an owner request may be signed for (`parent_proxy.owner_auth`)."""
    owner_max_skew_seconds: float
    max_body_bytes: int
    require_multisig: bool
    """`Settings.require_multisig`: a policy without ``rules.squads_multisig`` is refused at install
    (`parent_proxy.multisig_onchain.check_install`). No default: whoever builds the services says which."""
    metrics: Metrics = field(default_factory=Metrics)
    metrics_access: str = "any"
    """`Settings.metrics_access`: who is served ``GET /metrics`` (`parent_proxy.metrics.served_to`)."""
    sessions: EnclaveSessions = field(default_factory=EnclaveSessions)
    """The enclave session key in force; every receipt is checked against it before it is recorded."""
    signer_secret: SignerSecretCheck = field(default_factory=SignerSecretCheck)
    """Whether the enclave session opens the stored wallets: no wallet is made by one that does not."""
    completions: Completions = field(default_factory=Completions)
    """State-changing requests, each run to its end in its own task (`parent_proxy.completions`)."""
    audience_log: ForeignAudienceLog = field(default_factory=ForeignAudienceLog)
    """The operator's warnings about owner requests signed for an origin not configured
    (`parent_proxy.owner_audience_log`)."""
    sealed_copies: SealedCopies | None = None
    """Where new sealed agent keys are copied before the store keeps them (`parent_proxy.sealed_copies`): the data
    bucket of ``WAIAAS_DATA_BUCKET`` or the directory of ``WAIAAS_SEALED_KEYS_DIR``; None keeps no copy."""
    _policies: dict[tuple[str, int, bytes], Policy] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    store_threads: int = 1
    """Worker threads for store work. SQLite serialises writers on a file lock whose busy handler sleeps: one
    thread per process avoids that contention (measured: p99 several times lower); DynamoDB can use more."""

    def __post_init__(self) -> None:
        self.audit = AuditLog(self.store, self.clock)
        self._workers = WorkerThreads(self.store_threads)
        self.relay.order_log = OrderReceipts(self)  # every order receipt checked and recorded (`order_receipts`)

    async def run(self, function: Callable[..., T], *args: Any) -> T:
        """Run blocking store work off the event loop (one worker-thread hop per phase of a request), on at most
        `store_threads` threads at once (`parent_proxy.worker_threads`)."""
        return await self._workers.run(function, *args)

    def policy_for(self, wallet: Wallet) -> Policy | None:
        """The wallet's installed policy, signature re-verified against the wallet's owner key (cached by hash)."""
        document = wallet.policy_document
        if document is None:
            return None
        key = (wallet.wallet_id, wallet.policy_sequence, hashlib.sha256(document).digest())
        with self._lock:
            cached = self._policies.get(key)
        if cached is not None:
            return cached
        policy = load_signed_policy(document, owner=Pubkey.from_bytes(wallet.owner_pubkey), wallet_id=wallet.wallet_id)
        with self._lock:
            if len(self._policies) >= MAX_CACHED_POLICIES:
                self._policies.clear()
            self._policies[key] = policy
        return policy

    def audit_safely(
        self, event_type: str, payload: object, *, wallet_id: str | None, receipt: bytes | None = None
    ) -> bool:
        """Append an audit record on a failure path; if even that fails, say so in the log (never raise)."""
        try:
            self.audit.append(event_type, payload, wallet_id=wallet_id, receipt=receipt)
        except Exception:
            logger.exception("audit record %s for wallet %s could not be written", event_type, wallet_id)
            self.metrics.count("waiaas_audit_failures_total")
            return False
        return True

    def webhook_item(self, wallet_id: str, event_type: str, data: object) -> OutboxItem | None:
        """The outbox item for a notification, None when the wallet has no webhook. The caller writes it in the same
        store transaction as the event's audit record (``AuditLog.append(..., webhook=...)``, or
        `Store.finish_signing`), so an audited event is never without its notification. A failure to read the
        wallet's webhook settings is raised like any store failure: the request fails, nothing is dropped quietly."""
        if self.store.get_webhook(wallet_id) is None:
            return None
        return event_item(self.clock, wallet_id, event_type, data)


def canonical(value: object) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
