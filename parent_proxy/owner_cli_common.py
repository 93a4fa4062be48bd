"""What every ``waiaas owner`` command shares: the owner key (or only its public key) from the command line, public
key options, the RPC client and URL of the commands that read the chain, the signed envelope, order expiry, JSON
output, exit codes and the bad-input error.

`parent_proxy.owner_cli` (policies, approvals, freeze orders, API calls), `parent_proxy.owner_rotation_cli`
(agent-key rotation) and `parent_proxy.owner_multisig_cli` (the multisig check through the owner's RPC) build on
this module; none imports another's internals.
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
import time
from pathlib import Path
from typing import Any, BinaryIO

import httpx
from solders.pubkey import Pubkey
from solders.signature import Signature

from parent_proxy.owner_keyfile import load_owner_key, prompt_passphrase, read_passphrase_file, read_secret_line
from parent_proxy.owner_signers import (
    MAX_ROLE_CHAIN,
    KmsOwnerSigner,
    LocalOwnerSigner,
    OwnerSigner,
    RoleChain,
    boto3_factory,
    check_expected_public_key,
    check_source_identity,
    parse_kms_key_arn,
)
from parent_proxy.rpc_url_options import add_rpc_url_arguments, rpc_url_option
from policies.canonical import MAX_DOCUMENT_BYTES
from policies.document import Policy, policy_from_object
from policies.errors import PolicySignatureError
from policies.identifiers import WALLET_ID_RULE, is_wallet_id
from policies.orders import MAX_ORDER_LIFETIME_SECONDS
from policies.signing import POLICY_PURPOSE, open_envelope, signing_payload
from policies.terminal_text import safe_line

EXIT_OK = 0
EXIT_REFUSED = 1
EXIT_BAD_INPUT = 2
DEFAULT_ORDER_LIFETIME = 600
"""Seconds an order signed without ``--expires-in`` stays valid."""
EXPIRES_IN_HELP = (
    f"seconds the signed order stays valid (1-{MAX_ORDER_LIFETIME_SECONDS}, default {DEFAULT_ORDER_LIFETIME})"
)
PLAUSIBLE_SEQUENCE_MAX = 2**32
"""The largest freeze-order or policy sequence signed without ``--allow-sequence-jump``. Sequences only go up and
have a maximum (`policies.orders.MAX_SEQUENCE`, `policies.document.MAX_SAFE_INT`): once the maximum is signed, no
later order (policy) is ever accepted for the wallet. An owner who counts their own orders stays far below this
bound for ever; a sequence above it is one taken from somewhere else, such as the parent's view of the wallet."""


class OwnerInputError(Exception):
    """Bad command-line input: the command prints the message and exits `EXIT_BAD_INPUT`; nothing is signed."""


def warn(message: str) -> None:
    sys.stderr.write(safe_line(f"owner: warning: {message}"))


def check_sequence(sequence: int, *, maximum: int, what: str, allow_jump: bool) -> None:
    """Refuse to sign a freeze-order or policy ``sequence`` outside 1..``maximum``, or above
    `PLAUSIBLE_SEQUENCE_MAX` unless ``allow_jump`` (``--allow-sequence-jump``), saying why (`OwnerInputError`)."""
    if not 1 <= sequence <= maximum:
        raise OwnerInputError(f"{what} must be 1-{maximum}")
    if sequence <= PLAUSIBLE_SEQUENCE_MAX:
        return
    if not allow_jump:
        raise OwnerInputError(
            f"{what} {sequence} is above {PLAUSIBLE_SEQUENCE_MAX}: nothing was signed. Sequences only go up and the "
            f"largest is {maximum}; once it is used, no later one can ever be accepted for this wallet. Count your "
            "own sequences: do not take the next one from the parent's view of the wallet (a taken-over parent can "
            "show one near the maximum). To sign it anyway, add --allow-sequence-jump"
        )
    warn(f"{what} {sequence}: {maximum - sequence} sequences remain after this one for this wallet")


def pinned_public_key(text: str | None) -> Pubkey | None:
    """``--owner-public-key``, parsed (None when not given)."""
    return None if text is None else public_key_option(text, "--owner-public-key")


def wallet_id_option(text: str, option: str) -> str:
    """A wallet id given as ``option`` (`policies.identifiers`: the API's, the policies' and the enclave's rule);
    `OwnerInputError` if it is not one, before anything is signed or sent."""
    if not is_wallet_id(text):
        raise OwnerInputError(f"{option} is not a wallet id ({WALLET_ID_RULE})")
    return text


def public_key_option(text: str, option: str) -> Pubkey:
    """A base58 public key given as ``option``; `OwnerInputError` if it is not one."""
    try:
        return Pubkey.from_string(text)
    except ValueError as exc:
        raise OwnerInputError(f"{option} is not a base58 public key") from exc


def new_rpc_client() -> httpx.AsyncClient:
    """The HTTP client the owner commands read the chain with (the test seam: tests replace it here)."""
    return httpx.AsyncClient()


def add_rpc_url_options(parser: argparse.ArgumentParser, *, required: bool, what: str) -> None:
    """``--rpc-url-file FILE`` and ``--rpc-url URL``, exclusive (`parent_proxy.rpc_url_options`); ``what`` ends the
    help of each."""
    add_rpc_url_arguments(parser.add_mutually_exclusive_group(required=required), what=what)


def rpc_url(args: argparse.Namespace) -> str:
    """The endpoint of ``--rpc-url-file`` or ``--rpc-url``: an https URL, or plain http to a loopback host only
    (`parent_proxy.rpc_urls`), with a warning when ``--rpc-url`` shows a part that can hold an API key
    (`parent_proxy.rpc_url_options`). It may carry an API key: never print it."""
    try:
        url = rpc_url_option(args.rpc_url, args.rpc_url_file, warn)
    except ValueError as exc:
        raise OwnerInputError(str(exc)) from None
    if url is None:
        raise OwnerInputError("give --rpc-url-file FILE or --rpc-url URL")
    return url


def owner_public_key(args: argparse.Namespace) -> Pubkey:
    """The owner public key for a command that signs nothing: ``--owner-public-key`` alone, or the public key of the
    key the options name (checked against ``--owner-public-key`` when both are given)."""
    if args.keypair is None and args.kms_key_id is None:
        pinned = pinned_public_key(args.pinned_public_key)
        if pinned is None:
            raise OwnerInputError("give the owner public key: --owner-public-key K (before the subcommand)")
        return pinned
    return signer_from_args(args).public_key


def passphrase(passphrase_file: Path | None, key_file: Path, *, confirm: bool) -> bytes:
    """A key file's passphrase: the first line of ``passphrase_file``, else a prompt when stdin is a terminal."""
    if passphrase_file is not None:
        return read_passphrase_file(passphrase_file, warn)
    if not sys.stdin.isatty():
        raise OwnerInputError(f"key file {key_file}: give --passphrase-file (stdin is not a terminal to ask on)")
    return prompt_passphrase(key_file, confirm=confirm, ask=getpass.getpass)


def mfa_code(mfa_code_file: Path | None, serial: str) -> str:
    """The MFA code for the first assume-role hop: the first line of ``mfa_code_file`` (surrounding whitespace
    dropped), else a prompt when stdin is a terminal; never a command-line argument, which other local users can
    read in /proc/PID/cmdline while the command runs and which shell history keeps (as for the passphrase)."""
    if mfa_code_file is not None:
        return read_secret_line(mfa_code_file, "MFA code file", warn).strip().decode("ascii", "replace")
    if not sys.stdin.isatty():
        raise OwnerInputError("give --mfa-code-file (stdin is not a terminal to ask for the MFA code on)")
    try:
        code = getpass.getpass(f"MFA code for {serial}: ")
    except (EOFError, KeyboardInterrupt):
        raise OwnerInputError("no MFA code entered") from None
    return code.strip()


def signer_from_args(args: argparse.Namespace) -> OwnerSigner:
    """The owner key the options name: ``--keypair`` (local file) or ``--kms-key-id`` (its full key ARN) through the
    MFA role chain, checked against ``--owner-public-key`` when given. For KMS, everything that can be checked here
    is checked before the MFA code is asked for, and the code before any AWS call."""
    if (args.keypair is None) == (args.kms_key_id is None):
        raise OwnerInputError("give exactly one of --keypair or --kms-key-id")
    if args.passphrase_file is not None and args.keypair is None:
        raise OwnerInputError("--passphrase-file goes with --keypair")
    if args.mfa_code_file is not None and args.kms_key_id is None:
        raise OwnerInputError("--mfa-code-file goes with --kms-key-id")
    pinned = pinned_public_key(args.pinned_public_key)
    if args.keypair is not None:
        path = args.keypair
        local = LocalOwnerSigner(
            load_owner_key(path, lambda: passphrase(args.passphrase_file, path, confirm=False), warn)
        )
        check_expected_public_key(local.public_key, pinned, f"keypair file {args.keypair}")
        return local
    if not args.role_arn or not args.mfa_serial or not args.source_identity:
        raise OwnerInputError("--kms-key-id needs --role-arn (at least one), --mfa-serial and --source-identity")
    if len(args.role_arn) > MAX_ROLE_CHAIN:
        raise OwnerInputError(f"the role chain must name 1-{MAX_ROLE_CHAIN} roles")
    key = parse_kms_key_arn(args.kms_key_id)
    check_source_identity(args.source_identity)
    chain = RoleChain(args.role_arn, args.mfa_serial, mfa_code(args.mfa_code_file, args.mfa_serial),
                      args.source_identity)  # fmt: skip
    return KmsOwnerSigner.with_role_chain(boto3_factory(key.region), chain, key.arn, expected_public_key=pinned)


def envelope(signer: OwnerSigner, purpose: str, document: dict[str, Any]) -> dict[str, Any]:
    """The signed envelope the API and the enclave take: the document and the owner's signature for ``purpose``."""
    signature = signer.sign(signing_payload(purpose, document))
    return {"document": document, "signature": str(Signature.from_bytes(signature))}


def order_expiry(seconds: int) -> int:
    """``expires_at`` for an order valid ``seconds`` (``--expires-in``) from now."""
    if not 1 <= seconds <= MAX_ORDER_LIFETIME_SECONDS:
        raise OwnerInputError(f"--expires-in must be 1-{MAX_ORDER_LIFETIME_SECONDS} seconds")
    return int(time.time()) + seconds


def print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2, sort_keys=True) + "\n")


def json_object_file(path: Path, what: str, *, limit: int | None = None) -> dict[str, Any]:
    """The JSON object in the file at ``path`` (the option ``what`` names it), read whole or, with ``limit``, refused
    when larger than ``limit`` bytes; `OwnerInputError` if it is not a JSON object."""
    with path.open("rb") as file:
        return json_object_read(file, what, limit=limit)


def json_object_read(file: BinaryIO, what: str, *, limit: int | None = None) -> dict[str, Any]:
    """`json_object_file` from an open binary ``file`` (a file, or stdin's buffer)."""
    data = file.read(-1 if limit is None else limit + 1)
    if limit is not None and len(data) > limit:
        raise OwnerInputError(f"{what}: larger than {limit} bytes")
    try:
        value = json.loads(data)
    except (ValueError, RecursionError) as exc:  # RecursionError: nested deeper than the parser goes
        raise OwnerInputError(f"{what}: not JSON (or nested too deeply)") from exc
    if not isinstance(value, dict):
        raise OwnerInputError(f"{what}: not a JSON object")
    return value


def signed_policy_file(path: Path, owner: Pubkey) -> Policy:
    """The policy in the envelope at ``path`` (``--policy``), its signature verified against ``owner`` before it
    is read."""
    with path.open("rb") as file:
        data = file.read(MAX_DOCUMENT_BYTES + 1)  # parse_json_object refuses anything longer
    try:
        return policy_from_object(open_envelope(data, POLICY_PURPOSE, owner))
    except PolicySignatureError as exc:
        raise OwnerInputError(f"--policy: the signature does not verify against the owner key {owner}") from exc
