"""`asset-cycle` command line: one sub-command per module of cli.commands.

Each command module exposes ``register(subparsers)``, which adds its parser and sets
``func(args) -> int`` as the handler. A UserError (cli.errors.CliError, stores.errors.SettingsError,
job.main.JobError, ...) is reported as one line, exit code 2.
"""

from __future__ import annotations

import argparse
import sys
from importlib.metadata import PackageNotFoundError, version

from cli.commands import (
    cluster,
    db,
    msf,
    package,
    produce,
    replay,
    report,
    run,
    score,
    seed,
    serve,
    services,
    simulate,
)
from stores.errors import UserError

COMMANDS = (simulate, replay, score, db, seed, run, serve, cluster, report, produce, package, msf, services)
"""In the order ``asset-cycle --help`` lists them."""


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every sub-command."""
    parser = argparse.ArgumentParser(
        prog="asset-cycle",
        description="Haul-truck cycle tracking on Apache Flink: run the job locally (a simulated fleet by default), "
                    "replay and score bundles, manage the tables, build reports, deploy to MSF.",
        epilog="`asset-cycle COMMAND --help` describes a command.")  # fmt: skip
    parser.add_argument("--version", action="version", version=f"%(prog)s {package_version()}",
                        help="print the version and exit")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.register(sub)
    _describe_commands(parser)
    return parser


def _describe_commands(parser: argparse.ArgumentParser) -> None:
    """A (sub-)command without a description of its own is described by its one-line help."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: choice.help for choice in action._choices_actions}
            for name, sub in action.choices.items():
                if not sub.description and helps.get(name):
                    sub.description = helps[name][0].upper() + helps[name][1:] + "."
                _describe_commands(sub)


def package_version() -> str:
    """The installed asset-cycle version (pyproject.toml's)."""
    try:
        return version("asset-cycle")
    except PackageNotFoundError:
        return "unknown (not installed)"


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `asset-cycle` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except UserError as exc:
        print(f"asset-cycle {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
