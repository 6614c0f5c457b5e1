"""The report's loader section: queue and hang per loader, utilisation, the match factor per hour and the
distribution of queue times, from the loader stage's tables (docs/cycle-rules.md, Loaders).

Data: ``loader_hour_kpi`` rows and ``load_visit`` rows whose hour / service start is in the window, and
the ``site_hour_kpi`` view (match factor = trucks x mean service time / (loaders x mean cycle time)).
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pandas as pd
from matplotlib.ticker import MaxNLocator
from psycopg2 import sql
from psycopg2.extensions import connection

from report.fetch import read_query
from report.plots import new_figure, no_data, save
from stores.postgres import TableNames

LOADER_TABLE_COLUMNS = ("loads", "busy_h", "hang_h", "queue_h", "utilisation_pct", "mean_queue_min")


def fetch_loader_hours(conn: connection, names: TableNames, start: datetime, end: datetime,
                       site: str | None = None) -> pd.DataFrame:
    """loader_hour_kpi rows with hour_start_utc in [start, end)."""
    query = sql.SQL("SELECT loader_asset_guid, site_guid, hour_start_utc, loads, busy_seconds, hang_seconds, "
                    "queue_seconds, trucks_served FROM {} WHERE hour_start_utc >= %s AND hour_start_utc < %s "
                    "AND (%s IS NULL OR site_guid = %s) ORDER BY 1, 3").format(names.table("loader_hour"))
    return read_query(conn, query, (start, end, site, site))


def fetch_site_hours(conn: connection, names: TableNames, start: datetime, end: datetime,
                     site: str | None = None) -> pd.DataFrame:
    """site_hour_kpi rows (trucks, loaders, match factor) with hour_start_utc in [start, end)."""
    query = sql.SQL("SELECT site_guid, hour_start_utc, trucks, loaders, loads, mean_service_seconds, "
                    "mean_cycle_seconds, match_factor FROM {} WHERE hour_start_utc >= %s AND hour_start_utc < %s "
                    "AND (%s IS NULL OR site_guid = %s) ORDER BY 1, 2").format(names.table("site_hour_kpi"))
    return read_query(conn, query, (start, end, site, site))


def fetch_queues(conn: connection, names: TableNames, start: datetime, end: datetime,
                 site: str | None = None) -> pd.Series:
    """Queue seconds of the visits whose service started in [start, end)."""
    query = sql.SQL("SELECT queue_seconds FROM {} WHERE service_start_utc >= %s AND service_start_utc < %s "
                    "AND (%s IS NULL OR site_guid = %s)").format(names.table("load_visit"))
    frame = read_query(conn, query, (start, end, site, site))
    return frame["queue_seconds"].astype(float) if not frame.empty else pd.Series(dtype=float)


def loader_table(hours: pd.DataFrame) -> pd.DataFrame:
    """Per loader over the window: loads, busy / hang / queue hours, utilisation = busy / (busy + hang),
    mean queue per load (minutes); sorted by loader."""
    if hours.empty:
        return pd.DataFrame(columns=["loader_asset_guid", *LOADER_TABLE_COLUMNS])
    sums = hours.groupby("loader_asset_guid")[["loads", "busy_seconds", "hang_seconds", "queue_seconds"]].sum()
    active = sums["busy_seconds"] + sums["hang_seconds"]
    table = pd.DataFrame({
        "loads": sums["loads"].astype(int),
        "busy_h": sums["busy_seconds"] / 3600.0,
        "hang_h": sums["hang_seconds"] / 3600.0,
        "queue_h": sums["queue_seconds"] / 3600.0,
        "utilisation_pct": (100.0 * sums["busy_seconds"] / active).where(active > 0),
        "mean_queue_min": (sums["queue_seconds"] / 60.0 / sums["loads"]).where(sums["loads"] > 0),
    })  # fmt: skip
    return table.reset_index()


def plot_queue_and_hang(table: pd.DataFrame, path: Path) -> Path:
    """Per loader: hours of truck queue against hours of loader hang, and utilisation on top."""
    fig = new_figure(9, 1.5 + 0.45 * max(3, len(table)))
    ax = fig.subplots()
    if table.empty:
        no_data(ax, "no loader figures in this window")
        return save(fig, path)
    ypos = range(len(table))
    ax.barh([y + 0.2 for y in ypos], table["queue_h"], height=0.4, color="#d62728", label="trucks queueing (h)")
    ax.barh([y - 0.2 for y in ypos], table["hang_h"], height=0.4, color="#1f77b4", label="loader hanging (h)")
    ax.set_yticks(list(ypos), [f"{g} ({u:.0f} % busy)" if pd.notna(u) else g
                               for g, u in zip(table["loader_asset_guid"], table["utilisation_pct"], strict=True)])
    ax.invert_yaxis()
    ax.set_xlabel("hours in the window")
    ax.legend(loc="lower right")
    return save(fig, path)


def plot_match_factor(sites: pd.DataFrame, path: Path) -> Path:
    """Match factor per site and hour (1 = trucks and loaders in balance)."""
    fig = new_figure(9, 3.2)
    ax = fig.subplots()
    shown = sites.dropna(subset=["match_factor"]) if not sites.empty else sites
    if shown.empty:
        no_data(ax, "no hour with both loads and COMPLETE cycles")
        return save(fig, path)
    for site, rows in shown.groupby("site_guid"):
        ax.plot(rows["hour_start_utc"], rows["match_factor"], marker="o", label=str(site))
    ax.axhline(1.0, color="grey", linestyle="--", linewidth=1)
    ax.set_ylabel("match factor")
    ax.set_xlabel("hour (UTC)")
    ax.legend(loc="upper right")
    fig.autofmt_xdate()
    return save(fig, path)


def plot_queue_distribution(queues: pd.Series, path: Path) -> Path:
    """Histogram of queue time per visit (minutes), the visits that did not wait as their own bar."""
    fig = new_figure(9, 3.2)
    ax = fig.subplots()
    if queues.empty:
        no_data(ax, "no load visits in this window")
        return save(fig, path)
    waited = queues[queues > 0] / 60.0
    ax.bar([-0.5], [int((queues <= 0).sum())], width=0.8, color="#2ca02c", label="no wait")
    if not waited.empty:
        ax.hist(waited, bins=min(30, max(5, len(waited) // 5)), color="#d62728", label="waited (minutes)")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("queue time per visit (minutes)")
    ax.set_ylabel("visits")
    ax.legend(loc="upper right")
    return save(fig, path)
