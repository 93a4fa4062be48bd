"""The ``waiaas`` console command.

`policies` may not import the services, so subcommands are plugged in through the ``waiaas.commands`` entry-point
group (see pyproject.toml): each entry names a ``register(subparsers)`` function that adds one subcommand and sets
``func`` on its parser. ``func(args)`` returns the process exit code.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from importlib.metadata import entry_points

ENTRY_POINT_GROUP = "waiaas.commands"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="waiaas", description="WAIaaS: policy-checked signing for AI agents.")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for entry in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        entry.load()(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
