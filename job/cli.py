"""`asset-cycle` command line: one sub-command per module in job.commands.

Each command module exposes ``register(subparsers)`` which adds its parser and sets
``func(args) -> int`` as the handler. Modules are imported lazily by name so a command whose
optional dependencies are missing does not break the others.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from job.errors import CliError

__all__ = ["CliError", "build_parser", "main"]

COMMAND_MODULES = (
    "job.commands.simulate",
    "job.commands.replay",
    "job.commands.score",
    "job.commands.db",
    "job.commands.seed",
    "job.commands.run",
    "job.commands.report",
    "job.commands.produce",
    "job.commands.package",
    "job.commands.msf",
    "job.commands.services",
)


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every available sub-command."""
    parser = argparse.ArgumentParser(prog="asset-cycle", description="Haul-truck cycle tracking on Flink")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:  # the command itself is not there; skip it
                continue
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `asset-cycle` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except CliError as exc:
        print(f"asset-cycle {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
