"""KPIs of the closed cycles: per overall / site / shift type / shift / truck / loader / dump region,
cycle counts by status, OUTLIER and INVALID shares, and time statistics in minutes (COMPLETE cycles)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from report.model import DAY_SHIFT_START_H, SEGMENT_COLUMNS, SEGMENTS, SHIFT_HOURS, STATUSES, zone_info

KPI_COLUMNS = (
    "dimension", "key", "name", "cycles", "complete", "outlier", "invalid",
    "outlier_share_pct", "invalid_share_pct",
    "total_mean_min", "total_median_min", "total_p90_min",
    *[f"{seg}_{stat}_min" for seg in SEGMENTS for stat in ("mean", "median")],
)
NONE_KEY = "(none)"


def prepare(df: pd.DataFrame, tz: str = "UTC") -> pd.DataFrame:
    """Add minute columns, local start time, shift and shift type to a fetch_cycles frame."""
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
    """The kpis.csv table for a ``prepare``d frame: one block of rows per dimension (overall, site,
    shift type, shift, truck, loader, dump region).

    Time statistics use COMPLETE cycles only (percentiles interpolate linearly, like SQL
    percentile_cont); shares are percentages of all cycles of the group.
    """
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
