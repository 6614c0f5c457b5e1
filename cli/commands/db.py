"""`asset-cycle db`: create/upgrade the PostgreSQL tables (``db init``), show their state, reset them."""

from __future__ import annotations

import argparse
import os

from cli.errors import CliError
from cli.options import (
    add_pg_args,
    add_table_args,
    pg_connect_from_args,
    redis_connect_from_args,
    table_names_from_args,
    table_override,
)
from cli.run_plan import DEMO_REDIS_PREFIX, DEMO_SCHEMA
from stores.postgres import (
    TABLE_KINDS,
    VIEW_KINDS,
    applied_migrations,
    apply_migrations,
    migration_files,
    reset_schema,
    table_exists,
)
from stores.reference import delete_region_keys, region_keys


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `db` sub-command (init, status, reset)."""
    p = subparsers.add_parser("db", help="create/upgrade the PostgreSQL tables",
                              description="Manage the asset-cycle tables (legacy dx.* layout).")
    sub = p.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    init = sub.add_parser("init", help="apply pending migrations (idempotent)",
                          description="Create the schema and tables; safe to run repeatedly.")
    add_pg_args(init)
    add_table_args(init)
    init.set_defaults(func=run_init)
    status = sub.add_parser("status", help="list applied and pending migrations")
    add_pg_args(status)
    add_table_args(status)
    status.set_defaults(func=run_status)
    reset = sub.add_parser(
        "reset", help="remove a schema's tables and the matching Redis region keys",
        description="Drop the asset-cycle tables of a schema (the demo's by default) and delete the sites' "
                    "region hashes under the Redis key prefix; the next run starts empty. Without --yes it only "
                    "says what it would remove.")  # fmt: skip
    add_pg_args(reset)
    reset.add_argument("--schema", default=DEMO_SCHEMA, help=f"schema to empty (default {DEMO_SCHEMA}, the demo's)")
    reset.add_argument("--table", action="append", type=table_override, default=[], metavar="KIND=NAME",
                       help="a table name that differs from the default (repeatable, as for db init)")
    reset.add_argument("--redis-prefix", default=None,
                       help=f"Redis key prefix of the region hashes to delete (default {DEMO_REDIS_PREFIX!r} for "
                            "schema demo, none otherwise)")
    reset.add_argument("--redis-url", default=os.environ.get("ASSET_CYCLE_REDIS_URL"),
                       help="redis:// URL (default $ASSET_CYCLE_REDIS_URL, else ASSET_CYCLE_REDIS_* or 127.0.0.1:6379)")
    reset.add_argument("--yes", action="store_true", help="really remove them")
    reset.set_defaults(func=run_reset)


def run_init(args: argparse.Namespace) -> int:
    """Apply pending migrations and print what was applied."""
    names = table_names_from_args(args)
    conn = pg_connect_from_args(args)
    try:
        applied = apply_migrations(conn, names)
    finally:
        conn.close()
    if applied:
        for version in applied:
            print(f"applied {version}")
    else:
        print(f"schema {names.schema}: up to date")
    return 0


def run_status(args: argparse.Namespace) -> int:
    """Print each migration as applied or pending; exit 1 when some are pending."""
    names = table_names_from_args(args)
    conn = pg_connect_from_args(args)
    try:
        done = set(applied_migrations(conn, names))
    finally:
        conn.close()
    pending = 0
    for path in migration_files():
        state = "applied" if path.stem in done else "pending"
        pending += state == "pending"
        print(f"{state:8} {path.stem}")
    return 1 if pending else 0


def run_reset(args: argparse.Namespace) -> int:
    """Drop a schema's tables and delete the matching Redis keys (``--yes``), or say what that would do."""
    names = table_names_from_args(args)
    prefix = args.redis_prefix if args.redis_prefix is not None else (
        DEMO_REDIS_PREFIX if names.schema == DEMO_SCHEMA else "")  # fmt: skip
    conn = pg_connect_from_args(args)
    client = redis_connect_from_args(args)
    try:
        if not args.yes:
            tables = [f"{names.schema}.{names.table_name(k)}" for k in TABLE_KINDS if table_exists(conn, names, k)]
            views = [f"{names.schema}.{names.table_name(k)}" for k in VIEW_KINDS if table_exists(conn, names, k)]
            keys = region_keys(client, prefix)
            print(f"would drop {len(tables)} table(s) and {len(views)} view(s) in schema {names.schema}"
                  + (f" ({', '.join(tables + views)})" if tables or views else "")
                  + f" and delete {len(keys)} Redis key(s) {prefix}site:*:regions")  # fmt: skip
            raise CliError("nothing removed: add --yes to remove them")
        dropped = reset_schema(conn, names)
        deleted = delete_region_keys(client, prefix)
    finally:
        conn.close()
        client.close()
    print(f"dropped {len(dropped)} object(s) of schema {names.schema}"
          + (f" ({', '.join(dropped)})" if dropped else "") + f"; deleted {deleted} Redis key(s) {prefix}site:*:regions")
    return 0
