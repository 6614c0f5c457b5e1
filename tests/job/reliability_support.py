"""Helpers of the Flink reliability tests (faults, outages, hostile input): run the real pipeline
with checkpointing + restarts, watch the job through the minicluster's REST API, compare tables.

``run_job`` is ``flink_harness.run_bundle`` with the knobs these tests need (restart strategy,
checkpoint directory, REST port, JDBC user, a callback while the job runs, an unbounded reference
stream) and a ``JobWatch`` of what the REST API showed (failures, restores, checkpoints).
"""

from __future__ import annotations

import json
import socket
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from job.db import TableNames, apply_migrations
from job.settings import AppSettings, FlinkSettings, ReferenceSettings, SinkSettings
from state_machine.reference import ReferenceData
from tests.job.flink_harness import SOURCE_LABEL, count_lines, jdbc_url, pg_params, table_snapshot

VOLATILE = ("updated_at", "received_utc")
"""Columns that legitimately differ between runs (processing times)."""


def free_port() -> int:
    """A TCP port free right now on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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
) -> JobWatch:
    """Run the pipeline on a bundle into ``names`` and watch it (see module docstring).

    ``during(watch, job_id)`` is called about every 0.25 s while the job runs; returning True
    cancels the job (for unbounded runs). ``raw_stream(env, t_env)`` / ``reference_stream(env,
    t_env)`` replace the bounded file source / the load-once reference snapshot.
    """
    import psycopg2

    from job.flink_env import create_environment
    from job.pipeline import bounded_reference_stream, build_pipeline
    from job.sinks import JdbcTarget, SinkSet
    from job.sources import file_source, resolve_file_path
    from state_machine.bundle import read_reference
    from udfs.reference_poller import snapshot_records

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
        reference=ReferenceSettings(),
        flink=FlinkSettings(parallelism=1, checkpoint_interval_ms=checkpoint_interval_ms,
                            checkpoint_dir=str(checkpoint_dir) if checkpoint_dir else None,
                            restart_attempts=restart_attempts, restart_delay_ms=restart_delay_ms,
                            rest_port=port, source_idleness_ms=None),
    )  # fmt: skip
    env, _info = create_environment(settings.flink, extra_conf=extra_conf)
    params = pg_params(pg_dsn)
    target = JdbcTarget(settings.sink.jdbc_url, jdbc_user or params.get("user", "postgres"),
                        jdbc_password if jdbc_user else params.get("password"), batch_size=batch_size,
                        max_retries=max_retries)  # fmt: skip
    sinks = SinkSet(env, names, target)
    raw = raw_stream(env, sinks.t_env) if raw_stream else file_source(env, bundle_dir, label=SOURCE_LABEL).stream
    ref = (reference_stream(env, sinks.t_env) if reference_stream
           else bounded_reference_stream(env, snapshot_records(reference)))  # fmt: skip
    build_pipeline(env, raw, ref, sinks, settings, SOURCE_LABEL, check_future=False)
    sinks.attach()
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
