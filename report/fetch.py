"""The report's data: closed cycles (one COPY query into pandas), asset names, loader and truck
positions from PostgreSQL, dump regions from Redis, sampled truck tracks from a telemetry bundle."""

from __future__ import annotations

import contextlib
import io
import math
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd
import redis
from psycopg2 import sql
from psycopg2.extensions import TRANSACTION_STATUS_IDLE, connection, cursor, encodings

from report.model import MapData, ReportError
from state_machine.model import HAUL_TRUCK, LOADER
from state_machine.reference import Region
from state_machine.telemetry import Invalid, parse_record
from stores.postgres import TableNames
from stores.reference import regions_key
from workbench.bundle import BundleError, iter_telemetry_lines, read_reference

MAX_TRACK_POINTS = 1500
TRACK_GAP_S = 600.0

_CYCLE_QUERY_COLUMNS = (
    "asset_guid", "site_guid", "cycle_status", "loader_asset_guid", "dump_region_guid",
    "load_seconds", "load_travel_seconds", "dump_seconds", "empty_travel_seconds", "total_cycle_seconds",
    "invalid_reason", "outlier_rule",
)
_TEXT_COLUMNS = ("asset_guid", "site_guid", "cycle_status", "loader_asset_guid", "dump_region_guid",
                 "invalid_reason", "outlier_rule")


@contextlib.contextmanager
def _reading(conn: connection) -> Iterator[cursor]:
    """A cursor; a transaction this opened (the connection was idle) is rolled back afterwards,
    so read-only queries neither hold locks nor touch a caller's open transaction."""
    was_idle = conn.get_transaction_status() == TRANSACTION_STATUS_IDLE
    try:
        with conn.cursor() as cur:
            yield cur
    finally:
        if was_idle and not conn.autocommit:
            conn.rollback()


def read_query(conn: connection, query: sql.Composable, params: Sequence[Any]) -> pd.DataFrame:
    """A (small) query's rows as a DataFrame with its column names."""
    with _reading(conn) as cur:
        cur.execute(query, params)
        return pd.DataFrame(cur.fetchall(), columns=[d.name for d in cur.description])


def fetch_cycles(conn: connection, names: TableNames, start: datetime, end: datetime,
                 site: str | None = None) -> pd.DataFrame:
    """Closed cycles with load_start_utc in [start, end) (one COPY query) as a DataFrame.

    Times come back as aware UTC pandas timestamps (``load_start_utc``, ``cycle_end_utc``).
    """
    select = sql.SQL(
        "SELECT {cols}, extract(epoch FROM load_start_utc) AS load_start_s, "
        "extract(epoch FROM cycle_end_utc) AS cycle_end_s FROM {table} "
        "WHERE load_start_utc >= %(start)s AND load_start_utc < %(end)s"
    ).format(cols=sql.SQL(", ").join(map(sql.Identifier, _CYCLE_QUERY_COLUMNS)), table=names.table("cycle"))
    params: dict[str, Any] = {"start": start, "end": end}
    if site is not None:
        select = select + sql.SQL(" AND site_guid = %(site)s")
        params["site"] = site

    buffer = io.StringIO()
    with _reading(conn) as cur:
        bound = cur.mogrify(select, params).decode(encodings.get(conn.encoding, "utf-8"))
        cur.copy_expert("COPY (" + bound + ") TO STDOUT WITH (FORMAT csv, HEADER true)", buffer)
    buffer.seek(0)
    df = pd.read_csv(buffer, dtype={c: "string" for c in _TEXT_COLUMNS}, keep_default_na=False,
                     na_values={c: [""] for c in _CYCLE_QUERY_COLUMNS if c not in _TEXT_COLUMNS}
                     | {"load_start_s": [""], "cycle_end_s": [""]})
    for col in _TEXT_COLUMNS:  # CSV NULL is an unquoted empty field; empty strings do not occur in these columns
        df[col] = df[col].replace("", pd.NA)
    df["load_start_utc"] = pd.to_datetime(df.pop("load_start_s"), unit="s", utc=True)
    df["cycle_end_utc"] = pd.to_datetime(df.pop("cycle_end_s"), unit="s", utc=True)
    return df


def fetch_asset_names(conn: connection, names: TableNames, guids: Iterable[str]) -> dict[str, str]:
    """asset_guid -> asset_name for the given assets (only those with a name)."""
    guids = sorted({g for g in guids if isinstance(g, str)})
    if not guids:
        return {}

    with _reading(conn) as cur:
        cur.execute(sql.SQL("SELECT asset_guid, asset_name FROM {} WHERE asset_guid = ANY(%s) "
                            "AND asset_name IS NOT NULL").format(names.table("asset")), (guids,))
        rows = cur.fetchall()
    return {guid: name for guid, name in rows if name}


def fetch_regions(redis_client: redis.Redis, sites: Iterable[str], redis_prefix: str = "",
                  warnings: list[str] | None = None) -> dict[str, list[Region]]:
    """Regions per site from the Redis hashes ``{prefix}site:{site}:regions`` (malformed ones skipped)."""
    warnings = [] if warnings is None else warnings
    out: dict[str, list[Region]] = {}
    for site in sites:
        key = regions_key(site, redis_prefix)
        try:
            values = redis_client.hgetall(key)
        except Exception as exc:  # noqa: BLE001 - regions are optional for the report; say so and go on
            warnings.append(f"regions of site {site} not read from Redis ({type(exc).__name__}: {exc})")
            continue
        regions = []
        for field_name, value in sorted(values.items()):
            try:
                regions.append(Region.from_redis_value(site, value))
            except (ValueError, KeyError, TypeError) as exc:
                warnings.append(f"skipped malformed region {field_name!r} of {key}: {exc}")
        out[site] = sorted(regions, key=lambda r: r.region_guid)
    return out


def fetch_map_data(conn: connection, names: TableNames, sites: Sequence[str]) -> dict[str, MapData]:
    """Loaders (asset tables) and latest truck positions (process info) per site; no regions."""

    out = {site: MapData(site) for site in sites}
    if not sites:
        return out
    with _reading(conn) as cur:
        cur.execute(sql.SQL(
            "SELECT a.asset_guid, COALESCE(a.asset_name, a.asset_guid), COALESCE(i.site_guid, a.site_guid), "
            "i.latitude, i.longitude FROM {asset} a JOIN {info} i ON i.asset_guid = a.asset_guid "
            "WHERE a.asset_type = %s AND COALESCE(i.site_guid, a.site_guid) = ANY(%s) "
            "AND i.latitude IS NOT NULL AND i.longitude IS NOT NULL ORDER BY a.asset_guid"
        ).format(asset=names.table("asset"), info=names.table("asset_info")), (LOADER, list(sites)))
        for _guid, label, site, lat, lon in cur.fetchall():
            if math.isfinite(lat) and math.isfinite(lon):
                out[site].loaders.append((label, float(lat), float(lon)))
        cur.execute(sql.SQL(
            "SELECT asset_guid, site_guid, latitude, longitude, current_segment, last_event_utc FROM {} "
            "WHERE site_guid = ANY(%s) AND latitude IS NOT NULL AND longitude IS NOT NULL ORDER BY asset_guid"
        ).format(names.table("process_info")), (list(sites),))
        for guid, site, lat, lon, segment, last in cur.fetchall():
            out[site].trucks.append((guid, float(lat), float(lon), segment, last))
    return out


def add_bundle_tracks(maps: dict[str, MapData], bundle: Path, start: datetime, end: datetime,
                      warnings: list[str] | None = None) -> None:
    """Sampled truck tracks (window, mapped sites) from a bundle's telemetry.jsonl into ``maps``.

    The bundle's regions/loaders fill in for sites whose reference data was not found.
    """
    warnings = [] if warnings is None else warnings
    try:
        reference, assets = read_reference(bundle)
    except (BundleError, OSError) as exc:
        raise ReportError(f"bundle {bundle}: {exc}") from None
    trucks = {row[0] for row in assets if row[2] == HAUL_TRUCK}
    for site, data in maps.items():
        ref = reference.sites.get(site)
        if ref is None:
            continue
        if not data.regions:
            data.regions = [(r.region_name, r.region_type, list(r.points)) for r in ref.regions]
        if not data.loaders:
            data.loaders = [(ld.asset_guid, ld.latitude, ld.longitude) for ld in ref.loaders]
    lo, hi = int(start.timestamp() * 1000), int(end.timestamp() * 1000)
    points: dict[str, list[tuple[int, float, float]]] = {}
    site_of: dict[str, str] = {}
    try:
        for _, line in iter_telemetry_lines(bundle):
            p = parse_record(line)
            if isinstance(p, Invalid) or p.asset_guid not in trucks or p.site_guid not in maps:
                continue
            if lo <= p.ts_ms < hi:
                points.setdefault(p.asset_guid, []).append((p.ts_ms, p.latitude, p.longitude))
                site_of[p.asset_guid] = p.site_guid
    except (BundleError, OSError) as exc:
        raise ReportError(f"bundle {bundle}: {exc}") from None
    for truck, pts in points.items():
        maps[site_of[truck]].tracks[truck] = _sampled_runs(pts)
    if not points:
        warnings.append(f"bundle {bundle}: no truck telemetry in the window for the mapped sites")


def _sampled_runs(points: list[tuple[int, float, float]]) -> list[list[tuple[float, float]]]:
    """A truck's (ts, lat, lon) points, sampled down to about MAX_TRACK_POINTS, as runs of (lat, lon)
    split where the truck did not report for a while (TRACK_GAP_S per sampling step)."""
    points.sort()
    step = max(1, math.ceil(len(points) / MAX_TRACK_POINTS))
    runs: list[list[tuple[float, float]]] = [[]]
    prev = None
    for ts, lat, lon in points[::step]:
        if prev is not None and (ts - prev) / 1000.0 > TRACK_GAP_S * step:
            runs.append([])
        runs[-1].append((lat, lon))
        prev = ts
    return [r for r in runs if len(r) > 1]
