"""Local reprocessing on the minicluster: stop with a savepoint, restore, re-run from scratch.

The job runs through the real CLI (``python -m cli run``, i.e. ``asset-cycle run``) on a watched
directory (``--source file:DIR --monitor-s``): the first half of a bundle's telemetry is in the
directory, the job processes it and is stopped with Ctrl-C (SIGINT) into a savepoint; the second
half is added and the job restarted from the savepoint (the FileSource state remembers that the
first file was read) and finally stopped with ``--drain`` (end of event time, like the end of a
file). The tables must equal one uninterrupted run and the offline replay of the whole bundle.

The restore is proved (equal tables alone would not: upserts are idempotent and the replay
deterministic, so a second run that ignored the savepoint and read both files would end the same):
the REST API names the savepoint the job was restored from, the restored run reads exactly the second
file's records (the first is not read again), and its closed cycles include ones whose load started
in the first file and ended in the second, which only the restored keyed state could close.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from state_machine.identity import dead_letter_id
from state_machine.stream import StreamParser
from stores.postgres import TableNames
from tests.job.flink_harness import read_tables, run_bundle, table_snapshot
from tests.job.reliability_support import (
    PROJECT_ROOT,
    CliRun,
    cli_env,
    drop_file,
    expected_last_events,
    free_port,
    last_events,
    records_in,
    restored_checkpoint,
    throwaway_schema,
    watched_site,
)
from workbench.bundle import iter_telemetry_lines, read_reference
from workbench.replay import Replayer, replay
from workbench.simulator import SimulationSpec, write_simulation

VOLATILE = ("updated_at", "received_utc")  # processing-time columns
SPEC = SimulationSpec(trucks=8, hours=4, seed=5)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A degraded 8-truck, 4-hour site bundle (about 10k lines)."""
    path = tmp_path_factory.mktemp("savepoint-site") / "site"
    write_simulation(SPEC.degraded(), path)
    return path


def _lines(site: Path) -> list[str]:
    return [line for _, line in iter_telemetry_lines(site)]


def _interrupt(run: CliRun) -> str:
    """Ctrl-C; returns the savepoint path the job printed."""
    assert run.signal(signal.SIGINT, 180) == 0, run.output()[-4000:]
    found = re.findall(r"^savepoint: (\S+)$", run.output(), re.MULTILINE)
    assert found, f"no savepoint reported:\n{run.output()[-4000:]}"
    return found[-1]


def _assert_equals_replay(pg_dsn: str, names: TableNames, expected: Any) -> None:
    tables = read_tables(pg_dsn, names)
    assert len(tables.closed) > 40
    assert [c.as_dict() for c in tables.closed] == [c.as_dict() for c in expected.sorted_closed()]
    assert {k: v.as_dict() for k, v in tables.in_progress.items()} == {
        k: v.as_dict() for k, v in expected.in_progress.items()
    }
    assert tables.statuses == expected.statuses
    assert {d["dead_letter_id"] for d in tables.dead_letters} == {
        dead_letter_id(d.source, d.reason, d.raw) for d in expected.dead_letters
    }


# --------------------------------------------------------------------------- pure replay


def test_losing_the_parse_watermark_on_restore_changes_no_output(site: Path) -> None:
    """The parse step's stream time and lateness estimate are not in Flink state: after a restore they
    start again from the first records read (the hold at its maximum until the site is measured again).
    Modelled in the replay (parser reset at a split point, no Flink watermark helping), the output is
    unchanged for split points all over the bundle."""
    reference, _ = read_reference(site)
    lines = _lines(site)

    def run(split: int | None) -> tuple:
        r = Replayer(reference)
        for i, line in enumerate(lines):
            if i == split:
                r.parser = StreamParser(r.parser.source, r.parser.watermarks.lag_ms, r.parser.watermarks.max_jump_ms)
            r.feed("x", line)
        res = r.finish()
        return ([c.as_dict() for c in res.sorted_closed()], {k: v.as_dict() for k, v in res.in_progress.items()},
                res.statuses, sorted((d.reason, d.raw) for d in res.dead_letters))  # fmt: skip

    uninterrupted = run(None)
    step = len(lines) // 8
    for split in range(step, len(lines), step):
        assert run(split) == uninterrupted, f"restore after line {split} changes the output"


# --------------------------------------------------------------------------- minicluster


@pytest.mark.flink
@pytest.mark.services
@pytest.mark.slow
def test_half_run_savepoint_restore_equals_an_uninterrupted_run(
    tmp_path: Path, site: Path, pg_dsn: str, redis_url: str, redis_prefix: str, table_names: TableNames
) -> None:
    lines = _lines(site)
    half = len(lines) // 2
    # the watched directory holds only telemetry; `run` seeds the reference data (assets.csv,
    # regions.geojson) from its parent, as for `--source file:SITE/incoming`
    watched = watched_site(tmp_path / "site", site)
    savepoints = tmp_path / "savepoints"
    env = cli_env(pg_dsn, redis_url)
    common = ["--source", f"file:{watched}", "--monitor-s", "0.5", "--schema", table_names.schema,
              "--redis-prefix", redis_prefix, "--savepoint-dir", str(savepoints), "--parallelism", "1",
              "--checkpoint-interval", "60000", "--checkpoint-dir", str(tmp_path / "checkpoints")]  # fmt: skip
    label = f"file:{watched}"

    # 1) the first half, stopped with Ctrl-C into a savepoint once it is processed
    drop_file(watched, "part-1.jsonl", lines[:half])
    first = expected_last_events(site, lines[:half])
    t0 = time.monotonic()
    job = CliRun([*common, "--rest-port", str(free_port())], env, tmp_path / "run1.log")
    try:
        job.wait_for(lambda: last_events(pg_dsn, table_names) == first, 300, "the first half")
        savepoint = _interrupt(job)
    finally:
        job.stop()
    t1 = time.monotonic()
    assert Path(savepoint).is_dir() and Path(savepoint).resolve().is_relative_to(savepoints.resolve())
    mid = read_tables(pg_dsn, table_names)
    assert mid.closed, "cycles closed during the first half"

    # 2) the second half added; restart from the savepoint; final stop drains (end of input)
    drop_file(watched, "part-2.jsonl", lines[half:])
    everything = expected_last_events(site, lines)
    port = free_port()
    job = CliRun([*common, "--rest-port", str(port), "--from-savepoint", savepoint, "--drain"], env,
                 tmp_path / "run2.log")  # fmt: skip
    try:
        seen: dict = {}
        job.wait_for(lambda: seen.update(restored=restored_checkpoint(port)) or seen["restored"] is not None, 300,
                     "the restored savepoint (REST API)")  # fmt: skip
        restored = seen["restored"]
        job.wait_for(lambda: last_events(pg_dsn, table_names) == everything, 300, "the second half")
        job.wait_for(lambda: records_in(job.output())[-2:] == [len(lines) - half] * 2, 60,
                     "the restored run's records-in count to settle on the second file's")  # fmt: skip
        _interrupt(job)
    finally:
        job.stop()
    t2 = time.monotonic()
    assert restored["is_savepoint"] and Path(restored["external_path"].removeprefix("file:")).resolve() == \
        Path(savepoint).resolve(), restored
    assert max(records_in(job.output())) == len(lines) - half  # the first file was not read again
    split_ms = max(ts for ts in first.values())
    spanning = [c for c in read_tables(pg_dsn, table_names).closed
                if c.load_start_ms < split_ms - 600_000 and c.cycle_end_ms > split_ms]  # fmt: skip
    assert spanning, "no cycle spans the savepoint: the restore of keyed state is not exercised"

    expected = replay(((label, line) for line in lines), read_reference(site)[0])
    _assert_equals_replay(pg_dsn, table_names, expected)
    # one run read two files, the other one: a dead letter's source position (and so its id) differs
    positions = ("dead_letter_id", "source")
    restored = table_snapshot(pg_dsn, table_names, exclude=VOLATILE + positions)

    # 3) one uninterrupted run of the whole bundle into another schema: the same rows
    with throwaway_schema(pg_dsn) as other:
        run_bundle(site, other, pg_dsn, source_label=label)
        assert table_snapshot(pg_dsn, other, exclude=VOLATILE + positions) == restored
    print(f"\nhalf run + savepoint {t1 - t0:.1f} s, restore + rest {t2 - t1:.1f} s, "
          f"uninterrupted {time.monotonic() - t2:.1f} s")  # fmt: skip


@pytest.mark.flink
@pytest.mark.services
@pytest.mark.slow
def test_full_rerun_from_the_start_of_the_file_changes_no_row(
    tmp_path: Path, site: Path, pg_dsn: str, redis_url: str, redis_prefix: str, table_names: TableNames
) -> None:
    label = f"file:{site}"
    run_bundle(site, table_names, pg_dsn, source_label=label)
    before = table_snapshot(pg_dsn, table_names, exclude=VOLATILE)
    assert before["cycle"] and before["cycle_tmp"] and before["process_info"]

    # the documented command: `asset-cycle run --source file:SITE` with fresh state, same tables
    env = cli_env(pg_dsn, redis_url)
    proc = subprocess.run([sys.executable, "-m", "cli", "run", "--source", label, "--schema", table_names.schema,
                           "--redis-prefix", redis_prefix, "--parallelism", "1", "--rest-port", str(free_port()),
                           "--checkpoint-dir", str(tmp_path / "checkpoints")],
                          cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert table_snapshot(pg_dsn, table_names, exclude=VOLATILE) == before
