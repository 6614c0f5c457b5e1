"""Crash and resume locally: ``asset-cycle run`` keeps its checkpoints on disk; the client and its
Flink JVM are killed with SIGKILL while it reads a file (nothing cleaned up, as in a crash), and
``asset-cycle run --resume`` with the same options restores the latest retained checkpoint.

The restore is proved, not assumed (a run that ignored the checkpoint would end with the same tables:
upserts are idempotent and the replay deterministic): the REST API names the restored checkpoint, the
resumed run reads fewer records than the whole input (the file source's position came back: it does
not read the first file again), and the tables equal the replay of the whole input (the trucks'
keyed state came back: a cold start on the rest of the input would not close the cycles open at the
kill). Restoring deliberately broken state fails with one line and writes nothing.

The input is a watched directory, so the first run cannot finish before it is killed however fast the
machine: the first file is read, the second dropped only once the resumed run is up.
"""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from cli.checkpoints import latest_checkpoint
from stores.postgres import TableNames
from tests.job.reliability_support import (
    CliRun,
    assert_tables_equal_replay,
    cli_env,
    drop_file,
    expected_last_events,
    free_port,
    last_events,
    records_in,
    restored_checkpoint,
    snapshot,
    watched_site,
)
from workbench.bundle import iter_telemetry_lines
from workbench.simulator import SimulationSpec, write_simulation

pytestmark = [pytest.mark.flink, pytest.mark.services, pytest.mark.slow]


def test_killed_while_reading_then_resumed_from_the_checkpoint(
        tmp_path: Path, pg_dsn: str, redis_url: str, table_names: TableNames, redis_prefix: str) -> None:
    bundle = tmp_path / "site"
    write_simulation(SimulationSpec(trucks=60, hours=20, seed=9).degraded(), bundle)
    lines = [line for _, line in iter_telemetry_lines(bundle)]
    half = len(lines) // 2
    watched = watched_site(tmp_path / "watched", bundle)
    checkpoints = tmp_path / "checkpoints"
    args = ["--source", f"file:{watched}", "--monitor-s", "0.5", "--schema", table_names.schema,
            "--redis-prefix", redis_prefix, "--checkpoint-dir", str(checkpoints), "--checkpoint-interval", "1000",
            "--parallelism", "1", "--progress-s", "1", "--savepoint-dir", str(tmp_path / "savepoints"),
            "--drain"]  # fmt: skip
    env = cli_env(pg_dsn, redis_url)

    drop_file(watched, "part-1.jsonl", lines[:half])
    first = CliRun([*args, "--rest-port", str(free_port())], env, tmp_path / "run1.log")
    try:
        first.wait_for(lambda: len(last_events(pg_dsn, table_names)) > 0, 300, "the first rows")
        written = latest_checkpoint(checkpoints)
        first.wait_for(lambda: latest_checkpoint(checkpoints) not in (None, written), 120,
                       "a checkpoint after the first rows")  # fmt: skip
        first.kill_hard()
    finally:
        first.stop()
    killed_at = latest_checkpoint(checkpoints)
    assert killed_at is not None

    port = free_port()
    second = CliRun([*args, "--rest-port", str(port), "--resume"], env, tmp_path / "run2.log")
    try:
        second.wait_for_line("job running", 300)
        seen: dict = {}
        second.wait_for(lambda: seen.update(restored=restored_checkpoint(port)) or seen["restored"] is not None, 60,
                        "the restored checkpoint (REST API)")  # fmt: skip
        restored = seen["restored"]
        drop_file(watched, "part-2.jsonl", lines[half:])
        everything = expected_last_events(bundle, lines)
        second.wait_for(lambda: last_events(pg_dsn, table_names) == everything, 600, "the whole input")
        # the reporter's count settles (every record is in: nothing more arrives)
        second.wait_for(lambda: len(records_in(second.output())) >= 2 and
                        records_in(second.output())[-1] == records_in(second.output())[-2] >= len(lines) - half,
                        60, "the records-in count of the resumed run to settle")  # fmt: skip
        rc = second.signal(signal.SIGINT, 300)
    finally:
        second.stop()
    out = second.output()
    assert rc == 0 and "Traceback" not in out, out[-3000:]
    assert f"resuming from checkpoint {killed_at}" in out, out
    assert restored["id"] == int(killed_at.name.split("-")[1]) and restored["external_path"].rstrip("/").endswith(
        f"{killed_at.parent.name}/{killed_at.name}"), (restored, killed_at)  # fmt: skip
    read = records_in(out)[-1]
    assert len(lines) - half <= read < len(lines), f"the resumed run read {read} of {len(lines)} records"
    assert_tables_equal_replay(pg_dsn, table_names, bundle, lines)

    # restoring deliberately broken state: the job does not start from scratch; one line, nothing written
    before = snapshot(pg_dsn, table_names)
    metadata = killed_at / "_metadata"
    metadata.write_bytes(metadata.read_bytes()[:200])
    assert latest_checkpoint(checkpoints) == killed_at
    third = CliRun([*args, "--rest-port", str(free_port()), "--resume"], env, tmp_path / "run3.log")
    assert third.wait(300) != 0
    out = third.output()
    assert "Traceback" not in out, out[-3000:]
    assert f"error: the job could not start from {killed_at}: " in out, out[-3000:]
    assert snapshot(pg_dsn, table_names) == before
    print(f"\nkilled after checkpoint {killed_at.name}; restored checkpoint {restored['id']} (REST); the resumed run "
          f"read {read:,} of {len(lines):,} records; tables == replay; a broken checkpoint refused")
