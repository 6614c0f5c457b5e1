"""`asset-cycle db`: create/upgrade the PostgreSQL tables (``db init``) and show their state.

Also the shared PostgreSQL/table-name options for other commands: ``add_pg_args``,
``add_table_args``, ``table_names_from_args`` and ``pg_connect_from_args``.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from job.main import DEMO_REDIS_PREFIX, DEMO_SCHEMA
from stores.postgres import TABLE_KINDS, TableNames


def add_pg_args(parser: argparse.ArgumentParser) -> None:
    """``--pg-dsn`` (default $ASSET_CYCLE_PG_DSN, else the ASSET_CYCLE_PG_* variables or the
    legacy PGSQL_CREDENTIALS_SECRET_NAME secret)."""
    parser.add_argument(
        "--pg-dsn",
        default=os.environ.get("ASSET_CYCLE_PG_DSN"),
        help="libpq DSN or postgresql:// URI (default $ASSET_CYCLE_PG_DSN, else ASSET_CYCLE_PG_HOST/PORT/DB/"
             "USER/PASSWORD/SSLMODE or the secret named by PGSQL_CREDENTIALS_SECRET_NAME; local default "
             "127.0.0.1:5432 db postgres user postgres)",
    )


def _table_override(text: str) -> tuple[str, str]:
    kind, sep, name = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"expected KIND=NAME, got {text!r}")
    return kind.strip(), name.strip()


def add_table_args(parser: argparse.ArgumentParser) -> None:
    """``--schema`` and repeatable ``--table KIND=NAME`` overrides."""
    parser.add_argument("--schema", default=os.environ.get("ASSET_CYCLE_PG_SCHEMA", "dx"),
                        help="PostgreSQL schema of the tables (default $ASSET_CYCLE_PG_SCHEMA or dx)")
    parser.add_argument("--table", action="append", type=_table_override, default=[], metavar="KIND=NAME",
                        help="override a table name, e.g. cycle=asset_cycle_vlx (kinds: asset, asset_info, "
                             "cycle_tmp, cycle, process_info, dead_letter, alerts)")


def table_names_from_args(args: argparse.Namespace) -> TableNames:
    """TableNames from --schema/--table; invalid names become a CliError."""
    from job.cli import CliError
    from stores.postgres import IdentifierError

    try:
        return TableNames.from_mapping({"schema": args.schema, **dict(getattr(args, "table", []) or [])})
    except IdentifierError as exc:
        raise CliError(str(exc)) from None


def pg_connect_from_args(args: argparse.Namespace) -> Any:
    """A psycopg2 connection from --pg-dsn or the environment; failures become a CliError."""
    from job.cli import CliError
    from stores.connections import postgres_settings_from_env
    from stores.errors import SettingsError
    from stores.postgres import DatabaseUnavailable, connect

    try:
        if args.pg_dsn:
            return connect(args.pg_dsn)
        return postgres_settings_from_env().connect()
    except (DatabaseUnavailable, SettingsError) as exc:
        raise CliError(str(exc)) from None


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
    reset.add_argument("--table", action="append", type=_table_override, default=[], metavar="KIND=NAME",
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
    from stores.postgres import apply_migrations

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
    from stores.postgres import applied_migrations, migration_files

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
    from job.cli import CliError
    from job.commands.seed import _redis_client
    from stores.postgres import reset_schema, table_exists
    from stores.reference import delete_region_keys, region_keys

    names = table_names_from_args(args)
    prefix = args.redis_prefix if args.redis_prefix is not None else (
        DEMO_REDIS_PREFIX if names.schema == DEMO_SCHEMA else "")  # fmt: skip
    conn = pg_connect_from_args(args)
    client = _redis_client(args)
    try:
        if not args.yes:
            tables = [f"{names.schema}.{names.table_name(k)}" for k in TABLE_KINDS if table_exists(conn, names, k)]
            keys = region_keys(client, prefix)
            print(f"would drop {len(tables)} table(s) in schema {names.schema}"
                  + (f" ({', '.join(tables)})" if tables else "")
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
