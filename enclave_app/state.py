"""The enclave's state: the wallet registry, per-boot counters, and the state machine.

States (:class:`~enclave_app.protocol.EnclaveState`), derived from the wallets except for ``failed``::

    booting ──provision/load──> provisioned ──install_policy──> ready <──unfreeze── frozen
                                                                  └───freeze (every wallet)──┘
    any state ──inconsistency──> failed   (sticky: every request is refused until the process restarts)

- booting: no wallet key held; ping, attestation, provision and load are served.
- provisioned: keys held, no policy yet; policies and freeze orders are accepted, nothing is signed.
- ready: at least one unfrozen wallet has a policy and can sign.
- frozen: every wallet held is frozen (a FREEZE verdict or an owner order); only an owner unfreeze lifts it.
- failed: an invariant broke (see :class:`~enclave_app.errors.InconsistentStateError`) or a handler raised
  something unexpected.

Per wallet the enclave keeps: wallet id, owner public key, agent key (memory only), the installed owner-signed
policy (sequence must increase; with ``require_multisig``, it must declare the wallet's Squads multisig), the
frozen flag, the last freeze-order sequence, and a :class:`Ledger` of what it signed and refused since boot (signed
amounts for up to 31 days, the longest window a policy may have). All of it is lost on restart by design; the
parent's counters are the floor.

An installed policy is held as an :class:`InstalledPolicy`: the verified, immutable ``Policy`` plus what the sign
path derives from it (its hash, the ledger horizon, the spending windows, the receipt prefix), computed once at
installation. The owner's signature is checked at installation only; the policy cannot change without a new,
verified installation, so nothing derived from it needs checking again per request.
"""

from __future__ import annotations

import bisect
import hashlib
import logging
import os
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from solders.pubkey import Pubkey

from enclave_app.clock import Clock
from enclave_app.errors import InconsistentStateError, NsmError, StateError
from enclave_app.nsm import Nsm
from enclave_app.protocol import AttestationMode, EnclaveState, ErrorCode
from enclave_app.receipts import SessionKey, receipt_prefix
from policies.decision import Reservation
from policies.document import MAX_WINDOW_SECONDS, Policy

_LOG = logging.getLogger(__name__)


MAX_WALLETS = 1024
"""Wallets one enclave holds (ours: memory per wallet is a few KiB plus its ledger)."""
MAX_LEDGER_ENTRIES = 100_000
"""Entries per wallet ledger (ours: ~100 bytes each, 10 MB per wallet at most): signed amounts, archive buckets,
request and denial times; when full, signing is refused."""
COMPACT_AFTER = 4096
"""Pruned timestamps are dropped from memory once this many (and over half the list) have expired."""
ARCHIVE_BUCKET_SECONDS = 600
"""Signed amounts older than the installed policy's horizon are kept summed per asset in buckets of this length."""
ARCHIVE_SECONDS = MAX_WINDOW_SECONDS
"""How long archived amounts are kept: the longest window any policy may have (31 days, 4464 buckets per asset)."""
SEED_BYTES = 32
MIN_NSM_RANDOM_BYTES = 32
MULTISIG_REQUIRED_MESSAGE = (
    "policy refused: rules.squads_multisig is null, and this enclave requires every policy to declare the "
    "wallet's Squads multisig (WAIAAS_ENCLAVE_REQUIRE_MULTISIG=true)"
)
"""The ``multisig_required`` refusal (under the protocol's 256-character limit on error messages)."""


def fresh_seed(nsm: Nsm) -> bytes:
    """32 bytes for an Ed25519 seed: SHA-256 over NSM randomness and the OS generator (neither alone decides)."""
    random = nsm.get_random()
    if len(random) < MIN_NSM_RANDOM_BYTES:
        raise NsmError("NSM returned too little randomness")
    return hashlib.sha256(random + os.urandom(SEED_BYTES)).digest()


class _Times:
    """Non-decreasing timestamps with O(log n) counting over a trailing window."""

    __slots__ = ("head", "times")

    def __init__(self) -> None:
        self.times: list[float] = []
        self.head = 0

    def __len__(self) -> int:
        return len(self.times) - self.head

    def append(self, at: float) -> None:
        self.times.append(at)

    def count_after(self, cutoff: float) -> int:
        return len(self.times) - bisect.bisect_right(self.times, cutoff, lo=self.head)

    def prune(self, cutoff: float) -> None:
        self.head = bisect.bisect_right(self.times, cutoff, lo=self.head)
        if self.head > COMPACT_AFTER and self.head * 2 > len(self.times):
            del self.times[: self.head]
            self.head = 0


class _Window:
    """Amounts of one asset inside one trailing window, with their running total."""

    __slots__ = ("entries", "seconds", "total")

    def __init__(self, seconds: int, entries: Iterable[tuple[float, int]]) -> None:
        self.seconds = seconds
        self.entries = deque(entries)
        self.total = sum(amount for _, amount in self.entries)

    def add(self, at: float, amount: int) -> None:
        self.entries.append((at, amount))
        self.total += amount

    def slide(self, now: float) -> int:
        cutoff = now - self.seconds
        while self.entries and self.entries[0][0] <= cutoff:
            self.total -= self.entries.popleft()[1]
        return self.total


class Ledger:
    """Per-boot counters of one wallet: amounts signed per asset, requests and denials, with their times.

    Times never go backwards here (a clock step back is recorded at the last time seen), so windows only slide.
    Queries cost O(log n) (counts) or amortized O(1) (running totals per (asset, window)).

    Signed amounts are kept exactly for the installed policy's horizon, then summed per asset into
    `ARCHIVE_BUCKET_SECONDS` buckets kept for `ARCHIVE_SECONDS`. A bucket counts as if all of it were signed at
    its latest possible time (its end, or the prune cutoff when that is earlier, so that it stays older than every
    exact entry), so a window the policy lengthens later (a weekly limit replacing a daily one) still counts what
    was signed before, at most one bucket longer than exactly: never less. A parent that reports too little is
    therefore capped by the enclave over any window a policy can have, not only the horizon of the policy that
    was installed when the amounts were signed. Request and denial times are kept for the horizon only.
    Buckets count against `MAX_LEDGER_ENTRIES` as entries do: there are up to 4465 per asset, and a policy may allow
    up to 256 mints, so uncounted they could hold about 110 MB for one wallet (enclave memory all wallets share).
    """

    __slots__ = (
        "_archive", "_archived", "_last", "_longest", "_outflow_count", "_outflows", "_windows", "denials", "requests",
    )  # fmt: skip

    def __init__(self) -> None:
        self._outflows: dict[str, deque[tuple[float, int]]] = {}
        self._archive: dict[str, deque[tuple[float, float, int]]] = {}  # per asset: (end, counted at, sum)
        self._archived = 0  # buckets in _archive (they count against MAX_LEDGER_ENTRIES, as entries do)
        self._outflow_count = 0
        self._windows: dict[tuple[str, int], _Window] = {}
        self._longest = 0  # longest window in _windows (0: none)
        self.requests = _Times()
        self.denials = _Times()
        self._last = float("-inf")

    def time(self, now: float) -> float:
        self._last = max(self._last, now)
        return self._last

    def prune(self, now: float, horizon: int) -> None:
        cutoff = self.time(now) - horizon
        self.requests.prune(cutoff)
        self.denials.prune(cutoff)
        for asset, entries in self._outflows.items():
            while entries and entries[0][0] <= cutoff:
                self._archive_add(asset, *entries.popleft(), cutoff)
                self._outflow_count -= 1
        archive_cutoff = self._last - ARCHIVE_SECONDS
        for buckets in self._archive.values():
            while buckets and buckets[0][1] <= archive_cutoff:  # every amount in it is older than any window
                buckets.popleft()
                self._archived -= 1
        # Windows longer than the horizon are rebuilt from what is kept if a policy needs them again.
        if self._longest > horizon:
            self._windows = {key: window for key, window in self._windows.items() if key[1] <= horizon}
            self._longest = max((key[1] for key in self._windows), default=0)

    def _archive_add(self, asset: str, at: float, amount: int, cutoff: float) -> None:
        """Add an amount signed at ``at`` (<= ``cutoff``, the prune cutoff) to its bucket, counted at the bucket's
        end or ``cutoff``, whichever is earlier: never before ``at``, never after an exact entry (> ``cutoff``)."""
        end = (at // ARCHIVE_BUCKET_SECONDS + 1) * ARCHIVE_BUCKET_SECONDS
        counted_at = min(end, cutoff)
        buckets = self._archive.setdefault(asset, deque())
        if buckets and buckets[-1][0] == end:
            buckets[-1] = (end, max(counted_at, buckets[-1][1]), buckets[-1][2] + amount)
        else:
            buckets.append((end, counted_at, amount))
            self._archived += 1

    @property
    def held(self) -> int:
        """Entries held against `MAX_LEDGER_ENTRIES`: signed amounts, archive buckets, request and denial times."""
        return self._outflow_count + self._archived + len(self.requests) + len(self.denials)

    def check_room(self, entries: int) -> None:
        if self.held + entries > MAX_LEDGER_ENTRIES:
            raise StateError(ErrorCode.LEDGER_FULL, "per-boot counters are full")

    def spent(self, asset: str, window: int, now: float) -> int:
        now = self.time(now)
        key = (asset, window)
        view = self._windows.get(key)
        if view is None:
            cutoff = now - window
            archived = [(at, amount) for _, at, amount in self._archive.get(asset, ()) if at > cutoff]
            kept = [e for e in self._outflows.get(asset, ()) if e[0] > cutoff]
            view = self._windows[key] = _Window(window, archived + kept)  # in time order: archived ones are older
            self._longest = max(self._longest, window)
        return view.slide(now)

    def count(self, times: _Times, window: int, now: float) -> int:
        return times.count_after(self.time(now) - window)

    def record(self, now: float, *, denied: bool, signed: tuple[Reservation, ...]) -> None:
        now = self.time(now)
        self.requests.append(now)
        if denied:
            self.denials.append(now)
        for reservation in signed:
            self._outflows.setdefault(reservation.asset, deque()).append((now, reservation.amount))
            self._outflow_count += 1
            for (asset, _), view in self._windows.items():
                if asset == reservation.asset:
                    view.add(now, reservation.amount)


@dataclass(frozen=True, slots=True)
class InstalledPolicy:
    """A policy whose owner signature the enclave verified at installation, with what the sign path derives
    from it. Built only by :meth:`Enclave.install_policy`."""

    policy: Policy
    digest: bytes
    """SHA-256 of ``policy.canonical`` (what the owner signed); goes into receipts."""
    horizon: int
    """The longest window the policy looks back over (what the ledger must remember)."""
    spend_windows: tuple[tuple[str, int], ...]
    transaction_receipt_prefix: bytes
    message_receipt_prefix: bytes

    @classmethod
    def of(cls, wallet_id: str, policy: Policy) -> InstalledPolicy:
        rules = policy.rules
        windows = policy.spend_windows()
        horizon = max([window for _, window in windows] + [rules.rate.window_seconds]
                      + ([] if rules.freeze.denials is None else [rules.freeze.denials.window_seconds]))  # fmt: skip
        digest = hashlib.sha256(policy.canonical).digest()
        return cls(
            policy=policy,
            digest=digest,
            horizon=horizon,
            spend_windows=windows,
            transaction_receipt_prefix=receipt_prefix("transaction", wallet_id, policy.sequence, digest),
            message_receipt_prefix=receipt_prefix("message", wallet_id, policy.sequence, digest),
        )


@dataclass(eq=False, slots=True)
class Wallet:
    wallet_id: str
    owner: Pubkey
    agent_key: Ed25519PrivateKey = field(repr=False)
    agent: Pubkey
    installed: InstalledPolicy | None = None
    frozen: bool = False
    order_sequence: int = 0
    ledger: Ledger = field(default_factory=Ledger, repr=False)
    agent_keys: frozenset[Pubkey] = field(init=False, repr=False)
    """``{agent}``: the wallet keys an evaluation context names (built once)."""

    def __post_init__(self) -> None:
        self.agent_keys = frozenset({self.agent})

    @property
    def policy(self) -> Policy | None:
        return None if self.installed is None else self.installed.policy

    @property
    def policy_hash(self) -> bytes | None:
        return None if self.installed is None else self.installed.digest

    @property
    def horizon(self) -> int:
        """The longest window the policy looks back over (what the ledger must remember)."""
        return 0 if self.installed is None else self.installed.horizon


class Enclave:
    """The wallet registry and the state machine. Methods run on the event loop thread only."""

    def __init__(
        self,
        *,
        nsm: Nsm,
        clock: Clock,
        require_multisig: bool,
        max_wallets: int = MAX_WALLETS,
        attestation_mode: AttestationMode = AttestationMode.NITRO,
    ) -> None:
        """``require_multisig`` (``WAIAAS_ENCLAVE_REQUIRE_MULTISIG``; no default here, whoever builds the enclave
        says which): a policy whose ``rules.squads_multisig`` is null is refused (`install_policy`).
        ``attestation_mode``: ``nitro`` asks ``nsm`` for documents (it fails closed with ``nsm_unavailable``
        if the NSM has none); ``none`` answers without a document (:mod:`enclave_app.no_attestation`)."""
        self.nsm = nsm
        self.clock = clock
        self.require_multisig = require_multisig
        self.attestation_mode = attestation_mode
        self.max_wallets = max_wallets
        self.session = SessionKey(fresh_seed(nsm))
        self._wallets: dict[str, Wallet] = {}
        self._failed = False

    # -- state machine ---------------------------------------------------------------------------------------

    @property
    def state(self) -> EnclaveState:
        if self._failed:
            return EnclaveState.FAILED
        if not self._wallets:
            return EnclaveState.BOOTING
        with_policy = [w for w in self._wallets.values() if w.policy is not None]
        if all(w.frozen for w in self._wallets.values()):
            return EnclaveState.FROZEN
        if any(not w.frozen for w in with_policy):
            return EnclaveState.READY
        return EnclaveState.PROVISIONED

    @property
    def wallet_count(self) -> int:
        return len(self._wallets)

    def fail(self, reason: str) -> None:
        """Enter the failed state. ``reason`` is a fixed phrase (it is logged)."""
        if not self._failed:
            _LOG.error("enclave entering the failed state: %s", reason)
        self._failed = True
        for wallet in self._wallets.values():
            wallet.frozen = True

    def check_alive(self) -> None:
        if self._failed:
            raise StateError(ErrorCode.FAILED, "enclave is in the failed state")

    # -- registry --------------------------------------------------------------------------------------------

    def wallet(self, wallet_id: str) -> Wallet:
        self.check_alive()
        wallet = self._wallets.get(wallet_id)
        if wallet is None:
            raise StateError(ErrorCode.UNKNOWN_WALLET, "wallet not loaded")
        return wallet

    def check_new(self, wallet_id: str) -> None:
        self.check_alive()
        if wallet_id in self._wallets:
            raise StateError(ErrorCode.WALLET_EXISTS, "wallet already loaded")
        if len(self._wallets) >= self.max_wallets:
            raise StateError(ErrorCode.WALLET_LIMIT, "wallet limit reached")

    def discard(self, wallet_id: str, agent: bytes) -> None:
        """Drop ``wallet_id`` (`DiscardWalletRequest`): refused unless it is held with the agent key ``agent``, never
        had a policy (a wallet that could sign is not dropped) and is not frozen. A freeze is never dropped (fail-safe:
        refuse, change nothing; the id stays refused until a restart): dropping it would let the parent alone provision
        the id again unfrozen. An honest parent discards only a wallet it just provisioned and could not store."""
        wallet = self.wallet(wallet_id)
        if bytes(wallet.agent) != agent:
            raise StateError(ErrorCode.WALLET_EXISTS, "wallet held with another agent key")
        if wallet.installed is not None:
            raise StateError(ErrorCode.WRONG_STATE, "a wallet with a policy is not discarded")
        if wallet.frozen:
            raise StateError(ErrorCode.WALLET_FROZEN, "a frozen wallet is not discarded")
        del self._wallets[wallet_id]

    def add(self, wallet: Wallet) -> Wallet:
        """Register a wallet whose key was generated or unsealed (off the loop). Re-checks everything.

        A wallet registered meanwhile under the same id with the same keys (two concurrent loads of one wallet, both
        past `check_new` before either unsealed) is success: the wallet already held is kept, with its policy,
        freeze and ledger, and returned. So ``wallet_exists`` always means "held with other keys"."""
        self.check_alive()
        if wallet.agent_key.public_key().public_bytes_raw() != bytes(wallet.agent):
            raise InconsistentStateError("agent key does not match its public key")
        held = self._wallets.get(wallet.wallet_id)
        if held is not None and held.agent == wallet.agent and held.owner == wallet.owner:
            return held
        self.check_new(wallet.wallet_id)
        self._wallets[wallet.wallet_id] = wallet
        return wallet

    def switch_agent_key(self, wallet: Wallet, key: Ed25519PrivateKey, agent: Pubkey) -> None:
        """The wallet signs with ``key`` (public key ``agent``) from now on; its policy, freeze, order sequence
        and ledger stay. Only for a wallet held now, with a key that derives ``agent``."""
        self.check_alive()
        if self._wallets.get(wallet.wallet_id) is not wallet:
            raise InconsistentStateError("agent key switched on a wallet not held")
        if key.public_key().public_bytes_raw() != bytes(agent):
            raise InconsistentStateError("agent key does not match its public key")
        wallet.agent_key = key
        wallet.agent = agent
        wallet.agent_keys = frozenset({agent})

    def install_policy(self, wallet: Wallet, policy: Policy) -> bytes:
        """Install ``policy`` (owner signature verified by the caller) on ``wallet`` and return its digest, or raise
        `StateError` and change nothing: ``multisig_required`` (it declares no Squads multisig and this enclave
        requires one), ``policy_stale`` (sequence not above the installed one, or expired)."""
        if policy.wallet_id != wallet.wallet_id:
            raise InconsistentStateError("policy verified for another wallet")
        if self.require_multisig and policy.rules.squads_multisig is None:
            # Without a multisig the agent key's own account holds the funds: nothing on chain bounds it (DESIGN
            # sections 1 and 10). The parent's own check is not enough: it is not trusted for the final decision.
            raise StateError(ErrorCode.MULTISIG_REQUIRED, MULTISIG_REQUIRED_MESSAGE)
        if wallet.policy is not None and policy.sequence <= wallet.policy.sequence:
            raise StateError(ErrorCode.POLICY_STALE, "policy sequence not above the installed one")
        if policy.expired(self.clock()):  # an old policy a hostile parent brings back after a restart, say
            raise StateError(ErrorCode.POLICY_STALE, "policy has expired")
        wallet.installed = InstalledPolicy.of(wallet.wallet_id, policy)
        return wallet.installed.digest
