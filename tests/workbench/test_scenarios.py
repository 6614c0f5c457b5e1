"""Every named scenario family of the simulator, end to end through the pure engine, on several seeds.

The common bar (issue: cycle engine, restored by the issue "tests that can fail"): recall and
precision >= 0.99, COMPLETE recall and COMPLETE precision >= 0.99, status agreement >= 0.97, median
total-cycle error within one ping interval, on every seed of SEEDS. A family added to
SCENARIO_FAMILIES runs on these seeds with this bar without any change here. A family that cannot
meet it gets an entry in FAMILY_BARS: the bar it meets instead, with the measured reason and every
seed it was measured on (a bar is never lowered to make a test pass; it is lowered only where the
data cannot tell, and says why).

The families cover the geometries and devices that broke earlier engines: switchback and spiral
ramps, slow loaded ramps, faces 150-300 m apart with the haul road passing every loader, queues in
the loader bay and at staging points, sparse (on-change) devices, degraded delivery, and stops
exactly at and just under the idle threshold. Seed 21 runs in the fast tier; the other seeds are
marked slow (CI runs them all).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import pytest

from state_machine.config import CycleThresholds, EngineConfig
from state_machine.telemetry import parse_record
from workbench.replay import replay
from workbench.scoring import ScoreReport, score
from workbench.simulator import SCENARIO_FAMILIES, SimulationSpec, scenario_spec, simulate


def _replay(spec: SimulationSpec, config: EngineConfig | None = None):
    sim = simulate(spec)
    return sim, replay(((f"line {i}", line) for i, (_, line) in enumerate(sim.deliveries)), sim.reference, config)

SEEDS = (21, 22, 23)
SEED_PARAMS = [pytest.param(seed, marks=() if seed == SEEDS[0] else pytest.mark.slow) for seed in SEEDS]


@dataclass(frozen=True)
class Bar:
    """Lowest scores a family must reach on each seed."""

    recall: float = 0.99
    precision: float = 0.99
    complete_recall: float = 0.99
    complete_precision: float = 0.99
    status_agreement: float = 0.97
    why: str = ""
    """For a family-specific bar: the measured reason, with the seeds it was measured on."""


COMMON_BAR = Bar()

FAMILY_BARS: dict[str, Bar] = {
    "staging-queue": replace(
        COMMON_BAR, complete_recall=0.97,
        why="measured on seeds 21, 22, 23 (12 trucks x 6 h): COMPLETE recall 1.000 / 1.000 / 0.976. Every COMPLETE "
            "cycle missed on seed 23 (3 of 127) is a staging-point wait whose true length is 591-599 s, within one "
            "ping interval (10-30 s) below the 600 s TRAVEL_IDLE threshold, and which the pings show as 600-602 s: "
            "status near a threshold, which the data cannot place; found as OUTLIER TRAVEL_IDLE."),
    "over-trucked-staging": replace(
        COMMON_BAR, complete_recall=0.98,
        why="measured on seeds 21, 22, 23 (16 trucks x 6 h, two loaders, queues at staging points outside the bay): "
            "COMPLETE recall 0.990 (192 of 194) / 1.000 / 1.000, precision, recall and COMPLETE precision >= 0.995. "
            "An over-trucked loader makes many trucks wait at its staging point for close to the 600 s TRAVEL_IDLE "
            "threshold; a standstill within a ping interval of it can be seen on either side (seed 21: 2 of 194 "
            "COMPLETE seen OUTLIER, 1 of 6 OUTLIER seen COMPLETE; every cycle found, load starts within 30 s)."),
}
"""Family-specific bars (see the module docstring). Each names its measured reason and seeds."""


def _is_stray(letter, sim, spec: SimulationSpec) -> bool:
    """Whether a dead letter is a glitch truck's stray: a copy of a delivered point of its truck (same
    position and work state) stamped glitch_offset_s away from it."""
    if not spec.glitch_trucks:
        return False
    stray = parse_record(letter.raw)
    origin = stray._replace(ts_ms=stray.ts_ms - int(spec.glitch_offset_s * 1000))
    return any(parse_record(line) == origin for _, line in sim.deliveries if origin.asset_guid in line)


def _run(name: str, seed: int, config: EngineConfig | None = None):
    spec = scenario_spec(name, trucks=12, hours=6.0, seed=seed)
    sim, result = _replay(spec, config)
    return spec, sim, result, score(sim.truth, result.closed)


def _assert_meets(report: ScoreReport, bar: Bar, ping_interval_max_s: float, min_truth: int) -> None:
    summary = report.summary()
    assert report.truth_count > min_truth, summary
    assert report.precision >= bar.precision and report.recall >= bar.recall, summary
    assert report.complete_recall is not None and report.complete_recall >= bar.complete_recall, summary
    assert report.complete_precision is not None and report.complete_precision >= bar.complete_precision, summary
    assert report.status_agreement is not None and report.status_agreement >= bar.status_agreement, summary
    assert report.total_cycle_error.median <= ping_interval_max_s, summary


@pytest.mark.parametrize("seed", SEED_PARAMS)
@pytest.mark.parametrize("name", list(SCENARIO_FAMILIES))
def test_replay_finds_truth_cycles(name: str, seed: int):
    spec, sim, result, report = _run(name, seed)
    rejected = [d for d in result.dead_letters if d.reason in ("LATE", "CLOCK_JUMP")]
    # no genuine point is ever late or taken for a clock jump at default settings: only strays are
    assert [d for d in rejected if not _is_stray(d, sim, spec)] == [], name
    _assert_meets(report, FAMILY_BARS.get(name, COMMON_BAR), spec.ping_interval_s[1], 50 * spec.sites)


def test_family_bars_are_few_known_and_explained():
    for name, bar in FAMILY_BARS.items():
        assert name in SCENARIO_FAMILIES, name
        assert bar != replace(COMMON_BAR, why=bar.why), f"{name}: same as the common bar"
        assert "measured" in bar.why and all(f"{seed}" in bar.why for seed in SEEDS), name


def test_threshold_stops_family_fails_an_engine_that_reads_the_threshold_otherwise():
    """The stops exactly at the 20 s idle threshold count, the shorter ones do not: an engine that
    needs more than the threshold misses loads and dumps, one that needs less finds dumps the spec
    does not read."""
    strict = EngineConfig(defaults=CycleThresholds(load_idle_s=20.001, dump_idle_s=20.001))
    *_, report = _run("threshold-stops", SEEDS[0], strict)
    assert report.complete_recall < 0.9, report.summary()
    lax = EngineConfig(defaults=CycleThresholds(load_idle_s=20.0, dump_idle_s=5.0))
    *_, report = _run("threshold-stops", SEEDS[0], lax)
    assert report.complete_precision < 0.9, report.summary()


def test_degraded_input_is_accounted_for():
    """Every delivered line is applied, a counted duplicate, a non-truck, or a dead letter."""
    _, sim, result, _ = _run("degraded", seed=21)
    assert result.records == len(sim.deliveries)
    accounted = result.applied_points + result.non_truck + len(
        [d for d in result.dead_letters if d.source != "engine"])
    assert accounted == result.records
    reasons = {d.reason for d in result.dead_letters}
    assert "UNKNOWN_ASSET" in reasons and "BAD_JSON" in reasons
    assert result.duplicates > 0 and result.reordered > 0 and result.non_truck > 0


@pytest.mark.parametrize("seed", SEED_PARAMS)
def test_degraded_and_sparse_idle_together(seed: int):
    """The hardest mix (sparse stationary logging + every degradation) meets the common bar. (It was
    held to 0.98 on seed 26 only; measured on seeds 21, 22, 23 and 26: recall and precision 0.990-1.000,
    COMPLETE recall 0.994-1.000, COMPLETE precision 0.995-1.000.)"""
    spec = scenario_spec("sparse-idle", trucks=12, hours=6.0, seed=seed).degraded()
    sim = simulate(spec)
    result = replay(((f"line {i}", line) for i, (_, line) in enumerate(sim.deliveries)), sim.reference)
    _assert_meets(score(sim.truth, result.closed), COMMON_BAR, spec.ping_interval_s[1], 50)
