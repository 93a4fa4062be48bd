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
frozen flag, the last freeze-order sequence, and a :class:`~enclave_app.ledger.Ledger` of what it signed and
refused since boot (signed amounts for up to 31 days, the longest window a policy may have). All of it is lost on
restart by design; the parent's counters are the floor.

An installed policy is held as an :class:`InstalledPolicy`: the verified, immutable ``Policy`` plus what the sign
path derives from it (its hash, the ledger horizon, the spending windows, the receipt prefix), computed once at
installation. The owner's signature is checked at installation only; the policy cannot change without a new,
verified installation, so nothing derived from it needs checking again per request.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from solders.pubkey import Pubkey

from enclave_app.clock import Clock
from enclave_app.errors import InconsistentStateError, NsmError, StateError
from enclave_app.ledger import Ledger
from enclave_app.nsm import Nsm
from enclave_app.protocol import AttestationMode, EnclaveState, ErrorCode
from enclave_app.receipts import SessionKey, receipt_prefix
from policies.document import Policy

_LOG = logging.getLogger(__name__)


MAX_WALLETS = 1024
"""Wallets one enclave holds (ours: memory per wallet is a few KiB plus its ledger)."""
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
        past `check_new` before either unsealed; the server unseals one load of an id at a time, so this is defence
        in depth) is success: the wallet already held is kept, with its policy, freeze and ledger, and returned. So
        ``wallet_exists`` always means "held with other keys"."""
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
