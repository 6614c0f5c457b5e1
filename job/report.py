"""Cycle report: KPIs (CSV) and a self-contained HTML page with plots of the closed cycles of a window.

Data: one SQL query (COPY of the final cycle table, cycles whose ``load_start_utc`` is in
``[start, end)``, optionally one site) into pandas; loader positions/names from the asset tables,
dump regions from Redis (``site:{site_guid}:regions``), truck positions from the process-info
table or, with a telemetry bundle, sampled truck tracks. Output in ``out_dir``:

* ``index.html``  title, window, KPI tables, the plots (embedded as data URIs) and short notes;
* ``kpis.csv``    per overall/site/shift type/shift/truck/loader/dump region: cycle counts by
  status, INVALID/OUTLIER shares and time statistics in minutes (COMPLETE cycles only);
* ``cycle_time_hist.png``, ``segments_by_truck.png``, ``segments_by_loader.png``,
  ``cycles_per_hour.png``, ``status_mix.png``, ``map_<site>.png``.

Plots are drawn with matplotlib's object API on the Agg canvas (no pyplot global state);
``build_report`` applies the report style (font sizes, grid) with ``matplotlib.rc_context``.
"""

from __future__ import annotations

import base64
import contextlib
import html
import io
import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from state_machine.model import COMPLETE, HAUL_TRUCK, INVALID, OUTLIER
from stores.postgres import TableNames

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from state_machine.reference import Region


STATUSES = (COMPLETE, OUTLIER, INVALID)
STATUS_COLORS = {COMPLETE: "#4477AA", OUTLIER: "#EEAA33", INVALID: "#CC3344"}
SEGMENTS = ("load", "load_travel", "dump", "empty_travel")
SEGMENT_COLUMNS = {
    "load": "load_seconds",
    "load_travel": "load_travel_seconds",
    "dump": "dump_seconds",
    "empty_travel": "empty_travel_seconds",
}
SEGMENT_LABELS = {"load": "load", "load_travel": "loaded travel", "dump": "dump", "empty_travel": "empty travel"}
SEGMENT_COLORS = {"load": "#1B9E77", "load_travel": "#D95F02", "dump": "#7570B3", "empty_travel": "#E7298A"}
# Live segment names (process info) -> the report's segment keys (same colours on the map).
LIVE_SEGMENTS = {"LOAD_TIME": "load", "LOAD_TRAVEL": "load_travel", "DUMP_TIME": "dump",
                 "EMPTY_TRAVEL": "empty_travel"}
NO_SEGMENT_COLOR = "#888888"

KPI_DIMENSIONS = ("overall", "site", "shift_type", "shift", "truck", "loader", "dump_region")
KPI_COLUMNS = (
    "dimension", "key", "name", "cycles", "complete", "outlier", "invalid",
    "outlier_share_pct", "invalid_share_pct",
    "total_mean_min", "total_median_min", "total_p90_min",
    *[f"{seg}_{stat}_min" for seg in SEGMENTS for stat in ("mean", "median")],
)
NONE_KEY = "(none)"
DAY_SHIFT_START_H = 6
SHIFT_HOURS = 12
MAX_BARS = 40
MAX_MAP_SITES = 4
MAX_TRACK_POINTS = 1500
TRACK_GAP_S = 600.0

_CYCLE_QUERY_COLUMNS = (
    "asset_guid", "site_guid", "cycle_status", "loader_asset_guid", "dump_region_guid",
    "load_seconds", "load_travel_seconds", "dump_seconds", "empty_travel_seconds", "total_cycle_seconds",
    "invalid_reason", "outlier_rule",
)
_PLOT_RC = {
    "font.size": 11, "axes.titlesize": 13, "axes.titleweight": "bold", "axes.labelsize": 11,
    "xtick.labelsize": 10, "ytick.labelsize": 10, "legend.fontsize": 10, "figure.dpi": 100,
    "axes.spines.top": False, "axes.spines.right": False, "axes.grid": True, "grid.alpha": 0.3,
    "axes.axisbelow": True,
}
_DPI = 110
FIG_WIDTH = 12.0  # inches; every plot has the same width so the page lines up


class ReportError(ValueError):
    """Invalid report request (bad window, unknown time zone, unreadable bundle)."""


@dataclass(frozen=True, slots=True)
class ReportRequest:
    """What to report: window [start, end) (aware datetimes), optional site, output directory."""

    start: datetime
    end: datetime
    out_dir: Path
    site: str | None = None
    tz: str = "UTC"
    bundle: Path | None = None
    redis_prefix: str = ""

    def __post_init__(self) -> None:
        if self.start.tzinfo is None or self.end.tzinfo is None:
            raise ReportError("--from/--to must carry a time zone (or be converted first)")
        if not self.start < self.end:
            raise ReportError(f"empty window: --from {self.start.isoformat()} is not before --to "
                              f"{self.end.isoformat()}")
        zone_info(self.tz)


@dataclass(slots=True)
class MapData:
    """Geography of one site in lon/lat: regions, loaders, trucks (latest positions or tracks)."""

    site_guid: str
    regions: list[tuple[str, str, list[tuple[float, float]]]] = field(default_factory=list)
    """(name, type, [(lon, lat), ...])"""
    loaders: list[tuple[str, float, float]] = field(default_factory=list)
    """(label, lat, lon)"""
    trucks: list[tuple[str, float, float, str | None, datetime | None]] = field(default_factory=list)
    """latest positions: (asset_guid, lat, lon, current_segment, last_event_utc)"""
    tracks: dict[str, list[list[tuple[float, float]]]] = field(default_factory=dict)
    """truck -> runs of (lat, lon) (split at reporting gaps)"""


@dataclass(slots=True)
class ReportResult:
    """What ``build_report`` wrote."""

    index_html: Path
    kpis_csv: Path
    cycles: int
    images: list[Path] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


# ----------------------------------------------------------------------------- helpers

def zone_info(tz: str) -> Any:
    """A tzinfo for an IANA name ('UTC', 'Australia/Perth'); ReportError when unknown."""
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ReportError(f"unknown time zone {tz!r}") from exc


def parse_time(text: str, tz: str = "UTC") -> datetime:
    """ISO 8601 date or date-time; without an offset it is taken in ``tz``. ReportError when invalid."""
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ReportError(f"not an ISO 8601 date/time: {text!r}") from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=zone_info(tz))
    return value


def _fmt_time(value: datetime, tz: str) -> str:
    return f"{value.astimezone(zone_info(tz)):%Y-%m-%d %H:%M} {tz}"


# ----------------------------------------------------------------------------- data access

@contextlib.contextmanager
def _reading(conn: Any) -> Iterator[Any]:
    """A cursor; a transaction this opened (the connection was idle) is rolled back afterwards,
    so read-only queries neither hold locks nor touch a caller's open transaction."""
    from psycopg2.extensions import TRANSACTION_STATUS_IDLE

    was_idle = conn.get_transaction_status() == TRANSACTION_STATUS_IDLE
    try:
        with conn.cursor() as cur:
            yield cur
    finally:
        if was_idle and not conn.autocommit:
            conn.rollback()


def fetch_cycles(conn: Any, names: TableNames, start: datetime, end: datetime,
                 site: str | None = None) -> pd.DataFrame:
    """Closed cycles with load_start_utc in [start, end) (one COPY query) as a DataFrame.

    Times come back as aware UTC pandas timestamps (``load_start_utc``, ``cycle_end_utc``).
    """
    import pandas as pd
    from psycopg2 import sql

    select = sql.SQL(
        "SELECT {cols}, extract(epoch FROM load_start_utc) AS load_start_s, "
        "extract(epoch FROM cycle_end_utc) AS cycle_end_s FROM {table} "
        "WHERE load_start_utc >= %(start)s AND load_start_utc < %(end)s"
    ).format(cols=sql.SQL(", ").join(map(sql.Identifier, _CYCLE_QUERY_COLUMNS)), table=names.table("cycle"))
    params: dict[str, Any] = {"start": start, "end": end}
    if site is not None:
        select = select + sql.SQL(" AND site_guid = %(site)s")
        params["site"] = site
    from psycopg2.extensions import encodings

    buffer = io.StringIO()
    with _reading(conn) as cur:
        bound = cur.mogrify(select, params).decode(encodings.get(conn.encoding, "utf-8"))
        cur.copy_expert("COPY (" + bound + ") TO STDOUT WITH (FORMAT csv, HEADER true)", buffer)
    buffer.seek(0)
    text_cols = ("asset_guid", "site_guid", "cycle_status", "loader_asset_guid", "dump_region_guid",
                 "invalid_reason", "outlier_rule")
    df = pd.read_csv(buffer, dtype={c: "string" for c in text_cols}, keep_default_na=False,
                     na_values={c: [""] for c in _CYCLE_QUERY_COLUMNS if c not in text_cols}
                     | {"load_start_s": [""], "cycle_end_s": [""]})
    for col in text_cols:  # CSV NULL is an unquoted empty field; empty strings do not occur in these columns
        df[col] = df[col].replace("", pd.NA)
    df["load_start_utc"] = pd.to_datetime(df.pop("load_start_s"), unit="s", utc=True)
    df["cycle_end_utc"] = pd.to_datetime(df.pop("cycle_end_s"), unit="s", utc=True)
    return df


def fetch_asset_names(conn: Any, names: TableNames, guids: Iterable[str]) -> dict[str, str]:
    """asset_guid -> asset_name for the given assets (only those with a name)."""
    guids = sorted({g for g in guids if isinstance(g, str)})
    if not guids:
        return {}
    from psycopg2 import sql

    with _reading(conn) as cur:
        cur.execute(sql.SQL("SELECT asset_guid, asset_name FROM {} WHERE asset_guid = ANY(%s) "
                            "AND asset_name IS NOT NULL").format(names.table("asset")), (guids,))
        rows = cur.fetchall()
    return {guid: name for guid, name in rows if name}


def fetch_regions(redis_client: Any, sites: Iterable[str], redis_prefix: str = "",
                  warnings: list[str] | None = None) -> dict[str, list[Region]]:
    """Regions per site from the Redis hashes ``{prefix}site:{site}:regions`` (malformed ones skipped)."""
    from state_machine.reference import Region
    from stores.reference import regions_key

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


def fetch_map_data(conn: Any, names: TableNames, sites: Sequence[str]) -> dict[str, MapData]:
    """Loaders (asset tables) and latest truck positions (process info) per site; no regions."""
    from psycopg2 import sql

    from state_machine.model import LOADER

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
    from state_machine.telemetry import Invalid, parse_record
    from workbench.bundle import BundleError, iter_telemetry_lines, read_reference

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
        pts.sort()
        step = max(1, math.ceil(len(pts) / MAX_TRACK_POINTS))
        runs: list[list[tuple[float, float]]] = [[]]
        prev = None
        for ts, lat, lon in pts[::step]:
            if prev is not None and (ts - prev) / 1000.0 > TRACK_GAP_S * step:
                runs.append([])
            runs[-1].append((lat, lon))
            prev = ts
        maps[site_of[truck]].tracks[truck] = [r for r in runs if len(r) > 1]
    if not points:
        warnings.append(f"bundle {bundle}: no truck telemetry in the window for the mapped sites")


# ----------------------------------------------------------------------------- KPIs

def prepare(df: pd.DataFrame, tz: str = "UTC") -> pd.DataFrame:
    """Add minute columns, local start time, shift and shift type to a fetch_cycles frame."""
    import pandas as pd

    df = df.copy()
    df["total_min"] = df["total_cycle_seconds"] / 60.0
    for seg, col in SEGMENT_COLUMNS.items():
        df[f"{seg}_min"] = df[col] / 60.0
    local = df["load_start_utc"].dt.tz_convert(zone_info(tz)).dt.tz_localize(None)  # wall-clock time
    df["local_start"] = local
    shifted = local - pd.Timedelta(hours=DAY_SHIFT_START_H)  # day shift -> 00-12 h, night -> 12-24 h
    is_day = shifted.dt.hour < SHIFT_HOURS
    df["shift_type"] = is_day.map({True: "day", False: "night"}).astype("string")
    df["shift"] = shifted.dt.strftime("%Y-%m-%d") + " " + df["shift_type"]
    return df


def _dimension_keys(df: pd.DataFrame) -> dict[str, pd.Series]:
    import pandas as pd

    return {
        "overall": pd.Series("all", index=df.index, dtype="string"),
        "site": df["site_guid"].astype("string"),
        "shift_type": df["shift_type"],
        "shift": df["shift"],
        "truck": df["asset_guid"].astype("string"),
        "loader": df["loader_asset_guid"].astype("string").fillna(NONE_KEY),
        "dump_region": df["dump_region_guid"].astype("string").fillna(NONE_KEY),
    }


_TIME_COLUMNS = ("total_min", *[f"{seg}_min" for seg in SEGMENTS])


def group_kpis(df: pd.DataFrame, key: pd.Series) -> pd.DataFrame:
    """KPI columns (see KPI_COLUMNS, without dimension/key/name) per value of ``key`` (index: the keys)."""
    import numpy as np
    import pandas as pd

    codes, uniques = pd.factorize(key.to_numpy(dtype=object), sort=True)
    status = df["cycle_status"].to_numpy(dtype=object)
    flags = pd.DataFrame({s.lower(): status == s for s in STATUSES})
    counts = flags.groupby(codes).sum()
    out = pd.DataFrame({"cycles": np.bincount(codes, minlength=len(uniques))})
    for status_name in STATUSES:
        out[status_name.lower()] = counts[status_name.lower()].reindex(out.index, fill_value=0)
    out["outlier_share_pct"] = 100.0 * out["outlier"] / out["cycles"]
    out["invalid_share_pct"] = 100.0 * out["invalid"] / out["cycles"]
    complete = flags["complete"].to_numpy()
    times = pd.DataFrame({c: df[c].to_numpy(dtype=float)[complete] for c in _TIME_COLUMNS})
    g = times.groupby(codes[complete])
    means, medians = g.mean(), g.median()
    out["total_mean_min"] = means["total_min"]
    out["total_median_min"] = medians["total_min"]
    out["total_p90_min"] = g["total_min"].quantile(0.9)
    for seg in SEGMENTS:
        out[f"{seg}_mean_min"] = means[f"{seg}_min"]
        out[f"{seg}_median_min"] = medians[f"{seg}_min"]
    out.index = pd.Index(uniques, name="key")
    return out


def compute_kpis(df: pd.DataFrame, names: dict[str, str] | None = None) -> pd.DataFrame:
    """The kpis.csv table for a ``prepare``d frame: one block of rows per KPI_DIMENSIONS entry.

    Time statistics use COMPLETE cycles only (percentiles interpolate linearly, like SQL
    percentile_cont); shares are percentages of all cycles of the group.
    """
    import pandas as pd

    names = names or {}
    if df.empty:
        row = {col: pd.NA for col in KPI_COLUMNS}
        row.update(dimension="overall", key="all", name="all", cycles=0, complete=0, outlier=0, invalid=0)
        return pd.DataFrame([row], columns=list(KPI_COLUMNS))
    blocks = []
    for dimension, key in _dimension_keys(df).items():
        block = group_kpis(df, key).reset_index()
        block.insert(0, "dimension", dimension)
        block.insert(2, "name", [names.get(k, k) for k in block["key"]])
        blocks.append(block)
    table = pd.concat(blocks, ignore_index=True)
    return table[list(KPI_COLUMNS)]


def write_kpis_csv(kpis: pd.DataFrame, path: Path) -> None:
    """kpis.csv (floats rounded to 4 decimals, empty cell when undefined)."""
    kpis.to_csv(path, index=False, float_format="%.4f")


# ----------------------------------------------------------------------------- plots

def _new_figure(width: float, height: float) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=_DPI, layout="constrained")
    FigureCanvasAgg(fig)  # Agg canvas: no display, no pyplot state
    return fig


def _save(fig: Figure, path: Path) -> Path:
    fig.savefig(path, dpi=_DPI, facecolor="white")
    return path


def plot_cycle_time_hist(df: pd.DataFrame, path: Path) -> Path:
    """Histogram of total cycle minutes (COMPLETE) with median and p90 lines."""
    import numpy as np

    x = df.loc[df["cycle_status"] == COMPLETE, "total_min"].dropna().to_numpy()
    fig = _new_figure(FIG_WIDTH, 5)
    ax = fig.add_subplot()
    if len(x):
        edges = np.histogram_bin_edges(x, bins="auto")
        if len(edges) > 61:
            edges = np.linspace(x.min(), x.max(), 61)
        ax.hist(x, bins=edges, color=STATUS_COLORS[COMPLETE], edgecolor="white", linewidth=0.6,
                label=f"COMPLETE cycles (n={len(x):,})")
        median, p90 = float(np.median(x)), float(np.quantile(x, 0.9))
        ax.axvline(median, color="#222222", linestyle="--", linewidth=2, label=f"median {median:.1f} min")
        ax.axvline(p90, color=STATUS_COLORS[INVALID], linestyle=":", linewidth=2.4, label=f"p90 {p90:.1f} min")
        ax.legend(loc="upper right", frameon=True)
    else:
        _no_data(ax, "no COMPLETE cycles")
    ax.set_title("Cycle-time distribution (COMPLETE cycles)")
    ax.set_xlabel("total cycle time (min)")
    ax.set_ylabel("cycles")
    return _save(fig, path)


def _no_data(ax: Axes, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, fontsize=13, color="#666666")
    ax.set_xticks([])
    ax.set_yticks([])


def plot_segments(kpis: pd.DataFrame, dimension: str, what: str, path: Path,
                  max_bars: int = MAX_BARS) -> Path:
    """Horizontal stacked bars of mean segment minutes (COMPLETE cycles) per truck or loader."""
    rows = kpis[(kpis["dimension"] == dimension) & (kpis["complete"] > 0)]
    total_groups = len(rows)
    if total_groups > max_bars:  # keep the busiest
        rows = rows.nlargest(max_bars, "complete")
    rows = rows.assign(_stack=rows[[f"{s}_mean_min" for s in SEGMENTS]].fillna(0).sum(axis=1))
    rows = rows.sort_values("_stack", ascending=True)  # slowest at the top
    n = len(rows)
    fig = _new_figure(FIG_WIDTH, max(3.2, 1.6 + 0.34 * n))
    ax = fig.add_subplot()
    title = f"Mean segment times per {what} (COMPLETE cycles)"
    if total_groups > n:
        title += f" - {n} of {total_groups} {what}s with most cycles"
    fig.suptitle(title, fontsize=_PLOT_RC["axes.titlesize"], fontweight="bold")
    if n == 0:
        _no_data(ax, "no COMPLETE cycles")
        return _save(fig, path)
    labels = [str(v) for v in rows["name"]]
    y = list(range(n))
    left = [0.0] * n
    for seg in SEGMENTS:
        values = rows[f"{seg}_mean_min"].fillna(0).tolist()
        ax.barh(y, values, left=left, color=SEGMENT_COLORS[seg], label=SEGMENT_LABELS[seg], height=0.72,
                edgecolor="white", linewidth=0.5)
        left = [a + b for a, b in zip(left, values, strict=True)]
    xmax = max(left) if left else 1.0
    for yi, total, count in zip(y, left, rows["complete"], strict=True):
        ax.text(total + xmax * 0.01, yi, f"{total:.1f} min  (n={int(count)})", va="center", fontsize=9,
                color="#333333")
    ax.set_xlim(0, xmax * 1.22)
    ax.set_yticks(y, labels)
    ax.set_ylim(-0.6, n - 0.4)
    ax.grid(axis="y", visible=False)
    ax.set_xlabel("mean time per cycle (min)")
    ax.set_ylabel(what)
    handles, texts = ax.get_legend_handles_labels()
    fig.legend(handles, texts, ncols=4, loc="outside lower center", frameon=False)
    return _save(fig, path)


def _bin_hours(span_hours: float) -> int:
    for hours in (1, 2, 3, 6, 12, 24):
        if span_hours / hours <= 96:
            return hours
    return 24 * max(1, math.ceil(span_hours / 24 / 96))


def plot_cycles_per_hour(df: pd.DataFrame, start: datetime, end: datetime, tz: str, path: Path) -> Path:
    """Bars of cycles per hour (by load start, local wall-clock time), stacked by status."""
    import matplotlib.dates as mdates
    import pandas as pd

    hours = _bin_hours((end - start).total_seconds() / 3600.0)
    freq = f"{hours}h"
    zone = zone_info(tz)
    lo = pd.Timestamp(start.astimezone(zone).replace(tzinfo=None)).floor(freq)
    hi = pd.Timestamp(end.astimezone(zone).replace(tzinfo=None)).ceil(freq)
    index = pd.date_range(lo, hi, freq=freq, inclusive="left")
    binned = df["local_start"].dt.floor(freq)
    counts = (pd.crosstab(binned, df["cycle_status"]).reindex(index=index, fill_value=0)
              .reindex(columns=list(STATUSES), fill_value=0))
    fig = _new_figure(FIG_WIDTH, 4.8)
    ax = fig.add_subplot()
    width = pd.Timedelta(hours=hours) * 0.85
    bottom = None
    for status in STATUSES:
        values = counts[status].to_numpy()
        ax.bar(counts.index + pd.Timedelta(hours=hours) / 2, values, width=width, bottom=bottom,
               color=STATUS_COLORS[status], label=status)
        bottom = values if bottom is None else bottom + values
    unit = {1: "hour", 24: "day"}.get(hours, f"{hours} h")
    ax.set_title(f"Cycles per {unit} by status (binned by load start)")
    ax.set_xlabel(f"time ({tz})")
    ax.set_ylabel(f"cycles per {unit}")
    locator = mdates.AutoDateLocator(minticks=4, maxticks=12)
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
    ax.set_xlim(index[0] if len(index) else lo, hi)
    ax.yaxis.get_major_locator().set_params(integer=True)
    handles, texts = ax.get_legend_handles_labels()
    fig.legend(handles, texts, ncols=3, loc="outside lower center", frameon=False)
    ax.grid(axis="x", visible=False)
    return _save(fig, path)


def plot_status_mix(df: pd.DataFrame, path: Path) -> Path:
    """Status counts with percentages, and the INVALID reasons / OUTLIER rules behind them."""
    counts = df["cycle_status"].value_counts().reindex(list(STATUSES), fill_value=0)
    total = int(counts.sum())
    fig = _new_figure(FIG_WIDTH, 4.2)
    left, right = fig.subplots(1, 2, width_ratios=[1, 1.2])
    y = list(range(len(STATUSES)))[::-1]
    left.barh(y, counts.to_numpy(), color=[STATUS_COLORS[s] for s in STATUSES], height=0.6)
    left.set_yticks(y, list(STATUSES))
    xmax = max(1, int(counts.max()))
    for yi, value in zip(y, counts.to_numpy(), strict=True):
        share = 100.0 * value / total if total else 0.0
        left.text(value + xmax * 0.02, yi, f"{int(value):,}  ({share:.1f} %)", va="center", fontsize=10)
    left.set_xlim(0, xmax * 1.45)
    left.set_title(f"Status mix ({total:,} cycles)")
    left.set_xlabel("cycles")
    left.grid(axis="y", visible=False)

    causes = []
    for status, col in ((OUTLIER, "outlier_rule"), (INVALID, "invalid_reason")):
        sub = df.loc[df["cycle_status"] == status, col].fillna("(unspecified)").value_counts()
        causes += [(f"{status}: {reason}", int(n), STATUS_COLORS[status]) for reason, n in sub.items()]
    right.set_title("Why cycles are OUTLIER / INVALID")
    if causes:
        causes.sort(key=lambda c: c[1])
        ry = list(range(len(causes)))
        right.barh(ry, [c[1] for c in causes], color=[c[2] for c in causes], height=0.6)
        right.set_yticks(ry, [c[0] for c in causes])
        cmax = max(c[1] for c in causes)
        for yi, (_, n, _) in zip(ry, causes, strict=True):
            right.text(n + cmax * 0.02, yi, f"{n:,}", va="center", fontsize=10)
        right.set_xlim(0, cmax * 1.2)
        right.set_xlabel("cycles")
        right.xaxis.get_major_locator().set_params(integer=True)
        right.grid(axis="y", visible=False)
    else:
        _no_data(right, "none: every cycle is COMPLETE")
    return _save(fig, path)


def _nice_length(span_m: float) -> float:
    target = max(span_m / 5.0, 1.0)
    exp = 10 ** math.floor(math.log10(target))
    for mult in (5, 2, 1):
        if mult * exp <= target:
            return mult * exp
    return exp


def plot_map(data: MapData, path: Path, title_suffix: str = "") -> Path:
    """Dump regions, loaders and truck tracks/positions in metres east/north of the site centre."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch
    from matplotlib.patches import Polygon as MplPolygon
    from mpl_toolkits.axes_grid1.anchored_artists import AnchoredSizeBar
    from pyproj import Transformer

    track_pts = [pt for runs in data.tracks.values() for run in runs for pt in run]
    lats = ([ld[1] for ld in data.loaders] + [lat for _, _, pts in data.regions for _, lat in pts]
            + [t[1] for t in data.trucks] + [p[0] for p in track_pts])
    lons = ([ld[2] for ld in data.loaders] + [lon for _, _, pts in data.regions for lon, _ in pts]
            + [t[2] for t in data.trucks] + [p[1] for p in track_pts])
    title = f"Site {data.site_guid}: dump regions, loaders and trucks{title_suffix}"
    if not lats:
        fig = _new_figure(FIG_WIDTH, 6)
        ax = fig.add_subplot(title=title)
        _no_data(ax, "no reference data or positions for this site")
        return _save(fig, path)
    lat0 = (min(lats) + max(lats)) / 2.0
    lon0 = (min(lons) + max(lons)) / 2.0
    proj = Transformer.from_crs("EPSG:4326", f"+proj=aeqd +lat_0={lat0} +lon_0={lon0} +datum=WGS84 +units=m",
                                always_xy=True)
    all_x, all_y = proj.transform(lons, lats)
    # figure shaped like the site (padded extents below), within sensible bounds
    aspect = (max(all_y) - min(all_y) + 1.0) * 1.22 / ((max(all_x) - min(all_x) + 1.0) * 1.22)
    fig = _new_figure(FIG_WIDTH, min(12.0, max(5.5, 9.5 * aspect)) + 1.6)
    ax = fig.add_subplot(title=title)
    handles: list[Any] = []
    styles = {True: {"fc": "#C8934A", "alpha": 0.6, "ec": "#6B4A1C", "hatch": None, "text": "#3D2A0E"},
              False: {"fc": "#BBBBBB", "alpha": 0.35, "ec": "#666666", "hatch": "//", "text": "#444444"}}
    seen_types: set[str] = set()
    for name, kind, pts in data.regions:
        style = styles[kind == "dump"]
        xs, ys = proj.transform([p[0] for p in pts], [p[1] for p in pts])
        ax.add_patch(MplPolygon(list(zip(xs, ys, strict=True)), closed=True, facecolor=style["fc"],
                                alpha=style["alpha"], edgecolor=style["ec"], linewidth=1.4, hatch=style["hatch"],
                                zorder=1))
        ax.annotate(name, (sum(xs) / len(xs), min(ys)), xytext=(0, -4), textcoords="offset points", ha="center",
                    va="top", fontsize=9, color=style["text"], zorder=5,
                    bbox={"boxstyle": "round,pad=0.2", "fc": "white", "ec": "none", "alpha": 0.75})
        if kind not in seen_types:
            seen_types.add(kind)
            handles.append(Patch(facecolor=style["fc"], edgecolor=style["ec"], hatch=style["hatch"],
                                 alpha=style["alpha"],
                                 label="dump region" if kind == "dump" else f"{kind or 'other'} region"))
    track_count = 0
    for runs in data.tracks.values():
        for run in runs:
            xs, ys = proj.transform([p[1] for p in run], [p[0] for p in run])
            ax.plot(xs, ys, color="#3B6FB6", linewidth=0.7, alpha=0.3, zorder=2)
        track_count += bool(runs)
    if track_count:
        handles.append(Line2D([], [], color="#3B6FB6", linewidth=1.5, alpha=0.7,
                              label=f"truck tracks, sampled ({track_count} trucks)"))
    if data.trucks and not track_count:
        segs = [LIVE_SEGMENTS.get(t[3] or "") for t in data.trucks]
        xs, ys = proj.transform([t[2] for t in data.trucks], [t[1] for t in data.trucks])
        colors = [SEGMENT_COLORS[s] if s else NO_SEGMENT_COLOR for s in segs]
        ax.scatter(xs, ys, marker="o", s=50, c=colors, edgecolor="black", linewidth=0.6, zorder=8)
        for seg in [*SEGMENTS, None]:
            if seg in segs:
                color = SEGMENT_COLORS[seg] if seg else NO_SEGMENT_COLOR
                handles.append(Line2D([], [], marker="o", linestyle="", markerfacecolor=color,
                                      markeredgecolor="black", markersize=8,
                                      label=f"truck: {SEGMENT_LABELS[seg] if seg else 'no cycle yet'}"))
    if data.loaders:
        xs, ys = proj.transform([ld[2] for ld in data.loaders], [ld[1] for ld in data.loaders])
        ax.scatter(xs, ys, marker="^", s=170, color="#111111", edgecolor="white", linewidth=1.2, zorder=7)
        for (label, _, _), x, y in zip(data.loaders, xs, ys, strict=True):
            ax.annotate(label, (x, y), xytext=(8, 6), textcoords="offset points", fontsize=9, zorder=9,
                        fontweight="bold", bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none",
                                                 "alpha": 0.8})
        handles.append(Line2D([], [], marker="^", linestyle="", color="#111111", markersize=10,
                              label=f"loader ({len(data.loaders)})"))
    # limits: every feature plus room for labels (right/below) and the scale bar (bottom left)
    x_lo, x_hi, y_lo, y_hi = min(all_x), max(all_x), min(all_y), max(all_y)
    span = max(x_hi - x_lo, y_hi - y_lo, 200.0)
    ax.update_datalim([(x_lo - 0.06 * span, y_lo - 0.16 * span), (x_hi + 0.16 * span, y_hi + 0.06 * span)])
    ax.margins(0)
    ax.autoscale_view()
    ax.set_aspect("equal", adjustable="datalim")
    ax.set_xlabel("metres east of site centre (m)")
    ax.set_ylabel("metres north of site centre (m)")
    ax.ticklabel_format(style="plain", useOffset=False)
    fig.canvas.draw()  # resolve the equal-aspect limits before sizing the scale bar
    x0, x1 = ax.get_xlim()
    length = _nice_length(x1 - x0)
    label = f"{length / 1000:g} km" if length >= 1000 else f"{length:g} m"
    ax.add_artist(AnchoredSizeBar(ax.transData, length, label, "lower left", pad=0.5, borderpad=0.6,
                                  sep=5, frameon=True, size_vertical=(x1 - x0) / 250, color="black",
                                  fontproperties={"size": 10}))
    if handles:
        fig.legend(handles=handles, loc="outside lower center", ncols=min(4, len(handles)), frameon=False)
    return _save(fig, path)


# ----------------------------------------------------------------------------- HTML

_CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px auto;max-width:1320px;
color:#222;padding:0 16px;line-height:1.45}
h1{margin-bottom:4px}h2{margin-top:36px;border-bottom:2px solid #e2e2e2;padding-bottom:4px}
.meta{color:#555;margin-top:0}
.cards{display:flex;flex-wrap:wrap;gap:12px;margin:16px 0}
.card{background:#f5f7fa;border:1px solid #e1e5ea;border-radius:8px;padding:10px 16px;min-width:130px}
.card .v{font-size:24px;font-weight:600}.card .k{color:#555;font-size:13px}
table{border-collapse:collapse;margin:8px 0 16px;font-size:13px}
th,td{border:1px solid #ddd;padding:4px 8px;text-align:right}th{background:#f0f2f5}
td:first-child,th:first-child{text-align:left}
figure{margin:12px 0 28px}figure img{max-width:100%;border:1px solid #eee}
figcaption{color:#444;font-size:14px;max-width:1000px}
.empty{background:#fff8e1;border:1px solid #f0d68a;padding:16px;border-radius:8px;font-size:16px}
.warn{color:#8a5a00}
"""

_TABLE_COLUMNS = (
    ("name", "name"), ("cycles", "cycles"), ("complete", "COMPLETE"), ("outlier_share_pct", "OUTLIER %"),
    ("invalid_share_pct", "INVALID %"), ("total_mean_min", "mean min"), ("total_median_min", "median min"),
    ("total_p90_min", "p90 min"), ("load_mean_min", "load"), ("load_travel_mean_min", "loaded travel"),
    ("dump_mean_min", "dump"), ("empty_travel_mean_min", "empty travel"),
)


def _cell(value: Any, col: str) -> str:
    import pandas as pd

    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return "&ndash;"
    if isinstance(value, float):
        return f"{value:.1f}" if col.endswith("_pct") else f"{value:.2f}"
    if isinstance(value, int) or hasattr(value, "is_integer"):
        return f"{int(value):,}"
    return html.escape(str(value))


def _kpi_table(kpis: pd.DataFrame, dimension: str, first_header: str) -> str:
    rows = kpis[kpis["dimension"] == dimension]
    head = "".join(f"<th>{html.escape(first_header if c == 'name' else h)}</th>" for c, h in _TABLE_COLUMNS)
    body = []
    for rec in rows.to_dict("records"):
        body.append("<tr>" + "".join(f"<td>{_cell(rec[c], c)}</td>" for c, _ in _TABLE_COLUMNS) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _img(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{html.escape(alt)}">'


def _figure(path: Path, alt: str, caption: str) -> str:
    return f"<figure>{_img(path, alt)}<figcaption>{caption}</figcaption></figure>"


def render_html(request: ReportRequest, kpis: pd.DataFrame, images: dict[str, Path], cycles: int,
                source: str, warnings: Sequence[str]) -> str:
    """The report page (self-contained: CSS inline, images as data URIs)."""
    tz = request.tz
    site = request.site or "all sites"
    title = f"Haul cycle report - {site}"
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        f"<p class='meta'>Window: <b>{html.escape(_fmt_time(request.start, tz))}</b> to "
        f"<b>{html.escape(_fmt_time(request.end, tz))}</b> (cycles whose load started in the window) "
        f"&middot; source <code>{html.escape(source)}</code> &middot; generated "
        f"{html.escape(datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC'))}</p>",
    ]
    for text in warnings:
        parts.append(f"<p class='warn'>&#9888; {html.escape(text)}</p>")
    if cycles == 0:
        parts.append(f"<p class='empty'>No closed cycles for {html.escape(site)} in this window. Check the "
                     "window, the site and that <code>asset-cycle run</code> has written to the schema.</p>")
        parts.append("</body></html>")
        return "".join(parts)
    overall = kpis[kpis["dimension"] == "overall"].iloc[0]

    def card(key: str, value: str) -> str:
        return f"<div class='card'><div class='v'>{value}</div><div class='k'>{html.escape(key)}</div></div>"

    parts.append("<div class='cards'>" + "".join([
        card("cycles", f"{int(overall['cycles']):,}"),
        card("COMPLETE", f"{int(overall['complete']):,}"),
        card("OUTLIER", f"{_cell(overall['outlier_share_pct'], '_pct')} %"),
        card("INVALID", f"{_cell(overall['invalid_share_pct'], '_pct')} %"),
        card("median cycle (min)", _cell(overall["total_median_min"], "")),
        card("p90 cycle (min)", _cell(overall["total_p90_min"], "")),
        card("mean cycle (min)", _cell(overall["total_mean_min"], "")),
    ]) + "</div>")
    parts.append("<h2>Cycle times</h2>")
    parts.append(_figure(images["hist"], "cycle-time histogram",
                         "Distribution of total cycle time (load start to next load start) of COMPLETE cycles. "
                         "The dashed line is the median, the dotted line the 90th percentile: a long tail to "
                         "the right points at queuing, slow hauls or delays that stayed under the outlier "
                         "thresholds."))
    parts.append(_figure(images["trucks"], "segment times per truck",
                         "Mean time per segment (load, loaded travel, dump, empty travel) per truck, COMPLETE "
                         "cycles; the slowest trucks are at the top. Compare bar lengths to spot where a "
                         "truck loses time."))
    parts.append(_figure(images["loaders"], "segment times per loader",
                         "The same per loader (the unit that loaded the cycle): long load segments indicate "
                         "queuing or slow loading at that loader; long travel segments indicate distant dumps."))
    parts.append("<h2>Throughput and quality</h2>")
    parts.append(_figure(images["hourly"], "cycles per hour",
                         "Closed cycles per hour by the hour their load started, stacked by status. Dips show "
                         "shift changes, breaks or outages; a rising share of OUTLIER/INVALID flags a problem."))
    parts.append(_figure(images["status"], "status mix",
                         "Left: cycles by status with share of the total. Right: the rule behind each OUTLIER "
                         "(e.g. TRAVEL_IDLE: a long stop while travelling) and the reason for each INVALID "
                         "(e.g. NO_DUMP: tipped outside any dump region)."))
    maps = [(k, p) for k, p in images.items() if k.startswith("map:")]
    if maps:
        parts.append("<h2>Site map</h2>")
        for key, path in maps:
            parts.append(_figure(path, f"map of {key[4:]}",
                                 "Dump regions (brown), other regions (hatched), loaders (triangles) and "
                                 + ("sampled truck tracks from the telemetry bundle (window only)."
                                    if request.bundle else "the latest known truck positions from the "
                                    "process-info table, coloured by their current segment (live state, not "
                                    "limited to the window).")
                                 + " Metres east/north of the site centre (local equidistant projection)."))
    parts.append("<h2>Key figures by group</h2>")
    parts.append("<p>Times are minutes per cycle over COMPLETE cycles; shares are of all closed cycles. "
                 "Medians and segment medians: <code>kpis.csv</code>.</p>")
    parts.append("<h3>Overall</h3>" + _kpi_table(kpis, "overall", ""))
    if kpis[kpis["dimension"] == "site"].shape[0] > 1:
        parts.append("<h3>Per site</h3>" + _kpi_table(kpis, "site", "site"))
    parts.append(f"<h3>Per shift (day {DAY_SHIFT_START_H:02d}:00-{DAY_SHIFT_START_H + SHIFT_HOURS:02d}:00, "
                 f"{html.escape(tz)})</h3>" + _kpi_table(kpis, "shift_type", "shift") + _kpi_table(kpis, "shift",
                                                                                                  "shift"))
    parts.append("<h3>Per loader</h3>" + _kpi_table(kpis, "loader", "loader"))
    parts.append("<h3>Per dump region</h3>" + _kpi_table(kpis, "dump_region", "dump region"))
    n_trucks = int((kpis["dimension"] == "truck").sum())
    parts.append(f"<details><summary><b>Per truck ({n_trucks})</b></summary>"
                 + _kpi_table(kpis, "truck", "truck") + "</details>")
    parts.append("<p class='meta'>KPI definitions: docs/report.md.</p></body></html>")
    return "".join(parts)


# ----------------------------------------------------------------------------- orchestration

def _safe_name(text: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in text)[:80] or "site"


def build_report(conn: Any, redis_client: Any, names: TableNames, request: ReportRequest,
                 with_map: bool = True, redis_problem: str | None = None) -> ReportResult:
    """Query, compute and write index.html, kpis.csv and the PNG plots; returns what was written.

    ``redis_client`` may be None (no regions; ``redis_problem`` says why, on the page). Problems
    that do not stop the report are returned in ``ReportResult.warnings`` and shown on the page.
    """
    import matplotlib

    out = request.out_dir
    out.mkdir(parents=True, exist_ok=True)
    warnings: list[str] = []
    raw = fetch_cycles(conn, names, request.start, request.end, request.site)
    df = prepare(raw, request.tz)
    kpis_path = out / "kpis.csv"
    index_path = out / "index.html"
    source = f"{names.schema}.{names.cycle}"
    for stale in out.glob("*.png"):  # a previous run's plots must not linger next to this page
        if stale.name.startswith(("map_", "cycle_time_hist", "segments_by_", "cycles_per_hour", "status_mix")):
            stale.unlink()
    if df.empty:
        kpis = compute_kpis(df)
        write_kpis_csv(kpis, kpis_path)
        index_path.write_text(render_html(request, kpis, {}, 0, source, warnings), encoding="utf-8")
        return ReportResult(index_path, kpis_path, 0, [], warnings)

    keys = set(df["loader_asset_guid"].dropna()) | set(df["asset_guid"].dropna())
    asset_names = fetch_asset_names(conn, names, keys)
    sites_by_count = df["site_guid"].value_counts()
    regions: dict[str, list[Region]] = {}
    if redis_client is not None:
        regions = fetch_regions(redis_client, sites_by_count.index, request.redis_prefix, warnings)
    region_names = {r.region_guid: r.region_name for rs in regions.values() for r in rs}
    maps: dict[str, MapData] = {}
    if with_map:
        map_sites = [request.site] if request.site else list(sites_by_count.index[:MAX_MAP_SITES])
        maps = fetch_map_data(conn, names, map_sites)
        for site, data in maps.items():
            data.regions = [(r.region_name, r.region_type, list(r.points)) for r in regions.get(site, [])]
        if request.bundle is not None:
            add_bundle_tracks(maps, request.bundle, request.start, request.end, warnings)
        elif redis_client is None:
            why = f" ({redis_problem})" if redis_problem else ""
            warnings.append(f"Redis not available{why}: the map shows no regions")
        if len(sites_by_count) > len(map_sites):
            warnings.append(f"maps drawn for the {len(map_sites)} sites with most cycles "
                            f"(of {len(sites_by_count)})")
    kpis = compute_kpis(df, {**asset_names, **region_names})
    write_kpis_csv(kpis, kpis_path)

    images: dict[str, Path] = {}
    with matplotlib.rc_context(_PLOT_RC):
        images["hist"] = plot_cycle_time_hist(df, out / "cycle_time_hist.png")
        images["trucks"] = plot_segments(kpis, "truck", "truck", out / "segments_by_truck.png")
        images["loaders"] = plot_segments(kpis, "loader", "loader", out / "segments_by_loader.png")
        images["hourly"] = plot_cycles_per_hour(df, request.start, request.end, request.tz,
                                                out / "cycles_per_hour.png")
        images["status"] = plot_status_mix(df, out / "status_mix.png")
        for site, data in maps.items():
            suffix = " (sampled tracks)" if data.tracks else " (latest positions)" if data.trucks else ""
            images[f"map:{site}"] = plot_map(data, out / f"map_{_safe_name(site)}.png", suffix)
    index_path.write_text(render_html(request, kpis, images, len(df), source, warnings), encoding="utf-8")
    return ReportResult(index_path, kpis_path, len(df), list(images.values()), warnings)
