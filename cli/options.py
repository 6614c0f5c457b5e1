"""The PostgreSQL, Redis and table options the commands share, and the connections they open.

Connection failures and bad settings become one-line CliErrors (passwords masked)."""

from __future__ import annotations

import argparse
import os

import redis
from psycopg2.extensions import connection

from cli.errors import CliError
from stores.connections import (
    RedisSettings,
    connect_redis,
    postgres_settings_from_env,
    redis_settings_from_env,
)
from stores.errors import UserError
from stores.postgres import DatabaseUnavailable, IdentifierError, TableNames, connect


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


def table_override(text: str) -> tuple[str, str]:
    """``KIND=NAME`` -> (kind, name), the value of a ``--table`` option."""
    kind, sep, name = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"expected KIND=NAME, got {text!r}")
    return kind.strip(), name.strip()


def add_table_args(parser: argparse.ArgumentParser) -> None:
    """``--schema`` and repeatable ``--table KIND=NAME`` overrides."""
    parser.add_argument("--schema", default=os.environ.get("ASSET_CYCLE_PG_SCHEMA", "dx"),
                        help="PostgreSQL schema of the tables (default $ASSET_CYCLE_PG_SCHEMA or dx)")
    parser.add_argument("--table", action="append", type=table_override, default=[], metavar="KIND=NAME",
                        help="override a table name, e.g. cycle=asset_cycle_vlx (kinds: asset, asset_info, "
                             "cycle_tmp, cycle, process_info, dead_letter, alerts)")


def table_names_from_args(args: argparse.Namespace) -> TableNames:
    """TableNames from --schema/--table; invalid names become a CliError."""
    try:
        return TableNames.from_mapping({"schema": args.schema, **dict(getattr(args, "table", []) or [])})
    except IdentifierError as exc:
        raise CliError(str(exc)) from None


def pg_connect_from_args(args: argparse.Namespace) -> connection:
    """A psycopg2 connection from --pg-dsn or the environment; failures become a CliError."""
    try:
        if args.pg_dsn:
            return connect(args.pg_dsn)
        return postgres_settings_from_env().connect()
    except (DatabaseUnavailable, UserError) as exc:
        raise CliError(str(exc)) from None


def redis_settings_from_args(args: argparse.Namespace) -> RedisSettings:
    """--redis-url, else the environment's Redis (ASSET_CYCLE_REDIS_* or REDIS_CREDENTIALS_SECRET_NAME)."""
    return RedisSettings.from_url(args.redis_url) if args.redis_url else redis_settings_from_env()


def redis_connect_from_args(args: argparse.Namespace) -> redis.Redis:
    """A Redis client that answered PING, from --redis-url or the environment; failures become a CliError."""
    try:
        return connect_redis(redis_settings_from_args(args))
    except UserError as exc:
        raise CliError(str(exc)) from None
