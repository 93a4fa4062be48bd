"""``waiaas demo``: the whole story, through the HTTP API of the self-host services running as local processes.

It starts what ``docker compose up`` would start (:mod:`selfhost.deployment`: signer and proxy from
selfhost/docker-compose.yml, embedded SQLite, local sealing) plus a local LiteSVM JSON-RPC chain that the proxy
and this script share (it has no Squads program: the wallet is no multisig, the example policy declares none, and
the proxy runs without requiring one, as it prints first), then plays, as the owner (a fresh keypair file, mode
0600, in the run directory; every owner request signed with the proxy's owner-auth scheme) and as the agent (its
bearer token):

 1. the services are ready; the attestation endpoint answers and says why it proves nothing here
 2. the owner creates a wallet; the chain funds the agent key
 3. the owner signs the example policy (expiring in 30 days) and installs it
 4. the owner issues an agent token (only a redacted prefix is printed); the agent reads the wallet view
 5. the agent pays a merchant 0.5 SOL: signed, executed, balances move by exactly that
 6. the agent pays 3 SOL: escalated (202); the owner approves; executed
 7. the agent pays a denylisted address: denied (403), nothing moves
 8. the agent tries to hand the wallet's account to another program: denied and the wallet frozen; a normal
    payment is then refused too
 9. the owner unfreezes the wallet; a payment goes through again
10. the owner checks that the unfreeze reached the signer: ``waiaas owner verify-order`` on their own signed order,
    the proxy's answer and a fresh attestation answer (mode none: ``--accept-unattested``)
11. the services stop; the audit log's hash chain and its enclave receipts are verified
    (``waiaas audit verify --receipts``)

Each step checks its HTTP status, verdict and balance change, and the owner's checks their commands' exit codes
(`selfhost.demo_checks`); the first step that misbehaves ends the story.
Printed: public keys, statuses, reasons, balances; never the agent token (a redacted prefix), the owner's secret
key or the unseal secret. Ctrl-C, SIGTERM, SIGHUP and SIGQUIT stop the services cleanly (:mod:`selfhost.lifetime`;
a demo killed outright takes them with it, Linux). The run directory is created mode 0700, or must be an empty one
of this user's, mode 0700 or tighter (:func:`selfhost.deployment.prepare_root`: it is never chmodded).
Exit codes: 0 every step behaved, 1 a step misbehaved, 2 the services did not start or the run directory cannot be
used, 130 stopped by one of those signals.
"""

from __future__ import annotations

import argparse
import base64
import json
import re
import secrets
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from solders.compute_budget import set_compute_unit_limit, set_compute_unit_price
from solders.hash import Hash
from solders.instruction import Instruction
from solders.keypair import Keypair
from solders.message import Message
from solders.pubkey import Pubkey
from solders.system_program import AssignParams, TransferParams, assign, transfer
from solders.transaction import Transaction

from parent_proxy.owner_auth import signed_request_headers
from parent_proxy.owner_cli_common import envelope
from parent_proxy.owner_signers import LocalOwnerSigner, write_keypair_file
from parent_proxy.provisioning import ProvisionVerificationError, session_key_from_attestation, verify_provision_receipt
from parent_proxy.sign_parts import message_hash
from policies.canonical import parse_json_object
from policies.examples import example_policy_json
from policies.orders import APPROVAL_PURPOSE, UNFREEZE_PURPOSE, approval_document, freeze_document
from policies.signing import POLICY_PURPOSE
from selfhost.compose_model import ComposeError
from selfhost.demo_checks import StepFailed, verify_audit, verify_order_as_owner
from selfhost.deployment import (
    NO_SQUADS_WARNING,
    OWNER_KEYPAIR,
    VERIFY_ORDER_DIR,
    Deployment,
    StateDirError,
    prepare_root,
    run_local,
)
from selfhost.lifetime import stop_on_signals
from selfhost.local_stack import StackError, free_port
from selfhost.paths import PathMappingError

EXIT_OK: Final = 0
EXIT_MISBEHAVED: Final = 1
EXIT_NOT_STARTED: Final = 2
EXIT_STOPPED: Final = 130
"""As a shell reports a command ended by Ctrl-C (128 + SIGINT), whichever stop signal it was."""
LAMPORTS_PER_SOL: Final = 1_000_000_000
HTTP_TIMEOUT_SECONDS: Final = 30.0
FUNDING: Final = 20 * LAMPORTS_PER_SOL
MAX_FEE_LAMPORTS: Final = 500_000
"""The example policy's ``max_total_fee_lamports``: what one transaction's fee may cost at most."""
ORDER_LIFETIME_SECONDS: Final = 600
POLICY_LIFETIME_DAYS: Final = 30
"""The demo signs its policy with an expiry, as owners should (docs/policies.md, Expiry)."""
MERCHANT: Final = Pubkey.from_string("FHEqRxoKaHqjfmpq5sDHwcTRetKh7uJny2UVN4pcd24J")
"""On the example policy's destination allowlist."""
BLOCKED: Final = Pubkey.from_string("3R2khGdRVoeaEHJz3FaRq6GEJRta8VPBaxy9vo4jgoJv")
"""On the example policy's destination denylist."""


_TOKEN_PREFIX: Final = re.compile(r"(waiaas_[0-9a-f]{16})_")


def redact_token(token: str) -> str:
    """``waiaas_<token_id>_<secret>`` -> ``waiaas_<token_id>_****``: the lookup id only, never any of the secret
    (which may itself contain ``_``); anything not of that shape -> ``****``."""
    match = _TOKEN_PREFIX.match(token)
    return f"{match.group(1)}_****" if match else "****"


def sol(lamports: int) -> str:
    return f"{lamports / LAMPORTS_PER_SOL:.6f} SOL"


def _error(response: httpx.Response) -> str:
    try:
        error = response.json().get("error") or {}
    except ValueError:
        return f"HTTP {response.status_code}"
    return f"HTTP {response.status_code} {error.get('code')}: {error.get('message')}"


class ChainClient:
    """The few JSON-RPC calls the demo makes to the same chain the proxy uses."""

    def __init__(self, http: httpx.Client, url: str) -> None:
        self._http, self._url = http, url

    def call(self, method: str, params: list[Any]) -> Any:
        body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": params}
        answer = self._http.post(self._url, json=body).json()
        if "error" in answer:
            raise StepFailed(f"chain {method}: {answer['error'].get('message')}")
        return answer["result"]

    def balance(self, address: Pubkey) -> int:
        return int(self.call("getBalance", [str(address)])["value"])

    def blockhash(self) -> Hash:
        return Hash.from_string(self.call("getLatestBlockhash", [])["value"]["blockhash"])

    def airdrop(self, address: Pubkey, lamports: int) -> None:
        self.call("requestAirdrop", [str(address), lamports])


class Story:
    def __init__(self, deployment: Deployment, owner: LocalOwnerSigner, http: httpx.Client, out: Callable[[str], None]):
        self.d, self.owner, self.http, self.out = deployment, owner, http, out
        self.chain = ChainClient(http, deployment.chain_url)
        self.wallet_id = "demo-wallet"  # the example policy is bound to this wallet id
        self.agent = Pubkey.default()
        self.token = ""
        self.number = 0

    # ------------------------------------------------------------------------------------------------ helpers

    def step(self, title: str) -> None:
        self.number += 1
        self.out(f"\n== {self.number}. {title}")

    def expect(self, response: httpx.Response, status: int, code: str | None = None) -> dict[str, Any]:
        if response.status_code != status:
            raise StepFailed(f"expected HTTP {status}, got {_error(response)}")
        body: Any = response.json() if response.content else {}
        if code is not None and body.get("error", {}).get("code") != code:
            raise StepFailed(f"expected error code {code}, got {_error(response)}")
        return body if isinstance(body, dict) else {"items": body}

    def owner_call(self, method: str, path: str, body: Any = None) -> httpx.Response:
        content = b"" if body is None else json.dumps(body).encode()
        headers = signed_request_headers(
            self.d.api_url, method, path, content, owner=self.owner.public_key, sign=self.owner.sign
        )
        return self.http.request(method, self.d.api_url + path, content=content, headers=headers)

    def agent_sign(self, transaction: bytes) -> httpx.Response:
        body = {
            "transaction": base64.b64encode(transaction).decode(),
            "idempotency_key": secrets.token_hex(8),
            "submit": True,
        }
        path = f"{self.d.api_url}/v1/wallets/{self.wallet_id}/transactions/sign"
        return self.http.post(path, json=body, headers={"Authorization": f"Bearer {self.token}"})

    def transaction(self, *instructions: Instruction) -> bytes:
        budget = [set_compute_unit_price(1_000), set_compute_unit_limit(50_000)]
        message = Message.new_with_blockhash([*budget, *instructions], self.agent, self.chain.blockhash())
        return bytes(Transaction.new_unsigned(message))

    def pay(self, lamports: int, to: Pubkey = MERCHANT) -> bytes:
        return self.transaction(transfer(TransferParams(from_pubkey=self.agent, to_pubkey=to, lamports=lamports)))

    def balances(self) -> tuple[int, int]:
        return self.chain.balance(self.agent), self.chain.balance(MERCHANT)

    def check_moved(self, before: tuple[int, int], lamports: int) -> None:
        """The merchant got exactly ``lamports``; the agent paid that plus a fee within the policy's cap."""
        agent, merchant = self.balances()
        fee = before[0] - agent - lamports
        self.out(f"   balances   agent {sol(agent)}, merchant {sol(merchant)} (+{sol(merchant - before[1])})")
        if merchant - before[1] != lamports or not 0 < fee <= MAX_FEE_LAMPORTS:
            raise StepFailed(f"balances moved wrongly: merchant +{merchant - before[1]}, fee {fee}")

    def check_signed(self, body: dict[str, Any]) -> None:
        if body.get("status") != "signed" or body.get("decision", {}).get("verdict") not in ("allow", "escalate"):
            raise StepFailed(f"expected a signed transaction, got status {body.get('status')}")
        submission = body.get("submission") or {}
        if not submission.get("submitted"):
            raise StepFailed(f"signed but not executed: {submission.get('error')}")
        self.out(f"   signed     by the agent key in the signer; executed as {submission.get('signature')}")

    def reasons(self, body: dict[str, Any]) -> None:
        for reason in body.get("error", {}).get("reasons") or []:
            where = "" if reason.get("instruction") is None else f" (instruction {reason['instruction']})"
            self.out(f"   reason     {reason.get('rule')}{where}: {reason.get('message')}")

    # -------------------------------------------------------------------------------------------------- story

    def run(self) -> None:
        self.step("The services are ready; attestation")
        ready = self.expect(self.http.get(f"{self.d.api_url}/readyz"), 200)
        self.out(f"   readyz     {ready.get('status')} (enclave {ready.get('enclave')}, store {ready.get('store')})")
        nonce = secrets.token_hex(32)
        attestation = self.expect(self.http.get(f"{self.d.api_url}/v1/attestation", params={"nonce": nonce}), 200)
        self.out(f"   attestation mode {attestation.get('mode')}, session key {attestation.get('session_public_key')}")
        self.out(f"              {attestation.get('reason')}")
        if (
            attestation.get("mode") != "none"
            or attestation.get("document") is not None
            or not attestation.get("reason")
        ):
            raise StepFailed("a self-hosted signer must answer attestation mode none, with its reason and no document")

        self.step("The owner creates a wallet")
        self.out(f"   owner      {self.owner.public_key}")
        body = {"wallet_id": self.wallet_id, "owner_public_key": str(self.owner.public_key)}
        created = self.expect(self.owner_call("POST", "/v1/wallets", body), 201)
        self.agent = Pubkey.from_string(created["agent_public_key"])
        self.out(f"   wallet     {self.wallet_id}; agent key {self.agent} (made and sealed in the signer)")
        try:
            session = session_key_from_attestation(attestation, accept_unattested=True)
            verify_provision_receipt(
                created,
                wallet_id=self.wallet_id,
                owner_public_key=str(self.owner.public_key),
                session_public_key=session,
            )
        except ProvisionVerificationError as exc:
            raise StepFailed(f"the provisioning receipt did not verify: {exc}") from exc
        self.out("   provisioning receipt verified (session key from step 1's attestation answer, mode none)")
        self.chain.airdrop(self.agent, FUNDING)
        agent, merchant = self.balances()
        self.out(f"   funded     agent {sol(agent)}, merchant {sol(merchant)}")
        if agent != FUNDING:
            raise StepFailed("the airdrop did not arrive")

        self.step("The owner signs the example policy and installs it")
        document = parse_json_object(example_policy_json(), what="policy")
        document["expires_at"] = expires_at = int(time.time()) + POLICY_LIFETIME_DAYS * 86_400
        signed = envelope(self.owner, POLICY_PURPOSE, document)
        path = f"/v1/wallets/{self.wallet_id}"
        installed = self.expect(self.owner_call("PUT", f"{path}/policy", {"envelope": signed}), 200)
        self.out(f"   policy     sequence {installed.get('sequence')}, sha256 {installed.get('policy_sha256')}")
        self.out("              per payment: automatic up to 1 SOL, with the owner's approval up to 10 SOL")
        self.out(f"              expires in {POLICY_LIFETIME_DAYS} days (the owner re-signs before then)")
        if not installed.get("enclave_installed"):
            raise StepFailed("the signer did not install the policy")

        self.step("The owner issues an agent token")
        issued = self.expect(self.owner_call("POST", f"{path}/tokens"), 201)
        self.token = str(issued["token"])
        self.out(f"   token      {redact_token(self.token)} (shown once; only its hash is stored)")
        view = self.expect(self.http.get(self.d.api_url + path, headers={"Authorization": f"Bearer {self.token}"}), 200)
        if view.get("policy_sequence") != 1 or view.get("policy_expires_at") != expires_at:
            raise StepFailed("the wallet view does not show the installed policy and its expiry")
        self.out(f"   agent view policy {view['policy_sequence']}, expires_at {view['policy_expires_at']}, "
                 f"frozen {view['frozen']}")  # fmt: skip

        self.step("The agent pays a merchant 0.5 SOL")
        before = self.balances()
        answer = self.expect(self.agent_sign(self.pay(LAMPORTS_PER_SOL // 2)), 200)
        self.out(f"   verdict    {answer['decision']['verdict'].upper()}")
        self.check_signed(answer)
        self.check_moved(before, LAMPORTS_PER_SOL // 2)

        self.step("The agent pays 3 SOL: above the automatic limit, so the owner must approve")
        before = self.balances()
        large = self.pay(3 * LAMPORTS_PER_SOL)
        pending = self.expect(self.agent_sign(large), 202)
        approval_id = pending["approval_id"]
        self.out(f"   verdict    {pending['decision']['verdict'].upper()}: pending approval {approval_id}")
        listed = self.expect(self.owner_call("GET", f"{path}/approvals"), 200)["items"]
        if [item.get("approval_id") for item in listed] != [approval_id]:
            raise StepFailed("the owner does not see exactly this pending approval")
        if self.balances() != before:
            raise StepFailed("money moved before the owner approved")
        expires = int(time.time()) + ORDER_LIFETIME_SECONDS
        approval = envelope(
            self.owner, APPROVAL_PURPOSE, approval_document(self.wallet_id, message_hash(large), expires)
        )
        approved = self.expect(
            self.owner_call("POST", f"{path}/approvals/{approval_id}/approve", {"envelope": approval}), 200
        )
        self.out("   owner      approved (a signed approval of exactly this transaction's message)")
        self.check_signed(approved["transaction"])
        self.check_moved(before, 3 * LAMPORTS_PER_SOL)

        self.step("The agent pays a denylisted address")
        before = self.balances()
        denied = self.expect(self.agent_sign(self.pay(1_000, BLOCKED)), 403, "policy_denied")
        self.out("   verdict    DENY (403 policy_denied)")
        self.reasons(denied)
        if self.balances() != before:
            raise StepFailed("money moved on a denied request")

        self.step("Attack: the agent tries to hand the wallet's account to another program")
        attack = assign(AssignParams(pubkey=self.agent, owner=Keypair().pubkey()))
        frozen = self.expect(self.agent_sign(self.transaction(attack)), 403, "wallet_frozen")
        self.out("   verdict    FREEZE (403 wallet_frozen)")
        self.reasons(frozen)
        self.expect(self.agent_sign(self.pay(1_000)), 403, "wallet_frozen")
        self.out("   then       a normal 0.000001 SOL payment is refused too: 403 wallet_frozen")
        if self.balances() != before:
            raise StepFailed("money moved while frozen")

        self.step("The owner unfreezes the wallet")
        order = envelope(self.owner, UNFREEZE_PURPOSE, freeze_document(self.wallet_id, 1, int(time.time()) + 600))
        unfrozen = self.owner_call("POST", f"{path}/unfreeze", {"envelope": order})
        state = self.expect(unfrozen, 200)
        self.out(
            f"   wallet     frozen: {state.get('frozen')}; signer acknowledged: {state.get('enclave_acknowledged')}"
        )
        if state.get("frozen") is not False:
            raise StepFailed("the wallet is still frozen")
        before = self.balances()
        again = self.expect(self.agent_sign(self.pay(LAMPORTS_PER_SOL // 10)), 200)
        self.out("   agent      pays 0.1 SOL again:")
        self.check_signed(again)
        self.check_moved(before, LAMPORTS_PER_SOL // 10)

        self.step("The owner checks that the unfreeze reached the signer (waiaas owner verify-order)")
        fresh = self.http.get(f"{self.d.api_url}/v1/attestation", params={"nonce": secrets.token_hex(32)})
        self.expect(fresh, 200)
        verify_order_as_owner(self.d.root / VERIFY_ORDER_DIR, owner_public_key=self.owner.public_key,
                              order_body={"envelope": order}, answer=unfrozen.content, attestation=fresh.content,
                              out=self.out)  # fmt: skip


def new_owner(run_dir: Path) -> LocalOwnerSigner:
    path = run_dir / OWNER_KEYPAIR
    write_keypair_file(path, Ed25519PrivateKey.generate())
    return LocalOwnerSigner.from_file(path)


def run_demo(run_dir: Path, port: int, out: Callable[[str], None] = print) -> int:
    try:
        run_dir = prepare_root(run_dir, "run directory")
        owner = new_owner(run_dir)
    except (StateDirError, OSError) as exc:
        why = exc if isinstance(exc, StateDirError) else f"cannot use run directory {run_dir}: {exc.strerror or exc}"
        print(f"demo: {why}", file=sys.stderr)
        return EXIT_NOT_STARTED
    with stop_on_signals():
        return _play(run_dir, owner, port, out)


def _play(run_dir: Path, owner: LocalOwnerSigner, port: int, out: Callable[[str], None]) -> int:
    out(f"WAIaaS demo: starting chain, signer and proxy as local processes (run directory {run_dir})")
    story: Story | None = None
    try:
        with run_local(run_dir, owner_keys=[str(owner.public_key)], port=port) as deployment:
            out(f"   API        {deployment.api_url}    chain {deployment.chain_url}    logs {run_dir / 'logs'}")
            if not deployment.multisig_required:
                out(f"   warning    {NO_SQUADS_WARNING}")
            with httpx.Client(timeout=HTTP_TIMEOUT_SECONDS) as http:
                story = Story(deployment, owner, http, out)
                story.run()
            database = deployment.database
        out(
            f"\n== {story.number + 1}. The services are stopped; "
            "the audit log's hash chain and its enclave receipts are verified"
        )
        verify_audit(database, out)
    except (StackError, ComposeError, PathMappingError) as exc:
        out(f"\nthe services did not start: {exc}")
        return EXIT_NOT_STARTED
    except (StepFailed, httpx.HTTPError) as exc:
        out(f"   UNEXPECTED: {exc if isinstance(exc, StepFailed) else type(exc).__name__}")
        out(f"\nthe demo stopped at a step that misbehaved; logs in {run_dir / 'logs'}")
        return EXIT_MISBEHAVED
    except KeyboardInterrupt:
        out(f"\nstopped (Ctrl-C or a stop signal); the services are stopped; logs in {run_dir / 'logs'}")
        return EXIT_STOPPED
    out("\nevery step behaved as expected")
    return EXIT_OK


def register(subparsers: Any) -> None:
    demo = subparsers.add_parser("demo", help="the whole story through the HTTP API of locally started services")
    demo.add_argument("--run-dir", type=Path, help="where state, secrets and logs go (default: a new temp dir)")
    demo.add_argument("--port", type=int, default=0, help="loopback port for the API (default: a free one)")
    demo.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    if args.run_dir is not None and args.run_dir.exists() and any(args.run_dir.iterdir()):
        print(f"demo: {args.run_dir} is not empty; every run starts from a fresh directory", file=sys.stderr)
        return EXIT_NOT_STARTED
    try:
        port = args.port or free_port()
    except StackError as exc:
        print(f"demo: {exc}: choose a port with --port", file=sys.stderr)
        return EXIT_NOT_STARTED
    return run_demo(args.run_dir or Path(tempfile.mkdtemp(prefix="waiaas-demo-")), port)
