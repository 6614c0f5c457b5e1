"""The replay with and without live (speculative) rows: a bounded input's final rows do not depend on it;
and the replay of a stream split by truck, each part through a parser of its own, gives the rows of the
whole stream.

The job computes the live view only for unbounded inputs (job.pipeline.assemble); this is what makes
that safe for a history replay: every closed cycle, final in-progress row, status row, dead letter
and alert is the same.
"""

from __future__ import annotations

import json
import zlib

import pytest

from state_machine.model import TelemetryPoint
from state_machine.telemetry import parse_record
from tests.workbench.partitioned_replay import replay_parts
from workbench.replay import replay
from workbench.simulator import SCENARIO_FAMILIES, scenario_spec, simulate


@pytest.mark.parametrize("name", list(SCENARIO_FAMILIES))
def test_live_rows_do_not_change_what_a_bounded_replay_ends_with(name: str):
    sim = simulate(scenario_spec(name, trucks=6, hours=3.0, seed=5).degraded())
    lines = [line for _, line in sim.deliveries]

    def run(speculative: bool):
        return replay((("file:x", line) for line in lines), sim.reference, speculative=speculative)

    live, committed = run(True), run(False)
    assert live.sorted_closed() == committed.sorted_closed()
    assert len(live.closed) > 0
    assert live.in_progress and live.in_progress == committed.in_progress
    assert live.statuses == committed.statuses
    assert live.dead_letters == committed.dead_letters
    assert live.alerts == committed.alerts
    assert (live.applied_points, live.duplicates, live.reordered, live.non_truck) == (
        committed.applied_points, committed.duplicates, committed.reordered, committed.non_truck)
    assert live.truck_hours == committed.truck_hours and committed.truck_hours
    assert (live.served, live.loader_hours, live.loader_status) == (
        committed.served, committed.loader_hours, committed.loader_status)


def test_a_truck_that_goes_quiet_has_its_last_hour_reported_in_a_bounded_replay():
    """One truck stops reporting an hour into a 7 h run; its open cycle closes IDLE_TIMEOUT while the
    others go on. The bounded replay reports its last hour as the live one does."""
    spec = scenario_spec("clean", trucks=3, hours=7.0, seed=5)
    sim = simulate(spec)
    quiet = sorted({a[0] for a in sim.assets if a[2] == "HAUL_TRUCK"})[0]
    silence_from = spec.start_ms + 3_600_000
    lines = [line for _, line in sim.deliveries
             if not (quiet in line and isinstance(p := parse_record(line), TelemetryPoint) and p.ts_ms >= silence_from)]

    def run(speculative: bool):
        return replay((("file:x", line) for line in lines), sim.reference, speculative=speculative)

    live, committed = run(True), run(False)
    assert [c.invalid_reason for c in committed.closed if c.asset_guid == quiet][-1] == "IDLE_TIMEOUT"
    last = max(p.ts_ms for line in lines if quiet in line and isinstance(p := parse_record(line), TelemetryPoint))
    quiet_hours = sorted(hour for asset, hour in committed.truck_hours if asset == quiet)
    assert quiet_hours and quiet_hours[-1] == last - last % 3_600_000
    assert committed.truck_hours == live.truck_hours


def _truck(line: str) -> str:
    """The top-level asset_guid string of a raw line, "" without one (what the job partitions by:
    java/.../pipeline/TruckPartitioner.java)."""
    try:
        value = json.loads(line)
    except ValueError:
        return ""
    truck = value.get("asset_guid") if isinstance(value, dict) else None
    return truck if isinstance(truck, str) else ""


@pytest.mark.parametrize("name", list(SCENARIO_FAMILIES))
def test_replaying_each_partition_by_truck_on_its_own_gives_every_truck_the_same_rows(name: str):
    """A job at parallelism N parses each truck's records in one of N subtasks, and each subtask's
    watermark (every point's hint) comes from the records it sees; the loader stage receives every
    subtask's loader events. Replaying each part of the stream with its own parser, the parts' records in
    the stream's order, into one loader stage gives the same rows as replaying the whole stream (N = 2
    and 3). Each part measures its site's lateness over its own few trucks (state_machine.lateness): it
    must not hold shorter than the whole stream needs (no genuine point dead-lettered LATE that the whole
    stream applies)."""
    sim = simulate(scenario_spec(name, trucks=6, hours=1.5, seed=5).degraded())
    lines = [line for _, line in sim.deliveries]
    whole = replay((("file:x", line) for line in lines), sim.reference, speculative=True)
    assert whole.served
    for n in (2, 3):
        reads = [(zlib.crc32(_truck(line).encode()) % n, line) for line in lines]
        assert {part for part, _ in reads} == set(range(n))
        result = replay_parts(reads, sim.reference, source="file:x", speculative=True)
        assert result.sorted_closed() == whole.sorted_closed()
        assert result.in_progress == whole.in_progress
        assert result.statuses == whole.statuses
        assert sorted((d.reason, d.raw) for d in result.dead_letters) == sorted(
            (d.reason, d.raw) for d in whole.dead_letters)
        # an alert's detail says how far the truck's timeline had gone when it was raised: timing, not content
        assert sorted((a._replace(detail="") for a in result.alerts), key=repr) == sorted(
            (a._replace(detail="") for a in whole.alerts), key=repr)
        assert (result.served, result.loader_hours, result.loader_status, result.truck_hours) == (
            whole.served, whole.loader_hours, whole.loader_status, whole.truck_hours)
