"""Site bundle: a directory holding one site set's telemetry, reference data and (optional) truth.

Layout::

    telemetry.jsonl     one raw telemetry message per line, in ARRIVAL (delivery) order; lines may be
                        duplicated, out of order or malformed (parsed elsewhere, not here)
    regions.geojson     FeatureCollection of Polygon features (lon/lat, closed ring) with properties
                        region_guid, region_name, region_type, site_guid
    assets.csv          asset_guid,site_guid,asset_type,latitude,longitude (loaders carry a position)
    truth_cycles.csv    optional ground truth written by the simulator (CYCLE_CSV_COLUMNS)
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import NamedTuple

from state_machine.model import (
    CYCLE_CSV_COLUMNS,
    LOADER,
    CycleRecord,
    LoaderHour,
    LoadVisit,
    ServedVisit,
    cycle_to_csv_row,
    ms_to_iso,
)
from state_machine.reference import Loader, ReferenceData, Region, group_sites

TELEMETRY_FILE = "telemetry.jsonl"
REGIONS_FILE = "regions.geojson"
ASSETS_FILE = "assets.csv"
TRUTH_FILE = "truth_cycles.csv"
TRUTH_VISITS_FILE = "truth_visits.csv"
VISIT_CSV_COLUMNS = ("asset_guid", "site_guid", "loader_asset_guid", "load_start_utc", "first_stop_utc", "arrival_utc",
                     "service_start_utc", "departure_utc", "open_at_end", "queue_seconds")  # fmt: skip
"""Columns of a load-visits CSV (`asset-cycle replay --visits-out`, the simulator's truth_visits.csv)."""
LOADER_HOUR_CSV_COLUMNS = ("loader_asset_guid", "site_guid", "hour_start_utc", "loads", "busy_seconds", "hang_seconds",
                           "queue_seconds", "trucks_served")  # fmt: skip
"""Columns of a loader-hours CSV (`asset-cycle replay --loaders-out`), as table loader_hour_kpi."""
ASSET_COLUMNS = ("asset_guid", "site_guid", "asset_type", "latitude", "longitude")

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)


class BundleError(ValueError):
    """A bundle file is missing or malformed; the message names the file (and line)."""


class AssetRow(NamedTuple):
    """One row of assets.csv (a plain tuple: guid, site, type, lat|None, lon|None)."""

    asset_guid: str
    site_guid: str
    asset_type: str
    latitude: float | None
    longitude: float | None


AssetLike = AssetRow | tuple[str, str, str, float | None, float | None]


# --------------------------------------------------------------------------------------------- write


def write_bundle(
    directory: str | Path,
    telemetry_lines: Iterable[str],
    reference: ReferenceData,
    assets: Iterable[AssetLike],
    truth: list[CycleRecord] | None = None,
) -> Path:
    """Write a bundle directory (created if needed); telemetry lines are streamed in the given order."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / TELEMETRY_FILE, "w", encoding="utf-8", newline="\n") as fh:
        write = fh.write
        for line in telemetry_lines:
            write(line.rstrip("\r\n"))
            write("\n")
    write_regions_geojson(out / REGIONS_FILE, reference)
    write_assets_csv(out / ASSETS_FILE, assets)
    if truth is not None:
        write_cycles_csv(out / TRUTH_FILE, truth)
    return out


def write_regions_geojson(path: str | Path, reference: ReferenceData) -> None:
    """All regions of all sites as a GeoJSON FeatureCollection (rings closed)."""
    features = []
    for site_guid in sorted(reference.sites):
        for region in sorted(reference.sites[site_guid].regions, key=lambda r: r.region_guid):
            ring = [[lon, lat] for lon, lat in region.points]
            if ring and ring[0] != ring[-1]:
                ring.append(list(ring[0]))
            features.append(
                {
                    "type": "Feature",
                    "properties": {
                        "region_guid": region.region_guid,
                        "region_name": region.region_name,
                        "region_type": region.region_type,
                        "site_guid": region.site_guid,
                    },
                    "geometry": {"type": "Polygon", "coordinates": [ring]},
                }
            )
    Path(path).write_text(json.dumps({"type": "FeatureCollection", "features": features}, indent=1) + "\n",
                          encoding="utf-8")


def write_assets_csv(path: str | Path, assets: Iterable[AssetLike]) -> None:
    """assets.csv with header asset_guid,site_guid,asset_type,latitude,longitude."""
    with open(path, "w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(ASSET_COLUMNS)
        for guid, site, kind, lat, lon in assets:
            writer.writerow([guid, site, kind, "" if lat is None else repr(float(lat)),
                             "" if lon is None else repr(float(lon))])


def write_cycles_csv(path: str | Path, records: Iterable[CycleRecord]) -> None:
    """Cycles as CSV with CYCLE_CSV_COLUMNS (times ISO 8601 UTC)."""
    with open(path, "w", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=CYCLE_CSV_COLUMNS, lineterminator="\n")
        writer.writeheader()
        for record in records:
            writer.writerow(cycle_to_csv_row(record))


def write_visits_csv(path: str | Path, visits: Iterable[ServedVisit]) -> None:
    """Served load visits as CSV with VISIT_CSV_COLUMNS (times ISO 8601 UTC; an empty service start for a
    truck still waiting when the input ended)."""
    with open(path, "w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(VISIT_CSV_COLUMNS)
        for sv in visits:
            v = sv.visit
            writer.writerow([v.asset_guid, v.site_guid, v.loader_guid, ms_to_iso(v.load_start_ms),
                             ms_to_iso(v.first_stop_ms), ms_to_iso(v.arrival_ms), ms_to_iso(sv.service_start_ms),
                             ms_to_iso(v.departure_ms), int(v.open), f"{sv.queue_seconds:.3f}"])  # fmt: skip


def write_loader_hours_csv(path: str | Path, hours: Iterable[LoaderHour]) -> None:
    """Loader hours as CSV with LOADER_HOUR_CSV_COLUMNS."""
    with open(path, "w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(LOADER_HOUR_CSV_COLUMNS)
        for h in hours:
            writer.writerow([h.loader_guid, h.site_guid, ms_to_iso(h.hour_start_ms), h.loads, f"{h.busy_seconds:.3f}",
                             f"{h.hang_seconds:.3f}", f"{h.queue_seconds:.3f}", h.trucks_served])  # fmt: skip


# ---------------------------------------------------------------------------------------------- read


def iso_to_ms(text: str) -> int:
    """ISO 8601 UTC ("2024-01-15T14:30:25.123Z") to epoch ms; raises ValueError."""
    dt = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return (dt - _EPOCH) // _MS


def iter_telemetry_lines(directory: str | Path) -> Iterator[tuple[int, str]]:
    """(1-based line number, raw line without newline) of telemetry.jsonl, streamed."""
    path = Path(directory) / TELEMETRY_FILE
    if not path.is_file():
        raise BundleError(f"{path}: no such file")
    with open(path, encoding="utf-8", errors="replace", newline="") as fh:
        for line_no, line in enumerate(fh, 1):
            yield line_no, line.rstrip("\r\n")


def read_reference(directory: str | Path) -> tuple[ReferenceData, list[AssetRow]]:
    """Reference data (asset types, loaders, regions grouped per site) and the asset rows of a bundle."""
    base = Path(directory)
    regions = read_regions_geojson(base / REGIONS_FILE)
    assets = read_assets_csv(base / ASSETS_FILE)
    loaders = []
    for row in assets:
        if row.asset_type == LOADER and row.latitude is not None and row.longitude is not None:
            loaders.append(Loader(row.asset_guid, row.site_guid, row.latitude, row.longitude))
    reference = ReferenceData(asset_types={r.asset_guid: r.asset_type for r in assets},
                              sites=group_sites(loaders, regions))
    return reference, assets


def _finite(value: object, where: str, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise BundleError(f"{where}: {what} must be a finite number, got {value!r}")
    return float(value)


def read_regions_geojson(path: str | Path) -> list[Region]:
    """Regions of a GeoJSON FeatureCollection; raises BundleError naming the file and feature."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise BundleError(f"{path}: cannot read: {exc}") from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BundleError(f"{path}:{exc.lineno}: invalid JSON: {exc.msg}") from exc
    if not isinstance(data, dict) or data.get("type") != "FeatureCollection" or not isinstance(
            data.get("features"), list):
        raise BundleError(f"{path}: expected a GeoJSON FeatureCollection with a 'features' list")
    regions: list[Region] = []
    seen: set[str] = set()
    for i, feat in enumerate(data["features"]):
        region = _feature_region(feat, f"{path}: feature {i}")
        if region.region_guid in seen:
            raise BundleError(f"{path}: feature {i} ({region.region_guid}): duplicate region_guid")
        seen.add(region.region_guid)
        regions.append(region)
    return regions


def _feature_region(feat: object, where: str) -> Region:
    """A GeoJSON Polygon feature as a Region; BundleError naming the feature (``where``) otherwise."""
    props = feat.get("properties") if isinstance(feat, dict) else None
    guid = props.get("region_guid") if isinstance(props, dict) else None
    where += f" ({guid})" if guid else ""
    if not isinstance(props, dict):
        raise BundleError(f"{where}: missing 'properties'")
    for key in ("region_guid", "region_type", "site_guid"):
        if not isinstance(props.get(key), str) or not props[key]:
            raise BundleError(f"{where}: property {key!r} must be a non-empty string")
    geom = feat.get("geometry")
    if not isinstance(geom, dict) or geom.get("type") != "Polygon":
        raise BundleError(f"{where}: geometry must be a GeoJSON Polygon")
    coords = geom.get("coordinates")
    if not isinstance(coords, list) or not coords or not isinstance(coords[0], list):
        raise BundleError(f"{where}: Polygon needs a list of rings")
    return Region(
        region_guid=props["region_guid"],
        region_name=str(props.get("region_name") or props["region_guid"]),
        region_type=props["region_type"].lower(),
        site_guid=props["site_guid"],
        points=_outer_ring(coords[0], where),
    )


def _outer_ring(positions: list, where: str) -> tuple[tuple[float, float], ...]:
    """A polygon's outer ring as (lon, lat) pairs, without the closing repeat of the first one."""
    ring = []
    for j, pos in enumerate(positions):
        if not isinstance(pos, list) or len(pos) < 2:
            raise BundleError(f"{where}: position {j} must be [lon, lat]")
        lon = _finite(pos[0], where, f"position {j} longitude")
        lat = _finite(pos[1], where, f"position {j} latitude")
        if not (-180 <= lon <= 180 and -90 <= lat <= 90):
            raise BundleError(f"{where}: position {j} ({lon}, {lat}) out of range (lon/lat order?)")
        ring.append((lon, lat))
    if len(ring) > 1 and ring[0] == ring[-1]:
        ring.pop()
    if len(ring) < 3:
        raise BundleError(f"{where}: a polygon ring needs at least 3 distinct positions")
    return tuple(ring)


def _opt_coord(text: str, where: str, what: str, limit: float) -> float | None:
    text = text.strip()
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        raise BundleError(f"{where}: {what} {text!r} is not a number") from None
    if not math.isfinite(value) or abs(value) > limit:
        raise BundleError(f"{where}: {what} {text!r} out of range")
    return value


def read_assets_csv(path: str | Path) -> list[AssetRow]:
    """Rows of assets.csv; raises BundleError naming the file and line on any problem."""
    path = Path(path)
    if not path.is_file():
        raise BundleError(f"{path}: no such file")
    rows: list[AssetRow] = []
    seen: set[str] = set()
    with open(path, encoding="utf-8", newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if header is None or [h.strip() for h in header[:5]] != list(ASSET_COLUMNS):
            raise BundleError(f"{path}:1: header must be {','.join(ASSET_COLUMNS)}, got {header!r}")
        for record in reader:
            where = f"{path}:{reader.line_num}"
            if not record or all(not c.strip() for c in record):
                continue
            if len(record) < 3:
                raise BundleError(f"{where}: expected 5 columns, got {len(record)}")
            record = record + [""] * (5 - len(record))
            guid, site, kind = (c.strip() for c in record[:3])
            if not guid or not site or not kind:
                raise BundleError(f"{where}: asset_guid, site_guid and asset_type are required")
            if guid in seen:
                raise BundleError(f"{where}: duplicate asset_guid {guid!r}")
            seen.add(guid)
            lat = _opt_coord(record[3], where, "latitude", 90)
            lon = _opt_coord(record[4], where, "longitude", 180)
            if (lat is None) != (lon is None):
                raise BundleError(f"{where}: latitude and longitude must both be set or both be empty")
            if kind == LOADER and lat is None:
                raise BundleError(f"{where}: loader {guid!r} needs a latitude and longitude")
            rows.append(AssetRow(guid, site, kind, lat, lon))
    return rows


def _opt_str(text: str) -> str | None:
    return text if text != "" else None


def _opt_float(text: str) -> float | None:
    return float(text) if text != "" else None


def read_cycles_csv(path: str | Path) -> list[CycleRecord]:
    """Cycles from a CSV written by write_cycles_csv (or `asset-cycle replay`); ISO times to epoch ms."""
    path = Path(path)
    if not path.is_file():
        raise BundleError(f"{path}: no such file")
    records: list[CycleRecord] = []
    with open(path, encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in ("asset_guid", "site_guid", "cycle_status", "load_start_utc")
                   if c not in (reader.fieldnames or ())]
        if missing:
            raise BundleError(f"{path}:1: missing column(s) {missing}")
        for row in reader:
            where = f"{path}:{reader.line_num}"
            try:
                get = row.get
                kwargs: dict[str, object] = {}
                for column in CYCLE_CSV_COLUMNS:
                    text = (get(column) or "").strip()
                    if column.endswith("_utc"):
                        kwargs[column[:-4] + "_ms"] = iso_to_ms(text) if text else None
                    elif column in ("asset_guid", "site_guid", "cycle_status") or column == "current_segment":
                        kwargs[column] = text
                    elif column in ("loader_asset_guid", "dump_region_guid", "invalid_reason", "outlier_rule"):
                        kwargs[column] = _opt_str(text)
                    elif column == "point_count":
                        kwargs[column] = int(float(text)) if text else 0
                    elif column in ("travel_idle_seconds", "load_travel_distance_m", "empty_travel_distance_m"):
                        kwargs[column] = float(text) if text else 0.0
                    else:
                        kwargs[column] = _opt_float(text)
                records.append(CycleRecord(**kwargs))  # type: ignore[arg-type]
            except (ValueError, TypeError) as exc:
                raise BundleError(f"{where}: {exc}") from exc
    return records


def read_visits_csv(path: str | Path) -> list[ServedVisit]:
    """Served load visits from a CSV written by write_visits_csv."""
    path = Path(path)
    if not path.is_file():
        raise BundleError(f"{path}: no such file")
    visits: list[ServedVisit] = []
    with open(path, encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in VISIT_CSV_COLUMNS if c not in (reader.fieldnames or ())]
        if missing:
            raise BundleError(f"{path}:1: missing column(s) {missing}")
        for row in reader:
            try:
                visit = LoadVisit(row["asset_guid"], row["site_guid"], row["loader_asset_guid"],
                                  iso_to_ms(row["load_start_utc"]), iso_to_ms(row["arrival_utc"]),
                                  iso_to_ms(row["first_stop_utc"]), iso_to_ms(row["departure_utc"]),
                                  row["open_at_end"].strip() == "1")  # fmt: skip
                start = row["service_start_utc"].strip()
                visits.append(ServedVisit(visit, iso_to_ms(start) if start else None, float(row["queue_seconds"])))
            except (ValueError, TypeError, KeyError) as exc:
                raise BundleError(f"{path}:{reader.line_num}: {exc}") from exc
    return visits
