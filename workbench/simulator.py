"""Deterministic haul-fleet simulator: site layouts, truck motion, telemetry, degradations, ground truth.

Everything is a pure function of a :class:`SimulationSpec` (seed included): no global random, no clock.

Model
-----
Each site has a hub (road junction) at its centre and "clusters" spread around it: pit clusters of up
to six loaders and dump clusters of up to six dump polygons, each cluster fanned out around its own
junction. Roads are polylines with small bends: hub -> cluster junction -> loader approach point /
dump entry point. Motion is computed exactly (piecewise-constant speed along polylines, slower near
stops) and telemetry pings sample it; ground truth comes from the exact motion, never from pings.

A truck cycle: arrive at the loader approach point -> (stand at the queue spot while the loader is
busy) -> spot at the loading spot -> load 60-240 s -> loaded haul to its dump -> drive into the dump
polygon to a dump spot, tip 25-90 s -> empty haul back to (maybe another) loader. Loaders serve one
truck at a time, first come first served.

Truth definitions (per truck, closed cycles only):
  load_start = the instant the truck comes to rest within 50 m of its loader (the queue spot if that
  is inside the radius, otherwise the loading spot); load_end = departure from the loading spot;
  dump_start/dump_end = rest/departure at the dump spot; cycle_end = next load_start.
  OUTLIER: a standstill during travel > 600 s (TRAVEL_IDLE), load > 1200 s (LOAD_AREA_IDLE) or dump
  > 1200 s (DUMP_AREA_IDLE); the chronologically first violation is reported. INVALID (NO_DUMP): the
  truck tipped on the road outside any dump region. A cycle is in the truth when its closing
  load_start is <= the end of the run; a truck whose closing load_start falls in the last 240 s keeps
  reporting until 240 s after it so that the closing load is observable.

Delivery: every ping gets a delivery time (event time + degradations); the output is sorted by
delivery time (ties in generation order), which is the telemetry.jsonl line order.
"""

from __future__ import annotations

import bisect
import heapq
import json
import math
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pyproj import Geod
from shapely.geometry import LineString as _ShLine
from shapely.geometry import Point as _ShPoint
from shapely.geometry import Polygon as _ShPolygon

from state_machine.model import (
    COMPLETE,
    EMPTY_TRAVEL,
    HAUL_TRUCK,
    IDLING,
    INVALID,
    LOAD_TRAVEL,
    LOADER,
    OUTLIER,
    WORKING,
    CycleRecord,
)
from state_machine.reference import Loader, ReferenceData, Region, SiteReference

_GEOD = Geod(ellps="WGS84")
DEFAULT_START_MS = int(datetime(2024, 1, 15, 6, 0, 0, tzinfo=UTC).timestamp() * 1000)

TRAVEL_IDLE_OUTLIER_S = 600.0
CLOSE_GUARD_MS = 240_000  # data kept after a closing load_start near the end of the run (sparse devices: 1-3 min)
MAX_CLUSTER = 6

AssetTuple = tuple[str, str, str, float | None, float | None]


# ----------------------------------------------------------------------------------------------- spec


@dataclass(frozen=True)
class SimulationSpec:
    """All simulator options. Counts of trucks/loaders/dumps/non-trucks/unknown assets are per site."""

    trucks: int = 5
    loaders: int | None = None
    """None: one loader per 5 trucks."""
    dumps: int | None = None
    """None: one dump region per ~15 trucks (at least 2)."""
    hours: float | None = 2.0
    """Length of the run; None for an unbounded stream (iter_deliveries only)."""
    seed: int = 0
    sites: int = 1
    start_ms: int = DEFAULT_START_MS
    center_lat: float = -22.7
    center_lon: float = 118.7
    site_spacing_km: float = 60.0
    """Distance between consecutive site centres (eastwards)."""
    restricted_region: bool = True
    ping_interval_s: tuple[float, float] = (10.0, 30.0)
    """Range of the per-truck base ping interval (each interval jitters by +-ping_jitter)."""
    ping_jitter: float = 0.2
    device: str = "interval"
    """"interval": a ping every ping interval whatever the truck does (stops last long enough for two
    idle pings spanning the idle threshold, as the spec's reading assumes); "on_change": a row about
    every second while moving and every 1-3 min while standing (the first one either right at the stop
    or only 1-3 min later), the work state derived from speed."""
    layout: str = "radial"
    """"radial": pit and dump clusters around a hub, faces 250 m to several km apart; "pit": one open
    pit whose ramp (see ``ramp``) climbs from a floor with faces ``face_spacing_m`` apart along a
    bench road that passes within ``bench_offset_m`` of every loader, dumps on the surface."""
    ramp: str = "switchback"
    """Pit layout: "switchback" (legs 150-300 m long, 25-40 m apart, joined by hairpins) or "spiral"."""
    ramp_faces: int = 1
    """Pit layout with a switchback ramp: faces beside hairpins (at most loaders - 1)."""
    face_spacing_m: tuple[float, float] = (150.0, 300.0)
    bench_offset_m: tuple[float, float] = (20.0, 40.0)
    loaded_ramp_mps: tuple[float, float] = (2.5, 5.0)
    empty_ramp_mps: tuple[float, float] = (6.0, 12.0)
    queue_inside_p: float = 0.5
    """Probability that a loader's queue spot is inside its 50 m circle (the truck waits in the bay);
    otherwise trucks wait at a staging point outside it."""
    area_idle_outlier_s: float = 0.0
    """Truth: a load or dump longer than this is an OUTLIER (0 = off, the spec's statuses)."""
    gps_sigma_m: float = 3.0
    gps_outlier_p: float = 0.005
    """Fraction of pings with a 10-20 m position outlier."""
    sparse_idle: bool = False
    """While standing, devices ping only every 60-120 s (none during a short stop)."""
    reassign_p: float = 0.05
    """Probability per cycle that a truck is sent to another loader (dumps: twice that)."""
    # degradations
    duplicates: float = 0.0
    disorder_s: float = 0.0
    drop: float = 0.0
    outages_per_day: float = 0.0
    outage_loss: bool = False
    long_idles: float = 0.0
    bad_dumps: float = 0.0
    non_trucks: int = 0
    """Water trucks/dozers per site; when > 0 the loaders send telemetry too."""
    malformed: float = 0.0
    unknown_assets: int = 0

    def __post_init__(self) -> None:
        for name in ("trucks", "sites", "non_trucks", "unknown_assets", "ramp_faces"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")
        if self.sites < 1:
            raise ValueError("sites must be >= 1")
        if self.loaders is not None and self.loaders < 1:
            raise ValueError("loaders must be >= 1")
        if self.dumps is not None and self.dumps < 1:
            raise ValueError("dumps must be >= 1")
        if self.hours is not None and not self.hours > 0:
            raise ValueError("hours must be > 0 (or None for an unbounded stream)")
        if self.device not in ("interval", "on_change"):
            raise ValueError("device must be 'interval' or 'on_change'")
        if self.layout not in ("radial", "pit") or self.ramp not in ("switchback", "spiral"):
            raise ValueError("layout must be 'radial' or 'pit', ramp 'switchback' or 'spiral'")
        for name in ("face_spacing_m", "bench_offset_m", "loaded_ramp_mps", "empty_ramp_mps"):
            lo, hi = getattr(self, name)
            if not 0 < lo <= hi:
                raise ValueError(f"{name} must be (min, max) with 0 < min <= max")
        for name in ("duplicates", "drop", "long_idles", "bad_dumps", "malformed", "gps_outlier_p", "reassign_p",
                     "ping_jitter", "queue_inside_p"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be a fraction in [0, 1]")
        if self.disorder_s < 0 or self.outages_per_day < 0 or self.gps_sigma_m < 0:
            raise ValueError("disorder_s, outages_per_day and gps_sigma_m must be >= 0")
        lo, hi = self.ping_interval_s
        if not 0 < lo <= hi:
            raise ValueError("ping_interval_s must be (min, max) with 0 < min <= max")

    @property
    def n_loaders(self) -> int:
        """Loaders per site (resolved)."""
        return self.loaders if self.loaders is not None else max(1, math.ceil(self.trucks / 5))

    @property
    def n_dumps(self) -> int:
        """Dump regions per site (resolved)."""
        return self.dumps if self.dumps is not None else max(2, math.ceil(self.trucks / 15))

    @property
    def end_ms(self) -> int | None:
        """End of the run (epoch ms) or None when unbounded."""
        return None if self.hours is None else self.start_ms + int(round(self.hours * 3_600_000))

    def degraded(self) -> SimulationSpec:
        """This spec with the realistic degradation mix of DEGRADED_PRESET applied."""
        return replace(self, **DEGRADED_PRESET)


DEGRADED_PRESET: dict[str, Any] = {
    "duplicates": 0.02,
    "disorder_s": 30.0,
    "drop": 0.01,
    "outages_per_day": 2.0,
    "long_idles": 0.03,
    "bad_dumps": 0.02,
    "non_trucks": 2,
    "malformed": 0.002,
    "unknown_assets": 1,
}

_PIT = {"layout": "pit", "gps_sigma_m": 3.5}
SCENARIO_FAMILIES: dict[str, dict[str, Any]] = {
    "clean": {},
    "degraded": DEGRADED_PRESET,
    "sparse-idle": {"sparse_idle": True},
    "sparse-pings": {"ping_interval_s": (25.0, 45.0)},
    "noisy-gps": {"gps_sigma_m": 6.0, "gps_outlier_p": 0.03, **DEGRADED_PRESET},
    "multi-site": {"sites": 3, **DEGRADED_PRESET},
    "switchback-pit": {**_PIT, "ramp": "switchback"},
    "hairpin-faces": {**_PIT, "ramp": "switchback", "ramp_faces": 2, "loaders": 4, "ping_interval_s": (15.0, 20.0),
                      "loaded_ramp_mps": (2.5, 4.0)},
    "spiral-pit": {**_PIT, "ramp": "spiral", "gps_sigma_m": 4.0, "loaded_ramp_mps": (4.5, 5.0)},
    "close-faces": {**_PIT, "face_spacing_m": (150.0, 190.0), "bench_offset_m": (15.0, 35.0), "loaders": 5},
    "in-bay-queue": {**_PIT, "queue_inside_p": 1.0, "loaders": 2},
    "staging-queue": {**_PIT, "queue_inside_p": 0.0, "loaders": 2},
    "degraded-pit": {**_PIT, **DEGRADED_PRESET},
    "sparse-device": {**_PIT, "device": "on_change"},
    "sparse-device-radial": {"device": "on_change", **DEGRADED_PRESET},
}
"""Named scenario families (overrides of SimulationSpec): the engine's accuracy bar is checked on each
(tests/state_machine/test_scenarios.py, bench/scenario_table.py); `asset-cycle simulate --scenario`."""


def scenario_spec(name: str, **overrides: Any) -> SimulationSpec:
    """The SimulationSpec of a named family (``overrides`` on top, e.g. trucks, hours, seed)."""
    if name not in SCENARIO_FAMILIES:
        raise ValueError(f"unknown scenario {name!r}; known: {', '.join(SCENARIO_FAMILIES)}")
    family = dict(SCENARIO_FAMILIES[name])
    if "sites" in family and "trucks" not in overrides:
        family.setdefault("trucks", 6)
    return SimulationSpec(**{**family, **overrides})


# ------------------------------------------------------------------------------------------- geometry

XY = tuple[float, float]


class _Frame:
    """Local east/north metre frame around a site centre (accurate to ~0.1 % over a few km)."""

    def __init__(self, lat0: float, lon0: float) -> None:
        self.lat0, self.lon0 = lat0, lon0
        self.m_lat = _GEOD.inv(lon0, lat0 - 0.005, lon0, lat0 + 0.005)[2] / 0.01
        self.m_lon = _GEOD.inv(lon0 - 0.005, lat0, lon0 + 0.005, lat0)[2] / 0.01

    def to_ll(self, x: float, y: float) -> tuple[float, float]:
        return self.lat0 + y / self.m_lat, self.lon0 + x / self.m_lon


FLAT = "flat"
RAMP = "ramp"
HAIRPIN = "hairpin"
BENCH = "bench"  # the road along working faces: slow (speed limit near loading units)


class _Path:
    """A polyline with cumulative lengths; each segment has a road kind (flat, ramp, hairpin)."""

    __slots__ = ("pts", "kinds", "cum", "length")

    def __init__(self, pts: list[XY], kinds: list[str] | None = None) -> None:
        kinds = list(kinds) if kinds is not None else [FLAT] * max(0, len(pts) - 1)
        clean = [pts[0]]
        clean_kinds: list[str] = []
        for p, kind in zip(pts[1:], kinds, strict=True):
            if p != clean[-1]:
                clean.append(p)
                clean_kinds.append(kind)
        if len(clean) == 1:
            clean.append(clean[0])
            clean_kinds.append(FLAT)
        self.pts = clean
        self.kinds = clean_kinds
        cum = [0.0]
        for (x0, y0), (x1, y1) in zip(clean, clean[1:], strict=False):
            cum.append(cum[-1] + math.hypot(x1 - x0, y1 - y0))
        self.cum = cum
        self.length = cum[-1]

    def __add__(self, other: _Path) -> _Path:
        """This path, then ``other`` (which should start where this one ends)."""
        joint = [FLAT] if other.pts[0] != self.pts[-1] else []
        return _Path(self.pts + (other.pts if joint else other.pts[1:]), self.kinds + joint + other.kinds)

    def reversed(self) -> _Path:
        """The same road driven the other way."""
        return _Path(list(reversed(self.pts)), list(reversed(self.kinds)))

    def at(self, d: float) -> XY:
        cum = self.cum
        if d <= 0:
            return self.pts[0]
        if d >= self.length:
            return self.pts[-1]
        i = bisect.bisect_right(cum, d) - 1
        seg = cum[i + 1] - cum[i]
        f = (d - cum[i]) / seg if seg > 0 else 0.0
        (x0, y0), (x1, y1) = self.pts[i], self.pts[i + 1]
        return x0 + f * (x1 - x0), y0 + f * (y1 - y0)

    def kind_at(self, d: float) -> str:
        i = min(max(bisect.bisect_right(self.cum, d) - 1, 0), len(self.kinds) - 1)
        return self.kinds[i]

    def split(self, d: float) -> tuple[_Path, _Path]:
        i = bisect.bisect_right(self.cum, d)
        i = min(max(i, 1), len(self.pts) - 1)
        p = self.at(d)
        return (_Path(self.pts[:i] + [p], self.kinds[:i]),
                _Path([p] + self.pts[i:], self.kinds[i - 1:]))


def _polar(origin: XY, r: float, ang: float) -> XY:
    return origin[0] + r * math.cos(ang), origin[1] + r * math.sin(ang)


def _road(a: XY, b: XY, rng: random.Random, bends: int = 2, max_off: float = 15.0) -> list[XY]:
    """Polyline from a to b with a few gentle bends (perpendicular offsets)."""
    dx, dy = b[0] - a[0], b[1] - a[1]
    length = math.hypot(dx, dy) or 1.0
    nx, ny = -dy / length, dx / length
    off_max = min(max_off, 0.05 * length)
    pts = [a]
    for k in range(1, bends + 1):
        f = k / (bends + 1) + rng.uniform(-0.05, 0.05)
        off = rng.uniform(-off_max, off_max)
        pts.append((a[0] + f * dx + off * nx, a[1] + f * dy + off * ny))
    pts.append(b)
    return pts


@dataclass
class _LoaderGeo:
    guid: str
    pos: XY
    approach: XY  # end of the road, outside the loader circle
    queue: XY
    spot: XY
    queue_inside: bool
    road: _Path  # hub ... approach
    to_spot: _Path  # approach ... spot
    free_at: int = 0


@dataclass
class _DumpGeo:
    guid: str
    name: str
    ring: list[XY]
    centre: XY
    entry: XY
    road: _Path  # hub ... entry
    spot_radius: float
    poly: Any = None


@dataclass
class _SiteGeo:
    index: int
    guid: str
    code: str
    frame: _Frame
    hub: XY
    loaders: list[_LoaderGeo]
    dumps: list[_DumpGeo]
    restricted: list[XY] | None
    reference: SiteReference = field(default=None)  # type: ignore[assignment]

    def clear_of_areas(self, xy: XY, margin_m: float = 80.0) -> bool:
        """True when ``xy`` is farther than ``margin_m`` from every loader and outside every dump."""
        if any(math.hypot(xy[0] - ld.pos[0], xy[1] - ld.pos[1]) <= margin_m for ld in self.loaders):
            return False
        point = _ShPoint(xy)
        return not any(d.poly.buffer(20.0).contains(point) for d in self.dumps)


def _fan_angles(n: int, centre: float, spread_deg: float, max_step_deg: float) -> list[float]:
    if n == 1:
        return [centre]
    step = min(max_step_deg, spread_deg / (n - 1))
    first = centre - step * (n - 1) / 2
    return [first + k * step for k in range(n)]


def _queue_inside(n: int, spec: SimulationSpec, rng: random.Random) -> bool:
    """Whether loader n's trucks wait inside its circle: at random with queue_inside_p; when that is
    strictly between 0 and 1 the first loader's do and the second's do not, so both kinds occur."""
    if 0.0 < spec.queue_inside_p < 1.0 and n < 2:
        return n == 0
    return rng.random() < spec.queue_inside_p


def _dump_cluster(code: str, first: int, size: int, junction: XY, ang_deg: float, trunk: _Path,
                  rng: random.Random) -> list[_DumpGeo]:
    """Dump polygons fanned out 650-900 m beyond a junction, each with a road from the hub."""
    dumps = []
    for k, a_deg in enumerate(_fan_angles(size, ang_deg, 120.0, 40.0)):
        a = math.radians(a_deg + rng.uniform(-2, 2))
        n = first + k
        centre = _polar(junction, rng.uniform(650, 900), a)
        radius = rng.uniform(50, 110)
        nv = rng.choice((4, 5))
        start = rng.uniform(0, 2 * math.pi)
        ring = []
        for v in range(nv):
            va = start + 2 * math.pi * (v + rng.uniform(-0.15, 0.15)) / nv
            ring.append(_polar(centre, radius * rng.uniform(0.75, 1.0), va))
        poly = _ShPolygon(ring)
        towards = (junction[0] - centre[0], junction[1] - centre[1])
        dist = math.hypot(*towards)
        far = (centre[0] + towards[0] / dist * 400, centre[1] + towards[1] / dist * 400)
        hit = _ShLine([centre, far]).intersection(poly.exterior)
        entry = (hit.x, hit.y) if hit.geom_type == "Point" else list(hit.geoms)[0].coords[0]
        inner = poly.exterior.distance(_ShPoint(centre))
        road = trunk + _Path(_road(junction, (entry[0], entry[1]), rng, bends=2, max_off=12.0))
        dumps.append(_DumpGeo(f"{code}-DUMP-{n + 1:02d}", f"{code} Dump {n + 1}", ring, centre,
                              (entry[0], entry[1]), road, max(0.0, inner - 20.0), poly))
    return dumps


def _restricted(spec: SimulationSpec, hub: XY, angles: list[float], base: float, r_junction: float,
                rng: random.Random) -> list[XY] | None:
    """A small restricted polygon in the widest gap between the clusters."""
    if not spec.restricted_region:
        return None
    gaps = sorted(angles)
    gaps.append(gaps[0] + 360)
    best = max(range(len(gaps) - 1), key=lambda k: gaps[k + 1] - gaps[k])
    mid = math.radians((gaps[best] + gaps[best + 1]) / 2) if len(angles) > 1 else math.radians(base + 180)
    c = _polar(hub, 0.6 * r_junction, mid)
    return [_polar(c, 75 * rng.uniform(0.8, 1.0), 2 * math.pi * v / 5 + rng.uniform(-0.2, 0.2)) for v in range(5)]


def _site_frame(spec: SimulationSpec, index: int) -> _Frame:
    lat0, lon0 = spec.center_lat, spec.center_lon
    if index:
        m_lon = _GEOD.inv(lon0 - 0.005, lat0, lon0 + 0.005, lat0)[2] / 0.01
        lon0 += index * spec.site_spacing_km * 1000.0 / m_lon
    return _Frame(lat0, lon0)


def _build_radial(spec: SimulationSpec, rng: random.Random, code: str
                  ) -> tuple[list[_LoaderGeo], list[_DumpGeo], list[XY] | None]:
    """Loader and dump clusters around a hub (module docstring)."""
    hub: XY = (0.0, 0.0)
    n_l, n_d = spec.n_loaders, spec.n_dumps
    l_clusters = [min(MAX_CLUSTER, n_l - k) for k in range(0, n_l, MAX_CLUSTER)]
    d_clusters = [min(MAX_CLUSTER, n_d - k) for k in range(0, n_d, MAX_CLUSTER)]
    n_c = len(l_clusters) + len(d_clusters)
    r_junction = max(1100.0, n_c * 2600.0 / (2 * math.pi))
    base = rng.uniform(0, 360)
    kinds = ["L"] * len(l_clusters) + ["D"] * len(d_clusters)
    sizes = l_clusters + d_clusters
    cluster_angles = [base + k * 360.0 / n_c + rng.uniform(-6, 6) for k in range(n_c)]
    loaders: list[_LoaderGeo] = []
    dumps: list[_DumpGeo] = []
    for kind, size, ang_deg in zip(kinds, sizes, cluster_angles, strict=True):
        ang = math.radians(ang_deg)
        junction = _polar(hub, r_junction * rng.uniform(0.95, 1.05), ang)
        trunk = _Path(_road(hub, junction, rng, bends=3, max_off=25.0))
        if kind == "D":
            dumps.extend(_dump_cluster(code, len(dumps), size, junction, ang_deg, trunk, rng))
            continue
        for a_deg in _fan_angles(size, ang_deg, 120.0, 40.0):
            a = math.radians(a_deg + rng.uniform(-2, 2))
            n = len(loaders)
            pos = _polar(junction, rng.uniform(380, 600), a)
            back = math.atan2(junction[1] - pos[1], junction[0] - pos[0])
            approach = _polar(pos, 130.0, back)
            inside = _queue_inside(n, spec, rng)
            qd = rng.uniform(30, 40) if inside else rng.uniform(70, 90)
            queue = _polar(_polar(pos, qd, back), rng.uniform(-4, 4), back + math.pi / 2)
            spot = _polar(pos, rng.uniform(10, 15), back + rng.uniform(-0.5, 0.5))
            road = trunk + _Path(_road(junction, approach, rng, bends=2, max_off=12.0))
            loaders.append(_LoaderGeo(f"{code}-LDR-{n + 1:02d}", pos, approach, queue, spot, inside, road,
                                      _Path([approach, spot])))
    return loaders, dumps, _restricted(spec, hub, cluster_angles, base, r_junction, rng)


def _hairpin(centre: XY, radius: float, start_ang: float, turn: float, steps: int = 6) -> list[XY]:
    """Points of a half-circle turn (``turn`` = +-pi) around ``centre``."""
    return [_polar(centre, radius, start_ang + turn * k / steps) for k in range(1, steps + 1)]


def _switchback_ramp(hub: XY, down: float, rng: random.Random) -> tuple[_Path, list[tuple[int, float]]]:
    """From the rim (hub) down the pit wall in direction ``down``: legs across the wall, 150-300 m
    long and 25-40 m apart, joined by tight hairpins (pings on two legs lie close, the road between
    them is long). Also returns each hairpin's apex (point index) and its outward direction."""
    across = down + math.pi / 2
    legs = rng.randint(4, 7)
    length = rng.uniform(150, 300)
    gap = rng.uniform(25, 40)
    pts: list[XY] = [hub]
    kinds: list[str] = []
    apexes: list[tuple[int, float]] = []
    pos = hub
    side = 1.0
    for leg in range(legs):
        heading = across if side > 0 else across + math.pi
        end = _polar(pos, length, heading)
        pts.append(end)
        kinds.append(RAMP)
        if leg == legs - 1:
            break
        centre = _polar(end, gap / 2, down)
        arc = _hairpin(centre, gap / 2, down + math.pi, -math.pi * side)  # bulge in the direction of travel
        apexes.append((len(pts) + len(arc) // 2 - 1, heading))
        pts.extend(arc)
        kinds.extend([HAIRPIN] * len(arc))
        pos = pts[-1]
        side = -side
    return _Path(pts, kinds), apexes


def _spiral_ramp(hub: XY, down: float, rng: random.Random) -> _Path:
    """A ramp circling down around the pit centre, 1-1.5 turns from the rim to the floor."""
    r_top = rng.uniform(280, 380)
    r_bottom = r_top * rng.uniform(0.35, 0.5)
    centre = _polar(hub, r_top, down)
    turns = rng.uniform(1.0, 1.5)
    start = down + math.pi
    direction = rng.choice((1.0, -1.0))
    n = int(turns * 48)
    pts = [hub] + [_polar(centre, r_top + (r_bottom - r_top) * k / n, start + direction * 2 * math.pi * turns * k / n)
                   for k in range(1, n + 1)]
    return _Path(pts, [RAMP] * (len(pts) - 1))


def _ramp_face(spec: SimulationSpec, rng: random.Random, code: str, n: int, ramp: _Path, apex: int,
               outward: float) -> _LoaderGeo:
    """A loader working a bench beside a switchback hairpin: every truck going deeper drives round
    that hairpin, slowly, within 30-40 m of it; its own trucks leave the ramp there."""
    apex_pt = ramp.pts[apex]
    pos = _polar(apex_pt, rng.uniform(28.0, 40.0), outward)
    apex_d = ramp.cum[apex]
    approach_d = max(0.0, apex_d - rng.uniform(80.0, 110.0))
    road, rest = ramp.split(approach_d)
    into, _ = rest.split(apex_d - approach_d)
    approach = road.pts[-1]
    spot = _polar(pos, rng.uniform(10.0, 15.0), outward + math.pi + rng.uniform(-0.4, 0.4))
    inside = _queue_inside(n, spec, rng)
    queue = _polar(pos, rng.uniform(24.0, 30.0), outward + math.pi + rng.uniform(0.6, 1.0)) if inside \
        else rest.at(rng.uniform(10.0, 25.0))  # staging on the ramp, before the hairpin
    to_spot = into + _Path([apex_pt, spot], [BENCH])
    return _LoaderGeo(f"{code}-LDR-{n + 1:02d}", pos, approach, queue, spot, inside, road, to_spot)


def _build_pit(spec: SimulationSpec, rng: random.Random, code: str
               ) -> tuple[list[_LoaderGeo], list[_DumpGeo], list[XY] | None]:
    """An open pit: ramp from the rim (hub) to the floor; on a switchback ramp, faces beside hairpins
    (``ramp_faces``); on the floor a slow bench road along the faces (within bench_offset_m of each
    loader, so trucks to the far faces drive past the near ones); dumps on the surface on the other
    side of the hub."""
    hub: XY = (0.0, 0.0)
    base = rng.uniform(0, 360)
    down = math.radians(base)
    if spec.ramp == "switchback":
        ramp, apexes = _switchback_ramp(hub, down, rng)
    else:
        ramp, apexes = _spiral_ramp(hub, down, rng), []
    foot = ramp.pts[-1]
    loaders: list[_LoaderGeo] = []
    ramp_faces = min(spec.ramp_faces, len(apexes), max(0, spec.n_loaders - 1))
    for k in range(ramp_faces):
        apex, outward = apexes[(2 * k + 1) % len(apexes)]
        loaders.append(_ramp_face(spec, rng, code, len(loaders), ramp, apex, outward))
    bench_dir = down + rng.uniform(-0.6, 0.6)
    side = bench_dir + math.pi / 2 * rng.choice((1.0, -1.0))
    along = rng.uniform(120, 200)
    for k in range(spec.n_loaders - ramp_faces):
        n = len(loaders)
        if k:
            along += rng.uniform(*spec.face_spacing_m)
        offset = rng.uniform(*spec.bench_offset_m)
        on_road = _polar(foot, along, bench_dir)
        pos = _polar(on_road, offset, side)
        approach = _polar(foot, along - 110.0, bench_dir)  # outside the circle, on the bench road
        inside = _queue_inside(n, spec, rng)
        if inside:  # in the bay, beside the road, ~25 m from the loader
            queue = _polar(_polar(foot, along - 18.0, bench_dir), offset * 0.4, side)
        else:  # staging on the bench road, 60-90 m before the loader
            queue = _polar(foot, along - rng.uniform(65, 85), bench_dir)
        spot = _polar(pos, rng.uniform(10, 15), side + math.pi + rng.uniform(-0.4, 0.4))
        road = ramp + _Path([foot, approach], [BENCH])
        to_spot = _Path([approach, _polar(foot, along - 12.0, bench_dir), spot], [BENCH, BENCH])
        loaders.append(_LoaderGeo(f"{code}-LDR-{n + 1:02d}", pos, approach, queue, spot, inside, road, to_spot))
    angles = [base]
    dumps: list[_DumpGeo] = []
    n_d = spec.n_dumps
    d_clusters = [min(MAX_CLUSTER, n_d - k) for k in range(0, n_d, MAX_CLUSTER)]
    for k, size in enumerate(d_clusters):
        ang_deg = base + 180.0 + (k - (len(d_clusters) - 1) / 2) * 70.0 + rng.uniform(-10, 10)
        angles.append(ang_deg)
        junction = _polar(hub, rng.uniform(700, 1100), math.radians(ang_deg))
        trunk = _Path(_road(hub, junction, rng, bends=3, max_off=25.0))
        dumps.extend(_dump_cluster(code, len(dumps), size, junction, ang_deg, trunk, rng))
    return loaders, dumps, _restricted(spec, hub, angles, base, 1100.0, rng)


def _build_site(spec: SimulationSpec, index: int) -> _SiteGeo:
    rng = random.Random(f"{spec.seed}/layout/{index}")
    code = f"S{index + 1:02d}"
    guid = f"SITE-{index + 1:02d}"
    frame = _site_frame(spec, index)
    build = _build_pit if spec.layout == "pit" else _build_radial
    loaders, dumps, restricted = build(spec, rng, code)
    geo = _SiteGeo(index, guid, code, frame, (0.0, 0.0), loaders, dumps, restricted)
    ref_loaders = tuple(Loader(ld.guid, guid, *frame.to_ll(*ld.pos)) for ld in loaders)
    regions = []
    for d in dumps:
        pts = tuple((lon, lat) for lat, lon in (frame.to_ll(x, y) for x, y in d.ring))
        regions.append(Region(d.guid, d.name, "dump", guid, pts))
    if restricted:
        pts = tuple((lon, lat) for lat, lon in (frame.to_ll(x, y) for x, y in restricted))
        regions.append(Region(f"{code}-RESTRICTED-01", f"{code} Restricted", "restricted", guid, pts))
    geo.reference = SiteReference(guid, ref_loaders, tuple(regions))
    return geo


# --------------------------------------------------------------------------------------------- motion

_MOVE = 0
_STAND = 1
# a leg: (t0_ms, t1_ms, kind, payload, work_state); payload = (path, d0, d1) or (x, y)
Leg = tuple[int, int, int, Any, int]


def _drive(path: _Path, t0: int, v: float | dict[str, float], slow_start: bool = True, slow_end: bool = True,
           legs: list[Leg] | None = None) -> tuple[list[Leg], int]:
    """Legs driving along path from t0 (speeds in m/s, one per road kind, or one for all), slower
    over the first 40 m (half speed) and the last 60 m (0.4 x)."""
    out: list[Leg] = [] if legs is None else legs
    speeds = v if isinstance(v, dict) else {FLAT: v, RAMP: v, HAIRPIN: v, BENCH: v}
    length = path.length
    s1 = min(40.0, 0.25 * length) if slow_start else 0.0
    s2 = length - (min(60.0, 0.25 * length) if slow_end else 0.0)
    marks = sorted({0.0, s1, s2, length, *(c for c in path.cum if 0.0 < c < length)})
    t = t0
    run: tuple[float, float, float] | None = None  # (d0, d1, speed) merged while the speed stays
    pieces: list[tuple[float, float, float]] = []
    for d0, d1 in zip(marks, marks[1:], strict=False):
        if d1 - d0 <= 1e-9:
            continue
        mid = (d0 + d1) / 2
        speed = speeds.get(path.kind_at(mid), speeds[FLAT])
        if mid < s1:
            speed *= 0.5
        elif mid > s2:
            speed *= 0.4
        if run is not None and abs(run[2] - speed) < 1e-9:
            run = (run[0], d1, speed)
        else:
            if run is not None:
                pieces.append(run)
            run = (d0, d1, speed)
    if run is not None:
        pieces.append(run)
    for d0, d1, speed in pieces:
        t1 = t + max(1, int(round((d1 - d0) / speed * 1000)))
        out.append((t, t1, _MOVE, (path, d0, d1), WORKING))
        t = t1
    return out, t


def _kmh(rng: random.Random, lo: float, hi: float, factor: float) -> float:
    return rng.uniform(lo, hi) * factor / 3.6


# ------------------------------------------------------------------------------------------ processes


@dataclass
class _OpenCycle:
    loader: str
    load_start: int
    load_end: int
    dump: str | None = None
    dump_start: int | None = None
    dump_end: int | None = None
    travel_stands: list[tuple[int, int]] = field(default_factory=list)  # (start_ms, duration_ms)
    load_dist: float = 0.0
    empty_dist: float = 0.0


class _Proc:
    """Something that sends telemetry: a plan step producing legs, plus the ping schedule."""

    order: int
    guid: str
    site: _SiteGeo
    stop_ms: float

    def __init__(self, spec: SimulationSpec, site: _SiteGeo, guid: str, order: int) -> None:
        self.order = order
        self.guid = guid
        self.site = site
        self.stop_ms = math.inf if spec.end_ms is None else spec.end_ms
        key = f"{spec.seed}/{site.index}/{guid}"
        self.rng = random.Random(key + "/motion")
        self.prng = random.Random(key + "/ping")
        self.drng = random.Random(key + "/degrade")
        lo, hi = spec.ping_interval_s
        self.interval_ms = self.prng.uniform(lo, hi) * 1000.0
        self.late_first_idle = self.prng.random() < 0.5  # on_change devices only
        self.moves = True  # trucks and wanderers; a loader or dozer reports its own work state
        self.next_ping = spec.start_ms + int(self.prng.uniform(0, self.interval_ms))
        rate = spec.outages_per_day / 86_400_000.0
        self.outage_rate = rate
        self.outage: tuple[int, int] | None = None
        self.backlog = 0
        if rate > 0:
            s = spec.start_ms + int(self.drng.expovariate(rate))
            self.outage = (s, s + int(self.drng.uniform(300_000, 1_800_000)))

    def step(self, t: int) -> tuple[list[Leg], int | None]:  # pragma: no cover - abstract
        raise NotImplementedError


class _Truck(_Proc):
    def __init__(self, spec: SimulationSpec, site: _SiteGeo, guid: str, order: int, loader: int,
                 ghost: bool, truth: Callable[[CycleRecord], None] | None) -> None:
        super().__init__(spec, site, guid, order)
        self.spec = spec
        self.ghost = ghost
        self.truth = truth
        self.loader = loader
        self.dump = self.rng.randrange(len(site.dumps))
        self.factor = self.rng.uniform(0.9, 1.1)
        self.end_ms = spec.end_ms
        self.cycle: _OpenCycle | None = None
        self.v_empty = self._empty_speeds()
        # stops last long enough for two idle pings of an interval device to span the idle threshold
        # (whatever the device reports, so that reporting options never change the motion)
        self.min_stop_ms = 2.0 * (1.0 + spec.ping_jitter) * self.interval_ms + 22_000

    def _empty_speeds(self) -> dict[str, float]:
        rng, spec = self.rng, self.spec
        return {FLAT: _kmh(rng, 30, 45, self.factor), RAMP: rng.uniform(*spec.empty_ramp_mps) * self.factor,
                HAIRPIN: rng.uniform(3.0, 4.0), BENCH: rng.uniform(4.0, 6.0)}

    def _loaded_speeds(self) -> dict[str, float]:
        rng, spec = self.rng, self.spec
        ramp = rng.uniform(*spec.loaded_ramp_mps) * self.factor
        return {FLAT: _kmh(rng, 20, 30, self.factor), RAMP: ramp, HAIRPIN: min(ramp, rng.uniform(2.0, 2.5)),
                BENCH: rng.uniform(2.5, 4.0)}

    def _stop_ms(self, lo_s: float, hi_s: float) -> int:
        return int(max(self.rng.uniform(lo_s, hi_s) * 1000, self.min_stop_ms))

    def start(self, t0: int) -> tuple[list[Leg], int]:
        """Start somewhere on the empty return road to the assigned loader."""
        site = self.site
        path = site.dumps[self.dump].road.reversed() + site.loaders[self.loader].road
        _, rest = path.split(self.rng.random() * path.length)
        return _drive(rest, t0, self.v_empty, slow_start=False, slow_end=False)

    def _travel(self, path: _Path, t: int, v: dict[str, float], legs: list[Leg], idle: bool,
                skip_start: float, skip_end: float, slow_start: bool, slow_end: bool) -> int:
        """Drive a haul, with an optional long idle somewhere on the road part (clear of every loader
        circle and dump region, where it would be a load or a dump)."""
        cyc = self.cycle
        if idle and path.length > skip_start + skip_end + 10:
            for _ in range(20):
                d = self.rng.uniform(skip_start, path.length - skip_end)
                if self.site.clear_of_areas(path.at(d)):
                    break
            else:
                d = None
            if d is not None:
                p1, p2 = path.split(d)
                _, t = _drive(p1, t, v, slow_start, True, legs)
                dur = int(self.rng.uniform(660, 1200) * 1000)
                legs.append((t, t + dur, _STAND, p1.pts[-1], IDLING))
                if cyc is not None:
                    cyc.travel_stands.append((t, dur))
                t += dur
                _, t = _drive(p2, t, v, True, slow_end, legs)
                return t
        _, t = _drive(path, t, v, slow_start, slow_end, legs)
        return t

    def step(self, t: int) -> tuple[list[Leg], int | None]:
        """Arrived (moving) at the approach point of the assigned loader at t: plan one full cycle."""
        if t >= self.stop_ms:
            return [], None
        spec, rng, site = self.spec, self.rng, self.site
        ld = site.loaders[self.loader]
        legs: list[Leg] = []
        v_app = self.v_empty
        _, t_direct = _drive(ld.to_spot, t, v_app, slow_start=False)
        queue_stand: tuple[int, int] | None = None
        if self.ghost or ld.free_at <= t_direct:
            _, t_s = _drive(ld.to_spot, t, v_app, slow_start=False, legs=legs)
            load_start = t_s
        else:
            _, t_q = _drive(_Path([ld.approach, ld.queue]), t, v_app, slow_start=False, legs=legs)
            t_leave = max(t_q, ld.free_at) + int(rng.uniform(3000, 10000))
            legs.append((t_q, t_leave, _STAND, ld.queue, IDLING))
            _, t_s = _drive(_Path([ld.queue, ld.spot]), t_leave, 2.0, False, False, legs)
            if ld.queue_inside:
                load_start = t_q
            else:
                load_start = t_s
                queue_stand = (t_q, t_leave - t_q)
        load_end = t_s + self._stop_ms(60, 240)
        legs.append((t_s, load_end, _STAND, ld.spot, IDLING))
        if not self.ghost:
            ld.free_at = load_end
        # close the previous cycle at this load_start
        if self.cycle is not None and not self.ghost:
            if queue_stand is not None:
                self.cycle.travel_stands.append(queue_stand)
            self.cycle.empty_dist += ld.to_spot.length
            self._close(load_start)
        self.cycle = _OpenCycle(ld.guid, load_start, load_end)
        cyc = self.cycle
        # loaded haul
        if rng.random() < spec.reassign_p * 2 and len(site.dumps) > 1:
            self.dump = rng.choice([k for k in range(len(site.dumps)) if k != self.dump])
        d = site.dumps[self.dump]
        v_loaded = self._loaded_speeds()
        self.v_empty = self._empty_speeds()
        bad = rng.random() < spec.bad_dumps
        idle_loaded = rng.random() < spec.long_idles
        idle_empty = rng.random() < spec.long_idles
        out_of_bay = _Path([ld.spot, ld.approach]) + ld.road.reversed()
        if bad:
            part = d.road
            for _ in range(20):  # tip on the road, clear of every load and dump area
                part, _rest = d.road.split(rng.uniform(0.3, 0.7) * d.road.length)
                if site.clear_of_areas(part.pts[-1]):
                    break
            stop_pt = part.pts[-1]
            haul = out_of_bay + part
            t = self._travel(haul, load_end, v_loaded, legs, idle_loaded, 250.0, 150.0, True, True)
            tip_end = t + self._stop_ms(25, 90)
            legs.append((t, tip_end, _STAND, stop_pt, IDLING))
            cyc.travel_stands.append((t, tip_end - t))
            back = part.reversed()
        else:
            spot = _polar(d.centre, d.spot_radius * math.sqrt(rng.random()), rng.uniform(0, 2 * math.pi))
            into = _Path([d.road.pts[-1], spot])
            haul = out_of_bay + d.road + into
            t = self._travel(haul, load_end, v_loaded, legs, idle_loaded, 250.0, 250.0, True, True)
            tip_end = t + self._stop_ms(25, 90)
            legs.append((t, tip_end, _STAND, spot, IDLING))
            cyc.dump, cyc.dump_start, cyc.dump_end = d.guid, t, tip_end
            back = into.reversed() + d.road.reversed()
        cyc.load_dist = haul.length
        # empty haul to the (maybe new) loader
        if rng.random() < spec.reassign_p and len(site.loaders) > 1:
            self.loader = rng.choice([k for k in range(len(site.loaders)) if k != self.loader])
        elif not self.ghost:
            self.loader = self._dispatch(tip_end, back.length)
        nld = site.loaders[self.loader]
        back = back + nld.road
        t_next = self._travel(back, tip_end, self.v_empty, legs, idle_empty, 250.0, 250.0, True, False)
        if bad:
            cyc.load_dist += back.length
        else:
            cyc.empty_dist += back.length
        return legs, t_next

    def _dispatch(self, t: int, to_hub_m: float) -> int:
        """Keep the assigned loader unless its expected queue exceeds 3 min; then take the soonest free."""
        loaders = self.site.loaders
        v = self.v_empty[FLAT]

        def ready(k: int) -> float:
            eta = t + (to_hub_m + loaders[k].road.length) / v * 1000.0
            return max(eta, loaders[k].free_at)

        cur = self.loader
        eta_cur = t + (to_hub_m + loaders[cur].road.length) / v * 1000.0
        if loaders[cur].free_at - eta_cur <= 180_000:
            return cur
        return min(range(len(loaders)), key=lambda k: (ready(k), k != cur, k))

    def _close(self, next_load_start: int) -> None:
        cyc = self.cycle
        assert cyc is not None
        end = self.end_ms
        if end is not None:
            if next_load_start > end:
                return
            if next_load_start > end - CLOSE_GUARD_MS:
                self.stop_ms = max(self.stop_ms, next_load_start + CLOSE_GUARD_MS)
        if self.truth is None:
            return
        s = cyc.load_start
        rec = CycleRecord(
            asset_guid=self.guid,
            site_guid=self.site.guid,
            cycle_status=COMPLETE,
            current_segment=EMPTY_TRAVEL,
            loader_asset_guid=cyc.loader,
            load_start_ms=s,
            load_end_ms=cyc.load_end,
            cycle_end_ms=next_load_start,
            load_seconds=(cyc.load_end - s) / 1000.0,
            total_cycle_seconds=(next_load_start - s) / 1000.0,
            travel_idle_seconds=sum(dur for _, dur in cyc.travel_stands) / 1000.0,
        )
        if cyc.dump is None:
            rec.cycle_status = INVALID
            rec.invalid_reason = "NO_DUMP"
            rec.current_segment = LOAD_TRAVEL
            rec.load_travel_distance_m = round(cyc.load_dist, 1)
        else:
            assert cyc.dump_start is not None and cyc.dump_end is not None
            rec.dump_region_guid = cyc.dump
            rec.dump_start_ms, rec.dump_end_ms = cyc.dump_start, cyc.dump_end
            rec.load_travel_seconds = (cyc.dump_start - cyc.load_end) / 1000.0
            rec.dump_seconds = (cyc.dump_end - cyc.dump_start) / 1000.0
            rec.empty_travel_seconds = (next_load_start - cyc.dump_end) / 1000.0
            rec.load_travel_distance_m = round(cyc.load_dist, 1)
            rec.empty_travel_distance_m = round(cyc.empty_dist, 1)
            hits = []
            area_limit = self.spec.area_idle_outlier_s
            if area_limit and rec.load_seconds is not None and rec.load_seconds > area_limit:
                hits.append((s, "LOAD_AREA_IDLE", rec.load_seconds))
            if area_limit and rec.dump_seconds > area_limit:
                hits.append((cyc.dump_start, "DUMP_AREA_IDLE", rec.dump_seconds))
            for start, dur in cyc.travel_stands:
                if dur / 1000.0 > TRAVEL_IDLE_OUTLIER_S:
                    hits.append((start, "TRAVEL_IDLE", dur / 1000.0))
            if hits:
                _, rule, secs = min(hits)
                rec.cycle_status, rec.outlier_rule, rec.outlier_seconds = OUTLIER, rule, secs
        self.truth(rec)


class _Wanderer(_Proc):
    """A water truck (or similar) driving between road ends with stops."""

    def __init__(self, spec: SimulationSpec, site: _SiteGeo, guid: str, order: int) -> None:
        super().__init__(spec, site, guid, order)
        self.roads = [ld.road for ld in site.loaders] + [d.road for d in site.dumps]
        self.at = self.rng.randrange(len(self.roads))

    def step(self, t: int) -> tuple[list[Leg], int | None]:
        if t >= self.stop_ms:
            return [], None
        rng = self.rng
        nxt = rng.randrange(len(self.roads))
        path = self.roads[self.at].reversed() + self.roads[nxt]
        self.at = nxt
        legs, t1 = _drive(path, t, _kmh(rng, 15, 25, 1.0))
        t2 = t1 + int(rng.uniform(30, 300) * 1000)
        legs.append((t1, t2, _STAND, path.pts[-1], IDLING))
        return legs, t2


class _Dozer(_Proc):
    """A dozer pushing material around inside one dump region."""

    def __init__(self, spec: SimulationSpec, site: _SiteGeo, guid: str, order: int) -> None:
        super().__init__(spec, site, guid, order)
        self.dump = site.dumps[self.rng.randrange(len(site.dumps))]
        self.pos = self.dump.centre
        self.moves = False

    def step(self, t: int) -> tuple[list[Leg], int | None]:
        if t >= self.stop_ms:
            return [], None
        rng, d = self.rng, self.dump
        target = _polar(d.centre, (d.spot_radius + 10) * math.sqrt(rng.random()), rng.uniform(0, 2 * math.pi))
        legs, t1 = _drive(_Path([self.pos, target]), t, 1.5, False, False)
        self.pos = target
        t2 = t1 + int(rng.uniform(20, 120) * 1000)
        legs.append((t1, t2, _STAND, target, rng.choice((IDLING, WORKING))))
        return legs, t2


class _LoaderUnit(_Proc):
    """A loader reporting from its position: digging (WORKING) and waiting (IDLING) spells."""

    def __init__(self, spec: SimulationSpec, site: _SiteGeo, guid: str, order: int, pos: XY) -> None:
        super().__init__(spec, site, guid, order)
        self.pos = pos
        self.moves = False

    def step(self, t: int) -> tuple[list[Leg], int | None]:
        if t >= self.stop_ms:
            return [], None
        rng = self.rng
        t1 = t + int(rng.uniform(60, 300) * 1000)
        t2 = t1 + int(rng.uniform(30, 600) * 1000)
        p = _polar(self.pos, rng.uniform(0, 4), rng.uniform(0, 2 * math.pi))
        return [(t, t1, _STAND, p, WORKING), (t1, t2, _STAND, p, IDLING)], t2


# ------------------------------------------------------------------------------------------- telemetry


def _position(t: int, t0: int, t1: int, kind: int, payload: Any) -> XY:
    """Where a leg puts its process at time t."""
    if kind == _MOVE:
        path, d0, d1 = payload
        return path.at(d0 + (d1 - d0) * (t - t0) / (t1 - t0))
    return payload

_ISO_CACHE: dict[int, str] = {}


def _iso(ts_ms: int) -> str:
    minute = ts_ms // 60_000
    prefix = _ISO_CACHE.get(minute)
    if prefix is None:
        if len(_ISO_CACHE) > 4096:
            _ISO_CACHE.clear()
        prefix = datetime.fromtimestamp(minute * 60, tz=UTC).strftime("%Y-%m-%dT%H:%M:")
        _ISO_CACHE[minute] = prefix
    rest = ts_ms - minute * 60_000
    return f"{prefix}{rest // 1000:02d}.{rest % 1000:03d}Z"


def _malformed(rng: random.Random, guid: str, site: str, iso: str, lat: float, lon: float, ws: int) -> str:
    """One broken variant of a message (bad JSON, missing field, out-of-range value, ...)."""
    msg: dict[str, Any] = {"asset_guid": guid, "site_guid": site, "timestamp": iso,
                           "latitude": round(lat, 7), "longitude": round(lon, 7), "work_state_id": ws}
    kind = rng.randrange(10)
    if kind == 0:
        text = json.dumps(msg)
        return text[: rng.randrange(5, len(text) - 5)]
    if kind == 1:
        del msg[rng.choice(list(msg))]
    elif kind == 2:
        msg["work_state_id"] = 7
    elif kind == 3:
        msg["latitude"] = 123.0
    elif kind == 4:
        msg["longitude"] = -200.5
    elif kind == 5:
        msg["timestamp"] = rng.choice(("not-a-time", "2024-13-45T25:61:00.000Z", "", "1705300000"))
    elif kind == 6:
        return rng.choice(("[1, 2, 3]", "null", "\"text\"", "{}", ""))
    elif kind == 7:
        msg["latitude"] = "abc"
    elif kind == 8:
        msg["asset_guid"] = ""
    else:
        msg["work_state_id"] = None
    return json.dumps(msg)


class _Runner:
    """The discrete-event loop shared by simulate(), iter_deliveries() and write_simulation()."""

    def __init__(self, spec: SimulationSpec, truth: Callable[[CycleRecord], None] | None) -> None:
        self.spec = spec
        self.sites = [_build_site(spec, k) for k in range(spec.sites)]
        self.procs: list[_Proc] = []
        self.assets: list[AssetTuple] = []
        self.initial: list[tuple[_Proc, list[Leg], int]] = []
        order = 0
        for site in self.sites:
            s = site.guid
            for ld in site.loaders:
                lat, lon = site.frame.to_ll(*ld.pos)
                self.assets.append((ld.guid, s, LOADER, lat, lon))
            for n in range(spec.trucks):
                guid = f"{site.code}-HT-{n + 1:03d}"
                self.assets.append((guid, s, HAUL_TRUCK, None, None))
                truck = _Truck(spec, site, guid, order, n % len(site.loaders), False, truth)
                order += 1
                legs, t1 = truck.start(spec.start_ms)
                self.initial.append((truck, legs, t1))
            for n in range(spec.non_trucks):
                if n % 2 == 0:
                    guid = f"{site.code}-WT-{n // 2 + 1:02d}"
                    self.assets.append((guid, s, "WATER_TRUCK", None, None))
                    proc: _Proc = _Wanderer(spec, site, guid, order)
                else:
                    guid = f"{site.code}-DZ-{n // 2 + 1:02d}"
                    self.assets.append((guid, s, "DOZER", None, None))
                    proc = _Dozer(spec, site, guid, order)
                order += 1
                self.initial.append((proc, [], spec.start_ms))
            if spec.non_trucks > 0:
                for ld in site.loaders:
                    self.initial.append((_LoaderUnit(spec, site, ld.guid, order, ld.pos), [], spec.start_ms))
                    order += 1
            for n in range(spec.unknown_assets):
                guid = f"{site.code}-UNK-{n + 1:03d}"
                ghost = _Truck(spec, site, guid, order, n % len(site.loaders), True, None)
                order += 1
                legs, t1 = ghost.start(spec.start_ms)
                self.initial.append((ghost, legs, t1))
        self.reference = ReferenceData(
            asset_types={a[0]: a[2] for a in self.assets},
            sites={site.guid: site.reference for site in self.sites},
        )
        self._heap: list[tuple[int, int, str]] = []
        self._seq = 0
        sp = spec
        self._dup = sp.duplicates
        self._drop = sp.drop
        self._disorder_ms = sp.disorder_s * 1000.0
        self._malf = sp.malformed
        self._sigma = sp.gps_sigma_m
        self._outp = sp.gps_outlier_p

    # -- pings

    def _emit_legs(self, proc: _Proc, legs: list[Leg]) -> None:
        if self.spec.device == "on_change":
            self._emit_on_change(proc, legs)
            return
        sparse = self.spec.sparse_idle
        stop = proc.stop_ms
        prng = proc.prng
        interval = proc.interval_ms
        lo, hi = 1.0 - self.spec.ping_jitter, 1.0 + self.spec.ping_jitter
        t = proc.next_ping
        for t0, t1, kind, payload, ws in legs:
            if kind == _STAND and sparse:
                t = t0 + int(prng.uniform(60_000, 120_000))
                while t < t1 and t < stop:
                    self._ping(proc, t, payload[0], payload[1], ws)
                    t += int(prng.uniform(60_000, 120_000))
                t = t1 + int(prng.uniform(1000, interval))
                continue
            if t < t0:
                t = t0
            while t < t1:
                if t >= stop:
                    proc.next_ping = t
                    return
                self._ping(proc, t, *_position(t, t0, t1, kind, payload), ws)
                t += int(interval * prng.uniform(lo, hi))
        proc.next_ping = t

    def _emit_on_change(self, proc: _Proc, legs: list[Leg]) -> None:
        """A device that logs on change: about every second while moving, every 1-3 min while
        standing (the first standing row right at the stop for half the devices, 1-3 min later for the
        others); its work state comes from speed (standing = IDLING, moving = WORKING)."""
        stop = proc.stop_ms
        prng = proc.prng
        late_first_idle = proc.late_first_idle
        t = proc.next_ping
        for t0, t1, kind, payload, ws in legs:
            if kind == _STAND:
                t = t0 + (int(prng.uniform(60_000, 180_000)) if late_first_idle else int(prng.uniform(0, 2000)))
                while t < t1 and t < stop:
                    self._ping(proc, t, payload[0], payload[1], IDLING if proc.moves else ws)
                    t += int(prng.uniform(60_000, 180_000))
                t = t1 + int(prng.uniform(0, 1000))  # the first moving row, right at the departure
                continue
            if t < t0:
                t = t0
            while t < t1:
                if t >= stop:
                    proc.next_ping = t
                    return
                self._ping(proc, t, *_position(t, t0, t1, kind, payload), WORKING)
                t += int(prng.uniform(800, 1500))
        proc.next_ping = t

    def _ping(self, proc: _Proc, ts: int, x: float, y: float, ws: int) -> None:
        if ts >= proc.stop_ms:
            return
        prng = proc.prng
        sigma = self._sigma
        if sigma:
            x += prng.gauss(0.0, sigma)
            y += prng.gauss(0.0, sigma)
        if self._outp and prng.random() < self._outp:
            r, a = prng.uniform(10, 20), prng.uniform(0, 2 * math.pi)
            x += r * math.cos(a)
            y += r * math.sin(a)
        frame = proc.site.frame
        lat = frame.lat0 + y / frame.m_lat
        lon = frame.lon0 + x / frame.m_lon
        iso = _iso(ts)
        line = (f'{{"asset_guid": "{proc.guid}", "site_guid": "{proc.site.guid}", "timestamp": "{iso}", '
                f'"latitude": {lat:.7f}, "longitude": {lon:.7f}, "work_state_id": {ws}}}')
        delivery = ts
        drng = proc.drng
        if self._drop and drng.random() < self._drop:
            return
        if proc.outage is not None:
            while ts >= proc.outage[1]:
                s = proc.outage[1] + int(drng.expovariate(proc.outage_rate))
                proc.outage = (s, s + int(drng.uniform(300_000, 1_800_000)))
                proc.backlog = 0
            if ts >= proc.outage[0]:
                if self.spec.outage_loss:
                    return
                proc.backlog += 1
                delivery = proc.outage[1] + proc.backlog * 10
        if delivery == ts and self._disorder_ms:
            delivery += int(drng.random() * self._disorder_ms)
        self._push(delivery, line)
        if self._dup and drng.random() < self._dup:
            self._push(delivery + int(drng.uniform(0, 40_000)), line)
        if self._malf and drng.random() < self._malf:
            self._push(delivery, _malformed(drng, proc.guid, proc.site.guid, iso, lat, lon, ws))

    def _push(self, delivery: int, line: str) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (delivery, self._seq, line))

    # -- main loop

    def run(self) -> Iterator[tuple[int, str]]:
        events: list[tuple[int, int, _Proc]] = []
        for proc, legs, t1 in self.initial:
            self._emit_legs(proc, legs)
            heapq.heappush(events, (t1, proc.order, proc))
        self.initial = []
        heap = self._heap
        pop = heapq.heappop
        while events:
            t, _, proc = pop(events)
            while heap and heap[0][0] < t:
                d, _, line = pop(heap)
                yield d, line
            legs, nxt = proc.step(t)
            self._emit_legs(proc, legs)
            if nxt is not None:
                heapq.heappush(events, (nxt, proc.order, proc))
        while heap:
            d, _, line = pop(heap)
            yield d, line


# ------------------------------------------------------------------------------------------ public API


@dataclass
class Simulation:
    """A finished simulation held in memory (small runs, tests)."""

    spec: SimulationSpec
    reference: ReferenceData
    assets: list[AssetTuple]
    truth: list[CycleRecord]
    deliveries: list[tuple[int, str]]

    @property
    def telemetry_lines(self) -> list[str]:
        """The telemetry.jsonl lines in delivery order."""
        return [line for _, line in self.deliveries]


def _sort_truth(truth: list[CycleRecord]) -> list[CycleRecord]:
    return sorted(truth, key=lambda r: (r.site_guid, r.asset_guid, r.load_start_ms or 0))


def build_layout(spec: SimulationSpec) -> tuple[ReferenceData, list[AssetTuple]]:
    """Reference data and assets of the spec's sites (no motion simulated)."""
    runner = _Runner(spec, None)
    return runner.reference, runner.assets


def simulate(spec: SimulationSpec) -> Simulation:
    """Run a finite simulation fully in memory."""
    if spec.hours is None:
        raise ValueError("simulate() needs a finite spec.hours; use iter_deliveries() for a stream")
    truth: list[CycleRecord] = []
    runner = _Runner(spec, truth.append)
    deliveries = list(runner.run())
    return Simulation(spec, runner.reference, runner.assets, _sort_truth(truth), deliveries)


def iter_deliveries(spec: SimulationSpec,
                    truth: Callable[[CycleRecord], None] | None = None) -> Iterator[tuple[int, str]]:
    """Lazily yield (delivery_ms, json_line) in delivery order; unbounded when spec.hours is None.

    Memory stays bounded (about one cycle of pings per truck). ``truth`` receives each closed
    ground-truth cycle as soon as it is known (in simulation order, not sorted).
    """
    return _Runner(spec, truth).run()


@dataclass
class WriteStats:
    """What write_simulation produced."""

    lines: int
    truth_cycles: int
    seconds_simulated: float


def write_simulation(spec: SimulationSpec, out_dir: str | Path,
                     progress: Callable[[int], None] | None = None) -> WriteStats:
    """Simulate and stream a bundle to out_dir (telemetry.jsonl, regions, assets, truth_cycles.csv).

    ``progress`` is called now and then with the latest delivery time in ms.
    """
    from workbench.bundle import write_bundle, write_cycles_csv

    if spec.hours is None:
        raise ValueError("write_simulation() needs a finite spec.hours")
    truth: list[CycleRecord] = []
    runner = _Runner(spec, truth.append)
    count = 0

    def lines() -> Iterator[str]:
        nonlocal count
        for d, line in runner.run():
            count += 1
            if progress is not None and not count & 0x3FFF:
                progress(d)
            yield line

    out = Path(out_dir)
    write_bundle(out, lines(), runner.reference, runner.assets, truth=None)
    truth = _sort_truth(truth)
    write_cycles_csv(out / "truth_cycles.csv", truth)
    return WriteStats(count, len(truth), spec.hours * 3600.0)
