"""RFC 8032 section 7.1 TEST 2: an Ed25519 public key, message and signature (a known-answer vector)."""

from __future__ import annotations

# RFC 8032 section 7.1, TEST 2: the implementation under the owner-signature check is plain Ed25519.
RFC8032_PUBLIC = bytes.fromhex("3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c")
RFC8032_MESSAGE = bytes.fromhex("72")
RFC8032_SIGNATURE = bytes.fromhex(
    "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da"
    "085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00"
)
