"""Position classification: loaders (geodesic), dump polygons (many, overlapping), sites apart."""

from __future__ import annotations

import random

import numpy as np
import shapely
from hypothesis import given, settings
from hypothesis import strategies as st
from pyproj import Geod
from shapely.geometry import Polygon

from state_machine.reference import (
    AREA_DUMP,
    AREA_LOADER,
    AREA_TRAVEL,
    Loader,
    Region,
    SiteReference,
    SpatialCache,
    SpatialIndex,
    site_reference_from_mapping,
    site_reference_to_mapping,
)
from tests.state_machine.track import offset, square

GEOD = Geod(ellps="WGS84")
LAT0, LON0 = -22.7, 118.7


@settings(max_examples=300, deadline=None)
@given(north=st.floats(-60, 60), east=st.floats(-60, 60), lat=st.floats(-70, 70), lon=st.floats(-179, 179))
def test_loader_distance_agrees_with_pyproj_geodesic(north: float, east: float, lat: float, lon: float):
    site = SiteReference("S", (Loader("L", "S", lat, lon),))
    index = SpatialIndex(site, 50.0)
    plat, plon = offset(lat, lon, north, east)
    area, guid, dist = index.classify(plat, plon)
    expected = GEOD.inv(lon, lat, plon, plat)[2]
    if expected <= 49.9:
        assert (area, guid) == (AREA_LOADER, "L")
        assert abs(dist - expected) < 0.1
    elif expected > 50.1:
        assert area == AREA_TRAVEL


def test_nearest_loader_wins_and_loader_beats_dump():
    a = Loader("A", "S", LAT0, LON0)
    b_lat, b_lon = offset(LAT0, LON0, 40, 0)
    b = Loader("B", "S", b_lat, b_lon)
    dump = Region("D", "Dump", "dump", "S", square((LAT0, LON0), 100))
    index = SpatialIndex(SiteReference("S", (a, b), (dump,)), 50)
    assert index.classify(*offset(LAT0, LON0, 10, 0))[:2] == (AREA_LOADER, "A")
    assert index.classify(*offset(LAT0, LON0, 30, 0))[:2] == (AREA_LOADER, "B")
    assert index.classify(*offset(LAT0, LON0, -80, 0))[:2] == (AREA_DUMP, "D")


def test_overlapping_dump_regions_resolve_to_the_smallest():
    big = Region("BIG", "Big", "dump", "S", square((LAT0, LON0), 300))
    small = Region("SMALL", "Small", "dump", "S", square((LAT0, LON0), 50))
    for regions in ((big, small), (small, big)):
        index = SpatialIndex(SiteReference("S", (), regions), 50)
        assert index.classify(LAT0, LON0)[:2] == (AREA_DUMP, "SMALL")
        assert index.classify(*offset(LAT0, LON0, 200, 0))[:2] == (AREA_DUMP, "BIG")


def test_non_dump_regions_are_not_dump_areas_but_zones():
    restricted = Region("R", "Blast", "restricted", "S", square((LAT0, LON0), 100))
    index = SpatialIndex(SiteReference("S", (), (restricted,)), 50)
    assert index.classify(LAT0, LON0)[0] == AREA_TRAVEL
    assert index.zone_at(LAT0, LON0) == "R"
    assert index.zone_at(*offset(LAT0, LON0, 500, 0)) is None


def test_many_polygons_classify_like_brute_force():
    rng = random.Random(3)
    regions = []
    for i in range(2000):
        c = offset(LAT0, LON0, rng.uniform(-20000, 20000), rng.uniform(-20000, 20000))
        regions.append(Region(f"R{i:04d}", f"R{i}", "dump", "S", square(c, rng.uniform(20, 150))))
    index = SpatialIndex(SiteReference("S", (), tuple(regions)), 50)
    geoms = np.array([Polygon(r.points) for r in regions])
    areas = shapely.area(geoms)
    for _ in range(2000):
        lat, lon = offset(LAT0, LON0, rng.uniform(-20000, 20000), rng.uniform(-20000, 20000))
        hits = np.flatnonzero(shapely.contains_xy(geoms, lon, lat))
        inside = sorted((areas[k], regions[k].region_guid) for k in hits)
        area, guid, _ = index.classify(lat, lon)
        if inside:
            assert (area, guid) == (AREA_DUMP, inside[0][1])
        else:
            assert area == AREA_TRAVEL


def test_sites_are_indexed_separately():
    cache = SpatialCache()
    site_a = SiteReference("A", (Loader("LA", "A", LAT0, LON0),))
    site_b = SiteReference("B", ())
    assert cache.get(site_a, 50).classify(LAT0, LON0)[0] == AREA_LOADER
    assert cache.get(site_b, 50).classify(LAT0, LON0)[0] == AREA_TRAVEL


def test_cache_rebuilds_on_changed_content_only():
    cache = SpatialCache()
    site = SiteReference("A", (Loader("LA", "A", LAT0, LON0),))
    first = cache.get(site, 50)
    same_content = SiteReference("A", (Loader("LA", "A", LAT0, LON0),))
    assert cache.get(same_content, 50) is first
    moved = SiteReference("A", (Loader("LA", "A", *offset(LAT0, LON0, 500, 0)),))
    assert cache.get(moved, 50) is not first
    assert cache.get(moved, 50).classify(LAT0, LON0)[0] == AREA_TRAVEL


def test_redis_value_and_broadcast_mapping_round_trip():
    region = Region("D1", "North dump", "dump", "S", square((LAT0, LON0), 80))
    assert Region.from_redis_value("S", region.to_redis_value()) == region
    site = SiteReference("S", (Loader("L", "S", LAT0, LON0),), (region,))
    assert site_reference_from_mapping(site_reference_to_mapping(site)) == site
    assert shapely.is_valid(Polygon(region.points))
