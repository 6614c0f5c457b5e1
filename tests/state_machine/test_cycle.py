"""Rule-by-rule tests of the cycle engine on hand-built tracks with exact times."""

from __future__ import annotations

import pytest

from state_machine.config import CycleThresholds, EngineConfig
from state_machine.model import COMPLETE, IDLING, INVALID, OUTLIER, WORKING, CycleRecord
from state_machine.reference import AREA_DUMP, AREA_TRAVEL, SpatialIndex
from state_machine.truck import END_OF_INPUT, TruckEngine
from tests.state_machine.track import (
    DUMP_CENTER,
    LOADER_LAT,
    LOADER_LON,
    SITE,
    T0,
    Track,
    offset,
    site_reference,
)


def run(points, config: EngineConfig | None = None, finish: bool = True):
    engine = TruckEngine(config)
    site = site_reference()
    state = None
    closed: list[CycleRecord] = []
    rejected = []
    for p in points:
        out, state = engine.on_point(state, p, site)
        closed += out.closed
        rejected += out.rejected
    if finish and state is not None:
        out, state = engine.on_timer(state, 0, END_OF_INPUT, site)
        closed += out.closed
    return closed, state, rejected


def test_clean_cycles_have_exact_segment_times():
    tr = Track().cycle().cycle().stand(60)
    closed, state, _ = run(tr.points)
    assert [c.cycle_status for c in closed] == [COMPLETE, COMPLETE]
    c = closed[0]
    assert (c.load_start_ms, c.load_end_ms, c.dump_start_ms, c.dump_end_ms, c.cycle_end_ms) == (
        T0, T0 + 120_000, T0 + 270_000, T0 + 310_000, T0 + 460_000)
    assert (c.load_seconds, c.load_travel_seconds, c.dump_seconds, c.empty_travel_seconds) == (120, 150, 40, 150)
    assert c.total_cycle_seconds == 460
    assert c.loader_asset_guid == "LOADER-1" and c.dump_region_guid == "DUMP-1"
    assert c.load_travel_distance_m == pytest.approx(1500, abs=2)
    assert closed[1].load_start_ms == c.cycle_end_ms
    assert state.committed.phase == "LOAD_TIME"


@pytest.mark.parametrize(("idle_s", "starts"), [(19.999, False), (20.0, True), (20.001, True)])
def test_load_idle_threshold_exactly_met_counts(idle_s: float, starts: bool):
    tr = Track().approach().at(0, IDLING).wait(idle_s).at(0, IDLING).wait(10).at(200, WORKING)
    _, state, _ = run(tr.points, finish=False)
    assert (state.committed.phase == "LOAD_TIME") is starts or (
        starts and state.pending and run(tr.points)[1].committed.phase in ("LOAD_TIME", "LOAD_TRAVEL"))
    _, state, _ = run(tr.points)
    assert (state.committed.phase in ("LOAD_TIME", "LOAD_TRAVEL")) is starts


def test_working_blip_does_not_split_a_load():
    tr = Track()
    tr.stand(50).drive(25, speed=2.5).stand(60)  # creep 25 m forward inside the loader radius
    tr.drive(1500).stand(40).drive(0).stand(60)
    closed, _, _ = run(tr.points)
    assert len(closed) == 1
    c = closed[0]
    assert c.load_start_ms == T0
    assert c.load_end_ms == T0 + (50 + 10 + 60) * 1000
    assert c.cycle_status == COMPLETE


def test_sparse_device_one_idle_row_then_working_a_minute_later():
    """A device that logs every 5 s while moving and sparsely while standing: one IDLING row at the
    loader, the next row (WORKING, departing) a minute later. The silence is long compared with its
    moving interval, so it stood there the whole minute."""
    tr = Track().approach(every=5)
    start = tr.t
    tr.at(0, IDLING).wait(60).at(2, WORKING).wait(5).drive(1500, every=5)
    tr.at(1500, IDLING).wait(45).at(1501, WORKING).wait(5).drive(0, every=5).at(0, IDLING).wait(60).at(0, WORKING)
    closed, _, _ = run(tr.points)
    assert len(closed) == 1
    c = closed[0]
    assert c.load_start_ms == start and c.load_end_ms == start + 60_000
    assert c.dump_seconds == 45
    assert c.cycle_status == COMPLETE


def test_one_idle_ping_in_dense_data_is_not_a_stop():
    """A 30 s device with one IDLING ping at the loader and the next ping WORKING (even with one ping
    missing): the spec's reading, no idle time to speak of, no load."""
    tr = Track().approach(every=30)
    tr.at(0, IDLING).wait(60).at(2, WORKING).wait(30).at(300, WORKING).wait(30).drive(1500, every=30)
    closed, state, _ = run(tr.points)
    assert not closed and state.committed.phase == "NONE"


def test_stop_inside_a_reporting_gap_is_inferred_from_position():
    """Both points WORKING, 100 s apart (more than 3 moving intervals) at the same spot: it stood there."""
    tr = Track().approach(every=30)
    start = tr.t
    tr.at(0, WORKING).wait(100).at(3, WORKING).wait(20).at(200, WORKING).wait(20).drive(1500, every=30)
    tr.at(1500, WORKING).wait(100).at(1504, WORKING).wait(20).drive(0, every=30).at(0, WORKING).wait(100).at(0, WORKING)
    closed, _, _ = run(tr.points)
    assert len(closed) == 1
    assert closed[0].load_start_ms == start
    assert closed[0].load_end_ms == start + 100_000
    assert closed[0].cycle_status == COMPLETE


def test_working_pings_close_together_are_movement_in_dense_data():
    """A slow truck on a hairpin past a loader: WORKING pings 10-20 m apart, 17-18 s apart. Dense
    data shows it moving; no standing, no load (the pair rule must not invent one)."""
    tr = Track().approach(every=17)
    for north, wait in ((10, 17), (21, 18), (12, 17), (25, 18), (60, 17), (120, 17)):
        tr.at(north, WORKING).wait(wait)
    tr.drive(1500, every=17)
    closed, state, _ = run(tr.points)
    assert not closed and state.committed.phase == "NONE" and state.committed.travel_idle_s == 0


def test_idle_point_then_far_point_after_a_gap_infers_standing_from_distance():
    """Idle at the loader, next point 60 s later 150 m away, on a device that reports every 5 s while
    moving at 10 m/s: it drove ~15 s of that and stood the rest (~45 s >= 20 s)."""
    tr = Track().approach(every=5)
    start = tr.t
    tr.at(0, IDLING).wait(60).drive(1500, every=5).stand(40, every=5).drive(0, every=5).at(0, IDLING).wait(60)
    tr.at(150, WORKING)
    closed, _, _ = run(tr.points)
    assert closed and closed[0].load_start_ms == start
    assert closed[0].load_end_ms == pytest.approx(start + 60_000, abs=1000)


def test_transit_through_loader_area_is_not_a_load():
    tr = Track().cycle()
    tr.drive(-300)  # drives through the loader area without stopping
    tr.drive(1500).stand(40).drive(0).stand(60)
    closed, _, _ = run(tr.points)
    assert len(closed) == 1  # the pass-through did not close the cycle


def test_no_dump_is_invalid():
    tr = Track().stand(120).drive(900).drive(0).stand(120).drive(1500).stand(40).drive(0).stand(60)
    closed, _, _ = run(tr.points)
    assert [c.cycle_status for c in closed] == [INVALID, COMPLETE]
    assert closed[0].invalid_reason == "NO_DUMP"
    assert closed[0].dump_start_ms is None
    assert closed[0].total_cycle_seconds == (closed[1].load_start_ms - closed[0].load_start_ms) / 1000


def test_long_idle_while_travelling_is_outlier_with_seconds():
    tr = Track().stand(120).drive(700).stand(700, every=30).drive(1500).stand(40).drive(0).stand(60)
    closed, _, _ = run(tr.points)
    assert closed[0].cycle_status == OUTLIER
    assert closed[0].outlier_rule == "TRAVEL_IDLE"
    assert closed[0].outlier_seconds == pytest.approx(700, abs=30)


def test_travel_idle_below_threshold_is_complete():
    tr = Track().stand(120).drive(700).stand(500, every=30).drive(1500).stand(40).drive(0).stand(60)
    closed, _, _ = run(tr.points)
    assert closed[0].cycle_status == COMPLETE
    assert closed[0].travel_idle_seconds == pytest.approx(500, abs=30)


def test_long_load_is_complete_by_default_and_an_area_idle_outlier_when_opted_in():
    tr = Track().stand(1300, every=30).drive(1500).stand(40).drive(0).stand(60)
    closed, _, _ = run(tr.points)
    assert closed[0].cycle_status == COMPLETE and closed[0].outlier_rule is None
    assert closed[0].load_seconds == pytest.approx(1300, abs=1)
    opted_in = EngineConfig(sites={SITE: CycleThresholds(area_idle_outlier_s=1200.0)})
    closed, _, _ = run(tr.points, opted_in)
    assert closed[0].cycle_status == OUTLIER
    assert closed[0].outlier_rule == "LOAD_AREA_IDLE"
    assert closed[0].outlier_seconds == pytest.approx(1300, abs=1)


def test_data_gap_with_displacement_closes_invalid():
    tr = Track().stand(120).drive(600)
    tr.wait(3600)  # device offline, reappears elsewhere
    tr.drive(1500).stand(40).drive(0).stand(60).drive(1500).stand(40).drive(0).stand(60)
    closed, _, _ = run(tr.points)
    assert closed[0].cycle_status == INVALID and closed[0].invalid_reason == "DATA_GAP"
    assert [c.cycle_status for c in closed[1:]] == [COMPLETE]


def test_parked_through_a_long_gap_counts_as_standing():
    tr = Track().stand(120).drive(700).at(700, IDLING).wait(3600).at(701, IDLING).wait(10)
    tr.drive(1500).stand(40).drive(0).stand(60)
    closed, _, _ = run(tr.points)
    assert closed[0].cycle_status == OUTLIER and closed[0].outlier_rule == "TRAVEL_IDLE"


def test_repeated_dump_is_invalid():
    tr = Track().stand(120).drive(1500).stand(40).drive(900).drive(1500).stand(40).drive(0).stand(60)
    closed, _, _ = run(tr.points)
    assert closed[0].cycle_status == INVALID and closed[0].invalid_reason == "REPEATED_DUMP"


def test_sites_never_mix():
    """A truck of another site standing on this site's loader is travelling for its own site."""
    other = Track(site="SITE-OTHER").stand(200)
    engine = TruckEngine()
    state = None
    other_site = site_reference("SITE-OTHER")
    other_site = type(other_site)("SITE-OTHER")  # a site with no loaders or regions
    for p in other.points:
        _, state = engine.on_point(state, p, other_site)
    assert state.committed.phase == "NONE"
    assert state.committed.prev_area == "T"


def test_site_change_closes_open_cycle():
    tr = Track().stand(120).drive(1500)
    moved = Track(site="SITE-2", start_ms=tr.t + 10_000).stand(60)
    engine = TruckEngine()
    state = None
    closed = []
    for p in tr.points:
        out, state = engine.on_point(state, p, site_reference())
        closed += out.closed
    for p in moved.points:
        out, state = engine.on_point(state, p, site_reference("SITE-2"))
        closed += out.closed
    out, state = engine.on_timer(state, 0, END_OF_INPUT, site_reference("SITE-2"))
    closed += out.closed
    assert [(c.cycle_status, c.invalid_reason) for c in closed] == [(INVALID, "SITE_CHANGE")]


def test_per_site_thresholds():
    """A quarry site tips in 10 s: a 12 s stand in the dump counts there, not at the default site."""
    tr = Track().stand(120).drive(1500).stand(16, every=4).drive(0).stand(60)
    closed_default, _, _ = run(tr.points)
    quarry = EngineConfig(sites={SITE: CycleThresholds(dump_idle_s=10.0)})
    closed_quarry, _, _ = run(tr.points, quarry)
    assert closed_default[0].invalid_reason == "NO_DUMP"
    assert closed_quarry[0].cycle_status == COMPLETE


def test_gps_jitter_at_the_dump_boundary_does_not_split_the_dump():
    tr = Track().stand(120).drive(1400)
    dump_start = tr.t
    jitter_from = len(tr.points)
    for i in range(8):  # standing on the south edge of the dump square, jitter in and out
        tr.at(1400 + (3 if i % 2 else -3), IDLING).wait(10)
    tr.drive(0).stand(60)
    index = SpatialIndex(site_reference(), EngineConfig().defaults.loader_distance_m)
    areas = [index.classify(p.latitude, p.longitude)[0] for p in tr.points[jitter_from:jitter_from + 8]]
    assert areas == [AREA_TRAVEL, AREA_DUMP] * 4, areas  # the jitter really crosses the edge
    closed, _, _ = run(tr.points)
    assert closed[0].cycle_status == COMPLETE
    assert closed[0].dump_start_ms == dump_start + 10_000 or closed[0].dump_start_ms == dump_start


def test_positions_used_are_real_coordinates():
    lat, lon = offset(LOADER_LAT, LOADER_LON, 1500, 0)
    assert (lat, lon) == pytest.approx(DUMP_CENTER)
