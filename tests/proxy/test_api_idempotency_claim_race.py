"""Two sign requests with one idempotency key, the second landing between the first's read of the key (free) and
its claim (`parent_proxy.sign_flow`, step 1: the key is read, then claimed with the first write of the path taken).

The hook sits at the store seam: the first request's claim (`Store.begin_signing` on the ALLOW path,
`Store.begin_idempotent` on the others) first lets the rival request run to its end, through the whole API. The
first request then loses its claim, and answers the rival's stored answer as a replay on every path, with nothing
of its own written or relayed: the two never both sign, refuse or escalate. A rival still in progress makes the
first 409 and is left holding its key. Before these tests (the twenty-fourth session's mutation testing of the
flows) a flow ignoring a lost claim on any path passed every test.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from solders.pubkey import Pubkey

from parent_proxy.errors import IdempotencyInProgress
from parent_proxy.sign_parts import SignRequest, agent_key
from policies.signing import POLICY_PURPOSE, sign_document
from tests.proxy.api_harness import (
    LAMPORTS_PER_SOL,
    Harness,
    pending_approval_ids,
    provisioned_harness,
    running_harness,
    spy_calls,
)
from tests.proxy.harness_calls import ESCALATING, order, records, send
from tests.support.policies import BLOCKED, MERCHANT

DAY = 86_400
AUTOMATIC = 5 * LAMPORTS_PER_SOL  # the example policy's daily SOL automatic threshold


@pytest.fixture
def h(tmp_path: Path) -> Iterator[Harness]:
    """A provisioned harness with two store threads: the rival request runs while the first is held in its claim."""
    with provisioned_harness(tmp_path, store_threads=2) as (harness, _loop, _servers):
        yield harness


def rival_before_claim(h: Harness, claim: str, rival: Callable[[], Any]) -> list[Any]:
    """The next call of the store's ``claim`` method runs ``rival()`` first, then itself; the list gets what
    ``rival()`` returned. Later calls (the rival's own among them) go straight to the store."""
    landed: list[Any] = []
    real = getattr(h.store.inner, claim)

    def claim_after_rival(*args: Any, **kwargs: Any) -> Any:
        delattr(h.store, claim)
        landed.append(rival())
        return real(*args, **kwargs)

    setattr(h.store, claim, claim_after_rival)
    return landed


def events(h: Harness) -> list[str]:
    return [r.event_type for r in records(h)]


def assert_replays(first: Any, rival: Any) -> None:
    assert first.status_code == rival.status_code and first.json() == rival.json(), (first.text, rival.text)
    assert first.headers.get("Idempotent-Replayed") == "true"
    assert rival.headers.get("Idempotent-Replayed") is None


def test_two_requests_with_one_key_never_both_sign(h: Harness) -> None:
    tx = h.transfer(1000, MERCHANT)
    relayed = spy_calls(h.services.relay, "sign_transaction")
    landed = rival_before_claim(h, "begin_signing", lambda: h.sign(tx, key="k"))
    requests, before = h.store.count_requests(h.wallet_id, 0.0), events(h)

    first = h.sign(tx, key="k")

    (rival,) = landed
    assert rival.status_code == 200 and rival.json()["status"] == "signed", rival.text
    assert_replays(first, rival)
    assert len(relayed) == 1  # the rival's signing only
    assert events(h) == [*before, "transaction.signed"]
    assert h.store.count_requests(h.wallet_id, 0.0) == requests + 1
    assert h.spent() == 1000


def test_a_denial_is_made_once(h: Harness) -> None:
    tx = h.transfer(1000, BLOCKED)
    landed = rival_before_claim(h, "begin_idempotent", lambda: h.sign(tx, key="k"))
    before = events(h)

    first = h.sign(tx, key="k")

    (rival,) = landed
    assert rival.status_code == 403 and rival.json()["error"]["code"] == "policy_denied", rival.text
    assert_replays(first, rival)
    assert events(h) == [*before, "transaction.denied"]
    assert h.store.count_denials(h.wallet_id, 0.0) == 1


def test_an_escalation_is_made_once(h: Harness) -> None:
    tx = h.transfer(ESCALATING, MERCHANT)
    landed = rival_before_claim(h, "begin_idempotent", lambda: h.sign(tx, key="k"))
    before = events(h)

    first = h.sign(tx, key="k")

    (rival,) = landed
    assert rival.status_code == 202, rival.text
    assert_replays(first, rival)
    assert pending_approval_ids(h) == [rival.json()["approval_id"]]
    assert events(h) == [*before, "transaction.escalated"]


def assert_refused_once(h: Harness, tx: bytes, code: str) -> None:
    """A refusal (403 ``code``, ``transaction.refused``) the rival made while the first request was between its read
    of the key and its claim: the first replays it, and only one refusal is recorded."""
    landed = rival_before_claim(h, "begin_idempotent", lambda: h.sign(tx, key="k"))
    before = events(h)

    first = h.sign(tx, key="k")

    (rival,) = landed
    assert rival.status_code == 403 and rival.json()["error"]["code"] == code, rival.text
    assert_replays(first, rival)
    assert events(h) == [*before, "transaction.refused"]


def test_a_frozen_wallets_refusal_is_made_once(h: Harness) -> None:
    send(h, order(h, 1))
    tx = h.transfer(1000, MERCHANT)
    assert_refused_once(h, tx, "wallet_frozen")


def test_a_refusal_under_a_policy_that_no_longer_verifies_is_made_once(h: Harness) -> None:
    document = json.loads(h.store.get_wallet(h.wallet_id).policy_document)["document"]
    forged = json.dumps(sign_document(POLICY_PURPOSE, document, Ed25519PrivateKey.generate())).encode()
    h.store.inner._conn().execute("UPDATE wallets SET policy_document = ? WHERE wallet_id = ?", (forged, h.wallet_id))
    tx = h.transfer(1000, MERCHANT)
    assert_refused_once(h, tx, "no_policy")


@pytest.fixture
def without_policy(tmp_path: Path) -> Iterator[Harness]:
    """As `h`, with a wallet and a token and no policy."""
    for harness in running_harness(tmp_path, store_threads=2):
        body = {"wallet_id": harness.wallet_id, "owner_public_key": str(harness.owner_pub)}
        created = harness.owner_call("POST", "/v1/wallets", body)
        assert created.status_code == 201, created.text
        harness.agent = Pubkey.from_string(created.json()["agent_public_key"])
        harness.token = harness.owner_call("POST", f"/v1/wallets/{harness.wallet_id}/tokens").json()["token"]
        yield harness


def test_a_refusal_without_a_policy_is_made_once(without_policy: Harness) -> None:
    h = without_policy
    tx = h.transfer(1000, MERCHANT)
    assert_refused_once(h, tx, "no_policy")


def test_a_request_whose_threshold_was_taken_replays_the_rival_that_claimed_meanwhile(h: Harness) -> None:
    """The first request's reservation is refused (a concurrent request took the threshold), then the rival
    claims the key before the first claims it to store its refusal: the first answers the rival's answer."""
    tx = h.transfer(1000, MERCHANT)

    def concurrent_request_takes_the_threshold() -> None:
        h.store.before.pop("begin_signing")
        amounts = {"SOL": AUTOMATIC - 1000 + 1}
        h.store.inner.reserve(h.wallet_id, "concurrent", amounts, {("SOL", DAY): AUTOMATIC}, time.time())

    h.store.before["begin_signing"] = concurrent_request_takes_the_threshold
    landed = rival_before_claim(h, "begin_idempotent", lambda: h.sign(tx, key="k"))
    requests, before = h.store.count_requests(h.wallet_id, 0.0), events(h)

    first = h.sign(tx, key="k")

    (rival,) = landed
    assert rival.status_code == 202, rival.text  # over the threshold now: the rival escalates
    assert_replays(first, rival)
    assert events(h) == [*before, "transaction.escalated"]
    assert h.store.count_requests(h.wallet_id, 0.0) == requests + 1  # the rival's, not the first's


@pytest.mark.parametrize(
    ("claim", "to"), [("begin_signing", MERCHANT), ("begin_idempotent", BLOCKED)], ids=["allow", "deny"]
)
def test_a_rival_still_in_progress_makes_the_first_409_and_keeps_its_key(h: Harness, claim: str, to: Pubkey) -> None:
    tx = h.transfer(1000, to)
    key, digest = agent_key("k"), SignRequest(tx, "k", (), False).digest()  # what the flow claims the key with
    rival_before_claim(h, claim, lambda: h.store.inner.begin_idempotent(h.wallet_id, key, digest, time.time()))
    relayed = spy_calls(h.services.relay, "sign_transaction")
    requests = h.store.count_requests(h.wallet_id, 0.0)

    first = h.sign(tx, key="k")

    assert first.status_code == 409 and first.json()["error"]["code"] == "idempotency_in_progress", first.text
    with pytest.raises(IdempotencyInProgress):  # still the rival's: the first did not give it up
        h.store.lookup_idempotent(h.wallet_id, key, digest, time.time())
    assert relayed == [] and h.store.count_requests(h.wallet_id, 0.0) == requests
    assert h.store.count_denials(h.wallet_id, 0.0) == 0 and h.spent() == 0
