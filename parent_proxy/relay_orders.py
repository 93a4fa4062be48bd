"""The owner-order side of `parent_proxy.enclave_relay.EnclaveRelay`: the answers to owner orders the enclave applied,
the log they are handed to, and bringing each wallet's last owner order to this relay's enclave.

Every answer to an order the enclave applied (a policy install, a freeze, an unfreeze) goes to the relay's
`OrderReceiptLog` before it is returned (`parent_proxy.order_receipts.OrderReceipts` checks and records its receipt),
and comes back as an `AppliedOrder`. The relay keeps the last of each kind per wallet for the current enclave
session (`OwnerOrderRelay.installed_answer`, `OwnerOrderRelay.applied_order`: what ``POST
/v1/wallets/{id}/orders/receipts`` shows, `parent_proxy.api_orders`).

Several hosts (or proxy processes) share one store, each with its own enclave, and an owner order reaches the one
the load balancer picks. So `EnclaveRelay.ensure_wallet` also brings the wallet's last owner order
(`Wallet.last_order`, kept by the store with its sequence) to this relay's enclave, after the load and before the
policy and anything signed, when the stored sequence is above the one this relay knows its enclave session holds
(`OwnerOrderRelay._bring_order`): the same freeze or unfreeze request as the owner's route, its answer handed to the
`OrderReceiptLog` (this enclave's receipt, recorded). The enclave's refusals there:

- ``order_stale``: the enclave holds this order or a later one (another process of this host sent it, or a load's
  frozen flag): nothing more to do;
- ``order_invalid`` for a stored freeze (it expired, at most an hour after it was signed): the wallet is held
  frozen on the parent's word instead (``load_wallet.frozen_at_order`` on the wallet the enclave holds), as after
  a restart; if that fails too, the request fails (503);
- ``order_invalid`` for a stored unfreeze (it expired): the enclave keeps the state it has, which can only be
  stricter (frozen, it refuses by itself: 403 ``wallet_frozen``) until a newer order reaches it;
- anything else (unreachable, a receipt the log refuses): the request fails (503); the next one sends it again.

A load of a wallet whose stored freeze is still to be sent carries the sequence below the freeze's as its frozen
flag (taken only as a restriction: frozen from the start), so that the freeze itself follows with its receipt, also
after a restart. The parent's own freeze after an owner's unfreeze (a denial burst) is held by the frozen flag
alone, as it always was.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from enclave_app.client import EnclaveClient
from enclave_app.errors import EnclaveRequestError
from enclave_app.order_receipts import FREEZE, UNFREEZE
from enclave_app.protocol import ErrorCode, PolicyInstalledResponse, WalletFrozenResponse
from parent_proxy.api_errors import ApiError, Code
from parent_proxy.store.model import Wallet

logger = logging.getLogger(__name__)


class OrderReceiptLog(Protocol):
    """Where the relay hands each answer to an owner order the enclave applied, before returning it: the purpose
    (``policy``, ``freeze``, ``unfreeze``), the envelope bytes sent and the answer. Returns the session key the
    answer's receipt was checked under (None for an answer without one); raises `ApiError` to refuse the answer
    (`parent_proxy.order_receipts.OrderReceipts`, which `parent_proxy.services.Services` sets)."""

    async def applied(
        self, wallet_id: str, purpose: str, sent: bytes, answer: PolicyInstalledResponse | WalletFrozenResponse
    ) -> bytes | None: ...


A = TypeVar("A", PolicyInstalledResponse, WalletFrozenResponse)


@dataclass(frozen=True, slots=True)
class AppliedOrder(Generic[A]):
    """The enclave's answer to an owner order it applied, once the `OrderReceiptLog` took it: ``checked_under`` is
    the session key its receipt was checked under (None: the answer has no receipt, or the relay has no log)."""

    answer: A
    checked_under: bytes | None


class OwnerOrderRelay:
    """The relay's owner orders: the applied answers it keeps, and the stored order it brings (module docstring)."""

    def __init__(self, client: EnclaveClient) -> None:
        self._client = client
        self._installed: dict[str, AppliedOrder[PolicyInstalledResponse]] = {}  # wallet id -> last install, session
        self._orders: dict[str, AppliedOrder[WalletFrozenResponse]] = {}  # wallet id -> last freeze/unfreeze, session
        self._held: dict[str, int] = {}  # wallet id -> owner order sequence the enclave session is known to hold
        self.order_log: OrderReceiptLog | None = None
        """Without one (a relay used alone), order answers are returned unchecked and their receipts unrecorded."""

    def _forget_orders(self, wallet_id: str | None) -> None:
        """All (an enclave restart) or one wallet's held order sequence, so the stored order is sent again (the
        enclave answers ``order_stale`` if it has it); with all, the kept answers too."""
        if wallet_id is None:
            self._installed.clear()
            self._orders.clear()
            self._held.clear()
        else:
            self._held.pop(wallet_id, None)

    async def _send_load(self, wallet: Wallet, frozen_at: int | None) -> None:
        """``load_wallet`` for the stored record, frozen at ``frozen_at`` if given; enclave refusals as they came."""
        answer = await self._client.load_wallet(
            wallet.wallet_id,
            owner_public_key=wallet.owner_pubkey,
            agent_public_key=wallet.agent_pubkey,
            sealed_blob=wallet.sealed_key,
            frozen_at_order=frozen_at,
        )
        if answer.agent_public_key != wallet.agent_pubkey:
            raise ApiError(Code.ENCLAVE_UNAVAILABLE, "the enclave loaded another key")

    def _order_unsent(self, wallet: Wallet) -> bool:
        """Whether the stored owner order is above what this relay knows its enclave session holds."""
        return wallet.order_sequence > self._held.get(wallet.wallet_id, 0)

    def _frozen_at(self, wallet: Wallet) -> int | None:
        """The ``frozen_at_order`` a load of ``wallet`` carries: its order sequence if the store holds it frozen,
        one below when `_bring_order` is about to send the stored freeze itself (None: not frozen)."""
        if not wallet.frozen:
            return None
        sends_freeze = wallet.last_order is not None and wallet.last_order.freeze and self._order_unsent(wallet)
        return wallet.order_sequence - 1 if sends_freeze else wallet.order_sequence

    async def _bring_order(self, wallet: Wallet) -> None:
        """Send the stored owner order unless the enclave session is known to hold it; its refusals as the module
        docstring says (``unknown_wallet`` and other failures raised as they came, for `ensure_wallet`)."""
        wallet_id, order = wallet.wallet_id, wallet.last_order
        if not self._order_unsent(wallet):
            return
        if order is None or (wallet.frozen and not order.freeze):
            # No envelope kept (an order accepted before the store kept them), or the parent froze the wallet after
            # the owner's unfreeze: the enclave gets the load's frozen flag only, which raises its sequence too.
            if wallet.frozen:
                await self._send_load(wallet, wallet.order_sequence)
        else:
            purpose = FREEZE if order.freeze else UNFREEZE
            try:
                answer = await (self._client.freeze if order.freeze else self._client.unfreeze)(
                    wallet_id, order.envelope
                )
            except EnclaveRequestError as exc:
                if exc.code == ErrorCode.ORDER_STALE:
                    pass  # the enclave holds this order or a later one
                elif exc.code != ErrorCode.ORDER_INVALID:
                    raise
                else:
                    logger.warning("the enclave refused wallet %s's stored %s order (expired?)", wallet_id, purpose)
                    if order.freeze:  # held frozen on the parent's word, as after a restart
                        await self._send_load(wallet, wallet.order_sequence)
            else:
                await self._applied(wallet_id, purpose, order.envelope, answer)
        self._held[wallet_id] = max(self._held.get(wallet_id, 0), wallet.order_sequence)

    async def _applied(self, wallet_id: str, purpose: str, sent: bytes, answer: A) -> AppliedOrder[A]:
        """Hand an applied order's answer to the `OrderReceiptLog` (which may refuse it); remember it (an install's,
        a freeze's or an unfreeze's: the last of each kind in the session, and the order sequence now held)."""
        key = None if self.order_log is None else await self.order_log.applied(wallet_id, purpose, sent, answer)
        if isinstance(answer, PolicyInstalledResponse):
            self._installed[wallet_id] = AppliedOrder(answer, key)
        else:
            self._orders[wallet_id] = AppliedOrder(answer, key)
            self._held[wallet_id] = max(self._held.get(wallet_id, 0), answer.order_sequence)
        return AppliedOrder(answer, key)

    def installed_answer(self, wallet_id: str) -> AppliedOrder[PolicyInstalledResponse] | None:
        """The enclave's answer to the last policy this relay installed for ``wallet_id`` in the current enclave
        session and handed to its `OrderReceiptLog` (None if none: an install that another request made is found
        here too)."""
        return self._installed.get(wallet_id)

    def applied_order(self, wallet_id: str) -> AppliedOrder[WalletFrozenResponse] | None:
        """The enclave's answer to the last freeze or unfreeze this relay sent for ``wallet_id`` in the current
        enclave session and handed to its `OrderReceiptLog` (the owner's or the stored one; None if none)."""
        return self._orders.get(wallet_id)
