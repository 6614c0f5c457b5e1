"""`asset-cycle services`: the local PostgreSQL and Redis used by the demo, the tests and CI."""

from __future__ import annotations

import argparse

from cli.errors import CliError
from cli.local_services import ServiceError, ensure_postgres, ensure_redis, is_answering, stop_services


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `services` sub-command."""
    parser = subparsers.add_parser(
        "services",
        help="start, show or stop the local PostgreSQL and Redis",
        description="Local servers for the demo and the tests, bound to 127.0.0.1 with their data in the "
        "project's .services/ folder. 'up' uses a server already answering at the address and starts one "
        "only when none does; 'stop' stops only servers that this command started.",
    )
    parser.add_argument("action", choices=("up", "status", "stop"), help="what to do")
    parser.add_argument("--pg-port", type=int, default=5432, help="PostgreSQL port on 127.0.0.1 (default 5432)")
    parser.add_argument("--redis-port", type=int, default=6379, help="Redis port on 127.0.0.1 (default 6379)")
    parser.add_argument("--database", action="append", default=None, metavar="NAME",
                        help="database to create on a server of ours (repeatable; default: test)")
    parser.set_defaults(func=_services)


def _services(args: argparse.Namespace) -> int:
    try:
        if args.action == "up":
            databases = args.database if args.database is not None else ["test"]
            for status in (ensure_postgres(port=args.pg_port, databases=databases), ensure_redis(port=args.redis_port)):
                print(status.describe())
        elif args.action == "status":
            for name, port in (("PostgreSQL", args.pg_port), ("Redis", args.redis_port)):
                state = "answering" if is_answering("127.0.0.1", port) else "not running"
                print(f"{name} on 127.0.0.1:{port}: {state}")
        else:
            stopped = stop_services(args.pg_port, args.redis_port)
            print("stopped: " + ", ".join(stopped) if stopped else "nothing of ours was running")
    except ServiceError as exc:
        raise CliError(str(exc)) from None
    return 0
