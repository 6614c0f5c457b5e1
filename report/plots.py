"""The report's plots, drawn with matplotlib's object API on the Agg canvas (no pyplot global state):
the cycle-time histogram, segment times per truck or loader, cycles per hour and the status mix.
``build_report`` applies the report style (PLOT_RC) with ``matplotlib.rc_context``; the site map is
in report.site_map."""

from __future__ import annotations

import math
from datetime import datetime
from pathlib import Path

import matplotlib.dates as mdates
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from report.model import SEGMENTS, STATUSES, zone_info
from state_machine.model import COMPLETE, INVALID, OUTLIER

STATUS_COLORS = {COMPLETE: "#4477AA", OUTLIER: "#EEAA33", INVALID: "#CC3344"}
SEGMENT_LABELS = {"load": "load", "load_travel": "loaded travel", "dump": "dump", "empty_travel": "empty travel"}
SEGMENT_COLORS = {"load": "#1B9E77", "load_travel": "#D95F02", "dump": "#7570B3", "empty_travel": "#E7298A"}
MAX_BARS = 40
PLOT_RC = {
    "font.size": 11, "axes.titlesize": 13, "axes.titleweight": "bold", "axes.labelsize": 11,
    "xtick.labelsize": 10, "ytick.labelsize": 10, "legend.fontsize": 10, "figure.dpi": 100,
    "axes.spines.top": False, "axes.spines.right": False, "axes.grid": True, "grid.alpha": 0.3,
    "axes.axisbelow": True,
}
DPI = 110
FIG_WIDTH = 12.0  # inches; every plot has the same width so the page lines up


def new_figure(width: float, height: float) -> Figure:
    """A figure of ``width`` x ``height`` inches on the Agg canvas (constrained layout)."""
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)  # Agg canvas: no display, no pyplot state
    return fig


def save(fig: Figure, path: Path) -> Path:
    """Write the figure as a PNG (white background); returns ``path``."""
    fig.savefig(path, dpi=DPI, facecolor="white")
    return path


def plot_cycle_time_hist(df: pd.DataFrame, path: Path) -> Path:
    """Histogram of total cycle minutes (COMPLETE) with median and p90 lines."""
    x = df.loc[df["cycle_status"] == COMPLETE, "total_min"].dropna().to_numpy()
    fig = new_figure(FIG_WIDTH, 5)
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
        no_data(ax, "no COMPLETE cycles")
    ax.set_title("Cycle-time distribution (COMPLETE cycles)")
    ax.set_xlabel("total cycle time (min)")
    ax.set_ylabel("cycles")
    return save(fig, path)


def no_data(ax: Axes, text: str) -> None:
    """``text`` in the middle of an empty plot, without ticks."""
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
    fig = new_figure(FIG_WIDTH, max(3.2, 1.6 + 0.34 * n))
    ax = fig.add_subplot()
    title = f"Mean segment times per {what} (COMPLETE cycles)"
    if total_groups > n:
        title += f" - {n} of {total_groups} {what}s with most cycles"
    fig.suptitle(title, fontsize=PLOT_RC["axes.titlesize"], fontweight="bold")
    if n == 0:
        no_data(ax, "no COMPLETE cycles")
        return save(fig, path)
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
    return save(fig, path)


def _bin_hours(span_hours: float) -> int:
    for hours in (1, 2, 3, 6, 12, 24):
        if span_hours / hours <= 96:
            return hours
    return 24 * max(1, math.ceil(span_hours / 24 / 96))


def plot_cycles_per_hour(df: pd.DataFrame, start: datetime, end: datetime, tz: str, path: Path) -> Path:
    """Bars of cycles per hour (by load start, local wall-clock time), stacked by status."""
    hours = _bin_hours((end - start).total_seconds() / 3600.0)
    freq = f"{hours}h"
    zone = zone_info(tz)
    lo = pd.Timestamp(start.astimezone(zone).replace(tzinfo=None)).floor(freq)
    hi = pd.Timestamp(end.astimezone(zone).replace(tzinfo=None)).ceil(freq)
    index = pd.date_range(lo, hi, freq=freq, inclusive="left")
    binned = df["local_start"].dt.floor(freq)
    counts = (pd.crosstab(binned, df["cycle_status"]).reindex(index=index, fill_value=0)
              .reindex(columns=list(STATUSES), fill_value=0))
    fig = new_figure(FIG_WIDTH, 4.8)
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
    return save(fig, path)


def plot_status_mix(df: pd.DataFrame, path: Path) -> Path:
    """Status counts with percentages, and the INVALID reasons / OUTLIER rules behind them."""
    counts = df["cycle_status"].value_counts().reindex(list(STATUSES), fill_value=0)
    total = int(counts.sum())
    fig = new_figure(FIG_WIDTH, 4.2)
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
        no_data(right, "none: every cycle is COMPLETE")
    return save(fig, path)
