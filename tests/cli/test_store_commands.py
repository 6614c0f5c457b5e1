"""`asset-cycle db` and `asset-cycle seed` against a real PostgreSQL and Redis (and their one-line errors)."""

from __future__ import annotations

import io
from contextlib import redirect_stderr, redirect_stdout

import pytest

from stores import reference as rs
from stores.postgres import TableNames, applied_migrations
from tests.stores.test_reference import SECRET, _normalised, _reference

services = pytest.mark.services


def _cli(*argv: str) -> tuple[int, str, str]:
    from cli.main import main

    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


@services
def test_cli_db_init(pg_dsn: str, pg_conn, pg_schema: str) -> None:
    code, out, _ = _cli("db", "init", "--schema", pg_schema, "--pg-dsn", pg_dsn)
    assert code == 0 and "applied 001_reference" in out
    code, out, _ = _cli("db", "init", "--schema", pg_schema, "--pg-dsn", pg_dsn)
    assert code == 0 and "up to date" in out
    assert applied_migrations(pg_conn, TableNames(schema=pg_schema))
    code, out, _ = _cli("db", "status", "--schema", pg_schema, "--pg-dsn", pg_dsn)
    assert code == 0 and "pending" not in out


def test_cli_db_init_errors() -> None:
    code, _, err = _cli("db", "init", "--pg-dsn", f"postgresql://bob:{SECRET}@127.0.0.1:1/x")
    assert code == 2
    assert "cannot connect to PostgreSQL at 127.0.0.1:1:" in err and SECRET not in err
    code, _, err = _cli("db", "init", "--schema", "dx; DROP SCHEMA public", "--pg-dsn", "host=127.0.0.1")
    assert code == 2 and "invalid schema name" in err
    code, _, err = _cli("db", "init", "--table", "cycle=Bad-Name", "--pg-dsn", "host=127.0.0.1")
    assert code == 2 and "invalid table name" in err


@services
def test_cli_seed(tmp_path, pg_dsn: str, pg_conn, pg_schema: str, redis_client, redis_url: str,
                  redis_prefix: str) -> None:
    from workbench.bundle import write_bundle

    reference, assets = _reference()
    write_bundle(tmp_path, [], reference, assets)
    code, out, err = _cli("seed", str(tmp_path), "--schema", pg_schema, "--pg-dsn", pg_dsn,
                          "--redis-url", redis_url, "--redis-prefix", redis_prefix)
    assert code == 0, err
    assert "applied 001_reference" in out and "seeded 7 assets" in out
    names = TableNames(schema=pg_schema)
    loaded = rs.load_reference_data(pg_conn, redis_client, names, redis_prefix)
    assert _normalised(loaded) == _normalised(reference)
    code, _, err = _cli("seed", str(tmp_path / "missing"), "--schema", pg_schema, "--pg-dsn", pg_dsn)
    assert code == 2 and "not a directory" in err


@services
def test_cli_seed_redis_down(tmp_path, pg_dsn: str, pg_schema: str) -> None:
    from workbench.bundle import write_bundle

    reference, assets = _reference()
    write_bundle(tmp_path, [], reference, assets)
    code, _, err = _cli("seed", str(tmp_path), "--schema", pg_schema, "--pg-dsn", pg_dsn,
                        "--redis-url", f"redis://u:{SECRET}@127.0.0.1:1/0")
    assert code == 2 and "cannot connect to Redis at 127.0.0.1:1" in err and SECRET not in err
