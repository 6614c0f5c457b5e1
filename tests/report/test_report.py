"""`asset-cycle report`: files, PNG validity, KPIs against SQL, site filter, empty window, CLI errors.

The cycle table is filled the way production fills it: a small degraded two-site simulation is
replayed through the engine and its closed cycles/statuses are written to the test schema; the
reference data is seeded into PostgreSQL and Redis (under the test's key prefix).
"""

from __future__ import annotations

import csv
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from cli.main import main
from state_machine.model import (
    COMPLETE,
    INVALID,
    OUTLIER,
    CycleRecord,
    LoaderHour,
    ServedVisit,
    TruckHour,
    TruckStatus,
)
from state_machine.reference import ReferenceData
from stores.postgres import column_names
from tests.job.table_rows import cycle_record_to_row, ms_to_datetime, truck_status_to_row, upsert_query

SIM_START = datetime(2024, 1, 15, 4, 0, tzinfo=UTC)  # 4 h of data across the 06:00 shift change
START = "2024-01-15T04:30:00Z"
END = "2024-01-15T07:30:00Z"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@dataclass(frozen=True)
class SimData:
    """A replayed simulation: what the Flink job would have written."""

    reference: ReferenceData
    assets: list[Any]
    closed: list[CycleRecord]
    statuses: list[TruckStatus]
    telemetry: list[str]
    loader_hours: list[LoaderHour]
    served: list[ServedVisit]
    truck_hours: list[TruckHour]


@pytest.fixture(scope="module")
def sim_data() -> SimData:
    from workbench.replay import replay
    from workbench.simulator import SimulationSpec, simulate

    sim = simulate(SimulationSpec(trucks=6, hours=4.0, seed=11, sites=2,
                                  start_ms=int(SIM_START.timestamp() * 1000)).degraded())
    result = replay([("sim", line) for line in sim.telemetry_lines], sim.reference)
    assert {c.cycle_status for c in result.closed} >= {COMPLETE}
    return SimData(sim.reference, sim.assets, result.sorted_closed(), list(result.statuses.values()),
                   sim.telemetry_lines, list(result.loader_hours.values()), list(result.served.values()),
                   list(result.truck_hours.values()))


@pytest.fixture
def filled(pg_conn: Any, migrated_tables: Any, redis_client: Any, redis_prefix: str,
           sim_data: SimData) -> Iterator[Any]:
    """The test schema with cycles, process info and reference data (Redis regions under the prefix)."""
    from psycopg2.extras import execute_values
    from psycopg2.sql import SQL, Identifier

    from stores.reference import seed_reference

    names = migrated_tables
    seed_reference(pg_conn, redis_client, names, sim_data.reference, sim_data.assets, redis_key_prefix=redis_prefix)
    with pg_conn.cursor() as cur:
        execute_values(cur, SQL("INSERT INTO {} ({}) VALUES %s").format(
            names.table("cycle"), SQL(", ").join(map(Identifier, column_names("cycle")))),
            [cycle_record_to_row(c) for c in sim_data.closed])
        for status in sim_data.statuses:
            cur.execute(upsert_query(names, "process_info"), truck_status_to_row(status))
        for h in sim_data.loader_hours:
            cur.execute(upsert_query(names, "loader_hour"), (h.loader_guid, ms_to_datetime(h.hour_start_ms), h.site_guid,
                                                             h.loads, h.busy_seconds, h.hang_seconds, h.queue_seconds,
                                                             h.trucks_served))  # fmt: skip
        for h in sim_data.truck_hours:
            cur.execute(upsert_query(names, "truck_hour"), (h.asset_guid, ms_to_datetime(h.hour_start_ms), h.site_guid,
                                                            h.working_seconds, h.idle_seconds, h.loaded_distance_m,
                                                            h.empty_distance_m, h.cycles_closed))  # fmt: skip
        for sv in sim_data.served:
            v = sv.visit
            cur.execute(upsert_query(names, "load_visit"), (
                v.asset_guid, ms_to_datetime(v.load_start_ms), v.site_guid, v.loader_guid,
                ms_to_datetime(v.first_stop_ms), ms_to_datetime(v.arrival_ms), ms_to_datetime(sv.service_start_ms),
                ms_to_datetime(v.departure_ms), int(v.open), sv.queue_seconds))  # fmt: skip
    pg_conn.commit()
    yield names


def _run(args: list[str], pg_dsn: str, names: Any, redis_url: str, redis_prefix: str) -> int:
    return main(["report", *args, "--pg-dsn", pg_dsn, "--schema", names.schema, "--redis-url", redis_url,
                 "--redis-prefix", redis_prefix])


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, f"{path.name} is not a PNG"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def _kpis(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _row(rows: list[dict[str, str]], dimension: str, key: str) -> dict[str, str]:
    (row,) = [r for r in rows if r["dimension"] == dimension and r["key"] == key]
    return row


def _sql_stats(conn: Any, names: Any, site: str | None = None) -> dict[str, Any]:
    from psycopg2.sql import SQL

    where = SQL("load_start_utc >= %(a)s AND load_start_utc < %(b)s")
    params: dict[str, Any] = {"a": START, "b": END, "complete": COMPLETE}
    if site:
        where = where + SQL(" AND site_guid = %(site)s")
        params["site"] = site
    with conn.cursor() as cur:
        cur.execute(SQL(
            "SELECT count(*), count(*) FILTER (WHERE cycle_status = %(complete)s), "
            "percentile_cont(0.5) WITHIN GROUP (ORDER BY total_cycle_seconds / 60.0) "
            "FILTER (WHERE cycle_status = %(complete)s), "
            "percentile_cont(0.9) WITHIN GROUP (ORDER BY total_cycle_seconds / 60.0) "
            "FILTER (WHERE cycle_status = %(complete)s), "
            "avg(load_seconds / 60.0) FILTER (WHERE cycle_status = %(complete)s) "
            "FROM {} WHERE ").format(names.table("cycle")) + where, params)
        count, complete, median, p90, load_mean = cur.fetchone()
    conn.rollback()
    return {"count": count, "complete": complete, "median": median, "p90": p90, "load_mean": load_mean}


@pytest.mark.services
def test_report_files_pngs_and_kpis_match_sql(filled: Any, pg_conn: Any, pg_dsn: str, redis_url: str,
                                             redis_prefix: str, sim_data: SimData, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "report"
    assert _run(["--from", START, "--to", END, "--out", str(out)], pg_dsn, filled, redis_url, redis_prefix) == 0
    stdout = capsys.readouterr().out
    expected = _sql_stats(pg_conn, filled)
    assert expected["count"] > 20 and f"{expected['count']:,} cycles" in stdout

    pngs = {p.name for p in out.glob("*.png")}
    assert pngs == {"cycle_time_hist.png", "segments_by_truck.png", "segments_by_loader.png",
                    "cycles_per_hour.png", "status_mix.png", "map_SITE-01.png", "map_SITE-02.png",
                    "loader_queue_hang.png", "match_factor.png", "queue_times.png"}
    for name in pngs:
        width, height = _png_size(out / name)
        assert 800 <= width <= 2000 and 300 <= height <= 2000, (name, width, height)
        assert (out / name).stat().st_size > 10_000
    import matplotlib.image

    assert matplotlib.image.imread(out / "map_SITE-01.png").shape[2] in (3, 4)  # decodes

    page = (out / "index.html").read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>") and "Haul cycle report - all sites" in page
    assert page.count("data:image/png;base64,") == len(pngs)  # self-contained
    assert "2024-01-15 04:30 UTC" in page and "Per loader" in page

    assert "Loaders: queue and hang" in page
    with open(out / "loaders.csv", encoding="utf-8", newline="") as fh:
        loaders = {row["loader_asset_guid"]: row for row in csv.DictReader(fh)}
    start, end = datetime.fromisoformat(START), datetime.fromisoformat(END)
    in_window = [h for h in sim_data.loader_hours if start <= ms_to_datetime(h.hour_start_ms) < end]
    assert set(loaders) == {h.loader_guid for h in in_window}
    for loader, row in loaders.items():
        mine = [h for h in in_window if h.loader_guid == loader]
        busy, hang = sum(h.busy_seconds for h in mine), sum(h.hang_seconds for h in mine)
        assert int(row["loads"]) == sum(h.loads for h in mine)
        assert float(row["hang_h"]) == pytest.approx(hang / 3600, abs=1e-3)
        assert float(row["utilisation_pct"]) == pytest.approx(100 * busy / (busy + hang), abs=1e-3)

    rows = _kpis(out / "kpis.csv")
    overall = _row(rows, "overall", "all")
    assert int(overall["cycles"]) == expected["count"]
    assert int(overall["complete"]) == expected["complete"]
    assert int(overall["complete"]) + int(overall["outlier"]) + int(overall["invalid"]) == expected["count"]
    assert float(overall["total_median_min"]) == pytest.approx(expected["median"], abs=1e-3)
    assert float(overall["total_p90_min"]) == pytest.approx(expected["p90"], abs=1e-3)
    assert float(overall["load_mean_min"]) == pytest.approx(expected["load_mean"], abs=1e-3)
    for dimension in ("site", "shift_type", "shift", "truck", "loader", "dump_region"):
        block = [r for r in rows if r["dimension"] == dimension]
        assert sum(int(r["cycles"]) for r in block) == expected["count"], dimension
    assert {r["key"] for r in rows if r["dimension"] == "shift_type"} == {"day", "night"}
    assert {r["key"] for r in rows if r["dimension"] == "shift"} == {"2024-01-14 night", "2024-01-15 day"}
    for row in rows:
        share = 100.0 * int(row["invalid"]) / int(row["cycles"])
        assert float(row["invalid_share_pct"]) == pytest.approx(share, abs=1e-3)


@pytest.mark.services
def test_site_filter_time_zone_and_redis_down(filled: Any, pg_conn: Any, pg_dsn: str, redis_prefix: str,
                                              tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "site2"
    args = ["--from", START, "--to", END, "--site", "SITE-02", "--out", str(out), "--tz", "Australia/Perth"]
    assert _run(args, pg_dsn, filled, "redis://:hunter2@127.0.0.1:1/0", redis_prefix) == 0
    err = capsys.readouterr().err
    assert "Redis not available" in err and "hunter2" not in err
    rows = _kpis(out / "kpis.csv")
    expected = _sql_stats(pg_conn, filled, site="SITE-02")
    assert int(_row(rows, "overall", "all")["cycles"]) == expected["count"] > 0
    assert [r["key"] for r in rows if r["dimension"] == "site"] == ["SITE-02"]
    assert all(r["key"].startswith("S02-") for r in rows if r["dimension"] == "truck")
    # 04:30-07:30 UTC is 12:30-15:30 in Perth (UTC+8): all in the local day shift
    assert [r["key"] for r in rows if r["dimension"] == "shift"] == ["2024-01-15 day"]
    assert {p.name for p in out.glob("map_*.png")} == {"map_SITE-02.png"}
    page = (out / "index.html").read_text(encoding="utf-8")
    assert "Haul cycle report - SITE-02" in page and "Redis not available" in page


@pytest.mark.services
def test_empty_window(filled: Any, pg_dsn: str, redis_url: str, redis_prefix: str, tmp_path: Path,
                      capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "empty"
    args = ["--from", "2030-01-01", "--to", "2030-01-02", "--out", str(out)]
    assert _run(args, pg_dsn, filled, redis_url, redis_prefix) == 0
    assert "no closed cycles" in capsys.readouterr().out
    assert "No closed cycles" in (out / "index.html").read_text(encoding="utf-8")
    rows = _kpis(out / "kpis.csv")
    assert len(rows) == 1 and rows[0]["dimension"] == "overall" and rows[0]["cycles"] == "0"
    assert not list(out.glob("*.png"))


@pytest.mark.services
def test_bundle_tracks_on_the_map(filled: Any, pg_conn: Any, sim_data: SimData, tmp_path: Path) -> None:
    from report import ReportRequest, build_report, parse_time
    from workbench.bundle import write_bundle

    bundle = tmp_path / "bundle"
    write_bundle(bundle, sim_data.telemetry, sim_data.reference, sim_data.assets)
    request = ReportRequest(parse_time(START), parse_time(END), tmp_path / "tracks", site="SITE-01",
                            bundle=bundle)
    result = build_report(pg_conn, None, filled, request)  # no Redis: regions come from the bundle
    assert result.cycles > 0 and (tmp_path / "tracks" / "map_SITE-01.png").is_file()
    assert "sampled truck tracks" in result.index_html.read_text(encoding="utf-8")
    assert not any("no truck telemetry" in w for w in result.warnings)


@pytest.mark.services
def test_unmigrated_schema_is_a_one_line_error(pg_schema: str, pg_dsn: str, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["report", "--from", START, "--to", END, "--out", str(tmp_path / "x"), "--pg-dsn", pg_dsn,
                 "--schema", pg_schema, "--no-map"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "db init" in err and len(err.splitlines()) == 1


@pytest.mark.parametrize(("args", "message"), [
    (["--from", "yesterday", "--to", END], "not an ISO 8601"),
    (["--from", END, "--to", START], "is not before"),
    (["--from", START, "--to", END, "--tz", "Mars/Olympus"], "unknown time zone"),
])
def test_cli_rejects_bad_windows(args: list[str], message: str, tmp_path: Path,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", *args, "--out", str(tmp_path)]) == 2
    assert message in capsys.readouterr().err


def _frame(rows: list[tuple[str, str, str, float | None, str | None]]) -> Any:
    """A fetch_cycles-like frame: (load start ISO, status, asset, total minutes, loader)."""
    import pandas as pd

    data = []
    for start, status, asset, total, loader in rows:
        seconds = None if total is None else total * 60.0
        data.append({
            "asset_guid": asset, "site_guid": "S", "cycle_status": status, "loader_asset_guid": loader,
            "dump_region_guid": None if status == INVALID else "D1",
            "load_seconds": None if seconds is None else seconds * 0.25,
            "load_travel_seconds": None if seconds is None else seconds * 0.25,
            "dump_seconds": None if seconds is None else seconds * 0.25,
            "empty_travel_seconds": None if seconds is None else seconds * 0.25,
            "total_cycle_seconds": seconds, "invalid_reason": "NO_DUMP" if status == INVALID else None,
            "outlier_rule": "TRAVEL_IDLE" if status == OUTLIER else None,
            "load_start_utc": pd.Timestamp(start), "cycle_end_utc": pd.NaT,
        })
    return pd.DataFrame(data)


def test_kpis_shifts_and_complete_only_statistics() -> None:
    from report.kpis import compute_kpis, prepare

    df = prepare(_frame([
        ("2024-01-15T05:59:59Z", COMPLETE, "T1", 10.0, "L1"),   # night shift of the 14th
        ("2024-01-15T06:00:00Z", COMPLETE, "T1", 20.0, "L1"),   # day shift
        ("2024-01-15T17:59:00Z", COMPLETE, "T2", 30.0, "L2"),   # day shift
        ("2024-01-15T18:00:00Z", OUTLIER, "T2", 300.0, "L2"),   # night shift of the 15th
        ("2024-01-15T19:00:00Z", INVALID, "T2", 40.0, None),
    ]))
    kpis = compute_kpis(df, {"L1": "Shovel 1"})
    overall = kpis[kpis["dimension"] == "overall"].iloc[0]
    assert (overall["cycles"], overall["complete"], overall["outlier"], overall["invalid"]) == (5, 3, 1, 1)
    assert overall["total_median_min"] == pytest.approx(20.0)  # COMPLETE only: 10, 20, 30
    assert overall["total_mean_min"] == pytest.approx(20.0)
    assert overall["total_p90_min"] == pytest.approx(28.0)  # linear interpolation (percentile_cont)
    assert overall["load_median_min"] == pytest.approx(5.0)
    assert overall["outlier_share_pct"] == pytest.approx(20.0)
    shifts = kpis[kpis["dimension"] == "shift"].set_index("key")["cycles"].to_dict()
    assert shifts == {"2024-01-14 night": 1, "2024-01-15 day": 2, "2024-01-15 night": 2}
    loaders = kpis[kpis["dimension"] == "loader"].set_index("key")
    assert loaders.loc["L1", "name"] == "Shovel 1" and loaders.loc["(none)", "invalid"] == 1
    assert kpis[kpis["dimension"] == "dump_region"].set_index("key").loc["(none)", "cycles"] == 1


def test_shifts_follow_the_time_zone() -> None:
    from report.kpis import prepare

    df = prepare(_frame([("2024-01-14T22:30:00Z", COMPLETE, "T1", 10.0, "L1")]), tz="Australia/Perth")
    assert df["shift"].tolist() == ["2024-01-15 day"]  # 06:30 in Perth
    assert df["local_start"].iloc[0] == datetime(2024, 1, 15, 6, 30)
    assert datetime(2024, 1, 14, 22, 30, tzinfo=UTC) == df["load_start_utc"].iloc[0]


def test_segment_plot_caps_bars_and_renders(tmp_path: Path) -> None:
    import matplotlib.image

    from report.kpis import compute_kpis, prepare
    from report.plots import plot_segments

    rows = [(f"2024-01-15T0{i % 9}:00:00Z", COMPLETE, f"T{i:03d}", 10.0 + i % 7, "L1") for i in range(120)]
    kpis = compute_kpis(prepare(_frame(rows)))
    path = plot_segments(kpis, "truck", "truck", tmp_path / "trucks.png", max_bars=40)
    height, width = matplotlib.image.imread(path).shape[:2]
    assert width >= 1000 and 900 <= height <= 2000
