"""The live view's API over tables filled by a real job run: ``asset-cycle run --source file:BUNDLE`` (the
Flink job on the local minicluster, reference data seeded into PostgreSQL and Redis) on a degraded
simulated site, then ``asset-cycle serve``'s server over the same schema. What the API answers is
checked against the engine's own replay of the bundle (workbench.replay), not against the server's SQL:
every truck's latest point, every closed cycle page by page, each truck's cycle in progress, the alerts,
the site's regions and loaders; and every answer has the shape its OpenAPI model declares."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg2
import pytest
from psycopg2 import sql
from pydantic import BaseModel

from state_machine.model import CycleRecord
from stores.connections import RedisSettings
from stores.postgres import TableNames
from tests.job.reliability_support import CliRun, cli_env, free_port
from tests.web.support import get, serving
from web import models
from web.settings import ServeSettings
from workbench.bundle import iter_telemetry_lines, read_reference
from workbench.replay import ReplayResult, replay
from workbench.simulator import SimulationSpec, write_simulation

pytestmark = [pytest.mark.flink, pytest.mark.services]

STALE_TRUCK_S = 120.0


def _iso(ms: int | None) -> str | None:
    return None if ms is None else datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z")


def _same_shape(model: type[BaseModel], body: dict[str, Any]) -> None:
    """``body`` validates against ``model`` and has no field the model does not declare (nested too)."""
    model.model_validate(body)
    extra = set(body) - set(model.model_fields)
    assert not extra or model.model_config.get("extra") == "allow", (model.__name__, extra)


class Run:
    """The bundle, its replay and the served schema."""

    def __init__(self, bundle: Path, names: TableNames, redis_prefix: str, expected: ReplayResult, url: str) -> None:
        self.bundle, self.names, self.redis_prefix, self.expected, self.url = bundle, names, redis_prefix, expected, url

    def get(self, path: str) -> Any:
        answer = get(self.url + path.lstrip("/"))
        assert answer.status == 200, (path, answer.status, answer.body[:500])
        return answer.json()


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, pg_dsn: str, redis_url: str, redis_client: Any) -> Iterator[Run]:
    base = tmp_path_factory.mktemp("web-api")
    bundle = base / "site"
    write_simulation(SimulationSpec(trucks=6, hours=3, seed=5).degraded(), bundle)
    schema, prefix = f"t_{uuid.uuid4().hex[:16]}", f"test:{uuid.uuid4().hex[:16]}:"
    cli = CliRun(["--source", f"file:{bundle}", "--schema", schema, "--redis-prefix", prefix, "--rest-port",
                  str(free_port()), "--checkpoint-dir", str(base / "cp")], cli_env(pg_dsn, redis_url),
                 base / "run.log")  # fmt: skip
    try:
        assert cli.wait(400) == 0, cli.output()[-3000:]
        expected = replay(((f"file:{bundle}", line) for _, line in iter_telemetry_lines(bundle)),
                          read_reference(bundle)[0])  # fmt: skip
        names = TableNames(schema=schema)
        settings = ServeSettings(database=pg_dsn, names=names, redis=RedisSettings.from_url(redis_url),
                                 redis_prefix=prefix, port=0, stale_truck_s=STALE_TRUCK_S)  # fmt: skip
        with serving(settings) as url:
            yield Run(bundle, names, prefix, expected, url)
    finally:
        conn = psycopg2.connect(pg_dsn)
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
        conn.close()
        keys = list(redis_client.scan_iter(match=prefix + "*"))
        if keys:
            redis_client.delete(*keys)


def test_sites_carry_the_sites_own_geometry(run: Run) -> None:
    body = run.get("/api/sites")
    _same_shape(models.SitesResponse, body)
    reference, assets = read_reference(run.bundle)
    assert [s["site_guid"] for s in body["sites"]] == sorted(reference.sites)
    for site in body["sites"]:
        ref = reference.sites[site["site_guid"]]
        assert {(r["region_guid"], r["region_type"]) for r in site["regions"]} == {
            (r.region_guid, r.region_type) for r in ref.regions}
        for region in site["regions"]:
            [expected] = [r for r in ref.regions if r.region_guid == region["region_guid"]]
            assert [tuple(p) for p in region["points"]] == list(expected.points)
        assert {(x["asset_guid"], x["latitude"], x["longitude"]) for x in site["loaders"]} == {
            (x.asset_guid, x.latitude, x.longitude) for x in ref.loaders}
        assert site["trucks"] == len({s.asset_guid for s in run.expected.statuses.values()
                                      if s.site_guid == site["site_guid"]})  # fmt: skip
        assert site["newest_event_utc"] == _iso(max(s.last_event_ms for s in run.expected.statuses.values()
                                                     if s.site_guid == site["site_guid"]))  # fmt: skip
        assert site["loader_radius_m"] == 50.0
    assert body["warnings"] == []


def test_the_fleet_is_every_trucks_latest_point_with_its_cycle_and_staleness(run: Run) -> None:
    body = run.get("/api/fleet")
    _same_shape(models.FleetResponse, body)
    statuses = run.expected.statuses
    assert [t["asset_guid"] for t in body["trucks"]] == sorted(statuses)
    newest = {site: max(s.last_event_ms for s in statuses.values() if s.site_guid == site)
              for site in {s.site_guid for s in statuses.values()}}  # fmt: skip
    stale_seen = 0
    for truck in body["trucks"]:
        _same_shape(models.FleetTruck, truck)
        status = statuses[truck["asset_guid"]]
        assert (truck["latitude"], truck["longitude"], truck["segment"], truck["area"], truck["area_guid"]) == (
            status.latitude, status.longitude, status.current_segment, status.area, status.area_guid)
        assert truck["last_event_utc"] == _iso(status.last_event_ms)
        assert truck["work_state"] == {2: "IDLING", 3: "WORKING"}[status.work_state_id]
        silent = (newest[status.site_guid] - status.last_event_ms) / 1000
        assert truck["silent_s"] == pytest.approx(silent, abs=0.001)
        assert truck["stale"] is (silent > STALE_TRUCK_S)
        stale_seen += truck["stale"]
        current: CycleRecord = run.expected.in_progress[truck["asset_guid"]]
        assert truck["cycle"]["load_start_utc"] == _iso(current.load_start_ms)
        assert truck["cycle"]["loader_asset_guid"] == current.loader_asset_guid
        if current.load_start_ms is not None:
            assert truck["cycle"]["elapsed_s"] == pytest.approx((status.last_event_ms - current.load_start_ms) / 1000)
    assert 0 < stale_seen < len(body["trucks"]), "the site has stale and live trucks"
    one_site = run.get(f"/api/fleet?site={body['trucks'][0]['site_guid']}")
    assert one_site["trucks"] == [t for t in body["trucks"] if t["site_guid"] == body["trucks"][0]["site_guid"]]
    assert run.get("/api/fleet?site=NO-SUCH-SITE")["trucks"] == []


def _cycle_key(cycle: dict[str, Any]) -> tuple[str, str]:
    return cycle["load_start_utc"], cycle["asset_guid"]


def test_cycles_come_newest_first_page_by_page_and_filtered(run: Run) -> None:
    closed = sorted(run.expected.closed, key=lambda c: (c.load_start_ms, c.asset_guid), reverse=True)
    pages, cursor = [], None
    while True:
        body = run.get("/api/cycles?limit=7" + (f"&cursor={cursor}" if cursor else ""))
        _same_shape(models.CyclesResponse, body)
        pages.append(body["cycles"])
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert [len(p) for p in pages[:-1]] == [7] * (len(pages) - 1) and 0 < len(pages[-1]) <= 7
    got = [c for page in pages for c in page]
    assert [_cycle_key(c) for c in got] == [(_iso(c.load_start_ms), c.asset_guid) for c in closed]
    for api_cycle, record in zip(got, closed, strict=True):
        assert (api_cycle["cycle_status"], api_cycle["loader_asset_guid"], api_cycle["dump_region_guid"],
                api_cycle["cycle_end_utc"]) == (record.cycle_status, record.loader_asset_guid,
                                                record.dump_region_guid, _iso(record.cycle_end_ms))  # fmt: skip
        assert api_cycle["total_cycle_seconds"] == pytest.approx(record.total_cycle_seconds)

    truck, loader = closed[0].asset_guid, closed[-1].loader_asset_guid
    outlier = [c for c in closed if c.cycle_status == "OUTLIER"]
    middle = closed[len(closed) // 2].load_start_ms
    cases = {
        f"truck={truck}": [c for c in closed if c.asset_guid == truck],
        f"loader={loader}": [c for c in closed if c.loader_asset_guid == loader],
        "status=OUTLIER": outlier,
        f"from={_iso(middle)}": [c for c in closed if c.load_start_ms >= middle],
        f"to={_iso(middle)}&site={closed[0].site_guid}": [c for c in closed if c.load_start_ms < middle],
    }
    assert outlier, "the degraded site has outlier cycles"
    for query, expected in cases.items():
        body = run.get(f"/api/cycles?limit=500&{query}")
        assert [_cycle_key(c) for c in body["cycles"]] == [(_iso(c.load_start_ms), c.asset_guid) for c in expected], query


def test_a_truck_shows_its_state_its_cycle_in_progress_and_its_last_cycles(run: Run) -> None:
    for guid, status in run.expected.statuses.items():
        body = run.get(f"/api/trucks/{guid}?cycles=3")
        _same_shape(models.TruckResponse, body)
        assert body["asset_type"] == "HAUL_TRUCK" and body["site_guid"] == status.site_guid
        assert body["position"]["last_event_utc"] == _iso(status.last_event_ms)
        current = run.expected.in_progress[guid]
        assert body["current_cycle"]["load_start_utc"] == _iso(current.load_start_ms)
        assert body["current_cycle"]["current_segment"] == current.current_segment
        mine = sorted((c for c in run.expected.closed if c.asset_guid == guid), key=lambda c: c.load_start_ms,
                      reverse=True)  # fmt: skip
        assert [c["load_start_utc"] for c in body["cycles"]] == [_iso(c.load_start_ms) for c in mine[:3]]


def test_alerts_come_newest_first_and_since_bounds_them(run: Run) -> None:
    expected = sorted(run.expected.alerts, key=lambda a: a.event_ms, reverse=True)
    assert expected, "the degraded site raises alerts"
    body = run.get("/api/alerts")
    _same_shape(models.AlertsResponse, body)
    assert [(a["alert_type"], a["asset_guid"], a["event_utc"]) for a in body["alerts"]] == [
        (a.alert_type, a.asset_guid, _iso(a.event_ms)) for a in expected]
    since = expected[len(expected) // 2].event_ms
    later = run.get(f"/api/alerts?since={_iso(since)}")["alerts"]
    assert [a["event_utc"] for a in later] == [_iso(a.event_ms) for a in expected if a.event_ms >= since]
    assert len(run.get("/api/alerts?limit=1")["alerts"]) == 1


def test_the_loader_board_lists_the_sites_loaders(run: Run) -> None:
    body = run.get("/api/loaders")
    _same_shape(models.LoadersResponse, body)
    reference, _ = read_reference(run.bundle)
    assert [r["loader_asset_guid"] for r in body["loaders"]] == sorted(
        loader.asset_guid for site in reference.sites.values() for loader in site.loaders)


def test_kpis_answer_for_the_runs_hours(run: Run) -> None:
    body = run.get("/api/kpis")
    _same_shape(models.KpisResponse, body)
    newest = max(s.last_event_ms for s in run.expected.statuses.values())
    assert body["to_utc"] == _iso((newest // 3_600_000 + 1) * 3_600_000)
    assert body["from_utc"] == _iso((newest // 3_600_000 - 11) * 3_600_000)


def test_health_says_the_replayed_site_is_not_live(run: Run) -> None:
    answer = get(run.url + "health")
    assert answer.status == 503  # the bundle's events are from 2024: not live
    body = json.loads(answer.body)
    _same_shape(models.Health, body)
    assert body["status"] == "stale" and body["database"] == "reachable"
    assert all(s["stale"] and s["event_age_s"] > 3600 for s in body["sites"])
