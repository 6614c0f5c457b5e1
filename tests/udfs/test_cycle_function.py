"""CycleFunction wiring (no Flink): reference holding, filtering, timers, watermark hints, output.

A tiny fake engine checks the plumbing; the last tests run the real engine through the function
with lagging watermarks and compare with ``workbench.replay`` (the contract of the job).
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from state_machine.config import EngineConfig
from state_machine.model import HAUL_TRUCK, LOADER, CycleRecord, StepOutput, TruckStatus
from state_machine.reference import SiteReference
from tests.udfs.fakes import Harness
from udfs.cycle_function import END_OF_INPUT, NO_REFERENCE_DATA, UNKNOWN_ASSET, CycleFunction
from udfs.reference_poller import site_payload
from udfs.rows import NO_HINT, OUT_ALERT, OUT_CYCLE, OUT_DEAD_LETTER, OUT_STATUS, REF_ASSET, REF_SITE

SITE = "SITE-A"
CALLS: list[tuple] = []


class FakeState:
    def __init__(self, asset: str, site: str) -> None:
        self.asset, self.committed = asset, SimpleNamespace(site=site)
        self.points: list[int] = []
        self.due: int | None = None

    def to_bytes(self) -> bytes:
        return json.dumps([self.asset, self.committed.site, self.points, self.due]).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> FakeState:
        asset, site, points, due = json.loads(data)
        state = cls(asset, site)
        state.points, state.due = points, due
        return state

    def timer_due_ms(self, config: EngineConfig, watermark_ms: int | None = None) -> int | None:
        if watermark_ms is not None and watermark_ms >= END_OF_INPUT:
            return None
        return self.due


class FakeEngine:
    """Each point sets a timer 1 s later; the timer closes a 'cycle' spanning the points seen."""

    def __init__(self, config: EngineConfig) -> None:
        self.config = config

    def on_point(self, state, point, site):
        CALLS.append(("point", point.asset_guid, point.ts_ms, site.site_guid))
        state = state or FakeState(point.asset_guid, point.site_guid)
        state.points.append(point.ts_ms)
        state.due = point.ts_ms + 1000
        status = TruckStatus(point.asset_guid, point.site_guid, point.ts_ms, point.latitude, point.longitude,
                             point.work_state_id, "NONE", "T", None)  # fmt: skip
        return StepOutput(status=status), state

    def on_timer(self, state, timer_ms, watermark_ms, site):
        CALLS.append(("timer", state.asset, timer_ms, watermark_ms))
        out = StepOutput()
        if state.points:
            out.closed.append(CycleRecord(state.asset, state.committed.site, "COMPLETE", "NONE",
                                          load_start_ms=state.points[0], cycle_end_ms=state.points[-1]))  # fmt: skip
        state.points, state.due = [], None
        return out, state


def fake_codec():
    return FakeState.from_bytes, lambda s: s.to_bytes()


def make(wait_max_points: int = 100, wait_max_ms: int = 10_000) -> Harness:
    CALLS.clear()
    fn = CycleFunction(EngineConfig().to_dict(), "file:test", wait_max_points, wait_max_ms,
                       engine_factory=FakeEngine, state_codec=fake_codec, timer_grid_ms=1)  # fmt: skip
    return Harness(fn)


def point(asset: str, ts: int, hint: int = NO_HINT, site: str = SITE, raw: str | None = None) -> tuple:
    return (asset, site, ts, -22.7, 118.7, 3, hint, raw or f'{{"asset_guid":"{asset}","ts":{ts}}}')


def with_reference(h: Harness, assets: dict[str, str] | None = None) -> None:
    for guid, kind in (assets or {"T1": HAUL_TRUCK, "T2": HAUL_TRUCK, "L1": LOADER}).items():
        h.broadcast_element((REF_ASSET, guid, kind))
    h.broadcast_element((REF_SITE, SITE, site_payload(SiteReference(SITE))))


def tags(rows) -> list[int]:
    return [r[0] for r in rows]


def test_points_of_a_truck_reach_the_engine_and_register_one_timer():
    h = make()
    with_reference(h)
    h.element(point("T1", 1000))
    h.element(point("T1", 2000))
    assert [c[:3] for c in CALLS] == [("point", "T1", 1000), ("point", "T1", 2000)]
    assert tags(h.take()) == [OUT_STATUS, OUT_STATUS]
    # coalesced: the earlier timer (2000) stays; it fires early and only re-arms at the due time
    assert h.timers == {(2000, "T1")}
    h.advance(2000)
    assert [c[0] for c in CALLS] == ["point", "point"] and h.take() == []
    assert h.timers == {(3000, "T1")}


def test_non_truck_assets_are_dropped_and_counted():
    h = make()
    with_reference(h)
    h.element(point("L1", 1000))
    assert CALLS == [] and h.take() == []
    assert h.f.c_non_truck.value == 1
    assert h.values.get("truck", {}) == {}


def test_points_wait_for_reference_data_then_are_applied_in_order():
    h = make()
    h.element(point("T1", 1000))
    h.element(point("T1", 1500))
    assert CALLS == [] and h.f.c_held.value == 2
    assert h.timers == {(11_000, "T1")}  # hold deadline: first held + wait_max_ms
    with_reference(h)
    h.element(point("T1", 2000))
    assert [c[2] for c in CALLS] == [1000, 1500, 2000]
    assert h.timers == {(3000, "T1"), (11_000, "T1")}  # coalesced: the deadline timer is never deleted


def test_held_points_are_released_by_the_processing_time_retry():
    h = make()
    h.element(point("T1", 1000))
    assert h.proc_timers == {(1000, "T1")}
    h.tick(1000)
    assert CALLS == [] and h.proc_timers == {(2000, "T1")}  # still waiting: retried next second
    with_reference(h)
    h.tick(2000)
    assert CALLS == [("point", "T1", 1000, SITE)]
    assert tags(h.take()) == [OUT_STATUS]
    assert not h.proc_timers and h.timers == {(2000, "T1"), (11_000, "T1")}


def test_held_points_are_released_by_the_timer_when_reference_arrived_meanwhile():
    h = make()
    h.element(point("T1", 1000))
    with_reference(h)
    h.advance(11_000)
    assert CALLS[0] == ("point", "T1", 1000, SITE)


def test_unknown_asset_is_dead_lettered_after_the_wait_with_its_raw_record():
    h = make(wait_max_ms=5000)
    with_reference(h)
    h.element(point("UNK", 1000, raw="raw-1"))
    h.element(point("UNK", 2000, raw="raw-2"))
    assert h.take() == []
    h.advance(6000)
    rows = h.take()
    assert tags(rows) == [OUT_DEAD_LETTER, OUT_DEAD_LETTER]
    letters = [r[3] for r in rows]
    assert [(d[2], d[3], d[5], d[6], d[7]) for d in letters] == [
        ("file:test", UNKNOWN_ASSET, "UNK", 1000, "raw-1"),
        ("file:test", UNKNOWN_ASSET, "UNK", 2000, "raw-2"),
    ]
    assert h.values["held"].get("UNK", []) == []


def test_missing_site_reference_is_dead_lettered_at_end_of_input():
    h = make()
    h.broadcast_element((REF_ASSET, "T1", HAUL_TRUCK))
    h.element(point("T1", 1000, site="OTHER"))
    h.element(point("T1", 2000, site="OTHER"))
    h.advance(END_OF_INPUT)
    alert, row, row2 = h.take()
    assert row[0] == OUT_DEAD_LETTER and row[3][3] == NO_REFERENCE_DATA
    assert "OTHER" in row[3][4] and row2[0] == OUT_DEAD_LETTER
    # one NO_REFERENCE_DATA alert per site, at the first point dead-lettered for it
    assert alert[0] == OUT_ALERT and tuple(alert[4])[1:5] == (NO_REFERENCE_DATA, "T1", "OTHER", 1000)
    assert h.f.c_alerts.values == {NO_REFERENCE_DATA: 1} and h.f.c_dead.values == {NO_REFERENCE_DATA: 2}


def test_too_many_held_points_are_dead_lettered():
    h = make(wait_max_points=3)
    for ts in range(1000, 5000, 1000):
        h.element(point("T1", ts))
    assert tags(h.take()) == [OUT_DEAD_LETTER] * 4


def test_watermark_hint_fires_the_due_timer_before_the_next_point():
    h = make()
    with_reference(h)
    h.element(point("T1", 1000))
    h.element(point("T1", 5000, hint=2500))  # replay's watermark before this record: 2500 >= due 2000
    assert [c[0] for c in CALLS] == ["point", "timer", "point"]
    assert CALLS[1] == ("timer", "T1", 2000, 2500)
    rows = h.take()
    assert tags(rows) == [OUT_STATUS, OUT_CYCLE, OUT_STATUS]
    cycle = CycleRecord(*rows[1][1])
    assert (cycle.asset_guid, cycle.load_start_ms) == ("T1", 1000)


def test_flink_watermark_fires_timers_and_end_of_input_uses_the_last_hint_first():
    h = make()
    with_reference(h)
    h.element(point("T1", 1000))
    h.element(point("T2", 9000, hint=1500))  # hint below T1's due: nothing fires yet
    assert [c[0] for c in CALLS] == ["point", "point"]
    h.advance(END_OF_INPUT)
    timer_calls = [c for c in CALLS if c[0] == "timer"]
    # T1's due timer (2000) is not <= the last hint (1500), so it fires with END_OF_INPUT
    assert ("timer", "T1", 2000, END_OF_INPUT) in timer_calls
    assert not h.timers


def test_timers_are_rounded_up_to_the_grid():
    CALLS.clear()
    h = Harness(CycleFunction(EngineConfig().to_dict(), "f", engine_factory=FakeEngine, state_codec=fake_codec,
                              timer_grid_ms=10_000))  # fmt: skip
    with_reference(h)
    h.element(point("T1", 1000))
    h.element(point("T1", 4000))
    assert h.timers == {(10_000, "T1")}
    h.element(point("T1", 9500))
    assert h.timers == {(10_000, "T1")}  # coalesced: kept; it fires early and re-arms
    h.advance(20_000)
    assert CALLS[-1] == ("timer", "T1", 10_500, 20_000)


def test_restored_state_is_decoded_from_keyed_state():
    h = make()
    with_reference(h)
    h.element(point("T1", 1000))
    h.f.cache.clear()  # as after a restore: only keyed state is left
    h.element(point("T1", 1500))
    assert [c[2] for c in CALLS] == [1000, 1500]
    state = FakeState.from_bytes(bytes(h.values["truck"]["T1"][0]))
    assert state.points == [1000, 1500]


# --------------------------------------------------------------------------- real engine vs replay


def _drive(lines: list[str], reference, lag_ms: int, watermark_every: int) -> Harness:
    """Feed parsed lines through ParseFunction + CycleFunction with Flink-like lagging watermarks."""
    from udfs.parse import ParseFunction
    from udfs.reference_poller import snapshot_records

    CALLS.clear()
    fn = CycleFunction(EngineConfig().to_dict(), "file:test", 100_000, 600_000, timer_grid_ms=30_000)
    h = Harness(fn)
    parse = ParseFunction("file:test", lag_ms, check_future=False)
    parse.open(SimpleNamespace(get_metrics_group=lambda: (_ for _ in ()).throw(RuntimeError())))
    max_ts = None
    for n, line in enumerate(lines):
        if n == 50:  # reference data arrives late: the first points are held
            for rec in snapshot_records(reference):
                h.broadcast_element(rec)
        for out in parse.process_element((None, line), None):
            if isinstance(out, tuple) and len(out) == 8:
                h.element(out)
                max_ts = out[2] if max_ts is None else max(max_ts, out[2])
        if max_ts is not None and n % watermark_every == 0:
            h.advance(max_ts - lag_ms - 1 - 3_600_000)  # an hour behind the replay's watermark
    h.advance(END_OF_INPUT)
    return h


@pytest.mark.parametrize("watermark_every", [1, 500])
def test_real_engine_through_the_function_equals_replay(watermark_every):
    from job.db import dead_letter_id
    from state_machine.truck import closed_sort_key
    from workbench.replay import replay
    from workbench.simulator import SimulationSpec, simulate

    sim = simulate(SimulationSpec(trucks=4, hours=3, seed=21).degraded())
    lines = sim.telemetry_lines
    lag = EngineConfig().max_disorder_ms
    expected = replay((("file:test", line) for line in lines), sim.reference)
    h = _drive(lines, sim.reference, lag, watermark_every)
    rows = h.take()
    closed = sorted((CycleRecord(*r[1]) for r in rows if r[0] == OUT_CYCLE), key=closed_sort_key)
    assert [c.as_dict() for c in closed] == [c.as_dict() for c in expected.sorted_closed()]
    in_progress: dict[str, CycleRecord] = {}
    statuses: dict[str, TruckStatus] = {}
    letters = set()
    for r in rows:
        if r[0] == 0:
            rec = CycleRecord(*r[1])
            in_progress[rec.asset_guid] = rec
        elif r[0] == OUT_STATUS:
            statuses[r[2][0]] = TruckStatus(*r[2])
        elif r[0] == OUT_DEAD_LETTER:
            letters.add(r[3][0])
    assert {k: v.as_dict() for k, v in in_progress.items()} == {
        k: v.as_dict() for k, v in expected.in_progress.items()
    }
    assert statuses == expected.statuses
    # parse dead letters go through the parse side output; compare engine/reference ones only
    expected_ids = {dead_letter_id(d.source, d.reason, d.raw) for d in expected.dead_letters
                    if d.source == "engine" or d.reason in (UNKNOWN_ASSET, NO_REFERENCE_DATA)}  # fmt: skip
    assert letters == expected_ids
