"""`parent_proxy.trust_anchor.verified_session` takes a session key only from a document that carries one of 32 bytes.

An attestation document that verifies under the anchor and says (``user_data``) that it carries the session key must
carry an Ed25519 public key: 32 bytes. A document with no key, or one of another size, is refused with
`SessionDocumentError` (what the auditor and the owner's checks report), never handed on for a caller to compare.
Found by mutation testing: no test gave such a document, so the size check could be removed unnoticed. The
documents are real COSE_Sign1 documents of the test PKI (`tests.support.nitro_test_pki`).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from enclave_app.protocol import SESSION_USER_DATA
from parent_proxy.trust_anchor import Anchor, AttestedSession, SessionDocumentError, verified_session
from tests.support.nitro_test_pki import NitroTestPki

NOW = datetime.now(UTC)
PCRS = {0: b"\xb0" * 48, 8: b"\xb8" * 48}


@pytest.fixture(scope="module")
def pki() -> NitroTestPki:
    return NitroTestPki.create(not_before=NOW - timedelta(hours=1), not_after=NOW + timedelta(hours=1))


def _session(pki: NitroTestPki, public_key: bytes | None) -> AttestedSession:
    fields = pki.fields(timestamp=NOW, pcrs=dict(PCRS), public_key=public_key, user_data=SESSION_USER_DATA)
    return verified_session(pki.sign(fields), Anchor(pki.root_pem, dict(PCRS)), at=NOW, expected_nonce=None)


def test_a_document_carrying_a_32_byte_key_gives_it(pki: NitroTestPki) -> None:
    key = bytes(range(32))
    assert _session(pki, key).public_key == key


@pytest.mark.parametrize(
    "public_key", [None, bytes(range(31)), bytes(range(33)), bytes(64)], ids=["none", "31", "33", "64"]
)
def test_a_document_without_a_32_byte_key_is_refused(pki: NitroTestPki, public_key: bytes | None) -> None:
    with pytest.raises(SessionDocumentError, match=r"^attestation document carries no 32-byte session key$"):
        _session(pki, public_key)
