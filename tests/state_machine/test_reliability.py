"""Hostile input, backlogs and clock trouble through the pure engine (the replay path).

Expected behaviour (docs/reliability.md):
  * hostile/malformed records never crash anything; each lands in the dead letters with a reason;
    the valid records' cycles are exactly those of the clean stream;
  * a truck offline for 30 minutes that delivers its backlog late still gets all its cycles;
  * a clock that jumps backwards: points older than the applied ones are dead-lettered LATE (none
    lost silently) and cycles already closed stay untouched; the truck resumes when its clock does;
  * a burst of 100k duplicates is dropped and counted; cycles unchanged.
"""

from __future__ import annotations

import json
import random
from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from state_machine.config import CycleThresholds
from state_machine.model import TelemetryPoint
from state_machine.telemetry import format_record, parse_record
from workbench.replay import Replayer, replay
from workbench.scoring import score
from workbench.simulator import SimulationSpec, simulate

SPEC = SimulationSpec(trucks=6, hours=4.0, seed=31)


def _sim():
    return simulate(SPEC)


def assert_found_the_truth(sim, result) -> None:
    """The undisturbed replay a test compares against found the simulator's cycles: two results that
    found nothing would compare equal too."""
    report = score(sim.truth, result.closed)
    assert report.truth_count >= 50 and report.recall >= 0.99 and report.precision >= 0.99, report.summary()


def cycles_during(result, truck: str, start_ms: int, end_ms: int) -> list:
    """The truck's closed cycles that overlap [start_ms, end_ms)."""
    return [c for c in result.sorted_closed()
            if c.asset_guid == truck and c.load_start_ms < end_ms and (c.cycle_end_ms or end_ms) > start_ms]


def _records(lines):
    return [(f"line {i}", line) for i, line in enumerate(lines)]


HOSTILE_FIXED = [
    "", " ", "{", "}", "[]", "null", "42", '"text"', "{'single': 'quotes'}", "\x00\x01\x02",
    '{"asset_guid": "x"}',
    '{"asset_guid": null, "site_guid": "S", "timestamp": "2024-01-15T06:00:00Z", "latitude": 1, "longitude": 1, "work_state_id": 2}',
    '{"asset_guid": "\'; DROP TABLE dx.asset_cycle_vlx;--", "site_guid": "SITE-01", "timestamp": "2024-01-15T06:00:00Z", "latitude": -22.7, "longitude": 118.7, "work_state_id": 3}',
    '{"asset_guid": "T", "site_guid": "SITE-01", "timestamp": "2024-01-15T06:00:00", "latitude": -22.7, "longitude": 118.7, "work_state_id": 3}',
    '{"asset_guid": "T", "site_guid": "SITE-01", "timestamp": "1970-01-01T00:00:00Z", "latitude": -22.7, "longitude": 118.7, "work_state_id": 3}',
    '{"asset_guid": "T", "site_guid": "SITE-01", "timestamp": "9999-12-31T23:59:59Z", "latitude": -22.7, "longitude": 118.7, "work_state_id": 3}',
    '{"asset_guid": "T", "site_guid": "SITE-01", "timestamp": "2024-01-15T06:00:00Z", "latitude": NaN, "longitude": 118.7, "work_state_id": 3}',
    '{"asset_guid": "T", "site_guid": "SITE-01", "timestamp": "2024-01-15T06:00:00Z", "latitude": 1e999, "longitude": 118.7, "work_state_id": 3}',
    '{"asset_guid": "T", "site_guid": "SITE-01", "timestamp": "2024-01-15T06:00:00Z", "latitude": 91, "longitude": 118.7, "work_state_id": 3}',
    '{"asset_guid": "T", "site_guid": "SITE-01", "timestamp": "2024-01-15T06:00:00Z", "latitude": 0, "longitude": 0, "work_state_id": 3}',
    '{"asset_guid": "T", "site_guid": "SITE-01", "timestamp": "2024-01-15T06:00:00Z", "latitude": -22.7, "longitude": 118.7, "work_state_id": 7}',
    '{"asset_guid": "T", "site_guid": "SITE-01", "timestamp": "2024-01-15T06:00:00Z", "latitude": "-22.7", "longitude": 118.7, "work_state_id": 3}',
    '{"asset_guid": "T", "site_guid": "SITE-01", "timestamp": "2024-01-15T06:00:00Z", "latitude": -22.7, "longitude": 118.7, "work_state_id": true}',
    '{"asset_guid": "' + "Ω≈ç√∫˜µ≤≥÷" * 30 + '", "site_guid": "SITE-01", "timestamp": "2024-01-15T06:00:00Z", "latitude": -22.7, "longitude": 118.7, "work_state_id": 3}',
    '{"asset_guid": "' + "A" * 1_000_000 + '"}',
    "x" * 1_000_000,
]


def _hostile_generated(n: int, seed: int) -> list[str]:
    """n hostile records: broken JSON, wrong types, out-of-range values, unknown assets."""
    rng = random.Random(seed)
    good = {"asset_guid": "S01-HT-001", "site_guid": "SITE-01", "timestamp": "2024-01-15T07:00:00.000Z",
            "latitude": -22.7, "longitude": 118.7, "work_state_id": 3}
    bad_values = [None, "", "x" * 300, [], {}, True, -1, 1e308, float("inf"), "NaN", "2024-13-45T99:99:99Z",
                  "\u202e\u0000", "'; DROP TABLE x;--", 7, 2.5, "3"]
    out: list[str] = []
    while len(out) < n:
        kind = rng.randrange(4)
        if kind == 0:  # truncated or corrupted JSON
            text = json.dumps(good)
            cut = rng.randrange(1, len(text) - 1)
            out.append(text[:cut] if rng.random() < 0.5 else text[:cut] + chr(rng.randrange(1, 0x2FFF)) + text[cut:])
        elif kind == 1:  # one field with a wrong value
            rec = dict(good)
            rec[rng.choice(list(good))] = rng.choice(bad_values)
            text = json.dumps(rec, allow_nan=True)
            if not isinstance(parse_record(text), TelemetryPoint):  # some "bad" values are valid here
                out.append(text)
        elif kind == 2:  # a field missing
            rec = dict(good)
            del rec[rng.choice(list(good))]
            out.append(json.dumps(rec))
        else:  # valid shape, unknown asset (must not disturb real trucks)
            rec = dict(good, asset_guid=f"GHOST-{rng.randrange(10**6)}")
            out.append(json.dumps(rec))
    return out


def test_ten_thousand_hostile_records_mixed_into_a_valid_stream():
    sim = _sim()
    clean = replay(_records(sim.telemetry_lines), sim.reference)
    assert_found_the_truth(sim, clean)
    hostile = HOSTILE_FIXED + _hostile_generated(10_000, seed=5)
    lines = list(sim.telemetry_lines)
    rng = random.Random(9)
    for bad in hostile:
        lines.insert(rng.randrange(len(lines) + 1), bad)
    mixed = replay(_records(lines), sim.reference)
    assert mixed.sorted_closed() == clean.sorted_closed()
    assert mixed.in_progress == clean.in_progress
    extra_letters = len(mixed.dead_letters) - len(clean.dead_letters)
    assert extra_letters == len(hostile), "every hostile record is dead-lettered exactly once"
    assert all(d.reason for d in mixed.dead_letters)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(raw=st.one_of(st.binary(max_size=300), st.text(max_size=300),
                     st.dictionaries(st.sampled_from(["asset_guid", "site_guid", "timestamp", "latitude",
                                                      "longitude", "work_state_id", "extra"]),
                                     st.one_of(st.none(), st.booleans(), st.integers(), st.floats(),
                                               st.text(max_size=40)), max_size=7).map(json.dumps)))
def test_any_input_is_applied_or_dead_lettered_never_raises(raw):
    sim_ref = _REF
    result = replay([("fuzz", raw)], sim_ref)
    assert result.records == 1
    assert result.applied_points + result.non_truck + len(result.dead_letters) == 1


_REF = simulate(SimulationSpec(trucks=1, hours=0.2, seed=1)).reference


def test_truck_offline_30_minutes_backlog_delivered_late_keeps_its_cycles():
    sim = _sim()
    truck = "S01-HT-002"
    points = [(i, line) for i, line in enumerate(sim.telemetry_lines)]
    parsed = {i: parse_record(line) for i, line in points}
    start = SPEC.start_ms + 90 * 60_000
    end = start + 30 * 60_000
    held = [line for i, line in points if getattr(parsed[i], "asset_guid", None) == truck
            and start <= parsed[i].ts_ms < end]
    assert len(held) > 40
    held_set = set(held)
    rest = [line for _, line in points if line not in held_set]
    reconnect = next(k for k, line in enumerate(rest) if getattr(parse_record(line), "ts_ms", 0) >= end)
    delivered = rest[:reconnect] + held + rest[reconnect:]  # the whole backlog arrives at reconnection
    online = replay(_records(sim.telemetry_lines), sim.reference)
    offline = replay(_records(delivered), sim.reference)
    assert_found_the_truth(sim, online)
    assert len(cycles_during(online, truck, start, end)) >= 2  # the backlog holds cycles
    assert offline.sorted_closed() == online.sorted_closed()
    assert not [d for d in offline.dead_letters if d.reason == "LATE"]


def test_clock_jumping_backwards_dead_letters_late_points_and_keeps_closed_cycles():
    sim = _sim()
    truck = "S01-HT-003"
    jump_at = SPEC.start_ms + 2 * 3_600_000
    lines = []
    shifted = 0
    for line in sim.telemetry_lines:
        p = parse_record(line)
        if getattr(p, "asset_guid", None) == truck and p.ts_ms >= jump_at:
            lines.append(format_record(p._replace(ts_ms=p.ts_ms - 3_600_000)))  # clock now 1 h behind
            shifted += 1
        else:
            lines.append(line)
    clean = replay(_records(sim.telemetry_lines), sim.reference)
    jumped = replay(_records(lines), sim.reference)
    assert_found_the_truth(sim, clean)
    streaming = Replayer(sim.reference)  # the cycles closed when the first point of the jumped clock arrives
    first_jumped = next(i for i, (old, new) in enumerate(zip(sim.telemetry_lines, lines, strict=True)) if old != new)
    for source, line in _records(lines[:first_jumped]):
        streaming.feed(source, line)
    streaming.flush()
    closed_then = {c.load_start_ms for c in streaming.result.closed if c.asset_guid == truck}
    before = [c for c in clean.sorted_closed() if c.asset_guid == truck and c.load_start_ms in closed_then]
    assert len(before) >= 3
    after_jump = [c for c in jumped.sorted_closed() if c.asset_guid == truck]
    assert after_jump[: len(before)] == before  # nothing closed before the jump changes
    late = [d for d in jumped.dead_letters if d.reason == "LATE" and d.asset_guid == truck]
    assert late, "points from the past are reported, never silently dropped"
    accounted = len(late) + sum(1 for d in jumped.dead_letters if d.asset_guid == truck and d.reason != "LATE")
    assert accounted <= shifted
    # the other trucks' cycles are unchanged (their queue at a loader may not be: the truck's shifted
    # visits take places in its loaders' order of service)
    others = [replace(c, queue_seconds=None) for c in jumped.sorted_closed() if c.asset_guid != truck]
    assert others == [replace(c, queue_seconds=None) for c in clean.sorted_closed() if c.asset_guid != truck]


def test_burst_of_100k_duplicates_is_dropped_and_counted():
    sim = _sim()
    lines = list(sim.telemetry_lines)
    rng = random.Random(4)
    burst_at = len(lines) // 2
    window = lines[burst_at - 300: burst_at]
    burst = [window[rng.randrange(len(window))] for _ in range(100_000)]
    clean = replay(_records(lines), sim.reference)
    assert_found_the_truth(sim, clean)
    noisy = replay(_records(lines[:burst_at] + burst + lines[burst_at:]), sim.reference)
    assert noisy.sorted_closed() == clean.sorted_closed()
    assert noisy.duplicates - clean.duplicates + (noisy.non_truck - clean.non_truck) + (
        len(noisy.dead_letters) - len(clean.dead_letters)) == 100_000


# --------------------------------------------------------------------------- clock glitches, backlogs

GLITCH_TRUCKS = ("S01-HT-001", "S01-HT-002", "S01-HT-003", "S01-HT-004", "S01-HT-005")


def _with_strays(lines: list[str], shift_ms: int) -> tuple[list[str], dict[str, int]]:
    """One stray per glitch truck, in the middle of its day: a copy of one of its points (same
    position) stamped ``shift_ms`` later, delivered right after it; then the normal timeline."""
    seen: dict[str, int] = {}
    strays: dict[str, int] = {}
    out: list[str] = []
    for line in lines:
        out.append(line)
        p = parse_record(line)
        if not isinstance(p, TelemetryPoint) or p.asset_guid not in GLITCH_TRUCKS:
            continue
        seen[p.asset_guid] = seen.get(p.asset_guid, 0) + 1
        if seen[p.asset_guid] == 300:
            stray = p._replace(ts_ms=p.ts_ms + shift_ms)
            strays[p.asset_guid] = stray.ts_ms
            out.append(format_record(stray))
    assert len(strays) == len(GLITCH_TRUCKS)
    return out, strays


def _cycles_by_truck(result) -> dict[str, list]:
    """Closed cycles by truck, without their queue (a changed visit of a glitch truck may change its
    loader's order of service, hence the queue of the trucks served after it)."""
    by: dict[str, list] = {}
    for c in result.sorted_closed():
        by.setdefault(c.asset_guid, []).append(replace(c, queue_seconds=None))
    return by


def _assert_glitch_contained(clean, glitched, strays: dict[str, int], rejected_as: tuple[str, ...] = ("CLOCK_JUMP",),
                             reach_ms: int = 0, shift_ms: int = 0) -> None:
    """At most the one cycle holding the stray changes per glitch truck, nothing else anywhere, and no
    genuine point is dead-lettered (only strays, as ``rejected_as``). The cycle holding the stray: the
    one whose points count it in either run (up to the confirmation of the next load, its
    ``last_event_ms``, which can be after its end), or whose start is ``reach_ms`` after it, or, for a
    stray ``shift_ms`` away from when it was sent, the cycle running then (a truck's last point, a
    stray, closes it); at the end of the input a stray ahead that nothing refuted yet is taken, and
    closes the cycle open then as DATA_GAP (a genuine point is never rejected for want of evidence).
    A stray can move the start of a load, which is also the end of the cycle before: read as the first
    point of that load, or, in the cycle before, as standing evidence (it repeats an earlier position)
    just before it. So two cycles sharing that boundary may both change, provided one of them holds
    the stray."""
    before, after = _cycles_by_truck(clean), _cycles_by_truck(glitched)
    for truck in set(before) | set(after):
        b, a = before.get(truck, []), after.get(truck, [])
        if truck not in strays:
            assert a == b, truck
            continue

        def holds_the_stray(c, a=a, b=b, truck=truck) -> bool:
            """Whether the cycle, as either run closed it (same load start), holds the stray."""
            if a and c is a[-1] and c.invalid_reason == "DATA_GAP" and c not in b:
                return True  # the cycle open at the end of the input, closed by the gap to a stray nothing refuted
            for v in [v for v in (*a, *b) if v.load_start_ms == c.load_start_ms] or [c]:
                last = max(v.cycle_end_ms or strays[truck], v.last_event_ms or 0)
                if any(v.load_start_ms - reach_ms <= moment <= last for moment in (strays[truck], strays[truck] - shift_ms)):
                    return True
            return False

        for changed in ([c for c in b if c not in a], [c for c in a if c not in b]):
            changed.sort(key=lambda c: c.load_start_ms)
            if len(changed) == 2 and changed[0].cycle_end_ms == changed[1].load_start_ms:
                assert holds_the_stray(changed[0]) or holds_the_stray(changed[1]), (truck, changed)  # a moved boundary
                continue
            assert len(changed) <= 1, (truck, changed)
            assert all(holds_the_stray(c) for c in changed), (truck, changed)
    new_letters = [d for d in glitched.dead_letters if d not in clean.dead_letters]
    for letter in new_letters:
        assert letter.reason in rejected_as and letter.ts_ms == strays[letter.asset_guid], letter
    assert len(new_letters) <= len(strays)


def test_stray_two_minutes_ahead_is_committed_in_order_and_changes_at_most_its_cycle():
    sim = _sim()
    clean = replay(_records(sim.telemetry_lines), sim.reference)
    assert_found_the_truth(sim, clean)
    lines, strays = _with_strays(sim.telemetry_lines, 2 * 60_000)
    glitched = replay(_records(lines), sim.reference)
    _assert_glitch_contained(clean, glitched, strays)
    assert not [d for d in glitched.dead_letters if d.reason in ("LATE", "CLOCK_JUMP")]  # caught up, in order


def test_stray_thirty_minutes_or_two_hours_ahead_is_rejected_as_clock_jump():
    sim = _sim()
    clean = replay(_records(sim.telemetry_lines), sim.reference)
    assert_found_the_truth(sim, clean)
    for shift in (30 * 60_000, 2 * 3_600_000):
        lines, strays = _with_strays(sim.telemetry_lines, shift)
        glitched = replay(_records(lines), sim.reference)
        _assert_glitch_contained(clean, glitched, strays)
        jumps = [d for d in glitched.dead_letters if d.reason == "CLOCK_JUMP"]
        assert sorted(d.asset_guid for d in jumps) == sorted(strays), shift
        assert glitched.sorted_closed() == clean.sorted_closed(), shift
        assert len([a for a in glitched.alerts if a.alert_type == "CLOCK_JUMP"]) == len(strays)


def test_stray_from_a_clock_that_jumped_back_is_rejected_alone():
    """One point stamped 30 min in the past (position of the point before it): it alone is LATE."""
    sim = _sim()
    clean = replay(_records(sim.telemetry_lines), sim.reference)
    assert_found_the_truth(sim, clean)
    lines, strays = _with_strays(sim.telemetry_lines, -30 * 60_000)
    glitched = replay(_records(lines), sim.reference)
    assert glitched.sorted_closed() == clean.sorted_closed()
    new_letters = [d for d in glitched.dead_letters if d not in clean.dead_letters]
    assert sorted((d.asset_guid, d.reason, d.ts_ms) for d in new_letters) == sorted(
        (truck, "LATE", ts) for truck, ts in strays.items())


def _outage(sim, truck: str, start: int, end: int):
    points = [(i, line) for i, line in enumerate(sim.telemetry_lines)]
    parsed = {i: parse_record(line) for i, line in points}
    held = [line for i, line in points if getattr(parsed[i], "asset_guid", None) == truck
            and start <= parsed[i].ts_ms < end]
    held_set = set(held)
    rest = [line for _, line in points if line not in held_set]
    return parsed, held, rest


def test_backlog_delivered_after_live_points_keeps_its_cycles():
    """Store and forward, live points first: at reconnection the truck sends live points at once and
    its 30-minute backlog as an in-order burst two minutes later."""
    sim = _sim()
    truck = "S01-HT-002"
    start = SPEC.start_ms + 90 * 60_000
    end = start + 30 * 60_000
    _, held, rest = _outage(sim, truck, start, end)
    assert len(held) > 40
    burst_at = next(k for k, line in enumerate(rest) if getattr(parse_record(line), "ts_ms", 0) >= end + 120_000)
    delivered = rest[:burst_at] + held + rest[burst_at:]
    live_first = replay(_records(delivered), sim.reference)
    online = replay(_records(sim.telemetry_lines), sim.reference)
    assert_found_the_truth(sim, online)
    assert len(cycles_during(online, truck, start, end)) >= 2  # the backlog holds cycles
    assert live_first.sorted_closed() == online.sorted_closed()
    assert not [d for d in live_first.dead_letters if d.reason in ("LATE", "CLOCK_JUMP")]


# --------------------------------------------------------------------------- strays of many trucks

FLEET = SimulationSpec(trucks=12, hours=2.0, seed=43).degraded()
_FLEET_RUNS: dict[str, object] = {}


def _fleet():
    """The 12-truck site and its replay without strays (simulated once)."""
    if not _FLEET_RUNS:
        sim = simulate(FLEET)
        _FLEET_RUNS["sim"] = sim
        _FLEET_RUNS["clean"] = replay(_labelled(sim.telemetry_lines), sim.reference)
    return _FLEET_RUNS["sim"], _FLEET_RUNS["clean"]


def _labelled(lines: list[str]) -> list[tuple[str, str]]:
    """One source label for every line: the dead letters of two runs compare whatever was inserted."""
    return [("fleet", line) for line in lines]


def _strays_at(lines: list[str], moments: dict[str, float], shift_ms: int) -> tuple[list[str], dict[str, int]]:
    """One stray per truck of ``moments``: after its first point at or past the moment (a fraction of
    the run), a copy of it (same position and state) stamped ``shift_ms`` away."""
    start, end = FLEET.start_ms, FLEET.end_ms
    due = {truck: start + f * (end - start) for truck, f in moments.items()}
    strays: dict[str, int] = {}
    out: list[str] = []
    for line in lines:
        out.append(line)
        p = parse_record(line)
        if isinstance(p, TelemetryPoint) and p.asset_guid in due and p.ts_ms >= due[p.asset_guid]:
            del due[p.asset_guid]
            strays[p.asset_guid] = p.ts_ms + shift_ms
            out.append(format_record(p._replace(ts_ms=p.ts_ms + shift_ms)))
    return out, strays


@pytest.mark.slow
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), shift=st.sampled_from([2 * 60_000, 30 * 60_000, 2 * 3_600_000, 86_400_000, -2 * 60_000,
                                              -30 * 60_000]))
def test_strays_of_up_to_a_third_of_the_trucks_cost_no_genuine_point(data, shift: int):
    """k of N trucks (k <= N/3) each send one stray point ahead or back (position and state of the point
    before it), at random moments (or all at the same one): no genuine point is dead-lettered, at most
    the cycle holding a stray changes, and every other truck's cycles are those of the stream without
    strays."""
    sim, clean = _fleet()
    trucks = sorted({a[0] for a in sim.assets if a[2] == "HAUL_TRUCK" and "-HT-" in a[0]})
    glitched = data.draw(st.lists(st.sampled_from(trucks), min_size=1, max_size=len(trucks) // 3, unique=True))
    same = data.draw(st.booleans())
    moment = data.draw(st.floats(0.02, 0.98))
    moments = {truck: moment if same else data.draw(st.floats(0.02, 0.98)) for truck in glitched}
    lines, strays = _strays_at(sim.telemetry_lines, moments, shift)
    glitched_run = replay(_labelled(lines), sim.reference)
    # a stray ahead is rejected as CLOCK_JUMP or, a few minutes ahead, put in order; one back is LATE or,
    # within the hold, put in order; a stray just before a load start is read with that cycle
    _assert_glitch_contained(clean, glitched_run, strays, rejected_as=("CLOCK_JUMP", "LATE"), reach_ms=60_000,
                             shift_ms=shift)


def test_a_file_whose_second_part_is_a_day_later_moves_the_stream_time_on():
    """A whole stream that really moved on (one file, two shifts a day apart) is followed: the second
    day's cycles are those of the second day alone, and the first day's silent trucks are closed by
    their idle timers (IDLE_TIMEOUT), which needs the stream's time to pass theirs by idle_close_s."""
    sim, _ = _fleet()
    later = [format_record(p._replace(ts_ms=p.ts_ms + 86_400_000)) if isinstance(p := parse_record(line), TelemetryPoint)
             else line for line in sim.telemetry_lines]  # fmt: skip
    both = replay(_labelled(sim.telemetry_lines + later), sim.reference)
    second = replay(_labelled(later), sim.reference)
    day2 = FLEET.start_ms + 86_400_000
    assert [c for c in both.sorted_closed() if c.load_start_ms >= day2] == second.sorted_closed()
    timeouts = [c for c in both.closed if c.invalid_reason == "IDLE_TIMEOUT"]
    assert len(timeouts) >= 10 and all(c.load_start_ms < day2 for c in timeouts)


def test_a_stray_ahead_just_before_a_trucks_outage_costs_none_of_its_backlog():
    """A case the property test above found: S01-HT-011's stray 2 min ahead is its last point before an
    outage, and the outage's backlog arrives after the stream's time passed the stray by more than
    lead_hold_s. The stray is held until the backlog reaches it; no genuine point is LATE."""
    sim, clean = _fleet()
    truck = "S01-HT-011"
    lines, strays = _strays_at(sim.telemetry_lines, {truck: 0.6584}, 2 * 60_000)
    stray_at = next(i for i, line in enumerate(lines)
                    if isinstance(p := parse_record(line), TelemetryPoint) and p.ts_ms == strays[truck])
    next_at = next(i for i in range(stray_at + 1, len(lines))
                   if getattr(parse_record(lines[i]), "asset_guid", None) == truck)
    stream_then = max(p.ts_ms for line in lines[:next_at] if isinstance(p := parse_record(line), TelemetryPoint)
                      and p.asset_guid != truck)  # fmt: skip
    lead_hold_ms = int(CycleThresholds().lead_hold_s * 1000)
    assert parse_record(lines[next_at]).ts_ms < strays[truck]  # the backlog, behind the stray
    assert stream_then > strays[truck] + lead_hold_ms + 60_000  # ... after the stream passed it (and the lag)
    glitched = replay(_labelled(lines), sim.reference)
    _assert_glitch_contained(clean, glitched, strays, rejected_as=("CLOCK_JUMP", "LATE"), reach_ms=60_000,
                             shift_ms=2 * 60_000)


def test_a_stray_ahead_that_the_truck_reached_before_an_outage_costs_none_of_its_backlog():
    """Another case the property test found: S01-HT-011's stray 2 min ahead is reached by the truck's
    next points (within max_disorder_s of it, so it joins the buffer), and then the truck's outage
    begins; its backlog arrives after the stream passed the stray by more than lead_hold_s. Nothing the
    truck sent after the stray confirms it, so it stays in the buffer until the backlog reaches it; no
    genuine point is LATE."""
    sim, clean = _fleet()
    truck = "S01-HT-011"
    lines, strays = _strays_at(sim.telemetry_lines, {truck: 0.6484375}, 2 * 60_000)
    stray = strays[truck]
    own = [(i, p.ts_ms) for i, line in enumerate(lines)
           if isinstance(p := parse_record(line), TelemetryPoint) and p.asset_guid == truck and p.ts_ms != stray]
    stray_at = next(i for i, line in enumerate(lines) if getattr(parse_record(line), "ts_ms", None) == stray)
    stream = [0] * len(lines)  # the stream's newest point (of the other trucks) before each line
    for i, line in enumerate(lines[:-1]):
        p = parse_record(line)
        newer = p.ts_ms if isinstance(p, TelemetryPoint) and p.asset_guid != truck else 0
        stream[i + 1] = max(stream[i], newer)
    th = CycleThresholds()
    passed = stray + th.lead_hold_s * 1000 + 60_000  # the stream passed the stray by lead_hold_s (and the lag)
    backlog_at, backlog_ts = next((i, ts) for i, ts in own if i > stray_at and stream[i] > passed)
    reached = max(ts for i, ts in own if i < backlog_at)
    assert stray - th.max_disorder_s * 1000 <= reached < stray  # the truck's timeline reached the stray
    assert reached < backlog_ts < stray  # ... and the first point of its outage's backlog is behind it
    glitched = replay(_labelled(lines), sim.reference)
    assert not [d for d in glitched.dead_letters if d not in clean.dead_letters and d.ts_ms != stray]
    _assert_glitch_contained(clean, glitched, strays, rejected_as=("CLOCK_JUMP", "LATE"), reach_ms=60_000,
                             shift_ms=2 * 60_000)
