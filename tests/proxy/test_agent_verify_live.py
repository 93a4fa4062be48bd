"""The agent's check of its sign answer against the real proxy and enclave (development NSM, mode nitro, anchored on its
root and PCR 0): a sign answer names the session key that signed it, ``GET /v1/attestation?session_public_key=``
reaches that enclave through a load balancer over two hosts, the wallet view and ``GET /v1/wallets/{id}/policy``
give the agent the policy its receipts state, and ``waiaas agent verify-receipt --url`` checks an answer end to end.

Before: the answer named no key, any host answered ``GET /v1/attestation`` (with two hosts, half the time one whose
key did not sign: repro r4), the view showed only the stored envelope's hash, which no receipt states (r1 (c)), and
the documented steps let the answer of another request pass (r1 (d))."""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from solders.pubkey import Pubkey
from solders.signature import Signature

from enclave_app.dev_nsm import UnsafeDevelopmentNsm
from enclave_app.receipts import verify_receipt
from parent_proxy.auth import attestation_limiter
from policies.signing import POLICY_PURPOSE, document_sha256, open_envelope
from tests.proxy.agent_answers import PCR0, agent_main
from tests.proxy.api_harness import Harness, provision, running_harness, start_enclave, stop_enclave
from tests.proxy.fleet_harness import two_hosts
from tests.proxy.hooked_client import Borrowed
from tests.support.offchain_messages import offchain_message
from tests.support.policies import MERCHANT

URL = "https://waiaas.example"


@pytest.fixture
def nsm(tmp_path: Path) -> UnsafeDevelopmentNsm:
    nsm = UnsafeDevelopmentNsm(pcrs={0: PCR0})
    (tmp_path / "root.pem").write_bytes(nsm.root_certificate_pem)
    return nsm


@pytest.fixture
def h(tmp_path: Path, nsm: UnsafeDevelopmentNsm) -> Iterator[Harness]:
    (tmp_path / "host").mkdir()  # the root certificate stays beside it, in tmp_path
    for harness in running_harness(tmp_path / "host", nsm=nsm):
        provision(harness, harness.policy(1, offchain_messages={"allowed": True}))
        yield harness


class LoadBalancer:
    """The load balancer in front of the hosts, at the HTTP seam: each `httpx.Client` the command makes (one per try:
    a new connection) is lent the next host's test client in turn. ``asked`` names the hosts in order.
    ``strip_session_key``: hosts that ignore the ``session_public_key`` parameter (a proxy older than it)."""

    def __init__(self, hosts: dict[str, Harness], *, strip_session_key: bool = False) -> None:
        self.hosts, self.strip = list(hosts.items()), strip_session_key
        self.asked: list[str] = []

    def client(self, **_: Any) -> Any:
        name, host = self.hosts[len(self.asked) % len(self.hosts)]
        self.asked.append(name)
        strip = self.strip

        class Lent(Borrowed):
            def stream(self, *args: Any, **kwargs: Any) -> Any:
                if strip:
                    kwargs["params"] = {k: v for k, v in kwargs["params"].items() if k != "session_public_key"}
                return super().stream(*args, **kwargs)

        return Lent(host.client)


def agent_get(h: Harness, path: str) -> Any:
    return h.client.get(path, headers={"Authorization": f"Bearer {h.token}"})


def verify_url(
    capsys: pytest.CaptureFixture[str], h: Harness, answer: dict[str, Any], transaction: bytes, *extra: str
) -> tuple[int, str, str]:
    """``waiaas agent verify-receipt --url`` with the policy envelope of ``GET /v1/wallets/{id}/policy`` and the owner
    key, anchored on the development NSM's root (the harness's folder) and PCR 0."""
    folder = h.socket.parent
    (folder / "answer.json").write_text(json.dumps(answer))
    (folder / "policy.json").write_bytes(agent_get(h, f"/v1/wallets/{h.wallet_id}/policy").content)
    code = agent_main([
        "agent", "verify-receipt", "--answer", str(folder / "answer.json"),
        "--transaction", base64.b64encode(transaction).decode(), "--wallet-id", h.wallet_id,
        "--agent-public-key", str(h.agent), "--policy", str(folder / "policy.json"),
        "--owner-public-key", str(h.owner_pub), "--url", URL,
        "--root-pem", str(folder.parent / "root.pem"), "--pcr", f"0={PCR0.hex()}", *extra,
    ])  # fmt: skip
    out, err = capsys.readouterr()
    return code, out, err


def test_sign_answers_name_the_session_key_that_signed(h: Harness) -> None:
    transaction = h.transfer(1000, MERCHANT)
    signed = h.sign(transaction, key="k1")
    assert signed.status_code == 200, signed.text
    receipt = signed.json()["receipt"]
    attested = h.client.get(f"/v1/attestation?nonce={secrets.token_hex(32)}").json()["session_public_key"]
    assert receipt["session_public_key"] == attested
    verify_receipt(base64.b64decode(receipt["receipt"]), bytes(Signature.from_string(receipt["signature"])),
                   bytes(Pubkey.from_string(attested)))  # fmt: skip
    replayed = h.sign(transaction, key="k1")  # the stored answer names the key, whichever host replays it
    assert replayed.headers["Idempotent-Replayed"] == "true" and replayed.json()["receipt"] == receipt
    message = offchain_message(h.agent, "hello")
    answer = h.client.post(f"/v1/wallets/{h.wallet_id}/messages/sign",
                           json={"message": base64.b64encode(message).decode()},
                           headers={"Authorization": f"Bearer {h.token}"})  # fmt: skip
    assert answer.status_code == 200, answer.text
    assert answer.json()["receipt"]["session_public_key"] == attested


def test_the_wallet_view_and_the_policy_route_give_the_hash_receipts_state(h: Harness) -> None:
    signed = h.sign(h.transfer(1000, MERCHANT)).json()
    stated = verify_receipt(base64.b64decode(signed["receipt"]["receipt"]),
                            bytes(Signature.from_string(signed["receipt"]["signature"])),
                            bytes(Pubkey.from_string(signed["receipt"]["session_public_key"])))  # fmt: skip
    view = agent_get(h, f"/v1/wallets/{h.wallet_id}").json()
    assert stated.policy_hash is not None and view["policy_document_sha256"] == stated.policy_hash.hex()
    assert view["policy_sha256"] != view["policy_document_sha256"]  # the envelope's hash, kept as it was
    envelope = agent_get(h, f"/v1/wallets/{h.wallet_id}/policy")
    assert envelope.status_code == 200 and envelope.headers["Cache-Control"] == "no-store"
    document = open_envelope(envelope.content, POLICY_PURPOSE, h.owner_pub)  # the owner's signature verifies
    assert document_sha256(document).hex() == view["policy_document_sha256"]
    # A wallet without a policy: nothing to state, nothing to show.
    created = h.owner_call("POST", "/v1/wallets", {"wallet_id": "w2", "owner_public_key": str(h.owner_pub)})
    assert created.status_code == 201, created.text
    token = h.owner_call("POST", "/v1/wallets/w2/tokens").json()["token"]
    bare = h.client.get("/v1/wallets/w2", headers={"Authorization": f"Bearer {token}"}).json()
    assert bare["policy_document_sha256"] is None and bare["policy_sha256"] is None
    none = h.client.get("/v1/wallets/w2/policy", headers={"Authorization": f"Bearer {token}"})
    assert none.status_code == 404 and none.json()["error"]["code"] == "not_found"
    assert h.client.get(f"/v1/wallets/{h.wallet_id}/policy").status_code == 401  # an agent route: a token first


def test_the_command_verifies_a_real_answer_and_refuses_another_requests(
    h: Harness, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    balancer = LoadBalancer({"host": h})
    monkeypatch.setattr("httpx.Client", balancer.client)
    request_a, request_b = h.transfer(1000, MERCHANT), h.transfer(2000, MERCHANT)
    answer_a, answer_b = h.sign(request_a).json(), h.sign(request_b).json()
    code, out, err = verify_url(capsys, h, answer_b, request_b)
    assert code == 0 and out.startswith("verified: the enclave of module") and answer_b["signature"] in out, err
    # A hostile proxy answers request B with A's (signed, attested) answer: the agent's own message hash refuses it.
    code, out, err = verify_url(capsys, h, answer_a, request_b)
    assert code == 1 and out == "" and "receipt is about another message" in err


def test_the_attestation_of_the_signing_host_through_the_load_balancer(
    tmp_path: Path, nsm: UnsafeDevelopmentNsm, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    with two_hosts(tmp_path, nsm) as (a, b, loop, servers):
        transaction = b.transfer(1000, MERCHANT)
        answer = b.sign(transaction).json()  # the load balancer sent the signing request to B
        key = answer["receipt"]["session_public_key"]
        nonce = secrets.token_hex(32)
        path = f"/v1/attestation?nonce={nonce}&session_public_key={key}"
        elsewhere = a.client.get(path)
        assert elsewhere.status_code == 404 and elsewhere.json()["error"]["code"] == "session_key_not_here"
        here = b.client.get(path)
        assert here.status_code == 200 and here.json()["session_public_key"] == key
        assert b.client.get(f"/v1/attestation?nonce={nonce}&session_public_key=0OIl").status_code == 422
        # The command asks through the load balancer (A first) until B answers, and verifies.
        balancer = LoadBalancer({"A": a, "B": b})
        monkeypatch.setattr("httpx.Client", balancer.client)
        code, out, err = verify_url(capsys, b, answer, transaction)
        assert code == 0 and f"session key {key}" in out, err
        assert balancer.asked == ["A", "B"]
        # Hosts that ignore the parameter (older proxies): an answer naming another key counts as another host's.
        balancer = LoadBalancer({"A": a, "B": b}, strip_session_key=True)
        monkeypatch.setattr("httpx.Client", balancer.client)
        code, out, err = verify_url(capsys, b, answer, transaction)
        assert code == 0 and balancer.asked == ["A", "B"], err
        # B's enclave restarts: no host has the key any more; the command says so after its tries.
        stop_enclave(b, loop, servers[1])
        servers[1] = start_enclave(loop, b.socket, nsm=nsm, clock=b.clock)
        monkeypatch.setattr("httpx.Client", LoadBalancer({"A": a, "B": b}).client)
        code, out, err = verify_url(capsys, b, answer, transaction, "--tries", "4")
        assert code == 1 and f"no host answered with session key {key} in 4 tries" in err


def test_another_hosts_answer_draws_nothing_on_the_attestation_limit(tmp_path: Path, nsm: UnsafeDevelopmentNsm) -> None:
    """A host whose enclave has another key answers 404 before the limit is drawn on and without asking the NSM."""
    with two_hosts(tmp_path, nsm) as (a, b, _, _):
        key = b.sign(b.transfer(1000, MERCHANT)).json()["receipt"]["session_public_key"]
        a.services.attestation_limiter = attestation_limiter(0.001, 1)  # one attestation, then none for ~17 minutes
        nonce = secrets.token_hex(32)
        for _ in range(3):
            assert a.client.get(f"/v1/attestation?nonce={nonce}&session_public_key={key}").status_code == 404
        assert a.client.get(f"/v1/attestation?nonce={nonce}").status_code == 200  # the one token was still there
        limited = a.client.get(f"/v1/attestation?nonce={nonce}")
        assert limited.status_code == 429 and limited.json()["error"]["code"] == "rate_limited"
