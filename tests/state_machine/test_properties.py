"""Property-based tests of the engine on hypothesis-generated pit tracks (tests/state_machine/pit_tracks).

* Invariants, on every closed and every in-progress cycle, for any track (slow and winding roads past
  a loader, bay queues, road stops, skipped dumps, short stops, gaps, duplicates, disorder):
  load_start <= load_end <= dump_start <= dump_end <= cycle_end; durations >= 0 and adding up to the
  total; a TRAVEL_IDLE outlier no longer than the travel it happened in nor than travel_idle_seconds.
* Dense-data agreement: when every stop is covered by >= 2 idle points spanning the threshold and no
  gap exceeds twice the truck's interval, the closed cycles equal the plain reading of the spec
  (pit_tracks.spec_literal_cycles), whatever the delivery order within max_disorder_s.
"""

from __future__ import annotations

import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from state_machine.model import CycleRecord, TelemetryPoint
from state_machine.truck import END_OF_INPUT, TruckEngine
from tests.state_machine.pit_tracks import TrackSpec, build_track, pit_site, spec_literal_cycles

SITE = pit_site()
PROPERTY = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def track_specs(dense: bool) -> st.SearchStrategy[TrackSpec]:
    """Tracks of 1-5 cycles, devices every 5-30 s, loaded 2.5-8 m/s, empty 6-12 m/s."""
    p = st.sampled_from([0.0, 0.3, 0.7])
    return st.builds(
        TrackSpec,
        seed=st.integers(0, 10**9),
        cycles=st.integers(1, 5),
        interval_s=st.floats(5.0, 30.0),
        loaded_mps=st.floats(2.5, 8.0),
        empty_mps=st.floats(6.0, 12.0),
        switchback=st.booleans(),
        gps_sigma_m=st.sampled_from([0.0, 2.0, 3.0]),
        stop_at_l2_p=p,
        road_stop_p=p,
        skip_dump_p=st.sampled_from([0.0, 0.3]),
        bay_queue_p=st.just(0.0) if dense else p,
        short_stops=st.just(False) if dense else st.booleans(),
    )


def delivered(points: list[TelemetryPoint], rng: random.Random, disorder_s: float, duplicates: float,
              drop: float, outage: bool) -> list[TelemetryPoint]:
    """Delivery order: dropped points, a silent stretch, duplicates, each delayed by 0..disorder_s."""
    kept = [p for p in points if rng.random() >= drop]
    if outage and len(kept) > 20:
        start = rng.randrange(len(kept) - 10)
        kept = kept[:start] + kept[start + rng.randrange(3, 10):]
    kept += [p for p in kept if rng.random() < duplicates]
    keyed = [(p.ts_ms + rng.uniform(0, disorder_s) * 1000, i, p) for i, p in enumerate(kept)]
    return [p for _, _, p in sorted(keyed)]


def run_engine(arrivals: list[TelemetryPoint]) -> tuple[list[CycleRecord], list[CycleRecord]]:
    """(closed cycles, every in-progress row emitted) of one truck, flushed at the end of input."""
    engine = TruckEngine()
    state = None
    closed: list[CycleRecord] = []
    rows: list[CycleRecord] = []
    for p in arrivals:
        out, state = engine.on_point(state, p, SITE)
        closed += out.closed
        if out.in_progress is not None:
            rows.append(out.in_progress)
    if state is not None:
        out, state = engine.on_timer(state, 0, END_OF_INPUT, SITE)
        closed += out.closed
        if out.in_progress is not None:
            rows.append(out.in_progress)
    return closed, rows


def check_invariants(rec: CycleRecord) -> None:
    times = [t for t in (rec.load_start_ms, rec.load_end_ms, rec.dump_start_ms, rec.dump_end_ms,
                         rec.cycle_end_ms) if t is not None]
    assert times == sorted(times), rec
    for name in ("load_seconds", "load_travel_seconds", "dump_seconds", "empty_travel_seconds",
                 "total_cycle_seconds", "travel_idle_seconds"):
        value = getattr(rec, name)
        assert value is None or value >= 0, (name, rec)
    parts = (rec.load_seconds, rec.load_travel_seconds, rec.dump_seconds, rec.empty_travel_seconds)
    if rec.total_cycle_seconds is not None and None not in parts:
        assert abs(sum(parts) - rec.total_cycle_seconds) < 0.01, rec
    if rec.outlier_rule == "TRAVEL_IDLE":
        assert rec.outlier_seconds <= rec.travel_idle_seconds + 0.01, rec
        travel = [s for s in (rec.load_travel_seconds, rec.empty_travel_seconds) if s is not None]
        if rec.load_end_ms is not None and rec.cycle_end_ms is not None and rec.dump_start_ms is None:
            travel.append((rec.cycle_end_ms - rec.load_end_ms) / 1000.0)  # no dump: all of it is travel
        if travel:
            assert rec.outlier_seconds <= max(travel) + 0.01, rec


def summary(recs: list[CycleRecord]) -> list[tuple]:
    return [(r.load_start_ms, r.load_end_ms, r.dump_start_ms, r.dump_end_ms, r.cycle_end_ms, r.cycle_status,
             r.invalid_reason, r.outlier_rule) for r in sorted(recs, key=lambda r: r.load_start_ms)]


@PROPERTY
@given(spec=track_specs(dense=False), rng_seed=st.integers(0, 10**6), disorder_s=st.sampled_from([0.0, 30.0, 59.0]),
       duplicates=st.sampled_from([0.0, 0.05]), drop=st.sampled_from([0.0, 0.05, 0.3]), outage=st.booleans())
def test_every_cycle_is_well_formed(spec: TrackSpec, rng_seed: int, disorder_s: float, duplicates: float,
                                    drop: float, outage: bool):
    arrivals = delivered(build_track(spec), random.Random(rng_seed), disorder_s, duplicates, drop, outage)
    closed, rows = run_engine(arrivals)
    for rec in closed + rows:
        check_invariants(rec)


@PROPERTY
@given(spec=track_specs(dense=True), rng_seed=st.integers(0, 10**6), disorder_s=st.sampled_from([0.0, 30.0, 59.0]),
       duplicates=st.sampled_from([0.0, 0.05]))
def test_dense_data_agrees_with_the_plain_reading_of_the_spec(spec: TrackSpec, rng_seed: int, disorder_s: float,
                                                              duplicates: float):
    points = build_track(spec)
    closed, _ = run_engine(delivered(points, random.Random(rng_seed), disorder_s, duplicates, 0.0, False))
    assert summary(closed) == spec_literal_cycles(points, SITE)


def test_slow_switchback_past_a_loader_is_not_a_load():
    """The pit that broke the pair rule: loaded at 2.5 m/s up a switchback, pings every 17 s, past L2
    at 30 m: exactly one cycle per load at L1, all COMPLETE."""
    spec = TrackSpec(seed=7, cycles=4, interval_s=17.0, loaded_mps=2.5, empty_mps=8.0, switchback=True,
                     gps_sigma_m=3.0)
    closed, _ = run_engine(build_track(spec))
    assert [c.cycle_status for c in closed] == ["COMPLETE"] * 4
    assert {c.loader_asset_guid for c in closed} == {"L1"}
    assert all(c.travel_idle_seconds == 0 for c in closed)
