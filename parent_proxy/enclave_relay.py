"""The relay to the enclave: `EnclaveClient` calls, error translation, and keeping wallets loaded.

The enclave keeps wallets and policies in memory only; after it restarts it knows none. Before each request that
needs a wallet, `EnclaveRelay.ensure_wallet` loads it (the sealed blob, pinned to the stored agent key) and installs
the stored owner-signed policy, once per (enclave session, wallet, policy sequence); concurrent requests for one
wallet share one such load (`parent_proxy.load_flights`: its failure reaches them all and is not kept). If the
enclave restarted in between, it answers ``unknown_wallet``; the relay forgets what it had loaded and the request
fails with 503: it is never re-sent (no automatic retry of signing), the caller decides and the next request loads
the wallet again.
Owner orders (freeze, unfreeze, `install_policy`) are not signing requests: on ``unknown_wallet`` the relay loads
the wallet again from the record last given to `ensure_wallet` and resends the order once (the enclave's sequence
checks make a resend idempotent); `ensure_wallet` itself reloads once when a wallet it had loaded is unknown.
Every answer to an order the enclave applied (each policy it installs, also the stored policy reinstalled after a
restart, and each freeze or unfreeze) goes to the relay's `OrderReceiptLog` before it is returned: the proxy's
checks and records its order receipt there (`parent_proxy.order_receipts`), so that the audit log holds every
receipt of the enclave's one counter sequence; a refusal there is raised as its `ApiError`. Such an answer is
returned as an `AppliedOrder`, with the session key its receipt was checked under.

Several hosts (or proxy processes) share one store, each with its own enclave: `ensure_wallet` also brings the
wallet's last owner order (kept by the store) to this relay's enclave when it may not hold it yet, with its receipt
recorded (`parent_proxy.relay_orders`, which holds the relay's owner-order side).

Enclave errors become API errors in `parent_proxy.enclave_errors` (the one place).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from solders.message import to_bytes_versioned
from solders.pubkey import Pubkey
from solders.transaction import VersionedTransaction

from enclave_app.client import EnclaveClient
from enclave_app.errors import EnclaveError, EnclaveRequestError
from enclave_app.order_receipts import FREEZE, POLICY, UNFREEZE
from enclave_app.protocol import (
    AgentKeyResponse,
    AgentKeyRotationResponse,
    AttestationResponse,
    ErrorCode,
    LookupTable,
    MessageSignatureResponse,
    PolicyInstalledResponse,
    SpentEntry,
    StatusResponse,
    TransactionDecisionResponse,
    WalletFrozenResponse,
    WalletResponse,
)
from parent_proxy.api_errors import ApiError, Code
from parent_proxy.enclave_errors import translate_enclave_error
from parent_proxy.load_flights import LoadFlights
from parent_proxy.relay_orders import AppliedOrder, OwnerOrderRelay
from parent_proxy.store.model import Wallet
from policies.ed25519 import verify_ed25519

logger = logging.getLogger(__name__)


def signed_by(signed: bytes, signature: bytes, unsigned: bytes, agent: bytes | None) -> bool:
    """Whether ``signed`` is ``unsigned`` with ``signature`` by ``agent`` (the wallet's stored agent key) in the
    agent's signer slot, and that signature verifies over the message. A cheap consistency check on the enclave's
    answer: an enclave holding the wallet with another key (review finding #4) fails it. Called by the sign flow
    right after the receipt checks (`parent_proxy.sign_flow`), with the stored wallet's ``agent_pubkey``."""
    if agent is None:
        return False
    try:
        tx, request = VersionedTransaction.from_bytes(signed), VersionedTransaction.from_bytes(unsigned)
        message = to_bytes_versioned(tx.message)
        if message != to_bytes_versioned(request.message):
            return False
        signers = tx.message.account_keys[: tx.message.header.num_required_signatures]
        slot = signers.index(Pubkey.from_bytes(agent))
        if bytes(tx.signatures[slot]) != signature:
            return False
    except (ValueError, TypeError, IndexError):
        return False
    return verify_ed25519(agent, signature, message)


T = TypeVar("T")


class HeldWithOtherKeys(ApiError):
    """503 ``enclave_unavailable``: the enclave answered ``wallet_exists`` to loading the stored record, so it holds
    the wallet with keys other than the stored ones (an orphan of an earlier provisioning, or a switch to a candidate
    the store has not recorded yet). `EnclaveRelay.ensure_wallet` raises it and loads nothing; only the switch route
    acts on it (`parent_proxy.api_agent_key`), every other request is refused with it."""

    def __init__(self) -> None:
        super().__init__(Code.ENCLAVE_UNAVAILABLE, "the enclave holds this wallet with other keys")


class EnclaveRelay(OwnerOrderRelay):
    """Wraps one `EnclaveClient`; every method raises `ApiError` on failure (see the module docstring)."""

    def __init__(self, client: EnclaveClient) -> None:
        super().__init__(client)
        self._loaded: dict[str, int] = {}  # wallet id -> policy sequence installed in the current enclave session
        self._wallets: dict[str, Wallet] = {}  # wallet id -> the record last passed to `ensure_wallet` (no secret)
        self._flights = LoadFlights()  # the `ensure_wallet` loads under way, one per wallet

    async def close(self) -> None:
        """Close kept-open connections to the enclave, if the client keeps any (`PooledEnclaveClient`)."""
        aclose = getattr(self._client, "aclose", None)
        if aclose is not None:
            await aclose()

    def forget(self, wallet_id: str | None = None, *, flying: str | None = None) -> None:
        """Forget what was loaded (all wallets, or one), so the next request loads it again and sends its stored
        owner order again (``order_stale`` when the enclave has it). Receipts of the session are kept for one.
        Loads under way are forgotten too (the next request starts its own), but for the wallet ``flying``: the
        load that found the enclave restarted and loads its wallet again in the new session."""
        if wallet_id is None:
            self._loaded.clear()
        else:
            self._loaded.pop(wallet_id, None)
        self._flights.drop(wallet_id, keep=flying)
        self._forget_orders(wallet_id)

    async def ping(self) -> StatusResponse:
        try:
            return await self._client.ping()
        except EnclaveError as exc:
            raise translate_enclave_error(exc) from exc

    async def attestation(self, nonce: bytes) -> AttestationResponse:
        try:
            return await self._client.attestation(nonce)
        except EnclaveError as exc:
            raise translate_enclave_error(exc) from exc

    async def provision_wallet(self, wallet_id: str, owner_public_key: bytes) -> WalletResponse:
        try:
            answer = await self._client.provision_wallet(wallet_id, owner_public_key)
        except EnclaveError as exc:
            raise translate_enclave_error(exc) from exc
        if answer.wallet_id != wallet_id or answer.sealed_blob is None:
            raise ApiError(Code.ENCLAVE_UNAVAILABLE, "the enclave answered for another wallet")
        self._loaded[wallet_id] = 0
        return answer

    async def discard_wallet(self, wallet_id: str, agent_public_key: bytes) -> bool:
        """Drop the enclave's copy of a wallet just provisioned whose record could not be stored, so that its id can
        be created again before the enclave restarts; whether it was dropped. Best effort: a failure is logged and
        the id stays refused until then. Were the record stored after all (an answer lost), its blob loads the key
        again on the next request."""
        self.forget(wallet_id)
        try:
            await self._client.discard_wallet(wallet_id, agent_public_key=agent_public_key)
        except EnclaveError as exc:
            logger.warning("the enclave kept orphan wallet %s: %s", wallet_id, type(exc).__name__)
            return False
        return True

    def _holds(self, wallet: Wallet) -> bool:
        """Whether the current enclave session is known to hold ``wallet`` with its stored policy and owner order."""
        loaded = self._loaded.get(wallet.wallet_id)
        return loaded is not None and loaded >= wallet.policy_sequence and not self._order_unsent(wallet)

    async def ensure_wallet(self, wallet: Wallet) -> None:
        """Load ``wallet``, send its stored owner order and install its stored policy in the enclave unless done in
        this session (the module docstring). If the enclave answers ``unknown_wallet`` for a wallet this relay had
        loaded (it restarted since), everything is forgotten and the wallet is loaded again, once.

        One load per wallet at a time (`parent_proxy.load_flights`): a request that finds one under way waits for
        it; its failure is raised to every request that waited for it, and after a success each checks again with
        its own record (a newer policy or order starts a load of its own)."""
        self._wallets[wallet.wallet_id] = wallet
        while not self._holds(wallet):
            outcome = await self._flights.join(wallet.wallet_id)
            if outcome is None:
                await self._flights.fly(wallet.wallet_id, lambda: self._load_for(wallet))
                return
            outcome.raise_error()

    async def _load_for(self, wallet: Wallet) -> None:
        """`ensure_wallet`'s load itself (one flight), its enclave refusals translated."""
        loaded = self._loaded.get(wallet.wallet_id)
        try:
            try:
                await self._load_and_install(wallet)
            except EnclaveRequestError as exc:
                if loaded is None or exc.code != ErrorCode.UNKNOWN_WALLET:
                    raise
                self.forget(flying=wallet.wallet_id)
                await self._load_and_install(wallet)
        except EnclaveError as exc:
            self.forget(wallet.wallet_id)
            raise translate_enclave_error(exc) from exc

    async def bring_stored_order(self, wallet: Wallet) -> None:
        """For a request refused because ``wallet`` is frozen (no `ensure_wallet` on that path): `ensure_wallet` if
        this relay loaded the wallet in the current enclave session and its stored owner order may not be there
        yet. A wallet this relay has not loaded gets nothing here: the enclave does not hold it (and cannot sign for
        it), or another proxy process of this host loaded it, which sends the order at its own next request."""
        if wallet.wallet_id in self._loaded and self._order_unsent(wallet):
            await self.ensure_wallet(wallet)

    async def open_wallet(self, wallet: Wallet) -> None:
        """Load ``wallet`` (not its policy) now, even if this relay believes it loaded: that the enclave's session
        opens it (`parent_proxy.signer_secret`). Refusals are raised untranslated (`EnclaveError`; ``wallet_exists``
        too: the enclave holds the wallet with other keys); the next `ensure_wallet` installs the policy again
        (``policy_stale`` if the enclave holds it)."""
        self.forget(wallet.wallet_id)
        await self._load(wallet)

    async def _load(self, wallet: Wallet) -> None:
        """Send ``load_wallet`` for the stored record, frozen if the store holds it frozen (a restart forgot the
        freeze: `OwnerOrderRelay._frozen_at`); enclave refusals as they came."""
        await self._send_load(wallet, self._frozen_at(wallet))
        self._loaded[wallet.wallet_id] = 0

    async def _load_and_install(self, wallet: Wallet, *, policy: bool = True) -> None:
        if wallet.wallet_id not in self._loaded:
            try:
                await self._load(wallet)
            except EnclaveRequestError as exc:
                if exc.code != ErrorCode.WALLET_EXISTS:
                    raise
                # The enclave answers this only when it holds the wallet with keys other than the stored ones (an
                # orphan of an earlier provisioning, say): it would sign with a key the store does not know.
                logger.error("the enclave holds wallet %s with keys other than the stored ones", wallet.wallet_id)
                raise HeldWithOtherKeys from exc
        await self._bring_order(wallet)  # the owner's last order before the policy, and before any signature
        if not policy or wallet.policy_document is None or self._loaded[wallet.wallet_id] >= wallet.policy_sequence:
            return
        try:
            installed = await self._client.install_policy(wallet.wallet_id, wallet.policy_document)
        except EnclaveRequestError as exc:
            if exc.code != ErrorCode.POLICY_STALE:
                raise
        else:
            await self._applied(wallet.wallet_id, POLICY, wallet.policy_document, installed)
        self._loaded[wallet.wallet_id] = wallet.policy_sequence

    async def _reload_after_restart(self, wallet_id: str, exc: EnclaveError, *, policy: bool) -> None:
        """After an order answered ``unknown_wallet``: the enclave restarted (or dropped the wallet). Forget what was
        loaded and load the wallet again (with its stored policy if ``policy``) from the record last given to
        `ensure_wallet`, so the order can be resent once; without such a record the original refusal stands."""
        if not (isinstance(exc, EnclaveRequestError) and exc.code == ErrorCode.UNKNOWN_WALLET):
            raise translate_enclave_error(exc) from exc
        self.forget()
        wallet = self._wallets.get(wallet_id)
        if wallet is None:
            raise translate_enclave_error(exc) from exc
        logger.info("the enclave did not know wallet %s: loading it again and resending the order once", wallet_id)
        try:
            await self._load_and_install(wallet, policy=policy)
        except EnclaveError as again:
            self.forget(wallet_id)
            raise translate_enclave_error(again) from again

    async def _resent_once(self, wallet_id: str, send: Callable[[], Awaitable[T]], *, policy: bool) -> T:
        """``send()``; if it fails with ``unknown_wallet``, the wallet loaded again (`_reload_after_restart`, with
        its stored policy if ``policy``) and ``send()`` once more. For requests that are not signatures only (owner
        orders, a candidate key): the enclave's own checks make a resend idempotent. Raises `ApiError`."""
        try:
            return await send()
        except EnclaveError as exc:
            await self._reload_after_restart(wallet_id, exc, policy=policy)
        try:
            return await send()
        except EnclaveError as again:
            raise translate_enclave_error(again) from again

    async def install_policy(self, wallet_id: str, signed_policy: bytes) -> AppliedOrder[PolicyInstalledResponse]:
        answer = await self._resent_once(  # the wallet only on a reload: this is its policy
            wallet_id, lambda: self._client.install_policy(wallet_id, signed_policy), policy=False
        )
        return await self._applied(wallet_id, POLICY, signed_policy, answer)

    def _signature_refused(self, exc: EnclaveError) -> ApiError:
        """The API error for a refused signature request, which is never resent: on ``unknown_wallet`` (the enclave
        restarted) everything loaded is forgotten first, so the next requests load it again."""
        if isinstance(exc, EnclaveRequestError) and exc.code == ErrorCode.UNKNOWN_WALLET:
            self.forget()
        return translate_enclave_error(exc)

    async def sign_transaction(
        self,
        wallet_id: str,
        transaction: bytes,
        *,
        lookup_tables: tuple[LookupTable, ...],
        spent: tuple[SpentEntry, ...],
        requests_in_window: int,
        denials_in_window: int,
        approval: bytes | None,
    ) -> TransactionDecisionResponse:
        try:
            answer = await self._client.sign_transaction(
                wallet_id,
                transaction,
                lookup_tables=lookup_tables,
                spent=spent,
                requests_in_window=requests_in_window,
                denials_in_window=denials_in_window,
                approval=approval,
            )
        except EnclaveError as exc:
            raise self._signature_refused(exc) from exc
        # A signed answer must carry both the signature and the transaction; anything else counts as unsigned.
        if (answer.signature is None) != (answer.signed_transaction is None):
            raise ApiError(Code.ENCLAVE_UNAVAILABLE, "the enclave answered a malformed decision")
        return answer

    async def sign_message(self, wallet_id: str, message: bytes) -> MessageSignatureResponse:
        try:
            return await self._client.sign_message(wallet_id, message)
        except EnclaveError as exc:
            raise self._signature_refused(exc) from exc

    async def set_frozen(self, wallet_id: str, frozen: bool, order: bytes) -> AppliedOrder[WalletFrozenResponse]:
        """Send an owner freeze/unfreeze order. On ``unknown_wallet`` (the enclave restarted since the wallet was
        loaded) the wallet is loaded again and the order resent once: an order is not a signing request, and the
        enclave's order sequence makes a resend idempotent."""
        send = self._client.freeze if frozen else self._client.unfreeze
        answer = await self._resent_once(wallet_id, lambda: send(wallet_id, order), policy=True)
        return await self._applied(wallet_id, FREEZE if frozen else UNFREEZE, order, answer)

    # -- agent-key rotation (owner-driven; `parent_proxy.api_agent_key`) ------------------------------------------

    async def prepare_agent_key(self, wallet_id: str) -> AgentKeyResponse:
        """A candidate key for a loaded wallet (`ensure_wallet` first). Not a signature: on ``unknown_wallet`` the
        wallet is loaded again and the request resent once, as owner orders are. The route checks the answer
        against the request (and records a refusal: `parent_proxy.api_agent_key`)."""
        return await self._resent_once(wallet_id, lambda: self._client.prepare_agent_key(wallet_id), policy=True)

    async def sign_agent_key_rotation(
        self, wallet_id: str, *, transaction: bytes, order: bytes, candidate_sealed_blob: bytes
    ) -> AgentKeyRotationResponse:
        """The current agent key's co-signature. A signature: never resent (on ``unknown_wallet`` everything is
        forgotten and the answer is 503, as for `sign_transaction`)."""
        try:
            return await self._client.sign_agent_key_rotation(
                wallet_id, transaction=transaction, order=order, candidate_sealed_blob=candidate_sealed_blob
            )
        except EnclaveError as exc:
            raise self._signature_refused(exc) from exc

    async def switch_agent_key(self, wallet_id: str, *, order: bytes, candidate_sealed_blob: bytes) -> AgentKeyResponse:
        """The owner's switch order. On ``unknown_wallet`` the wallet is loaded again (from the stored record: the
        old key) and the order resent once; a switch already made answers the same. The route checks the answer
        against the request (and records a refusal)."""
        return await self._resent_once(
            wallet_id,
            lambda: self._client.switch_agent_key(wallet_id, order=order, candidate_sealed_blob=candidate_sealed_blob),
            policy=True,
        )

    def switched(self, wallet: Wallet) -> None:
        """The store now holds ``wallet`` with its new agent key, which the enclave already holds: later reloads
        (after an enclave restart) use the new record. A wallet this relay had loaded stays loaded (the enclave
        switched it in place); one it had not (the enclave held it with the new key before the store did, see
        `HeldWithOtherKeys`) stays unloaded, and the next `ensure_wallet` loads it with the new key: the enclave
        answers that it holds it with exactly those keys (nothing unsealed) before anything is signed."""
        self._wallets[wallet.wallet_id] = wallet
