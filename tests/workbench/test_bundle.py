"""Site bundle read/write: round trips and clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from state_machine.model import (
    COMPLETE,
    EMPTY_TRAVEL,
    INVALID,
    LOAD_TRAVEL,
    OUTLIER,
    CycleRecord,
    cycle_to_csv_row,
    ms_to_iso,
)
from state_machine.reference import Loader, ReferenceData, Region, SiteReference
from workbench.bundle import (
    BundleError,
    iso_to_ms,
    iter_telemetry_lines,
    read_assets_csv,
    read_cycles_csv,
    read_reference,
    write_bundle,
    write_cycles_csv,
)
from workbench.simulator import SimulationSpec, simulate

T0 = 1_705_298_400_000


def sample_reference() -> tuple[ReferenceData, list]:
    loader = Loader("LDR-1", "SITE-A", -22.7001, 118.7002)
    dump = Region("DUMP-1", "Dump one", "dump", "SITE-A",
                  ((118.71, -22.71), (118.712, -22.71), (118.712, -22.712), (118.71, -22.712)))
    restricted = Region("R-1", "No go", "restricted", "SITE-A", ((118.72, -22.72), (118.721, -22.72), (118.72, -22.721)))
    other = Region("DUMP-B", "B dump", "dump", "SITE-B", ((119.0, -22.0), (119.001, -22.0), (119.0, -22.001)))
    ref = ReferenceData(
        asset_types={"LDR-1": "LOADER", "HT-1": "HAUL_TRUCK", "WT-1": "WATER_TRUCK"},
        sites={
            "SITE-A": SiteReference("SITE-A", (loader,), (dump, restricted)),
            "SITE-B": SiteReference("SITE-B", (), (other,)),
        },
    )
    assets = [("HT-1", "SITE-A", "HAUL_TRUCK", None, None), ("LDR-1", "SITE-A", "LOADER", -22.7001, 118.7002),
              ("WT-1", "SITE-B", "WATER_TRUCK", None, None)]
    return ref, assets


def cycles() -> list[CycleRecord]:
    a = CycleRecord("HT-1", "SITE-A", COMPLETE, EMPTY_TRAVEL, "LDR-1", "DUMP-1", T0, T0 + 120_500, T0 + 600_000,
                    T0 + 660_123, T0 + 1_000_001, 120.5, 479.5, 60.123, 339.878, 1000.001,
                    travel_idle_seconds=12.5, point_count=42, load_travel_distance_m=2500.3,
                    empty_travel_distance_m=2600.0)
    b = CycleRecord("HT-1", "SITE-A", INVALID, LOAD_TRAVEL, "LDR-1", None, T0 + 1_000_001, T0 + 1_100_000,
                    None, None, T0 + 2_000_000, 99.999, None, None, None, 999.999, invalid_reason="NO_DUMP")
    c = CycleRecord("HT-2", "SITE-A", OUTLIER, EMPTY_TRAVEL, "LDR-1", "DUMP-1", T0, T0 + 1, T0 + 2, T0 + 3, T0 + 4,
                    0.001, 0.001, 0.001, 0.001, 0.004, outlier_rule="TRAVEL_IDLE", outlier_seconds=700.0)
    return [a, b, c]


def test_reference_round_trip(tmp_path: Path) -> None:
    ref, assets = sample_reference()
    write_bundle(tmp_path, ['{"a": 1}\n', "not json"], ref, assets)
    got, rows = read_reference(tmp_path)
    assert got.sites == ref.sites
    assert got.asset_types == ref.asset_types
    assert [tuple(r) for r in rows] == assets
    assert not (tmp_path / "truth_cycles.csv").exists()
    geo = json.loads((tmp_path / "regions.geojson").read_text())
    ring = geo["features"][0]["geometry"]["coordinates"][0]
    assert ring[0] == ring[-1]  # closed ring, lon/lat order
    assert geo["features"][0]["properties"]["region_type"] == "dump"


def test_telemetry_lines_streamed_with_numbers(tmp_path: Path) -> None:
    ref, assets = sample_reference()
    write_bundle(tmp_path, (f"line {i}" for i in range(5)), ref, assets)
    assert list(iter_telemetry_lines(tmp_path)) == [(i + 1, f"line {i}") for i in range(5)]


def test_cycles_csv_round_trip_exact(tmp_path: Path) -> None:
    recs = cycles()
    path = tmp_path / "c.csv"
    write_cycles_csv(path, recs)
    back = read_cycles_csv(path)
    assert [cycle_to_csv_row(r) for r in back] == [cycle_to_csv_row(r) for r in recs]
    assert back[0].load_start_ms == T0 and back[0].dump_end_ms == T0 + 660_123
    assert back[1].dump_start_ms is None and back[1].invalid_reason == "NO_DUMP"
    assert back[2].outlier_seconds == 700.0
    path2 = tmp_path / "c2.csv"
    write_cycles_csv(path2, back)
    assert path2.read_bytes() == path.read_bytes()


def test_simulated_bundle_round_trip(tmp_path: Path) -> None:
    sim = simulate(SimulationSpec(trucks=2, hours=1.0, seed=1, non_trucks=2))
    write_bundle(tmp_path, sim.telemetry_lines, sim.reference, sim.assets, sim.truth)
    ref, rows = read_reference(tmp_path)
    assert ref.sites == sim.reference.sites
    assert ref.asset_types == sim.reference.asset_types
    assert [tuple(r) for r in rows] == sim.assets
    assert [line for _, line in iter_telemetry_lines(tmp_path)] == sim.telemetry_lines
    truth = read_cycles_csv(tmp_path / "truth_cycles.csv")
    assert [cycle_to_csv_row(r) for r in truth] == [cycle_to_csv_row(r) for r in sim.truth]
    assert [r.load_start_ms for r in truth] == [r.load_start_ms for r in sim.truth]


def test_iso_to_ms() -> None:
    assert iso_to_ms("2024-01-15T06:00:00.000Z") == T0
    assert iso_to_ms(ms_to_iso(T0 + 123_457)) == T0 + 123_457
    with pytest.raises(ValueError):
        iso_to_ms("yesterday")


def test_bad_geojson_errors_name_file(tmp_path: Path) -> None:
    ref, assets = sample_reference()
    write_bundle(tmp_path, [], ref, assets)
    path = tmp_path / "regions.geojson"
    path.write_text('{"type": "FeatureCollection",\n "features": [\n')
    with pytest.raises(BundleError, match=r"regions\.geojson:3"):
        read_reference(tmp_path)
    feature = {"type": "Feature", "properties": {"region_guid": "X", "region_type": "dump", "site_guid": "S"},
               "geometry": {"type": "Polygon", "coordinates": [[[118.7, -22.7], [118.8, -22.7]]]}}
    path.write_text(json.dumps({"type": "FeatureCollection", "features": [feature]}))
    with pytest.raises(BundleError, match=r"regions\.geojson: feature 0 \(X\).*at least 3"):
        read_reference(tmp_path)
    feature["geometry"]["coordinates"] = [[[-22.7, 118.7], [-22.7, 118.8], [-22.8, 118.8]]]
    path.write_text(json.dumps({"type": "FeatureCollection", "features": [feature]}))
    with pytest.raises(BundleError, match="out of range"):
        read_reference(tmp_path)
    del feature["properties"]["site_guid"]
    path.write_text(json.dumps({"type": "FeatureCollection", "features": [feature]}))
    with pytest.raises(BundleError, match="site_guid"):
        read_reference(tmp_path)


@pytest.mark.parametrize(
    ("body", "pattern"),
    [
        ("guid,site\n", r"assets\.csv:1: header"),
        ("asset_guid,site_guid,asset_type,latitude,longitude\nA,S,LOADER,,\n", r"assets\.csv:2: loader"),
        ("asset_guid,site_guid,asset_type,latitude,longitude\nA,S,HAUL_TRUCK,,\nB,S,LOADER,abc,1\n",
         r"assets\.csv:3: latitude 'abc'"),
        ("asset_guid,site_guid,asset_type,latitude,longitude\nA,S,HAUL_TRUCK,,\nA,S,HAUL_TRUCK,,\n",
         r"assets\.csv:3: duplicate"),
        ("asset_guid,site_guid,asset_type,latitude,longitude\nA,,HAUL_TRUCK,,\n", r"assets\.csv:2: .*required"),
        ("asset_guid,site_guid,asset_type,latitude,longitude\nB,S,LOADER,95,1\n", r"assets\.csv:2: latitude .*range"),
    ],
)
def test_bad_assets_csv_errors_name_line(tmp_path: Path, body: str, pattern: str) -> None:
    path = tmp_path / "assets.csv"
    path.write_text(body)
    with pytest.raises(BundleError, match=pattern):
        read_assets_csv(path)


def test_missing_files(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="regions.geojson"):
        read_reference(tmp_path)
    with pytest.raises(BundleError, match="telemetry.jsonl"):
        list(iter_telemetry_lines(tmp_path))
    with pytest.raises(BundleError, match="nope.csv"):
        read_cycles_csv(tmp_path / "nope.csv")


def test_bad_cycles_csv(tmp_path: Path) -> None:
    path = tmp_path / "c.csv"
    write_cycles_csv(path, cycles())
    text = path.read_text().splitlines()
    text[3] = text[3].replace("2024-01-15T06:00:00.000Z", "garbage", 1)
    path.write_text("\n".join(text) + "\n")
    with pytest.raises(BundleError, match=r"c\.csv:4"):
        read_cycles_csv(path)
