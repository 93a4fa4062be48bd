"""Copies of the sealed agent keys in the data bucket (``WAIAAS_DATA_BUCKET``; none when it is unset, as self-hosted).

The store keeps each wallet's sealed agent key (and a rotation candidate's) with its record, and the store is the
parent's: in the cloud a DynamoDB table the hosts can write, so a taken-over host, or a mistake, could overwrite or
drop a blob, and a wallet whose agent key is a member of its 2-of-2 multisig cannot move anything without it. So the
proxy also puts each new blob into the data bucket, at

    sealed/<wallet id>/<agent public key, base58>

written once (`parent_proxy.data_bucket`: ``If-None-Match: *``), kept under object lock, never read by the parent.
docs/deploy.md says how to put one back. A sealed blob is ciphertext that only the attested enclave can open (KMS
with the pinned image's attestation, bound to the wallet, the agent key and the owner key): the copy reveals nothing,
and nothing here logs it.

Fail-safe order: the copy is written before the store write, and a copy that cannot be written refuses the request
(503 ``store_unavailable``) with nothing stored. A wallet creation then drops the enclave's new key, as when the
store write fails (`parent_proxy.api_owner.create_wallet`), and the owner sends the creation again; a candidate
(the enclave keeps nothing of it) is simply not kept, and the owner asks again. So no wallet or candidate is ever
stored whose key has no copy. What a refused copy leaves behind: at worst an object in the bucket for a key no wallet
holds (its store write failed after it), harmless ciphertext.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from solders.pubkey import Pubkey

from parent_proxy.api_errors import ApiError, Code
from parent_proxy.data_bucket import BucketUnavailable, DataBucket

if TYPE_CHECKING:
    from parent_proxy.services import Services

logger = logging.getLogger(__name__)

SEALED_PREFIX = "sealed/"
"""Data-bucket prefix of the copies (the same as `cdk.naming.SEALED_PREFIX`, which the hosts' role is granted)."""
CONTENT_TYPE = "application/octet-stream"
REFUSED_MESSAGE = "the sealed agent key's copy could not be stored; nothing was created"


def sealed_key_name(wallet_id: str, agent_public_key: bytes) -> str:
    """The object key of a wallet's sealed agent key: one object per agent key, so a rotation's candidate has its
    own, and no copy ever takes another's key."""
    return f"{SEALED_PREFIX}{wallet_id}/{Pubkey.from_bytes(agent_public_key)}"


class SealedCopies:
    """Puts sealed blobs into the data bucket (blocking: run off the event loop, `keep_sealed_copy`)."""

    def __init__(self, bucket: DataBucket) -> None:
        self._bucket = bucket

    def __repr__(self) -> str:
        return f"SealedCopies({self._bucket!r})"

    def put(self, wallet_id: str, agent_public_key: bytes, sealed_blob: bytes) -> None:
        """Write the copy; `BucketUnavailable` if S3 refuses it. A key that exists already (S3's 412) counts as
        written: the agent key in its name is fresh from the enclave, so the object is this blob, put by an earlier
        attempt of this request whose answer was lost."""
        self._bucket.put_new(sealed_key_name(wallet_id, agent_public_key), sealed_blob, content_type=CONTENT_TYPE)


async def keep_sealed_copy(services: Services, wallet_id: str, agent_public_key: bytes, sealed_blob: bytes) -> None:
    """Copy a new sealed blob into the data bucket before the store keeps it (nothing when no bucket is configured);
    503 ``store_unavailable`` when the copy cannot be written. Runs in a thread of its own, not the store's worker
    thread: a slow bucket does not hold up other requests' store work."""
    copies = services.sealed_copies
    if copies is None:
        return
    try:
        await asyncio.to_thread(copies.put, wallet_id, agent_public_key, sealed_blob)
    except BucketUnavailable as exc:
        logger.warning("the sealed key of wallet %s could not be copied to the data bucket: %s", wallet_id, exc)
        services.metrics.count("waiaas_sealed_copy_failures_total")
        raise ApiError(Code.STORE_UNAVAILABLE, REFUSED_MESSAGE) from exc
