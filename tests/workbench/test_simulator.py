"""Fleet simulator: determinism, truth consistency, layout, degradations, streaming, CLI."""

from __future__ import annotations

import itertools
import json
import re
from collections import Counter, defaultdict
from dataclasses import replace
from functools import cache

import pytest
from shapely.geometry import Polygon

from state_machine.model import (
    COMPLETE,
    HAUL_TRUCK,
    IDLING,
    INVALID,
    LOADER,
    OUTLIER,
    WORKING,
    cycle_to_csv_row,
)
from state_machine.reference import AREA_DUMP, AREA_LOADER, SpatialIndex, geodesic_distance_m
from workbench.bundle import iso_to_ms, read_cycles_csv, read_reference
from workbench.simulator import (
    DEFAULT_START_MS,
    SimulationSpec,
    build_layout,
    iter_deliveries,
    simulate,
)
from workbench.simulator.telemetry import Runner

SMALL = SimulationSpec(trucks=3, hours=2.0, seed=7)
ISO_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")


@cache
def run(spec: SimulationSpec):
    return simulate(spec)


def parsed(sim):
    """(delivery_ms, message dict) for every well-formed line."""
    out = []
    for d, line in sim.deliveries:
        try:
            msg = json.loads(line)
        except ValueError:
            continue
        if isinstance(msg, dict) and valid_time(msg.get("timestamp")):
            out.append((d, msg))
    return out


# ------------------------------------------------------------------------------------- determinism


def test_same_spec_same_bytes() -> None:
    spec = replace(SMALL, seed=11).degraded()
    a, b = simulate(spec), simulate(spec)
    assert a.deliveries == b.deliveries
    assert a.truth == b.truth
    assert a.assets == b.assets
    assert a.reference == b.reference


def test_different_seed_differs() -> None:
    assert run(SMALL).deliveries != run(replace(SMALL, seed=8)).deliveries


def test_degradations_do_not_change_truth_motion() -> None:
    """Ping-level degradations draw from separate generators: the ground truth is unchanged."""
    plain = run(SMALL)
    noisy = simulate(replace(SMALL, duplicates=0.1, disorder_s=20, drop=0.1, malformed=0.05,
                             outages_per_day=10, sparse_idle=True))
    assert plain.truth == noisy.truth


# ------------------------------------------------------------------------------------------ output


def test_message_format_and_delivery_order() -> None:
    sim = run(SMALL)
    assert sim.deliveries
    times = [d for d, _ in sim.deliveries]
    assert times == sorted(times)
    assert sim.deliveries[0][0] >= DEFAULT_START_MS
    for d, msg in parsed(sim):
        assert list(msg) == ["asset_guid", "site_guid", "timestamp", "latitude", "longitude", "work_state_id"]
        assert ISO_RE.match(msg["timestamp"])
        assert iso_to_ms(msg["timestamp"]) == d  # no degradation: delivered at event time
        assert msg["work_state_id"] in (IDLING, WORKING)
        assert -23.5 < msg["latitude"] < -22.0 and 118.0 < msg["longitude"] < 119.5
    assert len(parsed(sim)) == len(sim.deliveries)


def test_ping_intervals_per_truck() -> None:
    sim = run(SMALL)
    per: dict[str, list[int]] = defaultdict(list)
    for _, msg in parsed(sim):
        per[msg["asset_guid"]].append(iso_to_ms(msg["timestamp"]))
    assert len(per) == 3
    for times in per.values():
        gaps = [b - a for a, b in itertools.pairwise(times)]
        assert min(gaps) >= 8_000 and max(gaps) <= 34_000


def test_work_state_follows_motion() -> None:
    """Standing (loading) pings are IDLING, pings on the haul are mostly WORKING."""
    sim = run(SMALL)
    by_truck = defaultdict(list)
    for _, msg in parsed(sim):
        by_truck[msg["asset_guid"]].append((iso_to_ms(msg["timestamp"]), msg["work_state_id"]))
    for cyc in sim.truth:
        pts = by_truck[cyc.asset_guid]
        loading = [ws for t, ws in pts if cyc.load_end_ms - 55_000 < t < cyc.load_end_ms]
        assert loading and all(ws == IDLING for ws in loading)
        hauling = [ws for t, ws in pts if cyc.load_end_ms + 60_000 < t < cyc.dump_start_ms - 60_000]
        assert hauling and all(ws == WORKING for ws in hauling)


def test_sparse_idle_pings_rarely_while_standing() -> None:
    sim = simulate(replace(SMALL, sparse_idle=True))
    by_truck = defaultdict(list)
    for _, msg in parsed(sim):
        by_truck[msg["asset_guid"]].append(iso_to_ms(msg["timestamp"]))
    for cyc in sim.truth:
        inside = [t for t in by_truck[cyc.asset_guid] if cyc.load_start_ms < t < cyc.load_end_ms - 2_000]
        # a standing of 60-240 s (+ queueing) gets a ping only every 60-120 s
        assert len(inside) <= 1 + (cyc.load_end_ms - cyc.load_start_ms) // 60_000
        dumping = [t for t in by_truck[cyc.asset_guid] if cyc.dump_start_ms <= t < cyc.dump_end_ms]
        assert len(dumping) <= 1


# ----------------------------------------------------------------------------------------- truth


def check_truth(sim) -> None:
    spec = sim.spec
    assert sim.truth
    sites = {a[0]: a[1] for a in sim.assets}
    for r in sim.truth:
        assert r.site_guid == sites[r.asset_guid]
        site = sim.reference.sites[r.site_guid]
        assert r.loader_asset_guid in {ld.asset_guid for ld in site.loaders}
        assert r.total_cycle_seconds == pytest.approx((r.cycle_end_ms - r.load_start_ms) / 1000)
        assert r.load_seconds == pytest.approx((r.load_end_ms - r.load_start_ms) / 1000)
        assert r.load_start_ms < r.load_end_ms < r.cycle_end_ms
        assert r.cycle_end_ms <= spec.end_ms
        if r.cycle_status == INVALID:
            assert r.invalid_reason == "NO_DUMP"
            assert r.dump_region_guid is None and r.dump_start_ms is None and r.dump_end_ms is None
            assert r.load_travel_seconds is None and r.dump_seconds is None
            continue
        assert r.dump_region_guid in {d.region_guid for d in site.dump_regions}
        assert r.load_end_ms < r.dump_start_ms < r.dump_end_ms < r.cycle_end_ms
        parts = r.load_seconds + r.load_travel_seconds + r.dump_seconds + r.empty_travel_seconds
        assert parts == pytest.approx(r.total_cycle_seconds, abs=1e-6)
        assert r.load_seconds >= 60
        # 25-90 s, and at least two ping intervals + 22 s so that idle pings can span the threshold
        assert 25 <= r.dump_seconds <= max(90, 2 * 1.2 * spec.ping_interval_s[1] + 22)
        if r.cycle_status == COMPLETE:
            assert r.outlier_rule is None and r.outlier_seconds is None
            assert r.load_seconds <= 1200
        else:
            assert r.cycle_status == OUTLIER
            assert r.outlier_rule in ("TRAVEL_IDLE", "LOAD_AREA_IDLE", "DUMP_AREA_IDLE")
    # consecutive cycles of a truck chain: cycle_end == next load_start
    per = defaultdict(list)
    for r in sim.truth:
        per[r.asset_guid].append(r)
    for cycles in per.values():
        for a, b in itertools.pairwise(cycles):
            assert a.cycle_end_ms == b.load_start_ms


def test_truth_consistency_plain() -> None:
    sim = run(SMALL)
    check_truth(sim)
    assert {r.cycle_status for r in sim.truth} == {COMPLETE}
    assert len(sim.truth) >= 3 * 3  # ~18 min cycles over 2 h


def test_truth_consistency_degraded_multi_site() -> None:
    sim = simulate(replace(SMALL, sites=2, trucks=4, seed=3).degraded())
    check_truth(sim)
    assert {r.site_guid for r in sim.truth} == {"SITE-01", "SITE-02"}


def test_truth_matches_motion_positions() -> None:
    """With GPS noise off, pings inside the truth load/dump spells are at that loader / in that region,
    and no idle ping is ever at another loader or in another dump region."""
    spec = replace(SMALL, trucks=6, loaders=3, dumps=3, gps_sigma_m=0.0, gps_outlier_p=0.0, seed=5)
    sim = simulate(spec)
    site = sim.reference.sites["SITE-01"]
    index = SpatialIndex(site, 50.0)
    per = defaultdict(list)
    for _, msg in parsed(sim):
        area, guid, _ = index.classify(msg["latitude"], msg["longitude"])
        per[msg["asset_guid"]].append((iso_to_ms(msg["timestamp"]), area, guid, msg["work_state_id"]))
    cycles = defaultdict(list)
    for r in sim.truth:
        cycles[r.asset_guid].append(r)
    checked_load = checked_dump = 0
    for truck, rs in cycles.items():
        for k, r in enumerate(rs):
            nxt_loader = rs[k + 1].loader_asset_guid if k + 1 < len(rs) else None
            for t, area, guid, ws in per[truck]:
                if r.load_start_ms <= t < r.load_end_ms:
                    assert (area, guid) == (AREA_LOADER, r.loader_asset_guid)
                    checked_load += 1
                elif r.dump_start_ms <= t < r.dump_end_ms:
                    assert (area, guid) == (AREA_DUMP, r.dump_region_guid)
                    checked_dump += 1
                elif r.load_end_ms <= t < r.cycle_end_ms:
                    # haul roads may pass other faces, but a truck never stands at another loader or dump
                    if area == AREA_LOADER and ws == IDLING:
                        assert guid in (r.loader_asset_guid, nxt_loader)
                    if area == AREA_DUMP and ws == IDLING:
                        assert guid == r.dump_region_guid
    assert checked_load > 50 and checked_dump > 10


def test_layout_queue_spots_and_dump_sizes() -> None:
    runner = Runner(SimulationSpec(trucks=12, loaders=6, dumps=4, seed=2), None)
    site = runner.sites[0]
    inside = outside = 0
    for ld in site.loaders:
        lat, lon = site.frame.to_ll(*ld.pos)
        qlat, qlon = site.frame.to_ll(*ld.queue)
        slat, slon = site.frame.to_ll(*ld.spot)
        dq = geodesic_distance_m(lat, lon, qlat, qlon)
        assert geodesic_distance_m(lat, lon, slat, slon) < 20
        if ld.queue_inside:
            assert 25 <= dq <= 45
            inside += 1
        else:
            assert 65 <= dq <= 95
            outside += 1
    assert inside and outside
    for d in site.dumps:
        poly = Polygon(d.ring)
        assert poly.is_valid and len(d.ring) in (4, 5)
        minx, miny, maxx, maxy = poly.bounds
        assert 80 <= max(maxx - minx, maxy - miny) <= 250
    ref = runner.reference.sites[site.guid]
    assert {r.region_type for r in ref.regions} == {"dump", "restricted"}
    assert len(ref.dump_regions) == 4 and len(ref.loaders) == 6


def test_loaders_in_assets_match_reference() -> None:
    reference, assets = build_layout(SimulationSpec(trucks=10, sites=2, seed=4))
    loaders = {(a[0], a[1], a[3], a[4]) for a in assets if a[2] == LOADER}
    ref = {(ld.asset_guid, ld.site_guid, ld.latitude, ld.longitude)
           for s in reference.sites.values() for ld in s.loaders}
    assert loaders == ref
    assert Counter(a[2] for a in assets)[HAUL_TRUCK] == 20
    assert all(reference.asset_types[a[0]] == a[2] for a in assets)


@pytest.mark.parametrize("spacing_km", [60.0, 1.0])
def test_sites_never_mix(spacing_km: float) -> None:
    sim = simulate(SimulationSpec(trucks=3, sites=2, hours=1.0, seed=9, site_spacing_km=spacing_km))
    site_of = {a[0]: a[1] for a in sim.assets}
    for _, msg in parsed(sim):
        assert msg["site_guid"] == site_of[msg["asset_guid"]]
    for r in sim.truth:
        site = sim.reference.sites[r.site_guid]
        assert r.loader_asset_guid in {ld.asset_guid for ld in site.loaders}
        assert r.dump_region_guid in {d.region_guid for d in site.regions}
        assert site_of[r.loader_asset_guid] == r.site_guid
    assert {msg["site_guid"] for _, msg in parsed(sim)} == {"SITE-01", "SITE-02"}


# ---------------------------------------------------------------------------------- degradations


def test_duplicates() -> None:
    sim = simulate(replace(SMALL, duplicates=0.2))
    counts = Counter(line for _, line in sim.deliveries)
    dups = [line for line, n in counts.items() if n > 1]
    assert 0.1 * len(counts) < len(dups) < 0.3 * len(counts)
    first: dict[str, int] = {}
    for d, line in sim.deliveries:
        if line in first:
            assert 0 <= d - first[line] <= 40_000
        else:
            first[line] = d


def test_disorder_bounded() -> None:
    sim = simulate(replace(SMALL, disorder_s=30.0))
    event = [iso_to_ms(msg["timestamp"]) for _, msg in parsed(sim)]
    for d, msg in parsed(sim):
        assert 0 <= d - iso_to_ms(msg["timestamp"]) <= 30_000
    assert event != sorted(event)  # lines really are out of event-time order
    per = defaultdict(list)
    for _, msg in parsed(sim):
        per[msg["asset_guid"]].append(iso_to_ms(msg["timestamp"]))
    assert any(times != sorted(times) for times in per.values())


def test_drop() -> None:
    plain = len(run(SMALL).deliveries)
    dropped = len(simulate(replace(SMALL, drop=0.3)).deliveries)
    assert 0.6 * plain < dropped < 0.8 * plain


def test_outage_backlog_delivered_late() -> None:
    sim = simulate(replace(SMALL, outages_per_day=24.0))
    late = [(d, iso_to_ms(m["timestamp"])) for d, m in parsed(sim) if d > iso_to_ms(m["timestamp"])]
    assert late
    assert max(d - t for d, t in late) >= 5 * 60_000 - 30_000
    assert len(parsed(sim)) == len(run(SMALL).deliveries)  # store and forward: nothing lost
    lossy = simulate(replace(SMALL, outages_per_day=24.0, outage_loss=True))
    assert len(lossy.deliveries) < len(sim.deliveries)
    assert all(d == iso_to_ms(m["timestamp"]) for d, m in parsed(lossy))


def valid_time(text: object) -> bool:
    if not isinstance(text, str) or not ISO_RE.match(text):
        return False
    try:
        iso_to_ms(text)
    except ValueError:
        return False
    return True


def test_malformed_lines() -> None:
    sim = simulate(replace(SMALL, malformed=0.1))
    plain = run(SMALL)
    assert len(sim.deliveries) > len(plain.deliveries)
    bad = 0
    for _, line in sim.deliveries:
        try:
            msg = json.loads(line)
        except ValueError:
            bad += 1
            continue
        if not isinstance(msg, dict) or set(msg) != {"asset_guid", "site_guid", "timestamp", "latitude",
                                                      "longitude", "work_state_id"} or (msg["work_state_id"] not in (2, 3) or not isinstance(msg["latitude"], float)
              or abs(msg["latitude"]) > 90 or abs(msg["longitude"]) > 180 or not msg["asset_guid"]
              or not valid_time(msg["timestamp"])):
            bad += 1
    assert bad == len(sim.deliveries) - len(plain.deliveries)


def test_long_idles_make_outliers() -> None:
    sim = simulate(replace(SMALL, long_idles=1.0, hours=3.0))
    check_truth(sim)
    assert sim.truth and all(r.cycle_status == OUTLIER for r in sim.truth)
    assert all(r.outlier_rule == "TRAVEL_IDLE" and 600 < r.outlier_seconds <= 1200 for r in sim.truth)


def test_bad_dumps_make_invalid() -> None:
    sim = simulate(replace(SMALL, bad_dumps=1.0))
    check_truth(sim)
    assert sim.truth and all(r.cycle_status == INVALID for r in sim.truth)
    # the tipping stop is outside every dump region
    site = sim.reference.sites["SITE-01"]
    index = SpatialIndex(site, 50.0)
    for _, msg in parsed(sim):
        area, _, _ = index.classify(msg["latitude"], msg["longitude"])
        assert area != AREA_DUMP


def test_non_trucks_and_unknown_assets() -> None:
    sim = simulate(replace(SMALL, non_trucks=2, unknown_assets=2))
    types = {a[0]: a[2] for a in sim.assets}
    senders = Counter(msg["asset_guid"] for _, msg in parsed(sim))
    kinds = Counter(types.get(g, "UNKNOWN") for g in senders)
    assert kinds.keys() == {HAUL_TRUCK, LOADER, "WATER_TRUCK", "DOZER", "UNKNOWN"}
    assert sum(1 for g in senders if g not in types) == 2
    assert {r.asset_guid for r in sim.truth} <= {g for g, t in types.items() if t == HAUL_TRUCK}


# ------------------------------------------------------------------------------------ streaming


def test_unbounded_stream_is_lazy_and_matches_prefix() -> None:
    spec = replace(SMALL, hours=None)
    stream = iter_deliveries(spec)
    head = list(itertools.islice(stream, 400))
    assert head == run(SMALL).deliveries[:400]
    # keeps going well past any finite horizon
    far = next(itertools.islice(stream, 20_000, None))
    assert far[0] > DEFAULT_START_MS + 24 * 3_600_000


def test_stream_truth_callback() -> None:
    got = []
    lines = list(iter_deliveries(SMALL, truth=got.append))
    assert lines == run(SMALL).deliveries
    assert sorted(got, key=lambda r: (r.asset_guid, r.load_start_ms)) == run(SMALL).truth


def test_simulate_requires_finite_hours() -> None:
    with pytest.raises(ValueError):
        simulate(replace(SMALL, hours=None))
    with pytest.raises(ValueError):
        SimulationSpec(duplicates=1.5)


# ------------------------------------------------------------------------------------------ CLI


def test_cli_simulate_and_score(tmp_path, capsys) -> None:
    from cli.main import main

    out = tmp_path / "bundle"
    rc = main(["simulate", "--trucks", "2", "--hours", "1", "--seed", "3", "--out", str(out), "--degraded",
               "--no-progress"])
    assert rc == 0
    assert {p.name for p in out.iterdir()} == {"telemetry.jsonl", "regions.geojson", "assets.csv",
                                               "truth_cycles.csv", "truth_visits.csv"}
    reference, assets = read_reference(out)
    assert "SITE-01" in reference.sites and assets
    truth = read_cycles_csv(out / "truth_cycles.csv")
    assert truth
    spec = replace(SimulationSpec(trucks=2, hours=1.0, seed=3).degraded())
    sim = simulate(spec)
    assert (out / "telemetry.jsonl").read_text().splitlines() == sim.telemetry_lines
    assert [cycle_to_csv_row(r) for r in truth] == [cycle_to_csv_row(r) for r in sim.truth]
    capsys.readouterr()
    truth_csv = str(out / "truth_cycles.csv")
    assert main(["score", truth_csv, truth_csv]) == 0
    assert "F1 1.000" in capsys.readouterr().out


def test_cli_rejects_bad_options(tmp_path, capsys) -> None:
    from cli.main import main

    assert main(["simulate", "--trucks", "1", "--center", "x", "--out", str(tmp_path / "b")]) == 2
    assert "--center" in capsys.readouterr().err
