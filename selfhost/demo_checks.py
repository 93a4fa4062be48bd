"""The owner's own checks in ``waiaas demo`` (`selfhost.demo`), run with the commands an owner types.

- `verify_order_as_owner`: ``waiaas owner verify-order`` on the three files an owner keeps after an order (their
  own signed order as they sent it, the proxy's answer, a ``GET /v1/attestation`` answer fetched afterwards): the
  enclave's order receipt in the answer must verify under the session key and be about that very order. Self-hosted,
  the attestation mode is ``none``, so the command needs ``--accept-unattested`` and says that the key is the
  signer's word (it shows which signer boot applied the order, not what code ran).
- `verify_audit`: ``waiaas audit verify --receipts`` on the stopped services' log.

Both run the commands' own parser and code in this process and raise `StepFailed` unless they exit 0, so the demo
fails when a check does. What they print comes from the parent's answers: it is quoted with its control characters
escaped (`policies.terminal_text`).
"""

from __future__ import annotations

import argparse
import io
import json
import textwrap
from collections.abc import Callable, Mapping
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Any, Final

from solders.pubkey import Pubkey

from parent_proxy import audit_cli, owner_cli
from parent_proxy.owner_cli_common import EXIT_OK
from policies.terminal_text import terminal_safe

WIDTH: Final = 104
"""Where the demo wraps a long result line (its column of labels is 14 characters wide)."""
LABEL: Final = 14


class StepFailed(Exception):
    """A step did not behave as the script expects."""


def _wrapped(label: str, text: str, out: Callable[[str], None]) -> None:
    """``text`` (escaped) under ``label``, wrapped to `WIDTH`, continuation lines aligned with the first."""
    lines = textwrap.wrap(terminal_safe(text), width=WIDTH - LABEL, break_on_hyphens=False) or [""]
    out(f"   {label:<{LABEL - 3}}{lines[0]}")
    for line in lines[1:]:
        out(f"{'':<{LABEL}}{line}")


def _owner_command(argv: list[str]) -> tuple[int, str, str]:
    """``waiaas owner ARGV``, parsed and run by the owner CLI's own code; its exit code, stdout and stderr."""
    parser = argparse.ArgumentParser(prog="waiaas")
    owner_cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["owner", *argv])
    stdout, stderr = io.StringIO(), io.StringIO()
    with redirect_stdout(stdout), redirect_stderr(stderr):
        code = owner_cli.run(args)
    return code, stdout.getvalue().strip(), stderr.getvalue().strip()


def verify_order_as_owner(
    directory: Path,
    *,
    owner_public_key: Pubkey,
    order_body: Mapping[str, Any],
    answer: bytes,
    attestation: bytes,
    out: Callable[[str], None],
) -> None:
    """Keep the owner's three files in ``directory`` (``order.json``: the request body the owner sent, with their
    signed order; ``answer.json``: the proxy's answer, as received; ``attestation.json``: the attestation answer),
    then ``waiaas owner verify-order`` on them; `StepFailed` unless it exits 0."""
    directory.mkdir(mode=0o700, exist_ok=True)
    files = {"order": directory / "order.json", "answer": directory / "answer.json"}
    files["attestation"] = directory / "attestation.json"
    files["order"].write_text(json.dumps(order_body, indent=2) + "\n", encoding="utf-8")
    files["answer"].write_bytes(answer)
    files["attestation"].write_bytes(attestation)
    argv = [
        "verify-order", "--answer", str(files["answer"]), "--order", str(files["order"]),
        "--owner-public-key", str(owner_public_key), "--attestation", str(files["attestation"]), "--accept-unattested",
    ]  # fmt: skip
    out(f"   files      in {directory}:")
    out("              order.json (the owner's signed order, as sent), answer.json (the proxy's answer),")
    out("              attestation.json (GET /v1/attestation, fetched after the order)")
    out("   command    waiaas owner verify-order --answer answer.json --order order.json --attestation")
    out("              attestation.json --owner-public-key <owner> --accept-unattested")
    code, stdout, stderr = _owner_command(argv)
    if stdout:
        _wrapped("result", stdout, out)
    for line in stderr.splitlines():  # the mode-none warning; on failure, why
        _wrapped("note" if line.startswith("WARNING: ") else "refused", line.removeprefix("WARNING: "), out)
    if code != EXIT_OK:
        raise StepFailed(f"verify-order exited with {code}: nothing shows that the signer applied this order")


def verify_audit(database: Path, out: Callable[[str], None]) -> None:
    """``waiaas audit verify --db <database> --receipts``, the same code; raise `StepFailed` unless the chain is
    intact and every receipt verifies under the session key recorded before it (mode none here: nothing attests
    those keys, and the command says so)."""
    parser = argparse.ArgumentParser(prog="waiaas")  # the command's own parser: its options and defaults, as typed
    audit_cli.register(parser.add_subparsers(dest="command", required=True))
    code = audit_cli.run_verify(parser.parse_args(["audit", "verify", "--db", str(database), "--receipts"]))
    if code != audit_cli.EXIT_OK:
        raise StepFailed(f"audit verify exited with {code}")
    out(f"   audit      chain intact in {database}")
    out("   receipts   every enclave receipt verifies under the session key recorded before it (mode none: that")
    out("              key is not attested, so this shows which signer boot decided, not what code ran)")
