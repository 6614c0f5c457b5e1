"""`asset-cycle run`: run the Flink job locally (simulated fleet by default, Web UI printed at start)."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `run` sub-command."""
    parser = subparsers.add_parser(
        "run",
        help="run the Flink job on the local minicluster",
        description="Run the cycle job locally and report what it does (state changes, progress, a summary at "
        "the end of a bounded input). Default: the demo, a simulated fleet at 30x real time into schema demo, "
        "reference data seeded into the local PostgreSQL/Redis (started when none answers), tables created, "
        "Flink Web UI on 127.0.0.1. --source file:PATH replays a bundle or .jsonl file (schema dx); --source "
        "kinesis reads a stream. Ctrl-C or SIGTERM stops it (with --savepoint-dir: with a savepoint); "
        "--resume continues from the latest retained checkpoint after a crash.",
    )
    from job.main import add_run_arguments

    add_run_arguments(parser)
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from job.main import run

    return run(args)  # its errors are CliErrors: one line, no traceback
