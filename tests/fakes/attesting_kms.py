"""A test KMS: moto (``mock_aws``) for key storage and symmetric operations, wrapped at the boto3 client seam to
add what moto lacks, with real cryptography on both sides:

- ``Recipient`` on Decrypt / GenerateDataKey / GenerateRandom: the attestation document is VERIFIED with
  :func:`verify_attestation_document` against the test root, the key policy's
  ``kms:RecipientAttestation:ImageSha384`` / ``kms:RecipientAttestation:PCR<n>`` conditions are evaluated, and
  the answer is a real BER CMS EnvelopedData ``CiphertextForRecipient`` to the document's RSA key (no Plaintext);
- Ed25519 keys (``ECC_NIST_EDWARDS25519``, ``ED25519_SHA_512``, ``MessageType=RAW``) with real ``cryptography``;
- callers by credentials: :meth:`AttestingTestKms.issue_credentials` hands out random temporary credentials for a
  role (as STS would), :meth:`AttestingTestKms.client_for` is the client a caller holding them gets; its calls
  are evaluated as that role, and unknown or altered credentials are refused as KMS refuses them
  (``UnrecognizedClientException``). :meth:`AttestingTestKms.client_for_session` does the same for credentials
  from an assume-role session of the test STS (`tests.fakes.sts_sessions`): the session's role and source identity;
- every call is evaluated against the key policy with the caller's ``aws:PrincipalArn`` and, when the session has
  one, ``aws:SourceIdentity`` (``kms:Sign`` and ``kms:GetPublicKey`` included), and an answer names the key by
  its key ARN (``KeyId``), as KMS does whichever way the key was named in the request.

Key policies are standard IAM policy documents (JSON dicts): Allow/Deny statements, Principal, Action (with
``*`` wildcards), and conditions with StringEquals[IgnoreCase], StringNotEquals[IgnoreCase], ArnEquals,
ArnNotEquals, Bool and Null, each but Null also with the ``IfExists`` suffix (true when the key is absent). An
unknown operator makes an Allow not apply and a Deny apply (fail closed).
Explicit deny wins, then allow, else implicit deny.

Tests only: production code cannot import this (it lives under tests/).
"""

from __future__ import annotations

import fnmatch
import json
import os
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final

import boto3
from botocore.exceptions import ClientError
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat, load_der_public_key

from enclave_app.attestation import AttestationDocument, verify_attestation_document
from enclave_app.errors import AttestationError
from enclave_app.protocol import AwsCredentials
from tests.fakes.sts_sessions import Session
from tests.support.cms_envelopes import build_envelope

if TYPE_CHECKING:
    from mypy_boto3_kms.literals import KeySpecType, KeyUsageTypeType

ED25519_KEY_SPEC: Final = "ECC_NIST_EDWARDS25519"
ED25519_SIGNING_ALGORITHM: Final = "ED25519_SHA_512"
RECIPIENT_ALGORITHM = "RSAES_OAEP_SHA_256"


def _client_error(operation: str, code: str, message: str) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": message}}, operation)


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _principal_matches(principal: Any, caller_arn: str) -> bool:
    if principal == "*":
        return True
    if isinstance(principal, Mapping) and "AWS" in principal:
        return any(p in ("*", caller_arn) for p in _as_list(principal["AWS"]))
    return False


def _condition_holds(operator: str, key: str, expected: Any, context: Mapping[str, str]) -> bool | None:
    """True/False, or None for an operator this evaluator does not know."""
    values = [str(v) for v in _as_list(expected)]
    actual = context.get(key)
    if operator == "Null":
        wants_absent = values[0].lower() == "true"
        return (actual is None) == wants_absent
    if operator.endswith("IfExists"):
        if actual is None:
            return True  # IAM: ...IfExists holds when the key is absent from the request
        operator = operator.removesuffix("IfExists")
    if operator == "Bool":
        return actual is not None and actual.lower() in (v.lower() for v in values)
    positive = {"StringEquals": False, "StringEqualsIgnoreCase": True, "ArnEquals": False}
    negative = {"StringNotEquals": False, "StringNotEqualsIgnoreCase": True, "ArnNotEquals": False}
    if operator in positive:
        if actual is None:
            return False
        fold = positive[operator]
        return any((actual.lower() == v.lower()) if fold else actual == v for v in values)
    if operator in negative:
        if actual is None:
            return True  # IAM: a negated operator is true when the key is absent
        fold = negative[operator]
        return not any((actual.lower() == v.lower()) if fold else actual == v for v in values)
    return None


def evaluate_key_policy(policy: Mapping[str, Any], *, action: str, caller_arn: str, context: Mapping[str, str]) -> bool:
    """IAM-style evaluation of one key policy for one request: True means allowed."""
    allowed = False
    for statement in _as_list(policy.get("Statement", [])):
        if not _principal_matches(statement.get("Principal"), caller_arn):
            continue
        if not any(fnmatch.fnmatchcase(action, pattern) for pattern in _as_list(statement.get("Action", []))):
            continue
        effect = statement.get("Effect")
        results: list[bool | None] = []
        for operator, pairs in statement.get("Condition", {}).items():
            for key, expected in pairs.items():
                results.append(_condition_holds(operator, key, expected, context))
        if effect == "Deny":
            if all(r is not False for r in results):  # unknown (None) counts as holding: fail closed
                return False
        elif effect == "Allow" and all(r is True for r in results):
            allowed = True
    return allowed


@dataclass
class AttestingTestKms:
    """boto3-shaped KMS client for tests. Start ``moto.mock_aws()`` before constructing it."""

    root_certificate_pem: bytes
    clock: Callable[[], datetime]
    caller_arn: str
    region: str = "us-east-1"
    source_identity: str | None = None
    # Attack hook: rewrite a response before it is returned (a compromised parent forging KMS answers).
    tamper: Callable[[str, dict[str, Any]], dict[str, Any]] | None = None
    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    closed: list[str] = field(default_factory=list)
    """The caller of each client closed (shared by the clients `client_for` makes)."""
    credentials_recognized: bool = True
    """False in a client made from credentials this KMS never issued: every attested call is refused."""
    _policies: dict[str, dict[str, Any]] = field(default_factory=dict)
    _arns: dict[str, str] = field(default_factory=dict)
    _ed25519: dict[str, Ed25519PrivateKey] = field(default_factory=dict)
    _issued: dict[str, tuple[str, str, str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._moto = boto3.client("kms", region_name=self.region)

    # --- key creation (test setup) ----------------------------------------------------------------------

    def create_key(
        self,
        *,
        Policy: str,
        KeySpec: KeySpecType = "SYMMETRIC_DEFAULT",
        KeyUsage: KeyUsageTypeType = "ENCRYPT_DECRYPT",
        **kwargs: Any,
    ) -> dict[str, Any]:
        if KeySpec == ED25519_KEY_SPEC:
            # moto has no Ed25519: register a placeholder key for metadata, keep the real key here.
            created = self._moto.create_key(Policy=Policy, KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY", **kwargs)
            key_id = created["KeyMetadata"]["KeyId"]
            self._ed25519[key_id] = Ed25519PrivateKey.generate()
            created["KeyMetadata"]["KeySpec"] = ED25519_KEY_SPEC
            created["KeyMetadata"]["SigningAlgorithms"] = [ED25519_SIGNING_ALGORITHM]
        else:
            created = self._moto.create_key(Policy=Policy, KeySpec=KeySpec, KeyUsage=KeyUsage, **kwargs)
            key_id = created["KeyMetadata"]["KeyId"]
        self._policies[key_id] = json.loads(Policy)
        self._arns[key_id] = created["KeyMetadata"]["Arn"]
        return dict(created)

    # --- callers by credentials (test setup) ---------------------------------------------------------------

    def issue_credentials(self, role_arn: str) -> AwsCredentials:
        """Fresh temporary credentials for ``role_arn`` (what STS would hand the host for its instance role)."""
        credentials = AwsCredentials(
            access_key_id="ASIA" + secrets.token_hex(8).upper(),
            secret_access_key=secrets.token_urlsafe(30),
            session_token=secrets.token_urlsafe(600),
        )
        self._issued[credentials.access_key_id] = (credentials.secret_access_key, credentials.session_token, role_arn)
        return credentials

    def client_for(self, credentials: AwsCredentials) -> AttestingTestKms:
        """The KMS client of whoever signs with ``credentials``: the same keys, evaluated as the role they were issued
        for; a client whose every attested call is refused if they are unknown or altered."""
        issued = self._issued.get(credentials.access_key_id)
        if issued is None or issued[:2] != (credentials.secret_access_key, credentials.session_token):
            return replace(self, credentials_recognized=False)
        return replace(self, caller_arn=issued[2])

    def client_for_session(self, session: Session | None) -> AttestingTestKms:
        """The KMS client of whoever holds credentials of ``session`` (`StsSessions.session` of them): evaluated as
        its role with its source identity; None (credentials the test STS never issued) is refused on every call."""
        if session is None:
            return replace(self, credentials_recognized=False)
        return replace(self, caller_arn=session.role_arn, source_identity=session.source_identity)

    def close(self) -> None:
        self.closed.append(self.caller_arn)

    # --- attested operations ------------------------------------------------------------------------------

    def generate_data_key(self, **kwargs: Any) -> dict[str, Any]:
        kwargs = dict(kwargs)
        recipient = kwargs.pop("Recipient", None)
        context = self._context(kwargs.get("EncryptionContext"))
        document = self._attest("GenerateDataKey", recipient, context)
        self._authorize("GenerateDataKey", kwargs["KeyId"], context)
        response = dict(self._moto.generate_data_key(**kwargs))
        return self._finish("GenerateDataKey", response, document)

    def decrypt(self, **kwargs: Any) -> dict[str, Any]:
        kwargs = dict(kwargs)
        recipient = kwargs.pop("Recipient", None)
        context = self._context(kwargs.get("EncryptionContext"))
        document = self._attest("Decrypt", recipient, context)
        self._authorize("Decrypt", kwargs["KeyId"], context)
        response = dict(self._moto.decrypt(**kwargs))
        return self._finish("Decrypt", response, document)

    def generate_random(self, **kwargs: Any) -> dict[str, Any]:
        kwargs = dict(kwargs)
        recipient = kwargs.pop("Recipient", None)
        document = self._attest("GenerateRandom", recipient, {})
        return self._finish("GenerateRandom", {"Plaintext": os.urandom(kwargs["NumberOfBytes"])}, document)

    # --- Ed25519 -----------------------------------------------------------------------------------------

    def sign(self, *, KeyId: str, Message: bytes, MessageType: str, SigningAlgorithm: str) -> dict[str, Any]:
        self._recognized("Sign")
        context = self._context(None) | {"kms:SigningAlgorithm": SigningAlgorithm, "kms:MessageType": MessageType}
        key_id = self._authorize("Sign", KeyId, context)
        key = self._ed25519.get(key_id)
        if key is None or SigningAlgorithm != ED25519_SIGNING_ALGORITHM or MessageType != "RAW":
            raise _client_error("Sign", "InvalidKeyUsageException", "only pure Ed25519 over RAW messages")
        return {"KeyId": self._arns[key_id], "Signature": key.sign(Message), "SigningAlgorithm": SigningAlgorithm}

    def get_public_key(self, *, KeyId: str) -> dict[str, Any]:
        self._recognized("GetPublicKey")
        key_id = self._authorize("GetPublicKey", KeyId, self._context(None))
        key = self._ed25519.get(key_id)
        if key is None:
            return dict(self._moto.get_public_key(KeyId=KeyId))
        der = key.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
        return {"KeyId": self._arns[key_id], "PublicKey": der, "KeySpec": ED25519_KEY_SPEC,
                "SigningAlgorithms": [ED25519_SIGNING_ALGORITHM]}  # fmt: skip

    def verify(
        self, *, KeyId: str, Message: bytes, Signature: bytes, MessageType: str, SigningAlgorithm: str
    ) -> dict[str, Any]:
        public = self._ed25519[KeyId].public_key()
        assert isinstance(public, Ed25519PublicKey)
        try:
            public.verify(Signature, Message)
        except Exception as exc:
            raise _client_error("Verify", "KMSInvalidSignatureException", "signature invalid") from exc
        return {"KeyId": KeyId, "SignatureValid": True, "SigningAlgorithm": SigningAlgorithm}

    # --- internals ----------------------------------------------------------------------------------------

    def _context(self, encryption_context: Mapping[str, str] | None) -> dict[str, str]:
        context = {"aws:PrincipalArn": self.caller_arn}
        if self.source_identity is not None:
            context["aws:SourceIdentity"] = self.source_identity
        for key, value in (encryption_context or {}).items():
            context[f"kms:EncryptionContext:{key}"] = value
        return context

    def _attest(self, operation: str, recipient: Any, context: dict[str, str]) -> AttestationDocument | None:
        self.calls.append((operation, {"recipient": recipient is not None, "caller": self.caller_arn}))
        self._recognized(operation)
        if recipient is None:
            return None
        if recipient.get("KeyEncryptionAlgorithm") != RECIPIENT_ALGORITHM:
            raise _client_error(operation, "ValidationException", "unsupported KeyEncryptionAlgorithm")
        try:
            document = verify_attestation_document(
                recipient["AttestationDocument"], root_certificate_pem=self.root_certificate_pem, at=self.clock(),
                allow_debug=True,  # as KMS: debug documents are not refused outright; the key policy decides
            )  # fmt: skip
        except AttestationError as exc:
            raise _client_error(operation, "ValidationException", "invalid attestation document") from exc
        context["kms:RecipientAttestation:ImageSha384"] = document.pcrs[0].hex()
        for index, value in document.pcrs.items():
            context[f"kms:RecipientAttestation:PCR{index}"] = value.hex()
        return document

    def _recognized(self, operation: str) -> None:
        if not self.credentials_recognized:
            raise _client_error(operation, "UnrecognizedClientException", "The security token included is invalid.")

    def _authorize(self, operation: str, key_id: str, context: Mapping[str, str]) -> str:
        """Evaluate the key policy; return the key's id. A key ARN must be the key's own (its region and account
        included): KMS would look another up elsewhere, and here there is nothing elsewhere."""
        if key_id.startswith("arn:"):
            key_id = next((k for k, arn in self._arns.items() if arn == key_id), key_id)
        policy = self._policies.get(key_id)
        if policy is None:
            raise _client_error(operation, "NotFoundException", "key not found")
        if not evaluate_key_policy(policy, action=f"kms:{operation}", caller_arn=self.caller_arn, context=context):
            raise _client_error(operation, "AccessDeniedException", "not authorized by the key policy")
        return key_id

    def _finish(self, operation: str, response: dict[str, Any], document: AttestationDocument | None) -> dict[str, Any]:
        response.pop("ResponseMetadata", None)
        if document is not None:
            if document.public_key is None:
                raise _client_error(operation, "ValidationException", "attestation document lacks public_key")
            recipient_key = load_der_public_key(document.public_key)
            if not isinstance(recipient_key, rsa.RSAPublicKey) or recipient_key.key_size != 2048:
                raise _client_error(operation, "ValidationException", "recipient key must be RSA-2048")
            plaintext = response.pop("Plaintext")
            response["Plaintext"] = None
            response["CiphertextForRecipient"] = build_envelope(plaintext, recipient_key)
        if self.tamper is not None:
            response = self.tamper(operation, response)
        return response


def cdk_seal_key_policy(*, pcr0: bytes, pcr8: bytes) -> tuple[dict[str, Any], str]:
    """The seal-key policy exactly as ``cdk.key_policies.seal_key_policy`` synthesizes it for the example
    deployment pinned to ``pcr0``/``pcr8``, and the enclave host role ARN it grants: one source of truth for the
    policy the test KMS evaluates. (Renders through a CDK stack; takes about a second, so cache the result.)"""
    import aws_cdk

    from cdk import naming
    from cdk.key_policies import seal_key_policy
    from cdk.synth import example_config

    config = example_config(pcr0=pcr0.hex(), pcr8=pcr8.hex())
    stack = aws_cdk.Stack(aws_cdk.App(), "SealKeyPolicy")
    policy: dict[str, Any] = stack.resolve(seal_key_policy(config).to_json())
    return policy, naming.role_arn(config, naming.ENCLAVE_HOST_ROLE)
