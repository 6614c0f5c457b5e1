"""Random single-truck tracks on a small pit for property tests, and a spec-literal reference.

The site (metres north / east of loader L1): loader L1 at (0, 0), loader L2 at (600, 30) beside the
haul road (east = 0, so every truck passes within 30 m of it), a 200 m square dump centred at
(1500, 0). Between 200 and 450 m north the road may climb a switchback: legs across the wall 30 m
apart joined by hairpins, where two pings can lie a few metres apart with a long road between them.

``build_track`` turns a ``TrackSpec`` (drawn by hypothesis) into exact motion and the pings of a
device reporting every ``interval_s`` (+-20 %), IDLING while standing; ``spec_literal_cycles`` is the
plain reading of the spec that the engine must agree with on dense data.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from state_machine.model import COMPLETE, IDLING, INVALID, OUTLIER, WORKING, TelemetryPoint
from state_machine.reference import Loader, Region, SiteReference, geodesic_distance_m
from tests.state_machine.track import LOADER_LAT, LOADER_LON, SITE, T0, TRUCK, offset, square

L2 = (600.0, 30.0)
DUMP_CENTRE = (1500.0, 0.0)
DUMP_HALF_M = 100.0
SPOT = (10.0, 0.0)
BAY = (35.0, 6.0)  # a queue spot inside L1's 50 m circle
LOAD_IDLE_S = DUMP_IDLE_S = 20.0
TRAVEL_IDLE_OUTLIER_S = 600.0
LOADER_DISTANCE_M = 50.0


def pit_site() -> SiteReference:
    """The property tests' site: two loaders and one dump square."""
    l1 = Loader("L1", SITE, LOADER_LAT, LOADER_LON)
    l2 = Loader("L2", SITE, *offset(LOADER_LAT, LOADER_LON, *L2))
    dump = Region("DUMP", "Dump", "dump", SITE, square(offset(LOADER_LAT, LOADER_LON, *DUMP_CENTRE), DUMP_HALF_M))
    return SiteReference(SITE, (l1, l2), (dump,))


@dataclass(frozen=True)
class TrackSpec:
    """What a random track does (everything else comes from ``seed``)."""

    seed: int
    cycles: int
    interval_s: float
    loaded_mps: float
    empty_mps: float
    switchback: bool
    gps_sigma_m: float
    stop_at_l2_p: float = 0.0  # a load at the pass-by loader (the cycle before it is NO_DUMP)
    road_stop_p: float = 0.0  # a stop on the road, 30-900 s (over 600 s: OUTLIER)
    skip_dump_p: float = 0.0  # tip on the road instead (NO_DUMP)
    bay_queue_p: float = 0.0  # wait in L1's bay, then spot (a blip inside the circle)
    short_stops: bool = False  # stops may be shorter than two pings (not dense-observable)


XY = tuple[float, float]
# a leg: (t0_ms, t1_ms, points of a polyline driven at constant speed, or one point stood at)
_Leg = tuple[int, int, list[XY]]


def _switchback(rng: random.Random) -> list[XY]:
    pts: list[XY] = []
    north = 200.0
    side = 1.0
    while north < 430.0:
        pts.append((north, 60.0 * side))
        for k in range(1, 6):  # hairpin: half circle of radius 15 m towards the next leg
            a = math.pi * k / 6
            pts.append((north + 15.0 - 15.0 * math.cos(a), 60.0 * side + side * 15.0 * math.sin(a)))
        north += 30.0
        pts.append((north, 60.0 * side))
        side = -side
    pts.append((450.0, 0.0))
    return pts


def _haul_road(switchback: list[XY] | None) -> list[XY]:
    return [SPOT, (60.0, 0.0), (200.0, 0.0), *(switchback or []), (450.0, 0.0), (1000.0, 0.0), (1380.0, 0.0)]


class _Motion:
    def __init__(self, t_ms: int) -> None:
        self.t = t_ms
        self.legs: list[tuple[int, int, list[XY], int]] = []

    def drive(self, pts: list[XY], speed: float, slow_ramp: float | None = None) -> None:
        for a, b in zip(pts, pts[1:], strict=False):
            d = math.dist(a, b)
            if d < 1e-6:
                continue
            v = speed if slow_ramp is None or not (200.0 <= a[0] <= 450.0) else min(speed, slow_ramp)
            t1 = self.t + max(1, int(d / v * 1000))
            self.legs.append((self.t, t1, [a, b], WORKING))
            self.t = t1

    def stand(self, at: XY, seconds: float) -> tuple[int, int]:
        t0 = self.t
        self.t += int(seconds * 1000)
        self.legs.append((t0, self.t, [at], IDLING))
        return t0, self.t


def _stop_s(rng: random.Random, lo: float, hi: float, spec: TrackSpec) -> float:
    """A stop long enough for two idle pings to span the idle threshold (unless short stops)."""
    floor = 0.0 if spec.short_stops else 2.0 * 1.2 * spec.interval_s + LOAD_IDLE_S + 2.0
    return max(rng.uniform(lo, hi), floor)


def build_track(spec: TrackSpec) -> list[TelemetryPoint]:
    """Pings of one truck doing ``spec.cycles`` cycles (starting on the road, ending at a loader)."""
    rng = random.Random(spec.seed)
    road = _haul_road(_switchback(rng) if spec.switchback else None)
    back = list(reversed(road))
    m = _Motion(T0)
    m.drive([(-300.0, 0.0), (-60.0, 0.0), SPOT], spec.empty_mps)
    for _ in range(spec.cycles):
        if rng.random() < spec.bay_queue_p:
            m.drive([SPOT, (60.0, 0.0), BAY], 3.0)
            m.stand(BAY, rng.uniform(20, 600))
            m.drive([BAY, SPOT], 2.0)
        m.stand(SPOT, _stop_s(rng, 60, 300, spec))
        before_l2 = [p for p in road if p[0] < L2[0]]
        m.drive(before_l2 + [(L2[0], 0.0)], spec.loaded_mps, slow_ramp=3.0)
        if rng.random() < spec.stop_at_l2_p:
            m.drive([(L2[0], 0.0), (L2[0], 18.0)], 2.0)
            m.stand((L2[0], 18.0), _stop_s(rng, 60, 200, spec))
            m.drive([(L2[0], 18.0), (L2[0], 0.0)], 2.0)
        m.drive([(L2[0], 0.0), (1000.0, 0.0)], spec.loaded_mps)
        if rng.random() < spec.road_stop_p:
            m.stand((1000.0, 0.0), rng.uniform(30, 900) if not spec.short_stops else rng.uniform(5, 900))
        if rng.random() < spec.skip_dump_p:
            m.drive([(1000.0, 0.0), (1200.0, 0.0)], spec.loaded_mps)
            m.stand((1200.0, 0.0), _stop_s(rng, 40, 90, spec))
            m.drive([(1200.0, 0.0), (1000.0, 0.0)], spec.empty_mps)
        else:
            tip = (DUMP_CENTRE[0] + rng.uniform(-40, 40), rng.uniform(-40, 40))
            m.drive([(1000.0, 0.0), (1380.0, 0.0), tip], spec.loaded_mps)
            m.stand(tip, _stop_s(rng, 45, 120, spec))
            m.drive([tip, (1380.0, 0.0), (1000.0, 0.0)], spec.empty_mps)
        m.drive([p for p in back if p[0] <= 1000.0], spec.empty_mps, slow_ramp=4.0)
    m.stand(SPOT, _stop_s(rng, 60, 120, spec))
    m.drive([SPOT, (60.0, 0.0), (200.0, 0.0)], spec.loaded_mps)
    return _pings(m, spec, rng)


def _pings(m: _Motion, spec: TrackSpec, rng: random.Random) -> list[TelemetryPoint]:
    points: list[TelemetryPoint] = []
    t = T0
    interval_ms = spec.interval_s * 1000.0
    for t0, t1, pts, ws in m.legs:
        while t < t1:
            if t >= t0:
                if len(pts) == 1:
                    north, east = pts[0]
                else:
                    f = (t - t0) / (t1 - t0)
                    north = pts[0][0] + f * (pts[1][0] - pts[0][0])
                    east = pts[0][1] + f * (pts[1][1] - pts[0][1])
                if spec.gps_sigma_m:
                    north += rng.gauss(0, spec.gps_sigma_m)
                    east += rng.gauss(0, spec.gps_sigma_m)
                lat, lon = offset(LOADER_LAT, LOADER_LON, north, east)
                points.append(TelemetryPoint(TRUCK, SITE, t, lat, lon, ws))
            t += int(interval_ms * rng.uniform(0.8, 1.2))
    return points


# ----------------------------------------------------------------------------- spec-literal reference


def _place(site: SiteReference, p: TelemetryPoint) -> str:
    """'L:<guid>' within 50 m of a loader (nearest), 'D:<guid>' inside a dump region, else 'T'."""
    best = None
    for ld in site.loaders:
        d = geodesic_distance_m(p.latitude, p.longitude, ld.latitude, ld.longitude)
        if d <= LOADER_DISTANCE_M and (best is None or d < best[0]):
            best = (d, ld.asset_guid)
    if best is not None:
        return "L:" + best[1]
    from shapely.geometry import Point, Polygon

    for region in site.dump_regions:
        if Polygon(region.points).contains(Point(p.longitude, p.latitude)):
            return "D:" + region.region_guid
    return "T"


def spec_literal_cycles(points: list[TelemetryPoint], site: SiteReference) -> list[tuple]:
    """Closed cycles by the plain reading of the spec, as (load_start, load_end, dump_start, dump_end,
    cycle_end, status, invalid_reason, outlier_rule) in event-time order.

    Idle runs are maximal runs of consecutive IDLING points in one place; a run at a loader / in a
    dump region lasting >= 20 s (first to last idle point) is a load / dump from its first idle point
    to the point after it; a run on the road lasting (first idle point to the point after it) more
    than 600 s during a haul makes the cycle an OUTLIER. The next load closes the cycle.
    """
    pts = sorted({p.ts_ms: p for p in points}.values(), key=lambda p: p.ts_ms)
    runs: list[tuple[str, int, int, int]] = []  # (place, first idle, last idle, departure)
    i = 0
    while i < len(pts):
        if pts[i].work_state_id != IDLING:
            i += 1
            continue
        place = _place(site, pts[i])
        j = i
        while j + 1 < len(pts) and pts[j + 1].work_state_id == IDLING and _place(site, pts[j + 1]) == place:
            j += 1
        depart = pts[j + 1].ts_ms if j + 1 < len(pts) else pts[j].ts_ms
        runs.append((place, pts[i].ts_ms, pts[j].ts_ms, depart))
        i = j + 1
    cycles: list[tuple] = []
    cur: dict | None = None
    for place, first, last, depart in runs:
        if place.startswith("L:") and last - first >= LOAD_IDLE_S * 1000:
            if cur is not None:
                cycles.append(_close(cur, first))
            cur = {"load": (first, depart), "dump": None, "dumps": 0, "outlier": False}
        elif cur is None:
            continue
        elif place.startswith("D:") and last - first >= DUMP_IDLE_S * 1000:
            cur["dumps"] += 1
            if cur["dump"] is None:
                cur["dump"] = (first, depart)
        elif place == "T" and depart - first > TRAVEL_IDLE_OUTLIER_S * 1000:
            cur["outlier"] = True
    return cycles


def _close(cur: dict, end: int) -> tuple:
    (ls, le), dump = cur["load"], cur["dump"]
    if dump is None:
        return (ls, le, None, None, end, INVALID, "NO_DUMP", "TRAVEL_IDLE" if cur["outlier"] else None)
    if cur["dumps"] > 1:
        return (ls, le, *dump, end, INVALID, "REPEATED_DUMP", "TRAVEL_IDLE" if cur["outlier"] else None)
    status = OUTLIER if cur["outlier"] else COMPLETE
    return (ls, le, *dump, end, status, None, "TRAVEL_IDLE" if cur["outlier"] else None)
