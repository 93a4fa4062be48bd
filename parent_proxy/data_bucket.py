"""The deployment's data bucket (S3), as the parent writes to it: each object written once.

    sealed/<wallet id>/<agent public key, base58>      a sealed agent key, as the store holds it (`sealed_copies`)
    audit/<first seq>-<last seq>-<head hash>.jsonl     an audit export (`audit_exports`, `audit_export_cli`)

Every put carries ``If-None-Match: *``, so S3 refuses it (412) when the key exists: nothing here ever replaces an
object. The bucket's policy refuses a put into these prefixes without that header (cdk/state_stack.py), the bucket
keeps every version under object lock (governance mode, one year), and the hosts' role may put into these prefixes
and list and read the audit prefix (below), besides reading the releases (cdk/identity_stack.py): no delete, no read
of ``sealed/``. Each put also sends a SHA-256 checksum of its body, which S3 checks, and which a bucket with default
object-lock retention requires (an MD5 or a checksum) of every put.

An audit export that meets an object at its key (another host exporting the same records at the same moment) reads
it back (`DataBucket.put_new_or_same`): the same bytes count as written, other bytes are `ObjectMismatch`. That is
why the hosts' role may read `audit/`; a sealed-key copy is never read back.

A put that S3 answers 409 ``ConditionalRequestConflict`` (another conditional write to the key under way; botocore
does not retry it) is sent again, up to `CONFLICT_ATTEMPTS` times in all: once the other write has finished, S3
answers 412 or takes it.

Errors: `BucketUnavailable` for anything S3 or the network refuses, naming the operation and S3's error code, never
an object's body.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

BUCKET_SPEC = re.compile(r"([a-z0-9][a-z0-9.-]{1,61}[a-z0-9])(?:@((?![0-9]+$)[a-z0-9](?:[a-z0-9-]{0,30}[a-z0-9])?))?")
"""``<bucket>[@<region>]``: an S3 bucket name (3-63 characters: lowercase letters, digits, dots, hyphens), and the
region of its endpoint (boto3's default region without one): at most 32 lowercase letters, digits and hyphens, not
all digits, neither starting nor ending with a hyphen (botocore refuses any other when the client is made)."""
CONNECT_TIMEOUT_SECONDS = 3
READ_TIMEOUT_SECONDS = 10
MAX_ATTEMPTS = 3
"""botocore's standard retry mode, three attempts in all: a wallet creation waits at most about 40 s for S3."""
LIST_PAGE_KEYS = 1000
"""S3's largest page of ``ListObjectsV2``."""
CONFLICT_ATTEMPTS = 4
CONFLICT_RETRY_SECONDS = 0.5
"""A put S3 answers 409 is sent again after this many seconds, doubled each time: 0.5 + 1 + 2 s at most."""


class BucketUnavailable(Exception):
    """S3 refused a request or could not be reached. The message names the operation and the error code."""


class ObjectMismatch(Exception):
    """The key holds an object other than the one a put would have written (the message names the key and the
    sizes, never a body)."""


class S3Client(Protocol):
    """The three calls of boto3's S3 client used here (the production adapter is ``boto3.client("s3")``; the tests use
    moto's)."""

    def put_object(self, **kwargs: Any) -> Mapping[str, Any]: ...

    def list_objects_v2(self, **kwargs: Any) -> Mapping[str, Any]: ...

    def get_object(self, **kwargs: Any) -> Mapping[str, Any]: ...


@dataclass(frozen=True, slots=True)
class BucketName:
    name: str
    region: str | None


def parse_bucket(text: str) -> BucketName:
    """``<bucket>[@<region>]`` (`BUCKET_SPEC`), else `ValueError` (a message without the value)."""
    match = BUCKET_SPEC.fullmatch(text.strip())
    if match is None or ".." in match.group(1):
        raise ValueError("must be <bucket>[@<region>]: an S3 bucket name, optionally followed by @ and its region")
    return BucketName(match.group(1), match.group(2))


def s3_client(region: str | None) -> S3Client:
    """boto3's S3 client for ``region``, with short timeouts (`CONNECT_TIMEOUT_SECONDS`, `READ_TIMEOUT_SECONDS`) and
    `MAX_ATTEMPTS`: an unreachable bucket fails a request within seconds rather than holding it."""
    config = Config(
        connect_timeout=CONNECT_TIMEOUT_SECONDS,
        read_timeout=READ_TIMEOUT_SECONDS,
        retries={"max_attempts": MAX_ATTEMPTS, "mode": "standard"},
    )
    client: S3Client = boto3.client("s3", region_name=region, config=config)
    return client


def _failure(operation: str, exc: ClientError | BotoCoreError) -> BucketUnavailable:
    code = exc.response.get("Error", {}).get("Code") if isinstance(exc, ClientError) else None
    return BucketUnavailable(f"S3 {operation} failed ({code or type(exc).__name__})")


class DataBucket:
    """Write-once puts, the read-back of an object a put found there, and key listings in one bucket."""

    def __init__(self, client: S3Client, name: str) -> None:
        self._client = client
        self.name = name

    def __repr__(self) -> str:
        return f"DataBucket({self.name!r})"

    def put_new(self, key: str, body: bytes, *, content_type: str) -> bool:
        """Write ``body`` at ``key`` unless the key exists: True when written, False when S3 answers 412 (the key
        exists: written earlier, by a retried attempt of this very put whose first answer was lost, or by another
        host exporting the same records). A 409 (a conditional write to the key under way) is sent again, at most
        `CONFLICT_ATTEMPTS` times in all. `BucketUnavailable` for anything else."""
        attempt = 1
        while True:
            try:
                self._client.put_object(
                    Bucket=self.name, Key=key, Body=body, ContentType=content_type, IfNoneMatch="*",
                    ChecksumAlgorithm="SHA256",
                )  # fmt: skip
            except ClientError as exc:
                code = exc.response.get("Error", {}).get("Code")
                if code == "PreconditionFailed":
                    return False
                if code == "ConditionalRequestConflict" and attempt < CONFLICT_ATTEMPTS:
                    time.sleep(CONFLICT_RETRY_SECONDS * 2 ** (attempt - 1))
                    attempt += 1
                    continue
                raise _failure("PutObject", exc) from None
            except BotoCoreError as exc:
                raise _failure("PutObject", exc) from None
            return True

    def put_new_or_same(self, key: str, body: bytes, *, content_type: str) -> bool:
        """`put_new`, and when the key exists, the object there read back: False when it is ``body`` byte for byte
        (written by another host, or by an earlier attempt of this put), `ObjectMismatch` when it is anything else.
        True when this put wrote it. `BucketUnavailable` when S3 refuses the put or the read."""
        if self.put_new(key, body, content_type=content_type):
            return True
        there = self._read(key, len(body))
        if there != body:
            how = "of another size" if there is None else "of the same size, other bytes"
            raise ObjectMismatch(f"s3://{self.name}/{key} holds an object other than the one this put would write "
                                 f"({how})")  # fmt: skip
        return False

    def _read(self, key: str, size: int) -> bytes | None:
        """The object at ``key`` when it is ``size`` bytes long, None when it has another size (not read)."""
        try:
            response = self._client.get_object(Bucket=self.name, Key=key)
            stream = response["Body"]
            try:
                if int(response["ContentLength"]) != size:
                    return None
                data: bytes = stream.read(size + 1)
            finally:
                stream.close()
        except (ClientError, BotoCoreError) as exc:
            raise _failure("GetObject", exc) from None
        return data

    def keys(self, prefix: str) -> Iterator[str]:
        """Every key under ``prefix``, in S3's order (ascending), page by page."""
        token: str | None = None
        while True:
            request: dict[str, Any] = {"Bucket": self.name, "Prefix": prefix, "MaxKeys": LIST_PAGE_KEYS}
            if token is not None:
                request["ContinuationToken"] = token
            try:
                page = self._client.list_objects_v2(**request)
            except (ClientError, BotoCoreError) as exc:
                raise _failure("ListObjectsV2", exc) from None
            for entry in page.get("Contents", []):
                yield str(entry["Key"])
            token = page.get("NextContinuationToken")
            if not page.get("IsTruncated") or token is None:
                return
