"""The site map: dump regions, loaders and truck tracks or latest positions of one site, in metres
east/north of the site centre (a local azimuthal equidistant projection), with a scale bar."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from matplotlib.artist import Artist
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.patches import Polygon as MplPolygon
from mpl_toolkits.axes_grid1.anchored_artists import AnchoredSizeBar
from pyproj import Transformer

from report.model import SEGMENTS, MapData
from report.plots import FIG_WIDTH, SEGMENT_COLORS, SEGMENT_LABELS, new_figure, no_data, save

# Live segment names (process info) -> the report's segment keys (same colours on the map).
LIVE_SEGMENTS = {"LOAD_TIME": "load", "LOAD_TRAVEL": "load_travel", "DUMP_TIME": "dump",
                 "EMPTY_TRAVEL": "empty_travel"}  # fmt: skip
NO_SEGMENT_COLOR = "#888888"
TRACK_COLOR = "#3B6FB6"
REGION_STYLES = {  # dump regions, other regions
    True: {"fc": "#C8934A", "alpha": 0.6, "ec": "#6B4A1C", "hatch": None, "text": "#3D2A0E"},
    False: {"fc": "#BBBBBB", "alpha": 0.35, "ec": "#666666", "hatch": "//", "text": "#444444"},
}


def _nice_length(span_m: float) -> float:
    target = max(span_m / 5.0, 1.0)
    exp = 10 ** math.floor(math.log10(target))
    for mult in (5, 2, 1):
        if mult * exp <= target:
            return mult * exp
    return exp


def _coordinates(data: MapData) -> tuple[list[float], list[float]]:
    """Every latitude and longitude the map shows (loaders, region corners, trucks, track points)."""
    track_pts = [pt for runs in data.tracks.values() for run in runs for pt in run]
    lats = ([ld[1] for ld in data.loaders] + [lat for _, _, pts in data.regions for _, lat in pts]
            + [t[1] for t in data.trucks] + [p[0] for p in track_pts])  # fmt: skip
    lons = ([ld[2] for ld in data.loaders] + [lon for _, _, pts in data.regions for lon, _ in pts]
            + [t[2] for t in data.trucks] + [p[1] for p in track_pts])  # fmt: skip
    return lats, lons


def _draw_regions(ax: Axes, proj: Transformer, regions: Sequence[tuple[str, str, list[tuple[float, float]]]]
                  ) -> list[Artist]:
    """Region polygons with their names below them; one legend entry per region type."""
    handles: list[Artist] = []
    seen_types: set[str] = set()
    for name, kind, pts in regions:
        style = REGION_STYLES[kind == "dump"]
        xs, ys = proj.transform([p[0] for p in pts], [p[1] for p in pts])
        ax.add_patch(MplPolygon(list(zip(xs, ys, strict=True)), closed=True, facecolor=style["fc"],
                                alpha=style["alpha"], edgecolor=style["ec"], linewidth=1.4, hatch=style["hatch"],
                                zorder=1))  # fmt: skip
        ax.annotate(name, (sum(xs) / len(xs), min(ys)), xytext=(0, -4), textcoords="offset points", ha="center",
                    va="top", fontsize=9, color=style["text"], zorder=5,
                    bbox={"boxstyle": "round,pad=0.2", "fc": "white", "ec": "none", "alpha": 0.75})  # fmt: skip
        if kind not in seen_types:
            seen_types.add(kind)
            handles.append(Patch(facecolor=style["fc"], edgecolor=style["ec"], hatch=style["hatch"],
                                 alpha=style["alpha"],
                                 label="dump region" if kind == "dump" else f"{kind or 'other'} region"))  # fmt: skip
    return handles


def _draw_tracks(ax: Axes, proj: Transformer, tracks: dict[str, list[list[tuple[float, float]]]]
                 ) -> tuple[list[Artist], int]:
    """Sampled truck tracks; (legend entries, trucks with a track)."""
    track_count = 0
    for runs in tracks.values():
        for run in runs:
            xs, ys = proj.transform([p[1] for p in run], [p[0] for p in run])
            ax.plot(xs, ys, color=TRACK_COLOR, linewidth=0.7, alpha=0.3, zorder=2)
        track_count += bool(runs)
    if not track_count:
        return [], 0
    return [Line2D([], [], color=TRACK_COLOR, linewidth=1.5, alpha=0.7,
                   label=f"truck tracks, sampled ({track_count} trucks)")], track_count  # fmt: skip


def _draw_trucks(ax: Axes, proj: Transformer, trucks: Sequence[tuple]) -> list[Artist]:
    """The trucks' latest positions, coloured by their current segment; one legend entry per segment."""
    segs = [LIVE_SEGMENTS.get(t[3] or "") for t in trucks]
    xs, ys = proj.transform([t[2] for t in trucks], [t[1] for t in trucks])
    colors = [SEGMENT_COLORS[s] if s else NO_SEGMENT_COLOR for s in segs]
    ax.scatter(xs, ys, marker="o", s=50, c=colors, edgecolor="black", linewidth=0.6, zorder=8)
    handles: list[Artist] = []
    for seg in [*SEGMENTS, None]:
        if seg in segs:
            color = SEGMENT_COLORS[seg] if seg else NO_SEGMENT_COLOR
            handles.append(Line2D([], [], marker="o", linestyle="", markerfacecolor=color,
                                  markeredgecolor="black", markersize=8,
                                  label=f"truck: {SEGMENT_LABELS[seg] if seg else 'no cycle yet'}"))  # fmt: skip
    return handles


def _draw_loaders(ax: Axes, proj: Transformer, loaders: Sequence[tuple[str, float, float]]) -> list[Artist]:
    """Loaders as labelled triangles."""
    if not loaders:
        return []
    xs, ys = proj.transform([ld[2] for ld in loaders], [ld[1] for ld in loaders])
    ax.scatter(xs, ys, marker="^", s=170, color="#111111", edgecolor="white", linewidth=1.2, zorder=7)
    for (label, _, _), x, y in zip(loaders, xs, ys, strict=True):
        ax.annotate(label, (x, y), xytext=(8, 6), textcoords="offset points", fontsize=9, zorder=9,
                    fontweight="bold", bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none",
                                             "alpha": 0.8})  # fmt: skip
    return [Line2D([], [], marker="^", linestyle="", color="#111111", markersize=10,
                   label=f"loader ({len(loaders)})")]  # fmt: skip


def _frame(fig: Figure, ax: Axes, all_x: Sequence[float], all_y: Sequence[float]) -> None:
    """Limits around every feature, with room for labels (right/below) and the scale bar (bottom left)."""
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
                                  fontproperties={"size": 10}))  # fmt: skip


def plot_map(data: MapData, path: Path, title_suffix: str = "") -> Path:
    """Dump regions, loaders and truck tracks/positions in metres east/north of the site centre."""
    lats, lons = _coordinates(data)
    title = f"Site {data.site_guid}: dump regions, loaders and trucks{title_suffix}"
    if not lats:
        fig = new_figure(FIG_WIDTH, 6)
        ax = fig.add_subplot(title=title)
        no_data(ax, "no reference data or positions for this site")
        return save(fig, path)
    lat0 = (min(lats) + max(lats)) / 2.0
    lon0 = (min(lons) + max(lons)) / 2.0
    proj = Transformer.from_crs("EPSG:4326", f"+proj=aeqd +lat_0={lat0} +lon_0={lon0} +datum=WGS84 +units=m",
                                always_xy=True)  # fmt: skip
    all_x, all_y = proj.transform(lons, lats)
    # figure shaped like the site (padded extents below), within sensible bounds
    aspect = (max(all_y) - min(all_y) + 1.0) * 1.22 / ((max(all_x) - min(all_x) + 1.0) * 1.22)
    fig = new_figure(FIG_WIDTH, min(12.0, max(5.5, 9.5 * aspect)) + 1.6)
    ax = fig.add_subplot(title=title)
    handles = _draw_regions(ax, proj, data.regions)
    track_handles, track_count = _draw_tracks(ax, proj, data.tracks)
    handles += track_handles
    if data.trucks and not track_count:
        handles += _draw_trucks(ax, proj, data.trucks)
    handles += _draw_loaders(ax, proj, data.loaders)
    _frame(fig, ax, all_x, all_y)
    if handles:
        fig.legend(handles=handles, loc="outside lower center", ncols=min(4, len(handles)), frameon=False)
    return save(fig, path)
