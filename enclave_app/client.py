"""Asyncio client of the enclave protocol (used by the parent proxy and the tests).

Connection policy: one fresh connection per request (connect, write one frame, read one frame, close). Nothing
is shared between requests, so a timeout or a broken peer can never leave a half-read answer that a later request
would pick up; the cost (a vsock/Unix/loopback connect, ~tens of microseconds) is small next to a signature
round trip. The whole exchange (connect + write + read) is bounded by ``timeout`` seconds, except for the
requests that seal or open a key (``_SEALING_REQUESTS``: provisioning, loading and the three rotation steps),
bounded by ``wallet_timeout`` when given (the proxy gives
:data:`WALLET_REQUEST_TIMEOUT_SECONDS`, above the enclave's own request limit; see there).

No request is ever retried here, signing least of all: a failure raises and the caller decides.

``aws_credentials``, when given, is called (in a worker thread, within :data:`CREDENTIALS_TIMEOUT_SECONDS`) before
each request that seals or opens a key, and what it returns goes with the request: the AWS credentials the
enclave's KMS sealer signs its calls with (DESIGN section 7). Nothing is sent if it fails.

Errors (all from :mod:`enclave_app.errors`):

- :class:`EnclaveRequestError` - the enclave answered with an error code (``.code``, an ``ErrorCode`` value);
- :class:`EnclaveTimeoutError` - no answer in time (a signing request may or may not have been served);
- :class:`TransportError` - could not connect; :class:`FramingError` - the stream broke or the frame is bad;
- :class:`ProtocolError` - the answer is not the message this request expects;
- :class:`CredentialsUnavailableError` - ``aws_credentials`` failed (nothing was sent).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import TypeVar

from enclave_app.constants import ENCLAVE_REQUEST_TIMEOUT_SECONDS
from enclave_app.errors import (
    CredentialsUnavailableError,
    EnclaveRequestError,
    EnclaveTimeoutError,
    FramingError,
    ProtocolError,
)
from enclave_app.framing import read_frame, write_frame
from enclave_app.protocol import (
    EXPECTED_RESPONSE,
    AgentKeyResponse,
    AgentKeyRotationResponse,
    AttestationRequest,
    AttestationResponse,
    AwsCredentials,
    DiscardWalletRequest,
    ErrorResponse,
    FreezeRequest,
    InstallPolicyRequest,
    LoadWalletRequest,
    LookupTable,
    Message,
    MessageSignatureResponse,
    PingRequest,
    PolicyInstalledResponse,
    PrepareAgentKeyRequest,
    ProvisionWalletRequest,
    Request,
    Response,
    SignAgentKeyRotationRequest,
    SignMessageRequest,
    SignTransactionRequest,
    SpentEntry,
    StatusResponse,
    SwitchAgentKeyRequest,
    TransactionDecisionResponse,
    UnfreezeRequest,
    WalletFrozenResponse,
    WalletResponse,
    decode_response,
)
from enclave_app.transport import Transport, parse_address

R = TypeVar("R", bound=Message)

CredentialsSource = Callable[[], AwsCredentials]
"""Returns the AWS credentials to lend the enclave, or raises (see `parent_proxy.host_credentials`)."""

CREDENTIALS_TIMEOUT_SECONDS = 10.0
"""Longest wait for ``aws_credentials`` (on EC2 a refresh asks the instance metadata service)."""

WALLET_REQUEST_TIMEOUT_SECONDS = ENCLAVE_REQUEST_TIMEOUT_SECONDS + 5.0
"""The parent proxy's time limit for the requests that seal or open a key: above the enclave's own request limit
(`enclave_app.constants.ENCLAVE_REQUEST_TIMEOUT_SECONDS`), so that the proxy always gets the enclave's answer (a wallet,
or ``timeout`` with nothing registered) instead of giving up while the enclave goes on to register a wallet whose
sealed blob nobody stores (the orphan of review finding #4). Sealing (KMS, or Argon2id) is slow; signing is not."""


_SEALING_REQUESTS = (
    ProvisionWalletRequest, LoadWalletRequest, PrepareAgentKeyRequest, SignAgentKeyRotationRequest,
    SwitchAgentKeyRequest,
)  # fmt: skip
"""Requests that seal or open a key (KMS through the vsock proxy, or Argon2id): they get the wallet time limit."""


class EnclaveClient:
    """One method per request; each returns the success response or raises (see the module docstring)."""

    def __init__(
        self,
        address: str | Transport,
        *,
        timeout: float,
        wallet_timeout: float | None = None,
        aws_credentials: CredentialsSource | None = None,
    ) -> None:
        if not timeout > 0 or (wallet_timeout is not None and not wallet_timeout > 0):
            raise ValueError("timeout must be positive")
        self._address: Transport = parse_address(address) if isinstance(address, str) else address
        self._timeout = timeout
        self._wallet_timeout = timeout if wallet_timeout is None else max(timeout, wallet_timeout)
        self._aws_credentials = aws_credentials

    async def _lent_credentials(self) -> AwsCredentials | None:
        if self._aws_credentials is None:
            return None
        try:
            async with asyncio.timeout(CREDENTIALS_TIMEOUT_SECONDS):
                credentials = await asyncio.to_thread(self._aws_credentials)
            credentials.fields_to_wire()  # the protocol's own checks, before anything is sent
        except CredentialsUnavailableError:
            raise
        except Exception as exc:  # named by type only: a message could quote a credential
            raise CredentialsUnavailableError(f"AWS credentials could not be read ({type(exc).__name__})") from None
        return credentials

    async def request(self, message: Request) -> Response:
        """Send one request, return the decoded answer (an :class:`ErrorResponse` is returned, not raised)."""
        slow = isinstance(message, _SEALING_REQUESTS)
        try:
            async with asyncio.timeout(self._wallet_timeout if slow else self._timeout):
                return await self._exchange(message)
        except TimeoutError as exc:
            raise EnclaveTimeoutError("the enclave did not answer in time") from exc

    async def _exchange(self, message: Request) -> Response:
        frame = message.to_wire()
        reader, writer = await self._address.connect()
        try:
            await write_frame(writer, frame)
            answer = await read_frame(reader)
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await writer.wait_closed()
        if answer is None:
            raise FramingError("the enclave closed the connection without answering")
        return decode_response(answer)

    async def _call(self, message: Request, expected: type[R]) -> R:
        if EXPECTED_RESPONSE[type(message)] is not expected:  # a programming error in this module
            raise TypeError("wrong expected response type")
        answer = await self.request(message)
        if isinstance(answer, ErrorResponse):
            raise EnclaveRequestError(answer.code.value, answer.message)
        if not isinstance(answer, expected):
            raise ProtocolError("the enclave answered with a message of another type")
        return answer

    async def ping(self) -> StatusResponse:
        return await self._call(PingRequest(), StatusResponse)

    async def attestation(self, nonce: bytes) -> AttestationResponse:
        """The enclave's attestation over ``nonce``. Check ``mode``: ``nitro`` carries a ``document`` to verify
        (:func:`enclave_app.attestation.verify_attestation_document`, then trust its ``public_key``, not the
        answer's ``session_public_key``); ``none`` (self-hosted) carries no document, only ``reason`` - nothing
        is attested. The decoder has already refused any other combination."""
        return await self._call(AttestationRequest(nonce=nonce), AttestationResponse)

    async def provision_wallet(self, wallet_id: str, owner_public_key: bytes) -> WalletResponse:
        request = ProvisionWalletRequest(
            wallet_id=wallet_id, owner_public_key=owner_public_key, aws_credentials=await self._lent_credentials()
        )
        return await self._call(request, WalletResponse)

    async def load_wallet(
        self,
        wallet_id: str,
        *,
        owner_public_key: bytes,
        agent_public_key: bytes,
        sealed_blob: bytes,
        frozen_at_order: int | None = None,
    ) -> WalletResponse:
        """``frozen_at_order``: the wallet is frozen at the parent, whose last accepted owner order had this
        sequence (`LoadWalletRequest`); None when it is not frozen."""
        request = LoadWalletRequest(
            wallet_id=wallet_id,
            owner_public_key=owner_public_key,
            agent_public_key=agent_public_key,
            sealed_blob=sealed_blob,
            aws_credentials=await self._lent_credentials(),
            frozen_at_order=frozen_at_order,
        )
        return await self._call(request, WalletResponse)

    async def discard_wallet(self, wallet_id: str, *, agent_public_key: bytes) -> StatusResponse:
        """Drop an orphan: a wallet without a policy, held with ``agent_public_key`` (`DiscardWalletRequest`)."""
        request = DiscardWalletRequest(wallet_id=wallet_id, agent_public_key=agent_public_key)
        return await self._call(request, StatusResponse)

    async def install_policy(self, wallet_id: str, signed_policy: bytes) -> PolicyInstalledResponse:
        request = InstallPolicyRequest(wallet_id=wallet_id, signed_policy=signed_policy)
        return await self._call(request, PolicyInstalledResponse)

    async def sign_transaction(
        self,
        wallet_id: str,
        transaction: bytes,
        *,
        lookup_tables: tuple[LookupTable, ...] = (),
        spent: tuple[SpentEntry, ...] = (),
        requests_in_window: int = 0,
        denials_in_window: int = 0,
        approval: bytes | None = None,
    ) -> TransactionDecisionResponse:
        """A decision for ``transaction``: signed only on allow (or an owner-approved escalation). A deny or
        freeze is a normal answer (check ``decision["verdict"]``), not an exception."""
        request = SignTransactionRequest(
            wallet_id=wallet_id,
            transaction=transaction,
            lookup_tables=lookup_tables,
            spent=spent,
            requests_in_window=requests_in_window,
            denials_in_window=denials_in_window,
            approval=approval,
        )
        return await self._call(request, TransactionDecisionResponse)

    async def sign_message(self, wallet_id: str, message: bytes) -> MessageSignatureResponse:
        return await self._call(SignMessageRequest(wallet_id=wallet_id, message=message), MessageSignatureResponse)

    async def freeze(self, wallet_id: str, order: bytes) -> WalletFrozenResponse:
        return await self._call(FreezeRequest(wallet_id=wallet_id, order=order), WalletFrozenResponse)

    async def unfreeze(self, wallet_id: str, order: bytes) -> WalletFrozenResponse:
        return await self._call(UnfreezeRequest(wallet_id=wallet_id, order=order), WalletFrozenResponse)

    async def prepare_agent_key(self, wallet_id: str) -> AgentKeyResponse:
        """A candidate agent key for ``wallet_id``, sealed (``sealed_blob``), with an agent-key receipt."""
        request = PrepareAgentKeyRequest(wallet_id=wallet_id, aws_credentials=await self._lent_credentials())
        return await self._call(request, AgentKeyResponse)

    async def sign_agent_key_rotation(
        self, wallet_id: str, *, transaction: bytes, order: bytes, candidate_sealed_blob: bytes
    ) -> AgentKeyRotationResponse:
        """The current agent key's signature on the owner-ordered Squads membership change."""
        request = SignAgentKeyRotationRequest(
            wallet_id=wallet_id, transaction=transaction, order=order, candidate_sealed_blob=candidate_sealed_blob,
            aws_credentials=await self._lent_credentials(),
        )  # fmt: skip
        return await self._call(request, AgentKeyRotationResponse)

    async def switch_agent_key(self, wallet_id: str, *, order: bytes, candidate_sealed_blob: bytes) -> AgentKeyResponse:
        """Make the candidate the wallet's agent key (the owner's switch order)."""
        request = SwitchAgentKeyRequest(
            wallet_id=wallet_id, order=order, candidate_sealed_blob=candidate_sealed_blob,
            aws_credentials=await self._lent_credentials(),
        )  # fmt: skip
        return await self._call(request, AgentKeyResponse)
