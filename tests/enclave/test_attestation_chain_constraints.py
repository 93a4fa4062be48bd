"""`verify_attestation_document` refuses a chain whose certificates are not used as their extensions allow
(RFC 5280: a CA has critical basicConstraints CA=true and keyCertSign; the signing certificate has digitalSignature
and, for ES384, a P-384 key), even when every signature in the chain verifies from the pinned root.

Found by mutation testing: none of these refusals had a test, so each could be removed unnoticed. The chains are
real ones (the test PKI's root issuing directly, `tests.support.nitro_test_pki.make_certificate`), and the document
is signed by the leaf's key, so only the constraint refuses it.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TypedDict

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from enclave_app.attestation import verify_attestation_document
from enclave_app.errors import AttestationError
from tests.support.nitro_test_pki import NitroTestPki, SignatureHash, Validity, make_certificate

AT = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
ROOT_NAME = "test.nitro-enclaves"
"""The test PKI's root (`NitroTestPki.create`'s default name)."""
WINDOW: Validity = {"not_before": AT - timedelta(hours=1), "not_after": AT + timedelta(hours=1)}


class ChainFlags(TypedDict, total=False):
    """The flags of `_pki` a parametrized test changes."""

    ca_is_ca: bool
    key_cert_sign: bool
    digital_signature: bool


def _pki(
    *,
    ca_is_ca: bool = True,
    key_cert_sign: bool = True,
    digital_signature: bool = True,
    curve: ec.EllipticCurve,
    ca_signature_hash: SignatureHash | None = None,
    leaf_critical_extra: x509.ExtensionType | None = None,
) -> NitroTestPki:
    """Root -> one CA -> leaf, the CA and leaf as the arguments say."""
    base = NitroTestPki.create(**WINDOW)
    ca_key, leaf_key = ec.generate_private_key(ec.SECP384R1()), ec.generate_private_key(curve)
    ca = make_certificate(
        subject="ca.test", public_key=ca_key.public_key(), issuer=ROOT_NAME, issuer_key=base.root_key, ca=ca_is_ca,
        path_length=None, key_cert_sign=key_cert_sign, signature_hash=ca_signature_hash, **WINDOW,
    )  # fmt: skip
    leaf = make_certificate(
        subject="enclave.test", public_key=leaf_key.public_key(), issuer="ca.test", issuer_key=ca_key, ca=False,
        path_length=None, digital_signature=digital_signature, critical_extra=leaf_critical_extra, **WINDOW,
    )  # fmt: skip
    return NitroTestPki(base.root_key, base.root, [ca], leaf_key, leaf)


def _verify(pki: NitroTestPki) -> object:
    return verify_attestation_document(pki.sign(pki.fields(timestamp=AT)), root_certificate_pem=pki.root_pem, at=AT)


def test_the_well_formed_chain_verifies() -> None:
    """The control: root -> CA -> leaf, made the same way as the refused ones."""
    _verify(_pki(curve=ec.SECP384R1()))


def test_a_p256_leaf_verifies_nothing() -> None:
    pki = _pki(curve=ec.SECP256R1())
    with pytest.raises(AttestationError, match=r"^leaf key is not P-384$"):
        _verify(pki)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"ca_is_ca": False}, "CA certificate lacks critical basicConstraints CA=true"),
        ({"key_cert_sign": False}, "CA certificate lacks keyCertSign"),
        ({"digital_signature": False}, "signing certificate lacks digitalSignature"),
    ],
    ids=["ca-not-a-ca", "ca-without-keyCertSign", "leaf-without-digitalSignature"],
)
def test_a_certificate_used_beyond_its_extensions_is_refused(changes: ChainFlags, message: str) -> None:
    with pytest.raises(AttestationError, match=f"^{message}$"):
        _verify(_pki(curve=ec.SECP384R1(), **changes))


def test_a_ca_signed_with_sha256_is_refused() -> None:
    """ECDSA with SHA-256 verifies (the root signed it), but every certificate of a Nitro chain is ECDSA/SHA-384."""
    pki = _pki(curve=ec.SECP384R1(), ca_signature_hash=hashes.SHA256())
    assert pki.intermediates[0].signature_hash_algorithm is not None
    assert pki.intermediates[0].signature_hash_algorithm.name == "sha256"
    with pytest.raises(AttestationError, match=r"^certificate signature algorithm not allowed$"):
        _verify(pki)


def test_a_leaf_with_a_critical_extension_the_verifier_does_not_know_is_refused() -> None:
    """RFC 5280 4.2: a certificate with a critical extension the verifier does not process must be rejected."""
    usage = x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH])
    pki = _pki(curve=ec.SECP384R1(), leaf_critical_extra=usage)
    assert pki.leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).critical
    with pytest.raises(AttestationError, match=r"^certificate has an unknown critical extension$"):
        _verify(pki)


def test_the_helper_builds_what_it_says() -> None:
    """The refused chains differ from the control only where the test says."""
    pki = _pki(curve=ec.SECP384R1(), key_cert_sign=False)
    usage = pki.intermediates[0].extensions.get_extension_for_class(x509.KeyUsage).value
    assert (
        not usage.key_cert_sign
        and pki.intermediates[0].extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    )
