"""The trust anchor an owner pins an enclave's attestation to, and the session-key document checked against it.

One set of rules for every check that takes an enclave session key from the parent: ``waiaas audit verify
--receipts`` (`parent_proxy.audit_cli`, `parent_proxy.audit_receipts`: the keys of the log's ``enclave.session``
records) and ``waiaas owner verify-wallet`` / ``verify-candidate`` (`parent_proxy.owner_verify_cli`,
`parent_proxy.provisioning`: the key of a ``GET /v1/attestation`` answer).

1. An anchor is a pinned root certificate and expected PCRs, given together (a root alone attests any code that runs
   on Nitro), and the PCRs include PCR 0, the enclave image: PCR 3 (the parent instance's IAM role) and PCR 4 (the
   instance) are the same for any image a taken-over parent starts on that host, and PCR 8 says who signed the
   image, not which image it is. `Anchor` refuses one without PCR 0, whoever builds it (`AnchorError`).
2. An anchor implies that every session key is attested: a key in mode ``none`` (no document) fails an anchored
   check, even where unattested keys are otherwise accepted; the command lines refuse an anchor together with an
   option that accepts unattested keys. Otherwise a parent that answers mode ``none`` with a key of its own (and
   receipts it signs itself) passes a check the owner believes anchored.
3. A session document (:func:`verified_session`, :func:`verify_session_document`) verifies against the anchor
   (`enclave_app.attestation.verify_attestation_document`: the chain to the pinned root, the PCRs, the nonce when
   one is expected, no debug mode unless the anchor allows it), says that it carries the session key
   (``user_data == SESSION_USER_DATA``, as `enclave_app.server` asks the NSM for it: a document the enclave made for
   another purpose is not a session key's) and carries a 32-byte public key, the session key. The caller still
   compares that key with the one its answer or record names.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from cryptography import x509

from enclave_app.attestation import verify_attestation_document
from enclave_app.errors import AttestationError
from enclave_app.protocol import SESSION_USER_DATA

IMAGE_PCR = 0
"""PCR 0: the measurement of the enclave image file. An anchor must pin it."""
SESSION_KEY_BYTES = 32


class AnchorError(Exception):
    """The anchor given cannot be used (bad input: the command exits 2, nothing is verified)."""


class SessionDocumentError(Exception):
    """A session record's or answer's attestation document does not attest a session key under the anchor."""


@dataclass(frozen=True, slots=True)
class Anchor:
    """What a session key's attestation document must verify against: the pinned root and the expected PCRs (PCR 0
    among them: rule 1 of the module docstring)."""

    root_certificate_pem: bytes
    expected_pcrs: Mapping[int, bytes]
    allow_debug: bool = False

    def __post_init__(self) -> None:
        if IMAGE_PCR not in self.expected_pcrs:
            raise AnchorError("--pcr needs PCR 0 (the enclave image): without it the anchor attests any code")


def pcrs_from_options(specs: Sequence[str]) -> dict[int, bytes]:
    """``--pcr INDEX=HEX`` options (repeatable) as a map; `AnchorError` for one that is not of that form."""
    pcrs: dict[int, bytes] = {}
    for spec in specs:
        index, sep, value = spec.partition("=")
        try:
            if not sep or not value:
                raise ValueError(spec)
            pcrs[int(index)] = bytes.fromhex(value)
        except ValueError as exc:
            raise AnchorError(f"--pcr {spec!r}: expected INDEX=HEX") from exc
    return pcrs


def anchor_from_options(root_pem: Path | None, pcr_specs: Sequence[str], *, allow_debug: bool = False) -> Anchor | None:
    """The anchor ``--root-pem`` and ``--pcr`` name, or None when neither is given; `AnchorError` for one alone, an
    unreadable root, malformed PCRs or PCRs without PCR 0."""
    if root_pem is None and not pcr_specs:
        return None
    if root_pem is None or not pcr_specs:
        raise AnchorError("--root-pem and --pcr go together (a root without PCRs attests any code)")
    try:
        pem = root_pem.read_bytes()
    except OSError as exc:
        raise AnchorError(f"--root-pem: cannot read {root_pem}") from exc
    try:
        x509.load_pem_x509_certificate(pem)
    except ValueError:
        raise AnchorError("--root-pem: not a PEM certificate") from None
    return Anchor(pem, pcrs_from_options(pcr_specs), allow_debug=allow_debug)


@dataclass(frozen=True, slots=True)
class AttestedSession:
    """An enclave session key as an owner check took it: ``module_id`` is the name the NSM gives the enclave that
    made the document (on Nitro, the parent instance's id and the enclave's: two enclaves on one instance have two),
    read from the verified document; None when no document attested the key (mode ``none``)."""

    public_key: bytes
    module_id: str | None


def verified_session(document: bytes, anchor: Anchor, *, at: datetime, expected_nonce: bytes | None) -> AttestedSession:
    """Rule 3 of the module docstring: the session key ``document`` attests under ``anchor`` at ``at``, with the
    document's ``module_id``, or `SessionDocumentError`. The caller compares the key with the one its answer or
    record names."""
    try:
        verified = verify_attestation_document(
            document, root_certificate_pem=anchor.root_certificate_pem, at=at, expected_pcrs=anchor.expected_pcrs,
            expected_nonce=expected_nonce, allow_debug=anchor.allow_debug,
        )  # fmt: skip
    except AttestationError as exc:
        raise SessionDocumentError(f"attestation document refused: {exc}") from exc
    if verified.user_data != SESSION_USER_DATA:
        raise SessionDocumentError("attestation document does not say it carries the session key (user_data)")
    if verified.public_key is None or len(verified.public_key) != SESSION_KEY_BYTES:
        raise SessionDocumentError("attestation document carries no 32-byte session key")
    return AttestedSession(verified.public_key, verified.module_id)


def verify_session_document(document: bytes, anchor: Anchor, *, at: datetime, expected_nonce: bytes | None) -> bytes:
    """The session public key of `verified_session`."""
    return verified_session(document, anchor, at=at, expected_nonce=expected_nonce).public_key
