"""Service outages during a run, on the local minicluster with the real PostgreSQL and Redis.

* PostgreSQL: the job runs through the real CLI (``asset-cycle run``, one TaskManager, as a user
  runs it) against a PostgreSQL server of its own, which is shut down for 30 s and later for 120 s
  while telemetry keeps arriving; once in the demo setup and once in the production graph
  (``--local-properties``: reference data polled from the same database). The sinks retry with
  backoff inside the running job: no task fails, no restart, the TaskManager stays; the console says
  once that PostgreSQL is not accepting writes and once that writes resumed; the final tables equal
  the replay (nothing lost, nothing twice). The figures go to docs/reliability.md.
* Redis: the reference poller points at a throwaway redis-server that is stopped during the run:
  polls fail (counted in ``referencePollFailures``, warning logged), the last known reference data
  stays in force (no point waits or is dead-lettered for want of reference data). Stopped before
  the job starts: the points read before the first load wait, none is dead-lettered.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import pytest

from cli.checkpoints import latest_checkpoint
from cli.local_services import redis_server_binary
from state_machine.identity import dead_letter_id
from stores.postgres import TableNames
from tests.job.flink_harness import SOURCE_LABEL, pg_params, read_tables
from tests.job.reliability_support import (
    CliRun,
    assert_tables_equal_replay,
    cli_env,
    drop_file,
    expected_last_events,
    free_port,
    last_events,
    run_job,
    watched_site,
)
from workbench.bundle import iter_telemetry_lines, read_reference
from workbench.replay import replay
from workbench.simulator import SimulationSpec, write_simulation

pytestmark = [pytest.mark.services]

OUTAGE_S = 30.0


# --------------------------------------------------------------------------- helpers


def _admin(pg_dsn: str):
    import psycopg2

    conn = psycopg2.connect(pg_dsn)
    conn.autocommit = True
    return conn


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
    from stores.reference import seed_reference

    reference, assets = read_reference(bundle)
    conn = _admin(pg_dsn)
    conn.autocommit = False
    try:
        seed_reference(conn, server.client(), names, reference, assets, redis_key_prefix=prefix)
    finally:
        conn.close()


def _connector(pg_dsn: str, names: TableNames, server: RedisServer):
    """The reference stores of these tests: the test PostgreSQL and the throwaway Redis (prefix p:)."""
    from job.reference import ReferenceConnector
    from job.settings import AppSettings, ReferenceSettings
    from stores.connections import PostgresSettings, RedisSettings

    p = pg_params(pg_dsn)
    return ReferenceConnector(
        AppSettings(reference=ReferenceSettings(redis_key_prefix="p:")),
        PostgresSettings(host=p.get("host", "127.0.0.1"), port=int(p.get("port", 5432)), dbname=p["dbname"],
                         user=p.get("user", "postgres")),
        RedisSettings(host="127.0.0.1", port=server.port), names)  # fmt: skip


def _polled_reference(pg_dsn: str, names: TableNames, server: RedisServer):
    """run_job's ``reference_stream``: the stores of ``_connector`` polled every second."""
    from job.pipeline import polling_reference_stream
    from udfs.reference_poller import ReferencePoller

    poller = ReferencePoller(_connector(pg_dsn, names, server), interval_s=1.0)
    return lambda env, t_env: polling_reference_stream(env, t_env, poller)


def _caught_up_with_replay(pg_dsn: str, names: TableNames, expected, events: dict[str, float],
                           now: float) -> bool | None:  # fmt: skip
    """Every 2 s once Redis is back (``events["up"]``): True when the tables equal the replay, False
    when they still differ 120 s later (give up: the final assert reports the difference), None
    otherwise."""
    if now - events.get("checked", 0) <= 2:
        return None
    events["checked"] = now
    try:
        _assert_tables_equal_replay(pg_dsn, names, expected)
    except AssertionError:
        return False if now - events["up"] > 120 else None
    return True


# --------------------------------------------------------------------------- Redis


def test_poller_keeps_last_reference_data_while_redis_is_down(tmp_path, pg_dsn, migrated_tables, redis_server,
                                                                caplog):  # fmt: skip
    from udfs.reference_poller import ReferencePoller

    bundle = tmp_path / "bundle"
    write_simulation(SimulationSpec(trucks=2, hours=0.2, seed=3), bundle)
    _seed(pg_dsn, migrated_tables, redis_server, bundle, "p:")
    poller = ReferencePoller(_connector(pg_dsn, migrated_tables, redis_server), interval_s=0.0)
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
    bundle = tmp_path / "bundle"
    write_simulation(SimulationSpec(trucks=6, hours=3, seed=8).degraded(), bundle)
    _seed(pg_dsn, migrated_tables, redis_server, bundle, "p:")
    expected = _expected(bundle)
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
        caught_up = _caught_up_with_replay(pg_dsn, migrated_tables, expected, events, now)
        if caught_up is None:
            return False
        return not caught_up or redis_server.hits() > 0  # gave up, or polled the restarted server too

    watch = run_job(
        bundle, migrated_tables, pg_dsn, migrate=False, checkpoint_interval_ms=2000,
        reference_stream=_polled_reference(pg_dsn, migrated_tables, redis_server),
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


@pytest.mark.flink
@pytest.mark.slow
def test_a_backlog_read_before_the_first_reference_load_is_held_not_dead_lettered(tmp_path, pg_dsn, migrated_tables,
                                                                                 redis_server, capsys):  # fmt: skip
    """Redis is down when the job starts and the whole file is read before the first reference load
    succeeds: every point waits (far more per truck than reference.wait.max.points), none is
    dead-lettered UNKNOWN_ASSET for want of the asset table, and once Redis is back the tables equal
    the replay."""
    wait_max_points = 50
    bundle = tmp_path / "bundle"
    stats = write_simulation(SimulationSpec(trucks=3, hours=3, seed=8), bundle)
    _seed(pg_dsn, migrated_tables, redis_server, bundle, "p:")
    expected = _expected(bundle)
    assert not expected.dead_letters
    redis_server.stop()
    events: dict[str, float] = {}

    def during(watch, job_id) -> bool:
        now = time.monotonic()
        if "up" not in events:
            # everything read and held (the counters are passed on about once a second)
            if watch.metrics.get("referencePollFailures", 0) >= 2 and watch.metrics.get("heldPoints", 0) >= stats.lines:
                events.update(held=watch.metrics["heldPoints"], unknown=watch.metrics.get("unknownAsset", 0))
                redis_server.start()
                _seed(pg_dsn, migrated_tables, redis_server, bundle, "p:")
                events["up"] = now
            return False
        return _caught_up_with_replay(pg_dsn, migrated_tables, expected, events, now) is not None

    watch = run_job(
        bundle, migrated_tables, pg_dsn, migrate=False, checkpoint_interval_ms=2000, wait_max_points=wait_max_points,
        reference_stream=_polled_reference(pg_dsn, migrated_tables, redis_server),
        during=during, metric_names=("referencePollFailures", "unknownAsset", "heldPoints"), timeout_s=300,
    )  # fmt: skip
    assert watch.status == "CANCELED" and "up" in events, (watch, events)
    assert events["held"] >= stats.lines > 3 * wait_max_points * 5 and events["unknown"] == 0, events  # 3 trucks
    _assert_tables_equal_replay(pg_dsn, migrated_tables, expected)
    with capsys.disabled():
        print(f"\nreference store down at start: {events['held']:.0f} points held (limit {wait_max_points} per "
              f"truck), 0 dead-lettered; tables == replay after the first load; job {watch.seconds:.0f} s")


# --------------------------------------------------------------------------- PostgreSQL


# --------------------------------------------------------------------------- PostgreSQL


@dataclass
class PostgresServer:
    """A PostgreSQL server of the test's own (cli.local_services, data under ``root``), to shut down
    and start again at will."""

    root: Path
    port: int = field(default_factory=free_port)

    @property
    def dsn(self) -> str:
        return f"host=127.0.0.1 port={self.port} dbname=test user=postgres"

    def start(self) -> None:
        from cli.local_services import SERVICES_DIR_ENV, ensure_postgres

        with _services_dir(self.root, SERVICES_DIR_ENV):
            ensure_postgres("127.0.0.1", self.port, databases=("test",))

    def stop(self) -> None:
        from cli.local_services import SERVICES_DIR_ENV, stop_services

        with _services_dir(self.root, SERVICES_DIR_ENV):
            stop_services(pg_port=self.port, redis_port=0)

    def now(self):
        conn = _admin(self.dsn)
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT now()")
                return cur.fetchone()[0]
        finally:
            conn.close()

    def last_write(self, names: TableNames):
        """The newest updated_at of the cycle tables and the fleet state (None while unreachable)."""
        try:
            conn = _admin(self.dsn)
        except Exception:  # noqa: BLE001 - down
            return None
        try:
            with conn.cursor() as cur:
                cur.execute(f'SELECT max(u) FROM (SELECT max(updated_at) u FROM "{names.schema}".tx_process_info '
                            f'UNION ALL SELECT max(updated_at) FROM "{names.schema}".asset_cycle_tmp_vlx) t')
                return cur.fetchone()[0]
        except Exception:  # noqa: BLE001 - tables not there yet
            return None
        finally:
            conn.close()


@contextmanager
def _services_dir(root: Path, variable: str):
    before = os.environ.get(variable)
    os.environ[variable] = str(root)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(variable, None)
        else:
            os.environ[variable] = before


@pytest.fixture
def own_postgres():
    """A PostgreSQL server for the test alone. Its data is not under pytest's temporary directory:
    the server runs as an unprivileged user, and a pytest session starting meanwhile makes
    /tmp/pytest-of-<user> private again."""
    import shutil
    import tempfile

    root = Path(tempfile.mkdtemp(prefix="asset-cycle-pg-"))
    root.chmod(0o755)
    server = PostgresServer(root)
    server.start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


def _properties(path: Path, server: PostgresServer, names: TableNames, redis_url: str, prefix: str) -> Path:
    from urllib.parse import urlparse

    redis = urlparse(redis_url)
    groups = {
        "SourceConfig": {"stream.arn": "arn:aws:kinesis:us-east-1:000000000000:stream/not-read"},
        "SinkConfig": {"jdbc.url": f"jdbc:postgresql://127.0.0.1:{server.port}/test", "schema": names.schema},
        "ReferenceConfig": {"redis.host": redis.hostname or "127.0.0.1", "redis.port": str(redis.port or 6379),
                            "redis.key.prefix": prefix, "reference.poll.interval.s": "2"},
        "FlinkConfig": {"parallelism": "1", "checkpoint.interval.ms": "2000"},
    }  # fmt: skip
    path.write_text(json.dumps([{"PropertyGroupId": k, "PropertyMap": v} for k, v in groups.items()]))
    return path


@pytest.mark.flink
@pytest.mark.slow
@pytest.mark.timeout(1800)  # two outages (30 and 120 s) and the catching up after each
@pytest.mark.parametrize("setup", ["demo", "production"])
def test_the_job_rides_out_30_and_120_s_postgres_outages_without_a_restart(tmp_path, own_postgres, redis_url,
                                                                          redis_client, redis_prefix, setup, capsys):
    import signal

    from stores.postgres import apply_migrations
    from stores.reference import seed_reference

    server = own_postgres
    bundle = tmp_path / "bundle"
    write_simulation(SimulationSpec(trucks=6, hours=6, seed=5).degraded(), bundle)
    lines = [line for _, line in iter_telemetry_lines(bundle)]
    outages = (30.0, 120.0)
    cut_points = [len(lines) * (i + 1) // (len(outages) + 1) for i in range(len(outages))]
    parts = [lines[a:b] for a, b in zip([0, *cut_points], [*cut_points, len(lines)], strict=True)]
    names = TableNames(schema="outage")
    watched = watched_site(tmp_path / "site", bundle)
    args = ["--source", f"file:{watched}", "--monitor-s", "0.5", "--schema", names.schema, "--redis-prefix",
            redis_prefix, "--checkpoint-dir", str(tmp_path / "cp"), "--checkpoint-interval", "2000",
            "--savepoint-dir", str(tmp_path / "sp"), "--drain", "--rest-port", str(free_port()), "--progress-s", "5",
            "--stop-timeout-s", "180"]  # fmt: skip
    if setup == "production":
        conn = _admin(server.dsn)
        conn.autocommit = False
        try:
            apply_migrations(conn, names)
            reference, assets = read_reference(bundle)
            seed_reference(conn, redis_client, names, reference, assets, redis_key_prefix=redis_prefix)
        finally:
            conn.close()
        args += ["--local-properties", str(_properties(tmp_path / "props.json", server, names, redis_url,
                                                        redis_prefix))]  # fmt: skip
    run = CliRun(args, cli_env(server.dsn, redis_url), tmp_path / "run.log")
    figures = []
    try:
        drop_file(watched, "part-0.jsonl", parts[0])
        run.wait_for(lambda: last_events(server.dsn, names) == expected_last_events(bundle, parts[0]), 400,
                     "the first part")  # fmt: skip
        for n, outage_s in enumerate(outages, 1):
            server.stop()
            down = time.monotonic()
            drop_file(watched, f"part-{n}.jsonl", parts[n])  # read during the outage; written after it
            time.sleep(max(0.0, outage_s - (time.monotonic() - down)))
            server.start()
            up = time.monotonic()
            db_up = server.now()
            run.wait_for(lambda since=db_up: (server.last_write(names) or since) > since, 120,
                         "the first write after the outage")  # fmt: skip
            first_write = time.monotonic()
            expected = expected_last_events(bundle, [line for part in parts[: n + 1] for line in part])
            run.wait_for(lambda want=expected: last_events(server.dsn, names) == want, 300, "catching up")
            figures.append((up - down, first_write - up, time.monotonic() - up))
            # every sink has written again (one may still sit in its retry backoff when the fleet table
            # has caught up): the console says so
            run.wait_for(lambda n=n: run.output().count("PostgreSQL writes resumed after") >= n, 60,
                         "the console to report the resumed writes")  # fmt: skip
        rc = run.signal(signal.SIGINT, 300)
    finally:
        run.stop()
    out = run.output()
    assert rc == 0, out[-4000:]
    assert "savepoint: " in out and "Traceback" not in out
    assert "job restarting" not in out, out[-4000:]  # the TaskManager and the tasks stayed up
    assert out.count("PostgreSQL is not accepting writes") == len(outages), out[-4000:]
    assert out.count("PostgreSQL writes resumed after") == len(outages), out[-4000:]
    assert_tables_equal_replay(server.dsn, names, bundle, lines, live=True)
    with capsys.disabled():
        for outage, first, caught in figures:
            print(f"\n{setup}: PostgreSQL down {outage:.0f} s; first write {first:.1f} s and caught up {caught:.1f} s "
                  f"after it was back; {len(lines)} records, tables == replay")


@pytest.mark.flink
@pytest.mark.slow
def test_ctrl_c_while_postgres_is_down_stops_within_a_bounded_time(tmp_path, own_postgres, redis_url, redis_prefix):
    """The savepoint cannot complete while the sinks wait for PostgreSQL: after --stop-timeout-s the
    console says why, cancels the job and names the checkpoint to resume from."""
    import signal

    server = own_postgres
    bundle = tmp_path / "bundle"
    write_simulation(SimulationSpec(trucks=4, hours=2, seed=2), bundle)
    lines = [line for _, line in iter_telemetry_lines(bundle)]
    names = TableNames(schema="stuck")
    watched = watched_site(tmp_path / "site", bundle)
    run = CliRun(["--source", f"file:{watched}", "--monitor-s", "0.5", "--schema", names.schema, "--redis-prefix",
                  redis_prefix, "--checkpoint-dir", str(tmp_path / "cp"), "--checkpoint-interval", "1000",
                  "--savepoint-dir", str(tmp_path / "sp"), "--rest-port", str(free_port()), "--stop-timeout-s", "15"],
                 cli_env(server.dsn, redis_url), tmp_path / "run.log")  # fmt: skip
    try:
        half = len(lines) // 2
        drop_file(watched, "part-0.jsonl", lines[:half])
        run.wait_for(lambda: last_events(server.dsn, names) == expected_last_events(bundle, lines[:half]), 400,
                     "the first half")  # fmt: skip
        # a checkpoint after the first half: once PostgreSQL is down none can complete (the sinks flush
        # in it), and a fast run can get here before the first one has
        written = latest_checkpoint(tmp_path / "cp")
        run.wait_for(lambda: latest_checkpoint(tmp_path / "cp") not in (None, written), 120,
                     "a checkpoint after the first half")  # fmt: skip
        server.stop()
        drop_file(watched, "part-1.jsonl", lines[half:])
        run.wait_for_line("PostgreSQL is not accepting writes", 120)
        # bounded: the client gives up on the savepoint after --stop-timeout-s and cancels (at most
        # cli.console.CANCEL_TIMEOUT_S); a client that hangs fails this wait
        rc = run.signal(signal.SIGINT, 120)
    finally:
        run.stop()
    out = run.output()
    tail = out[out.index("stopping the job (Ctrl-C)"):].splitlines()
    assert rc == 130 and "Traceback" not in out, out[-3000:]
    assert tail[:3] == ["stopping the job (Ctrl-C)", f"taking a savepoint in {tmp_path / 'sp'}",
                        "no savepoint: not completed within 15 s while the sinks wait for PostgreSQL"], tail
    assert tail[3:5] == ["cancelling the job", "job stopped"], tail
    assert tail[5].startswith(f"latest checkpoint: {tmp_path / 'cp'}/"), tail
