"""Owner request signatures: Ed25519 by the owner key over a canonical form of the request, replays refused.

The signed bytes are ``policies.signing.signing_payload("owner-request", form)`` where ``form`` is::

    {"audience": "https://wallets.example.com", "method": "POST", "path": "/v1/wallets/w1/freeze",
     "body_sha256": "<hex>", "timestamp": 1700000000, "nonce": "<16-64 chars of A-Z a-z 0-9 _ ->"}

``path`` is the request path with its query string (``?a=b``) if any. ``audience`` names the deployment the request
is for: the origin (``scheme://host[:port]``) the owner's tool sends it to, in the normal form of
`normalize_origin` (lowercase scheme and host, no default port, no path). Without it, one owner key used in two
deployments (staging and production, a self-host beside the cloud) with a wallet id in both would let whoever sees
one deployment's traffic (its parent, which may be taken over: DESIGN.md section 1) replay the owner's requests to
the other within the skew window, since each deployment keeps its own nonces. The owner's tool takes the audience
from the URL the owner gave (`url_origin`), never from a server's answer. The domain prefix of `policies.signing`
(0xff + purpose) makes an owner request signature unusable as a transaction signature or as any other owner
document, and the other way round. A KMS signature (``ED25519_SHA_512``, ``MessageType=RAW``) over the same bytes
is the same signature.

Headers: ``WAIaaS-Owner-Key`` (base58 public key), ``WAIaaS-Owner-Timestamp`` (unix seconds), ``WAIaaS-Owner-Nonce``,
``WAIaaS-Owner-Audience`` (the origin signed), ``WAIaaS-Owner-Signature`` (base58, 64 bytes).

Why a header for the audience, and why it is safe: the proxy cannot learn its own public origin from the request (a
load balancer or reverse proxy in front rewrites the Host), and trying every configured origin would cost one
signature check per origin. So the owner's tool says which origin it signed, and the proxy accepts only one of its
own configured origins (``WAIAAS_PUBLIC_ORIGINS``, compared as exact strings in the normal form): the value that
goes into the verified form is always one the proxy was configured with, never one a caller chose. A request
signed for another deployment fails either way: naming that deployment's origin is refused here, and naming this
one does not match what was signed.

Verification, in order (`verify_owner_request`):
1. all five headers present and well formed (spaces and tabs around a value ignored, whatever the HTTP parser left:
   `_header` is the one reader of these headers) -- else 401 ``owner_signature_invalid``;
2. the audience is one of this proxy's public origins -- else 401 ``owner_signature_invalid`` with the message of a
   bad signature (it says nothing a caller could use). When the audience is in normal form, the signature is then
   checked over the request with that audience, as step 3 would: a request signed over it under an expected key is
   an owner's, sent to an origin the deployment does not list (a misconfigured ``WAIAAS_PUBLIC_ORIGINS``), and is
   refused as `ForeignAudience`, the same 401, which the caller may tell the operator about
   (`parent_proxy.owner_audience_log`). Its timing is that of step 3's refusals;
3. the signature verifies over the canonical form of *this* request (audience, method, path, body hash) under the
   key the headers name, and that key is the one the caller expects (the wallet's owner key, or one of the
   configured owner keys for wallet creation) -- else 401, the same answer; the signature is checked first, so an
   unexpected key (an unknown wallet) takes the same work as a bad signature and timing does not tell them apart;
4. the timestamp is within ``max_skew`` seconds of now -- else 401 ``owner_request_replayed``;
5. the nonce has not been seen in this scope (the wallet; for a creation, the owner key) -- else 401
   ``owner_request_replayed``. Nonces are claimed only after the audience matched, the signature verified under an
   expected key and the timestamp is fresh, so nobody but an owner can fill the nonce registry, and a captured
   request replayed adds nothing to it (`StoreNonceRegistry` keeps them in the shared store).

What the audience does not cover: two deployments configured with the same origin (two self-hosts each on
``http://127.0.0.1:8080`` of its own machine) are one audience; give each deployment an origin of its own. And the
owner documents a request carries (policies, freeze orders) name a wallet id, not a deployment: a parent relays them
to its enclave without this signature, so a taken-over parent holding one the owner sent elsewhere can hand it to
its own enclave (docs/api.md, Owner documents and deployments).

Caller's duties: pass the exact raw body bytes; check the body's own contents (owner documents inside carry their
own signatures and bindings, see `policies.orders`).
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from solders.pubkey import Pubkey
from solders.signature import Signature

from parent_proxy.api_errors import ApiError, Code
from parent_proxy.errors import IdempotencyInProgress, IdempotencyMismatch, NonceUsed
from parent_proxy.store.protocol import Store
from parent_proxy.store.validation import IDEMPOTENCY_STALE_SECONDS
from policies.errors import PolicySignatureError
from policies.signing import signing_payload, verify_owner_signature

OWNER_REQUEST_PURPOSE = "owner-request"
KEY_HEADER = "WAIaaS-Owner-Key"
TIMESTAMP_HEADER = "WAIaaS-Owner-Timestamp"
NONCE_HEADER = "WAIaaS-Owner-Nonce"
SIGNATURE_HEADER = "WAIaaS-Owner-Signature"
AUDIENCE_HEADER = "WAIaaS-Owner-Audience"
NONCE_RE = re.compile(r"[A-Za-z0-9_-]{16,64}")
HTTP_WHITESPACE = " \t"
"""Optional whitespace around a field value (RFC 9110, 5.6.3): h11 strips it, httptools keeps the trailing part."""
MAX_SKEW_SECONDS = IDEMPOTENCY_STALE_SECONDS // 2
"""Largest ``max_skew`` the proxy may be configured with. A timestamp is accepted for up to 2 x ``max_skew`` after
its nonce was claimed, and a nonce claim left in progress (the store failed, or the process died, between its two
writes) holds its key only `IDEMPOTENCY_STALE_SECONDS`: a longer skew would let that request be replayed."""


DEFAULT_PORTS = {"http": 80, "https": 443}
"""The schemes an origin may have, with the port its normal form leaves out."""
MAX_ORIGIN_CHARS = 300
"""Longest origin accepted (a DNS name is at most 253 characters)."""
_ORIGIN = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)"
                     r"(?::(?P<port>[0-9]{1,5}))?/?")  # fmt: skip
_URL_ORIGIN = re.compile(r"([^/?#]*://[^/?#]*)(?:[/?#].*)?", re.DOTALL)
_DNS_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
_DOTTED_NUMBERS = re.compile(r"[0-9.]+")


class OriginError(ValueError):
    """An origin (or a URL's origin) that is not ``http(s)://host[:port]``; the message says what is wrong."""


def normalize_origin(text: str) -> str:
    """``text`` as an origin in normal form, the audience of an owner request: ``scheme://host[:port]`` with the
    scheme (``http`` or ``https``) and host lowercased, the scheme's default port (443, 80) dropped, an IPv4 or
    bracketed IPv6 address in its canonical spelling, and no path (a lone trailing ``/`` is dropped). Refused
    (`OriginError`): another scheme, a user or password, a path, query or fragment, whitespace, a non-ASCII host
    (give its ``xn--`` form), a host that is neither a DNS name nor an IP address, a port outside 1-65535. Both
    sides use it: the proxy on ``WAIAAS_PUBLIC_ORIGINS``, the owner's tools (through `url_origin`) on the URL the
    owner gave."""
    match = _ORIGIN.fullmatch(text) if len(text) <= MAX_ORIGIN_CHARS else None
    if match is None:
        raise OriginError("is not scheme://host[:port] (no user, path, query or fragment)")
    scheme = match["scheme"].lower()
    if scheme not in DEFAULT_PORTS:
        raise OriginError("must be an http:// or https:// origin")
    host = match["host"].lower()
    try:
        if host.startswith("["):
            host = f"[{ipaddress.IPv6Address(host[1:-1]).compressed}]"
        elif _DOTTED_NUMBERS.fullmatch(host):
            host = str(ipaddress.IPv4Address(host))
        elif len(host) > 253 or not all(_DNS_LABEL.fullmatch(label) for label in host.split(".")):
            raise OriginError("has a host that is neither a DNS name nor an IP address")
    except ipaddress.AddressValueError as exc:
        raise OriginError("has a host that is not a valid IP address") from exc
    port = DEFAULT_PORTS[scheme] if match["port"] is None else int(match["port"])
    if not 1 <= port <= 65535:
        raise OriginError("has a port outside 1-65535")
    return f"{scheme}://{host}" if port == DEFAULT_PORTS[scheme] else f"{scheme}://{host}:{port}"


def url_origin(url: str) -> str:
    """The normal-form origin of ``url`` (its path, query and fragment left out): the audience an owner's tool signs
    for a request it sends under that base URL. Only ever the owner's own input, never a server's answer: a parent
    that could name the audience could make the owner sign a request for another deployment."""
    match = _URL_ORIGIN.fullmatch(url)
    if match is None:
        raise OriginError("is not an http:// or https:// URL")
    return normalize_origin(match[1])


@dataclass(frozen=True, slots=True)
class OwnerRequest:
    """What the owner signs about one HTTP request. ``audience``: the origin the request is sent to, in normal form
    (`normalize_origin`, `url_origin`); a value not in normal form is refused here (`OriginError`), since no proxy
    would accept it."""

    method: str
    path: str
    body: bytes
    timestamp: int
    nonce: str
    audience: str = field(kw_only=True)

    def __post_init__(self) -> None:
        if normalize_origin(self.audience) != self.audience:
            raise OriginError("the audience is not in normal form (normalize_origin)")

    def form(self) -> dict[str, str | int]:
        return {
            "audience": self.audience,
            "method": self.method.upper(),
            "path": self.path,
            "body_sha256": hashlib.sha256(self.body).hexdigest(),
            "timestamp": self.timestamp,
            "nonce": self.nonce,
        }

    def payload(self) -> bytes:
        """The exact bytes the owner key signs."""
        return signing_payload(OWNER_REQUEST_PURPOSE, dict(self.form()))


def owner_request_headers(request: OwnerRequest, owner: Pubkey, sign: Callable[[bytes], bytes]) -> dict[str, str]:
    """The five headers for ``request``, signed with ``sign`` (a local key or KMS; owner tooling)."""
    signature = sign(request.payload())
    return {
        KEY_HEADER: str(owner),
        TIMESTAMP_HEADER: str(request.timestamp),
        NONCE_HEADER: request.nonce,
        AUDIENCE_HEADER: request.audience,
        SIGNATURE_HEADER: str(Signature.from_bytes(signature)),
    }


def signed_request_headers(
    url: str, method: str, path: str, body: bytes, *, owner: Pubkey, sign: Callable[[bytes], bytes]
) -> dict[str, str]:
    """The headers of a new owner request to the deployment at ``url`` (its origin is the audience signed,
    `url_origin`: `OriginError` for a URL without one), stamped now with a fresh random nonce; with
    ``Content-Type: application/json`` when there is a body. The one way owner tooling, the demo and the bench
    build a request."""
    request = OwnerRequest(method, path, body, int(time.time()), secrets.token_urlsafe(24), audience=url_origin(url))
    headers = owner_request_headers(request, owner, sign)
    if body:
        headers["Content-Type"] = "application/json"
    return headers


class NonceRegistry(Protocol):
    def claim(self, scope: str | None, owner: Pubkey, nonce: str, now: float, accepted_until: float) -> None:
        """Record ``nonce`` of ``owner`` as used in ``scope`` (a wallet id, or None: a wallet creation); raise 401 if
        it was used before. ``accepted_until``: the last time at which any parent process would still accept the
        request's timestamp (a nonce need not be remembered after it)."""
        ...


class StoreNonceRegistry:
    """Nonces kept in the shared store, so several parent processes (and a restarted one) refuse each other's
    replays.

    Scope a wallet id (the wallet exists: the owner key verified is its owner's): an idempotency record of the wallet
    under the key ``owner-nonce:<nonce>`` (agent keys live under ``agent:``, so agents cannot collide with them),
    kept as a completed one is (a day).

    Scope None (a creation, before the wallet exists): a creation nonce of the owner key (`Store.claim_creation_nonce`,
    keyed by key and nonce, not by the wallet id the body names), held until ``accepted_until``. A creation that
    fails after its nonce was claimed (an enclave that cannot be reached, a wallet that could not be stored, a body
    refused, 429 over the owner key's attestation limit) leaves the nonce used: the same signed request sent again
    is a replay; the owner's retry is a new request with a new nonce (the owner CLI signs each request with a fresh
    one). The attestation limit is drawn on only after the claim, on purpose: drawn on before, a captured request
    replayed would spend the owner's bucket (`parent_proxy.auth.owner_attestation_bucket`).
    """

    def __init__(self, store: Store) -> None:
        self._store = store

    def claim(self, scope: str | None, owner: Pubkey, nonce: str, now: float, accepted_until: float) -> None:
        if scope is None:
            try:
                self._store.claim_creation_nonce(bytes(owner), nonce, now, accepted_until)
            except NonceUsed as exc:
                raise ApiError(Code.OWNER_REQUEST_REPLAYED, "nonce already used") from exc
            return
        key = f"owner-nonce:{nonce}"
        marker = hashlib.sha256(key.encode()).digest()
        try:
            previous = self._store.begin_idempotent(scope, key, marker, now)
        except (IdempotencyMismatch, IdempotencyInProgress) as exc:
            raise ApiError(Code.OWNER_REQUEST_REPLAYED, "nonce already used") from exc
        if previous is not None:
            raise ApiError(Code.OWNER_REQUEST_REPLAYED, "nonce already used")
        self._store.complete_idempotent(scope, key, marker, b"{}")


def _header(headers: Mapping[str, str], name: str) -> str:
    """The value of owner header ``name`` without surrounding whitespace, or 401: the one reader of these headers,
    so that a route never sees a value the HTTP parser left padded."""
    value = (headers.get(name) or "").strip(HTTP_WHITESPACE)
    if not value:
        raise ApiError(Code.OWNER_SIGNATURE_INVALID, f"missing {name} header")
    return value


@dataclass(frozen=True, slots=True)
class OwnerHeaders:
    """The five owner headers, well formed (not yet verified; the audience not yet compared with this proxy's)."""

    owner: Pubkey
    signature: bytes
    timestamp: int
    nonce: str
    audience: str


def parse_owner_headers(headers: Mapping[str, str]) -> OwnerHeaders:
    """Step 1 of `verify_owner_request`: the five headers present and well formed, or 401
    (``owner_signature_invalid``). Cheap and store-free, so callers run it before anything else of the request."""
    try:
        owner = Pubkey.from_string(_header(headers, KEY_HEADER))
        signature = bytes(Signature.from_string(_header(headers, SIGNATURE_HEADER)))
    except ValueError as exc:
        raise ApiError(Code.OWNER_SIGNATURE_INVALID, "malformed owner key or signature") from exc
    timestamp_text = _header(headers, TIMESTAMP_HEADER)
    nonce = _header(headers, NONCE_HEADER)
    if not re.fullmatch(r"[0-9]{1,12}", timestamp_text) or not NONCE_RE.fullmatch(nonce):
        raise ApiError(Code.OWNER_SIGNATURE_INVALID, "malformed owner timestamp or nonce")
    audience = _header(headers, AUDIENCE_HEADER)  # compared with the configured origins in step 2, nothing more
    return OwnerHeaders(owner, signature, int(timestamp_text), nonce, audience)


class ForeignAudience(ApiError):
    """Step 2's refusal of a request that is otherwise an owner's: signed over this very request for ``audience`` (in
    normal form, not one of this proxy's origins) under an expected key. The answer is exactly a bad signature's; the
    audience is for the operator's log only (`parent_proxy.owner_audience_log`)."""

    def __init__(self, audience: str) -> None:
        super().__init__(Code.OWNER_SIGNATURE_INVALID, "owner signature is invalid")
        self.audience = audience


def _refused_audience(
    parsed: OwnerHeaders, method: str, path: str, body: bytes, allowed: frozenset[Pubkey]
) -> ApiError:
    """Step 2's refusal: `ForeignAudience` when the request verifies under an expected key for its own (normal form)
    audience, else the plain answer of a bad signature."""
    refused = ApiError(Code.OWNER_SIGNATURE_INVALID, "owner signature is invalid")
    try:
        request = OwnerRequest(method, path, body, parsed.timestamp, parsed.nonce, audience=parsed.audience)
        verify_owner_signature(request.payload(), parsed.signature, parsed.owner)
    except (OriginError, PolicySignatureError):
        return refused
    return ForeignAudience(parsed.audience) if parsed.owner in allowed else refused


def verify_owner_request(
    headers: Mapping[str, str],
    *,
    method: str,
    path: str,
    body: bytes,
    allowed_keys: frozenset[Pubkey],
    audiences: frozenset[str],
    now: float,
    max_skew: float,
    nonces: NonceRegistry,
    scope: str | None,
) -> Pubkey:
    """Return the verified owner key, or raise `ApiError` (401). ``audiences``: this proxy's public origins, in
    normal form (`Settings.public_origins`). See the module docstring for the steps."""
    # 1. Headers well formed.
    parsed = parse_owner_headers(headers)
    owner = parsed.owner
    # 2. For this deployment: the audience the form is verified with is one of the configured origins (the header
    # only says which one, compared as an exact string), so a request signed for another deployment cannot verify.
    if parsed.audience not in audiences:
        raise _refused_audience(parsed, method, path, body, allowed_keys)
    # 3. Signature over this very request, then the key expected. The signature is checked whether or not the key is
    # the expected one, so that a key that is not (a wallet that does not exist, another owner's wallet) costs the
    # same work as a bad signature: the answer's timing does not tell which wallet ids exist with which owner keys.
    request = OwnerRequest(method, path, body, parsed.timestamp, parsed.nonce, audience=parsed.audience)
    try:
        verify_owner_signature(request.payload(), parsed.signature, owner)
    except PolicySignatureError as exc:
        raise ApiError(Code.OWNER_SIGNATURE_INVALID, "owner signature is invalid") from exc
    if owner not in allowed_keys:
        raise ApiError(Code.OWNER_SIGNATURE_INVALID, "owner signature is invalid")
    # 4. Fresh.
    if abs(now - request.timestamp) > max_skew:
        raise ApiError(Code.OWNER_REQUEST_REPLAYED, "owner request timestamp outside the accepted window")
    # 5. Never seen: remembered for as long as any process would accept this timestamp (the largest skew allowed).
    nonces.claim(scope, owner, parsed.nonce, now, request.timestamp + max(max_skew, MAX_SKEW_SECONDS))
    return owner
