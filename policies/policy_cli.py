"""``waiaas policy ...``: policy tools for humans.

- ``waiaas policy check --policy FILE --transaction BASE64 [...]`` decodes a transaction, evaluates it and prints
  the decision as JSON (exit 0 when a decision was printed, 2 for bad input).
- ``waiaas policy validate FILE`` validates a policy document (or a signed envelope, with ``--owner``).

The policy file may be a bare document or a signed envelope; an envelope's signature is verified only when
``--owner`` is given, and the output says whether it was.

Lookup tables resolve as in the signer (`policies.lookup_tables.resolve_lookup_tables`): from the policy's pins
only. Contents given with ``--lookup-table`` (read from the chain, say) are cross-checked against the pins, and a
table that is not pinned, disagrees with its pin or is shorter than it is a decode failure, which is denied: the
decision printed is the one the signer would make.

The policy file and the transaction may come from someone else (an agent's transaction, a policy to review), and
what is printed quotes them: a field name, a file name, a wallet id. Messages are written with their control
characters escaped (`policies.terminal_text`), so a crafted field name cannot erase a line or write the clipboard;
the decision is JSON, whose ``ensure_ascii`` escaping already shows every control character as ``\\uNNNN``.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from solders.pubkey import Pubkey

from policies.canonical import parse_json_object
from policies.document import Policy, policy_from_object
from policies.errors import DecodeError, PolicyEngineError
from policies.evaluate import EvalContext, evaluate
from policies.lookup_tables import resolve_lookup_tables
from policies.signing import POLICY_PURPOSE, open_envelope
from policies.terminal_text import safe_line
from policies.transaction import decode_transaction

EXIT_OK = 0
EXIT_BAD_INPUT = 2


class _InputError(Exception):
    """Bad command-line input: reported on stderr with exit code 2."""


def register(subparsers: Any) -> None:
    policy = subparsers.add_parser("policy", help="check transactions against policies, validate policies")
    commands = policy.add_subparsers(dest="policy_command", required=True, metavar="SUBCOMMAND")

    check = commands.add_parser("check", help="evaluate one transaction and print the decision as JSON")
    check.add_argument("--policy", required=True, type=Path, help="policy document or signed envelope (JSON)")
    check.add_argument("--transaction", required=True, help="the serialized transaction, base64")
    check.add_argument("--owner", help="owner public key: verify the envelope's signature")
    check.add_argument(
        "--wallet-key", action="append", default=[], help="a wallet key (repeatable; default: the fee payer)"
    )
    check.add_argument(
        "--lookup-table",
        action="append",
        default=[],
        metavar="TABLE=ADDR,ADDR,...",
        help="an address lookup table's contents, cross-checked against the policy's pins (repeatable)",
    )
    check.add_argument("--now", help="evaluation time, ISO 8601 with offset (default: now)")
    check.add_argument(
        "--spent",
        action="append",
        default=[],
        metavar="ASSET:WINDOW_SECONDS=AMOUNT",
        help="already spent or reserved in a window (repeatable; unlisted windows count as 0)",
    )
    check.add_argument("--requests", type=int, default=0, help="earlier requests in the rate window")
    check.add_argument("--denials", type=int, default=0, help="earlier denials in the freeze.denials window")
    check.set_defaults(func=_check)

    validate = commands.add_parser("validate", help="validate a policy document")
    validate.add_argument("file", type=Path)
    validate.add_argument("--owner", help="owner public key: verify the envelope's signature")
    validate.set_defaults(func=_validate)


def _pubkey(text: str, what: str) -> Pubkey:
    try:
        return Pubkey.from_string(text)
    except ValueError as exc:
        raise _InputError(f"{what}: {text!r} is not a base58 Solana address") from exc


def _load_policy(path: Path, owner: str | None) -> tuple[Policy, str]:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise _InputError(f"--policy: cannot read {path}: {exc.strerror}") from exc
    obj = parse_json_object(data, what="policy")
    if set(obj) == {"document", "signature"}:
        if owner is None:
            return policy_from_object(obj["document"]), "envelope signature NOT verified (no --owner)"
        document = open_envelope(data, POLICY_PURPOSE, _pubkey(owner, "--owner"))
        return policy_from_object(document), "envelope signature verified"
    if owner is not None:
        raise _InputError("--owner given but the policy file is not a signed envelope")
    return policy_from_object(obj), "unsigned document"


def _lookup_tables(specs: list[str]) -> dict[Pubkey, list[Pubkey]]:
    tables: dict[Pubkey, list[Pubkey]] = {}
    for spec in specs:
        table, sep, addresses = spec.partition("=")
        if not sep:
            raise _InputError(f"--lookup-table {spec!r}: expected TABLE=ADDR,ADDR,...")
        key = _pubkey(table, "--lookup-table")
        if key in tables:
            raise _InputError(f"--lookup-table {table}: given twice")
        tables[key] = [_pubkey(a, "--lookup-table") for a in addresses.split(",") if a]
    return tables


def _spent(specs: list[str], policy: Policy) -> dict[tuple[str, int], int]:
    spent = dict.fromkeys(policy.spend_windows(), 0)
    for spec in specs:
        key, sep, amount = spec.rpartition("=")
        asset, colon, window = key.rpartition(":")
        if not (sep and colon and window.isdigit() and amount.isdigit()):
            raise _InputError(f"--spent {spec!r}: expected ASSET:WINDOW_SECONDS=AMOUNT")
        if (asset, int(window)) not in spent:
            raise _InputError(f"--spent {spec!r}: the policy has no {window}s window for {asset}")
        spent[(asset, int(window))] = int(amount)
    return spent


def _now(text: str | None) -> datetime:
    if text is None:
        return datetime.now(UTC)
    try:
        now = datetime.fromisoformat(text)
    except ValueError as exc:
        raise _InputError(f"--now {text!r}: not an ISO 8601 time") from exc
    if now.tzinfo is None:
        raise _InputError(f"--now {text!r}: give a UTC offset, e.g. 2026-01-01T12:00:00+00:00")
    return now


def _check(args: argparse.Namespace) -> int:
    try:
        policy, provenance = _load_policy(args.policy, args.owner)
        try:
            raw = base64.b64decode(args.transaction, validate=True)
        except binascii.Error as exc:
            raise _InputError("--transaction: not valid base64") from exc
        if args.requests < 0 or args.denials < 0:
            raise _InputError("--requests and --denials must not be negative")
        now = _now(args.now)
        spent = _spent(args.spent, policy)
        tables = _lookup_tables(args.lookup_table)
        wallet = [_pubkey(k, "--wallet-key") for k in args.wallet_key]
    except (_InputError, PolicyEngineError) as exc:
        sys.stderr.write(safe_line(f"waiaas policy check: {exc}"))
        return EXIT_BAD_INPUT

    try:
        tx: Any = decode_transaction(raw, lookup_tables=resolve_lookup_tables(policy, tables))
    except DecodeError as exc:
        tx = exc
    if not wallet and not isinstance(tx, DecodeError):
        wallet = [tx.fee_payer]
    context = EvalContext(
        now=now,
        # A transaction that does not decode is denied whatever the wallet is; the placeholder key only satisfies
        # EvalContext, which requires one.
        wallet_keys=frozenset(wallet) or frozenset({Pubkey.default()}),
        spent=spent,
        requests_in_window=args.requests,
        denials_in_window=args.denials,
    )
    output = evaluate(policy, tx, context).to_json()
    output["policy"] = {"wallet_id": policy.wallet_id, "sequence": policy.sequence, "source": provenance}
    output["wallet_keys"] = [str(k) for k in sorted(context.wallet_keys, key=bytes)]
    print(json.dumps(output, indent=2))  # ensure_ascii: every control character as \uNNNN
    return EXIT_OK


def _validate(args: argparse.Namespace) -> int:
    try:
        policy, provenance = _load_policy(args.file, args.owner)
    except (_InputError, PolicyEngineError) as exc:
        sys.stderr.write(safe_line(f"waiaas policy validate: {exc}"))
        return EXIT_BAD_INPUT
    sys.stdout.write(safe_line(f"valid: wallet {policy.wallet_id}, sequence {policy.sequence} ({provenance})"))
    return EXIT_OK
