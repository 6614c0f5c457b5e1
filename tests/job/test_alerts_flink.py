"""Alerts on the local minicluster: the alerts table holds exactly the replay's alerts, once each."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from state_machine.identity import alert_id
from state_machine.model import (
    ALERT_DUMP_OUTSIDE_REGION,
    ALERT_LONG_IDLE,
    ALERT_NO_REFERENCE_DATA,
    ALERT_RESTRICTED_REGION,
    Alert,
)
from state_machine.reference import ReferenceData, Region, SiteReference
from state_machine.telemetry import Invalid, parse_record
from stores.postgres import ALERT_COLUMNS, TableNames
from tests.job.flink_harness import SOURCE_LABEL, read_tables, run_bundle
from tests.job.table_rows import datetime_to_ms
from workbench.bundle import write_bundle
from workbench.replay import replay
from workbench.simulator import SimulationSpec, simulate

pytestmark = [pytest.mark.flink, pytest.mark.services]

Key = tuple[str, str, str, str, int, float, float, str]


def read_alerts(pg_dsn: str, names: TableNames) -> list[Key]:
    """Rows of the alerts table (event time as epoch ms), sorted."""
    import psycopg2
    from psycopg2 import sql

    conn = psycopg2.connect(pg_dsn)
    try:
        with conn.cursor() as cur:
            cur.execute(sql.SQL("SELECT {} FROM {}").format(
                sql.SQL(", ").join(sql.Identifier(c) for c, _ in ALERT_COLUMNS), names.table("alerts")))
            rows = cur.fetchall()
        conn.rollback()
    finally:
        conn.close()
    return sorted((r[0], r[1], r[2], r[3], datetime_to_ms(r[4]), r[5], r[6], r[7]) for r in rows)


def expected_rows(alerts: list[Alert]) -> list[Key]:
    return sorted((alert_id(a.alert_type, a.asset_guid, a.event_ms, a.key), a.alert_type, a.asset_guid, a.site_guid,
                   a.event_ms, a.latitude, a.longitude, a.detail) for a in alerts)  # fmt: skip


def by_type(rows: list[Key]) -> dict[str, int]:
    out: dict[str, int] = {}
    for r in rows:
        out[r[1]] = out.get(r[1], 0) + 1
    return out


def test_bad_dumps_and_long_idles_give_exactly_the_replays_alerts(tmp_path: Path, pg_dsn: str,
                                                                  table_names: TableNames) -> None:  # fmt: skip
    spec = replace(SimulationSpec(trucks=6, hours=4, seed=17).degraded(), bad_dumps=0.15, long_idles=0.1)
    sim = simulate(spec)
    lines = sim.telemetry_lines
    bundle = write_bundle(tmp_path / "b", lines, sim.reference, sim.assets)
    expected = replay(((SOURCE_LABEL, line) for line in lines), sim.reference)
    want = expected_rows(expected.alerts)
    assert len({r[0] for r in want}) == len(want)  # one id per occurrence
    counts = by_type(want)
    assert counts.get(ALERT_DUMP_OUTSIDE_REGION, 0) >= 2 and counts.get(ALERT_LONG_IDLE, 0) >= 2, counts

    run_bundle(bundle, table_names, pg_dsn)
    got = read_alerts(pg_dsn, table_names)
    print(f"\nalerts by type: {by_type(got)}")
    assert got == want
    # the cycles are still the replay's (the alert output does not disturb the other sinks)
    assert len(read_tables(pg_dsn, table_names).closed) == len(expected.closed)


def _square(lat: float, lon: float, half_m: float) -> tuple[tuple[float, float], ...]:
    dlat = half_m / 111_320.0
    dlon = half_m / (111_320.0 * math.cos(math.radians(lat)))
    return ((lon - dlon, lat - dlat), (lon + dlon, lat - dlat), (lon + dlon, lat + dlat), (lon - dlon, lat + dlat))


def _on_the_road(lines: list[str]) -> Any:
    """A point of a truck driving (its neighbours in time > 150 m away), from the middle of the run."""
    points = [p for p in (parse_record(line) for line in lines) if not isinstance(p, Invalid)]
    by_truck: dict[str, list[Any]] = {}
    for p in points:
        by_truck.setdefault(p.asset_guid, []).append(p)
    track = sorted(by_truck[sorted(g for g in by_truck if "-HT-" in g)[0]], key=lambda p: p.ts_ms)
    for i in range(len(track) // 2, len(track) - 1):
        before, p, after = track[i - 1], track[i], track[i + 1]
        far = [abs(q.latitude - p.latitude) * 111_320.0 + abs(q.longitude - p.longitude) * 100_000.0
               for q in (before, after)]  # fmt: skip
        if min(far) > 150:
            return p
    raise AssertionError("no driving point found")


def test_restricted_region_entry_and_missing_site_reference(tmp_path: Path, pg_dsn: str,
                                                            table_names: TableNames) -> None:  # fmt: skip
    """A restricted region on a haul road gives RESTRICTED_REGION_ENTRY alerts (once per entry, as
    in the replay); a site without reference data gives one NO_REFERENCE_DATA alert."""
    sim = simulate(SimulationSpec(trucks=3, hours=1.5, seed=8, sites=2))
    lines = sim.telemetry_lines
    known, missing = sorted(sim.reference.sites)
    p = _on_the_road([line for line in lines if f'"{known}"' in line])
    site = sim.reference.sites[known]
    zone = Region("NO-GO-1", "Blast zone", "restricted", known, _square(p.latitude, p.longitude, 40.0))
    others = tuple(r for r in site.regions if r.region_type != "restricted")
    reference = ReferenceData(dict(sim.reference.asset_types),
                              {known: SiteReference(known, site.loaders, (*others, zone))})  # fmt: skip
    bundle = write_bundle(tmp_path / "b", lines, reference, [a for a in sim.assets if a[1] == known])
    expected = replay(((SOURCE_LABEL, line) for line in lines), reference)
    engine_alerts = [a for a in expected.alerts if a.alert_type != ALERT_NO_REFERENCE_DATA]
    assert any(a.alert_type == ALERT_RESTRICTED_REGION and a.key == "NO-GO-1" for a in engine_alerts)
    assert [(a.alert_type, a.site_guid) for a in expected.alerts if a not in engine_alerts] == [
        (ALERT_NO_REFERENCE_DATA, missing)
    ]

    run_bundle(bundle, table_names, pg_dsn, reference=reference)
    got = read_alerts(pg_dsn, table_names)
    print(f"\nalerts by type: {by_type(got)}")
    assert [r for r in got if r[1] != ALERT_NO_REFERENCE_DATA] == expected_rows(engine_alerts)
    # missing site: one alert (the first point dead-lettered for it; parallelism 1), at one of its trucks
    [no_ref] = [r for r in got if r[1] == ALERT_NO_REFERENCE_DATA]
    assert no_ref[3] == missing and no_ref[2] in {g for g, s, *_ in sim.assets if s == missing}
    assert no_ref[7] == f"no loaders or regions known for site {missing}"
