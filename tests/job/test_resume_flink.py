"""Crash and resume locally: ``asset-cycle run`` keeps its checkpoints on disk; the client and its
Flink JVM are killed with SIGKILL in the middle of a file (nothing cleaned up, as in a crash), and
``asset-cycle run --resume`` with the same options restores the latest retained checkpoint and
finishes the file: the tables equal the replay of the whole file, nothing lost, nothing twice."""

from __future__ import annotations

from pathlib import Path

import pytest

from cli.checkpoints import latest_checkpoint
from stores.postgres import TableNames
from tests.job.reliability_support import CliRun, assert_tables_equal_replay, cli_env, free_port, last_events
from workbench.bundle import iter_telemetry_lines
from workbench.simulator import SimulationSpec, write_simulation

pytestmark = [pytest.mark.flink, pytest.mark.services, pytest.mark.slow]


def test_killed_mid_file_then_resumed_the_tables_equal_the_replay(
        tmp_path: Path, pg_dsn: str, redis_url: str, table_names: TableNames, redis_prefix: str) -> None:
    bundle = tmp_path / "site"
    write_simulation(SimulationSpec(trucks=60, hours=20, seed=9).degraded(), bundle)
    lines = [line for _, line in iter_telemetry_lines(bundle)]
    checkpoints = tmp_path / "checkpoints"
    args = ["--source", f"file:{bundle}", "--schema", table_names.schema, "--redis-prefix", redis_prefix,
            "--checkpoint-dir", str(checkpoints), "--checkpoint-interval", "1000", "--parallelism", "1",
            "--progress-s", "1"]  # fmt: skip
    env = cli_env(pg_dsn, redis_url)

    first = CliRun([*args, "--rest-port", str(free_port())], env, tmp_path / "run1.log")
    try:
        first.wait_for(lambda: len(last_events(pg_dsn, table_names)) > 0, 300, "the first rows")
        written = latest_checkpoint(checkpoints)
        first.wait_for(lambda: latest_checkpoint(checkpoints) not in (None, written), 120,
                       "a checkpoint after the first rows")  # fmt: skip
        first.kill_hard()
    finally:
        first.stop()
    assert "finished in" not in first.output(), "the file was done before the kill: make it longer"
    killed_at = latest_checkpoint(checkpoints)
    assert killed_at is not None

    second = CliRun([*args, "--rest-port", str(free_port()), "--resume"], env, tmp_path / "run2.log")
    assert second.wait(600) == 0, second.output()[-3000:]
    out = second.output()
    assert f"resuming from checkpoint {killed_at}" in out or f"resuming from checkpoint {checkpoints}" in out, out
    assert "finished in " in out and "Traceback" not in out
    assert_tables_equal_replay(pg_dsn, table_names, bundle, lines)
    print(f"\nkilled after checkpoint {killed_at.name}; resumed and finished: {len(lines)} lines, tables == replay")
