"""`asset-cycle report`: KPIs (kpis.csv) and an HTML page with plots of the closed cycles of a window.

The work is done by ``report.build_report``; this module parses options, connects to
PostgreSQL (required) and Redis (optional: without it the map has no regions) and prints a summary.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import psycopg2
import psycopg2.errors
import redis

from cli.errors import CliError
from cli.options import (
    add_pg_args,
    add_table_args,
    pg_connect_from_args,
    redis_settings_from_args,
    table_names_from_args,
)
from stores.connections import connect_redis
from stores.errors import UserError


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `report` sub-command."""
    p = subparsers.add_parser(
        "report", help="write an HTML report and kpis.csv of the closed cycles of a time window",
        description="Read the closed cycles whose load started in [--from, --to) from the final cycle table "
                    "and write DIR/index.html (KPIs, plots, site map) and DIR/kpis.csv.",
    )
    p.add_argument("--from", dest="start", required=True, metavar="ISO",
                   help="window start, ISO 8601 (e.g. 2024-01-15T06:00Z); no offset = in --tz")
    p.add_argument("--to", dest="end", required=True, metavar="ISO", help="window end (exclusive), ISO 8601")
    p.add_argument("--site", help="only this site_guid (default: all sites)")
    p.add_argument("--out", required=True, type=Path, metavar="DIR", help="output directory (created)")
    p.add_argument("--tz", default="UTC",
                   help="IANA time zone for shifts, hourly bins and times without offset (default UTC)")
    p.add_argument("--bundle", type=Path, metavar="DIR",
                   help="telemetry bundle: draw sampled truck tracks of the window on the map")
    p.add_argument("--no-map", action="store_true", help="skip the site map (no Redis needed)")
    add_pg_args(p)
    add_table_args(p)
    p.add_argument("--redis-url", default=os.environ.get("ASSET_CYCLE_REDIS_URL"),
                   help="redis:// URL for the dump regions (default $ASSET_CYCLE_REDIS_URL, else "
                        "ASSET_CYCLE_REDIS_* variables; local 127.0.0.1:6379)")
    p.add_argument("--redis-prefix", default=os.environ.get("ASSET_CYCLE_REDIS_PREFIX", ""),
                   help="prefix of the Redis keys (default $ASSET_CYCLE_REDIS_PREFIX or none)")
    p.set_defaults(func=run)


def _redis_or_none(args: argparse.Namespace) -> tuple[redis.Redis | None, str | None]:
    """A pinged redis.Redis, or (None, reason) when it cannot be reached (the map is optional)."""
    try:
        return connect_redis(redis_settings_from_args(args)), None
    except UserError as exc:
        return None, str(exc)


def run(args: argparse.Namespace) -> int:
    """Handler of `asset-cycle report`."""
    # deferred: pandas and matplotlib take about a second to import, and only this command needs them
    from report import ReportError, ReportRequest, build_report, parse_time

    names = table_names_from_args(args)
    try:
        request = ReportRequest(start=parse_time(args.start, args.tz), end=parse_time(args.end, args.tz),
                                out_dir=args.out, site=args.site, tz=args.tz, bundle=args.bundle,
                                redis_prefix=args.redis_prefix)
    except ReportError as exc:
        raise CliError(str(exc)) from None
    if args.bundle is not None and not args.bundle.is_dir():
        raise CliError(f"--bundle {args.bundle}: not a directory")
    conn = pg_connect_from_args(args)
    client, problem = (None, None) if args.no_map else _redis_or_none(args)
    try:
        result = build_report(conn, client, names, request, with_map=not args.no_map, redis_problem=problem)
    except psycopg2.errors.UndefinedTable as exc:
        raise CliError(f"{' '.join(str(exc).split())} (schema {names.schema}: run `asset-cycle db init` "
                       "and `asset-cycle run` first)") from None
    except psycopg2.Error as exc:
        raise CliError(f"PostgreSQL error: {' '.join(str(exc).split())}") from None
    except ReportError as exc:
        raise CliError(str(exc)) from None
    except OSError as exc:
        raise CliError(f"cannot write the report to {args.out}: {exc}") from None
    finally:
        conn.close()
        if client is not None:
            client.close()
    for text in result.warnings:
        print(f"asset-cycle report: warning: {text}", file=sys.stderr)
    where = f"site {args.site}" if args.site else "all sites"
    window = f"{request.start.isoformat()} to {request.end.isoformat()}"
    if result.cycles == 0:
        print(f"no closed cycles for {where} from {window} in {names.schema}.{names.cycle}; "
              f"wrote an empty report to {result.index_html}")
    else:
        print(f"{result.cycles:,} cycles for {where} from {window}: wrote {result.index_html}, "
              f"{result.kpis_csv} and {len(result.images)} plots")
    return 0
