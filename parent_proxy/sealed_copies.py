"""Copies of the sealed agent keys, each written once before the store keeps the key: in the data bucket
(``WAIAAS_DATA_BUCKET``, the cloud) or in a directory (``WAIAAS_SEALED_KEYS_DIR``, self-hosted); none when neither is
set.

The store keeps each wallet's sealed agent key (and a rotation candidate's) with its record, and the store is the
parent's: in the cloud a DynamoDB table the hosts can write, so a taken-over host, or a mistake, could overwrite or
drop a blob, and a wallet whose agent key is a member of its 2-of-2 multisig cannot move anything without it;
self-hosted a SQLite file that a restore from an older backup replaces whole. So the proxy also puts each new blob
into its copy target (`CopyTarget`), at

    sealed/<wallet id>/<agent public key, base58>      in the data bucket (`parent_proxy.data_bucket`:
                                                       ``If-None-Match: *``), kept under object lock, never read by
                                                       the parent; docs/deploy.md says how to put one back
    <directory>/<wallet id>/<agent public key, base58> in the sealed-keys directory (`parent_proxy.sealed_directory`:
                                                       a hard link that never replaces a file); docs/selfhost.md
                                                       says how to put one back

A sealed blob is ciphertext that only the signer can open (in the cloud KMS with the pinned image's attestation,
bound to the wallet, the agent key and the owner key; self-hosted the unseal secret): the copy reveals nothing, and
nothing here logs it.

Fail-safe order: the copy is written before the store write, and a copy that cannot be written refuses the request
(503 ``store_unavailable``) with nothing stored; so does a directory copy whose name holds another blob
(`sealed_directory.CopyMismatch`). A wallet creation then drops the enclave's new key, as when the
store write fails (`parent_proxy.api_owner.create_wallet`), and the owner sends the creation again; a candidate
(the enclave keeps nothing of it) is simply not kept, and the owner asks again. So no wallet or candidate is ever
stored whose key has no copy. What a refused copy leaves behind: at worst a copy of a key no wallet holds (its store
write failed after it), harmless ciphertext.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Protocol

from solders.pubkey import Pubkey

from parent_proxy.api_errors import ApiError, Code
from parent_proxy.data_bucket import BucketUnavailable, DataBucket
from parent_proxy.sealed_directory import DirectoryUnavailable, SealedDirectory

if TYPE_CHECKING:
    from parent_proxy.services import Services

logger = logging.getLogger(__name__)

SEALED_PREFIX = "sealed/"
"""Data-bucket prefix of the copies (the same as `cdk.naming.SEALED_PREFIX`, which the hosts' role is granted)."""
CONTENT_TYPE = "application/octet-stream"
REFUSED_MESSAGE = "the sealed agent key's copy could not be stored; nothing was created"


class CopyTarget(Protocol):
    """Where the copies go: `DataBucket` or `SealedDirectory`. ``put_new`` writes ``body`` at ``key`` unless the key
    exists (True when written, False when it existed), raising `BucketUnavailable` or `DirectoryUnavailable`."""

    def put_new(self, key: str, body: bytes, *, content_type: str) -> bool: ...


def copy_name(wallet_id: str, agent_public_key: bytes) -> str:
    """``<wallet id>/<agent public key, base58>``: one copy per agent key, so a rotation's candidate has its own, and
    no copy ever takes another's name."""
    return f"{wallet_id}/{Pubkey.from_bytes(agent_public_key)}"


class SealedCopies:
    """Puts sealed blobs into a copy target (blocking: run off the event loop, `keep_sealed_copy`)."""

    def __init__(self, target: CopyTarget, *, prefix: str, where: str) -> None:
        self._target = target
        self._prefix = prefix
        self.where = where
        """Names the target in the log: ``the data bucket``, ``the sealed-keys directory``."""

    @classmethod
    def in_bucket(cls, bucket: DataBucket) -> SealedCopies:
        return cls(bucket, prefix=SEALED_PREFIX, where="the data bucket")

    @classmethod
    def in_directory(cls, directory: SealedDirectory) -> SealedCopies:
        return cls(directory, prefix="", where="the sealed-keys directory")

    def __repr__(self) -> str:
        return f"SealedCopies({self._target!r})"

    def put(self, wallet_id: str, agent_public_key: bytes, sealed_blob: bytes) -> None:
        """Write the copy; `BucketUnavailable` or `DirectoryUnavailable` if the target refuses it. A key that exists
        already counts as written: the agent key in its name is fresh from the enclave, so the copy is this blob,
        put by an earlier attempt of this request whose answer was lost (the directory reads it back and refuses
        other bytes, `sealed_directory.CopyMismatch`; the hosts may not read the bucket's ``sealed/``)."""
        name = self._prefix + copy_name(wallet_id, agent_public_key)
        self._target.put_new(name, sealed_blob, content_type=CONTENT_TYPE)


async def keep_sealed_copy(services: Services, wallet_id: str, agent_public_key: bytes, sealed_blob: bytes) -> None:
    """Copy a new sealed blob into the copy target before the store keeps it (nothing when none is configured);
    503 ``store_unavailable`` when the copy cannot be written. Runs in a thread of its own, not the store's worker
    thread: a slow bucket or disk does not hold up other requests' store work."""
    copies = services.sealed_copies
    if copies is None:
        return
    try:
        await asyncio.to_thread(copies.put, wallet_id, agent_public_key, sealed_blob)
    except (BucketUnavailable, DirectoryUnavailable) as exc:
        logger.warning("the sealed key of wallet %s could not be copied to %s: %s", wallet_id, copies.where, exc)
        services.metrics.count("waiaas_sealed_copy_failures_total")
        raise ApiError(Code.STORE_UNAVAILABLE, REFUSED_MESSAGE) from exc
