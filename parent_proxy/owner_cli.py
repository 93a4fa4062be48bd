"""``waiaas owner ...``: the owner's tools. Every command signs with the owner key, from a local key file
(``--keypair``: an encrypted key file, or a plaintext Solana keypair JSON, told apart by content) or AWS KMS
(``--kms-key-id`` the key's full ARN, with ``--role-arn`` ... ``--mfa-serial`` ``--source-identity``).
``--owner-public-key K`` pins the owner key: a key whose public key is not K signs nothing. The passphrase of an
encrypted key file comes from ``--passphrase-file F`` (its first line) or, when stdin is a terminal, a prompt; so does
the MFA code (``--mfa-code-file F``); never from the command line. Key files: `parent_proxy.owner_keyfile`,
docs/owner-keys.md.

    waiaas owner keygen --out FILE                       make a new owner key in an encrypted file, print its public key
    waiaas owner encrypt-keypair SOLANA.json --out FILE  encrypt an existing Solana keypair, print its public key
    waiaas owner pubkey                                  print the owner public key (and, for KMS, the key ARN)
    waiaas owner sign-policy POLICY.json [--expires-in-days N] [--allow-sequence-jump]
                                                         print the signed policy envelope (N: set its expires_at)
    waiaas owner approve --wallet W --transaction B64 [--policy SIGNED.json]
                                                         print a signed approval of that transaction's message,
                                                         after what it does (stderr): `parent_proxy.owner_approval_cli`
    waiaas owner freeze|unfreeze --wallet W --sequence N [--allow-sequence-jump]
                                                         print a signed freeze / unfreeze order
    waiaas owner call --url URL METHOD PATH [--body F]   send an owner-signed request to the API, print the answer;
                                                         the request is signed for URL's origin only (its audience)
    waiaas owner check-multisig --url URL --wallet W     print the API's report on the wallet's multisig on chain
                                                         (GET /v1/wallets/W/multisig); exit 0 only if it conforms
    waiaas owner check-multisig --rpc-url URL --policy SIGNED.json --agent-key A [--vault V]
                                                         the same report made here, without the parent: the
                                                         multisig the signed policy declares, read through your
                                                         own RPC endpoint (`parent_proxy.owner_multisig_cli`)
    waiaas owner rotation-transaction | sign-rotation | sign-key-switch | cosign | advance-nonce-transaction
                                                         agent-key rotation: `parent_proxy.owner_rotation_cli`
    waiaas owner verify-wallet | verify-candidate        check that the enclave made an agent key (no key needed):
                                                         `parent_proxy.owner_verify_cli`
    waiaas owner verify-order --answer F --order F | --policy F ...
                                                         check that a freeze, unfreeze or policy reached the enclave
                                                         (its order receipt; no key needed):
                                                         `parent_proxy.owner_verify_order_cli`

Exit codes: 0 done, 1 the server refused or could not be reached (``call``, ``check-multisig --url``: the request
was signed and maybe sent, so it is not bad input; signed again, it is a new request), the chain could not be read
(``check-multisig --rpc-url``, rotation), the multisig does not conform (``check-multisig``) or the key or order
did not verify (``verify-*``), 2 bad input (a policy file whose signature does not verify against the owner key
included) or the key could not be used. A 401 ``owner_signature_invalid`` (``call``, ``check-multisig --url``) gets
a hint line on stderr (`_hint`): the proxy answers so for another key and for an origin it does not list alike. Key
material and clear agent tokens are never logged; ``call`` prints the server's answer (which, for token issue, holds
the token once) to stdout only.

Sequences (freeze orders, a policy's ``sequence``) are the owner's own count: the CLI refuses one above the maximum
(`policies.orders.MAX_SEQUENCE`, `policies.document.MAX_SAFE_INT`) and, without ``--allow-sequence-jump``, one above
`parent_proxy.owner_cli_common.PLAUSIBLE_SEQUENCE_MAX`, since a parent that shows a sequence near the maximum would
otherwise get the last order the wallet can accept signed. Everything printed from the parent's answers or the
chain has its control characters escaped (`policies.terminal_text`); ``call`` re-serializes a JSON answer.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from solders.pubkey import Pubkey

from parent_proxy import (
    owner_approval_cli,
    owner_multisig_cli,
    owner_rotation_cli,
    owner_verify_cli,
    owner_verify_order_cli,
)
from parent_proxy.bounded_http import ExchangeFailed, bounded_request
from parent_proxy.owner_auth import OriginError, signed_request_headers, url_origin
from parent_proxy.owner_cli_common import (
    DEFAULT_ORDER_LIFETIME,
    EXIT_BAD_INPUT,
    EXIT_OK,
    EXIT_REFUSED,
    EXPIRES_IN_HELP,
    PLAUSIBLE_SEQUENCE_MAX,
    OwnerInputError,
    check_sequence,
    envelope,
    order_expiry,
    passphrase,
    print_json,
    signer_from_args,
    wallet_id_option,
    warn,
)
from parent_proxy.owner_keyfile import (
    check_new_key_path,
    read_solana_keypair,
    write_encrypted_key_file,
)
from parent_proxy.owner_signers import (
    KmsOwnerSigner,
    OwnerKeyError,
    OwnerSigner,
)
from policies.canonical import parse_json_object
from policies.document import MAX_SAFE_INT, policy_from_object
from policies.errors import PolicyEngineError
from policies.orders import (
    FREEZE_PURPOSE,
    MAX_SEQUENCE,
    UNFREEZE_PURPOSE,
    freeze_document,
)
from policies.signing import POLICY_PURPOSE
from policies.terminal_text import safe_line


def register(subparsers: Any) -> None:
    owner = subparsers.add_parser("owner", help="owner tools: sign policies, approvals, freeze orders, API calls")
    key = owner.add_argument_group("owner key (one of)")
    key.add_argument("--keypair", type=Path, help="encrypted key file, or Solana CLI keypair JSON (self-host)")
    key.add_argument(
        "--passphrase-file", type=Path, help="file whose first line is the key file's passphrase (else a prompt)"
    )
    key.add_argument(
        "--kms-key-id",
        help="the owner key's full KMS key ARN (the OwnerKeyArn output of WaiaasOwnerKey; no alias, no bare id)",
    )
    key.add_argument("--role-arn", action="append", default=[], help="role to assume, in chain order (repeatable)")
    key.add_argument("--mfa-serial", help="MFA device ARN for the first assume-role hop")
    key.add_argument(
        "--mfa-code-file", type=Path, help="file whose first line is the current 6-digit MFA code (else a prompt)"
    )
    key.add_argument("--mfa-code", dest="refused_mfa_code", help=argparse.SUPPRESS)  # refused in `run`
    key.add_argument(
        "--source-identity",
        help="your name as the STS source identity (2-64 of A-Z a-z 0-9 _+=,.@-); the owner roles require one",
    )
    key.add_argument(
        "--owner-public-key",
        dest="pinned_public_key",
        help="the owner public key (base58) the key must have; anything else is refused before signing",
    )
    key.add_argument("--region", dest="refused_region", help=argparse.SUPPRESS)  # refused in `run`
    commands = owner.add_subparsers(dest="owner_command", required=True, metavar="ACTION")

    keygen = commands.add_parser("keygen", help="make a new owner key in an encrypted file (mode 0600)")
    keygen.add_argument("--out", required=True, type=Path, help="the new key file (never overwritten)")
    encrypt = commands.add_parser("encrypt-keypair", help="encrypt an existing Solana CLI keypair JSON")
    encrypt.add_argument("solana_json", type=Path, help="the plaintext Solana keypair JSON (left as it is)")
    encrypt.add_argument("--out", required=True, type=Path, help="the new key file (never overwritten)")
    for new_file in (keygen, encrypt):
        new_file.add_argument(
            "--passphrase-file", dest="new_passphrase_file", type=Path, help="file whose first line is the passphrase"
        )

    commands.add_parser("pubkey", help="print the owner public key")

    policy = commands.add_parser("sign-policy", help="sign a policy document")
    policy.add_argument("policy", type=Path)
    policy.add_argument(
        "--expires-in-days",
        type=int,
        help=f"set the document's expires_at to now + N days (1-{MAX_POLICY_LIFETIME_DAYS}; docs/policies.md, Expiry)",
    )
    _sequence_jump_option(policy)

    owner_approval_cli.register(commands)

    for name in ("freeze", "unfreeze"):
        order = commands.add_parser(name, help=f"sign a {name} order")
        order.add_argument("--wallet", required=True)
        order.add_argument(
            "--sequence",
            required=True,
            type=int,
            help=f"above the last order's sequence, from your own count (1-{MAX_SEQUENCE}; see --allow-sequence-jump)",
        )
        order.add_argument("--expires-in", type=int, default=DEFAULT_ORDER_LIFETIME, help=EXPIRES_IN_HELP)
        _sequence_jump_option(order)

    call = commands.add_parser("call", help="send an owner-signed request to the API")
    call.add_argument(
        "--url",
        required=True,
        help="base URL of the parent proxy, e.g. http://127.0.0.1:8080; the request is signed for its origin only",
    )
    call.add_argument("method", choices=["GET", "POST", "PUT", "DELETE"])
    call.add_argument("path", help="e.g. /v1/wallets/w1/tokens")
    call.add_argument("--body", type=Path, help="JSON body file")

    owner_multisig_cli.register(commands)
    owner_verify_cli.register(commands)
    owner_verify_order_cli.register(commands)
    owner_rotation_cli.register(commands)
    owner.set_defaults(func=run)


def _sequence_jump_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--allow-sequence-jump",
        action="store_true",
        help=f"sign a sequence above {PLAUSIBLE_SEQUENCE_MAX} (each one used brings the last possible one closer)",
    )


def new_key_file(args: argparse.Namespace) -> int:
    """``keygen`` / ``encrypt-keypair``: write ``--out`` encrypted, print only the public key."""
    if args.keypair is not None or args.kms_key_id is not None:
        raise OwnerInputError("takes no --keypair or --kms-key-id (it makes a key file)")
    check_new_key_path(args.out)
    if args.owner_command == "keygen":
        key = Ed25519PrivateKey.generate()
    else:
        key = read_solana_keypair(args.solana_json, warn)
    secret = passphrase(args.new_passphrase_file or args.passphrase_file, args.out, confirm=True)
    write_encrypted_key_file(args.out, key, secret)
    sys.stdout.write(f"{Pubkey.from_bytes(key.public_key().public_bytes_raw())}\n")
    return EXIT_OK


MAX_POLICY_LIFETIME_DAYS = 3660
"""Ten years: a longer lifetime is no bound at all (omit --expires-in-days for a policy that never expires)."""
OWNER_HTTP_TIMEOUT_SECONDS = 30.0
"""One whole exchange with the proxy (`parent_proxy.bounded_http`): connect, send, and read the whole answer."""
MAX_OWNER_ANSWER_BYTES = 4 * 1024 * 1024
"""The largest proxy answer read: the longest, the pending approvals (at most 100, each a transaction of at most 1232
bytes with its decision), is a few hundred KiB."""


def _refuse_removed_options(args: argparse.Namespace) -> None:
    """Options that are no longer taken, refused with the reason (argparse would take ``--mfa-code`` for an
    abbreviation of ``--mfa-code-file``)."""
    if args.refused_mfa_code is not None:
        raise OwnerInputError(
            "--mfa-code is not taken: a command-line argument can be read by other local users while the command "
            "runs (/proc/PID/cmdline) and stays in shell history; give --mfa-code-file F, or type the code at the "
            "prompt"
        )
    if args.refused_region is not None:
        raise OwnerInputError("--region is not taken: the region is the one in the --kms-key-id key ARN")


def run(args: argparse.Namespace) -> int:
    try:
        _refuse_removed_options(args)
        if args.owner_command in owner_verify_cli.COMMANDS:
            return owner_verify_cli.run(args)
        if args.owner_command == owner_verify_order_cli.COMMAND:
            return owner_verify_order_cli.run(args)  # signs nothing: the owner public key only
        if args.owner_command in ("keygen", "encrypt-keypair"):
            return new_key_file(args)
        if args.owner_command in owner_rotation_cli.COMMANDS:
            return owner_rotation_cli.run(args)
        if args.owner_command == owner_multisig_cli.COMMAND and owner_multisig_cli.check_way(args) == "rpc":
            return owner_multisig_cli.check_multisig_rpc(args)  # signs nothing: the owner public key only
        signer = signer_from_args(args)
        command = args.owner_command
        if command == "pubkey":
            arn = f" {signer.key_arn}" if isinstance(signer, KmsOwnerSigner) else ""
            sys.stdout.write(f"{signer.public_key}{arn}\n")
        elif command == "sign-policy":
            document = parse_json_object(args.policy.read_bytes(), what="policy")
            if args.expires_in_days is not None:
                if not 1 <= args.expires_in_days <= MAX_POLICY_LIFETIME_DAYS:
                    raise OwnerInputError(f"--expires-in-days must be 1-{MAX_POLICY_LIFETIME_DAYS}")
                document["expires_at"] = int(time.time()) + args.expires_in_days * 86_400
            policy = policy_from_object(document)  # refuse to sign an invalid policy
            check_sequence(policy.sequence, maximum=MAX_SAFE_INT, what="the policy's sequence",
                           allow_jump=args.allow_sequence_jump)  # fmt: skip
            print_json(envelope(signer, POLICY_PURPOSE, document))
        elif command == owner_approval_cli.COMMAND:
            return owner_approval_cli.approve(args, signer)
        elif command in ("freeze", "unfreeze"):
            wallet = wallet_id_option(args.wallet, "--wallet")
            check_sequence(args.sequence, maximum=MAX_SEQUENCE, what="--sequence", allow_jump=args.allow_sequence_jump)
            purpose = FREEZE_PURPOSE if command == "freeze" else UNFREEZE_PURPOSE
            print_json(envelope(signer, purpose, freeze_document(wallet, args.sequence, order_expiry(args.expires_in))))
        elif command == "check-multisig":
            return check_multisig(args, signer)
        else:
            return call(args, signer)
    except ProxyUnreachable as exc:
        sys.stderr.write(safe_line(f"owner {args.owner_command}: {exc}"))
        return EXIT_REFUSED
    except (OwnerInputError, OwnerKeyError, PolicyEngineError, OSError) as exc:
        sys.stderr.write(safe_line(f"owner {args.owner_command}: {exc}"))
        return EXIT_BAD_INPUT
    return EXIT_OK


class ProxyUnreachable(Exception):
    """The signed request got no answer (connection refused, a timeout, a TLS failure): exit `EXIT_REFUSED`."""


def _send(
    signer: OwnerSigner, url: str, method: str, path: str, body: bytes, *, client: httpx.Client | None = None
) -> httpx.Response:
    """An owner-signed request, for the deployment at ``url`` (the owner's own ``--url``: its origin is the audience
    signed, `parent_proxy.owner_auth.url_origin`); `OwnerInputError` for a ``--url`` without an origin,
    `ProxyUnreachable` if no answer came."""
    try:
        headers = signed_request_headers(url, method, path, body, owner=signer.public_key, sign=signer.sign)
    except OriginError as exc:
        raise OwnerInputError(f"--url {exc}") from exc
    http = client or httpx.Client(timeout=OWNER_HTTP_TIMEOUT_SECONDS)
    try:
        return bounded_request(
            http, method, url.rstrip("/") + path, content=body, headers=headers,
            limit=MAX_OWNER_ANSWER_BYTES, deadline=OWNER_HTTP_TIMEOUT_SECONDS,
        )  # fmt: skip
    except ExchangeFailed as exc:
        raise ProxyUnreachable(_no_answer(url, exc)) from exc
    finally:
        if client is None:
            http.close()


def _no_answer(url: str, exc: ExchangeFailed) -> str:
    """Why ``url`` gave no usable answer, naming its origin (never a user or password: `url_origin` refuses a URL
    that has one) and, when nothing answered at all, what to check."""
    origin = url_origin(url)
    message = f"request to {origin} {exc}"
    if isinstance(exc.__cause__, httpx.TransportError):  # no connection, a timeout, a TLS failure
        message += (
            f"; check that the proxy is running and listens at {origin} (its /readyz answers there; "
            "`waiaas selfhost up` prints its URL) and that --url names it"
        )
    return message


def _print_answer(response: httpx.Response) -> Any:
    """The parent's answer on stdout, as text a terminal shows and does not obey: a JSON answer re-serialized
    (`print_json`: ``json.dumps`` escapes every control and non-ASCII character as ``\\uNNNN``), anything else
    line by line with its control characters escaped (`policies.terminal_text`). Returns the JSON value, or
    None for an answer that is not JSON (or nested deeper than the parser goes)."""
    try:
        answer = json.loads(response.content)
    except (ValueError, RecursionError):
        sys.stdout.write("".join(safe_line(line) for line in response.text.removesuffix("\n").split("\n")))
        return None
    print_json(answer)
    return answer


def _hint(response: httpx.Response, answer: Any, url: str) -> None:
    """A hint line on stderr for a 401 ``owner_signature_invalid``: the proxy answers so both for a key that is not
    the wallet's owner key and for a request signed for an origin the deployment does not list (the audience:
    `parent_proxy.owner_auth`, step 2), and says no more on purpose. The origin named is ``--url``'s, the owner's
    own input in normal form (the proxy's operator sees the audience in its log: `parent_proxy.owner_audience_log`)."""
    error = answer.get("error") if isinstance(answer, dict) else None
    if response.status_code != 401 or not isinstance(error, dict) or error.get("code") != "owner_signature_invalid":
        return
    sys.stderr.write(
        f"hint: check that --url's origin ({url_origin(url)}) is listed in the deployment's WAIAAS_PUBLIC_ORIGINS "
        "(the origin a request is signed for, exactly: scheme, host and port), and that the key is the wallet's "
        "owner key (for a creation: one of WAIAAS_OWNER_KEYS)\n"
    )


def call(args: argparse.Namespace, signer: OwnerSigner, client: httpx.Client | None = None) -> int:
    body = b"" if args.body is None else args.body.read_bytes()
    response = _send(signer, args.url, args.method, args.path, body, client=client)
    _hint(response, _print_answer(response), args.url)
    return EXIT_OK if response.is_success else EXIT_REFUSED


def check_multisig(args: argparse.Namespace, signer: OwnerSigner, client: httpx.Client | None = None) -> int:
    """``check-multisig --url``: print the API's report (stdout) and each failed check (stderr); exit 0 only when the
    answer is a report that conforms. The report is what the parent read from its chain adapter (docs/api.md);
    ``--rpc-url`` makes the comparison without the parent (`parent_proxy.owner_multisig_cli`)."""
    wallet = wallet_id_option(args.wallet, "--wallet")
    response = _send(signer, args.url, "GET", f"/v1/wallets/{wallet}/multisig", b"", client=client)
    report = _print_answer(response)
    _hint(response, report, args.url)
    if not response.is_success:
        return EXIT_REFUSED
    return owner_multisig_cli.print_verdict(report if isinstance(report, dict) else {})
