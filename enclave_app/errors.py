"""The one error hierarchy of ``enclave_app``.

::

    EnclaveError                      base of everything this package raises on purpose
    ├── CborDecodeError               untrusted CBOR refused (malformed, forbidden tag, too deep)
    ├── AttestationError              an attestation document was refused (reason is a fixed phrase)
    ├── NsmError                      the Nitro Secure Module failed or answered something unexpected
    ├── RecipientDecryptionError      a KMS ``CiphertextForRecipient`` could not be opened (opaque)
    ├── KmsError                      a KMS call failed or its answer was malformed
    │   ├── KmsAccessDeniedError      KMS answered AccessDeniedException (for the enclave: its attestation
    │   │                             did not satisfy the key policy, or the role may not call the operation)
    │   ├── KmsCredentialsMissingError  a request that needs KMS came without the parent's AWS credentials
    │   └── KmsCredentialsRejectedError KMS refused the credentials the parent lent (expired, unknown, altered)
    ├── SealingError                  a sealed blob is malformed or does not open (opaque)
    │   ├── KeyMismatchError          the unsealed key is not the pinned one
    │   └── KeyDerivationError        the Argon2id derivation itself failed (a resource, not the blob)
    ├── FramingError                  a protocol frame is malformed or the peer left mid-frame
    │   └── FrameTooLargeError        the announced length exceeds ``MAX_FRAME_BYTES``
    ├── TransportError                a bad address spec or a connection that could not be set up
    │   └── EnclaveTimeoutError       the enclave did not answer in time (client side)
    ├── ProtocolError                 a frame is not a message of the protocol (type, fields, sizes)
    ├── EnclaveRequestError           the enclave answered with an error code (client side; ``.code``)
    ├── CredentialsUnavailableError   the parent could not read the AWS credentials it lends (client side)
    ├── ReceiptError                  a decision receipt does not verify or is malformed
    ├── SettingsError                 a start-up setting is missing or malformed
    ├── SecretFileError               the operator secret file is not a regular file only its owner can read
    ├── CoreDumpError                 the process could not be kept from dumping core (start-up refused)
    └── StateError                    a request the enclave refuses (carries its ``ErrorCode``)
        └── InconsistentStateError    an invariant broke: the enclave moves to the failed state

Lower-layer exceptions (cbor2, cryptography, asn1crypto, botocore, OSError) are translated where they are
caught, with ``raise ... from exc``. Cryptographic failures stay opaque: their messages are fixed phrases that
never carry key material, plaintext or the inner library's diagnosis.
"""

from __future__ import annotations


class EnclaveError(Exception):
    """Base class of every error ``enclave_app`` raises on purpose."""


class CborDecodeError(EnclaveError):
    """Untrusted CBOR was refused."""


class AttestationError(EnclaveError):
    """An attestation document was refused. The message is one fixed phrase per check."""


class NsmError(EnclaveError):
    """The Nitro Secure Module could not be reached, refused the request, or answered nonsense."""


class RecipientDecryptionError(EnclaveError):
    """A ``CiphertextForRecipient`` (CMS EnvelopedData) could not be opened. Deliberately opaque."""


class KmsError(EnclaveError):
    """A KMS call failed, or its answer did not have the expected shape."""


class KmsAccessDeniedError(KmsError):
    """KMS refused the call with ``AccessDeniedException``. From inside the enclave this means the attestation
    document (PCRs, chain) did not satisfy the key policy's conditions, or the role lacks the permission; KMS
    does not say which."""


class KmsCredentialsMissingError(KmsError):
    """A request that needs KMS (``provision_wallet`` or ``load_wallet`` with the KMS sealer) carried no AWS
    credentials: the enclave has none of its own, so it does not call KMS at all."""


class KmsCredentialsRejectedError(KmsError):
    """KMS refused the AWS credentials the call was signed with (expired, unknown or altered: the parent lent
    stale or wrong ones), before looking at the key policy. Says nothing about the attestation."""


class SealingError(EnclaveError):
    """A sealed blob is malformed, of an unknown version, or does not open. Deliberately opaque."""


class KeyMismatchError(SealingError):
    """The key that came out of a sealed blob does not derive the pinned public key."""


class KeyDerivationError(SealingError):
    """The local sealer's Argon2id derivation failed (e.g. out of memory): says nothing about the blob or the secret.
    A sealing error still (the enclave answers ``unseal_failed``); tools tell it apart to give the right advice."""


class FramingError(EnclaveError):
    """A protocol frame is malformed, or the stream ended in the middle of one."""


class FrameTooLargeError(FramingError):
    """A frame announces (or a caller tries to send) more than ``MAX_FRAME_BYTES``."""


class TransportError(EnclaveError):
    """An address spec is invalid, or a listener/connection could not be set up."""


class EnclaveTimeoutError(TransportError):
    """The enclave did not answer within the client's timeout. A signing request may or may not have been
    served: the caller decides (never retried automatically)."""


class ProtocolError(EnclaveError):
    """A decoded frame is not a message of the protocol: unknown type, missing or extra field, wrong type, size."""


class EnclaveRequestError(EnclaveError):
    """The enclave answered a request with an error code (see ``enclave_app.protocol.ErrorCode``)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.detail = message


class CredentialsUnavailableError(EnclaveError):
    """The parent could not read the AWS credentials it lends the enclave for KMS; nothing was sent. The message
    names the cause's type, never a credential."""


class SettingsError(EnclaveError):
    """A start-up setting is missing or malformed. The message names the variable, never its value."""


class SecretFileError(EnclaveError):
    """The operator secret file (self-host) cannot be used: it is not a regular file, or group or others may read
    it. The message names the file and the mode it needs, never a byte of it."""


class CoreDumpError(EnclaveError):
    """The process could not lower its core-file limit, or (Linux) clear its dumpable flag: the signer refuses to
    start rather than run with its secrets open to a core dump (`enclave_app.core_dumps`)."""


class StateError(EnclaveError):
    """The enclave refuses a request in its current state; ``code`` is an ``ErrorCode`` value."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class InconsistentStateError(StateError):
    """An invariant does not hold (e.g. a signature that does not verify): the enclave fails closed."""

    def __init__(self, message: str) -> None:
        super().__init__("failed", message)


class ReceiptError(EnclaveError):
    """A decision receipt does not verify under the given session key, or is malformed."""
