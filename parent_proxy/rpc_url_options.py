"""``--rpc-url URL`` and ``--rpc-url-file FILE``: the Solana JSON-RPC endpoint of ``waiaas selfhost up`` and of the
owner commands that read the chain (``check-multisig``, ``rotation-transaction``, ``advance-nonce-transaction``).

Providers put their API key in the URL (a path such as ``/v2/KEY``, a query such as ``?api-key=KEY``, or user info),
and a command-line argument can be read by every local user in /proc/PID/cmdline for as long as the command runs
(``waiaas selfhost up`` runs for days) and stays in shell history: the reason ``--mfa-code`` is not taken. So:

- ``--rpc-url-file FILE``: the URL is the file's first line, surrounding whitespace dropped (a regular file or a
  pipe, ``--rpc-url-file <(pass show rpc)``; a warning if group or others may read it), read as a passphrase file
  is (`parent_proxy.owner_keyfile.read_secret_line`). Exclusive with ``--rpc-url``.
- ``--rpc-url URL`` still works, with a warning on stderr when the URL has user info, a path beyond ``/`` or a
  query, naming which of them and never showing them.

Either way the URL must pass the one rule for an RPC endpoint (`parent_proxy.rpc_urls.rpc_url_refusal`); a refusal
raises ``ValueError`` naming the option, never the URL.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

from parent_proxy.owner_keyfile import read_secret_line
from parent_proxy.owner_signers import OwnerKeyError
from parent_proxy.rpc_urls import rpc_url_refusal

URL_FILE_OPTION = "--rpc-url-file"


def add_rpc_url_arguments(group: argparse._ActionsContainer, *, what: str) -> None:
    """``--rpc-url-file FILE`` and ``--rpc-url URL`` in ``group`` (a mutually exclusive group of the command's);
    ``what`` ends the help of each."""
    group.add_argument(
        URL_FILE_OPTION, type=Path, help=f"file whose first line is the Solana JSON-RPC URL: {what} (never printed)"
    )
    group.add_argument(
        "--rpc-url", help=f"Solana JSON-RPC URL: {what} (never printed; other local users can read a command line: "
        f"give a URL with an API key in a file, {URL_FILE_OPTION})",
    )  # fmt: skip


def exposed_parts(url: str) -> list[str]:
    """Which parts of ``url`` can hold a provider's key: ``user info``, ``path``, ``query`` (named, never shown)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return []  # refused by the rule anyway
    found = []
    if "@" in parts.netloc:
        found.append("user info")
    if parts.path not in ("", "/"):
        found.append("path")
    if parts.query:
        found.append("query")
    return found


def command_line_warning(url: str) -> str | None:
    """The warning for ``--rpc-url url`` (module docstring), or None when nothing in it can hold a key."""
    parts = exposed_parts(url)
    if not parts:
        return None
    return (
        f"--rpc-url has a {' and a '.join(parts)}, where providers put API keys: other local users can read a "
        "command line (/proc/PID/cmdline) while the command runs, and shell history keeps it; put the URL in a file "
        f"only you can read and give {URL_FILE_OPTION} FILE instead"
    )


def read_url_file(path: Path, warn: Callable[[str], None]) -> str:
    """The URL in ``path`` (module docstring); ``ValueError`` if the file cannot be read or its first line is empty
    or not UTF-8."""
    try:
        line = read_secret_line(path, URL_FILE_OPTION, warn)
    except OwnerKeyError as exc:  # KeyFileError: names the file and the reason, never the content
        raise ValueError(str(exc)) from None
    try:
        url = line.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise ValueError(f"{URL_FILE_OPTION} {path}: the first line is not UTF-8 text") from None
    if not url:
        raise ValueError(f"{URL_FILE_OPTION} {path}: the first line is empty")
    return url


def rpc_url_option(url: str | None, url_file: Path | None, warn: Callable[[str], None]) -> str | None:
    """The endpoint given by ``--rpc-url`` or ``--rpc-url-file`` (None when neither), checked by the RPC rule;
    ``warn`` gets the warnings (module docstring). ``ValueError`` when both are given or the URL is refused."""
    if url is not None and url_file is not None:
        raise ValueError(f"give --rpc-url or {URL_FILE_OPTION}, not both")
    if url_file is not None:
        option, url = f"{URL_FILE_OPTION} {url_file}: the URL", read_url_file(url_file, warn)
    elif url is not None:
        option = "--rpc-url"
    else:
        return None
    refusal = rpc_url_refusal(url)
    if refusal is not None:
        raise ValueError(f"{option} {refusal}")
    warning = None if url_file is not None else command_line_warning(url)
    if warning is not None:
        warn(warning)
    return url
