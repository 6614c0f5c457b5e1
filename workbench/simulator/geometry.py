"""Site layouts in a local metre frame: roads as polylines, loaders with their approach, queue and
loading spots, dump polygons, restricted regions; radial sites and open pits with switchback or
spiral ramps. ``build_site(spec, index)`` is the entry point."""

from __future__ import annotations

import bisect
import math
import random
from dataclasses import dataclass, field
from typing import Any

from pyproj import Geod
from shapely.geometry import LineString as _ShLine
from shapely.geometry import Point as _ShPoint
from shapely.geometry import Polygon as _ShPolygon

from state_machine.reference import Loader, Region, SiteReference
from workbench.simulator.spec import SimulationSpec

_GEOD = Geod(ellps="WGS84")
MAX_CLUSTER = 6


XY = tuple[float, float]


class Frame:
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


class Polyline:
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

    def __add__(self, other: Polyline) -> Polyline:
        """This path, then ``other`` (which should start where this one ends)."""
        joint = [FLAT] if other.pts[0] != self.pts[-1] else []
        return Polyline(self.pts + (other.pts if joint else other.pts[1:]), self.kinds + joint + other.kinds)

    def reversed(self) -> Polyline:
        """The same road driven the other way."""
        return Polyline(list(reversed(self.pts)), list(reversed(self.kinds)))

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

    def split(self, d: float) -> tuple[Polyline, Polyline]:
        i = bisect.bisect_right(self.cum, d)
        i = min(max(i, 1), len(self.pts) - 1)
        p = self.at(d)
        return (Polyline(self.pts[:i] + [p], self.kinds[:i]),
                Polyline([p] + self.pts[i:], self.kinds[i - 1:]))


def polar(origin: XY, r: float, ang: float) -> XY:
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
class LoaderGeo:
    guid: str
    pos: XY
    approach: XY  # end of the road, outside the loader circle
    queue: XY
    spot: XY
    queue_inside: bool
    road: Polyline  # hub ... approach
    to_spot: Polyline  # approach ... spot
    free_at: int = 0


@dataclass
class DumpGeo:
    guid: str
    name: str
    ring: list[XY]
    centre: XY
    entry: XY
    road: Polyline  # hub ... entry
    spot_radius: float
    poly: Any = None


@dataclass
class SiteGeo:
    index: int
    guid: str
    code: str
    frame: Frame
    hub: XY
    loaders: list[LoaderGeo]
    dumps: list[DumpGeo]
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


def _dump_cluster(code: str, first: int, size: int, junction: XY, ang_deg: float, trunk: Polyline,
                  rng: random.Random) -> list[DumpGeo]:
    """Dump polygons fanned out 650-900 m beyond a junction, each with a road from the hub."""
    dumps = []
    for k, a_deg in enumerate(_fan_angles(size, ang_deg, 120.0, 40.0)):
        a = math.radians(a_deg + rng.uniform(-2, 2))
        n = first + k
        centre = polar(junction, rng.uniform(650, 900), a)
        radius = rng.uniform(50, 110)
        nv = rng.choice((4, 5))
        start = rng.uniform(0, 2 * math.pi)
        ring = []
        for v in range(nv):
            va = start + 2 * math.pi * (v + rng.uniform(-0.15, 0.15)) / nv
            ring.append(polar(centre, radius * rng.uniform(0.75, 1.0), va))
        poly = _ShPolygon(ring)
        towards = (junction[0] - centre[0], junction[1] - centre[1])
        dist = math.hypot(*towards)
        far = (centre[0] + towards[0] / dist * 400, centre[1] + towards[1] / dist * 400)
        hit = _ShLine([centre, far]).intersection(poly.exterior)
        entry = (hit.x, hit.y) if hit.geom_type == "Point" else list(hit.geoms)[0].coords[0]
        inner = poly.exterior.distance(_ShPoint(centre))
        road = trunk + Polyline(_road(junction, (entry[0], entry[1]), rng, bends=2, max_off=12.0))
        dumps.append(DumpGeo(f"{code}-DUMP-{n + 1:02d}", f"{code} Dump {n + 1}", ring, centre,
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
    c = polar(hub, 0.6 * r_junction, mid)
    return [polar(c, 75 * rng.uniform(0.8, 1.0), 2 * math.pi * v / 5 + rng.uniform(-0.2, 0.2)) for v in range(5)]


def _site_frame(spec: SimulationSpec, index: int) -> Frame:
    lat0, lon0 = spec.center_lat, spec.center_lon
    if index:
        m_lon = _GEOD.inv(lon0 - 0.005, lat0, lon0 + 0.005, lat0)[2] / 0.01
        lon0 += index * spec.site_spacing_km * 1000.0 / m_lon
    return Frame(lat0, lon0)


def _build_radial(spec: SimulationSpec, rng: random.Random, code: str
                  ) -> tuple[list[LoaderGeo], list[DumpGeo], list[XY] | None]:
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
    loaders: list[LoaderGeo] = []
    dumps: list[DumpGeo] = []
    for kind, size, ang_deg in zip(kinds, sizes, cluster_angles, strict=True):
        ang = math.radians(ang_deg)
        junction = polar(hub, r_junction * rng.uniform(0.95, 1.05), ang)
        trunk = Polyline(_road(hub, junction, rng, bends=3, max_off=25.0))
        if kind == "D":
            dumps.extend(_dump_cluster(code, len(dumps), size, junction, ang_deg, trunk, rng))
            continue
        for a_deg in _fan_angles(size, ang_deg, 120.0, 40.0):
            a = math.radians(a_deg + rng.uniform(-2, 2))
            n = len(loaders)
            pos = polar(junction, rng.uniform(380, 600), a)
            back = math.atan2(junction[1] - pos[1], junction[0] - pos[0])
            approach = polar(pos, 130.0, back)
            inside = _queue_inside(n, spec, rng)
            qd = rng.uniform(30, 40) if inside else rng.uniform(70, 90)
            queue = polar(polar(pos, qd, back), rng.uniform(-4, 4), back + math.pi / 2)
            spot = polar(pos, rng.uniform(10, 15), back + rng.uniform(-0.5, 0.5))
            road = trunk + Polyline(_road(junction, approach, rng, bends=2, max_off=12.0))
            loaders.append(LoaderGeo(f"{code}-LDR-{n + 1:02d}", pos, approach, queue, spot, inside, road,
                                      Polyline([approach, spot])))
    return loaders, dumps, _restricted(spec, hub, cluster_angles, base, r_junction, rng)


def _hairpin(centre: XY, radius: float, start_ang: float, turn: float, steps: int = 6) -> list[XY]:
    """Points of a half-circle turn (``turn`` = +-pi) around ``centre``."""
    return [polar(centre, radius, start_ang + turn * k / steps) for k in range(1, steps + 1)]


def _switchback_ramp(hub: XY, down: float, rng: random.Random) -> tuple[Polyline, list[tuple[int, float]]]:
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
        end = polar(pos, length, heading)
        pts.append(end)
        kinds.append(RAMP)
        if leg == legs - 1:
            break
        centre = polar(end, gap / 2, down)
        arc = _hairpin(centre, gap / 2, down + math.pi, -math.pi * side)  # bulge in the direction of travel
        apexes.append((len(pts) + len(arc) // 2 - 1, heading))
        pts.extend(arc)
        kinds.extend([HAIRPIN] * len(arc))
        pos = pts[-1]
        side = -side
    return Polyline(pts, kinds), apexes


def _spiral_ramp(hub: XY, down: float, rng: random.Random) -> Polyline:
    """A ramp circling down around the pit centre, 1-1.5 turns from the rim to the floor."""
    r_top = rng.uniform(280, 380)
    r_bottom = r_top * rng.uniform(0.35, 0.5)
    centre = polar(hub, r_top, down)
    turns = rng.uniform(1.0, 1.5)
    start = down + math.pi
    direction = rng.choice((1.0, -1.0))
    n = int(turns * 48)
    pts = [hub] + [polar(centre, r_top + (r_bottom - r_top) * k / n, start + direction * 2 * math.pi * turns * k / n)
                   for k in range(1, n + 1)]
    return Polyline(pts, [RAMP] * (len(pts) - 1))


def _ramp_face(spec: SimulationSpec, rng: random.Random, code: str, n: int, ramp: Polyline, apex: int,
               outward: float) -> LoaderGeo:
    """A loader working a bench beside a switchback hairpin: every truck going deeper drives round
    that hairpin, slowly, within 30-40 m of it; its own trucks leave the ramp there."""
    apex_pt = ramp.pts[apex]
    pos = polar(apex_pt, rng.uniform(28.0, 40.0), outward)
    apex_d = ramp.cum[apex]
    approach_d = max(0.0, apex_d - rng.uniform(80.0, 110.0))
    road, rest = ramp.split(approach_d)
    into, _ = rest.split(apex_d - approach_d)
    approach = road.pts[-1]
    spot = polar(pos, rng.uniform(10.0, 15.0), outward + math.pi + rng.uniform(-0.4, 0.4))
    inside = _queue_inside(n, spec, rng)
    queue = polar(pos, rng.uniform(24.0, 30.0), outward + math.pi + rng.uniform(0.6, 1.0)) if inside \
        else rest.at(rng.uniform(10.0, 25.0))  # staging on the ramp, before the hairpin
    to_spot = into + Polyline([apex_pt, spot], [BENCH])
    return LoaderGeo(f"{code}-LDR-{n + 1:02d}", pos, approach, queue, spot, inside, road, to_spot)


def _build_pit(spec: SimulationSpec, rng: random.Random, code: str
               ) -> tuple[list[LoaderGeo], list[DumpGeo], list[XY] | None]:
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
    loaders: list[LoaderGeo] = []
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
        on_road = polar(foot, along, bench_dir)
        pos = polar(on_road, offset, side)
        approach = polar(foot, along - 110.0, bench_dir)  # outside the circle, on the bench road
        inside = _queue_inside(n, spec, rng)
        if inside:  # in the bay, beside the road, ~25 m from the loader
            queue = polar(polar(foot, along - 18.0, bench_dir), offset * 0.4, side)
        else:  # staging on the bench road, 60-90 m before the loader
            queue = polar(foot, along - rng.uniform(65, 85), bench_dir)
        spot = polar(pos, rng.uniform(10, 15), side + math.pi + rng.uniform(-0.4, 0.4))
        road = ramp + Polyline([foot, approach], [BENCH])
        to_spot = Polyline([approach, polar(foot, along - 12.0, bench_dir), spot], [BENCH, BENCH])
        loaders.append(LoaderGeo(f"{code}-LDR-{n + 1:02d}", pos, approach, queue, spot, inside, road, to_spot))
    angles = [base]
    dumps: list[DumpGeo] = []
    n_d = spec.n_dumps
    d_clusters = [min(MAX_CLUSTER, n_d - k) for k in range(0, n_d, MAX_CLUSTER)]
    for k, size in enumerate(d_clusters):
        ang_deg = base + 180.0 + (k - (len(d_clusters) - 1) / 2) * 70.0 + rng.uniform(-10, 10)
        angles.append(ang_deg)
        junction = polar(hub, rng.uniform(700, 1100), math.radians(ang_deg))
        trunk = Polyline(_road(hub, junction, rng, bends=3, max_off=25.0))
        dumps.extend(_dump_cluster(code, len(dumps), size, junction, ang_deg, trunk, rng))
    return loaders, dumps, _restricted(spec, hub, angles, base, 1100.0, rng)


def build_site(spec: SimulationSpec, index: int) -> SiteGeo:
    rng = random.Random(f"{spec.seed}/layout/{index}")
    code = f"S{index + 1:02d}"
    guid = f"SITE-{index + 1:02d}"
    frame = _site_frame(spec, index)
    build = _build_pit if spec.layout == "pit" else _build_radial
    loaders, dumps, restricted = build(spec, rng, code)
    geo = SiteGeo(index, guid, code, frame, (0.0, 0.0), loaders, dumps, restricted)
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


