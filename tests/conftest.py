"""Shared fixtures: a throwaway PostgreSQL schema and a Redis key prefix per test.

Services (defaults match CI; override with environment variables):

* ``ASSET_CYCLE_TEST_PG_DSN`` (default ``host=127.0.0.1 port=5432 dbname=test user=postgres``)
* ``ASSET_CYCLE_TEST_REDIS_URL`` (default ``redis://127.0.0.1:6379/0``)

Fixtures:

* ``pg_dsn`` (session): the DSN, after checking PostgreSQL answers (fails with a clear message);
* ``pg_schema``: a new uniquely named schema, dropped (CASCADE) afterwards;
* ``pg_conn``: a fresh psycopg2 connection, search_path = ``pg_schema`` (rolled back and closed
  before the schema is dropped);
* ``table_names``: ``stores.postgres.TableNames`` pointing at ``pg_schema``;
* ``migrated_tables``: ``table_names`` with the migrations applied;
* ``redis_url`` / ``redis_client`` (session): checked connection (``decode_responses=False``);
* ``redis_prefix``: a unique key prefix ``test:<hex>:``; every key under it is deleted afterwards.

Tests using them should carry ``pytestmark = pytest.mark.services``.

When neither variable is set and nothing answers at the default address, the project's own local
servers are started (``cli.local_services``, the same ones ``asset-cycle run`` and CI use).

Every test marked ``flink``, ``kinesis`` or ``cluster`` is bounded by pytest-timeout
(``FLINK_TEST_TIMEOUT_S`` unless it carries its own ``@pytest.mark.timeout``): a job that hangs
fails that one test instead of running into CI's limit. A test that runs a Flink job (in this
process, or ``asset-cycle run`` in a child) without the ``flink`` marker fails: the fast tier
(``-m "not flink and ..."``) must not run jobs.
"""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

DEFAULT_PG_DSN = "host=127.0.0.1 port=5432 dbname=test user=postgres"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
FLINK_TEST_TIMEOUT_S = 900
"""Per-test bound of the tests that run a job (minicluster, Kinesis emulator, cluster): generous, a
slow machine under load passes, a hang does not hold the run."""
BOUNDED_MARKERS = ("flink", "kinesis", "cluster")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Give every test that runs a job a timeout (unless it sets its own)."""
    for item in items:
        if item.get_closest_marker("timeout") is None and any(
                item.get_closest_marker(name) is not None for name in BOUNDED_MARKERS):
            item.add_marker(pytest.mark.timeout(FLINK_TEST_TIMEOUT_S))


_running: dict[str, pytest.Item | None] = {"item": None}


def _refuse_unmarked_job(what: str) -> None:
    item = _running["item"]
    if item is not None and item.get_closest_marker("flink") is None:
        pytest.fail(f"{item.nodeid} runs a Flink job ({what}) but is not marked flink", pytrace=False)


def _audit(event: str, args: tuple) -> None:
    """``asset-cycle run`` started as a child process (``python -m cli run ...``)."""
    if event == "subprocess.Popen" and _running["item"] is not None:
        argv = [str(a) for a in (args[1] if isinstance(args[1], list | tuple) else [args[1]])]
        if any(argv[i:i + 3] == ["-m", "cli", "run"] for i in range(len(argv))):
            _refuse_unmarked_job("asset-cycle run")


def _guard_job_runs() -> None:
    """Wrap PyFlink's job submission so that an unmarked test running a job fails (the modules are
    imported by the test modules that run jobs; others do not need the guard)."""
    env_module = sys.modules.get("pyflink.datastream.stream_execution_environment")
    stream_module = sys.modules.get("pyflink.datastream.data_stream")
    targets = [(getattr(env_module, "StreamExecutionEnvironment", None), ("execute", "execute_async")),
               (getattr(stream_module, "DataStream", None), ("execute_and_collect",))]
    for cls, names in targets:
        for name in names if cls is not None else ():
            original = getattr(cls, name)
            if getattr(original, "_asset_cycle_guarded", False):
                continue

            def guarded(*args: Any, __original: Any = original, __name: str = name, **kwargs: Any) -> Any:
                _refuse_unmarked_job(__name)
                return __original(*args, **kwargs)

            guarded._asset_cycle_guarded = True  # type: ignore[attr-defined]
            setattr(cls, name, guarded)


def pytest_collection_finish(session: pytest.Session) -> None:
    _guard_job_runs()
    sys.addaudithook(_audit)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    _running["item"] = item


@pytest.hookimpl(trylast=True)
def pytest_runtest_teardown(item: pytest.Item) -> None:
    _running["item"] = None


def _start_local(which: str) -> None:
    """Bring up the project's local server for the default test address (no-op when one answers)."""
    from cli.local_services import ServiceError, ensure_postgres, ensure_redis

    try:
        if which == "postgres":
            ensure_postgres("127.0.0.1", 5432, databases=("test",))
        else:
            ensure_redis("127.0.0.1", 6379)
    except ServiceError as exc:
        pytest.fail(f"cannot start the local {which}: {exc}", pytrace=False)


def _unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:16]}"


@pytest.fixture(scope="session")
def pg_dsn() -> str:
    """DSN of the test PostgreSQL; fails the test with a clear message when it is down."""
    import psycopg2

    dsn = os.environ.get("ASSET_CYCLE_TEST_PG_DSN")
    if dsn is None:
        dsn = DEFAULT_PG_DSN
        _start_local("postgres")
    try:
        conn = psycopg2.connect(dsn, connect_timeout=3)
    except psycopg2.Error as exc:
        pytest.fail(
            f"PostgreSQL is not reachable ({dsn!r}): {' '.join(str(exc).split())} -- start it "
            "(CI does) or point ASSET_CYCLE_TEST_PG_DSN at a server",
            pytrace=False,
        )
    conn.close()
    return dsn


@pytest.fixture
def pg_conn(pg_dsn: str, pg_schema: str) -> Iterator[Any]:
    """A psycopg2 connection with ``search_path`` = the test's ``pg_schema``, public.

    It depends on ``pg_schema`` so that it is rolled back and closed before the schema is
    dropped (an open transaction holding locks would otherwise block the DROP).
    """
    import psycopg2
    from psycopg2 import sql

    conn = psycopg2.connect(pg_dsn, connect_timeout=3)
    try:
        with conn.cursor() as cur:
            cur.execute(sql.SQL("SET search_path TO {}, public").format(sql.Identifier(pg_schema)))
        conn.commit()
        yield conn
    finally:
        if not conn.closed:
            conn.rollback()
            conn.close()


@pytest.fixture
def pg_schema(pg_dsn: str) -> Iterator[str]:
    """A fresh, uniquely named schema (``t_<hex>``), dropped with everything in it afterwards."""
    import psycopg2
    from psycopg2 import sql

    name = _unique("t_")
    conn = psycopg2.connect(pg_dsn, connect_timeout=3)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(name)))
        yield name
    finally:
        with conn.cursor() as cur:
            # fail instead of hanging when a test leaked a connection with an open transaction
            cur.execute("SET lock_timeout = '20s'")
            cur.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))
        conn.close()


@pytest.fixture
def table_names(pg_schema: str) -> Any:
    """Default table names inside the throwaway schema."""
    from stores.postgres import TableNames

    return TableNames(schema=pg_schema)


@pytest.fixture
def migrated_tables(pg_dsn: str, table_names: Any) -> Any:
    """``table_names`` after ``asset-cycle db init`` (all migrations applied)."""
    import psycopg2

    from stores.postgres import apply_migrations

    conn = psycopg2.connect(pg_dsn, connect_timeout=3)
    try:
        apply_migrations(conn, table_names)
    finally:
        conn.close()
    return table_names


@pytest.fixture(scope="session")
def redis_url() -> str:
    """URL of the test Redis; fails the test with a clear message when it is down."""
    import redis

    url = os.environ.get("ASSET_CYCLE_TEST_REDIS_URL")
    if url is None:
        url = DEFAULT_REDIS_URL
        _start_local("redis")
    client = redis.Redis.from_url(url, socket_connect_timeout=3, socket_timeout=5)
    try:
        client.ping()
    except redis.RedisError as exc:
        pytest.fail(
            f"Redis is not reachable ({url}): {exc} -- start it (CI does) or point "
            "ASSET_CYCLE_TEST_REDIS_URL at a server",
            pytrace=False,
        )
    finally:
        client.close()
    return url


@pytest.fixture(scope="session")
def redis_client(redis_url: str) -> Iterator[Any]:
    """A session-wide redis.Redis (bytes responses)."""
    import redis

    client = redis.Redis.from_url(redis_url, socket_connect_timeout=3, socket_timeout=5)
    yield client
    client.close()


@pytest.fixture
def redis_prefix(redis_client: Any) -> Iterator[str]:
    """A unique key prefix (``test:<hex>:``); all keys under it are deleted after the test."""
    prefix = _unique("test:") + ":"
    yield prefix
    pattern = prefix.replace("\\", "\\\\").replace("*", "\\*").replace("?", "\\?").replace("[", "\\[") + "*"
    keys = list(redis_client.scan_iter(match=pattern, count=500))
    if keys:
        redis_client.delete(*keys)
