"""``build_report``: the closed cycles of a window as ``index.html`` (KPIs, plots, site maps) and
``kpis.csv`` in an output directory.

Data (report.fetch): one SQL query (COPY of the final cycle table, cycles whose ``load_start_utc`` is
in ``[start, end)``, optionally one site) into pandas; loader positions/names from the asset tables,
dump regions from Redis (``site:{site_guid}:regions``), truck positions from the process-info table
or, with a telemetry bundle, sampled truck tracks. Output in ``out_dir``:

* ``index.html``  title, window, KPI tables, the plots (embedded as data URIs) and short notes
  (report.html);
* ``kpis.csv``    per overall/site/shift type/shift/truck/loader/dump region: cycle counts by
  status, INVALID/OUTLIER shares and time statistics in minutes (COMPLETE cycles only; report.kpis);
* ``cycle_time_hist.png``, ``segments_by_truck.png``, ``segments_by_loader.png``,
  ``cycles_per_hour.png``, ``status_mix.png`` (report.plots), ``map_<site>.png`` (report.site_map),
  ``loader_queue_hang.png``, ``match_factor.png``, ``queue_times.png`` (report.loaders);
* ``loaders.csv``  per loader: loads, busy / hang / queue hours, utilisation, mean queue per load.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib
import redis
from psycopg2.extensions import connection

from report.fetch import add_bundle_tracks, fetch_asset_names, fetch_cycles, fetch_map_data, fetch_regions
from report.html import render_html
from report.kpis import compute_kpis, prepare, write_kpis_csv
from report.loaders import (
    fetch_loader_hours,
    fetch_queues,
    fetch_site_hours,
    loader_table,
    plot_match_factor,
    plot_queue_and_hang,
    plot_queue_distribution,
)
from report.model import MapData, ReportRequest, ReportResult
from report.plots import PLOT_RC, plot_cycle_time_hist, plot_cycles_per_hour, plot_segments, plot_status_mix
from report.site_map import plot_map
from state_machine.reference import Region
from stores.postgres import TableNames

MAX_MAP_SITES = 4


def _safe_name(text: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in text)[:80] or "site"


def build_report(conn: connection, redis_client: redis.Redis | None, names: TableNames, request: ReportRequest,
                 with_map: bool = True, redis_problem: str | None = None) -> ReportResult:
    """Query, compute and write index.html, kpis.csv and the PNG plots; returns what was written.

    ``redis_client`` may be None (no regions; ``redis_problem`` says why, on the page). Problems
    that do not stop the report are returned in ``ReportResult.warnings`` and shown on the page.
    """
    out = request.out_dir
    out.mkdir(parents=True, exist_ok=True)
    warnings: list[str] = []
    raw = fetch_cycles(conn, names, request.start, request.end, request.site)
    df = prepare(raw, request.tz)
    kpis_path = out / "kpis.csv"
    index_path = out / "index.html"
    source = f"{names.schema}.{names.cycle}"
    for stale in out.glob("*.png"):  # a previous run's plots must not linger next to this page
        if stale.name.startswith(("map_", "cycle_time_hist", "segments_by_", "cycles_per_hour", "status_mix",
                                  "loader_queue_hang", "match_factor", "queue_times")):
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
    loaders = loader_table(fetch_loader_hours(conn, names, request.start, request.end, request.site))
    loaders.to_csv(out / "loaders.csv", index=False, float_format="%.3f")

    images: dict[str, Path] = {}
    with matplotlib.rc_context(PLOT_RC):
        images["hist"] = plot_cycle_time_hist(df, out / "cycle_time_hist.png")
        images["trucks"] = plot_segments(kpis, "truck", "truck", out / "segments_by_truck.png")
        images["loaders"] = plot_segments(kpis, "loader", "loader", out / "segments_by_loader.png")
        images["hourly"] = plot_cycles_per_hour(df, request.start, request.end, request.tz,
                                                out / "cycles_per_hour.png")
        images["status"] = plot_status_mix(df, out / "status_mix.png")
        images["queue_hang"] = plot_queue_and_hang(loaders, out / "loader_queue_hang.png")
        images["match"] = plot_match_factor(fetch_site_hours(conn, names, request.start, request.end, request.site),
                                            out / "match_factor.png")
        images["queues"] = plot_queue_distribution(fetch_queues(conn, names, request.start, request.end,
                                                                request.site), out / "queue_times.png")
        for site, data in maps.items():
            suffix = " (sampled tracks)" if data.tracks else " (latest positions)" if data.trucks else ""
            images[f"map:{site}"] = plot_map(data, out / f"map_{_safe_name(site)}.png", suffix)
    index_path.write_text(render_html(request, kpis, images, len(df), source, warnings, loaders), encoding="utf-8")
    return ReportResult(index_path, kpis_path, len(df), list(images.values()), warnings)
