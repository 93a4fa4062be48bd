"""``waiaas owner verify-wallet`` and ``waiaas owner verify-candidate``: the owner's checks, before putting an agent
key on chain, that the enclave made it for them. No owner key is needed.

    waiaas owner verify-wallet --created F --wallet-id W [--attestation F] --owner-public-key K ATTESTATION
        the ``POST /v1/wallets`` answer's provisioning receipt (`parent_proxy.provisioning`) for wallet W
    waiaas owner verify-candidate --candidate F [--attestation F] --wallet-id W --agent-key A --owner-public-key K
                                  ATTESTATION
        the ``POST .../agent-key/candidate`` answer's agent-key receipt (`parent_proxy.agent_key_receipts`)

``--attestation`` is a ``GET /v1/attestation`` answer; left out, the attestation the answer itself carries is
checked (asked with ``?nonce=HEX``: the enclave that made the answer, on the same host, `_carried_attestation`).
With several hosts, a separate ``GET /v1/attestation`` may come from another host than the answer, whose session
key did not sign the receipt: the one-answer form avoids that.

ATTESTATION is ``--root-pem F --pcr 0=HEX [--pcr I=HEX ...] [--nonce HEX]`` for mode nitro (the ``GET
/v1/attestation`` answer's document verified against the pinned root and PCRs, PCR 0 among them, and saying it
carries the session key; its key signs the receipt), or ``--accept-unattested`` for mode none (the answer's key
taken as it is: proves nothing about the code).

``--nonce`` is checked when given, and optional for these two commands: their receipt states something the enclave
did once (made this agent key, or this candidate, for this wallet and owner key), which stays true whatever the
enclave does later; it names the new key, so the parent cannot show it for another wallet or key; and the
attestation only has to show which measured enclave's session key signed it, which an answer handed back again
shows as truly (the document's own freshness bound, `enclave_app.attestation.MAX_DOCUMENT_AGE`, applies either
way). ``verify-order`` differs: it shows what an enclave holds now, which a restart undoes, so an
old answer handed back again must not pass: it requires ``--nonce`` in mode nitro
(`parent_proxy.owner_verify_order_cli`). These are the anchor rules ``waiaas audit verify`` applies
(`parent_proxy.trust_anchor`): an anchor without PCR 0 is bad input, and an anchor requires an attested key, so
``--accept-unattested`` together with ``--root-pem`` / ``--pcr`` is bad input too (a mode none answer then fails).

The wallet id is the owner's (``--wallet-id``, required by both commands): the answer's and the receipt's must
equal it, and it must be a wallet id the API accepts (`policies.identifiers`). Exit 0: verified; 1: not verified,
do not put the key on chain (the message says why); 2: bad input. What is printed quotes the parent's answers only
with their control characters escaped (`policies.terminal_text`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Final

from parent_proxy.agent_key_receipts import CandidateVerificationError, verify_candidate_answer
from parent_proxy.owner_cli_common import EXIT_OK, EXIT_REFUSED, OwnerInputError, json_object_file, wallet_id_option
from parent_proxy.provisioning import (
    UNATTESTED_WARNING,
    ProvisionVerificationError,
    attested_session,
    verify_provision_receipt,
)
from parent_proxy.trust_anchor import Anchor, AnchorError, AttestedSession, anchor_from_options
from policies.terminal_text import safe_line

COMMANDS: Final = frozenset({"verify-wallet", "verify-candidate"})


def attestation_options(parser: argparse.ArgumentParser) -> None:
    """The options of the attestation answer and its anchor (also ``verify-order``'s). ``--attestation`` may be
    left out for an answer that carries its host's attestation (`_carried_attestation`)."""
    parser.add_argument(
        "--attestation",
        type=Path,
        help="the GET /v1/attestation answer (JSON file); leave it out for an answer that carries its own "
        "(asked with ?nonce=)",
    )
    parser.add_argument("--owner-public-key", required=True, help="your owner public key (base58)")
    anchor_options(parser)


def anchor_options(parser: argparse.ArgumentParser) -> None:
    """The anchor options (`attestation_anchor`): also ``waiaas agent verify-receipt``'s (`parent_proxy.agent_cli`)."""
    parser.add_argument("--root-pem", type=Path, help="nitro: the pinned root certificate (PEM)")
    parser.add_argument(
        "--pcr", action="append", default=[], help="nitro: expected PCR, INDEX=HEX (repeatable; PCR 0 required)"
    )
    parser.add_argument(
        "--nonce",
        help="nitro: the hex nonce you sent (?nonce=, or to GET /v1/attestation): checked when given; "
        "verify-order requires it",
    )
    parser.add_argument(
        "--accept-unattested",
        action="store_true",
        help="mode none: accept the unattested session key (proves nothing; not with --root-pem / --pcr)",
    )


def register(commands: Any) -> None:
    """Add the verification subcommands to ``waiaas owner``'s subparsers."""
    wallet = commands.add_parser("verify-wallet", help="verify a new wallet's provisioning receipt")
    wallet.add_argument("--created", required=True, type=Path, help="the POST /v1/wallets answer (JSON file)")
    wallet.add_argument("--wallet-id", required=True, help="the wallet you created (its id, as you sent it)")
    attestation_options(wallet)
    candidate = commands.add_parser("verify-candidate", help="verify a candidate agent key's receipt (rotation)")
    candidate.add_argument(
        "--candidate", required=True, type=Path, help="the POST /v1/wallets/{id}/agent-key/candidate answer (JSON file)"
    )
    candidate.add_argument("--wallet-id", required=True, help="the wallet being rotated")
    candidate.add_argument("--agent-key", required=True, help="the wallet's current agent key (base58)")
    attestation_options(candidate)


def _wallet_id(text: str) -> str:
    return wallet_id_option(text, "--wallet-id")


def attested_session_key(
    args: argparse.Namespace, answer: dict[str, Any], *, limit: int | None = None, nonce_required: str | None = None
) -> AttestedSession:
    """The session key of ``--attestation`` (a file of at most ``limit`` bytes, if one is given) or of the
    attestation ``answer`` carries (`_carried_attestation`), verified as the options (``--root-pem``, ``--pcr``,
    ``--nonce``, ``--accept-unattested``) say, by the anchor rules every owner check shares
    (`parent_proxy.trust_anchor`), with the document's ``module_id``; `OwnerInputError` for options that do not go
    together or no attestation, `ProvisionVerificationError` for an answer that does not verify. Also
    ``verify-order``'s, which passes ``nonce_required`` (why it needs the owner's nonce): then an anchor (mode
    nitro) without ``--nonce`` is bad input too, since without the nonce an old answer handed back again verifies
    just as well."""
    anchor, nonce = attestation_anchor(args, nonce_required=nonce_required)
    attestation = _carried_attestation(args, answer, limit)
    return checked_session(attestation, anchor, nonce, accept_unattested=args.accept_unattested)


def attestation_anchor(
    args: argparse.Namespace, *, nonce_required: str | None = None
) -> tuple[Anchor | None, bytes | None]:
    """The anchor and the nonce the options (``--root-pem``, ``--pcr``, ``--nonce``, ``--accept-unattested``) give,
    checked by the rules of `attested_session_key` (`OwnerInputError` for options that do not go together)."""
    try:
        nonce = None if args.nonce is None else bytes.fromhex(args.nonce)
    except ValueError as exc:
        raise OwnerInputError("--nonce is not hex") from exc
    try:
        anchor = anchor_from_options(args.root_pem, args.pcr)
    except AnchorError as exc:
        raise OwnerInputError(str(exc)) from exc
    if anchor is not None and args.accept_unattested:
        raise OwnerInputError(
            "--accept-unattested goes without --root-pem and --pcr: an anchor requires an attested session key "
            "(give the anchor for mode nitro, or --accept-unattested alone for mode none)"
        )
    if args.nonce is not None and anchor is None:
        raise OwnerInputError("--nonce goes with --root-pem and --pcr (it is checked in the attestation document)")
    if nonce_required is not None and anchor is not None and nonce is None:
        raise OwnerInputError(f"--nonce is required with --root-pem and --pcr: {nonce_required}")
    return anchor, nonce


def checked_session(
    attestation: dict[str, Any], anchor: Anchor | None, nonce: bytes | None, *, accept_unattested: bool
) -> AttestedSession:
    """The session key of a ``GET /v1/attestation`` answer under ``anchor`` and ``nonce`` (from
    `attestation_anchor`), by `parent_proxy.provisioning.attested_session` (`ProvisionVerificationError` if it does
    not verify); mode none (accepted) warns on stderr that it proves nothing."""
    session = attested_session(attestation, anchor=anchor, expected_nonce=nonce, accept_unattested=accept_unattested)
    if attestation.get("mode") == "none":
        sys.stderr.write(f"WARNING: {UNATTESTED_WARNING}\n")
    return session


def _carried_attestation(args: argparse.Namespace, answer: dict[str, Any], limit: int | None) -> dict[str, Any]:
    """The attestation answer to check: ``--attestation`` if given (a file of at most ``limit`` bytes, if one is
    given), else the one ``answer`` carries (its ``attestation`` object: the enclave that answered it, over the
    owner's nonce, in the same exchange with the same host); `OwnerInputError` without either."""
    if args.attestation is not None:
        return json_object_file(args.attestation, "--attestation", limit=limit)
    carried = answer.get("attestation")
    if not isinstance(carried, dict):
        raise OwnerInputError(
            "give --attestation, or an answer that carries its host's attestation (asked with ?nonce=HEX: docs/api.md)"
        )
    return carried


def run(args: argparse.Namespace) -> int:
    """One verification subcommand (inside `owner_cli.run`'s error handling: bad input exits 2)."""
    if args.owner_command == "verify-wallet":
        return verify_wallet(args)
    return verify_candidate(args)


def verify_wallet(args: argparse.Namespace) -> int:
    """``verify-wallet``: 0 when the receipt verifies and binds the keys, 1 when it does not, 2 on bad input."""
    wallet_id = _wallet_id(args.wallet_id)
    created = json_object_file(args.created, "--created")
    try:
        session = attested_session_key(args, created).public_key
        verified = verify_provision_receipt(
            created, wallet_id=wallet_id, owner_public_key=args.owner_public_key, session_public_key=session
        )
    except ProvisionVerificationError as exc:
        sys.stderr.write(safe_line(f"owner verify-wallet: NOT VERIFIED: {exc}. Do not add the agent key on chain."))
        return EXIT_REFUSED
    sys.stdout.write(
        safe_line(
            f"verified: the enclave provisioned wallet {verified.wallet_id} with agent key "
            f"{verified.agent_public_key} for owner key {verified.owner_public_key}"
        )
    )
    return EXIT_OK


def verify_candidate(args: argparse.Namespace) -> int:
    """``verify-candidate``: 0 when the receipt verifies and states this candidate for this wallet, agent key and
    owner key, 1 when it does not, 2 on bad input."""
    wallet_id = _wallet_id(args.wallet_id)
    answer = json_object_file(args.candidate, "--candidate")
    try:
        session = attested_session_key(args, answer).public_key
        verified = verify_candidate_answer(
            answer, wallet_id=wallet_id, agent_public_key=args.agent_key, owner_public_key=args.owner_public_key,
            session_public_key=session,
        )  # fmt: skip
    except (ProvisionVerificationError, CandidateVerificationError) as exc:
        sys.stderr.write(safe_line(f"owner verify-candidate: NOT VERIFIED: {exc}. Do not add the candidate on chain."))
        return EXIT_REFUSED
    sys.stdout.write(
        safe_line(
            f"verified: the enclave made candidate agent key {verified.candidate_public_key} to replace "
            f"{verified.agent_public_key} in wallet {verified.wallet_id} for owner key {verified.owner_public_key}"
        )
    )
    return EXIT_OK
