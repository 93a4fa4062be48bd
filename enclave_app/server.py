"""The enclave's asyncio server: frames in, requests dispatched, frames out.

Per connection: up to :data:`MAX_CONNECTIONS` at once (one more gets ``busy`` and is closed); each frame must
arrive within :data:`READ_TIMEOUT_SECONDS`, each request is served within :data:`REQUEST_TIMEOUT_SECONDS`. A frame
that is not a frame (too large, truncated, not CBOR) gets ``bad_frame`` and the connection is closed (the stream
cannot be trusted to be in step); a frame that is not a message gets ``bad_request`` and the connection stays.

Error translation happens here, once: ``StateError`` -> its code; sealing/KMS/NSM failures -> opaque codes
(a KMS AccessDenied -> ``attestation_refused``, any other KMS failure -> ``kms_unavailable``, its message saying
whether the parent's credentials were missing or refused);
an ``InconsistentStateError`` or any unexpected exception -> the failed state (``failed`` / ``internal``).
Slow calls (sealing, which may talk to KMS, and Argon2id) run in a worker thread; registry changes happen on
the loop, after the slow part, and re-check their preconditions. One wallet id is unsealed by one load at a time:
another load of it waits for that one to end, then finds the wallet held (or unseals in its turn if that failed).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from solders.pubkey import Pubkey

from enclave_app.constants import ENCLAVE_REQUEST_TIMEOUT_SECONDS
from enclave_app.errors import (
    FramingError,
    InconsistentStateError,
    KmsAccessDeniedError,
    KmsCredentialsMissingError,
    KmsCredentialsRejectedError,
    KmsError,
    NsmError,
    ProtocolError,
    RecipientDecryptionError,
    SealingError,
    StateError,
)
from enclave_app.framing import read_frame, write_frame
from enclave_app.no_attestation import NO_ATTESTATION_REASON
from enclave_app.nsm import Nsm, PcrDescription
from enclave_app.orders import apply_freeze_order, apply_policy
from enclave_app.protocol import (
    MAX_ERROR_MESSAGE_CHARS,
    SESSION_USER_DATA,
    AttestationMode,
    AttestationRequest,
    AttestationResponse,
    DiscardWalletRequest,
    ErrorCode,
    ErrorResponse,
    FreezeRequest,
    InstallPolicyRequest,
    LoadWalletRequest,
    PingRequest,
    PrepareAgentKeyRequest,
    ProvisionWalletRequest,
    Request,
    Response,
    SignAgentKeyRotationRequest,
    SignMessageRequest,
    SignTransactionRequest,
    StatusResponse,
    SwitchAgentKeyRequest,
    UnfreezeRequest,
    WalletResponse,
    decode_request,
)
from enclave_app.receipts import ProvisionReceipt
from enclave_app.rotation import prepare_agent_key, sign_agent_key_rotation, switch_agent_key
from enclave_app.sealing import SealBinding, Sealers, seal_for_request, unseal_for_request
from enclave_app.signer import sign_message, sign_transaction
from enclave_app.state import Enclave, Wallet, fresh_seed
from enclave_app.transport import Transport

_LOG = logging.getLogger(__name__)

MAX_CONNECTIONS = 64
"""Concurrent connections (ours: the parent proxy keeps a few; more is a misbehaving or hostile parent)."""
READ_TIMEOUT_SECONDS = 10.0
"""Time for a whole frame to arrive (ours: a frame is at most 256 KiB over a local socket)."""
REQUEST_TIMEOUT_SECONDS = ENCLAVE_REQUEST_TIMEOUT_SECONDS
"""Time to serve one request (ours: provisioning may wait on KMS through the vsock proxy)."""
CREDENTIALS_MISSING_MESSAGE = "no AWS credentials came with the request (parent: WAIAAS_ENCLAVE_KMS_CREDENTIALS=host)"
"""The KMS sealer cannot work without the parent's credentials: say which parent setting sends them."""
CREDENTIALS_REJECTED_MESSAGE = "KMS refused the AWS credentials sent with the request (expired, unknown or altered)"
"""KMS refused the lent credentials themselves (not the attestation): the parent's credential source is at fault."""


class SerializedNsm:
    """Serializes calls to an :class:`Nsm` (``DeviceNsm`` is one call at a time; sealing calls it from a thread)."""

    def __init__(self, nsm: Nsm) -> None:
        self._nsm = nsm
        self._lock = threading.Lock()

    def attestation(self, *, public_key: bytes | None, user_data: bytes | None, nonce: bytes | None) -> bytes:
        with self._lock:
            return self._nsm.attestation(public_key=public_key, user_data=user_data, nonce=nonce)

    def get_random(self) -> bytes:
        with self._lock:
            return self._nsm.get_random()

    def describe_pcr(self, index: int) -> PcrDescription:
        with self._lock:
            return self._nsm.describe_pcr(index)


def quotable(message: str) -> str:
    """An error message the protocol can carry: what cannot be encoded as UTF-8 (a lone surrogate quoted from the
    input) escaped, and clipped to `MAX_ERROR_MESSAGE_CHARS`."""
    return message.encode("utf-8", "backslashreplace").decode("utf-8")[:MAX_ERROR_MESSAGE_CHARS]


class Handler:
    """Serves decoded requests against one :class:`Enclave`; ``sealers`` gives the sealer of each wallet request
    (a :class:`~enclave_app.sealing.LocalSealer` is its own)."""

    def __init__(self, enclave: Enclave, sealers: Sealers) -> None:
        self.enclave = enclave
        self.sealers = sealers
        self._unsealing: dict[str, asyncio.Future[None]] = {}
        """Wallet id -> done when its load's unseal ends: at most one per id, and one per request being served."""

    async def handle(self, request: Request) -> Response:
        """Serve one request; never raises (every failure becomes an :class:`ErrorResponse`)."""
        try:
            self.enclave.check_alive()
            if isinstance(request, SignTransactionRequest):
                return sign_transaction(self.enclave, request)
            return await self._dispatch(request)
        except InconsistentStateError as exc:
            self.enclave.fail(str(exc))
            return ErrorResponse(code=ErrorCode.FAILED, message="enclave entered the failed state")
        except StateError as exc:
            # A refusal's reason may quote the input (a field path of a hostile envelope): made encodable and
            # clipped to what the protocol carries, or encoding the answer would fail and the connection would drop
            # unanswered.
            return ErrorResponse(code=ErrorCode(exc.code), message=quotable(str(exc)))
        except (SealingError, RecipientDecryptionError):
            return ErrorResponse(code=ErrorCode.UNSEAL_FAILED, message="sealed key could not be opened")
        except KmsAccessDeniedError:
            return ErrorResponse(code=ErrorCode.ATTESTATION_REFUSED, message="KMS refused access (key policy)")
        except KmsCredentialsMissingError:
            return ErrorResponse(code=ErrorCode.KMS_UNAVAILABLE, message=CREDENTIALS_MISSING_MESSAGE)
        except KmsCredentialsRejectedError:
            return ErrorResponse(code=ErrorCode.KMS_UNAVAILABLE, message=CREDENTIALS_REJECTED_MESSAGE)
        except KmsError:
            return ErrorResponse(code=ErrorCode.KMS_UNAVAILABLE, message="KMS call failed")
        except NsmError:
            return ErrorResponse(code=ErrorCode.NSM_UNAVAILABLE, message="NSM call failed")
        except Exception as exc:  # a bug or a broken invariant: fail closed, log only the type
            self.enclave.fail(f"unexpected {type(exc).__name__} in a handler")
            return ErrorResponse(code=ErrorCode.INTERNAL, message="internal error; enclave failed")

    async def _dispatch(self, request: Request) -> Response:
        enclave = self.enclave
        if isinstance(request, PingRequest):
            return _status(enclave)
        if isinstance(request, AttestationRequest):
            session_key = enclave.session.public_key
            if enclave.attestation_mode is AttestationMode.NONE:
                return AttestationResponse(
                    document=None,
                    mode=AttestationMode.NONE,
                    reason=NO_ATTESTATION_REASON,
                    session_public_key=session_key,
                )
            document = enclave.nsm.attestation(public_key=session_key, user_data=SESSION_USER_DATA, nonce=request.nonce)
            return AttestationResponse(
                document=document, mode=AttestationMode.NITRO, reason=None, session_public_key=session_key
            )
        if isinstance(request, ProvisionWalletRequest):
            return await self._provision(request)
        if isinstance(request, LoadWalletRequest):
            return await self._load(request)
        if isinstance(request, DiscardWalletRequest):
            enclave.discard(request.wallet_id, request.agent_public_key)
            return _status(enclave)
        if isinstance(request, InstallPolicyRequest):
            return apply_policy(enclave, request)
        if isinstance(request, FreezeRequest | UnfreezeRequest):
            return apply_freeze_order(enclave, request)
        if isinstance(request, SignMessageRequest):
            return sign_message(enclave, request)
        if isinstance(request, PrepareAgentKeyRequest):
            return await prepare_agent_key(enclave, self.sealers, request)
        if isinstance(request, SignAgentKeyRotationRequest):
            return await sign_agent_key_rotation(enclave, self.sealers, request)
        if isinstance(request, SwitchAgentKeyRequest):
            return await switch_agent_key(enclave, self.sealers, request)
        raise InconsistentStateError("request type without a handler")

    async def _provision(self, request: ProvisionWalletRequest) -> WalletResponse:
        # 1. Preconditions; 2. a key from NSM randomness; 3. seal it (off the loop); 4. register (re-checked);
        # 5. sign a provisioning receipt.
        self.enclave.check_new(request.wallet_id)
        key = Ed25519PrivateKey.from_private_bytes(fresh_seed(self.enclave.nsm))
        agent = key.public_key().public_bytes_raw()
        binding = SealBinding(request.wallet_id, agent, request.owner_public_key)
        blob = await asyncio.to_thread(seal_for_request, self.sealers, request.aws_credentials, key, binding)
        self.enclave.add(self._wallet(request.wallet_id, request.owner_public_key, key, agent))
        # 5. The receipt: the attested session key states which owner key this agent key was made for.
        time_ms = int(self.enclave.clock().timestamp() * 1000)
        receipt, signature = self.enclave.session.sign_provision(
            ProvisionReceipt(request.wallet_id, agent, request.owner_public_key, time_ms)
        )
        return WalletResponse(
            wallet_id=request.wallet_id, agent_public_key=agent, sealed_blob=blob, receipt=receipt,
            receipt_signature=signature,
        )  # fmt: skip

    async def _load(self, request: LoadWalletRequest) -> WalletResponse:
        # 1. Already loaded with the same keys: nothing to do but the parent's freeze, if any. 2. Another load of
        #    this wallet id is unsealing: wait for it to end, then 1 again (one unseal at a time per wallet id).
        #    3. Unseal (off the loop) against the pinned public key: a blob or a KMS answer carrying any other key
        #    is refused. 4. Register (re-checked), frozen if the parent holds it frozen.
        while (held := self._loaded(request)) is None:
            unsealing = self._unsealing.get(request.wallet_id)
            if unsealing is None:
                break
            await asyncio.wait([unsealing])  # not `await unsealing`: a timeout here must not cancel it
        if held is not None:
            return held
        self.enclave.check_new(request.wallet_id)
        binding = SealBinding(request.wallet_id, request.agent_public_key, request.owner_public_key)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._unsealing[request.wallet_id] = done
        try:
            key = await asyncio.to_thread(
                unseal_for_request, self.sealers, request.aws_credentials, request.sealed_blob, binding
            )
        finally:
            # The waiting loads run after this one registered (no await in between), or unseal themselves if it
            # failed or timed out.
            del self._unsealing[request.wallet_id]
            done.set_result(None)
        wallet = self._wallet(request.wallet_id, request.owner_public_key, key, request.agent_public_key)
        # The freeze goes on the wallet held after registering: a concurrent load may have registered it first.
        _hold_frozen(self.enclave.add(wallet), request.frozen_at_order)
        return WalletResponse(wallet_id=request.wallet_id, agent_public_key=request.agent_public_key, sealed_blob=None)

    def _loaded(self, request: LoadWalletRequest) -> WalletResponse | None:
        """The answer to ``request`` if its wallet is held with its keys (the parent's freeze applied), None if it is
        not held; ``wallet_exists`` if it is held with other keys."""
        try:
            loaded = self.enclave.wallet(request.wallet_id)
        except StateError as exc:
            if exc.code != ErrorCode.UNKNOWN_WALLET:
                raise
            return None
        if bytes(loaded.agent) != request.agent_public_key or bytes(loaded.owner) != request.owner_public_key:
            raise StateError(ErrorCode.WALLET_EXISTS, "wallet already loaded with other keys")
        _hold_frozen(loaded, request.frozen_at_order)
        return WalletResponse(wallet_id=loaded.wallet_id, agent_public_key=bytes(loaded.agent), sealed_blob=None)

    @staticmethod
    def _wallet(wallet_id: str, owner: bytes, key: Ed25519PrivateKey, agent: bytes) -> Wallet:
        return Wallet(
            wallet_id=wallet_id, owner=Pubkey.from_bytes(owner), agent_key=key, agent=Pubkey.from_bytes(agent)
        )


def _status(enclave: Enclave) -> StatusResponse:
    return StatusResponse(
        state=enclave.state, wallets=enclave.wallet_count, session_public_key=enclave.session.public_key,
        requires_multisig=enclave.require_multisig,
    )  # fmt: skip


def _hold_frozen(wallet: Wallet, frozen_at_order: int | None) -> None:
    """The parent's word that it holds ``wallet`` frozen (`LoadWalletRequest.frozen_at_order`): taken only as a
    restriction (frozen, and owner orders must be above the larger sequence), so a parent can refuse more with it,
    never allow more."""
    if frozen_at_order is not None:
        wallet.frozen = True
        wallet.order_sequence = max(wallet.order_sequence, frozen_at_order)


class EnclaveServer:
    """Connection handling: limits, timeouts, framing errors. One implementation for vsock, Unix and TCP."""

    def __init__(
        self,
        handler: Handler,
        *,
        max_connections: int = MAX_CONNECTIONS,
        read_timeout: float = READ_TIMEOUT_SECONDS,
        request_timeout: float = REQUEST_TIMEOUT_SECONDS,
    ) -> None:
        self.handler = handler
        self.max_connections = max_connections
        self.read_timeout = read_timeout
        self.request_timeout = request_timeout
        self._active = 0

    async def start(self, address: Transport) -> asyncio.Server:
        return await address.serve(self.serve_connection)

    async def serve_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._active >= self.max_connections:
            await self._send_and_close(writer, ErrorResponse(code=ErrorCode.BUSY, message="connection limit reached"))
            return
        self._active += 1
        try:
            await self._serve(reader, writer)
        except (FramingError, TimeoutError):
            pass  # the peer went away, or did not take its answer in time
        finally:
            self._active -= 1
            await self._close(writer)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                async with asyncio.timeout(self.read_timeout):
                    value = await read_frame(reader)
            except TimeoutError:
                await self._answer(writer, ErrorResponse(code=ErrorCode.TIMEOUT, message="frame not received"))
                return
            except FramingError as exc:
                await self._answer(writer, ErrorResponse(code=ErrorCode.BAD_FRAME, message=quotable(str(exc))))
                return
            if value is None:
                return
            try:
                request = decode_request(value)
            except ProtocolError as exc:
                await self._answer(writer, ErrorResponse(code=ErrorCode.BAD_REQUEST, message=quotable(str(exc))))
                continue
            try:
                async with asyncio.timeout(self.request_timeout):
                    response = await self.handler.handle(request)
            except TimeoutError:
                response = ErrorResponse(code=ErrorCode.TIMEOUT, message="request not served in time")
            await self._answer(writer, response)

    async def _answer(self, writer: asyncio.StreamWriter, response: Response) -> None:
        """Send one answer; a peer that does not take it within the read time limit loses its connection (else a
        peer that never reads would hold its connection slot for ever)."""
        async with asyncio.timeout(self.read_timeout):
            await write_frame(writer, response.to_wire())

    async def _send_and_close(self, writer: asyncio.StreamWriter, response: Response) -> None:
        with contextlib.suppress(FramingError, TimeoutError):
            await self._answer(writer, response)
        await self._close(writer)

    @staticmethod
    async def _close(writer: asyncio.StreamWriter) -> None:
        writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await writer.wait_closed()
