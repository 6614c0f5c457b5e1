"""A tiny track builder for engine tests: one site, one loader, one dump region, exact times."""

from __future__ import annotations

import math

from state_machine.model import IDLING, WORKING, TelemetryPoint
from state_machine.reference import Loader, ReferenceData, Region, SiteReference

SITE = "SITE-T"
TRUCK = "TRUCK-1"
LOADER_LAT, LOADER_LON = -22.70, 118.70
T0 = 1_705_312_800_000  # 2024-01-15T10:00:00Z


def offset(lat: float, lon: float, north_m: float, east_m: float) -> tuple[float, float]:
    """Move a position by metres north/east (flat approximation, fine at these scales)."""
    return (lat + north_m / 111_320.0, lon + east_m / (111_320.0 * math.cos(math.radians(lat))))


DUMP_CENTER = offset(LOADER_LAT, LOADER_LON, 1500.0, 0.0)
ROAD_MID = offset(LOADER_LAT, LOADER_LON, 750.0, 0.0)


def square(center: tuple[float, float], half_m: float) -> tuple[tuple[float, float], ...]:
    """A square polygon around a centre as (lon, lat) pairs."""
    lat, lon = center
    corners = [offset(lat, lon, n, e) for n, e in ((-half_m, -half_m), (-half_m, half_m), (half_m, half_m), (half_m, -half_m))]
    return tuple((c[1], c[0]) for c in corners)


def site_reference(site: str = SITE) -> SiteReference:
    """One loader and one 200 m dump square 1.5 km north of it."""
    return SiteReference(
        site,
        (Loader("LOADER-1", site, LOADER_LAT, LOADER_LON),),
        (Region("DUMP-1", "North dump", "dump", site, square(DUMP_CENTER, 100.0)),),
    )


def reference_data(trucks: tuple[str, ...] = (TRUCK,)) -> ReferenceData:
    """ReferenceData with the test site and the given trucks."""
    ref = ReferenceData(asset_types={t: "HAUL_TRUCK" for t in trucks}, sites={SITE: site_reference()})
    ref.asset_types["LOADER-1"] = "LOADER"
    return ref


class Track:
    """Appends points at exact times; positions are metres north of the loader."""

    def __init__(self, asset: str = TRUCK, site: str = SITE, start_ms: int = T0) -> None:
        self.asset = asset
        self.site = site
        self.t = start_ms
        self.north = 0.0
        self.points: list[TelemetryPoint] = []

    def at(self, north: float, ws: int, east: float = 0.0) -> Track:
        lat, lon = offset(LOADER_LAT, LOADER_LON, north, east)
        self.points.append(TelemetryPoint(self.asset, self.site, self.t, lat, lon, ws))
        self.north = north
        return self

    def wait(self, seconds: float) -> Track:
        self.t += int(seconds * 1000)
        return self

    def stand(self, seconds: float, every: float = 10.0, ws: int = IDLING, east: float = 0.0) -> Track:
        """Stand still here: a point now and every `every` s while standing (the last one before leaving)."""
        n = int(seconds // every)
        for _ in range(n):
            self.at(self.north, ws, east)
            self.wait(every)
        self.wait(seconds - n * every)
        return self

    def drive(self, to_north: float, speed: float = 10.0, every: float = 10.0) -> Track:
        """Drive along the road to `to_north` at `speed` m/s with WORKING pings every `every` s."""
        start = self.north
        dist = abs(to_north - start)
        duration = dist / speed
        steps = max(1, int(duration // every))
        for i in range(steps):
            frac = i / steps
            self.at(start + (to_north - start) * frac, WORKING)
            self.wait(duration / steps)
        self.north = to_north
        return self

    def approach(self, from_north: float = -300.0, every: float = 10.0) -> Track:
        """Drive in to the loader from `from_north` (a clean start before the first load)."""
        self.north = from_north
        return self.drive(0.0, every=every)

    def cycle(self, load_s: float = 120.0, dump_s: float = 40.0, every: float = 10.0) -> Track:
        """Load at the loader, haul to the dump, dump, return to the loader (ends arriving)."""
        self.stand(load_s, every)
        self.drive(1500.0, every=every)
        self.stand(dump_s, every)
        self.drive(0.0, every=every)
        return self
