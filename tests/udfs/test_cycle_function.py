"""CycleFunction: Flink's side of TruckOperator (no Flink): group rows in, one state write per call,
the timers the operator asks for, broadcast references, envelope rows out. The policy itself is
tested in tests/state_machine/test_operator.py; the last test runs the real parse + operator through
the function with lagging watermarks and compares with ``workbench.replay`` (the contract)."""

from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace

import pytest

from state_machine.config import EngineConfig
from state_machine.model import HAUL_TRUCK, LOADER, CycleRecord, LoadVisit, TruckStatus
from state_machine.operator import KeyState
from state_machine.stream import ParsedPoint
from state_machine.telemetry import format_record
from tests.state_machine.track import SITE, TRUCK, Track, site_reference
from tests.udfs.fakes import Harness
from udfs.cycle_function import CycleFunction
from udfs.parse import DEAD_LETTER_TAG as PARSE_DEAD_LETTER_TAG
from udfs.parse import ParseFunction
from udfs.reference_poller import site_payload, snapshot_records
from udfs.rows import (
    LOADED_MARKER,
    OUT_DEAD_LETTER,
    OUT_LOADER,
    OUT_STATUS,
    OUT_TMP,
    REF_ASSET,
    REF_SITE,
    group_row,
)

END_OF_INPUT = 2**63 - 1


def make() -> Harness:
    return Harness(CycleFunction(EngineConfig().to_dict(), "file:test", 100, 10_000))


def with_reference(h: Harness) -> None:
    for guid, kind in ((TRUCK, HAUL_TRUCK), ("L1", LOADER)):
        h.broadcast_element((REF_ASSET, guid, kind))
    h.broadcast_element((REF_SITE, SITE, site_payload(site_reference())))
    h.broadcast_element(LOADED_MARKER)


def group(points, end: bool = True):
    pps = [ParsedPoint(p, -(2**63), format_record(p), f"file:x:{i}", p.ts_ms) for i, p in enumerate(points)]
    return group_row(points[0].asset_guid, pps, end)


def test_a_group_row_is_one_operator_call_one_state_write_and_the_timer_it_asks_for():
    h = make()
    with_reference(h)
    points = Track().approach().stand(30).points
    h.element(group(points))
    rows = h.take()
    assert [r[0] for r in rows] == [OUT_TMP, OUT_STATUS]  # the truck's latest rows only
    assert rows[1][2][2] == points[-1].ts_ms
    state = KeyState.from_bytes(bytes(h.values["truck"][TRUCK]))
    assert len(state.truck.pending) + state.truck.committed.points == len(points)
    assert len(h.timers) == 1 and next(iter(h.timers))[0] == state.timer_ms


def test_a_truck_whose_points_keep_coming_is_not_called_for_timers_until_they_stop():
    """Each call moves the truck's one timer with its due time (the registered one deleted), so while
    its points keep coming the watermark never reaches it; after the last point, it fires once."""
    h = make()
    with_reference(h)
    points = Track().approach().cycle().cycle().stand(60).points
    fired: list[int] = []
    on_timer = h.f.on_timer
    h.f.on_timer = lambda ts, ctx: (fired.append(ts), on_timer(ts, ctx))[1]
    for i in range(0, len(points), 3):
        h.element(group(points[i : i + 3]))
        h.advance(points[min(i + 2, len(points) - 1)].ts_ms)  # event time up to the newest point
        assert len(h.timers) == 1
    assert fired == []
    registered = next(iter(h.timers))[0]
    h.take()
    h.advance(END_OF_INPUT)
    assert fired == [registered] and not h.timers
    assert KeyState.from_bytes(bytes(h.values["truck"][TRUCK])).truck.pending == []


def test_points_held_for_reference_data_are_released_by_the_processing_time_retry():
    h = make()
    points = Track().approach().stand(30).points
    h.element(group(points))
    assert h.take() == [] and h.proc_timers
    with_reference(h)
    h.tick(5_000)
    assert [r[0] for r in h.take()] == [OUT_TMP, OUT_STATUS]
    assert not KeyState.from_bytes(bytes(h.values["truck"][TRUCK])).held


def test_broadcast_lookups_cache_absences_until_the_next_update():
    """An unknown truck's points are looked up once per point (and each held point on release):
    a miss must be read from broadcast state once, not on every lookup (a JNI call each)."""
    from udfs.cycle_function import BroadcastReferences

    reads: list[str] = []

    class CountingState(dict):
        def get(self, key, default=None):
            reads.append(key)
            return super().get(key, default)

        def put(self, key, value):
            self[key] = value

    state = CountingState()
    refs = BroadcastReferences()
    refs.context = SimpleNamespace(get_broadcast_state=lambda _descriptor: state)
    for _ in range(3):
        assert refs.asset_type("T9") is None and refs.site("S9") is None
    assert reads == ["a:T9", "s:S9"]
    refs.update(state, REF_ASSET, "T9", HAUL_TRUCK)  # an update forgets the cached absences
    assert refs.asset_type("T9") == HAUL_TRUCK and refs.site("S9") is None
    assert reads == ["a:T9", "s:S9", "s:S9"]
    assert not refs.loaded
    refs.update(state, *LOADED_MARKER)  # no reference data: nothing stored, nothing forgotten
    assert refs.loaded and refs.site("S9") is None and reads == ["a:T9", "s:S9", "s:S9"] and set(state) == {"a:T9"}


def test_a_truck_state_is_cleared_when_the_operator_says_so():
    h = make()
    h.broadcast_element((REF_ASSET, "L1", LOADER))
    h.element(group([p._replace(asset_guid="L1") for p in Track().stand(20).points]))
    assert h.take() == [] and "L1" not in h.values.get("truck", {})


def _drive(lines: list[str], reference, lag_ms: int, watermark_every: int, batch: int) -> Harness:
    """Parse batches + CycleFunction with Flink-like lagging watermarks (reference data late)."""
    h = Harness(CycleFunction(EngineConfig().to_dict(), "file:test", 100_000, 600_000))
    parse = ParseFunction("file:test", lag_ms, EngineConfig().watermark_jump_ms, check_future=False)
    parse.open(SimpleNamespace(get_metrics_group=lambda: (_ for _ in ()).throw(RuntimeError())))
    max_ts = None
    for start in range(0, len(lines), batch):
        if start >= 50 and h.broadcast == {}:  # reference data arrives late: the first points are held
            for rec in snapshot_records(reference):
                h.broadcast_element(rec)
        chunk = lines[start:start + batch]
        for out in parse.process_element(([None] * len(chunk), chunk), None):
            if out[0] is PARSE_DEAD_LETTER_TAG:
                continue  # parse dead letters (their own side output)
            group = out[1]  # (key, group): Flink passes the group to the keyed function
            h.element(group)
            max_ts = group[1] if max_ts is None else max(max_ts, group[1])
        if max_ts is not None and (start // batch) % watermark_every == 0:
            h.advance(max_ts - lag_ms - 1 - 3_600_000)  # an hour behind the replay's watermark
    h.advance(END_OF_INPUT)
    return h


@pytest.mark.parametrize(("watermark_every", "batch"), [(1, 1), (5, 64), (1, 1024)])
def test_real_operator_through_the_function_equals_replay(watermark_every, batch):
    from state_machine.identity import dead_letter_id
    from state_machine.truck import closed_sort_key
    from workbench.replay import replay
    from workbench.simulator import SimulationSpec, simulate

    sim = simulate(SimulationSpec(trucks=4, hours=3, seed=21).degraded())
    lines = sim.telemetry_lines
    expected = replay((("file:test", line) for line in lines), sim.reference)
    rows = _drive(lines, sim.reference, EngineConfig().max_disorder_ms, watermark_every, batch).take()
    # closed cycles and visits go to the loader stage (which adds each cycle's queue)
    events = [r[6][1] for r in rows if r[0] == OUT_LOADER]
    closed = sorted((CycleRecord(*e[1]) for e in events if e[1] is not None), key=closed_sort_key)
    assert [c.as_dict() for c in closed] == [replace(c, queue_seconds=None).as_dict() for c in expected.sorted_closed()]
    assert sorted(LoadVisit(*e[2]) for e in events if e[2] is not None) == sorted(expected.visits)
    in_progress: dict[str, CycleRecord] = {}
    statuses: dict[str, TruckStatus] = {}
    letters = set()
    for r in rows:
        if r[0] == OUT_TMP:
            rec = CycleRecord(*r[1])
            in_progress[rec.asset_guid] = rec
        elif r[0] == OUT_STATUS:
            statuses[r[2][0]] = TruckStatus(*r[2])
        elif r[0] == OUT_DEAD_LETTER:
            letters.add(r[3][0])
    assert {k: v.as_dict() for k, v in in_progress.items()} == {k: v.as_dict() for k, v in expected.in_progress.items()}
    assert statuses == expected.statuses
    # parse dead letters leave through the parse side output; compare the operator's
    expected_ids = {dead_letter_id(d.source, d.reason, d.raw) for d in expected.dead_letters
                    if d.source == "engine" or d.reason in ("UNKNOWN_ASSET", "NO_REFERENCE_DATA")}  # fmt: skip
    assert letters == expected_ids
