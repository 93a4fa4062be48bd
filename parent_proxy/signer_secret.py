"""Wallet creation only by a signer that opens the stored wallets: one with another unseal secret makes none.

A signer (the Nitro enclave, or the self-hosted ``signer`` service) started with another unseal secret than the one
that sealed the stored wallets (self-host: an edited, re-encoded or wrongly restored secret file; cloud: another KMS
key) still answers pings and refuses every stored wallet (``unseal_failed``), but would provision new wallets
sealed under what it holds. Such a wallet's agent key, a member of its 2-of-2 multisig, would never open again once
the right secret is back, and ``waiaas selfhost reseal`` cannot repair a store sealed under two secrets. So the
proxy provisions a wallet only in a signer session that has opened a stored wallet (`SignerSecretCheck.ensure`):

1. The session: a ping names the signer's per-boot session key. A session in which a stored wallet opened is
   remembered, so later creations in it cost that ping only.
2. The candidates: the stored wallets named by the most recent audit records, newest first, each once
   (:func:`recent_wallets`). Every wallet creation writes its ``wallet.created`` record in the same store
   transaction as the wallet, and the log is never pruned, so the log names every stored wallet; none named: the
   store holds no wallet, and the creation goes ahead unchecked (there is nothing a secret must open yet). A
   stored wallet whose id the one wallet-id rule refuses (`policies.identifiers.is_wallet_id`: ``team:alpha``,
   say, which builds before that rule took) is skipped before any enclave call, and logged once per proxy process:
   the signer refuses such an id in every request (`enclave_app.protocol_wire`), so it can prove nothing about the
   secret, and trying it would make every creation and ``/readyz`` a 503. A store holding only such wallets is
   checked as an empty one (docs/selfhost.md, upgrading: such wallets cannot be used after the upgrade).
3. Candidates are loaded one at a time (`EnclaveRelay.open_wallet`: the stored blob, pinned to the stored agent
   key, with the wallet's freeze). The first that opens ends the check: a wallet the signer already holds counts
   (it opened it in this session, or made it after the check passed in this session), also with other keys than
   the stored ones (``wallet_exists``: a switch to a candidate the store has not recorded yet, say): the signer
   unsealed that wallet's key in this session all the same (its own requests still refuse the mismatch,
   `EnclaveRelay.ensure_wallet`). A candidate that fails
   with ``unseal_failed`` or ``kms_unavailable`` is passed over for the next one (`PASSED_OVER`), so that one
   damaged blob does not block creation while other wallets open. When `MAX_CANDIDATES` wallets (or all there
   are) failed with ``unseal_failed``: 503 ``signer_secret_mismatch``, logged and remembered for the session (a
   signer does not change its secret while it runs; restarting it ends the session); when some failed with
   ``kms_unavailable``: 503 ``enclave_unavailable``. KMS refusing the enclave's attestation (an image whose PCRs
   the key policy does not name): 503 ``attestation_refused``. Any other failure: 503 as the relay translates it.
   Only the mismatch is remembered: after anything else the next creation checks again.
4. A second ping must name the same session key (else the signer restarted during the check: 503
   ``enclave_unavailable``); then the session is remembered.

The provisioning itself must come from the checked session (:func:`provision_checked`): its provisioning receipt
verifies under that session key (an enclave too old to sign one: a ping right after names that key). Otherwise the
signer restarted between the check and the provisioning, under a secret nothing has checked: the enclave is told
to drop the wallet, and the answer is 503 ``enclave_unavailable`` with nothing stored (the owner sends the same
creation again).

``GET /readyz`` runs the same check (`parent_proxy.app`): a signer that opens none of the stored wallets is not
ready, which the self-host healthcheck and ``waiaas selfhost up`` report at start.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING

import anyio

from enclave_app.errors import EnclaveError, EnclaveRequestError, ReceiptError
from enclave_app.protocol import ErrorCode, WalletResponse
from enclave_app.receipts import verify_provision_receipt
from parent_proxy.api_errors import ApiError, Code, translate
from parent_proxy.enclave_errors import translate_enclave_error
from parent_proxy.errors import NotFound, ProxyError
from parent_proxy.store.model import Wallet
from parent_proxy.store.protocol import Store
from policies.identifiers import is_wallet_id

if TYPE_CHECKING:
    from parent_proxy.services import Services

logger = logging.getLogger(__name__)

MAX_CANDIDATES = 3
"""Stored wallets tried before a signer that opens none of them is taken to hold another secret: one damaged blob
(or two) does not block creation, and a wrong secret costs at most this many failed unseals per signer session."""
PASSED_OVER = frozenset({ErrorCode.UNSEAL_FAILED, ErrorCode.KMS_UNAVAILABLE})
"""A candidate's load failures that may be the wallet's own (a damaged blob: the AEAD, or KMS refusing its data
key's ciphertext), so the next candidate is tried. Only ``unseal_failed`` on every candidate tried says the secret
is another."""
AUDIT_PAGE = 256
"""Audit records read per store call while looking for candidates, newest first."""

MISMATCH_MESSAGE = (
    "the signer cannot open the stored wallets' sealed keys: it runs with another unseal secret (self-host: "
    "restore the secret file from your backup and restart the signer; cloud: check the KMS key) than the one "
    "they were sealed under; no wallet is created until it opens them, nothing was provisioned"
)
UNOPENED_MESSAGE = "the signer could not open a stored wallet (KMS unavailable); nothing was provisioned"
RESTARTED_MESSAGE = "the signer restarted during the wallet creation; nothing was stored: send it again, signed anew"


def recent_wallets(store: Store) -> Iterator[Wallet]:
    """The stored wallets named by the audit log, the most recent record first, each wallet once. A record's
    wallet that is not stored is passed over. Reads a page of `AUDIT_PAGE` records at a time, and only as far
    back as the caller iterates."""
    head = store.audit_head()
    seen: set[str] = set()
    end = 0 if head is None else head.seq
    while end > 0:
        start = max(0, end - AUDIT_PAGE)
        for record in reversed(store.audit_records(start, end - start)):
            wallet_id = record.wallet_id
            if record.seq > end or wallet_id is None or wallet_id in seen:
                continue
            seen.add(wallet_id)
            try:
                wallet = store.get_wallet(wallet_id)
            except NotFound:
                continue
            yield wallet
        end = start


def _next(candidates: Iterator[Wallet]) -> Wallet | None:
    return next(candidates, None)


class SignerSecretCheck:
    """The signer session (its session public key) known to open stored wallets, and the one known not to; kept
    per proxy process (see the module docstring)."""

    def __init__(self) -> None:
        self._opened: bytes | None = None
        self._mismatch: bytes | None = None
        self._lock: anyio.Lock | None = None
        self._skipped: set[str] = set()  # the stored wallets with an id the rule refuses, logged once each

    async def ensure(self, services: Services) -> bytes | None:
        """Steps 1-4: the session key of the signer session that opened a stored wallet; None when the store
        holds no wallet. `ApiError` 503 otherwise (the module docstring says which)."""
        session = (await services.relay.ping()).session_public_key
        if session == self._opened:
            return session
        if self._lock is None:
            self._lock = anyio.Lock()
        async with self._lock:  # one check at a time: concurrent creations wait for its outcome
            if session == self._opened:
                return session
            if session == self._mismatch:
                raise ApiError(Code.SIGNER_SECRET_MISMATCH, MISMATCH_MESSAGE)
            if not await self._opens_a_stored_wallet(services, session):
                return None
            if (await services.relay.ping()).session_public_key != session:
                raise ApiError(Code.ENCLAVE_UNAVAILABLE, RESTARTED_MESSAGE)
            self._opened = session
            return session

    async def _opens_a_stored_wallet(self, services: Services, session: bytes) -> bool:
        """Steps 2-3: True once a candidate opened; False when the store holds no wallet; else `ApiError`."""
        candidates = recent_wallets(services.store)  # a generator: each step reads the store in a worker thread
        failures: list[str] = []
        while len(failures) < MAX_CANDIDATES:
            try:
                wallet = await services.run(_next, candidates)
            except ProxyError as exc:  # the store: 503 store_unavailable
                raise translate(exc) from exc
            if wallet is None:
                break
            if not is_wallet_id(wallet.wallet_id):  # an earlier build's id: the signer refuses it, unopened
                self._skip(wallet.wallet_id)
                continue
            try:
                await services.relay.open_wallet(wallet)
            except EnclaveRequestError as exc:
                if exc.code == ErrorCode.WALLET_EXISTS:  # held with other keys: held, so opened in this session
                    logger.warning("the signer holds wallet %s with other keys than the stored ones", wallet.wallet_id)
                    return True
                if exc.code not in PASSED_OVER:
                    raise translate_enclave_error(exc) from exc
                logger.warning("the signer could not open wallet %s: %s: %s", wallet.wallet_id, exc.code, exc.detail)
                failures.append(exc.code)
                continue
            except EnclaveError as exc:
                raise translate_enclave_error(exc) from exc
            return True
        if not failures:
            return False
        if any(code != ErrorCode.UNSEAL_FAILED for code in failures):
            raise ApiError(Code.ENCLAVE_UNAVAILABLE, UNOPENED_MESSAGE)
        logger.error(
            "the signer opened none of the %d most recently used wallets (unseal_failed): it holds another unseal "
            "secret than the one they were sealed under; wallet creation is refused until it opens them",
            len(failures),
        )
        self._mismatch = session
        raise ApiError(Code.SIGNER_SECRET_MISMATCH, MISMATCH_MESSAGE)

    def _skip(self, wallet_id: str) -> None:
        if wallet_id in self._skipped:
            return
        self._skipped.add(wallet_id)
        logger.warning(
            "stored wallet %r has an id the wallet-id rule refuses (an earlier build took it): the signer refuses "
            "it, so the signer-secret check passes it over; the wallet cannot be used with this build",
            wallet_id,
        )


async def provision_checked(services: Services, wallet_id: str, owner_public_key: bytes) -> WalletResponse:
    """`EnclaveRelay.provision_wallet`, only in a signer session that opens the stored wallets
    (`SignerSecretCheck.ensure`), and only if the answer came from that session (else the wallet is dropped and
    503 ``enclave_unavailable``). Nothing is provisioned when the check refuses."""
    session = await services.signer_secret.ensure(services)
    created = await services.relay.provision_wallet(wallet_id, owner_public_key)
    if session is None or await _made_in(services, session, created):
        return created
    logger.warning("the signer restarted while it made wallet %s: dropped, nothing stored", wallet_id)
    await services.relay.discard_wallet(wallet_id, created.agent_public_key)
    raise ApiError(Code.ENCLAVE_UNAVAILABLE, RESTARTED_MESSAGE)


async def _made_in(services: Services, session: bytes, created: WalletResponse) -> bool:
    """Whether the checked session made ``created``: its provisioning receipt verifies under the session key, or,
    without a receipt (an enclave too old to sign one), the signer still names that key."""
    if created.receipt is None or created.receipt_signature is None:
        return (await services.relay.ping()).session_public_key == session
    try:
        verify_provision_receipt(created.receipt, created.receipt_signature, session)
    except ReceiptError:
        return False
    return True
