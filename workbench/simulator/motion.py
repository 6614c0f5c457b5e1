"""Exact motion: a process's plan is a list of legs (driving along a polyline at piecewise-constant
speed, or standing at a point), from which pings are sampled."""

from __future__ import annotations

import random
from typing import Any

from state_machine.model import WORKING
from workbench.simulator.geometry import BENCH, FLAT, HAIRPIN, RAMP, Polyline

MOVE = 0
STAND = 1
STAND_REPORTED = 2
"""Standing, and reported at both ends whatever the device's schedule: an idle row when the truck
stops and one as it moves off, so the stop as the spec reads it (first to last idle report) is its
true length (the threshold stops of ``SimulationSpec.threshold_stops``)."""
# a leg: (t0_ms, t1_ms, kind, payload, work_state); payload = (path, d0, d1) or (x, y)
Leg = tuple[int, int, int, Any, int]


def drive(path: Polyline, t0: int, v: float | dict[str, float], slow_start: bool = True, slow_end: bool = True,
           legs: list[Leg] | None = None) -> tuple[list[Leg], int]:
    """Legs driving along path from t0 (speeds in m/s, one per road kind, or one for all), slower
    over the first 40 m (half speed) and the last 60 m (0.4 x)."""
    out: list[Leg] = [] if legs is None else legs
    speeds = v if isinstance(v, dict) else {FLAT: v, RAMP: v, HAIRPIN: v, BENCH: v}
    length = path.length
    s1 = min(40.0, 0.25 * length) if slow_start else 0.0
    s2 = length - (min(60.0, 0.25 * length) if slow_end else 0.0)
    marks = sorted({0.0, s1, s2, length, *(c for c in path.cum if 0.0 < c < length)})
    t = t0
    run: tuple[float, float, float] | None = None  # (d0, d1, speed) merged while the speed stays
    pieces: list[tuple[float, float, float]] = []
    for d0, d1 in zip(marks, marks[1:], strict=False):
        if d1 - d0 <= 1e-9:
            continue
        mid = (d0 + d1) / 2
        speed = speeds.get(path.kind_at(mid), speeds[FLAT])
        if mid < s1:
            speed *= 0.5
        elif mid > s2:
            speed *= 0.4
        if run is not None and abs(run[2] - speed) < 1e-9:
            run = (run[0], d1, speed)
        else:
            if run is not None:
                pieces.append(run)
            run = (d0, d1, speed)
    if run is not None:
        pieces.append(run)
    for d0, d1, speed in pieces:
        t1 = t + max(1, int(round((d1 - d0) / speed * 1000)))
        out.append((t, t1, MOVE, (path, d0, d1), WORKING))
        t = t1
    return out, t


def kmh(rng: random.Random, lo: float, hi: float, factor: float) -> float:
    return rng.uniform(lo, hi) * factor / 3.6


