"""Exact motion: a process's plan is a list of legs (driving along a polyline at piecewise-constant
speed, or standing at a point), from which pings are sampled."""

from __future__ import annotations

import math
import random
from typing import Any

from state_machine.model import WORKING
from workbench.simulator.geometry import BENCH, FLAT, HAIRPIN, RAMP, XY, Polyline

MOVE = 0
STAND = 1
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




def entry_time(legs: list[Leg], centre: XY, radius_m: float) -> int | None:
    """When the process last came within ``radius_m`` of ``centre`` before it first stood there: the
    start of the stretch inside that ends in its first stand inside (exact to a millisecond: a 1 m scan
    along each driving leg, then bisection); None if it never stands inside."""

    def inside_at(path: Polyline, d: float) -> bool:
        x, y = path.at(d)
        return math.hypot(x - centre[0], y - centre[1]) <= radius_m

    entry: int | None = None
    was_inside = False
    for t0, t1, kind, payload, _ws in legs:
        if kind == STAND:
            now_inside = math.hypot(payload[0] - centre[0], payload[1] - centre[1]) <= radius_m
            if now_inside and not was_inside:
                entry = t0
            if now_inside:
                return entry
            was_inside = False
            continue
        path, d0, d1 = payload
        steps = max(1, int(math.ceil(d1 - d0)))
        prev_d = d0
        for k in range(steps + 1):
            d = d0 + (d1 - d0) * k / steps
            now_inside = inside_at(path, d)
            if now_inside and not was_inside:
                lo, hi = prev_d, d
                while k and (hi - lo) * (t1 - t0) / (d1 - d0) > 1.0:
                    mid = (lo + hi) / 2
                    lo, hi = (lo, mid) if inside_at(path, mid) else (mid, hi)
                entry = t0 + int(round((hi - d0) / (d1 - d0) * (t1 - t0)))
            was_inside = now_inside
            prev_d = d
    return None
