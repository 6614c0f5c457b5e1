"""`asset-cycle serve`: the live operations view (web.server): a read-only HTTP API and one web page over
the job's live tables, on 127.0.0.1:8080 by default.

It reads the same PostgreSQL settings and schema options as ``asset-cycle run`` (``--pg-dsn`` or the
ASSET_CYCLE_PG_* variables / the legacy secret, ``--schema``, ``--table``, or all of them from
``--local-properties FILE``), and the dump regions from the same Redis.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from cli.errors import CliError
from cli.options import add_pg_args, add_table_args, redis_settings_from_args, table_names_from_args
from job.main import table_names
from job.properties import load_settings
from job.settings import load_engine_config, postgres_settings, redis_settings
from state_machine.config import EngineConfig
from stores.connections import postgres_settings_from_env
from web.settings import (
    DEFAULT_HOST,
    DEFAULT_PORT,
    DEFAULT_SHIFT_STARTS,
    DEFAULT_STALE_SITE_S,
    DEFAULT_STALE_TRUCK_S,
    ServeSettings,
    parse_shift_starts,
)

TOKEN_ENV = "ASSET_CYCLE_WEB_TOKEN"


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `serve` sub-command."""
    p = subparsers.add_parser(
        "serve", help="serve the live operations view (web page and read-only HTTP API) over the live tables",
        description="Serve a web page (site map with every truck live, loader board, newest cycles and alerts) "
                    "and a read-only JSON API (OpenAPI schema at /openapi.json) over the job's live tables. "
                    "Read-only: SELECT only, through read-only database sessions. Binds 127.0.0.1 unless --host "
                    f"says otherwise; beyond loopback a bearer token is required (${TOKEN_ENV} or --token-file). "
                    "Ctrl-C stops it.")  # fmt: skip
    p.add_argument("--host", default=DEFAULT_HOST, help=f"address to bind (default {DEFAULT_HOST})")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT}; 0 = any free one)")
    p.add_argument("--token-file", type=Path, metavar="FILE",
                   help=f"file holding the bearer token clients must send (default ${TOKEN_ENV}); required "
                        "when --host is not loopback")  # fmt: skip
    p.add_argument("--tile-url", metavar="TEMPLATE",
                   help="background map tiles, e.g. https://tile.example.org/{z}/{x}/{y}.png (default: none; the "
                        "map shows the site's own geometry)")  # fmt: skip
    p.add_argument("--stale-truck-s", type=float, default=DEFAULT_STALE_TRUCK_S, metavar="S",
                   help="a truck is stale when its newest point is S seconds behind its site's newest point "
                        f"(event time; default {DEFAULT_STALE_TRUCK_S:g})")  # fmt: skip
    p.add_argument("--stale-site-s", type=float, default=DEFAULT_STALE_SITE_S, metavar="S",
                   help="/health answers 503 when a site's newest event is more than S seconds behind the wall "
                        f"clock (default {DEFAULT_STALE_SITE_S:g})")  # fmt: skip
    p.add_argument("--shifts", default=",".join(DEFAULT_SHIFT_STARTS), metavar="HH:MM,...",
                   help=f"shift start times, local to --tz (default {','.join(DEFAULT_SHIFT_STARTS)})")
    p.add_argument("--tz", default="UTC", help="IANA time zone of the shifts (default UTC)")
    add_pg_args(p)
    add_table_args(p)
    p.add_argument("--redis-url", default=os.environ.get("ASSET_CYCLE_REDIS_URL"),
                   help="redis:// URL of the dump regions (default $ASSET_CYCLE_REDIS_URL, else ASSET_CYCLE_REDIS_* "
                        "variables; local 127.0.0.1:6379)")  # fmt: skip
    p.add_argument("--redis-prefix", default=os.environ.get("ASSET_CYCLE_REDIS_PREFIX", ""),
                   help="prefix of the Redis keys (default $ASSET_CYCLE_REDIS_PREFIX or none; the demo's: demo:)")
    p.add_argument("--local-properties", metavar="FILE",
                   help="take PostgreSQL, schema, tables, Redis and thresholds from the job's application "
                        "properties file (as `asset-cycle run --local-properties FILE`), instead of the options above")
    p.add_argument("--config", metavar="ENGINE_JSON", help="engine thresholds JSON (the loaders' radii on the map)")
    p.set_defaults(func=run)


def read_token(path: Path | None) -> str | None:
    """The bearer token from --token-file (stripped), else $ASSET_CYCLE_WEB_TOKEN, else None."""
    if path is None:
        return os.environ.get(TOKEN_ENV) or None
    try:
        token = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise CliError(f"cannot read --token-file {path}: {exc.strerror or exc}") from None
    if not token:
        raise CliError(f"--token-file {path} is empty")
    return token


def serve_settings(args: argparse.Namespace) -> ServeSettings:
    """ServeSettings from the command line (and the properties file, when one is given)."""
    engine = load_engine_config(args.config) if args.config else EngineConfig()
    if args.local_properties:
        app = load_settings(args.local_properties)
        names = table_names(app.sink)
        database: object = postgres_settings(app).connect_kwargs()
        redis, prefix = redis_settings(app), app.reference.redis_key_prefix or args.redis_prefix
        engine = load_engine_config(args.config) if args.config else app.engine
    else:
        names = table_names_from_args(args)
        database = args.pg_dsn or postgres_settings_from_env().connect_kwargs()
        redis, prefix = redis_settings_from_args(args), args.redis_prefix
    return ServeSettings(database=database, names=names, redis=redis, redis_prefix=prefix, engine=engine,
                         host=args.host, port=args.port, token=read_token(args.token_file), tile_url=args.tile_url,
                         stale_truck_s=args.stale_truck_s, stale_site_s=args.stale_site_s,
                         shift_starts=parse_shift_starts(args.shifts), tz=args.tz)  # fmt: skip


def run(args: argparse.Namespace) -> int:
    """Handler of `asset-cycle serve`."""
    # deferred: the web stack (FastAPI, uvicorn, pydantic) loads only when serving
    from web.server import DatabaseUnreachable, LiveServer

    settings = serve_settings(args)
    server = LiveServer(settings)
    try:
        server.open()
    except DatabaseUnreachable as exc:
        raise CliError(f"{exc} (set --pg-dsn, or ASSET_CYCLE_PG_HOST/_PORT/_DB/_USER/_PASSWORD, or "
                       "--local-properties)") from None
    found = server.schemas_with_tables()
    if settings.names.schema not in found:
        elsewhere = f" (tables were found in: {', '.join(found)}; the demo's: --schema demo --redis-prefix demo:)" \
            if found else ""  # fmt: skip
        print(f"asset-cycle serve: warning: schema {settings.names.schema} has no asset-cycle tables yet; the API "
              f"answers 503 until the job creates them{elsewhere}", file=sys.stderr, flush=True)
    print(f"live view: {server.url} (schema {settings.names.schema}"
          + (f", Redis prefix {settings.redis_prefix!r}" if settings.redis_prefix else "")
          + "); API schema: " + server.url + "openapi.json; Ctrl-C stops it", flush=True)
    server.run()
    print("stopped", file=sys.stderr, flush=True)
    return 0
