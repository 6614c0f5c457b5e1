"""`asset-cycle run`: run the Flink job locally (simulated fleet by default, Web UI printed at start)."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `run` sub-command."""
    parser = subparsers.add_parser(
        "run",
        help="run the Flink job on the local minicluster",
        description="Run the cycle job locally. Default: the simulated fleet, reference data seeded into "
        "the local PostgreSQL/Redis, tables created, Flink Web UI on a local port. --source file:PATH "
        "replays a bundle or .jsonl file; --source kinesis reads a stream (needs the connector jar).",
    )
    from job.main import add_run_arguments

    add_run_arguments(parser)
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from job.cli import CliError
    from job.main import JobError, run
    from job.settings import SettingsError

    try:
        return run(args)
    except (JobError, SettingsError) as exc:
        raise CliError(str(exc)) from exc
