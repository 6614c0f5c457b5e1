"""Security review checks (SECURITY.md): parametrised SQL, TLS plumbing, secrets kept out of logs,
errors and the dead-letter table, and a hash-pinned lock of the runtime dependencies.

(The IAM least-privilege checks of the deploy template are in tests/deploy/test_cloudformation.py.)
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ("job", "cli", "stores", "report", "web", "udfs", "state_machine", "deploy")
"""The packages pyproject ships (bench/ and tests/ are developer tools, not shipped)."""
EXECUTORS = {"execute", "executemany", "execute_values", "execute_batch", "mogrify", "copy_expert", "execute_sql"}
ALLOWED = {
    # COPY cannot take parameters: the inner SELECT was bound by cursor.mogrify() with %s parameters
    ("report/fetch.py", "copy_expert"): "COPY around a mogrify()-bound SELECT",
    # Flink SQL DDL, not PostgreSQL: identifiers are validated (TableNames, _IDENT), option values
    # escaped (sinks._escape; tested below); the DDL holds the password and is never logged
    ("job/sinks.py", "execute_sql"): "Flink DDL of the JDBC sinks",
    ("job/sources.py", "execute_sql"): "Flink DDL of the datagen ticker (constant name, int rate)",
}
TEST_PG_PASSWORD = "pg-Sup3r$ecret-7f1c"
TEST_REDIS_PASSWORD = "redis-Sup3r$ecret-91ab"


# --------------------------------------------------------------------------- SQL


def _sql_argument(call: ast.Call, name: str) -> ast.expr | None:
    if name in ("execute_values", "execute_batch"):
        return call.args[1] if len(call.args) > 1 else None
    return call.args[0] if call.args else None


def _composed(node: ast.expr) -> bool:
    """Whether an expression is a psycopg2.sql composition (``sql.SQL(..)[.join(..)...]``)."""
    while True:
        if isinstance(node, ast.Call):
            func = node.func
            if (isinstance(func, ast.Attribute) and func.attr in ("SQL", "Composed")) or (
                    isinstance(func, ast.Name) and func.id in ("SQL", "Composed")):
                return True
            node = func
        elif isinstance(node, ast.Attribute):
            node = node.value
        else:
            return False


def _string_built(node: ast.expr) -> bool:
    """f-string, ``"..." % x``, ``"..." + x`` or ``"...".format(...)`` (psycopg2.sql composition allowed)."""
    if isinstance(node, ast.JoinedStr):
        return True
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Mod, ast.Add)):
        return True
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "format":
        return not _composed(node.func.value)
    return False


def find_string_built_sql(root: Path = ROOT) -> list[str]:
    """``path:line call`` of every execute-like call whose SQL is built with string operations."""
    found = []
    for package in SHIPPED:
        for path in sorted((root / package).rglob("*.py")):
            rel = path.relative_to(root).as_posix()
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if not isinstance(node, ast.Call):
                    continue
                func = node.func
                name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
                if name not in EXECUTORS or (rel, name) in ALLOWED:
                    continue
                arg = _sql_argument(node, name)
                if arg is not None and _string_built(arg):
                    found.append(f"{rel}:{node.lineno} {name}({ast.unparse(arg)[:60]})")
    return found


def test_all_sql_is_parametrised_or_composed_with_psycopg2_sql():
    assert find_string_built_sql() == []


def test_the_scanner_catches_string_built_sql(tmp_path):
    pkg = tmp_path / "job"
    pkg.mkdir()
    (pkg / "bad.py").write_text(
        "def f(cur, t, x):\n"
        "    cur.execute(f'SELECT * FROM {t}')\n"
        "    cur.execute('SELECT * FROM t WHERE a = %s' % x)\n"
        "    cur.execute('SELECT * FROM {}'.format(t))\n"
        "    cur.execute(sql.SQL('SELECT * FROM {}').format(sql.Identifier(t)))\n"
        "    cur.execute('SELECT * FROM t WHERE a = %s', (x,))\n"
    )
    assert [f.split()[0] for f in find_string_built_sql(tmp_path)] == ["job/bad.py:2", "job/bad.py:3", "job/bad.py:4"]


def test_static_migrations_have_no_string_interpolation():
    """The .sql migrations are static DDL; only psycopg2.sql {placeholders} for identifiers."""
    for path in sorted((ROOT / "sql").glob("*.sql")):
        text = path.read_text(encoding="utf-8")
        assert "%(" not in text and "%s" not in text, path.name
        braces = re.findall(r"\{[^{}]*\}", text)
        assert braces and all(re.fullmatch(r"\{[a-z_]+\}", b) for b in braces), path.name  # identifiers only


def test_sink_statements_are_composed_from_validated_identifiers():
    from job.sinks import JdbcTarget, sink_spec
    from stores.postgres import TableNames

    spec = sink_spec("cycle", TableNames(schema="dx"), JdbcTarget("jdbc:postgresql://h/db", "u", "x', 'a' = 'b"))
    assert "x'" not in spec.upsert_sql and spec.upsert_sql.count("?") == len(spec.null_types)
    with pytest.raises(ValueError):
        TableNames(schema="dx; DROP TABLE x")


# --------------------------------------------------------------------------- TLS


def test_postgres_tls_options_reach_psycopg2_and_the_jdbc_url():
    from job.settings import AppSettings, SinkSettings, postgres_settings
    from stores.connections import PostgresSettings, jdbc_url_with_tls

    env = {"ASSET_CYCLE_PG_HOST": "db.example", "ASSET_CYCLE_PG_SSLMODE": "verify-full",
           "ASSET_CYCLE_PG_SSLROOTCERT": "/etc/ssl/rds-ca.pem", "ASSET_CYCLE_PG_PASSWORD": TEST_PG_PASSWORD}
    pg = PostgresSettings.from_env(env)
    kwargs = pg.connect_kwargs()
    assert kwargs["sslmode"] == "verify-full" and kwargs["sslrootcert"] == "/etc/ssl/rds-ca.pem"
    assert pg.jdbc_url() == "jdbc:postgresql://db.example:5432/postgres?sslmode=verify-full&sslrootcert=%2Fetc%2Fssl%2Frds-ca.pem"
    assert TEST_PG_PASSWORD not in pg.jdbc_url() and TEST_PG_PASSWORD not in repr(pg)
    # SinkConfig.jdbc.url without TLS parameters gets the service settings' ones (was: plain JDBC
    # while psycopg2 used TLS); explicit URL parameters win
    assert jdbc_url_with_tls("jdbc:postgresql://db:5432/x", pg).endswith("?sslmode=verify-full&sslrootcert=%2Fetc%2Fssl%2Frds-ca.pem")
    assert jdbc_url_with_tls("jdbc:postgresql://db:5432/x?sslmode=require", pg) == (
        "jdbc:postgresql://db:5432/x?sslmode=require&sslrootcert=%2Fetc%2Fssl%2Frds-ca.pem")
    # ... and the URL's own TLS parameters reach psycopg2
    settings = AppSettings(sink=SinkSettings(jdbc_url="jdbc:postgresql://db:5432/x?sslmode=verify-ca&sslrootcert=/ca.pem"))
    from_url = postgres_settings(settings, environ={})
    assert (from_url.sslmode, from_url.sslrootcert) == ("verify-ca", "/ca.pem")
    # secrets default to TLS required
    secret = PostgresSettings.from_secret_value({"host": "h", "dbname": "d", "username": "u", "password": "p"})
    assert secret.sslmode == "require"


def test_redis_tls_options_reach_the_client():
    import redis

    from job.settings import AppSettings, ReferenceSettings, redis_settings
    from stores.connections import RedisSettings

    rs = RedisSettings.from_env({"ASSET_CYCLE_REDIS_TLS": "true", "ASSET_CYCLE_REDIS_TLS_CA": "/ca.pem",
                                 "ASSET_CYCLE_REDIS_PASSWORD": TEST_REDIS_PASSWORD})
    pool = rs.client().connection_pool
    assert pool.connection_class is redis.SSLConnection
    assert pool.connection_kwargs["ssl_ca_certs"] == "/ca.pem"
    assert TEST_REDIS_PASSWORD not in repr(rs)
    # ReferenceConfig redis.tls turns TLS on whatever the environment says
    settings = AppSettings(reference=ReferenceSettings(redis_host="cache.example", redis_tls=True))
    assert redis_settings(settings, environ={}).tls is True


# --------------------------------------------------------------------------- secrets


def test_secrets_are_masked_in_errors_and_reprs():
    from job.sinks import JdbcTarget
    from stores.connections import PostgresSettings, RedisSettings, mask_url

    assert TEST_PG_PASSWORD not in repr(JdbcTarget("jdbc:postgresql://h/d", "u", TEST_PG_PASSWORD))
    assert TEST_PG_PASSWORD not in mask_url(f"jdbc:postgresql://h/d?user=u&password={TEST_PG_PASSWORD}")
    assert TEST_PG_PASSWORD not in str(PostgresSettings(password=TEST_PG_PASSWORD))
    assert TEST_REDIS_PASSWORD not in str(RedisSettings(password=TEST_REDIS_PASSWORD))


@pytest.mark.flink
@pytest.mark.services
@pytest.mark.slow
def test_job_run_never_shows_the_passwords(tmp_path, pg_dsn, pg_schema, redis_prefix):
    """``asset-cycle run`` with passwords in the environment: not in its output, not in the
    dead-letter table; a wrong Redis password fails with a message that does not contain it."""
    import psycopg2
    from psycopg2 import sql

    from cli.local_services import redis_server_binary
    from tests.job.flink_harness import pg_params
    from tests.job.reliability_support import free_port
    from workbench.simulator import SimulationSpec, write_simulation

    server_dir = tmp_path / "redis"
    server_dir.mkdir()
    port = free_port()
    server = subprocess.Popen([str(redis_server_binary()), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                               "--appendonly", "no", "--requirepass", TEST_REDIS_PASSWORD, "--dir", str(server_dir)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        bundle = tmp_path / "bundle"
        write_simulation(SimulationSpec(trucks=2, hours=0.5, seed=2), bundle)
        with open(bundle / "telemetry.jsonl", "a", encoding="utf-8") as fh:
            fh.write("not json\n")
        p = pg_params(pg_dsn)
        env = {**os.environ, "ASSET_CYCLE_PG_HOST": p.get("host", "127.0.0.1"),
               "ASSET_CYCLE_PG_PORT": str(p.get("port", 5432)), "ASSET_CYCLE_PG_DB": p["dbname"],
               "ASSET_CYCLE_PG_USER": p.get("user", "postgres"), "ASSET_CYCLE_PG_PASSWORD": TEST_PG_PASSWORD,
               "ASSET_CYCLE_REDIS_HOST": "127.0.0.1", "ASSET_CYCLE_REDIS_PORT": str(port),
               "ASSET_CYCLE_REDIS_PASSWORD": TEST_REDIS_PASSWORD}  # fmt: skip
        env.pop("ASSET_CYCLE_LOCAL", None)
        cmd = [sys.executable, "-m", "cli", "run", "--source", f"file:{bundle}", "--schema", pg_schema,
               "--redis-prefix", redis_prefix, "--rest-port", str(free_port()), "--verbose"]  # fmt: skip
        run = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
        output = run.stdout + run.stderr
        assert run.returncode == 0, output[-3000:]
        assert TEST_PG_PASSWORD not in output and TEST_REDIS_PASSWORD not in output

        conn = psycopg2.connect(pg_dsn)
        try:
            with conn.cursor() as cur:
                cur.execute(sql.SQL("SELECT count(*), count(*) FILTER (WHERE raw LIKE %s OR detail LIKE %s "
                                    "OR source LIKE %s) FROM {}").format(sql.Identifier(pg_schema,
                                                                                        "asset_cycle_dead_letter")),
                            ("%Sup3r$ecret%",) * 3)  # fmt: skip
                letters, leaked = cur.fetchone()
            conn.rollback()
        finally:
            conn.close()
        assert letters >= 1 and leaked == 0

        wrong = {**env, "ASSET_CYCLE_REDIS_PASSWORD": "wrong-" + TEST_REDIS_PASSWORD}
        failed = subprocess.run(cmd, env=wrong, cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
        assert failed.returncode != 0
        text = failed.stdout + failed.stderr
        assert "Redis" in text and TEST_REDIS_PASSWORD not in text and TEST_PG_PASSWORD not in text
    finally:
        server.terminate()
        server.wait(10)


# --------------------------------------------------------------------------- supply chain


def _name(requirement: str) -> str:
    return re.split(r"[\s<>=!~;\[]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def test_lock_file_pins_every_runtime_dependency_with_hashes():
    lock = (ROOT / "requirements.lock").read_text(encoding="utf-8")
    pinned: dict[str, list[str]] = {}
    current = None
    for line in lock.splitlines():
        m = re.match(r"^([A-Za-z0-9_.\-]+)==(\S+)", line)
        if m:
            current = m.group(1).lower().replace("_", "-")
            pinned[current] = []
        elif current and "--hash=sha256:" in line:
            pinned[current].append(line)
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["dependencies"]
    missing = [d for d in deps if _name(d) not in pinned]
    assert not missing, f"requirements.lock lacks {missing}: run `make lock`"
    assert all(pinned.values()), [k for k, v in pinned.items() if not v]
    assert re.search(r"^apache-flink==2\.2\.1", lock, re.M)
