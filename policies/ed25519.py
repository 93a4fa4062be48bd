"""Ed25519 signature verification for every check in the product (owner, agent and enclave session signatures).

One rule everywhere: the strict verification Solana itself uses (solders, whose ``Signature.verify`` is
ed25519-dalek's ``verify_strict``). Besides what RFC 8032 requires (a canonical ``S`` below the group order, a
decodable point), it refuses a public key or an ``R`` of small order. OpenSSL's verification, used before,
accepts them: under the identity point as public key, the all-zero ``S`` with the identity as ``R`` verifies for
any message, so whoever chose such a key as a wallet's owner or an enclave session key could "sign" anything. It
is also the faster of the two on this machine (about 38 us against OpenSSL's 66 us per verification).

Signing stays with ``cryptography`` (OpenSSL): there it is the faster one, and keys stay in its objects.
"""

from __future__ import annotations

from solders.pubkey import Pubkey
from solders.signature import Signature

PUBLIC_KEY_BYTES = 32
SIGNATURE_BYTES = 64


def verify_ed25519(public_key: bytes, signature: bytes, message: bytes) -> bool:
    """Whether ``signature`` is a valid strict Ed25519 signature by ``public_key`` (32 raw bytes) over ``message``.
    Wrong sizes and keys that are not curve points are simply invalid (False): for any ``bytes`` nothing raises."""
    if len(public_key) != PUBLIC_KEY_BYTES or len(signature) != SIGNATURE_BYTES:
        return False
    return bool(Signature.from_bytes(signature).verify(Pubkey.from_bytes(public_key), message))
