"""The report page: self-contained HTML (CSS inline, plots embedded as data URIs), KPI cards and
tables, and a caption under each plot saying how to read it."""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from report.model import DAY_SHIFT_START_H, SHIFT_HOURS, ReportRequest, format_time

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


def _cell(value: object, col: str) -> str:
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


def _loader_rows(loaders: pd.DataFrame) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in ("loader", "loads", "busy h", "hang h", "queue h",
                                                         "utilisation %", "mean queue min"))  # fmt: skip
    rows = []
    for _, row in loaders.iterrows():
        cells = [html.escape(str(row["loader_asset_guid"]))] + [
            "" if pd.isna(row[c]) else (f"{int(row[c]):,}" if c == "loads" else f"{row[c]:.1f}")
            for c in ("loads", "busy_h", "hang_h", "queue_h", "utilisation_pct", "mean_queue_min")]
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(rows)}</table>"


def render_html(request: ReportRequest, kpis: pd.DataFrame, images: dict[str, Path], cycles: int,
                source: str, warnings: Sequence[str], loaders: pd.DataFrame | None = None) -> str:
    """The report page (self-contained: CSS inline, images as data URIs)."""
    tz = request.tz
    site = request.site or "all sites"
    title = f"Haul cycle report - {site}"
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        f"<p class='meta'>Window: <b>{html.escape(format_time(request.start, tz))}</b> to "
        f"<b>{html.escape(format_time(request.end, tz))}</b> (cycles whose load started in the window) "
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
    if "queue_hang" in images:
        parts.append("<h2>Loaders: queue and hang</h2>")
        parts.append("<p>Queue: a truck waiting for its loader (in the bay or at a staging point) while the "
                     "loader served another truck. Hang: the loader waiting for trucks between two services. "
                     "Utilisation = busy / (busy + hang). Many queue hours and little hang: the loader is "
                     "over-trucked; much hang and no queue: under-trucked. Definitions: docs/cycle-rules.md.</p>")
        if loaders is not None and not loaders.empty:
            parts.append(_loader_rows(loaders))
        parts.append(_figure(images["queue_hang"], "queue and hang per loader",
                             "Hours trucks spent queueing at each loader (red) against the hours the loader hung "
                             "(blue) in the window, with each loader's utilisation."))
        parts.append(_figure(images["match"], "match factor per hour",
                             "Match factor per site and hour: trucks x mean loader service time / (loaders x "
                             "mean truck cycle time). Above 1 trucks wait for loaders, below 1 loaders wait for "
                             "trucks."))
        parts.append(_figure(images["queues"], "queue-time distribution",
                             "Queue time per load visit (minutes): the visits served without a wait (green) "
                             "and the spread of the waits."))
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
