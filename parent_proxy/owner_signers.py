"""The owner's signing key, behind one small seam: a local key (self-host; its files: `parent_proxy.owner_keyfile`)
or AWS KMS (cloud).

`OwnerSigner.sign(message)` returns a pure Ed25519 signature over ``message`` (the exact bytes of
`policies.signing.signing_payload` or of an owner request), so both produce the same signatures for the same key.

KMS (DESIGN.md section 3): ``kms:Sign`` with ``SigningAlgorithm=ED25519_SHA_512`` and ``MessageType=RAW`` (never
``ED25519_PH_SHA_512``), called with credentials from an assume-role chain whose first hop carries MFA
(``SerialNumber`` + ``TokenCode``) and the owner's ``SourceIdentity`` (the entry role's trust policy and the owner
key's policy refuse a session without one; STS carries it through the rest of the chain).

The key is named by its full key ARN only (`parse_kms_key_arn`: the ``OwnerKeyArn`` output of the
``WaiaasOwnerKey`` stack), never by an alias, which any key administrator (``kms:UpdateAlias``) can re-point to a key
of their own, nor by a bare key id. The ARN's region is the region of every AWS call. KMS's answers must name that
ARN (``KeyId`` of GetPublicKey and Sign), and every KMS signature is verified against the key's public key before
use, so a misbehaving endpoint cannot produce an owner document that the proxy would later refuse. Pinning the
expected owner public key (``expected_public_key``) is compared before anything is signed. A failed AWS call is
reported by its AWS error code (`aws_error`), never with credentials.
"""

from __future__ import annotations

import json
import os
import re
import stat
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import boto3
from botocore.exceptions import ClientError
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, load_der_public_key
from solders.pubkey import Pubkey

from policies.ed25519 import verify_ed25519

KMS_SIGNING_ALGORITHM = "ED25519_SHA_512"
KMS_MESSAGE_TYPE = "RAW"
MAX_KMS_RAW_MESSAGE_BYTES = 4096
"""KMS Sign: a RAW message is at most 4096 bytes (larger needs a digest, which pure Ed25519 cannot use)."""
MAX_ROLE_CHAIN = 5
SESSION_SECONDS = 900
"""Shortest STS session: owner actions are one-off."""
SOURCE_IDENTITY_RE = re.compile(r"[A-Za-z0-9_+=,.@-]{2,64}", re.ASCII)
"""STS ``AssumeRole`` ``SourceIdentity``: 2-64 characters, letters, digits and ``_+=,.@-`` (botocore's STS model,
``sourceIdentityType``). The reserved ``aws:`` prefix cannot occur: ``:`` is not an allowed character."""
MFA_CODE_RE = re.compile(r"[0-9]{6}", re.ASCII)
"""A TOTP code as STS takes it in ``TokenCode``: six ASCII digits."""
KMS_KEY_ARN_RE = re.compile(r"arn:aws[a-z-]*:kms:([a-z]{2}(?:-[a-z]+)+-[0-9]{1,2}):[0-9]{12}:key/[A-Za-z0-9-]{1,128}")
"""A full KMS key ARN: partition, region (group 1), account, ``key/`` and the key id (as the enclave's seal-key
setting takes it, `enclave_app.settings`)."""
AWS_ERROR_CODE_RE = re.compile(r"[A-Za-z0-9_.:-]{1,100}", re.ASCII)
"""What an AWS error code looks like (``AccessDenied``, ``KMSInvalidStateException``); anything else is not shown."""
KEY_ARN_NEEDED = (
    "the owner key must be given by its full key ARN (arn:aws:kms:<region>:<account>:key/<id>: the OwnerKeyArn output "
    "of the WaiaasOwnerKey stack), not an alias (a key administrator can re-point an alias to a key of their own) "
    "nor a bare key id"
)


class OwnerKeyError(Exception):
    """The owner key could not be loaded or used. Never carries key material."""


@dataclass(frozen=True)
class KmsKeyArn:
    """A full KMS key ARN, checked (`parse_kms_key_arn`), and the region it names."""

    arn: str
    region: str


def parse_kms_key_arn(text: str) -> KmsKeyArn:
    """The key ARN ``text``, or `OwnerKeyError` for an alias, a bare key id or anything malformed."""
    match = KMS_KEY_ARN_RE.fullmatch(text)
    if match is None:
        raise OwnerKeyError(KEY_ARN_NEEDED)
    return KmsKeyArn(text, match.group(1))


def aws_error(exc: BaseException) -> str:
    """How a failed AWS call is reported: the AWS error code of a refusal (``AccessDenied``,
    ``ExpiredTokenException``: not secret, and what the AWS documentation explains), else the exception's class name
    (botocore's ``EndpointConnectionError``, ``NoCredentialsError``, ...). Never the message or the request."""
    if isinstance(exc, ClientError):
        code = exc.response.get("Error", {}).get("Code")
        if isinstance(code, str) and AWS_ERROR_CODE_RE.fullmatch(code):
            return code
    return type(exc).__name__


class OwnerSigner(Protocol):
    @property
    def public_key(self) -> Pubkey: ...

    def sign(self, message: bytes) -> bytes: ...


def keypair_from_json(data: bytes) -> Ed25519PrivateKey:
    """A Solana CLI keypair: a JSON array of 64 bytes (32-byte seed, then the public key, which must match)."""
    try:
        value = json.loads(data)
    except (ValueError, RecursionError):  # not chained: a JSONDecodeError keeps the whole document (the key)
        raise OwnerKeyError("not JSON") from None
    if not isinstance(value, list) or len(value) != 64 or not all(type(b) is int and 0 <= b <= 255 for b in value):
        raise OwnerKeyError("not a JSON array of 64 bytes")
    raw = bytes(value)
    key = Ed25519PrivateKey.from_private_bytes(raw[:32])
    if key.public_key().public_bytes_raw() != raw[32:]:
        raise OwnerKeyError("the public half does not match the secret half")
    return key


def load_keypair_file(path: Path) -> Ed25519PrivateKey:
    """A plaintext Solana CLI keypair file with mode 0600 (the local demo chain's throw-away keys; the owner CLI
    reads encrypted files too, see `parent_proxy.owner_keyfile`)."""
    try:
        mode = path.stat().st_mode
        data = path.read_bytes()
    except OSError as exc:
        raise OwnerKeyError("keypair file unreadable or not JSON") from exc
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise OwnerKeyError("keypair file is readable by group or others (chmod 600 it)")
    try:
        return keypair_from_json(data)
    except OwnerKeyError as exc:
        raise OwnerKeyError(f"keypair file: {exc}") from None


@dataclass
class LocalOwnerSigner:
    key: Ed25519PrivateKey = field(repr=False)

    @classmethod
    def from_file(cls, path: Path) -> LocalOwnerSigner:
        return cls(load_keypair_file(path))

    @property
    def public_key(self) -> Pubkey:
        return Pubkey.from_bytes(self.key.public_key().public_bytes_raw())

    def sign(self, message: bytes) -> bytes:
        return self.key.sign(message)


def write_keypair_file(path: Path, key: Ed25519PrivateKey) -> None:
    """Write a Solana CLI keypair file with mode 0600 (owner tooling; tests)."""
    seed = key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    data = json.dumps(list(seed + key.public_key().public_bytes_raw()))
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(data)


@dataclass(frozen=True)
class RoleChain:
    """Roles to assume in order; the first hop is made with MFA and sets the source identity (who is signing)."""

    role_arns: Sequence[str]
    mfa_serial: str
    mfa_code: str = field(repr=False)
    source_identity: str
    session_name: str = "waiaas-owner"


def check_source_identity(value: str) -> None:
    """Raise `OwnerKeyError` unless STS would accept ``value`` as a ``SourceIdentity``."""
    if not SOURCE_IDENTITY_RE.fullmatch(value):
        raise OwnerKeyError("the source identity must be 2-64 characters: letters, digits and _+=,.@-")


def check_expected_public_key(actual: Pubkey, expected: Pubkey | None, source: str) -> None:
    """Raise `OwnerKeyError` when a pinned owner public key is given and ``actual`` is another key."""
    if expected is not None and bytes(actual) != bytes(expected):
        raise OwnerKeyError(f"{source} holds public key {actual}, not the expected owner key {expected}")


ClientFactory = Callable[..., Any]
"""``factory(service_name, credentials_or_None) -> boto3 client`` (the cloud seam)."""


def assume_role_chain(factory: ClientFactory, chain: RoleChain) -> dict[str, str]:
    """Walk the role chain and return the last role's temporary credentials (AccessKeyId, SecretAccessKey,
    SessionToken). The first ``AssumeRole`` carries ``SerialNumber``/``TokenCode`` (MFA) and ``SourceIdentity``;
    later hops do not repeat it (STS keeps it for the whole chain and refuses to change it)."""
    if not chain.role_arns or len(chain.role_arns) > MAX_ROLE_CHAIN:
        raise OwnerKeyError(f"the role chain must name 1-{MAX_ROLE_CHAIN} roles")
    if not MFA_CODE_RE.fullmatch(chain.mfa_code):
        raise OwnerKeyError("the MFA code must be 6 digits")
    check_source_identity(chain.source_identity)
    credentials: dict[str, str] | None = None
    for index, role_arn in enumerate(chain.role_arns):
        params: dict[str, Any] = {
            "RoleArn": role_arn,
            "RoleSessionName": chain.session_name,
            "DurationSeconds": SESSION_SECONDS,
        }
        if index == 0:
            params["SerialNumber"] = chain.mfa_serial
            params["TokenCode"] = chain.mfa_code
            params["SourceIdentity"] = chain.source_identity
        try:  # the client too: botocore refuses some settings (a region it cannot use) only when it makes one
            answer = factory("sts", credentials).assume_role(**params)
            c = answer["Credentials"]
            credentials = {
                "AccessKeyId": c["AccessKeyId"],
                "SecretAccessKey": c["SecretAccessKey"],
                "SessionToken": c["SessionToken"],
            }
        except Exception as exc:  # botocore errors: report which hop, never the credentials
            raise OwnerKeyError(f"assume-role hop {index + 1} ({role_arn}) failed: {aws_error(exc)}") from exc
    if credentials is None:  # pragma: no cover - the loop ran at least once
        raise OwnerKeyError("no credentials")
    return credentials


def boto3_factory(region: str) -> ClientFactory:
    """The production client factory (boto3 with the given temporary credentials, or the default chain), every
    client in ``region`` (the owner key's: STS's regional endpoint there, and KMS)."""

    def make(service: str, credentials: dict[str, str] | None) -> Any:
        if credentials is None:
            return boto3.client(service, region_name=region)  # type: ignore[call-overload]
        return boto3.client(  # type: ignore[call-overload]
            service,
            region_name=region,
            aws_access_key_id=credentials["AccessKeyId"],
            aws_secret_access_key=credentials["SecretAccessKey"],
            aws_session_token=credentials["SessionToken"],
        )

    return make


class KmsOwnerSigner:
    """Signs with an ``ECC_NIST_EDWARDS25519`` KMS key (pure Ed25519 over RAW messages), named by its full key ARN.

    Construction reads the public key (``kms:GetPublicKey``); an answer for another key than ``key_arn`` is refused,
    and so is, with ``expected_public_key``, a key whose public key is not that owner key: nothing is ever signed
    (a wrong ``--kms-key-id`` would otherwise sign valid signatures under a key nobody expects)."""

    def __init__(self, kms: Any, key_arn: str, *, expected_public_key: Pubkey | None = None) -> None:
        self.key_arn = parse_kms_key_arn(key_arn).arn
        self._kms = kms
        try:
            answer = kms.get_public_key(KeyId=key_arn)
            answered_key, der = answer.get("KeyId"), answer["PublicKey"]
            public = load_der_public_key(der)
        except Exception as exc:
            raise OwnerKeyError(f"KMS key {key_arn}: public key unavailable ({aws_error(exc)})") from exc
        self._check_answered_key("GetPublicKey", answered_key)
        if not isinstance(public, Ed25519PublicKey):
            raise OwnerKeyError(f"KMS key {key_arn} is not an Ed25519 key")
        self._public = public
        check_expected_public_key(self.public_key, expected_public_key, f"KMS key {key_arn}")

    @classmethod
    def with_role_chain(
        cls, factory: ClientFactory, chain: RoleChain, key_arn: str, *, expected_public_key: Pubkey | None = None
    ) -> KmsOwnerSigner:
        """Walk ``chain``, then read the key with the last role's credentials. ``factory`` makes clients in the
        key's region (`boto3_factory`); a malformed ``key_arn`` is refused before any STS call."""
        parse_kms_key_arn(key_arn)
        credentials = assume_role_chain(factory, chain)
        try:
            kms = factory("kms", credentials)
        except Exception as exc:  # botocore: a region it cannot use, a broken configuration
            raise OwnerKeyError(f"KMS client for {key_arn}: {aws_error(exc)}") from exc
        return cls(kms, key_arn, expected_public_key=expected_public_key)

    @property
    def public_key(self) -> Pubkey:
        return Pubkey.from_bytes(self._public.public_bytes_raw())

    def sign(self, message: bytes) -> bytes:
        if len(message) > MAX_KMS_RAW_MESSAGE_BYTES:
            raise OwnerKeyError(f"KMS signs RAW messages of at most {MAX_KMS_RAW_MESSAGE_BYTES} bytes")
        try:
            answer = self._kms.sign(
                KeyId=self.key_arn,
                Message=message,
                MessageType=KMS_MESSAGE_TYPE,
                SigningAlgorithm=KMS_SIGNING_ALGORITHM,
            )
            answered_key, signature = answer.get("KeyId"), bytes(answer["Signature"])
        except Exception as exc:
            raise OwnerKeyError(f"kms:Sign failed ({aws_error(exc)})") from exc
        self._check_answered_key("Sign", answered_key)
        # Verify before use: a signature that does not verify would only be refused later, far from the cause.
        if not verify_ed25519(self._public.public_bytes_raw(), signature, message):
            raise OwnerKeyError("KMS returned a signature that does not verify")
        return signature

    def _check_answered_key(self, operation: str, answered: object) -> None:
        """KMS names the key it used in ``KeyId`` (always its key ARN): it must be the one asked for."""
        if answered != self.key_arn:
            named = f"for key {answered[:200]}" if isinstance(answered, str) else "without naming a key"
            raise OwnerKeyError(f"kms:{operation} answered {named}, not for {self.key_arn}: refused")
