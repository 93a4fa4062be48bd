"""Sealed agent keys copied to the data bucket (`parent_proxy.sealed_copies`) by the real proxy, enclave and store,
with moto's S3 as the bucket (object lock on, as the state stack makes it).

Before: nothing wrote to the bucket (the host role's grants and docs/deploy.md said it held sealed blobs), so the
only copy of a wallet's sealed key was the store's, which the parent can overwrite."""

from __future__ import annotations

import base64
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from solders.pubkey import Pubkey

from parent_proxy.data_bucket import DataBucket, s3_client
from parent_proxy.errors import NotFound
from parent_proxy.sealed_copies import SealedCopies
from tests.proxy.api_harness import Harness, provision, running_harness
from tests.proxy.locked_bucket import BUCKET, REGION, body, keys, locked_bucket
from tests.proxy.rotation_requests import agent_key_path, multisig_wallet

MISSING_BUCKET = "waiaas-data-nowhere"


def copies_in(bucket: str) -> SealedCopies:
    return SealedCopies.in_bucket(DataBucket(s3_client(REGION), bucket))


@pytest.fixture
def s3(aws_env: None) -> Iterator[Any]:
    with locked_bucket() as client:
        yield client


@pytest.fixture
def h(tmp_path: Path, s3: Any) -> Iterator[Harness]:
    for harness in running_harness(tmp_path):
        harness.services.sealed_copies = copies_in(BUCKET)
        yield harness


def _assert_503(answer: Any) -> None:
    assert answer.status_code == 503, answer.text
    assert answer.json()["error"] == {
        "code": "store_unavailable", "message": "the sealed agent key's copy could not be stored; nothing was created"
    }  # fmt: skip


def test_a_new_wallets_sealed_key_is_copied_to_the_bucket(h: Harness, s3: Any) -> None:
    provision(h)
    stored = h.store.get_wallet(h.wallet_id)
    assert keys(s3, "sealed/") == [f"sealed/{h.wallet_id}/{h.agent}"]
    assert body(s3, f"sealed/{h.wallet_id}/{h.agent}") == stored.sealed_key


def test_a_wallet_whose_copy_cannot_be_written_is_not_created(
    h: Harness, s3: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Fail-safe: no wallet is stored whose sealed key has no copy; the enclave drops the key it made (as when the
    store write fails), so the owner's same creation works once the bucket does."""
    body_ = {"wallet_id": "w-new", "owner_public_key": str(h.owner_pub)}
    assert h.client.get("/readyz").status_code == 200
    before = h.audit_events()
    h.services.sealed_copies = copies_in(MISSING_BUCKET)
    with caplog.at_level(logging.WARNING):
        _assert_503(h.owner_call("POST", "/v1/wallets", body_))
    with pytest.raises(NotFound, match="wallet w-new not found"):
        h.store.get_wallet("w-new")
    assert h.audit_events() == before and keys(s3, "sealed/") == []
    assert "the sealed key of wallet w-new could not be copied to the data bucket: S3 PutObject failed" in caplog.text
    h.services.sealed_copies = copies_in(BUCKET)
    again = h.owner_call("POST", "/v1/wallets", body_)
    assert again.status_code == 201, again.text  # the enclave dropped the first key: the id is free
    agent = again.json()["agent_public_key"]
    assert keys(s3, "sealed/") == [f"sealed/w-new/{agent}"]
    assert body(s3, f"sealed/w-new/{agent}") == h.store.get_wallet("w-new").sealed_key


def test_a_rotation_candidates_sealed_key_is_copied_before_it_is_kept(h: Harness, s3: Any) -> None:
    multisig_wallet(h)
    h.services.sealed_copies = copies_in(MISSING_BUCKET)
    _assert_503(h.owner_call("POST", agent_key_path(h, "/candidate")))
    assert h.store.get_agent_key_candidate(h.wallet_id) is None
    assert "agent_key.candidate" not in h.audit_events()
    h.services.sealed_copies = copies_in(BUCKET)
    made = h.owner_call("POST", agent_key_path(h, "/candidate"))
    assert made.status_code == 201, made.text
    candidate = h.store.get_agent_key_candidate(h.wallet_id)
    assert candidate is not None
    new = Pubkey.from_bytes(candidate.candidate_pubkey)
    assert str(new) == made.json()["candidate_public_key"]
    assert sorted(keys(s3, "sealed/")) == sorted([f"sealed/{h.wallet_id}/{h.agent}", f"sealed/{h.wallet_id}/{new}"])
    assert body(s3, f"sealed/{h.wallet_id}/{new}") == candidate.sealed_key


def test_no_sealed_blob_reaches_the_log(h: Harness, s3: Any, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG):
        provision(h)
        h.services.sealed_copies = copies_in(MISSING_BUCKET)
        _assert_503(h.owner_call("POST", "/v1/wallets", {"wallet_id": "w2", "owner_public_key": str(h.owner_pub)}))
    blob = h.store.get_wallet(h.wallet_id).sealed_key
    for form in (blob, base64.b64encode(blob), blob.hex().encode()):
        assert form.decode("latin-1") not in caplog.text
