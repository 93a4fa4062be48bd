"""The answer of ``GET /v1/attestation``, built from the enclave's attestation answer itself.

The session public key comes from that answer (``session_public_key``), never from another call. The proxy does not
verify the document (the caller does, against its own roots, PCRs and nonce); it only refuses to relay an answer
that contradicts itself, with 503 ``attestation_inconsistent``:

1. the answer carries no session key (an enclave built before the field existed);
2. mode ``nitro``: the session key inside the document's payload (read *unverified*, COSE_Sign1 -> payload ->
   ``public_key``) is missing or differs from ``session_public_key``;
3. the enclave's status, read right after for ``enclave_state``, names another session key (the enclave restarted
   in between, so the document and the state describe different boots).

Mode ``none`` has no document; ``reason`` says why (the protocol guarantees the other fields' shape).

`attest_session` answers ``GET /v1/attestation?nonce=HEX&session_public_key=K``: the attestation only of an enclave
whose session key is K, so that an agent can reach, through the load balancer, the host whose enclave signed its
receipt (the signed answer names that key). A host whose enclave has another key answers 404
``session_key_not_here`` after one status read (a ping, as ``GET /readyz`` makes), before the attestation limit is
drawn on and without asking the NSM: the caller asks again and the load balancer picks again. No host has it once
that enclave has restarted (a new boot has a new key): docs/api.md, "Agents: verifying a sign answer".

`attest` makes that answer for a caller's nonce (``GET /v1/attestation``, and the owner answers that carry the
attestation of the enclave that answered them, so that one exchange with one host is enough to check it:
`parent_proxy.api_orders`). Each is one NSM attestation, so each is counted (`parent_proxy.auth.attestation_limiter`):
an anonymous one in the process's one anonymous bucket, an owner's in that owner key's own bucket, which anonymous
callers cannot empty.
"""

from __future__ import annotations

import base64
from typing import TYPE_CHECKING, Annotated, Any

import cbor2
from fastapi import Query
from solders.pubkey import Pubkey

from enclave_app.protocol import AttestationMode, AttestationResponse, StatusResponse
from parent_proxy.api_errors import ApiError, Code, translate
from parent_proxy.auth import ATTESTATION_BUCKET, owner_attestation_bucket
from parent_proxy.clock import read_clock
from parent_proxy.errors import ProxyError
from parent_proxy.schemas import BASE58_KEY, AttestationView

if TYPE_CHECKING:
    from parent_proxy.services import Services

NonceQuery = Annotated[
    str, Query(min_length=32, max_length=128, pattern=r"^[0-9a-fA-F]+$", description="hex, 16-64 bytes")
]
"""The caller's attestation nonce, as a query parameter."""
OptionalNonceQuery = Annotated[
    str | None,
    Query(
        min_length=32, max_length=128, pattern=r"^[0-9a-fA-F]+$",
        description="hex, 16-64 bytes: the answer then carries the enclave's attestation over it (`attestation`)",
    ),
]  # fmt: skip
"""An optional attestation nonce: given, the answer carries the attestation of the enclave that made it."""

SessionKeyQuery = Annotated[
    str | None,
    Query(
        pattern=BASE58_KEY,
        description="base58: answer only if this host's enclave has this session key (the one a signed answer "
        "names); another host answers 404 session_key_not_here, so ask again",
    ),
]
"""The session key an agent's receipt names, to pick the host whose enclave has it (`attest_session`)."""

COSE_SIGN1_TAG = 18
"""RFC 9052: the optional CBOR tag of a COSE_Sign1 structure."""


def _inconsistent(message: str) -> ApiError:
    return ApiError(Code.ATTESTATION_INCONSISTENT, f"the enclave's attestation answer is inconsistent: {message}")


def document_field_unverified(document: bytes, name: str) -> object | None:
    """Field ``name`` of a COSE_Sign1 attestation document's payload, read without checking any signature: only to
    compare with what the enclave says beside it, or to pick the time to verify at. None if absent or malformed."""
    try:
        item: Any = cbor2.loads(document)
        if isinstance(item, cbor2.CBORTag) and item.tag == COSE_SIGN1_TAG:
            item = item.value
        if not isinstance(item, list | tuple) or len(item) != 4 or not isinstance(item[2], bytes):
            return None
        payload: Any = cbor2.loads(item[2])
    except (cbor2.CBORDecodeError, ValueError, TypeError, RecursionError):
        return None
    return payload.get(name) if isinstance(payload, dict) else None


def document_public_key_unverified(document: bytes) -> bytes | None:
    """The document's ``public_key`` (unverified, see `document_field_unverified`)."""
    key = document_field_unverified(document, "public_key")
    return key if isinstance(key, bytes) else None


def attestation_view(answer: AttestationResponse, status: StatusResponse) -> AttestationView:
    """Steps 1-3 of the module docstring, then the view."""
    session_key = answer.session_public_key
    # 1. The answer names its session key.
    if session_key is None:
        raise _inconsistent("no session public key")
    # 2. Mode nitro: the document carries the same key.
    document = answer.document
    nitro = answer.mode is AttestationMode.NITRO
    if nitro and (document is None or document_public_key_unverified(document) != session_key):
        raise _inconsistent("the document carries another session key")
    # 3. The status describes the same boot.
    if status.session_public_key != session_key:
        raise _inconsistent("the enclave restarted while answering")
    return AttestationView(
        document=None if document is None else base64.b64encode(document).decode(),
        mode="nitro" if nitro else "none",
        reason=answer.reason,
        session_public_key=str(Pubkey.from_bytes(session_key)),
        enclave_state=status.state.value,
    )


async def attest(services: Services, nonce: str, *, owner: bytes | None) -> AttestationView:
    """The enclave's attestation over ``nonce`` (hex, `NonceQuery`) as `attestation_view` checks it: 422 for an odd
    number of digits, 429 ``rate_limited`` over the attestation limit (each call is one NSM attestation, counted
    before the enclave is asked: `parent_proxy.auth.attestation_limiter`), the relay's errors. ``owner``: the owner
    key (32 bytes) whose request signature was verified, whose own bucket is drawn on; None for an anonymous caller
    (the process's one anonymous bucket)."""
    raw = _nonce_bytes(nonce)
    bucket = ATTESTATION_BUCKET if owner is None else owner_attestation_bucket(owner)
    try:
        services.attestation_limiter.check(bucket, read_clock(services.clock))
    except ProxyError as exc:
        raise translate(exc) from exc
    answer = await services.relay.attestation(raw)
    status = await services.relay.ping()
    return attestation_view(answer, status)


def _nonce_bytes(nonce: str) -> bytes:
    try:
        return bytes.fromhex(nonce)
    except ValueError as exc:
        raise ApiError(Code.INVALID_REQUEST, "nonce must be an even number of hex digits") from exc


def _not_here() -> ApiError:
    return ApiError(
        Code.SESSION_KEY_NOT_HERE,
        "this host's enclave has another session key: ask again (the load balancer picks a host each time); if no "
        "host has it, the enclave that had it has restarted since",
    )


async def attest_session(services: Services, nonce: str, session_public_key: str) -> AttestationView:
    """`attest`, answered only by the host whose enclave has ``session_public_key`` (base58, `SessionKeyQuery`):
    404 ``session_key_not_here`` from any other, before anything is counted (a malformed nonce is 422 first), and
    also when the attestation names another key (the enclave restarted in between)."""
    _nonce_bytes(nonce)
    try:
        wanted = bytes(Pubkey.from_string(session_public_key))
    except ValueError as exc:
        raise ApiError(Code.INVALID_REQUEST, "session_public_key: not a base58 public key") from exc
    status = await services.relay.ping()
    if status.session_public_key != wanted:
        raise _not_here()
    view = await attest(services, nonce, owner=None)
    if view.session_public_key != str(Pubkey.from_bytes(wanted)):
        raise _not_here()
    return view
