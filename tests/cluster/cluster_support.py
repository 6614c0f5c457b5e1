"""Helpers of the cluster tier: the job submitted to a real session cluster (cli.flink_cluster) through
its entry point, followed and stopped through the REST API, its tables compared with the replay.

``submit`` writes the job's application properties (job.properties.property_groups of the settings a
test describes) and runs ``flink run -d -pym job.main --local-properties FILE``, exactly what
``asset-cycle run --cluster`` and the Docker image run. PostgreSQL's user goes in the client's
environment, as in production.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from cli.console import RETRIED_SAVEPOINT_FAILURES, ClusterJob, SavepointFailed
from cli.flink_cluster import FlinkCluster
from job.properties import property_groups, write_properties
from job.settings import AppSettings, FlinkSettings, ReferenceSettings, SinkSettings, SourceSettings
from stores.postgres import TableNames
from tests.job.flink_harness import jdbc_url, pg_params, read_tables
from workbench.replay import Replayer

JOB_TIMEOUT_S = 300.0


def job_settings(source: SourceSettings, names: TableNames, pg_dsn: str, redis_url: str, redis_prefix: str,
                 tmp_path: Path, parallelism: int, **flink: Any) -> AppSettings:  # fmt: skip
    """Settings of a test job: ``source`` into ``names``, reference data loaded once from the test's
    PostgreSQL and Redis, checkpoints every 2 s under ``tmp_path``, the production defaults otherwise
    (source idleness included)."""
    from urllib.parse import urlparse

    redis = urlparse(redis_url)
    return AppSettings(
        source=source,
        sink=SinkSettings(jdbc_url=jdbc_url(pg_dsn), schema=names.schema, batch_size=2000),
        reference=ReferenceSettings(redis_host=redis.hostname or "127.0.0.1", redis_port=redis.port or 6379,
                                    redis_key_prefix=redis_prefix, poll_interval_s=0.0),
        flink=replace(FlinkSettings(parallelism=parallelism, checkpoint_interval_ms=2000,
                                    checkpoint_dir=str(tmp_path / "checkpoints"),
                                    savepoint_dir=str(tmp_path / "savepoints")), **flink),
    )  # fmt: skip


def submit(cluster: FlinkCluster, settings: AppSettings, pg_dsn: str, properties: Path) -> ClusterJob:
    """Submit the job ``settings`` describe through its entry point; the job as the console follows it."""
    write_properties(property_groups(settings), properties)
    job_id = cluster.submit_job(properties, env={"ASSET_CYCLE_PG_USER": pg_params(pg_dsn).get("user", "postgres")})
    return ClusterJob(cluster.rest_url, job_id)


def wait_for(job: ClusterJob, condition: Callable[[], bool], what: str, timeout_s: float = JOB_TIMEOUT_S) -> None:
    """Wait until ``condition()`` holds; fails at once when the job ends (with its root cause)."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if job.ended():
            raise AssertionError(f"the job ended ({job.status()}: {job.failure()}) while waiting for {what}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what} (job {job.status()})")
        time.sleep(0.5)


def wait_finished(job: ClusterJob, timeout_s: float = JOB_TIMEOUT_S) -> None:
    """Wait until a bounded job has finished; fails with the root cause when it failed."""
    deadline = time.monotonic() + timeout_s
    while not job.ended():
        if time.monotonic() > deadline:
            job.cancel()
            raise AssertionError(f"the job did not finish within {timeout_s:.0f} s")
        time.sleep(0.5)
    assert job.status() == "FINISHED", f"the job {job.status()}: {job.failure()}"


def stop_with_savepoint(job: ClusterJob, directory: Path, drain: bool, timeout_s: float = 120.0) -> str:
    """Stop the job with a savepoint into ``directory`` (``drain``: event time to its end first), tried
    again after a passing failure as ``asset-cycle run`` does (cli.console.RETRIED_SAVEPOINT_FAILURES:
    e.g. the bounded reference source finished an instant before the JobManager knew)."""
    deadline = time.monotonic() + timeout_s
    while True:
        request = job.stop_with_savepoint(directory.resolve().as_uri(), drain)
        while not request.done():
            assert time.monotonic() < deadline, f"no savepoint within {timeout_s:.0f} s"
            time.sleep(0.5)
        try:
            path = request.location()
            break
        except SavepointFailed as failure:
            if failure.reason not in RETRIED_SAVEPOINT_FAILURES or job.status() != "RUNNING":
                raise
    wait_for(job, lambda: job.status() in ("FINISHED", "CANCELED"), "the job to stop", 60.0)
    return path


def checkpoints(job: ClusterJob) -> dict[str, Any]:
    """The job's checkpoint statistics (REST ``/jobs/<id>/checkpoints``)."""
    from cli.console import rest_json

    return rest_json(job.rest_url, f"/jobs/{job.job_id}/checkpoints") or {}


def completed_checkpoints(job: ClusterJob) -> int:
    return int((checkpoints(job).get("counts") or {}).get("completed", 0))


def restored(job: ClusterJob) -> dict[str, Any] | None:
    """What the job restored from (id, external path, savepoint or not), None for a cold start."""
    return (checkpoints(job).get("latest") or {}).get("restored")


def subtask_reads(job: ClusterJob, vertex_name: str) -> list[int]:
    """Records read by each subtask of the (first) vertex whose name contains ``vertex_name``, from
    the job's details (kept once the job has finished)."""
    from cli.console import rest_json

    for vertex in (rest_json(job.rest_url, f"/jobs/{job.job_id}") or {}).get("vertices", []):
        if vertex_name in vertex["name"]:
            detail = rest_json(job.rest_url, f"/jobs/{job.job_id}/vertices/{vertex['id']}") or {}
            return [int(s.get("metrics", {}).get("read-records", 0)) for s in detail.get("subtasks", [])]
    raise AssertionError(f"no vertex named like {vertex_name!r}")


def records_out(job: ClusterJob, operator: str) -> int:
    """numRecordsOut of ``operator`` over its subtasks (REST metrics of the running job)."""
    from cli.console import rest_json

    total = 0
    for vertex in (rest_json(job.rest_url, f"/jobs/{job.job_id}") or {}).get("vertices", []):
        base = f"/jobs/{job.job_id}/vertices/{vertex['id']}/subtasks/metrics"
        ids = [m["id"] for m in rest_json(job.rest_url, base) or [] if m["id"] == f"{operator}.numRecordsOut"]
        if ids:
            total += sum(int(m.get("sum", 0)) for m in rest_json(job.rest_url, f"{base}?agg=sum&get={ids[0]}") or [])
    return total


def live_expectation(reference: Any, lines: list[str], label: str = "x") -> Any:
    """What an unbounded job shows once it has processed ``lines`` (live rows, no end of input)."""
    replayer = Replayer(reference, speculative=True, source=label)
    for line in lines:
        replayer.feed(label, line)
    return replayer.result


def closed_cycles(pg_dsn: str, names: TableNames) -> list[dict[str, Any]]:
    return [c.as_dict() for c in read_tables(pg_dsn, names).closed]
