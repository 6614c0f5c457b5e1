"""Helpers of the Flink reliability tests (faults, outages, hostile input): run the real pipeline
with checkpointing + restarts, watch the job through the minicluster's REST API, compare tables.

``run_job`` is ``flink_harness.run_bundle`` with the knobs these tests need (restart strategy,
checkpoint directory, REST port, JDBC user, a callback while the job runs, an unbounded reference
stream) and a ``JobWatch`` of what the REST API showed (failures, restores, checkpoints).

``CliRun`` runs the real CLI (``python -m cli run``, i.e. ``asset-cycle run``) in the background in
its own session: wait for its output or a condition, send it Ctrl-C/SIGTERM, or ``kill_hard()``
the client with its Flink JVM as a crash would; ``wait_for_checkpoint`` waits for the first
completed checkpoint of a run, which ``asset-cycle run --resume`` then restores (crash-and-resume
tests of any source: see test_resume_flink.py).
"""

from __future__ import annotations

import json
import re
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from job.settings import AppSettings, FlinkSettings, ReferenceSettings, SinkSettings
from state_machine.reference import ReferenceData
from stores.postgres import TableNames, apply_migrations
from tests.job.flink_harness import SOURCE_LABEL, count_lines, jdbc_url, pg_params, table_snapshot

VOLATILE = ("updated_at", "received_utc")
"""Columns that legitimately differ between runs (processing times)."""


def free_port() -> int:
    """A TCP port free right now on 127.0.0.1 (outside the ephemeral range: cli.local_services.free_local_port)."""
    from cli.local_services import free_local_port

    return free_local_port()


def rest_get(port: int, path: str, timeout: float = 2.0) -> Any:
    """GET a minicluster REST resource as JSON (None when unreachable)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as resp:
            return json.loads(resp.read())
    except Exception:  # noqa: BLE001 - the cluster may be starting or gone
        return None


@dataclass
class JobWatch:
    """What the REST API showed while the job ran."""

    failures: list[tuple[int, str]] = field(default_factory=list)  # (timestamp ms, exception name)
    restores: dict[int, int] = field(default_factory=dict)  # restored checkpoint id -> restore ts ms
    completed_checkpoints: int = 0
    status: str = ""
    seconds: float = 0.0
    records: int = 0
    metrics: dict[str, float] = field(default_factory=dict)
    port: int = 0  # the REST port of the minicluster

    def recovery_ms(self) -> list[int]:
        """Per failure: ms until the next restore from a checkpoint (restores without a completed
        checkpoint restart from scratch and are not seen here)."""
        restores = sorted(self.restores.values())
        out = []
        for ts, _ in sorted(self.failures):
            nxt = [r for r in restores if r >= ts]
            if nxt:
                out.append(nxt[0] - ts)
        return out

    def poll(self, port: int, job_id: str, metric_names: tuple[str, ...] = ()) -> None:
        cps = rest_get(port, f"/jobs/{job_id}/checkpoints")
        if cps:
            self.completed_checkpoints = max(self.completed_checkpoints, cps.get("counts", {}).get("completed", 0))
            restored = (cps.get("latest") or {}).get("restored")
            if restored:
                self.restores.setdefault(restored["id"], restored["restore_timestamp"])
        exc = rest_get(port, f"/jobs/{job_id}/exceptions?maxExceptions=50")
        if exc:
            seen = {f for f in self.failures}
            for entry in exc.get("exceptionHistory", {}).get("entries", []):
                item = (entry.get("timestamp", 0), entry.get("exceptionName", ""))
                if item not in seen:
                    self.failures.append(item)
        if metric_names:
            self.metrics.update(job_metrics(port, job_id, metric_names))


def job_metrics(port: int, job_id: str, suffixes: tuple[str, ...]) -> dict[str, float]:
    """Sum over vertices/subtasks of the metrics whose name ends with one of ``suffixes``."""
    job = rest_get(port, f"/jobs/{job_id}")
    out: dict[str, float] = {}
    for vertex in (job or {}).get("vertices", []):
        listing = rest_get(port, f"/jobs/{job_id}/vertices/{vertex['id']}/metrics") or []
        wanted = [m["id"] for m in listing if m["id"].endswith(suffixes)]
        if not wanted:
            continue
        values = rest_get(port, f"/jobs/{job_id}/vertices/{vertex['id']}/metrics?get=" + ",".join(wanted)) or []
        for m in values:
            for suffix in suffixes:
                if m["id"].endswith(suffix):
                    out[suffix] = out.get(suffix, 0.0) + float(m["value"])
    return out


def run_job(
    bundle_dir: str | Path,
    names: TableNames,
    pg_dsn: str,
    reference: ReferenceData | None = None,
    *,
    checkpoint_dir: Path | None = None,
    checkpoint_interval_ms: int | None = None,
    restart_attempts: int | None = None,
    restart_delay_ms: int = 200,
    jdbc_user: str | None = None,
    jdbc_password: str | None = None,
    batch_size: int = 2000,
    max_retries: int = 3,
    migrate: bool = True,
    raw_stream: Callable[[Any, Any], Any] | None = None,
    reference_stream: Callable[[Any, Any], Any] | None = None,
    during: Callable[[JobWatch, str], bool] | None = None,
    metric_names: tuple[str, ...] = (),
    timeout_s: float = 420.0,
    extra_conf: dict[str, str] | None = None,
    wait_max_points: int | None = None,
) -> JobWatch:
    """Run the pipeline on a bundle into ``names`` and watch it (see module docstring).

    ``during(watch, job_id)`` is called about every 0.25 s while the job runs; returning True
    cancels the job (for unbounded runs). ``raw_stream(env, t_env)`` / ``reference_stream(env,
    t_env)`` replace the bounded file source / the load-once reference snapshot.
    ``wait_max_points``: reference.wait.max.points (the setting's default when None).
    """
    import psycopg2

    from job.pipeline import assemble, bounded_reference_stream
    from job.sinks import JdbcTarget, SinkSet
    from job.sources import RawSource, file_source, resolve_file_path
    from tests.job.faults import FaultPlan, pipeline_hooks
    from udfs.reference_poller import snapshot_records
    from workbench.bundle import read_reference

    bundle_dir = Path(bundle_dir)
    if migrate:
        conn = psycopg2.connect(pg_dsn)
        try:
            apply_migrations(conn, names)
        finally:
            conn.close()
    if reference is None and reference_stream is None:
        reference, _ = read_reference(bundle_dir)
    port = free_port()
    settings = AppSettings(
        sink=SinkSettings(jdbc_url=jdbc_url(pg_dsn), batch_size=batch_size, max_retries=max_retries),
        reference=ReferenceSettings() if wait_max_points is None else ReferenceSettings(wait_max_points=wait_max_points),
        flink=FlinkSettings(parallelism=1, checkpoint_interval_ms=checkpoint_interval_ms,
                            checkpoint_dir=str(checkpoint_dir) if checkpoint_dir else None,
                            restart_attempts=restart_attempts, restart_delay_ms=restart_delay_ms,
                            rest_port=port, source_idleness_ms=None),
    )  # fmt: skip
    params = pg_params(pg_dsn)
    target = JdbcTarget(settings.sink.jdbc_url, jdbc_user or params.get("user", "postgres"),
                        jdbc_password if jdbc_user else params.get("password"), batch_size=batch_size,
                        max_retries=max_retries)  # fmt: skip

    def source(env: Any, t_env: Any) -> RawSource:
        if raw_stream:
            return RawSource(raw_stream(env, t_env), SOURCE_LABEL, bounded=False)
        return file_source(env, bundle_dir, label=SOURCE_LABEL)

    def ref(env: Any, t_env: Any) -> Any:
        if reference_stream:
            return reference_stream(env, t_env)
        return bounded_reference_stream(env, snapshot_records(reference))

    env = assemble(settings, lambda env: SinkSet(env, names, target), source, ref, extra_conf=extra_conf, check_future=False,
                   **pipeline_hooks(FaultPlan.from_env())).env
    watch = JobWatch(records=count_lines(resolve_file_path(bundle_dir)) if not raw_stream else 0, port=port)
    start = time.perf_counter()
    client = env.execute_async("asset-cycle-reliability")
    job_id = str(client.get_job_id())
    result = client.get_job_execution_result()  # the local minicluster shuts down when the job ends
    try:
        while not result.done():
            watch.status = "RUNNING"
            watch.poll(port, job_id, metric_names)
            if during is not None and during(watch, job_id):
                client.cancel().result()
                watch.status = "CANCELED"
                return watch
            if time.perf_counter() - start > timeout_s:
                client.cancel().result()
                raise TimeoutError(f"job still running after {timeout_s:.0f} s")
            time.sleep(0.25)
        result.result()  # raises with the cause when the job failed
        watch.status = "FINISHED"
    finally:
        watch.seconds = time.perf_counter() - start
    return watch


def snapshot(pg_dsn: str, names: TableNames) -> dict[str, list]:
    """The four tables without the processing-time columns (see VOLATILE)."""
    return table_snapshot(pg_dsn, names, exclude=VOLATILE)


# --------------------------------------------------------------------------- the real CLI in the background

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def cli_env(pg_dsn: str, redis_url: str, **extra: str) -> dict[str, str]:
    """The environment of a CLI run against the test PostgreSQL and Redis (ASSET_CYCLE_PG_* /
    ASSET_CYCLE_REDIS_*: the CLI then starts no servers of its own)."""
    import os
    from urllib.parse import urlparse

    p = pg_params(pg_dsn)
    r = urlparse(redis_url)
    env = {k: v for k, v in os.environ.items() if k != "ASSET_CYCLE_LOCAL"}
    env.update(ASSET_CYCLE_PG_HOST=p.get("host", "127.0.0.1"), ASSET_CYCLE_PG_PORT=str(p.get("port", 5432)),
               ASSET_CYCLE_PG_DB=p.get("dbname", "test"), ASSET_CYCLE_PG_USER=p.get("user", "postgres"),
               ASSET_CYCLE_REDIS_HOST=r.hostname or "127.0.0.1", ASSET_CYCLE_REDIS_PORT=str(r.port or 6379),
               ASSET_CYCLE_REDIS_DB=(r.path or "/0").lstrip("/") or "0")  # fmt: skip
    if p.get("password"):
        env["ASSET_CYCLE_PG_PASSWORD"] = p["password"]
    env.update(extra)
    return env


class CliRun:
    """``python -m cli run ARGS`` (``asset-cycle run``) in the background, in its own session
    so that the client and its Flink JVM can be killed together like a crashed machine; output
    (stdout and stderr) goes to ``log``."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path) -> None:
        import subprocess
        import sys

        self.args = args
        self.log = log
        self.flink_log_dir = log.with_name(log.stem + "-flink")  # Flink's own log, next to the output
        env = {"FLINK_LOG_DIR": str(self.flink_log_dir), **env}
        self._out = open(log, "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen([sys.executable, "-m", "cli", "run", *args], cwd=PROJECT_ROOT, env=env,
                                     stdout=self._out, stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise AssertionError(f"the job exited early ({self.proc.returncode}):\n{self.output()[-4000:]}")

    def wait_for(self, condition: Callable[[], bool], timeout_s: float, what: str) -> float:
        """Wait until ``condition()`` holds (the process must stay alive); returns the time it took."""
        start = time.monotonic()
        while time.monotonic() - start < timeout_s:
            self.check_alive()
            if condition():
                return time.monotonic() - start
            time.sleep(0.5)
        raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}:\n{self.output()[-4000:]}")

    def wait_for_line(self, text: str, timeout_s: float = 240.0) -> float:
        return self.wait_for(lambda: text in self.output(), timeout_s, repr(text))

    def signal(self, signum: int, timeout_s: float = 120.0) -> int:
        """Send ``signum`` to the client only (as Ctrl-C in a terminal reaches it); returns the exit code."""
        self.proc.send_signal(signum)
        try:
            return self.proc.wait(timeout_s)
        finally:
            self.stop()

    def wait(self, timeout_s: float = 300.0) -> int:
        """Wait for the run to end by itself; returns the exit code."""
        try:
            return self.proc.wait(timeout_s)
        finally:
            self.stop()

    def kill_hard(self) -> None:
        """SIGKILL the client and its Flink JVM at once: nothing is cleaned up, as in a crash."""
        import os
        import signal

        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(30)
        self.stop()

    def stop(self) -> None:
        import os
        import signal

        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(30)
        if not self._out.closed:
            self._out.close()


def restored_checkpoint(port: int) -> dict[str, Any] | None:
    """What the running job on a local REST port was restored from (``latest.restored`` of its
    checkpoint statistics: ``id``, ``external_path``, ``is_savepoint``, ...), None before it is known
    or when it started without state."""
    jobs = (rest_get(port, "/jobs/overview") or {}).get("jobs", [])
    running = [j["jid"] for j in jobs if j.get("state") == "RUNNING"]
    if not running:
        return None
    stats = rest_get(port, f"/jobs/{running[0]}/checkpoints") or {}
    return (stats.get("latest") or {}).get("restored")


_PROGRESS = re.compile(r"^progress: ([\d,]+) records in", re.M)


def records_in(output: str) -> list[int]:
    """The records-in counts of a run's progress lines, in order."""
    return [int(n.replace(",", "")) for n in _PROGRESS.findall(output)]


def wait_for_checkpoint(run: CliRun, checkpoint_dir: Path, timeout_s: float = 240.0) -> Path:
    """The first completed checkpoint the run writes under ``checkpoint_dir``."""
    from cli.checkpoints import latest_checkpoint

    run.wait_for(lambda: latest_checkpoint(checkpoint_dir) is not None, timeout_s, f"a checkpoint in {checkpoint_dir}")
    found = latest_checkpoint(checkpoint_dir)
    assert found is not None
    return found


# --------------------------------------------------------------------------- watched directories, expected tables


def drop_file(directory: Path, name: str, lines: list[str]) -> None:
    """Write a telemetry file atomically (hidden while written: the FileSource skips names starting with '.')."""
    tmp = directory / f".{name}.tmp"
    tmp.write_text("".join(line + "\n" for line in lines))
    tmp.rename(directory / name)


def watched_site(base: Path, bundle: Path) -> Path:
    """``base/incoming``, a directory to watch, with the bundle's reference data next to it (``run``
    seeds it from the parent of a watched directory)."""
    base.mkdir(parents=True, exist_ok=True)
    for name in ("assets.csv", "regions.geojson"):
        (base / name).write_bytes((bundle / name).read_bytes())
    watched = base / "incoming"
    watched.mkdir()
    return watched


def last_events(pg_dsn: str, names: TableNames) -> dict[str, int]:
    """Each truck's last processed event time in the process-info table ({} before it exists)."""
    import psycopg2

    from tests.job.table_rows import datetime_to_ms

    try:
        conn = psycopg2.connect(pg_dsn, connect_timeout=3)
    except psycopg2.OperationalError:
        return {}
    try:
        with conn.cursor() as cur:
            cur.execute(
                f'SELECT asset_guid, last_event_utc FROM "{names.schema}"."{names.table_name("process_info")}"')
            return {a: datetime_to_ms(t) for a, t in cur.fetchall()}
    except psycopg2.Error:
        return {}
    finally:
        conn.close()


def expected_last_events(bundle: Path, lines: list[str]) -> dict[str, int]:
    """Each truck's last processed event time after ``lines`` (no end of input), per the replay with
    the live rows an unbounded job shows."""
    from workbench.bundle import read_reference
    from workbench.replay import Replayer

    replayer = Replayer(read_reference(bundle)[0], speculative=True)
    for line in lines:
        replayer.feed("x", line)
    return {a: s.last_event_ms for a, s in replayer.result.statuses.items()}


def assert_tables_equal_replay(pg_dsn: str, names: TableNames, bundle: Path, lines: list[str],
                               live: bool = False) -> None:  # fmt: skip
    """The job's tables hold exactly what the replay of ``lines`` gives (to the end of input): the
    same closed cycles, open cycles and fleet state, the same rejected records (by reason and raw
    text; the row ids depend on the source position, which the replay does not know) and the same
    loader and truck-hour rows. ``live``: the job read an unbounded source, so it computed live rows
    (job.pipeline.assemble), and so does the replay."""
    from workbench.bundle import read_reference

    assert_tables_equal_replay_of(pg_dsn, names, read_reference(bundle)[0], [(0, line) for line in lines], live=live)


def assert_tables_equal_replay_of(pg_dsn: str, names: TableNames, reference: ReferenceData,
                                  reads: list[tuple[int, str]], live: bool = False,
                                  idle_after_last: bool = False) -> None:  # fmt: skip
    """assert_tables_equal_replay with the reference data given, of ``reads``: ``(part, raw line)`` in the
    order the job read them, each part parsed by a subtask of its own (its own stream watermark, as a
    Kinesis reader's parse subtask; tests.workbench.partitioned_replay, also for ``idle_after_last``)."""
    from tests.job.flink_harness import loader_table_differences, read_tables
    from tests.workbench.partitioned_replay import replay_parts

    expected = replay_parts(reads, reference, speculative=live, idle_after_last=idle_after_last)
    tables = read_tables(pg_dsn, names)
    got = [c.as_dict() for c in tables.closed]
    want = [c.as_dict() for c in expected.sorted_closed()]
    assert got == want, _cycle_difference(got, want)
    assert {k: v.as_dict() for k, v in tables.in_progress.items()} == {
        k: v.as_dict() for k, v in expected.in_progress.items()}
    assert tables.statuses == expected.statuses
    assert {(d["reason"], d["raw"]) for d in tables.dead_letters} == {(d.reason, d.raw) for d in expected.dead_letters}
    differences = loader_table_differences(tables, expected, any_order=True)  # parallel subtasks, restores
    assert not differences, differences


def _cycle_difference(got: list[dict], want: list[dict]) -> str:
    """What differs between two lists of closed cycles (for an assertion message)."""
    def key(c: dict) -> tuple:
        return c["asset_guid"], c["load_start_ms"] or 0, c["cycle_end_ms"] or 0

    extra = sorted((key(c), c["cycle_status"]) for c in got if c not in want)
    missing = sorted((key(c), c["cycle_status"]) for c in want if c not in got)
    first = next((c for c in got if c not in want), None)
    twin = next((w for w in want if first is not None and key(w)[:2] == key(first)[:2]), None)
    fields = {k: (first[k], twin[k]) for k in first if twin is not None and first[k] != twin[k]} if first else {}
    return (f"{len(got)} closed cycles, the replay {len(want)}; only in the tables: {extra[:5]}; only in the "
            f"replay: {missing[:5]}; first differing fields (tables, replay): {fields}")


@contextmanager
def throwaway_schema(pg_dsn: str) -> Iterator[TableNames]:
    """A schema of its own for a second set of tables (dropped afterwards, with everything in it)."""
    import psycopg2
    from psycopg2 import sql

    name = f"t_{uuid.uuid4().hex[:16]}"
    conn = psycopg2.connect(pg_dsn)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(name)))
        yield TableNames(schema=name)
    finally:
        with conn.cursor() as cur:
            cur.execute("SET lock_timeout = '20s'")
            cur.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))
        conn.close()
