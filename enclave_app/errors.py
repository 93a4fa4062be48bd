"""The one error hierarchy of ``enclave_app``.

::

    EnclaveError                      base of everything this package raises on purpose
    ├── CborDecodeError               untrusted CBOR refused (malformed, forbidden tag, too deep)
    ├── AttestationError              an attestation document was refused (reason is a fixed phrase)
    ├── NsmError                      the Nitro Secure Module failed or answered something unexpected
    ├── RecipientDecryptionError      a KMS ``CiphertextForRecipient`` could not be opened (opaque)
    ├── KmsError                      a KMS call failed or its answer was malformed
    ├── SealingError                  a sealed blob is malformed or does not open (opaque)
    │   └── KeyMismatchError          the unsealed key is not the pinned one
    ├── FramingError                  a protocol frame is malformed or the peer left mid-frame
    │   └── FrameTooLargeError        the announced length exceeds ``MAX_FRAME_BYTES``
    └── TransportError                a bad address spec or a connection that could not be set up

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


class SealingError(EnclaveError):
    """A sealed blob is malformed, of an unknown version, or does not open. Deliberately opaque."""


class KeyMismatchError(SealingError):
    """The key that came out of a sealed blob does not derive the pinned public key."""


class FramingError(EnclaveError):
    """A protocol frame is malformed, or the stream ended in the middle of one."""


class FrameTooLargeError(FramingError):
    """A frame announces (or a caller tries to send) more than ``MAX_FRAME_BYTES``."""


class TransportError(EnclaveError):
    """An address spec is invalid, or a listener/connection could not be set up."""
