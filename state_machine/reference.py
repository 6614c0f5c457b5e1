"""Reference data (loaders, dump regions, asset types) and the per-site spatial lookup.

Classification of a point, per site (sites never mix):
  1. at a loader: geodesic (WGS84) distance to the nearest loader of the site <= loader_distance_m;
  2. inside a dump region: point-in-polygon on a region with region_type "dump";
  3. otherwise travelling.
A loader wins over a dump region where both apply. Overlapping dump regions resolve to the
smallest one (then the lowest region_guid), so the answer never depends on input order.

Speed: a uniform grid of cells maps a position to the few loaders/regions whose bounding box
touches that cell; a point in open road costs one dict lookup. Loader distances are screened with
an equirectangular approximation and only candidates near the threshold are measured with
pyproj's geodesic (Karney), so reported distances agree with pyproj exactly.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import shapely
from pyproj import Geod
from shapely.geometry import Polygon

_GEOD = Geod(ellps="WGS84")
_M_PER_DEG_LAT = 111_320.0
_CELL_DEG = 0.005  # ~550 m of latitude

AREA_LOADER = "L"
AREA_DUMP = "D"
AREA_TRAVEL = "T"
DUMP_REGION_TYPE = "dump"


def geodesic_distance_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """WGS84 geodesic distance in metres (pyproj / Karney)."""
    return _GEOD.inv(lon1, lat1, lon2, lat2)[2]


def approx_distance_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Fast equirectangular distance; within 0.5 % of the geodesic below a few km."""
    x = (lon2 - lon1) * math.cos(math.radians((lat1 + lat2) * 0.5))
    y = lat2 - lat1
    return math.hypot(x, y) * _M_PER_DEG_LAT


@dataclass(frozen=True, slots=True)
class Loader:
    """A loading unit (excavator, shovel, wheel loader) and its position."""

    asset_guid: str
    site_guid: str
    latitude: float
    longitude: float


@dataclass(frozen=True, slots=True)
class Region:
    """A named polygon of a site; ``points`` are (longitude, latitude) pairs."""

    region_guid: str
    region_name: str
    region_type: str
    site_guid: str
    points: tuple[tuple[float, float], ...]

    def to_redis_value(self) -> str:
        """JSON value stored in the Redis hash ``site:{site_guid}:regions`` (legacy format)."""
        return json.dumps(
            {
                "region_guid": self.region_guid,
                "region_name": self.region_name,
                "region_points": ", ".join(f"{lon!r} {lat!r}" for lon, lat in self.points),
                "region_type": self.region_type,
                "site_guid": self.site_guid,
            }
        )

    @classmethod
    def from_redis_value(cls, site_guid: str, raw: str | bytes) -> Region:
        """Parse one value of the Redis regions hash; raises ValueError on a malformed value."""
        data = json.loads(raw)
        text = str(data["region_points"]).strip()
        points = []
        for pair in text.split(","):
            parts = pair.split()
            if len(parts) != 2:
                raise ValueError(f"region_points pair {pair!r} is not 'lon lat'")
            points.append((float(parts[0]), float(parts[1])))
        if len(points) < 3:
            raise ValueError("a region needs at least 3 points")
        return cls(
            region_guid=str(data["region_guid"]),
            region_name=str(data.get("region_name", data["region_guid"])),
            region_type=str(data.get("region_type", "")).lower(),
            site_guid=site_guid,
            points=tuple(points),
        )


@dataclass(frozen=True, slots=True)
class SiteReference:
    """Everything the engine needs to know about one site's geography."""

    site_guid: str
    loaders: tuple[Loader, ...] = ()
    regions: tuple[Region, ...] = ()

    @property
    def fingerprint(self) -> str:
        """Content hash, used to detect changes and to cache spatial indexes."""
        h = hashlib.sha1(self.site_guid.encode())
        for loader in sorted(self.loaders, key=lambda x: x.asset_guid):
            h.update(repr((loader.asset_guid, loader.latitude, loader.longitude)).encode())
        for region in sorted(self.regions, key=lambda r: r.region_guid):
            h.update(repr((region.region_guid, region.region_name, region.region_type, region.points)).encode())
        return h.hexdigest()

    @property
    def dump_regions(self) -> tuple[Region, ...]:
        """Regions that count for dumping."""
        return tuple(r for r in self.regions if r.region_type == DUMP_REGION_TYPE)


@dataclass(slots=True)
class ReferenceData:
    """Asset types and per-site geography, as loaded from a bundle, PostgreSQL or Redis."""

    asset_types: dict[str, str] = field(default_factory=dict)
    sites: dict[str, SiteReference] = field(default_factory=dict)

    @property
    def loaded(self) -> bool:
        """Always complete (state_machine.operator.References)."""
        return True

    def asset_type(self, asset_guid: str) -> str | None:
        """The asset's type, None when unknown (state_machine.operator.References)."""
        return self.asset_types.get(asset_guid)

    def site(self, site_guid: str) -> SiteReference | None:
        """A site's reference data, None when unknown (state_machine.operator.References)."""
        return self.sites.get(site_guid)


class _Candidate:
    __slots__ = ("kind", "guid", "lat", "lon", "min_lat", "max_lat", "min_lon", "max_lon", "geom", "area",
                 "metric_geom")

    def __init__(self, kind: str, guid: str, box: tuple[float, float, float, float], lat: float = 0.0,
                 lon: float = 0.0, geom: Polygon | None = None, area: float = 0.0) -> None:
        self.kind = kind
        self.guid = guid
        self.lat = lat
        self.lon = lon
        self.min_lat, self.max_lat, self.min_lon, self.max_lon = box
        self.geom = geom
        self.area = area
        self.metric_geom: Polygon | None = None
        if geom is not None:  # a local metric copy (metres east/north of the centroid) for distances
            c = geom.centroid
            self.lat, self.lon = c.y, c.x
            kx = _M_PER_DEG_LAT * math.cos(math.radians(c.y))
            self.metric_geom = shapely.transform(geom, lambda xy: (xy - (c.x, c.y)) * (kx, _M_PER_DEG_LAT))
            shapely.prepare(self.metric_geom)

    def distance_m(self, lat: float, lon: float, loader_distance_m: float) -> float:
        """Metres from a position to this area (0 inside)."""
        if self.metric_geom is None:
            return max(0.0, approx_distance_m(lat, lon, self.lat, self.lon) - loader_distance_m)
        kx = _M_PER_DEG_LAT * math.cos(math.radians(self.lat))
        return float(shapely.distance(self.metric_geom, shapely.Point((lon - self.lon) * kx,
                                                                       (lat - self.lat) * _M_PER_DEG_LAT)))


class SpatialIndex:
    """Classifies positions of one site: at a loader, inside a dump region, or travelling."""

    def __init__(self, site: SiteReference, loader_distance_m: float) -> None:
        self.site_guid = site.site_guid
        self.loader_distance_m = loader_distance_m
        self._screen_m = loader_distance_m * 1.01 + 1.0
        self._grid: dict[tuple[int, int], list[_Candidate]] = {}
        self._loaders: dict[str, tuple[float, float]] = {ld.asset_guid: (ld.latitude, ld.longitude) for ld in site.loaders}
        self._loader_cells: dict[tuple[int, int], list[str]] = {}
        for loader in site.loaders:
            cell = (math.floor(loader.latitude / _CELL_DEG), math.floor(loader.longitude / _CELL_DEG))
            self._loader_cells.setdefault(cell, []).append(loader.asset_guid)
        for loader in site.loaders:
            dlat = self._screen_m / _M_PER_DEG_LAT
            dlon = dlat / max(math.cos(math.radians(loader.latitude)), 1e-6)
            box = (loader.latitude - dlat, loader.latitude + dlat, loader.longitude - dlon, loader.longitude + dlon)
            self._insert(_Candidate(AREA_LOADER, loader.asset_guid, box, loader.latitude, loader.longitude))
        for region in site.dump_regions:
            geom = Polygon(region.points)
            if not geom.is_valid:
                geom = geom.buffer(0)
            shapely.prepare(geom)
            min_lon, min_lat, max_lon, max_lat = geom.bounds
            self._insert(_Candidate(AREA_DUMP, region.region_guid, (min_lat, max_lat, min_lon, max_lon),
                                    geom=geom, area=geom.area))
        self._zones: dict[tuple[int, int], list[_Candidate]] = {}
        for region in site.regions:
            if region.region_type == DUMP_REGION_TYPE or not region.region_type:
                continue
            geom = Polygon(region.points)
            if not geom.is_valid:
                geom = geom.buffer(0)
            shapely.prepare(geom)
            min_lon, min_lat, max_lon, max_lat = geom.bounds
            zone = _Candidate(region.region_type, region.region_guid, (min_lat, max_lat, min_lon, max_lon),
                              geom=geom, area=geom.area)
            for i in range(math.floor(min_lat / _CELL_DEG), math.floor(max_lat / _CELL_DEG) + 1):
                for j in range(math.floor(min_lon / _CELL_DEG), math.floor(max_lon / _CELL_DEG) + 1):
                    self._zones.setdefault((i, j), []).append(zone)
        self.has_zones = bool(self._zones)
        for cell in self._grid.values():  # loaders first, then smallest region, then guid
            cell.sort(key=lambda c: (c.kind != AREA_LOADER, c.area, c.guid))

    def _insert(self, cand: _Candidate) -> None:
        for i in range(math.floor(cand.min_lat / _CELL_DEG), math.floor(cand.max_lat / _CELL_DEG) + 1):
            for j in range(math.floor(cand.min_lon / _CELL_DEG), math.floor(cand.max_lon / _CELL_DEG) + 1):
                self._grid.setdefault((i, j), []).append(cand)

    def classify(self, lat: float, lon: float) -> tuple[str, str | None, float | None]:
        """(area, guid, loader distance m): area is "L" (guid=loader), "D" (guid=region) or "T"."""
        cands = self._grid.get((math.floor(lat / _CELL_DEG), math.floor(lon / _CELL_DEG)))
        if not cands:
            return AREA_TRAVEL, None, None
        best_loader: str | None = None
        best_dist = math.inf
        for c in cands:
            if not (c.min_lat <= lat <= c.max_lat and c.min_lon <= lon <= c.max_lon):
                continue
            if c.kind == AREA_LOADER:
                if approx_distance_m(lat, lon, c.lat, c.lon) <= self._screen_m:
                    d = geodesic_distance_m(lat, lon, c.lat, c.lon)
                    if d <= self.loader_distance_m and (d < best_dist or (d == best_dist and c.guid < best_loader)):
                        best_loader, best_dist = c.guid, d
            elif best_loader is not None:
                break
            elif shapely.contains_xy(c.geom, lon, lat):
                return AREA_DUMP, c.guid, None
        if best_loader is not None:
            return AREA_LOADER, best_loader, best_dist
        return AREA_TRAVEL, None, None

    def zone_at(self, lat: float, lon: float) -> str | None:
        """The guid of a non-dump region (e.g. "restricted") containing the position, else None."""
        for c in self._zones.get((math.floor(lat / _CELL_DEG), math.floor(lon / _CELL_DEG)), ()):
            if c.min_lat <= lat <= c.max_lat and c.min_lon <= lon <= c.max_lon and shapely.contains_xy(c.geom, lon, lat):
                return c.guid
        return None

    def distance_to_loader_m(self, guid: str, lat: float, lon: float) -> float:
        """Metres from a position to a loader (equirectangular); infinite for a loader not in the site."""
        position = self._loaders.get(guid)
        return math.inf if position is None else approx_distance_m(lat, lon, position[0], position[1])

    def loaders_within(self, lat: float, lon: float, radius_m: float) -> list[str]:
        """Guids of the loaders within radius_m of a position (equirectangular), nearest first."""
        reach_lat = radius_m / _M_PER_DEG_LAT
        reach_lon = reach_lat / max(math.cos(math.radians(lat)), 1e-6)
        found = []
        for i in range(math.floor((lat - reach_lat) / _CELL_DEG), math.floor((lat + reach_lat) / _CELL_DEG) + 1):
            for j in range(math.floor((lon - reach_lon) / _CELL_DEG), math.floor((lon + reach_lon) / _CELL_DEG) + 1):
                for guid in self._loader_cells.get((i, j), ()):
                    d = self.distance_to_loader_m(guid, lat, lon)
                    if d <= radius_m:
                        found.append((d, guid))
        return [guid for _, guid in sorted(found)]

    def areas_near(self, lat: float, lon: float, radius_m: float) -> dict[tuple[str, str], float]:
        """Load/dump areas within radius_m of a position: (kind, guid) -> distance in metres (0 inside)."""
        reach_lat = radius_m / _M_PER_DEG_LAT
        reach_lon = reach_lat / max(math.cos(math.radians(lat)), 1e-6)
        found: dict[tuple[str, str], float] = {}
        for i in range(math.floor((lat - reach_lat) / _CELL_DEG), math.floor((lat + reach_lat) / _CELL_DEG) + 1):
            for j in range(math.floor((lon - reach_lon) / _CELL_DEG), math.floor((lon + reach_lon) / _CELL_DEG) + 1):
                for c in self._grid.get((i, j), ()):
                    key = (c.kind, c.guid)
                    if key not in found:
                        d = c.distance_m(lat, lon, self.loader_distance_m)
                        if d <= radius_m:
                            found[key] = d
        return found


class SpatialCache:
    """Builds SpatialIndex objects once per site content and loader distance.

    The same SiteReference object hits by identity (no hashing); a new object with the same content
    (a broadcast refresh) hits by fingerprint; changed content rebuilds the index.
    """

    def __init__(self) -> None:
        self._cache: dict[tuple[str, float], tuple[SiteReference, str, SpatialIndex]] = {}

    def get(self, site: SiteReference, loader_distance_m: float) -> SpatialIndex:
        """The index for this exact site content and distance threshold."""
        key = (site.site_guid, loader_distance_m)
        entry = self._cache.get(key)
        if entry is not None and entry[0] is site:
            return entry[2]
        fingerprint = site.fingerprint
        if entry is not None and entry[1] == fingerprint:
            index = entry[2]
        else:
            index = SpatialIndex(site, loader_distance_m)
        self._cache[key] = (site, fingerprint, index)
        return index


def group_sites(loaders: Iterable[Loader], regions: Iterable[Region]) -> dict[str, SiteReference]:
    """Group flat loader and region lists into SiteReference objects by site_guid."""
    by_site_l: dict[str, list[Loader]] = {}
    by_site_r: dict[str, list[Region]] = {}
    for loader in loaders:
        by_site_l.setdefault(loader.site_guid, []).append(loader)
    for region in regions:
        by_site_r.setdefault(region.site_guid, []).append(region)
    return {
        site: SiteReference(site, tuple(by_site_l.get(site, ())), tuple(by_site_r.get(site, ())))
        for site in sorted(set(by_site_l) | set(by_site_r))
    }


def site_reference_from_mapping(data: Mapping) -> SiteReference:
    """Inverse of site_reference_to_mapping (used to ship references through Flink broadcast)."""
    site = str(data["site_guid"])
    return SiteReference(
        site,
        tuple(Loader(str(x[0]), site, float(x[1]), float(x[2])) for x in data.get("loaders", ())),
        tuple(Region(str(r[0]), str(r[1]), str(r[2]), site, tuple((float(p[0]), float(p[1])) for p in r[3]))
              for r in data.get("regions", ())),
    )


def site_reference_to_mapping(site: SiteReference) -> dict:
    """A JSON-able dict of a SiteReference (compact lists)."""
    return {
        "site_guid": site.site_guid,
        "loaders": [[x.asset_guid, x.latitude, x.longitude] for x in site.loaders],
        "regions": [[r.region_guid, r.region_name, r.region_type, [list(p) for p in r.points]] for r in site.regions],
    }
