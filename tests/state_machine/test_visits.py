"""Load visits as the truck engine sees them (state_machine.cycle): the first stop of the approach, the
entry into the bay and the departure, and what awkward reference data does to them."""

from __future__ import annotations

from dataclasses import replace

from state_machine.model import LoadVisit, TelemetryPoint
from state_machine.reference import Loader, ReferenceData, SiteReference
from state_machine.telemetry import format_record
from state_machine.truck import END_OF_INPUT, TruckEngine
from tests.state_machine.track import LOADER_LAT, LOADER_LON, SITE, TRUCK, Track, offset, site_reference
from workbench.replay import replay


def visits_of(points: list[TelemetryPoint], sites: list[tuple[int, SiteReference]] | None = None) -> list[LoadVisit]:
    """The visits one truck's points (in order) give; ``sites``: (from ms, reference) changes."""
    engine = TruckEngine(speculative=False)
    changes = sorted(sites or [(0, site_reference())])
    state, found = None, []
    for p in points:
        site = [ref for since, ref in changes if since <= p.ts_ms][-1]
        out, state = engine.on_point(state, p, site)
        found += out.visits
    out, state = engine.on_timer(state, END_OF_INPUT, END_OF_INPUT)
    return found + out.visits


def _between(track: Track, first: int, second: int) -> int:
    return (track.points[first].ts_ms + track.points[second].ts_ms) // 2


def test_a_visit_starts_where_the_truck_came_to_rest_enters_the_bay_between_pings_and_leaves_between_pings():
    track = Track().approach(-300.0)  # pings at -300, -200, -100 m, then at the loader
    arrived = len(track.points)
    track.stand(120.0).drive(400.0).stand(30.0)
    [visit] = visits_of(track.points)
    assert visit.loader_guid == "LOADER-1" and not visit.open
    assert visit.first_stop_ms == _between(track, arrived - 1, arrived)  # last moving ping, first idle one
    assert visit.arrival_ms == _between(track, arrived - 1, arrived)  # 50 m is crossed in the same pair
    left = arrived + 12  # 12 idle pings (120 s every 10 s), then the first moving one
    assert visit.departure_ms == _between(track, left - 1, left)
    assert visit.load_start_ms == track.points[arrived].ts_ms  # the cycle keeps the spec's reading


def test_a_stop_at_a_staging_point_within_queue_radius_is_where_the_visit_and_its_wait_begin():
    track = Track().approach(-400.0)
    track.north = -400.0
    track.drive(-100.0)
    stopped = len(track.points)
    track.stand(200.0).drive(0.0, speed=3.3)  # pings 33 m apart: at -100, -67, -33 m
    entered = next(i for i, p in enumerate(track.points) if i > stopped and abs(p.latitude - LOADER_LAT) * 111_320 < 49)
    track.stand(120.0).drive(400.0)
    [visit] = visits_of(track.points)
    assert visit.first_stop_ms == _between(track, stopped - 1, stopped)
    assert visit.arrival_ms == _between(track, entered - 1, entered)


def test_a_stop_beyond_queue_radius_or_one_the_truck_drove_away_from_is_not_part_of_the_visit():
    far = Track()
    far.north = -600.0
    far.drive(-300.0).stand(200.0).drive(0.0)
    arrived = len(far.points)
    far.stand(120.0).drive(400.0)
    [visit] = visits_of(far.points)
    assert visit.first_stop_ms == _between(far, arrived - 1, arrived)
    left = Track()
    left.north = -400.0
    left.drive(-100.0).stand(200.0).drive(-400.0).drive(0.0)  # waited near the loader, drove off, came back
    arrived = len(left.points)
    left.stand(120.0).drive(400.0)
    [visit] = visits_of(left.points)
    assert visit.first_stop_ms == _between(left, arrived - 1, arrived)


def _two_loaders() -> SiteReference:
    lat, lon = offset(LOADER_LAT, LOADER_LON, 0.0, 30.0)
    base = site_reference()
    return replace(base, loaders=(*base.loaders, Loader("LOADER-2", SITE, lat, lon)))


def test_between_two_loaders_30_m_apart_the_visit_is_at_the_loader_nearest_to_where_the_truck_stood():
    track = Track().approach(-300.0)
    track.stand(120.0, east=24.0).drive(400.0)  # 24 m east: 6 m from LOADER-2, 24 m from LOADER-1
    [visit] = visits_of(track.points, [(0, _two_loaders())])
    assert visit.loader_guid == "LOADER-2"


def test_a_loader_that_moves_keeps_its_visits_under_its_guid_at_its_new_place():
    moved_lat, moved_lon = offset(LOADER_LAT, LOADER_LON, -600.0, 0.0)
    moved = replace(site_reference(), loaders=(Loader("LOADER-1", SITE, moved_lat, moved_lon),))
    track = Track().approach(-300.0).cycle()
    switch = track.t
    track.north = 0.0
    track.drive(-600.0).stand(120.0).drive(400.0)  # loads at the loader's new place
    visits = visits_of(track.points, [(0, site_reference()), (switch, moved)])
    assert [v.loader_guid for v in visits] == ["LOADER-1", "LOADER-1"]
    assert visits[1].first_stop_ms > switch


def test_a_loader_removed_mid_visit_ends_that_visit_and_no_load_starts_there_afterwards():
    gone = replace(site_reference(), loaders=())
    track = Track().approach(-300.0).stand(60.0)
    removed_at = track.t
    track.stand(60.0).cycle()  # loads on, then comes back to where the loader was
    track.stand(120.0).drive(400.0)
    visits = visits_of(track.points, [(0, site_reference()), (removed_at, gone)])
    assert [v.loader_guid for v in visits] == ["LOADER-1"] and visits[0].departure_ms > removed_at


def test_a_truck_loaded_where_no_loader_is_known_has_no_visit_and_nothing_is_dropped():
    unknown = Track()
    unknown.north = -300.0
    unknown.drive(-900.0).stand(150.0).drive(1500.0).stand(40.0).drive(0.0).stand(120.0).drive(400.0)
    points = unknown.points
    ref = ReferenceData(asset_types={TRUCK: "HAUL_TRUCK"}, sites={SITE: site_reference()})
    result = replay(((f"line {i}", format_record(p)) for i, p in enumerate(points)), ref)
    assert result.applied_points == len(points) and not result.dead_letters
    assert [v.first_stop_ms for v in result.visits] == [v.first_stop_ms for v in visits_of(points)]
    assert all(v.loader_guid == "LOADER-1" for v in result.visits)


def test_a_visit_still_open_when_a_bounded_input_ends_is_reported_open_up_to_the_last_point():
    track = Track().approach(-300.0).stand(300.0)
    [visit] = visits_of(track.points)
    assert visit.open and visit.departure_ms == track.points[-1].ts_ms
    ref = ReferenceData(asset_types={TRUCK: "HAUL_TRUCK"}, sites={SITE: site_reference()})
    result = replay(((f"line {i}", format_record(p)) for i, p in enumerate(track.points)), ref)
    [served] = result.served.values()
    assert served.visit.open and served.service_start_ms == visit.arrival_ms
    assert sum(h.loads for h in result.loader_hours.values()) == 1
