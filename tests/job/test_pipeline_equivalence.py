"""The Flink job equals the offline replay on a realistic degraded run (20 trucks x 8 h)."""

from __future__ import annotations

import pytest

from state_machine.identity import dead_letter_id
from tests.job.flink_harness import SOURCE_LABEL, loader_table_differences, read_tables, run_bundle
from workbench.bundle import iter_telemetry_lines, read_reference
from workbench.replay import replay
from workbench.simulator import SimulationSpec, write_simulation

pytestmark = [pytest.mark.flink, pytest.mark.services, pytest.mark.slow]


def test_flink_tables_equal_replay_on_a_degraded_20_truck_8_hour_run(tmp_path, pg_dsn, table_names):
    bundle = tmp_path / "bundle"
    stats = write_simulation(SimulationSpec(trucks=20, hours=8, seed=11).degraded(), bundle)
    reference, _ = read_reference(bundle)
    lines = [line for _, line in iter_telemetry_lines(bundle)]
    assert len(lines) == stats.lines

    result = run_bundle(bundle, table_names, pg_dsn)
    print(f"\n{result.records} records in {result.seconds:.1f} s = {result.events_per_s:.0f} events/s (incl. start-up)")
    expected = replay(((SOURCE_LABEL, line) for line in lines), reference)
    tables = read_tables(pg_dsn, table_names)

    assert len(expected.closed) > 300
    assert [c.as_dict() for c in tables.closed] == [c.as_dict() for c in expected.sorted_closed()]
    assert {k: v.as_dict() for k, v in tables.in_progress.items()} == {
        k: v.as_dict() for k, v in expected.in_progress.items()
    }
    assert tables.statuses == expected.statuses
    assert {d["dead_letter_id"] for d in tables.dead_letters} == {
        dead_letter_id(d.source, d.reason, d.raw) for d in expected.dead_letters
    }
    assert sum(c.queue_seconds is not None for c in tables.closed) > 0.95 * len(tables.closed)
    differences = loader_table_differences(tables, expected)
    assert not differences, differences
