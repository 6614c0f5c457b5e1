"""Fixtures of the live view's tests: ``bundle_run``, a real job run (``asset-cycle run --source file:``) on a
degraded simulated site into a throwaway schema, with the engine's replay of the same bundle and a live
view serving the schema (session-wide: the API tests and the browser tests share it)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from stores.connections import RedisSettings
from stores.postgres import TableNames
from tests.job.reliability_support import CliRun, cli_env, free_port
from tests.web.support import STALE_TRUCK_S, BundleRun, drop_run_data, serving
from web.settings import ServeSettings
from workbench.bundle import iter_telemetry_lines, read_reference
from workbench.replay import replay
from workbench.simulator import SimulationSpec, write_simulation


@pytest.fixture(scope="session")
def bundle_run(tmp_path_factory: pytest.TempPathFactory, pg_dsn: str, redis_url: str, redis_client: Any) -> Iterator[BundleRun]:
    base = tmp_path_factory.mktemp("web-api")
    bundle = base / "site"
    write_simulation(SimulationSpec(trucks=6, hours=3, seed=5).degraded(), bundle)
    schema, prefix = f"t_{uuid.uuid4().hex[:16]}", f"test:{uuid.uuid4().hex[:16]}:"
    cli = CliRun(["--source", f"file:{bundle}", "--schema", schema, "--redis-prefix", prefix, "--rest-port",
                  str(free_port()), "--checkpoint-dir", str(base / "cp")], cli_env(pg_dsn, redis_url),
                 base / "run.log")  # fmt: skip
    try:
        assert cli.wait(400) == 0, cli.output()[-3000:]
        expected = replay(((f"file:{bundle}", line) for _, line in iter_telemetry_lines(bundle)),
                          read_reference(bundle)[0])  # fmt: skip
        names = TableNames(schema=schema)
        settings = ServeSettings(database=pg_dsn, names=names, redis=RedisSettings.from_url(redis_url),
                                 redis_prefix=prefix, port=0, stale_truck_s=STALE_TRUCK_S)  # fmt: skip
        with serving(settings) as url:
            yield BundleRun(bundle, names, prefix, expected, url)
    finally:
        drop_run_data(pg_dsn, redis_client, schema, prefix)


