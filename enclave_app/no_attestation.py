"""Attestation mode ``none``: the NSM seam for a self-hosted signer that runs without a Nitro Enclave.

There is no hardware to attest to, so this adapter does not pretend: it has no attestation documents and no PCRs
(both raise :class:`~enclave_app.errors.NsmError`), and the server answers an ``attestation`` request with mode
``none`` and :data:`NO_ATTESTATION_REASON` instead of a document (see :mod:`enclave_app.protocol`).

Randomness comes from :func:`os.urandom`, which on Linux is ``getrandom(2)`` on the kernel CSPRNG (it blocks
only until the pool is first seeded at boot). Agent and session keys mix it with a second ``os.urandom`` read
(:func:`enclave_app.state.fresh_seed`), the same code path as with the NSM.

Mode ``none`` cannot be combined with the KMS sealer (KMS releases sealed keys only to an attested enclave);
:func:`enclave_app.settings.load_settings` refuses that at start-up.
"""

from __future__ import annotations

import os

from enclave_app.errors import NsmError
from enclave_app.nsm import PcrDescription

NO_ATTESTATION_REASON = (
    "self-hosted signer: no Nitro Enclave, so there is no hardware attestation; "
    "trust rests on the host and the local unseal secret"
)
"""The fixed answer to every ``attestation`` request in mode ``none``."""

RANDOM_BYTES = 256
"""Bytes returned by one ``get_random`` (as many as the real NSM returns at most)."""


class NoAttestationNsm:
    """An :class:`~enclave_app.nsm.Nsm` with randomness and nothing else. Thread-safe (``os.urandom`` is)."""

    def attestation(self, *, public_key: bytes | None, user_data: bytes | None, nonce: bytes | None) -> bytes:
        raise NsmError("no attestation in mode none")

    def get_random(self) -> bytes:
        return os.urandom(RANDOM_BYTES)

    def describe_pcr(self, index: int) -> PcrDescription:
        raise NsmError("no PCRs in mode none")
