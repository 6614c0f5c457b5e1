"""The whole job graph (Java batcher, parse, watermarks, keyed operator, split into sinks) into the
in-memory sinks, without PostgreSQL: equal to the replay on a degraded run."""

from __future__ import annotations

import pytest

from job.pipeline import assemble, bounded_reference_stream
from job.settings import AppSettings, FlinkSettings
from job.sources import file_source
from state_machine.identity import dead_letter_id
from state_machine.model import CycleRecord, TruckStatus
from state_machine.truck import closed_sort_key
from tests.job.memory_sinks import MemorySinks
from udfs.reference_poller import snapshot_records
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

pytestmark = [pytest.mark.flink]

LABEL = "file:telemetry.jsonl"


def test_the_job_graph_into_memory_equals_the_replay(tmp_path):
    bundle = tmp_path / "bundle"
    write_simulation(SimulationSpec(trucks=6, hours=4, seed=5).degraded(), bundle)
    reference, _ = read_reference(bundle)
    (bundle / "telemetry.jsonl").open("a").write('{"asset_guid": "T-broken", "timestamp": \n')
    sinks: list[MemorySinks] = []

    def memory(env):
        sinks.append(MemorySinks(env))
        return sinks[0]

    settings = AppSettings(flink=FlinkSettings(parallelism=1, source_idleness_ms=None))
    assemble(settings, memory, lambda env, t_env: file_source(env, bundle, label=LABEL),
             lambda env, t_env: bounded_reference_stream(env, snapshot_records(reference)), check_future=False)  # fmt: skip
    rows = sinks[0].collect()
    expected = replay(((LABEL, line) for _, line in iter_telemetry_lines(bundle)), reference)

    final = {(row["asset_guid"], row["load_start_ms"]): row for row in rows["cycle"]}  # upserts: the last wins
    closed = sorted((CycleRecord(**row) for row in final.values()), key=closed_sort_key)
    assert len(expected.closed) > 50
    assert [c.as_dict() for c in closed] == [c.as_dict() for c in expected.sorted_closed()]
    assert sum(c.queue_seconds is not None for c in closed) > 0.9 * len(closed)
    for kind, fields, key, converter, replayed in (
        ("load_visit", LOAD_VISIT_FIELDS, ("asset_guid", "load_start_ms"), load_visit_row, expected.served),
        ("loader_hour", LOADER_HOUR_FIELDS, ("loader_asset_guid", "hour_start_ms"), loader_hour_row,
         expected.loader_hours),
        ("loader_status", LOADER_STATUS_FIELDS, ("loader_asset_guid",), loader_status_row, expected.loader_status),
        ("truck_hour", TRUCK_HOUR_FIELDS, ("asset_guid", "hour_start_ms"), truck_hour_row, expected.truck_hours),
    ):
        table = {tuple(row[k] for k in key): row for row in rows[kind]}
        wanted = {tuple(r[k] for k in key): r for r in (dict(zip(fields, converter(v), strict=True))
                                                       for v in replayed.values())}  # fmt: skip
        assert wanted and table == wanted, kind
    in_progress = {row["asset_guid"]: CycleRecord(**row) for row in rows["cycle_tmp"]}  # the upsert keeps the last
    assert {k: v.as_dict() for k, v in in_progress.items()} == {k: v.as_dict() for k, v in expected.in_progress.items()}
    statuses = {row["asset_guid"]: TruckStatus(**row) for row in rows["process_info"]}
    assert statuses == expected.statuses
    letters = {row["dead_letter_id"]: row for row in rows["dead_letter"]}
    assert set(letters) == {dead_letter_id(d.source, d.reason, d.raw) for d in expected.dead_letters}
    assert any(row["reason"] == "BAD_JSON" and row["source"].endswith(f":{sum(1 for _ in iter_telemetry_lines(bundle))}")
               for row in letters.values())  # fmt: skip
