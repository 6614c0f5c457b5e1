"""`asset-cycle seed BUNDLE_DIR`: load a bundle's reference data into PostgreSQL and Redis.

Assets and loader positions go to the ``asset``/``asset_info`` tables (created first when
missing), dump regions to the Redis hashes ``{prefix}site:{site_guid}:regions`` (legacy formats).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from cli.errors import CliError
from cli.options import (
    add_pg_args,
    add_table_args,
    pg_connect_from_args,
    redis_connect_from_args,
    table_names_from_args,
)
from stores.postgres import apply_migrations
from stores.reference import seed_reference
from workbench.bundle import BundleError, read_reference


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `seed` sub-command."""
    p = subparsers.add_parser("seed", help="load a bundle's assets/loaders into PostgreSQL and regions into Redis",
                              description=__doc__.splitlines()[0])
    p.add_argument("bundle_dir", type=Path, metavar="BUNDLE_DIR", help="bundle directory (assets.csv, regions.geojson)")
    add_pg_args(p)
    add_table_args(p)
    p.add_argument("--redis-url", default=os.environ.get("ASSET_CYCLE_REDIS_URL"),
                   help="redis:// or rediss:// URL (default $ASSET_CYCLE_REDIS_URL, else ASSET_CYCLE_REDIS_* "
                        "variables or the secret named by REDIS_CREDENTIALS_SECRET_NAME; local 127.0.0.1:6379)")
    p.add_argument("--redis-prefix", default=os.environ.get("ASSET_CYCLE_REDIS_PREFIX", ""),
                   help="prefix of the Redis keys (default $ASSET_CYCLE_REDIS_PREFIX or none)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Read the bundle, run db init when needed, write assets/loaders and regions."""
    names = table_names_from_args(args)
    if not args.bundle_dir.is_dir():
        raise CliError(f"{args.bundle_dir}: not a directory")
    try:
        reference, assets = read_reference(args.bundle_dir)
    except BundleError as exc:
        raise CliError(str(exc)) from None
    conn = pg_connect_from_args(args)
    client = redis_connect_from_args(args)
    try:
        for version in apply_migrations(conn, names):
            print(f"applied {version}")
        summary = seed_reference(conn, client, names, reference, assets, redis_key_prefix=args.redis_prefix)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    finally:
        conn.close()
        client.close()
    print(f"seeded {summary.assets} assets and {summary.loaders} loader positions into schema {names.schema}, "
          f"{summary.regions} regions of {summary.sites} sites into Redis (prefix {args.redis_prefix!r})")
    return 0
