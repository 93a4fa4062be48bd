"""``waiaas agent ...``: the agent's tools. No key is needed (public keys and the agent's own files only).

    waiaas agent verify-receipt --answer F|- --transaction B64 --wallet-id W --agent-public-key K
                                (--policy F --owner-public-key K | --policy-sha256 HEX) [--min-policy-sequence N]
                                (--url URL [--tries N] | --attestation F [--nonce HEX])
                                (--root-pem F --pcr 0=HEX [--pcr I=HEX ...] | --accept-unattested)

``--answer`` is the proxy's 200 answer to ``POST /v1/wallets/{id}/transactions/sign`` (a file, or ``-`` for stdin);
``--transaction`` the base64 transaction the agent sent in that request (its own copy, never the answer's); the
wallet id and agent public key are the agent's. The policy expected: ``--policy`` the signed envelope (``GET
/v1/wallets/{id}/policy``, or the owner's file; ``{"envelope": ...}`` too), whose signature must verify under
``--owner-public-key`` (the owner key the agent was given, not one read from the proxy) and which gives the document
hash and the sequence; or ``--policy-sha256`` the document hash alone (``policy_document_sha256`` of ``GET
/v1/wallets/{id}``, which is the parent's word unless the agent has it from the owner). An envelope from ``GET
/v1/wallets/{id}/policy`` is the parent's word about which policy is current too: its owner signature holds for an
older policy the parent put back after an enclave restart. ``--min-policy-sequence N``, the lowest sequence the
agent's owner told it is in force, refuses a receipt under an older one whatever the parent serves.

The attestation: ``--url`` fetches ``GET /v1/attestation?nonce=<32 fresh random bytes>&session_public_key=K`` (K the
key the answer's receipt names), a new connection each try so that the load balancer picks a host again, up to
``--tries`` times until the host whose enclave has K answers (`fetch_attestation`; another host answers 404
``session_key_not_here``). Or ``--attestation`` a ``GET /v1/attestation`` answer saved earlier, with ``--nonce`` its
nonce (checked when given). Either is verified by the anchor rules of the owner checks
(`parent_proxy.owner_verify_cli.attestation_anchor`, `parent_proxy.trust_anchor`): mode nitro against ``--root-pem``
and ``--pcr`` (PCR 0 among them), mode none only with ``--accept-unattested`` (proves nothing about the code).

Then the steps of `parent_proxy.agent_receipts`. Exit 0: verified (one line on stdout naming the session key, the
enclave's ``module_id`` in mode nitro, the transaction signature, the policy hash and the receipt counter); 1: not
verified, do not rely on the answer (one line on stderr saying why), or the proxy could not be reached; 2: bad input.
These are the exit codes of ``waiaas owner verify-*``. Everything printed from the parent's answers has its control
characters escaped (`policies.terminal_text`).
"""

from __future__ import annotations

import argparse
import base64
import binascii
import secrets
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import httpx
from solders.pubkey import Pubkey
from solders.signature import Signature
from solders.transaction import VersionedTransaction

from parent_proxy.agent_receipts import (
    AgentExpectation,
    ExpectedPolicy,
    ReceiptCheckError,
    named_session_key,
    verify_sign_answer,
)
from parent_proxy.bounded_http import ExchangeFailed, bounded_request
from parent_proxy.owner_cli_common import (
    EXIT_BAD_INPUT,
    EXIT_OK,
    EXIT_REFUSED,
    OwnerInputError,
    json_object_file,
    json_object_read,
    public_key_option,
    wallet_id_option,
)
from parent_proxy.owner_verify_cli import anchor_options, attestation_anchor, checked_session
from parent_proxy.owner_verify_order_cli import owner_order
from parent_proxy.provisioning import ProvisionVerificationError
from parent_proxy.trust_anchor import AttestedSession
from policies.terminal_text import safe_line

COMMAND: Final = "verify-receipt"
MAX_ANSWER_BYTES = 64 * 1024
"""Largest answer read (a signed answer is under 8 KiB; an attestation answer under 16 KiB)."""
NONCE_BYTES = 32
DEFAULT_TRIES = 16
"""With N hosts picked at random, the chance of missing the one asked for in 16 tries is (1 - 1/N)^16: 0.3 % for 3."""
MAX_TRIES = 100
HTTP_TIMEOUT_SECONDS = 30.0
"""One whole exchange with the proxy (`parent_proxy.bounded_http`): connect, send, and read the whole answer."""
SESSION_KEY_NOT_HERE = "session_key_not_here"


class AttestationUnavailable(Exception):
    """No attestation of the enclave that signed could be fetched: the message says why (exit 1)."""


def register(subparsers: Any) -> None:
    """Add ``waiaas agent`` (entry point ``waiaas.commands``: `policies.cli`)."""
    agent = subparsers.add_parser("agent", help="agent tools: verify a signing answer's enclave receipt")
    commands = agent.add_subparsers(dest="agent_command", required=True, metavar="ACTION")
    verify = commands.add_parser(COMMAND, help="verify that the attested enclave signed your transaction")
    verify.add_argument("--answer", required=True, help="the sign answer (JSON file, or - for stdin)")
    verify.add_argument("--transaction", required=True, help="the base64 transaction you sent (your own copy)")
    verify.add_argument("--wallet-id", required=True, help="your wallet id")
    verify.add_argument("--agent-public-key", required=True, help="your wallet's agent public key (base58)")
    policy = verify.add_mutually_exclusive_group(required=True)
    policy.add_argument("--policy", type=Path, help="the owner-signed policy envelope you expect in force (JSON)")
    policy.add_argument("--policy-sha256", help="the policy document hash you expect in force (hex)")
    verify.add_argument("--owner-public-key", help="with --policy: the owner key that signed it (base58)")
    verify.add_argument(
        "--min-policy-sequence", type=int, help="the lowest policy sequence your owner told you is in force"
    )
    source = verify.add_mutually_exclusive_group(required=True)
    source.add_argument("--url", help="the proxy's base URL: fetch the signing enclave's attestation (fresh nonce)")
    source.add_argument("--attestation", type=Path, help="a GET /v1/attestation answer (JSON file)")
    verify.add_argument(
        "--tries", type=int, default=DEFAULT_TRIES, help=f"with --url: requests at most (1-{MAX_TRIES})"
    )
    anchor_options(verify)
    agent.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """``waiaas agent``'s one command, with its exit codes (module docstring)."""
    try:
        return verify_receipt(args)
    except (OwnerInputError, OSError) as exc:
        sys.stderr.write(safe_line(f"agent {args.agent_command}: {exc}"))
        return EXIT_BAD_INPUT


def verify_receipt(args: argparse.Namespace) -> int:
    """``verify-receipt``: bad input raises `OwnerInputError`; everything else is 0 or 1."""
    expected = _expectation(args)
    answer = _answer(args.answer)
    if args.url is not None and args.nonce is not None:
        raise OwnerInputError("--nonce goes with --attestation (with --url the command makes its own)")
    anchor, nonce = attestation_anchor(args)
    try:
        if args.url is None:
            attestation = json_object_file(args.attestation, "--attestation", limit=MAX_ANSWER_BYTES)
        else:
            key = named_session_key(answer)
            if key is None:
                raise OwnerInputError(
                    "the answer names no receipt session_public_key (a proxy older than the field): give "
                    "--attestation, fetched from the host that answered"
                )
            nonce = secrets.token_bytes(NONCE_BYTES)
            attestation = fetch_attestation(_url(args.url), key, nonce, tries=_tries(args.tries))
        session = checked_session(attestation, anchor, nonce, accept_unattested=args.accept_unattested)
        stated = verify_sign_answer(answer, expected, session.public_key)
    except (AttestationUnavailable, ProvisionVerificationError, ReceiptCheckError) as exc:
        sys.stderr.write(
            safe_line(f"agent verify-receipt: NOT VERIFIED: {exc}. Do not rely on this answer being the enclave's.")
        )
        return EXIT_REFUSED
    _print_verified(answer, session, stated.time_ms, stated.counter, expected)
    return EXIT_OK


def _print_verified(
    answer: dict[str, Any], session: AttestedSession, time_ms: int, counter: int, expected: AgentExpectation
) -> None:
    when = datetime.fromtimestamp(time_ms / 1000, UTC).isoformat(timespec="seconds")
    module = "" if session.module_id is None else f" of module {session.module_id}"
    signature = Signature.from_string(answer["signature"])  # parsed by the check: re-encoded, never echoed
    sys.stdout.write(
        safe_line(
            f"verified: the enclave{module} (session key {Pubkey.from_bytes(session.public_key)}) signed your "
            f"transaction {signature} for wallet {expected.wallet_id} under policy "
            f"{expected.policy.document_sha256.hex()} at {when} (receipt counter {counter})"
        )
    )


def _expectation(args: argparse.Namespace) -> AgentExpectation:
    """What the agent knows, from its own options (`OwnerInputError` for one that is not what it should be)."""
    wallet_id = wallet_id_option(args.wallet_id, "--wallet-id")
    agent = public_key_option(args.agent_public_key, "--agent-public-key")
    try:
        transaction = base64.b64decode(args.transaction, validate=True)
        VersionedTransaction.from_bytes(transaction)
    except (ValueError, binascii.Error) as exc:
        raise OwnerInputError("--transaction is not a base64 Solana transaction") from exc
    return AgentExpectation(wallet_id, bytes(agent), transaction, _expected_policy(args))


def _expected_policy(args: argparse.Namespace) -> ExpectedPolicy:
    expected = _policy_option(args)
    least = args.min_policy_sequence
    if least is None:
        return expected
    if least < 1:
        raise OwnerInputError("--min-policy-sequence must be at least 1")
    return ExpectedPolicy(expected.document_sha256, expected.sequence, least)


def _policy_option(args: argparse.Namespace) -> ExpectedPolicy:
    if args.policy is None:
        if args.owner_public_key is not None:
            raise OwnerInputError("--owner-public-key goes with --policy (it checks the envelope's signature)")
        try:
            digest = bytes.fromhex(args.policy_sha256)
        except ValueError:
            digest = b""
        if len(digest) != 32:
            raise OwnerInputError("--policy-sha256 is not 64 hex digits")
        return ExpectedPolicy(digest, None)
    if args.owner_public_key is None:
        raise OwnerInputError("--policy needs --owner-public-key (the owner key you were given, that signed it)")
    owner = public_key_option(args.owner_public_key, "--owner-public-key")
    signed = owner_order(args.policy, policy=True, owner=owner, what="--policy")
    if signed.wallet_id != args.wallet_id:
        raise OwnerInputError(f"--policy is wallet {signed.wallet_id!r}'s, not {args.wallet_id!r}")
    return ExpectedPolicy(signed.document_hash, signed.sequence)


def _answer(option: str) -> dict[str, Any]:
    if option == "-":
        return json_object_read(sys.stdin.buffer, "--answer (stdin)", limit=MAX_ANSWER_BYTES)
    return json_object_file(Path(option), "--answer", limit=MAX_ANSWER_BYTES)


def _url(text: str) -> str:
    if not text.startswith(("https://", "http://")):
        raise OwnerInputError("--url must be an http(s) URL, the proxy's base URL")
    return text.rstrip("/")


def _tries(tries: int) -> int:
    if not 1 <= tries <= MAX_TRIES:
        raise OwnerInputError(f"--tries must be 1-{MAX_TRIES}")
    return tries


def fetch_attestation(url: str, session_key: str, nonce: bytes, *, tries: int) -> dict[str, Any]:
    """The ``GET /v1/attestation`` answer, over ``nonce``, of the host whose enclave has ``session_key`` (base58),
    asked at most ``tries`` times through the load balancer at ``url``, each on a new connection. An answer naming
    another key (a proxy that ignores the parameter) counts as another host's. `AttestationUnavailable` when no
    answer comes, the proxy refuses otherwise (429 over its attestation limit, say) or no host has the key."""
    params = {"nonce": nonce.hex(), "session_public_key": session_key}
    for _ in range(tries):
        http = httpx.Client(timeout=HTTP_TIMEOUT_SECONDS)
        try:
            response = bounded_request(
                http, "GET", f"{url}/v1/attestation", params=params,
                limit=MAX_ANSWER_BYTES, deadline=HTTP_TIMEOUT_SECONDS,
            )  # fmt: skip
        except ExchangeFailed as exc:
            raise AttestationUnavailable(f"GET /v1/attestation {exc}") from exc
        finally:
            http.close()
        code = _error_code(response)
        if response.status_code == 404 and code == SESSION_KEY_NOT_HERE:
            continue
        if not response.is_success:
            raise AttestationUnavailable(f"GET /v1/attestation answered {response.status_code} {code or ''}".rstrip())
        try:
            answer = response.json()
        except (ValueError, RecursionError):
            answer = None
        if not isinstance(answer, dict):
            raise AttestationUnavailable("GET /v1/attestation answered no JSON object")
        if answer.get("session_public_key") == session_key:
            return answer
    raise AttestationUnavailable(
        f"no host answered with session key {session_key} in {tries} tries: the enclave that signed has restarted "
        "since (its receipts can no longer be checked live: docs/api.md, Agents: verifying a sign answer), or the "
        "load balancer did not reach its host (try again with more --tries)"
    )


def _error_code(response: httpx.Response) -> str | None:
    try:
        error = response.json().get("error")
    except (ValueError, AttributeError, RecursionError):
        return None
    code = error.get("code") if isinstance(error, dict) else None
    return code if isinstance(code, str) else None
