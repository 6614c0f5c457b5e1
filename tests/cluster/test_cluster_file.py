"""The job on a real session cluster (three TaskManager JVMs of one slot each), from a file source,
submitted through its entry point as the Docker image runs it: at parallelism 2 and 3; a TaskManager
killed with SIGKILL and replaced while the job runs; a savepoint taken at parallelism 2 restored at 1
and at 3, of a watched directory and of a file stopped mid-file. Every result is compared with the
offline replay: the tables are equal.

A file is read by every subtask, each keeping its own trucks' lines; a watched directory is read by
one subtask and its records are spread over the parse subtasks by truck. Either way every subtask
parses (and every TaskManager's interpreter works). Most restore tests read a watched directory: the
first half of a bundle, then the second half after the restore. That the state came
back is shown three ways: the REST API names the checkpoint or savepoint restored, the restored
source reads exactly the second half (the first is in its state), and the tables equal the replay of
the whole bundle, which the replay of the second half alone (what a cold start would write) does not.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg2
import pytest

from cli.flink_cluster import FlinkCluster
from job.settings import SourceSettings
from stores.postgres import TableNames, apply_migrations
from stores.reference import load_reference_data, seed_reference
from tests.cluster.cluster_support import (
    completed_checkpoints,
    job_settings,
    records_out,
    restored,
    stop_with_savepoint,
    submit,
    subtask_reads,
    wait_finished,
    wait_for,
)
from tests.job.flink_harness import LOADER_KINDS, read_tables
from tests.job.reliability_support import (
    assert_tables_equal_replay,
    drop_file,
    expected_last_events,
    last_events,
    watched_site,
)
from workbench.bundle import iter_telemetry_lines, read_reference
from workbench.replay import replay
from workbench.simulator import SimulationSpec, write_simulation

pytestmark = [pytest.mark.cluster, pytest.mark.flink, pytest.mark.services]

SOURCE_OPERATOR = "Source__file-source"
FILE_SOURCE_OPERATOR = "Source__file-by-truck"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A degraded 10-truck, 5-hour site (about 16k lines)."""
    path = tmp_path_factory.mktemp("cluster-site") / "site"
    write_simulation(SimulationSpec(trucks=10, hours=5, seed=5).degraded(), path)
    return path


def _lines(site: Path) -> list[str]:
    return [line for _, line in iter_telemetry_lines(site)]


def _prepare(pg_dsn: str, names: TableNames, redis_client: Any, redis_prefix: str, site: Path) -> None:
    """The tables and the site's reference data (as `asset-cycle seed` writes them)."""
    reference, assets = read_reference(site)
    conn = psycopg2.connect(pg_dsn)
    try:
        apply_migrations(conn, names)
        seed_reference(conn, redis_client, names, reference, assets, redis_key_prefix=redis_prefix)
    finally:
        conn.close()


@pytest.mark.parametrize("parallelism", [2, 3])
def test_a_file_at_parallelism_n_is_parsed_in_every_subtask_and_equals_the_replay(
    parallelism: int, flink_cluster: FlinkCluster, site: Path, tmp_path: Path, pg_dsn: str, redis_url: str,
    redis_client: Any, redis_prefix: str, table_names: TableNames,
) -> None:  # fmt: skip
    _prepare(pg_dsn, table_names, redis_client, redis_prefix, site)
    lines = _lines(site)
    settings = job_settings(SourceSettings(kind="file", file_path=str(site)), table_names, pg_dsn, redis_url,
                            redis_prefix, tmp_path, parallelism)  # fmt: skip
    job = submit(flink_cluster, settings, pg_dsn, tmp_path / "application_properties.json")
    wait_finished(job)
    assert_tables_equal_replay(pg_dsn, table_names, site, lines)
    assert len(read_tables(pg_dsn, table_names).closed) > 50
    parsed = subtask_reads(job, "parse+validate")
    assert len(parsed) == parallelism and sum(parsed) == len(lines)
    assert min(parsed) > 0, f"records per parse subtask: {parsed}"  # each TaskManager's interpreter parsed


def assert_read_after_restore(job: Any, expected: int) -> None:
    """The restored file source read exactly ``expected`` records (the REST API's metrics lag by up to
    a second: waited for, then checked once more)."""
    wait_for(job, lambda: records_out(job, SOURCE_OPERATOR) >= expected, f"{expected} records read")
    assert records_out(job, SOURCE_OPERATOR) == expected


def _watched_job(flink_cluster: FlinkCluster, watched: Path, names: TableNames, pg_dsn: str, redis_url: str,
                 redis_prefix: str, tmp_path: Path, parallelism: int, run: str, **flink: Any):  # fmt: skip
    settings = job_settings(SourceSettings(kind="file", file_path=str(watched), monitor_interval_s=0.5), names,
                            pg_dsn, redis_url, redis_prefix, tmp_path, parallelism, **flink)  # fmt: skip
    return submit(flink_cluster, settings, pg_dsn, tmp_path / f"{run}.json")


def test_a_taskmanager_killed_mid_run_and_replaced_the_job_restores_its_last_checkpoint_and_equals_the_replay(
    flink_cluster: FlinkCluster, site: Path, tmp_path: Path, pg_dsn: str, redis_url: str, redis_client: Any,
    redis_prefix: str, table_names: TableNames,
) -> None:  # fmt: skip
    _prepare(pg_dsn, table_names, redis_client, redis_prefix, site)
    lines = _lines(site)
    half = len(lines) // 2
    watched = watched_site(tmp_path / "site", site)
    drop_file(watched, "part-1.jsonl", lines[:half])
    # every slot of the cluster: the job cannot run again until the lost TaskManager is replaced
    job = _watched_job(flink_cluster, watched, table_names, pg_dsn, redis_url, redis_prefix, tmp_path,
                       parallelism=3, run="kill")  # fmt: skip
    try:
        first = expected_last_events(site, lines[:half])
        wait_for(job, lambda: last_events(pg_dsn, table_names) == first, "the first half")
        done = completed_checkpoints(job)
        wait_for(job, lambda: completed_checkpoints(job) > done, "a checkpoint after the first half")

        victim = (flink_cluster.state() or pytest.fail("no cluster state")).taskmanagers[0]
        flink_cluster.kill_taskmanager(victim)  # SIGKILL: nothing is cleaned up
        wait_for(job, lambda: job.status() != "RUNNING" or restored(job) is not None, "the failure to be noticed")
        flink_cluster.add_taskmanager()
        wait_for(job, lambda: restored(job) is not None and job.status() == "RUNNING", "the restore")
        back = restored(job)
        assert back["id"] > done and not back["is_savepoint"], back

        drop_file(watched, "part-2.jsonl", lines[half:])
        everything = expected_last_events(site, lines)
        wait_for(job, lambda: last_events(pg_dsn, table_names) == everything, "the second half")
        # exactly once: the restored source read the second file only, nothing of the first again
        assert_read_after_restore(job, len(lines) - half)
        stop_with_savepoint(job, tmp_path / "savepoints", drain=True)
    finally:
        job.cancel()
    assert_tables_equal_replay(pg_dsn, table_names, site, lines, live=True)


def _copy_tables(pg_dsn: str, source: TableNames, target: TableNames, redis_client: Any, redis_prefix: str) -> None:
    """``target``'s tables created and filled with ``source``'s rows: the reference data too (``asset``,
    ``asset_info``), which the job restored into ``target`` loads its reference snapshot from. Without
    it the restored job's load (a site with its dump regions but no loaders, no assets) replaced the
    savepoint's broadcast state: no load was seen from then on and no cycle closed, sooner or later
    depending on when the snapshot reached each subtask."""
    conn = psycopg2.connect(pg_dsn)
    try:
        apply_migrations(conn, target)
        with conn.cursor() as cur:
            for kind in ("asset", "asset_info", "cycle_tmp", "cycle", "process_info", "dead_letter", "alerts",
                         *LOADER_KINDS):  # fmt: skip
                cur.execute(f'INSERT INTO "{target.schema}"."{target.table_name(kind)}" '
                            f'SELECT * FROM "{source.schema}"."{source.table_name(kind)}"')  # fmt: skip
        conn.commit()
        reference = load_reference_data(conn, redis_client, source, redis_prefix)
        assert reference.sites and all(site.loaders for site in reference.sites.values()), reference
        assert load_reference_data(conn, redis_client, target, redis_prefix) == reference
    finally:
        conn.close()


def test_a_savepoint_taken_at_parallelism_2_restores_at_1_and_at_3_and_equals_the_replay(
    flink_cluster: FlinkCluster, site: Path, tmp_path: Path, pg_dsn: str, redis_url: str, redis_client: Any,
    redis_prefix: str, table_names: TableNames, extra_schema: TableNames,
) -> None:  # fmt: skip
    _prepare(pg_dsn, table_names, redis_client, redis_prefix, site)
    lines = _lines(site)
    half = len(lines) // 2
    watched = watched_site(tmp_path / "site", site)
    drop_file(watched, "part-1.jsonl", lines[:half])
    job = _watched_job(flink_cluster, watched, table_names, pg_dsn, redis_url, redis_prefix, tmp_path, 2, "p2")
    try:
        first = expected_last_events(site, lines[:half])
        wait_for(job, lambda: last_events(pg_dsn, table_names) == first, "the first half")
        savepoint = stop_with_savepoint(job, tmp_path / "savepoints", drain=False)
    finally:
        job.cancel()
    # the second restore continues the same tables, with the same reference data
    _copy_tables(pg_dsn, table_names, extra_schema, redis_client, redis_prefix)
    drop_file(watched, "part-2.jsonl", lines[half:])
    everything = expected_last_events(site, lines)

    for parallelism, names in ((1, table_names), (3, extra_schema)):
        job = _watched_job(flink_cluster, watched, names, pg_dsn, redis_url, redis_prefix, tmp_path, parallelism,
                           f"p{parallelism}", from_savepoint=savepoint)  # fmt: skip
        try:
            wait_for(job, lambda names=names: last_events(pg_dsn, names) == everything, f"the rest at {parallelism}")
            back = restored(job)
            assert back and back["is_savepoint"] and back["external_path"].rstrip("/").endswith(
                Path(savepoint).name), back
            assert_read_after_restore(job, len(lines) - half)
            stop_with_savepoint(job, tmp_path / f"savepoints-{parallelism}", drain=True)
        finally:
            job.cancel()
        assert_tables_equal_replay(pg_dsn, names, site, lines, live=True)

    # the state mattered: a job started cold on the second half writes cycles this run never wrote
    reference = read_reference(site)[0]

    def rows(result: Any) -> set[tuple]:
        return {tuple(sorted(c.as_dict().items())) for c in result.closed}

    cold = replay((("x", line) for line in lines[half:]), reference)
    assert rows(cold) - rows(replay((("x", line) for line in lines), reference))


@pytest.fixture(scope="module")
def long_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A degraded 60-truck, 20-hour site (about 310k lines): many times what the job holds in flight."""
    path = tmp_path_factory.mktemp("cluster-long-site") / "site"
    write_simulation(SimulationSpec(trucks=60, hours=20, seed=7).degraded(), path)
    return path


@contextmanager
def writes_held(pg_dsn: str, names: TableNames, kind: str) -> Iterator[psycopg2.extensions.connection]:
    """The ``kind`` table locked against writes (SHARE: reads go on) until the block ends or the
    returned connection rolls back: the sink that writes it waits, and the job upstream of it stops
    once its buffers are full."""
    conn = psycopg2.connect(pg_dsn)
    try:
        with conn.cursor() as cur:
            cur.execute(f'LOCK TABLE "{names.schema}"."{names.table_name(kind)}" IN SHARE MODE')
        yield conn
    finally:
        conn.rollback()
        conn.close()


def _stalled(job: Any, operator: str, seen: list[tuple[float, int]], for_s: float = 3.0) -> bool:
    """True once ``operator`` emitted records and its count has not moved for ``for_s`` (the REST API's
    metrics are fetched once a second: an unchanged count over less says nothing)."""
    now, count = time.monotonic(), records_out(job, operator)
    seen.append((now, count))
    return count > 0 and any(at <= now - for_s and earlier == count for at, earlier in seen)


def test_a_file_stopped_mid_file_at_parallelism_2_restores_at_1_and_at_3_each_line_once_and_equals_the_replay(
    flink_cluster: FlinkCluster, long_site: Path, tmp_path: Path, pg_dsn: str, redis_url: str, redis_client: Any,
    redis_prefix: str, table_names: TableNames, extra_schema: TableNames,
) -> None:  # fmt: skip
    _prepare(pg_dsn, table_names, redis_client, redis_prefix, long_site)
    lines = _lines(long_site)
    source = SourceSettings(kind="file", file_path=str(long_site))
    with writes_held(pg_dsn, table_names, "cycle_tmp") as held:
        job = submit(flink_cluster, job_settings(source, table_names, pg_dsn, redis_url, redis_prefix, tmp_path, 2),
                     pg_dsn, tmp_path / "p2.json")  # fmt: skip
        try:
            seen: list[tuple[float, int]] = []
            wait_for(job, lambda: _stalled(job, FILE_SOURCE_OPERATOR, seen), "the file's readers to stop")
            # the savepoint's barrier waits behind the held writes: let them go once it is on its way
            threading.Timer(2.0, held.rollback).start()
            savepoint = stop_with_savepoint(job, tmp_path / "savepoints", drain=False)
        finally:
            job.cancel()
    read_before = sum(subtask_reads(job, "file-by-truck"))  # up to the savepoint's barrier, kept once stopped
    assert 0 < read_before < len(lines) // 2, f"{read_before} of {len(lines)} lines read: not mid-file"
    _copy_tables(pg_dsn, table_names, extra_schema, redis_client, redis_prefix)

    for parallelism, names in ((1, table_names), (3, extra_schema)):
        settings = job_settings(source, names, pg_dsn, redis_url, redis_prefix, tmp_path, parallelism,
                                from_savepoint=savepoint)  # fmt: skip
        job = submit(flink_cluster, settings, pg_dsn, tmp_path / f"p{parallelism}.json")
        wait_finished(job)
        back = restored(job)
        assert back and back["is_savepoint"], back
        # exactly once: the restored readers read every line the stopped ones had not, and no other
        reads = subtask_reads(job, "file-by-truck")
        assert len(reads) == parallelism and sum(reads) == len(lines) - read_before, (reads, read_before)
        assert_tables_equal_replay(pg_dsn, names, long_site, lines)
