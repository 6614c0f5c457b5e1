"""Kill -9 the production graph mid-stream and restart it from its last checkpoint: the tables
equal the replay, nothing lost or duplicated.

The job runs as a user runs it (``asset-cycle run --local-properties FILE``: Kinesis source from
the emulator, reference data polled from PostgreSQL + Redis, JDBC sinks), in its own process group.
Half the records are put before the job starts and the rest while it is down, so its one reader
consumes a backlog in arrival order both times (see tests/job/kinesis_support.py); the restarted
job restores each shard's sequence number from the checkpoint and goes on in that order.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from stores.postgres import TableNames
from stores.reference import seed_reference
from tests.job.flink_harness import jdbc_url, pg_params, read_tables
from tests.job.kinesis_emulator import ACCESS_KEY, REGION, SECRET_KEY, KinesisEmulator
from tests.job.kinesis_support import (
    arrival_order,
    migrate,
    properties_file,
    put_lines,
    source_records_out,
    stream_records,
)
from tests.job.reliability_support import free_port, rest_get
from tests.job.test_kinesis_flink import _assert_tables_equal_replay
from workbench.simulator import SimulationSpec, simulate

pytestmark = [pytest.mark.flink, pytest.mark.services, pytest.mark.kinesis, pytest.mark.slow]

STREAM = "restart"


def _job_id(port: int) -> str | None:
    jobs = (rest_get(port, "/jobs") or {}).get("jobs", [])
    running = [j["id"] for j in jobs if j.get("status") == "RUNNING"]
    return running[0] if running else None




def _completed_checkpoints(port: int, job_id: str) -> int:
    return ((rest_get(port, f"/jobs/{job_id}/checkpoints") or {}).get("counts") or {}).get("completed", 0)


def _put_end_markers(client, arn: str) -> set[str]:
    """One bad record per shard after everything else (it arrives last there): once the job has
    dead-lettered all of them, it has read every record before them."""
    shards = client.list_shards(StreamARN=arn)["Shards"]
    markers = set()
    for shard in shards:
        low, high = int(shard["HashKeyRange"]["StartingHashKey"]), int(shard["HashKeyRange"]["EndingHashKey"])
        key = next(k for k in (f"end-{shard['ShardId']}-{i}" for i in range(10_000))
                   if low <= int(hashlib.md5(k.encode()).hexdigest(), 16) <= high)  # fmt: skip
        marker = f"end of the test input in {shard['ShardId']}"
        client.put_record(StreamARN=arn, PartitionKey=key, Data=marker.encode())
        markers.add(marker)
    return markers


def _dead_lettered(pg_dsn: str, names: TableNames, raws: set[str]) -> bool:
    return raws <= {d["raw"] for d in read_tables(pg_dsn, names).dead_letters}


def _latest_checkpoint(directory: Path) -> Path:
    done = [p.parent for p in directory.glob("*/chk-*/_metadata")]
    assert done, f"no completed checkpoint under {directory}"
    return max(done, key=lambda p: int(p.name.split("-")[1]))


def _start(props: Path, port: int, log: Path, *extra: str) -> subprocess.Popen:
    env = dict(os.environ, AWS_ACCESS_KEY_ID=ACCESS_KEY, AWS_SECRET_ACCESS_KEY=SECRET_KEY, AWS_REGION=REGION)
    with open(log, "ab") as out:
        return subprocess.Popen([sys.executable, "-m", "cli", "run", "--local-properties", str(props), *extra],
                                stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)  # fmt: skip


def _wait(predicate, timeout_s: float, what: str, proc: subprocess.Popen, log: Path):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if proc.poll() is not None:
            raise AssertionError(f"the job exited ({proc.returncode}) while waiting for {what}:\n"
                                 + log.read_text()[-3000:])  # fmt: skip
        time.sleep(0.5)
    raise TimeoutError(f"{what} not reached in {timeout_s:.0f} s:\n" + log.read_text()[-3000:])


def test_killed_mid_stream_and_restarted_from_the_last_checkpoint_equals_the_replay(
    tmp_path, pg_dsn, table_names: TableNames, redis_client, redis_prefix
):
    site = simulate(SimulationSpec(trucks=6, hours=3, seed=29).degraded())
    migrate(pg_dsn, table_names)
    import psycopg2

    conn = psycopg2.connect(pg_dsn)
    try:
        seed_reference(conn, redis_client, table_names, site.reference, site.assets, redis_key_prefix=redis_prefix)
    finally:
        conn.close()

    with KinesisEmulator() as kinesis:
        arn = kinesis.create_stream(STREAM, shards=4)
        client = kinesis.client()
        lines = site.telemetry_lines
        put_lines(client, arn, lines[: len(lines) // 2])  # the rest (and the end markers) while the job is down
        checkpoints = tmp_path / "checkpoints"
        port = free_port()
        redis = redis_client.connection_pool.connection_kwargs

        def props(rest_port: int) -> Path:
            return properties_file(tmp_path / f"application_properties-{rest_port}.json", {
                "SourceConfig": {"stream.arn": arn, "aws.endpoint": kinesis.endpoint,
                                 "source.init.position": "TRIM_HORIZON", "source.shard.discovery.interval": "1 s"},
                "SinkConfig": {"jdbc.url": jdbc_url(pg_dsn), "schema": table_names.schema},
                "ReferenceConfig": {"redis.host": str(redis.get("host", "127.0.0.1")),
                                    "redis.port": str(redis.get("port", 6379)), "redis.key.prefix": redis_prefix,
                                    "reference.poll.interval.s": "1"},
                "FlinkConfig": {"parallelism": "1", "checkpoint.interval.ms": "1500", "checkpoint.dir": str(checkpoints),
                                "rest.port": str(rest_port), "source.idleness.ms": "0", "restart.attempts": "0"},
            })  # fmt: skip

        os.environ.setdefault("ASSET_CYCLE_PG_USER", pg_params(pg_dsn).get("user", "postgres"))
        log = tmp_path / "job.log"

        # first run: killed (-9, the whole process group) once a third is in and a checkpoint exists;
        # the producer goes on while the job is down
        first = _start(props(port), port, log)
        try:
            job_id = _wait(lambda: _job_id(port), 120, "the job to run", first, log)
            _wait(lambda: source_records_out(port, job_id, "kinesis-source") >= len(lines) // 3
                  and _completed_checkpoints(port, job_id) >= 1, 300, "a third of the records", first, log)  # fmt: skip
        finally:
            os.killpg(first.pid, signal.SIGKILL)
            first.wait()
        put_lines(client, arn, lines[len(lines) // 2:])
        markers = _put_end_markers(client, arn)
        total = len(lines) + len(markers)
        read_before_kill = len(read_tables(pg_dsn, table_names).statuses)
        restore_from = _latest_checkpoint(checkpoints)

        # second run: from the last checkpoint; drained when the source has caught up
        port = free_port()  # the killed JVM may hold the first port for a moment
        second = _start(props(port), port, log, "--from-savepoint", str(restore_from),
                        "--savepoint-dir", str(tmp_path / "savepoints"), "--drain")  # fmt: skip
        try:
            job_id = _wait(lambda: _job_id(port), 120, "the restored job to run", second, log)
            _wait(lambda: _dead_lettered(pg_dsn, table_names, markers), 300, "the restored job to read to the end",
                  second, log)  # fmt: skip
            resumed_records = _wait(lambda: source_records_out(port, job_id, "kinesis-source"), 30,
                                    "the source's record count", second, log)  # fmt: skip
            second.send_signal(signal.SIGTERM)
            assert second.wait(120) in (0, 130), log.read_text()[-3000:]
        finally:
            if second.poll() is None:
                os.killpg(second.pid, signal.SIGKILL)
                second.wait()

        ordered = arrival_order(stream_records(client, arn))
    assert read_before_kill > 0
    assert 0 < resumed_records < total  # it went on from the checkpoint's sequence numbers, not from the start
    print(f"\nkilled after a checkpoint, restored from {restore_from.name}: the restored run read {resumed_records} "
          f"of {total} records")
    assert "savepoint:" in log.read_text()
    _assert_tables_equal_replay(pg_dsn, table_names, STREAM, [r.data for r in ordered], site.reference)
