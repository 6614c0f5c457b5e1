"""The per-truck operator's policy (state_machine.operator), with the real engine, no Flink.

Reference-data holds, non-truck filtering, dead letters and alerts, the timer grid and coalescing,
watermark hints, end of input, retention and the bounded state cache: the same calls the Flink
adapter (udfs.cycle_function) and the replay (workbench.replay) make.
"""

from __future__ import annotations

from state_machine.config import CycleThresholds, EngineConfig
from state_machine.model import HAUL_TRUCK, LOADER
from state_machine.operator import END_THRESHOLD, NO_REFERENCE_DATA, UNKNOWN_ASSET, KeyState, TruckOperator
from state_machine.reference import ReferenceData
from state_machine.stream import NO_HINT, ParsedPoint
from state_machine.telemetry import format_record
from tests.state_machine.track import SITE, TRUCK, Track, site_reference

END = 2**63 - 1


def refs(trucks: tuple[str, ...] = (TRUCK,), site: bool = True, loaders: tuple[str, ...] = ("L1",)) -> ReferenceData:
    types = {t: HAUL_TRUCK for t in trucks} | {ld: LOADER for ld in loaders}
    return ReferenceData(types, {SITE: site_reference()} if site else {})


def parsed(points, hint: int = NO_HINT) -> list[ParsedPoint]:
    return [ParsedPoint(p, hint, format_record(p), f"file:x:{i}", p.ts_ms) for i, p in enumerate(points, 1)]


def test_points_are_applied_and_one_timer_is_asked_for_on_the_grid():
    op = TruckOperator(timer_grid_ms=10_000)
    points = Track().approach().stand(60).points
    step = op.on_points(TRUCK, None, parsed(points[:5]), refs())
    assert step.output.counts["pointsApplied"] == 5 and step.output.status.last_event_ms == points[4].ts_ms
    assert step.timer_ms is not None and step.timer_ms % 10_000 == 0 and step.delete_timer_ms is None
    assert step.timer_ms >= points[4].ts_ms + 60_000  # the re-order buffer's flush
    registered = step.timer_ms
    for i in range(5, len(points)):  # one point a call: the timer moves with the due time
        step = op.on_points(TRUCK, step.state, parsed(points[i : i + 1]), refs())
        assert step.delete_timer_ms == registered and step.timer_ms > registered
        registered = step.timer_ms
        assert KeyState.from_bytes(step.state).timer_ms == registered
    again = op.on_points(TRUCK, step.state, parsed(points[-1:]), refs())  # a duplicate: the due time stays
    assert again.output.counts["duplicatesDropped"] == 1
    assert again.timer_ms is None and again.delete_timer_ms is None


def test_non_truck_assets_are_dropped_and_counted_without_state():
    op = TruckOperator()
    points = [p._replace(asset_guid="L1") for p in Track().stand(30).points]
    step = op.on_points("L1", None, parsed(points), refs())
    assert step.state is None and not step.changed
    assert step.output.counts["nonTruckFiltered"] == len(points) and step.output.closed == []


def test_points_wait_for_reference_data_and_are_applied_in_order_when_it_comes():
    op = TruckOperator()
    points = Track().approach().cycle().stand(60).points
    waiting = op.on_points(TRUCK, None, parsed(points[:10]), refs(site=False))
    assert waiting.retry and waiting.output.counts["heldPoints"] == 10 and waiting.output.status is None
    assert len(KeyState.from_bytes(waiting.state).held) == 10
    released = op.on_retry(TRUCK, waiting.state, refs())
    assert released.output.counts["pointsApplied"] == 10 and not released.retry
    rest = op.on_points(TRUCK, released.state, parsed(points[10:]), refs())
    straight = TruckOperator().on_points(TRUCK, None, parsed(points), refs())
    assert KeyState.from_bytes(rest.state).truck == KeyState.from_bytes(straight.state).truck


def test_a_point_of_an_unknown_site_does_not_hold_the_points_behind_it_once_the_data_comes():
    op = TruckOperator()
    points = Track().approach().cycle().stand(60).points
    bad = points[5]._replace(site_guid="SITE-0l", ts_ms=points[5].ts_ms + 1)
    arriving = [*points[:6], bad, *points[6:20]]
    waiting = op.on_points(TRUCK, None, parsed(arriving), refs(trucks=(), site=False))  # nothing known yet
    assert len(KeyState.from_bytes(waiting.state).held) == 21
    released = op.on_retry(TRUCK, waiting.state, refs())
    assert released.output.counts["pointsApplied"] == 20 and released.retry
    assert [h.site_guid for h in KeyState.from_bytes(released.state).held] == ["SITE-0l"]
    straight = TruckOperator().on_points(TRUCK, None, parsed(points[:20]), refs())
    assert KeyState.from_bytes(released.state).truck == KeyState.from_bytes(straight.state).truck


def test_a_retry_without_new_reference_data_changes_nothing():
    op = TruckOperator()
    waiting = op.on_points(TRUCK, None, parsed(Track().stand(30).points), refs(site=False))
    again = op.on_retry(TRUCK, waiting.state, refs(site=False))
    assert not again.changed and again.retry and again.state == waiting.state


def test_unknown_asset_is_dead_lettered_after_the_wait_with_its_raw_record_and_position():
    op = TruckOperator(source="file:x", wait_max_ms=60_000)
    points = Track().stand(30).points
    step = op.on_points(TRUCK, None, parsed(points), refs(trucks=()))
    timer = step.timer_ms
    assert timer >= points[0].ts_ms + 60_000
    done = op.on_timer(TRUCK, step.state, timer, timer, refs(trucks=()))
    letters = done.output.dead_letters
    assert [d.reason for d in letters] == [UNKNOWN_ASSET] * len(points)
    assert letters[0].raw == format_record(points[0]) and letters[0].position == "file:x:1"
    assert letters[0].source == "file:x" and done.output.counts["unknownAsset"] == len(points)


def test_missing_site_is_dead_lettered_at_end_of_input_with_one_alert_per_site():
    op = TruckOperator()
    a = op.on_points(TRUCK, None, parsed(Track().stand(20).points), refs(site=False))
    b = op.on_points("TRUCK-2", None, parsed(Track(asset="TRUCK-2").stand(20).points),
                     refs(trucks=(TRUCK, "TRUCK-2"), site=False))
    end_a = op.on_timer(TRUCK, a.state, a.timer_ms, END, refs(site=False))
    end_b = op.on_timer("TRUCK-2", b.state, b.timer_ms, END, refs(trucks=(TRUCK, "TRUCK-2"), site=False))
    assert {d.reason for d in end_a.output.dead_letters + end_b.output.dead_letters} == {NO_REFERENCE_DATA}
    assert len(end_a.output.alerts) + len(end_b.output.alerts) == 1  # once per site and operator


def test_too_many_held_points_are_dead_lettered():
    op = TruckOperator(wait_max_points=3)
    step = op.on_points(TRUCK, None, parsed(Track().stand(50).points), refs(site=False))
    assert len(step.output.dead_letters) == 4 and len(KeyState.from_bytes(step.state).held) == 1


class NotLoadedYet(ReferenceData):
    """Reference data before the job's first complete load has arrived."""

    loaded = False


def test_before_the_first_load_held_points_are_not_dead_lettered_for_their_number():
    """A catch-up that delivers a backlog before the first reference load must not turn it into
    UNKNOWN_ASSET dead letters: the count limit applies once the load is in."""
    op = TruckOperator(wait_max_points=3)
    points = Track().stand(50).approach().stand(120).points
    early = op.on_points(TRUCK, None, parsed(points[:-1]), NotLoadedYet())
    assert early.output.dead_letters == [] and len(KeyState.from_bytes(early.state).held) == len(points) - 1
    # the load is in: the truck's held points are applied, in order, before its next point
    later = op.on_points(TRUCK, early.state, parsed(points[-1:]), refs())
    assert later.output.dead_letters == [] and not KeyState.from_bytes(later.state).held
    assert later.output.counts["pointsApplied"] == len(points)
    # an asset that is still unknown once the load is in is dead-lettered by the count limit as before
    unknown = op.on_points("UNREGISTERED-1", None, parsed(points[:5]), NotLoadedYet())
    after = op.on_points("UNREGISTERED-1", unknown.state, parsed(points[5:6]), refs())
    assert {d.reason for d in after.output.dead_letters} == {"UNKNOWN_ASSET"} and len(after.output.dead_letters) == 6


def test_the_hint_fires_due_timers_before_the_next_point():
    """A truck quiet for longer than the re-order window: its buffer is flushed by the hint of its
    next point, exactly where the replay's watermark would have flushed it."""
    op = TruckOperator()
    points = Track().approach().stand(120).points
    first = op.on_points(TRUCK, None, parsed(points[:-1]), refs())
    assert KeyState.from_bytes(first.state).truck.pending
    last = points[-1]
    hinted = ParsedPoint(last, last.ts_ms + 300_000, format_record(last), None, last.ts_ms)
    step = op.on_points(TRUCK, first.state, [hinted], refs())
    assert len(KeyState.from_bytes(step.state).truck.pending) == 1  # the old ones committed by the hint


def test_a_superseded_timer_is_ignored_and_an_early_one_only_re_arms():
    op = TruckOperator(timer_grid_ms=1)
    points = Track().approach().stand(30).points
    step = op.on_points(TRUCK, None, parsed(points), refs())
    stale = op.on_timer(TRUCK, step.state, step.timer_ms - 1, step.timer_ms, refs())
    assert not stale.changed and stale.output.closed == []
    early = op.on_timer(TRUCK, step.state, step.timer_ms, step.timer_ms - 5_000, refs())
    assert early.timer_ms == step.timer_ms and early.output.counts == {}


def test_end_of_input_flushes_but_closes_no_cycle():
    op = TruckOperator()
    points = Track().approach().cycle().stand(60).drive(700).points
    step = op.on_points(TRUCK, None, parsed(points), refs())
    end = op.on_timer(TRUCK, step.state, step.timer_ms, END_THRESHOLD, refs())
    ks = KeyState.from_bytes(end.state)
    assert not ks.truck.pending and ks.truck.committed.phase == "LOAD_TRAVEL" and end.timer_ms is None
    assert [c.cycle_status for c in step.output.closed + end.output.closed] == ["COMPLETE"]


def test_a_silent_truck_is_closed_idle_timeout_then_forgotten_after_retention():
    config = EngineConfig(CycleThresholds(state_retention_s=86_400))
    op = TruckOperator(config, timer_grid_ms=1)
    points = Track().approach().stand(120).drive(900).points
    step = op.on_points(TRUCK, None, parsed(points), refs())
    state, timer, closed = step.state, step.timer_ms, []
    cleared = False
    for _ in range(10):  # follow the timers the operator asks for, the watermark at each
        fired = op.on_timer(TRUCK, state, timer, timer, refs())
        closed += fired.output.closed
        if fired.state is None:
            cleared = True
            break
        state, timer = fired.state, fired.timer_ms if fired.timer_ms is not None else timer
    assert [(c.cycle_status, c.invalid_reason) for c in closed] == [("INVALID", "IDLE_TIMEOUT")]
    assert cleared and timer >= points[-1].ts_ms + 86_400_000
    assert op.cached_trucks == 0


def test_decoded_states_are_cached_within_a_bound():
    op = TruckOperator(cache_size=3)
    for n in range(10):
        asset = f"T{n}"
        op.on_points(asset, None, parsed(Track(asset=asset).stand(20).points), refs(trucks=(asset,)))
    assert op.cached_trucks == 3


def test_a_batch_call_ends_with_the_rows_of_point_by_point_calls():
    """on_points computes the in-progress and status rows once, after the last point: the truck's
    latest rows are those of one call per point, live (speculative) or not, with re-ordered and
    duplicated points and timers fired by the hints in between."""
    points = Track().approach().cycle().cycle().stand(90).points
    shuffled = points[:40] + points[45:60] + points[40:45] + points[60:] + points[100:103]  # late and duplicate
    arrivals = [pp._replace(hint=pp.point.ts_ms - 120_000) for pp in parsed(shuffled)]
    for speculative in (True, False):
        batch_op, single_op = TruckOperator(speculative=speculative), TruckOperator(speculative=speculative)
        batch = batch_op.on_points(TRUCK, None, arrivals, refs())
        state, last_in_progress, last_status = None, None, None
        for pp in arrivals:
            step = single_op.on_points(TRUCK, state, [pp], refs())
            state = step.state
            last_in_progress = step.output.in_progress or last_in_progress
            last_status = step.output.status or last_status
        assert batch.output.status == last_status
        assert batch.output.in_progress is not None and batch.output.in_progress == last_in_progress
        assert KeyState.from_bytes(batch.state).truck == KeyState.from_bytes(state).truck
        assert len(batch.output.closed) >= 1


def _hours_after_timers(op: TruckOperator, step, watermarks: list[int]) -> dict:
    """The truck-hour rows (the latest of each hour) after the truck's timers ran at each watermark in turn."""
    rows = {(h.asset_guid, h.hour_start_ms): h for h in step.output.hours}
    state, timer = step.state, step.timer_ms
    for watermark in watermarks:
        while timer is not None and timer <= watermark:
            step = op.on_timer(TRUCK, state, timer, watermark, refs())
            rows |= {(h.asset_guid, h.hour_start_ms): h for h in step.output.hours}
            state, timer = step.state, step.timer_ms
    return rows


def test_a_cycle_closed_by_the_idle_timeout_counts_in_its_hour_however_event_time_gets_there():
    """A truck goes quiet with a cycle open: its hour is reported once event time has passed it, and the
    cycle closes IDLE_TIMEOUT four hours after its last point, counted in the hour of that point. The
    hour's row must say so whether event time passed the hour's end and the idle timeout in one step (a
    backlog read at once) or in two (a live stream): the row reported first is reported again."""
    points = Track().approach().cycle().cycle().stand(60).points  # two cycles closed, the third one open
    last = points[-1].ts_ms
    idle_close = last + int(CycleThresholds().idle_close_s * 1000)
    hour_over = last - last % 3_600_000 + 3_600_000 + 120_000
    assert hour_over < idle_close
    op = TruckOperator(speculative=True)
    step = op.on_points(TRUCK, None, parsed(points, hint=points[0].ts_ms), refs())
    at_once = _hours_after_timers(TruckOperator(speculative=True), step, [idle_close + 60_000])
    in_two = _hours_after_timers(op, step, [hour_over, idle_close + 60_000])
    hour = (TRUCK, last - last % 3_600_000)
    assert at_once[hour].cycles_closed == 3
    assert in_two[hour].cycles_closed == 3
