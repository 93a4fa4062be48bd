"""``waiaas owner verify-wallet`` and ``waiaas owner verify-candidate``: the owner's checks, before putting an agent
key on chain, that the enclave made it for them. No owner key is needed.

    waiaas owner verify-wallet --created F --attestation F --owner-public-key K ATTESTATION
        the ``POST /v1/wallets`` answer's provisioning receipt (`parent_proxy.provisioning`)
    waiaas owner verify-candidate --candidate F --attestation F --wallet-id W --agent-key A --owner-public-key K
                                  ATTESTATION
        the ``POST .../agent-key/candidate`` answer's agent-key receipt (`parent_proxy.agent_key_receipts`)

ATTESTATION is ``--root-pem F --pcr I=HEX ... [--nonce HEX]`` for mode nitro (the ``GET /v1/attestation`` answer's
document verified against the pinned root and PCRs; its key signs the receipt), or ``--accept-unattested`` for mode
none (the answer's key taken as it is: proves nothing about the code). Exit 0: verified; 1: not verified, do not
put the key on chain (the message says why); 2: bad input.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Final

from parent_proxy.agent_key_receipts import CandidateVerificationError, verify_candidate_answer
from parent_proxy.owner_cli_common import EXIT_OK, EXIT_REFUSED, OwnerInputError
from parent_proxy.provisioning import (
    UNATTESTED_WARNING,
    ProvisionVerificationError,
    session_key_from_attestation,
    verify_provision_receipt,
)

COMMANDS: Final = frozenset({"verify-wallet", "verify-candidate"})


def _attestation_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--attestation", required=True, type=Path, help="the GET /v1/attestation answer (JSON file)")
    parser.add_argument("--owner-public-key", required=True, help="your owner public key (base58)")
    parser.add_argument("--root-pem", type=Path, help="nitro: the pinned root certificate (PEM)")
    parser.add_argument("--pcr", action="append", default=[], help="nitro: expected PCR, INDEX=HEX (repeatable)")
    parser.add_argument("--nonce", help="nitro: the hex nonce sent to GET /v1/attestation (checked when given)")
    parser.add_argument(
        "--accept-unattested", action="store_true", help="mode none: accept the unattested session key (proves nothing)"
    )


def register(commands: Any) -> None:
    """Add the verification subcommands to ``waiaas owner``'s subparsers."""
    wallet = commands.add_parser("verify-wallet", help="verify a new wallet's provisioning receipt")
    wallet.add_argument("--created", required=True, type=Path, help="the POST /v1/wallets answer (JSON file)")
    _attestation_options(wallet)
    candidate = commands.add_parser("verify-candidate", help="verify a candidate agent key's receipt (rotation)")
    candidate.add_argument(
        "--candidate", required=True, type=Path, help="the POST /v1/wallets/{id}/agent-key/candidate answer (JSON file)"
    )
    candidate.add_argument("--wallet-id", required=True, help="the wallet being rotated")
    candidate.add_argument("--agent-key", required=True, help="the wallet's current agent key (base58)")
    _attestation_options(candidate)


def _read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        value = json.loads(path.read_bytes())
    except ValueError as exc:
        raise OwnerInputError(f"{what}: not JSON") from exc
    if not isinstance(value, dict):
        raise OwnerInputError(f"{what}: not a JSON object")
    return value


def _pcrs(specs: list[str]) -> dict[int, bytes]:
    pcrs: dict[int, bytes] = {}
    for spec in specs:
        index, _, value = spec.partition("=")
        try:
            pcrs[int(index)] = bytes.fromhex(value)
        except ValueError as exc:
            raise OwnerInputError(f"--pcr {spec!r}: expected INDEX=HEX") from exc
    return pcrs


def _session_key(args: argparse.Namespace) -> bytes:
    """The session key of ``--attestation``, verified as the options say (`ProvisionVerificationError` if not)."""
    attestation = _read_json(args.attestation, "--attestation")
    root = None if args.root_pem is None else args.root_pem.read_bytes()
    try:
        nonce = None if args.nonce is None else bytes.fromhex(args.nonce)
    except ValueError as exc:
        raise OwnerInputError("--nonce is not hex") from exc
    session = session_key_from_attestation(
        attestation, root_certificate_pem=root, expected_pcrs=_pcrs(args.pcr), expected_nonce=nonce,
        accept_unattested=args.accept_unattested,
    )  # fmt: skip
    if attestation.get("mode") == "none":
        sys.stderr.write(f"WARNING: {UNATTESTED_WARNING}\n")
    return session


def run(args: argparse.Namespace) -> int:
    """One verification subcommand (inside `owner_cli.run`'s error handling: bad input exits 2)."""
    if args.owner_command == "verify-wallet":
        return verify_wallet(args)
    return verify_candidate(args)


def verify_wallet(args: argparse.Namespace) -> int:
    """``verify-wallet``: 0 when the receipt verifies and binds the keys, 1 when it does not, 2 on bad input."""
    created = _read_json(args.created, "--created")
    try:
        session = _session_key(args)
        verified = verify_provision_receipt(created, owner_public_key=args.owner_public_key, session_public_key=session)
    except ProvisionVerificationError as exc:
        sys.stderr.write(f"owner verify-wallet: NOT VERIFIED: {exc}. Do not add the agent key on chain.\n")
        return EXIT_REFUSED
    sys.stdout.write(
        f"verified: the enclave provisioned wallet {verified.wallet_id} with agent key {verified.agent_public_key} "
        f"for owner key {verified.owner_public_key}\n"
    )
    return EXIT_OK


def verify_candidate(args: argparse.Namespace) -> int:
    """``verify-candidate``: 0 when the receipt verifies and states this candidate for this wallet, agent key and
    owner key, 1 when it does not, 2 on bad input."""
    answer = _read_json(args.candidate, "--candidate")
    try:
        session = _session_key(args)
        verified = verify_candidate_answer(
            answer, wallet_id=args.wallet_id, agent_public_key=args.agent_key, owner_public_key=args.owner_public_key,
            session_public_key=session,
        )  # fmt: skip
    except (ProvisionVerificationError, CandidateVerificationError) as exc:
        sys.stderr.write(f"owner verify-candidate: NOT VERIFIED: {exc}. Do not add the candidate on chain.\n")
        return EXIT_REFUSED
    sys.stdout.write(
        f"verified: the enclave made candidate agent key {verified.candidate_public_key} to replace "
        f"{verified.agent_public_key} in wallet {verified.wallet_id} for owner key {verified.owner_public_key}\n"
    )
    return EXIT_OK
