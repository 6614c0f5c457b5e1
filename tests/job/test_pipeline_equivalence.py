"""The Flink job equals the offline replay on a realistic degraded run (20 trucks x 8 h)."""

from __future__ import annotations

import pytest

from state_machine.identity import dead_letter_id
from tests.job.flink_harness import SOURCE_LABEL, read_tables, run_bundle
from udfs.rows import (
    LOAD_VISIT_FIELDS,
    LOADER_HOUR_FIELDS,
    LOADER_STATUS_FIELDS,
    TRUCK_HOUR_FIELDS,
    load_visit_row,
    loader_hour_row,
    loader_status_row,
    truck_hour_row,
)
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
    for kind, fields, key, converter, replayed in (
        ("load_visit", LOAD_VISIT_FIELDS, ("asset_guid", "load_start_ms"), load_visit_row, expected.served),
        ("loader_hour", LOADER_HOUR_FIELDS, ("loader_asset_guid", "hour_start_ms"), loader_hour_row,
         expected.loader_hours),
        ("loader_status", LOADER_STATUS_FIELDS, ("loader_asset_guid",), loader_status_row, expected.loader_status),
        ("truck_hour", TRUCK_HOUR_FIELDS, ("asset_guid", "hour_start_ms"), truck_hour_row, expected.truck_hours),
    ):
        wanted = {tuple(r[k] for k in key): r for r in (dict(zip(fields, converter(v), strict=True))
                                                       for v in replayed.values())}  # fmt: skip
        got = tables.loader_rows[kind]
        assert wanted and got == wanted, (kind, [(k, {f: (got.get(k, {}).get(f), v[f]) for f in v if got.get(k, {}).get(f) != v[f]}) for k, v in wanted.items() if got.get(k) != v][:3])
