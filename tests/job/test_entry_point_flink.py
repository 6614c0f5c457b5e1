"""The job's own entry point, driven by an application properties file alone: ``python -m job.main
--local-properties FILE`` (what MSF, the FlinkDeployment and ``flink run -py job/main.py`` run) with
a file source, reference data loaded once from PostgreSQL and Redis, and the JDBC sinks. The job
ends with the file; its tables equal the replay of the bundle."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psycopg2
import pytest

from stores.postgres import TableNames, apply_migrations
from stores.reference import seed_reference
from tests.job.flink_harness import jdbc_url, pg_params, read_tables
from tests.job.kinesis_support import properties_file
from tests.job.reliability_support import PROJECT_ROOT, assert_tables_equal_replay, free_port
from workbench.bundle import iter_telemetry_lines, read_reference
from workbench.simulator import SimulationSpec, write_simulation

pytestmark = [pytest.mark.flink, pytest.mark.services]


def test_the_entry_point_runs_the_job_its_properties_describe(
    tmp_path: Path, pg_dsn: str, table_names: TableNames, redis_client, redis_prefix: str
) -> None:
    bundle = tmp_path / "site"
    write_simulation(SimulationSpec(trucks=4, hours=2, seed=11).degraded(), bundle)
    reference, assets = read_reference(bundle)
    conn = psycopg2.connect(pg_dsn)
    try:
        apply_migrations(conn, table_names)
        seed_reference(conn, redis_client, table_names, reference, assets, redis_key_prefix=redis_prefix)
    finally:
        conn.close()
    redis = redis_client.connection_pool.connection_kwargs
    props = properties_file(tmp_path / "application_properties.json", {
        "SourceConfig": {"source.kind": "file", "file.path": str(bundle)},
        "SinkConfig": {"jdbc.url": jdbc_url(pg_dsn), "schema": table_names.schema},
        "ReferenceConfig": {"redis.host": str(redis.get("host", "127.0.0.1")), "redis.port": str(redis.get("port", 6379)),
                            "redis.key.prefix": redis_prefix, "reference.poll.interval.s": "0"},
        "FlinkConfig": {"parallelism": "1", "rest.port": str(free_port()), "checkpoint.dir": str(tmp_path / "ck")},
    })  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "ASSET_CYCLE_LOCAL"}
    env["ASSET_CYCLE_PG_USER"] = pg_params(pg_dsn).get("user", "postgres")
    proc = subprocess.run([sys.executable, "-m", "job.main", "--local-properties", str(props)], cwd=PROJECT_ROOT,
                          env=env, capture_output=True, text=True, timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert len(read_tables(pg_dsn, table_names).closed) > 10
    lines = [line for _, line in iter_telemetry_lines(bundle)]
    assert_tables_equal_replay(pg_dsn, table_names, bundle, lines)
