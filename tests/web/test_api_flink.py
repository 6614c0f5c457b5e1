"""The live view's API over tables filled by a real job run: ``asset-cycle run --source file:BUNDLE`` (the
Flink job on the local minicluster, reference data seeded into PostgreSQL and Redis) on a degraded
simulated site, then ``asset-cycle serve``'s server over the same schema. What the API answers is
checked against the engine's own replay of the bundle (workbench.replay), not against the server's SQL:
every truck's latest point, every closed cycle page by page, each truck's cycle in progress, the alerts,
the site's regions and loaders; and every answer has the shape its OpenAPI model declares."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import BaseModel

from state_machine.model import CycleRecord
from tests.web.support import STALE_TRUCK_S, BundleRun, get
from web import models
from workbench.bundle import read_reference

pytestmark = [pytest.mark.flink, pytest.mark.services]

def _iso(ms: int | None) -> str | None:
    return None if ms is None else datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z")


def _ms(iso: str) -> int:
    return int(datetime.fromisoformat(iso).timestamp() * 1000)


def _same_shape(model: type[BaseModel], body: dict[str, Any]) -> None:
    """``body`` validates against ``model`` and has no top-level field the model does not declare."""
    model.model_validate(body)
    extra = set(body) - set(model.model_fields)
    assert not extra or model.model_config.get("extra") == "allow", (model.__name__, extra)


def test_sites_carry_the_sites_own_geometry(bundle_run: BundleRun) -> None:
    body = bundle_run.get("/api/sites")
    _same_shape(models.SitesResponse, body)
    reference, assets = read_reference(bundle_run.bundle)
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
        assert site["trucks"] == len({s.asset_guid for s in bundle_run.expected.statuses.values()
                                      if s.site_guid == site["site_guid"]})  # fmt: skip
        assert site["newest_event_utc"] == _iso(max(s.last_event_ms for s in bundle_run.expected.statuses.values()
                                                     if s.site_guid == site["site_guid"]))  # fmt: skip
        assert site["loader_radius_m"] == 50.0
    assert body["warnings"] == []


def test_the_fleet_is_every_trucks_latest_point_with_its_cycle_and_staleness(bundle_run: BundleRun) -> None:
    body = bundle_run.get("/api/fleet")
    _same_shape(models.FleetResponse, body)
    statuses = bundle_run.expected.statuses
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
        current: CycleRecord = bundle_run.expected.in_progress[truck["asset_guid"]]
        assert truck["cycle"]["load_start_utc"] == _iso(current.load_start_ms)
        assert truck["cycle"]["loader_asset_guid"] == current.loader_asset_guid
        if current.load_start_ms is not None:
            assert truck["cycle"]["elapsed_s"] == pytest.approx((status.last_event_ms - current.load_start_ms) / 1000)
    assert 0 < stale_seen < len(body["trucks"]), "the site has stale and live trucks"
    one_site = bundle_run.get(f"/api/fleet?site={body['trucks'][0]['site_guid']}")
    assert one_site["trucks"] == [t for t in body["trucks"] if t["site_guid"] == body["trucks"][0]["site_guid"]]
    assert bundle_run.get("/api/fleet?site=NO-SUCH-SITE")["trucks"] == []


def _cycle_key(cycle: dict[str, Any]) -> tuple[str, str]:
    return cycle["load_start_utc"], cycle["asset_guid"]


def test_cycles_come_newest_first_page_by_page_and_filtered(bundle_run: BundleRun) -> None:
    closed = sorted(bundle_run.expected.closed, key=lambda c: (c.load_start_ms, c.asset_guid), reverse=True)
    pages, cursor = [], None
    while True:
        body = bundle_run.get("/api/cycles?limit=7" + (f"&cursor={cursor}" if cursor else ""))
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
        body = bundle_run.get(f"/api/cycles?limit=500&{query}")
        assert [_cycle_key(c) for c in body["cycles"]] == [(_iso(c.load_start_ms), c.asset_guid) for c in expected], query


def test_a_truck_shows_its_state_its_cycle_in_progress_and_its_last_cycles(bundle_run: BundleRun) -> None:
    for guid, status in bundle_run.expected.statuses.items():
        body = bundle_run.get(f"/api/trucks/{guid}?cycles=3")
        _same_shape(models.TruckResponse, body)
        assert body["asset_type"] == "HAUL_TRUCK" and body["site_guid"] == status.site_guid
        assert body["position"]["last_event_utc"] == _iso(status.last_event_ms)
        current = bundle_run.expected.in_progress[guid]
        assert body["current_cycle"]["load_start_utc"] == _iso(current.load_start_ms)
        assert body["current_cycle"]["current_segment"] == current.current_segment
        mine = sorted((c for c in bundle_run.expected.closed if c.asset_guid == guid), key=lambda c: c.load_start_ms,
                      reverse=True)  # fmt: skip
        assert [c["load_start_utc"] for c in body["cycles"]] == [_iso(c.load_start_ms) for c in mine[:3]]


def test_alerts_come_newest_first_and_since_bounds_them(bundle_run: BundleRun) -> None:
    expected = sorted(bundle_run.expected.alerts, key=lambda a: a.event_ms, reverse=True)
    assert expected, "the degraded site raises alerts"
    body = bundle_run.get("/api/alerts")
    _same_shape(models.AlertsResponse, body)
    assert [(a["alert_type"], a["asset_guid"], a["event_utc"]) for a in body["alerts"]] == [
        (a.alert_type, a.asset_guid, _iso(a.event_ms)) for a in expected]
    since = expected[len(expected) // 2].event_ms
    later = bundle_run.get(f"/api/alerts?since={_iso(since)}")["alerts"]
    assert [a["event_utc"] for a in later] == [_iso(a.event_ms) for a in expected if a.event_ms >= since]
    assert len(bundle_run.get("/api/alerts?limit=1")["alerts"]) == 1


def test_the_loader_board_is_each_loaders_status_and_this_shifts_figures(bundle_run: BundleRun) -> None:
    body = bundle_run.get("/api/loaders")
    _same_shape(models.LoadersResponse, body)
    assert body["warnings"] == []
    reference, _ = read_reference(bundle_run.bundle)
    loaders = {loader.asset_guid: loader for site in reference.sites.values() for loader in site.loaders}
    assert [r["loader_asset_guid"] for r in body["loaders"]] == sorted(loaders)
    statuses, hours = bundle_run.expected.loader_status, bundle_run.expected.loader_hours
    assert statuses and hours, "the run's loaders served trucks"
    newest = max(s.last_event_ms for s in bundle_run.expected.statuses.values())
    day = newest // 86_400_000 * 86_400_000
    shift_start = day + (6 if newest - day >= 6 * 3_600_000 else -6) * 3_600_000  # shifts at 06:00 and 18:00 UTC
    for row in body["loaders"]:
        _same_shape(models.LoaderBoardRow, row)
        status = statuses.get(row["loader_asset_guid"])
        if status is None:
            assert row["state"] == "UNKNOWN" and row["in_service"] is None
            continue
        assert row["state"] == ("LOADING" if status.in_service_asset else "IDLE")
        assert (row["in_service"] or {}).get("asset_guid") == status.in_service_asset
        assert (row["in_service"] or {}).get("since_utc") == _iso(status.in_service_since_ms)
        assert [(w["asset_guid"], w["since_utc"]) for w in row["waiting"]] == [
            (w.rpartition("@")[0], _iso(int(w.rpartition("@")[2]))) for w in status.waiting.split(",") if w]
        assert row["idle_since_utc"] == _iso(status.idle_since_ms)
        if status.idle_since_ms is not None:
            assert row["idle_for_s"] == pytest.approx((newest - status.idle_since_ms) / 1000, abs=0.001)
        mine = [h for (guid, start), h in hours.items() if guid == row["loader_asset_guid"] and start >= shift_start]
        assert row["shift"]["start_utc"] == _iso(shift_start)
        assert row["shift"]["loads"] == sum(h.loads for h in mine)
        assert row["shift"]["hang_seconds"] == pytest.approx(sum(h.hang_seconds for h in mine))
        assert row["shift"]["queue_seconds"] == pytest.approx(sum(h.queue_seconds for h in mine))
    assert sum(r["shift"]["loads"] for r in body["loaders"]) > 0


def test_kpis_are_the_runs_hourly_loader_truck_and_site_figures(bundle_run: BundleRun) -> None:
    body = bundle_run.get("/api/kpis")
    _same_shape(models.KpisResponse, body)
    newest = max(s.last_event_ms for s in bundle_run.expected.statuses.values())
    assert body["to_utc"] == _iso((newest // 3_600_000 + 1) * 3_600_000)
    assert body["from_utc"] == _iso((newest // 3_600_000 - 11) * 3_600_000)
    loader_hours, truck_hours = bundle_run.expected.loader_hours, bundle_run.expected.truck_hours
    assert {(r["loader_asset_guid"], r["hour_start_utc"]): (r["loads"], r["trucks_served"]) for r in body["loaders"]} == {
        (guid, _iso(start)): (h.loads, h.trucks_served) for (guid, start), h in loader_hours.items()}
    assert {(r["asset_guid"], r["hour_start_utc"]): r["cycles_closed"] for r in body["trucks"]} == {
        (guid, _iso(start)): h.cycles_closed for (guid, start), h in truck_hours.items()}
    for row in body["trucks"]:
        expected = truck_hours[(row["asset_guid"], _ms(row["hour_start_utc"]))]
        assert row["working_seconds"] == pytest.approx(expected.working_seconds)
    hours_with_loads = {_iso(start) for (_, start), h in loader_hours.items()}
    assert {r["hour_start_utc"] for r in body["sites"]} == hours_with_loads
    assert any(r["match_factor"] for r in body["sites"])
    later = bundle_run.get(f"/api/kpis?from={body['to_utc']}&to={_iso((newest // 3_600_000 + 3) * 3_600_000)}")
    assert later["loaders"] == later["trucks"] == later["sites"] == []


def test_health_says_the_replayed_site_is_not_live(bundle_run: BundleRun) -> None:
    answer = get(bundle_run.url + "health")
    assert answer.status == 503  # the bundle's events are from 2024: not live
    body = json.loads(answer.body)
    _same_shape(models.Health, body)
    assert body["status"] == "stale" and body["database"] == "reachable"
    assert all(s["stale"] and s["event_age_s"] > 3600 for s in body["sites"])
