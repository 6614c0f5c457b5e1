"""Service outages during a run, on the local minicluster with the real PostgreSQL and Redis.

* PostgreSQL: the job writes as its own role; mid-run the role loses LOGIN and its backends are
  terminated for ~30 s (the shared server keeps running). The JDBC sink's retries fail, Flink
  restarts the job (fixed delay) until the role can log in again; the tables end equal to the
  replay (= an undisturbed run, see test_pipeline_equivalence).
* Redis: the reference poller points at a throwaway redis-server that is stopped during the run:
  polls fail (counted in ``referencePollFailures``, warning logged), the last known reference data
  stays in force (no point waits or is dead-lettered for want of reference data).
"""

from __future__ import annotations

import logging
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import pytest

from job.db import TableNames, dead_letter_id
from job.local_services import redis_server_binary
from state_machine.bundle import iter_telemetry_lines, read_reference
from state_machine.replay import replay
from state_machine.simulator import SimulationSpec, write_simulation
from tests.job.flink_harness import SOURCE_LABEL, pg_params, read_tables
from tests.job.reliability_support import free_port, run_job

pytestmark = [pytest.mark.services]

OUTAGE_S = 30.0


# --------------------------------------------------------------------------- helpers


def _admin(pg_dsn: str):
    import psycopg2

    conn = psycopg2.connect(pg_dsn)
    conn.autocommit = True
    return conn


def _count(pg_dsn: str, names: TableNames) -> int:
    from psycopg2 import sql

    conn = _admin(pg_dsn)
    try:
        with conn.cursor() as cur:
            cur.execute(sql.SQL("SELECT (SELECT count(*) FROM {}) + (SELECT count(*) FROM {})").format(
                names.table("process_info"), names.table("cycle")))
            return cur.fetchone()[0]
    finally:
        conn.close()


def _expected(bundle: Path):
    reference, _ = read_reference(bundle)
    return replay(((SOURCE_LABEL, line) for _, line in iter_telemetry_lines(bundle)), reference)


def _assert_tables_equal_replay(pg_dsn: str, names: TableNames, expected) -> None:
    tables = read_tables(pg_dsn, names)
    assert [c.as_dict() for c in tables.closed] == [c.as_dict() for c in expected.sorted_closed()]
    assert {k: v.as_dict() for k, v in tables.in_progress.items()} == {
        k: v.as_dict() for k, v in expected.in_progress.items()}
    assert tables.statuses == expected.statuses
    assert {d["dead_letter_id"] for d in tables.dead_letters} == {
        dead_letter_id(d.source, d.reason, d.raw) for d in expected.dead_letters}


@dataclass
class RedisServer:
    """A throwaway redis-server (no persistence) on its own port; stop/start at will."""

    directory: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [str(redis_server_binary()), "--port", str(self.port), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "no", "--dir", str(self.directory)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        client = self.client()
        for _ in range(100):
            try:
                client.ping()
                return
            except Exception:  # noqa: BLE001
                time.sleep(0.05)
        raise RuntimeError("throwaway redis-server did not start")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.proc = None

    def client(self):
        import redis

        return redis.Redis(host="127.0.0.1", port=self.port, socket_connect_timeout=1, socket_timeout=2)

    def hits(self) -> int:
        """HGETALL/... key hits since start (a successful reference poll reads the regions hash)."""
        return int(self.client().info("stats")["keyspace_hits"])


@pytest.fixture
def redis_server(tmp_path):
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop()


def _seed(pg_dsn: str, names: TableNames, server: RedisServer, bundle: Path, prefix: str) -> None:
    from job.reference_store import seed_reference

    reference, assets = read_reference(bundle)
    conn = _admin(pg_dsn)
    conn.autocommit = False
    try:
        seed_reference(conn, server.client(), names, reference, assets, redis_key_prefix=prefix)
    finally:
        conn.close()


# --------------------------------------------------------------------------- Redis


def test_poller_keeps_last_reference_data_while_redis_is_down(tmp_path, pg_dsn, migrated_tables, redis_server,
                                                                caplog):  # fmt: skip
    from job.reference_store import PostgresSettings, RedisSettings
    from job.settings import AppSettings, ReferenceSettings
    from udfs.reference_poller import ReferenceConnector, ReferencePoller

    bundle = tmp_path / "bundle"
    write_simulation(SimulationSpec(trucks=2, hours=0.2, seed=3), bundle)
    _seed(pg_dsn, migrated_tables, redis_server, bundle, "p:")
    p = pg_params(pg_dsn)
    connector = ReferenceConnector(
        AppSettings(reference=ReferenceSettings(redis_key_prefix="p:")),
        PostgresSettings(host=p.get("host", "127.0.0.1"), port=int(p.get("port", 5432)), dbname=p["dbname"],
                         user=p.get("user", "postgres")),
        RedisSettings(host="127.0.0.1", port=redis_server.port), migrated_tables)  # fmt: skip
    poller = ReferencePoller(connector, interval_s=0.0)
    poller.open(SimpleNamespace(get_metrics_group=lambda: None))  # metrics: local counts only
    try:
        first = poller.poll()
        assert first and poller.failures == 0
        known = poller.snapshot

        redis_server.stop()
        with caplog.at_level(logging.WARNING, logger="udfs.reference_poller"):
            assert poller.poll() == [] and poller.poll() == []
        assert poller.failures == 2 and poller._c_fail.value == 2  # referencePollFailures
        assert poller.snapshot is known  # the last known data stays in force
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 2
        assert all("reference poll failed (keeping the last known data)" in w for w in warnings)
        assert all("ConnectionError" in w for w in warnings)

        redis_server.start()  # back, empty (no persistence): re-seeded like the legacy loader would
        _seed(pg_dsn, migrated_tables, redis_server, bundle, "p:")
        assert poller.poll() == []  # reconnected; nothing changed
        assert poller.failures == 2
    finally:
        poller.close()


@pytest.mark.flink
@pytest.mark.slow
def test_job_keeps_reference_data_in_force_while_redis_is_down(tmp_path, pg_dsn, migrated_tables, redis_server,
                                                                 capsys):  # fmt: skip
    from job.pipeline import polling_reference_stream
    from job.reference_store import PostgresSettings, RedisSettings
    from job.settings import AppSettings, ReferenceSettings
    from udfs.reference_poller import ReferenceConnector, ReferencePoller

    bundle = tmp_path / "bundle"
    write_simulation(SimulationSpec(trucks=6, hours=3, seed=8).degraded(), bundle)
    _seed(pg_dsn, migrated_tables, redis_server, bundle, "p:")
    expected = _expected(bundle)
    p = pg_params(pg_dsn)
    connector = ReferenceConnector(
        AppSettings(reference=ReferenceSettings(redis_key_prefix="p:")),
        PostgresSettings(host=p.get("host", "127.0.0.1"), port=int(p.get("port", 5432)), dbname=p["dbname"],
                         user=p.get("user", "postgres")),
        RedisSettings(host="127.0.0.1", port=redis_server.port), migrated_tables)  # fmt: skip
    events: dict[str, float] = {}

    def during(watch, job_id) -> bool:
        now = time.monotonic()
        if "down" not in events:
            if redis_server.proc is not None and redis_server.hits() > 0:  # first poll done
                redis_server.stop()
                events["down"] = now
            return False
        failures = watch.metrics.get("referencePollFailures", 0)
        if "up" not in events:
            if failures >= 2 and now - events["down"] >= 5:
                redis_server.start()
                _seed(pg_dsn, migrated_tables, redis_server, bundle, "p:")
                events["up"] = now
                events["failures"] = failures
            return False
        if now - events.get("checked", 0) > 2:
            events["checked"] = now
            try:
                _assert_tables_equal_replay(pg_dsn, migrated_tables, expected)
            except AssertionError:
                return now - events["up"] > 120  # give up (the final assert reports the difference)
            return redis_server.hits() > 0  # polled the restarted server too
        return False

    watch = run_job(
        bundle, migrated_tables, pg_dsn, migrate=False, checkpoint_interval_ms=2000,
        reference_stream=lambda env, t_env: polling_reference_stream(
            env, t_env, ReferencePoller(connector, interval_s=1.0)),
        during=during, metric_names=("referencePollFailures", "referenceUpdates", "noReferenceData",
                                     "unknownAsset", "heldPoints"),
        timeout_s=300,
    )  # fmt: skip
    assert watch.status == "CANCELED" and "up" in events, (watch, events)
    _assert_tables_equal_replay(pg_dsn, migrated_tables, expected)
    assert events["failures"] >= 2
    # no point was dead-lettered for want of reference data (the degraded site has genuinely
    # unknown assets: those are UNKNOWN_ASSET in the replay too, and the tables match it)
    assert watch.metrics.get("noReferenceData", 0) == 0
    assert not [d for d in expected.dead_letters if d.reason == "NO_REFERENCE_DATA"]
    with capsys.disabled():
        print(f"\nredis outage: {events['up'] - events['down']:.0f} s down, {events['failures']:.0f} failed polls "
              f"counted, job {watch.seconds:.0f} s, metrics {watch.metrics}")


# --------------------------------------------------------------------------- PostgreSQL


@pytest.fixture
def job_role(pg_dsn, migrated_tables):
    """A login role owning nothing, allowed to write the test schema's tables."""
    from psycopg2 import sql

    role = f"ac_job_{uuid.uuid4().hex[:10]}"
    conn = _admin(pg_dsn)
    with conn.cursor() as cur:
        cur.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
        cur.execute(sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(
            sql.Identifier(migrated_tables.schema), sql.Identifier(role)))
        cur.execute(sql.SQL("GRANT SELECT, INSERT, UPDATE ON ALL TABLES IN SCHEMA {} TO {}").format(
            sql.Identifier(migrated_tables.schema), sql.Identifier(role)))
    try:
        yield role
    finally:
        with conn.cursor() as cur:
            cur.execute(sql.SQL("ALTER ROLE {} LOGIN").format(sql.Identifier(role)))
            cur.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", (role,))
            cur.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
            cur.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))
        conn.close()


def cut(pg_dsn: str, role: str, login: bool) -> int:
    """NOLOGIN + terminate the role's backends (login=False), or LOGIN again; returns backends ended."""
    from psycopg2 import sql

    conn = _admin(pg_dsn)
    try:
        with conn.cursor() as cur:
            cur.execute(sql.SQL("ALTER ROLE {} " + ("LOGIN" if login else "NOLOGIN")).format(sql.Identifier(role)))
            if login:
                return 0
            cur.execute("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE usename = %s", (role,))
            return cur.fetchone()[0]
    finally:
        conn.close()


@pytest.mark.flink
@pytest.mark.slow
def test_job_recovers_from_a_30_s_postgres_outage(tmp_path, pg_dsn, migrated_tables, job_role, capsys):
    bundle = tmp_path / "bundle"
    stats = write_simulation(SimulationSpec(trucks=10, hours=4, seed=5).degraded(), bundle)
    expected = _expected(bundle)
    events: dict[str, float] = {}

    def during(watch, job_id) -> bool:
        now = time.monotonic()
        if "down" not in events:
            rows = _count(pg_dsn, migrated_tables)
            if rows > 0:
                events["rows_before"] = rows
                events["terminated"] = cut(pg_dsn, job_role, login=False)
                events["down"] = now
        elif "up" not in events and now - events["down"] >= OUTAGE_S:
            cut(pg_dsn, job_role, login=True)
            events["up"] = now
            events["failures_during"] = len(watch.failures)
        elif "up" in events and "first_write" not in events and _count(pg_dsn, migrated_tables) > events.get(
                "rows_before", 0):
            events["first_write"] = now
        return False

    watch = run_job(bundle, migrated_tables, pg_dsn, migrate=False, jdbc_user=job_role, jdbc_password=None,
                    checkpoint_dir=tmp_path / "cp", checkpoint_interval_ms=1000, restart_attempts=200,
                    restart_delay_ms=1000, max_retries=2, during=during, timeout_s=360,
                    # JdbcOutputFormat.close() rethrows the failed flush while the failed task is
                    # cleaned up; Flink treats that as fatal and stops the TaskManager (see
                    # docs/reliability.md). MSF / Kubernetes replace a lost TaskManager; the
                    # minicluster does not, so it gets spare ones to emulate that.
                    extra_conf={"minicluster.number-of-taskmanagers": "3"})  # fmt: skip
    finished = time.monotonic()
    assert watch.status == "FINISHED"
    assert "up" in events, "the outage never started (job too fast?)"
    assert watch.failures, "the outage was not noticed"
    _assert_tables_equal_replay(pg_dsn, migrated_tables, expected)
    with capsys.disabled():
        print(f"\npostgres outage: {stats.lines} records, outage {events['up'] - events['down']:.0f} s "
              f"({events['terminated']:.0f} backends terminated, {events['rows_before']:.0f} rows written before), "
              f"{len(watch.failures)} job failures/restarts, first write "
              f"{events.get('first_write', finished) - events['up']:.1f} s and job end {finished - events['up']:.1f} s "
              f"after the database came back; job {watch.seconds:.0f} s")
