"""Queue, hang and loads of the loader stage against the simulator's truth (issue: loader KPIs).

The bar, per family and seed: queue median absolute error <= 10 s and >= 95 % of visits within 30 s;
each loader's hang time within 5 % and its loads within 2 %. The families: trucks waiting in the
loader's bay, at staging points outside it, an over-trucked loader, over-trucked staging, and an
under-trucked pit (long hangs). The hourly rows add up to the same totals as the visits they come from.

One exception, measured: a loader busy more than 95 % of the time has a few short gaps, and each gap's
ends are known to half a ping interval (10-30 s pings): over-trucked-staging seed 22's busiest loader
hangs 359 s in 6 h and is found at 335 s (6.7 %). Such a loader's hang is held to 1 % of its busy + hang
time instead (there: 0.1 %).
"""

from __future__ import annotations

from collections import defaultdict

import pytest

from workbench.replay import replay
from workbench.scoring import score_visits
from workbench.simulator import scenario_spec, simulate

LOADER_FAMILIES = ("in-bay-queue", "staging-queue", "over-trucked", "over-trucked-staging", "under-trucked")
SEEDS = (21, 22, 23)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("name", LOADER_FAMILIES)
def test_queue_hang_and_loads_match_the_truth(name: str, seed: int):
    spec = scenario_spec(name, trucks=12, hours=6.0, seed=seed)
    sim = simulate(spec)
    result = replay(((f"line {i}", line) for i, (_, line) in enumerate(sim.deliveries)), sim.reference)
    report = score_visits(sim.visits, result.served.values(), spec.end_ms)
    assert report.matched >= 0.98 * report.truth_count, report.summary()
    assert report.queue_error.median <= 10.0, report.summary()
    assert report.queue_within_30s >= 0.95, report.summary()
    for loader in report.loaders:
        assert loader.loads_error <= 0.02, report.summary()
        span = loader.truth_busy_s + loader.truth_hang_s
        if loader.truth_hang_s >= 0.05 * span:
            assert loader.hang_error <= 0.05, report.summary()
        else:
            assert abs(loader.found_hang_s - loader.truth_hang_s) <= 0.01 * span, report.summary()
    if name.startswith("over-trucked"):
        assert report.truth_queue_s > 0.1 * sum(lo.truth_busy_s for lo in report.loaders), report.summary()


def test_hourly_rows_add_up_to_the_visits_totals():
    spec = scenario_spec("staging-queue", trucks=12, hours=6.0, seed=21)
    sim = simulate(spec)
    result = replay(((f"line {i}", line) for i, (_, line) in enumerate(sim.deliveries)), sim.reference)
    by_loader: dict[str, list[float]] = defaultdict(lambda: [0, 0.0, 0.0, 0.0])
    for row in result.loader_hours.values():
        totals = by_loader[row.loader_guid]
        totals[0] += row.loads
        totals[1] += row.busy_seconds
        totals[2] += row.hang_seconds
        totals[3] += row.queue_seconds
    served = [sv for sv in result.served.values() if sv.service_start_ms is not None]
    for loader, (loads, busy, hang, queue) in by_loader.items():
        mine = sorted((sv for sv in served if sv.visit.loader_guid == loader), key=lambda sv: sv.visit.departure_ms)
        assert loads == len(mine)
        assert busy == pytest.approx(sum((sv.visit.departure_ms - sv.service_start_ms) / 1000 for sv in mine), abs=1)
        gaps = sum(max(0, b.service_start_ms - a.visit.departure_ms) / 1000 for a, b in zip(mine, mine[1:], strict=False))
        assert hang == pytest.approx(gaps, abs=1)
        assert queue == pytest.approx(sum(sv.queue_seconds for sv in mine), abs=1)
    for row in result.loader_hours.values():
        assert 0 < row.trucks_served <= row.loads or row.loads == 0
