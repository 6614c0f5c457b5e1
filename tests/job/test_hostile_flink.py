"""Hostile input, backlogs, clock jumps and duplicate bursts through the Flink job (the pure-level
versions are in tests/state_machine/test_reliability.py, whose generators are reused here).

Expected behaviour (docs/reliability.md): no crash; every bad record is in the dead-letter table
with a reason (identical raw lines with the same reason share one row: the id is deterministic);
the valid records' cycles are those of the clean stream; a 30-minute backlog delivered late keeps
all cycles; a backwards clock jump dead-letters the stale points as LATE and leaves the other
trucks alone; 100k duplicates are dropped.
"""

from __future__ import annotations

import json
import random
from dataclasses import replace

import pytest

from state_machine.identity import dead_letter_id
from state_machine.model import TelemetryPoint
from state_machine.telemetry import format_record, parse_record
from tests.job.flink_harness import SOURCE_LABEL, read_tables
from tests.job.reliability_support import run_job
from tests.state_machine.test_reliability import HOSTILE_FIXED, _hostile_generated
from workbench.bundle import write_bundle
from workbench.replay import replay
from workbench.simulator import SimulationSpec, simulate

pytestmark = [pytest.mark.flink, pytest.mark.services, pytest.mark.slow]

GOOD = {"asset_guid": "S01-HT-001", "site_guid": "SITE-01", "timestamp": "2024-01-15T07:00:00.000Z",
        "latitude": -22.7, "longitude": 118.7, "work_state_id": 3}
EXTRA_HOSTILE = [
    json.dumps(dict(GOOD, latitude=float("nan"))),
    json.dumps(dict(GOOD, longitude=float("-inf"))),
    json.dumps(dict(GOOD, latitude=-90.0001)),
    json.dumps(dict(GOOD, longitude=180.5)),
    json.dumps(dict(GOOD, timestamp="2999-01-01T00:00:00Z")),
    json.dumps(dict(GOOD, timestamp="0001-01-01T00:00:00Z")),
    json.dumps(dict(GOOD, timestamp="2024-01-15 07:00:00")),
    json.dumps(dict(GOOD, timestamp=1705302000000)),
    json.dumps(dict(GOOD, work_state_id=99)),
    json.dumps(dict(GOOD, work_state_id="WORKING")),
    json.dumps(dict(GOOD, asset_guid="")),
    json.dumps(dict(GOOD, asset_guid="x" * 100_000)),
    json.dumps(dict(GOOD, asset_guid="1; DELETE FROM dx.asset_cycle_vlx WHERE '1'='1")),
    json.dumps(dict(GOOD, asset_guid="Robert'); DROP TABLE students;--", site_guid="$$; SELECT pg_sleep(10); $$")),
    json.dumps(dict(GOOD, asset_guid="🚚" * 50 + "\u0301\u200b\ufeff")),
    json.dumps(dict(GOOD, site_guid="\u202eSITE-01")),
    json.dumps({**GOOD, "asset_guid": ["S01-HT-001"]}),
    json.dumps(GOOD)[:-1] + ', "pad": "' + "p" * 1_048_576 + '"',  # 1 MB, broken
    # (a U+FEFF inside a line does not reach the job: Flink's text source drops it, so the dead
    # letter's raw would differ from the file; left out, noted in docs/reliability.md)
]


def _hostile(raw: str) -> str:
    """A record that parses as a valid point must not be a real truck's: those go to an unknown
    asset (dead-lettered UNKNOWN_ASSET). (A real truck's point with a corrupted, unknown site_guid
    is a known weakness: see test_unknown_site_of_a_real_truck_holds_its_points.)"""
    if isinstance(parse_record(raw), TelemetryPoint):
        return raw.replace('"S01-HT-001"', '"GHOST-VALID-SHAPE"')
    return raw


def _mix(valid: list[str], bad: list[str], seed: int) -> list[str]:
    lines = list(valid)
    rng = random.Random(seed)
    for raw in bad:
        lines.insert(rng.randrange(len(lines) + 1), raw)
    return lines


def _assert_like_replay(tables, expected) -> None:
    assert [c.as_dict() for c in tables.closed] == [c.as_dict() for c in expected.sorted_closed()]
    assert {k: v.as_dict() for k, v in tables.in_progress.items()} == {
        k: v.as_dict() for k, v in expected.in_progress.items()}
    assert tables.statuses == expected.statuses


def test_ten_thousand_hostile_records_through_flink(tmp_path, pg_dsn, table_names, capsys):
    sim = simulate(SimulationSpec(trucks=6, hours=3, seed=31))
    hostile = HOSTILE_FIXED + EXTRA_HOSTILE + _hostile_generated(10_000, seed=5)
    hostile = [_hostile(h.replace("\n", " ").replace("\r", " ")) for h in hostile]  # one record per line
    lines = _mix(sim.telemetry_lines, hostile, seed=9)
    bundle = write_bundle(tmp_path / "b", lines, sim.reference, sim.assets)

    watch = run_job(bundle, table_names, pg_dsn)
    tables = read_tables(pg_dsn, table_names)
    clean = replay(((SOURCE_LABEL, line) for line in sim.telemetry_lines), sim.reference)
    mixed = replay(((SOURCE_LABEL, line) for line in lines), sim.reference)

    assert watch.status == "FINISHED" and not watch.failures
    assert mixed.sorted_closed() == clean.sorted_closed()
    _assert_like_replay(tables, mixed)
    _assert_like_replay(tables, clean)  # valid records' cycles unchanged
    # every bad record is dead-lettered with a reason; equal raw + reason share a row
    assert len(mixed.dead_letters) - len(clean.dead_letters) == len(hostile)
    ids = {d["dead_letter_id"] for d in tables.dead_letters}
    assert ids == {dead_letter_id(d.source, d.reason, d.raw) for d in mixed.dead_letters}
    assert all(d["reason"] for d in tables.dead_letters)
    by_raw: dict[str, set[str]] = {}
    for d in mixed.dead_letters:
        by_raw.setdefault(d.raw if isinstance(d.raw, str) else repr(d.raw), set()).add(d.reason)
    reasons: dict[str, int] = {}
    for d in tables.dead_letters:
        reasons[d["reason"]] = reasons.get(d["reason"], 0) + 1
    with capsys.disabled():
        print(f"\nhostile: {len(lines)} records ({len(hostile)} hostile, {len(set(hostile))} distinct), "
              f"{len(tables.dead_letters)} dead-letter rows, reasons {dict(sorted(reasons.items()))}, "
              f"{len(tables.closed)} cycles unchanged, {watch.seconds:.0f} s")


def test_backlog_clock_jump_and_100k_duplicates_through_flink(tmp_path, pg_dsn, table_names, capsys):
    spec = SimulationSpec(trucks=6, hours=4.0, seed=31)
    sim = simulate(spec)
    lines = list(sim.telemetry_lines)
    parsed = [parse_record(line) for line in lines]

    # S01-HT-002 offline 90..120 min: its backlog arrives in one go on reconnection
    offline, start = "S01-HT-002", spec.start_ms + 90 * 60_000
    end = start + 30 * 60_000
    held = [i for i, p in enumerate(parsed) if getattr(p, "asset_guid", None) == offline
            and start <= p.ts_ms < end]
    assert len(held) > 40
    held_set = set(held)
    rest = [i for i in range(len(lines)) if i not in held_set]
    reconnect = next(k for k, i in enumerate(rest) if getattr(parsed[i], "ts_ms", 0) >= end)
    order = rest[:reconnect] + held + rest[reconnect:]
    # S01-HT-003's clock falls 1 h behind after 2 h
    jumper, jump_at = "S01-HT-003", spec.start_ms + 2 * 3_600_000
    out = []
    for i in order:
        p = parsed[i]
        if getattr(p, "asset_guid", None) == jumper and p.ts_ms >= jump_at:
            out.append(format_record(p._replace(ts_ms=p.ts_ms - 3_600_000)))
        else:
            out.append(lines[i])
    # 100k duplicates of recent lines in the middle
    rng = random.Random(4)
    mid = 3 * len(out) // 4  # after the backlog was delivered
    assert mid < reconnect or mid - 300 > reconnect + len(held)
    window = out[mid - 300: mid]
    burst = [window[rng.randrange(len(window))] for _ in range(100_000)]
    stream = out[:mid] + burst + out[mid:]
    bundle = write_bundle(tmp_path / "b", stream, sim.reference, sim.assets)

    watch = run_job(bundle, table_names, pg_dsn)
    tables = read_tables(pg_dsn, table_names)
    expected = replay(((SOURCE_LABEL, line) for line in stream), sim.reference)
    clean = replay(((SOURCE_LABEL, line) for line in lines), sim.reference)

    assert watch.status == "FINISHED" and not watch.failures
    _assert_like_replay(tables, expected)
    assert {d["dead_letter_id"] for d in tables.dead_letters} == {
        dead_letter_id(d.source, d.reason, d.raw) for d in expected.dead_letters}
    # backlog: nothing late, every cycle of the offline truck kept
    assert [c for c in tables.closed if c.asset_guid == offline] == [
        c for c in clean.sorted_closed() if c.asset_guid == offline]
    # (the delivered-late backlog points are applied, never LATE)
    backlog_raw = {lines[i] for i in held}
    assert not [d for d in tables.dead_letters if d["reason"] == "LATE" and d["raw"] in backlog_raw]
    # clock jump: stale points reported LATE, other trucks' cycles untouched (their queue at a loader may
    # not be: the jumper's shifted visits take places in its loaders' order of service)
    assert [d for d in tables.dead_letters if d["asset_guid"] == jumper and d["reason"] == "LATE"]
    assert [replace(c, queue_seconds=None) for c in tables.closed if c.asset_guid not in (jumper,)] == [
        replace(c, queue_seconds=None) for c in clean.sorted_closed() if c.asset_guid != jumper]
    # duplicates: never applied; dropped and counted, or (older than the engine's 64-entry
    # duplicate ring) dead-lettered LATE, which collapses onto one row per distinct line
    no_burst = replay(((SOURCE_LABEL, line) for line in out), sim.reference)
    assert (expected.duplicates - no_burst.duplicates) + (len(expected.dead_letters) - len(no_burst.dead_letters)) \
        == 100_000
    assert expected.sorted_closed() == no_burst.sorted_closed()
    with capsys.disabled():
        print(f"\nbacklog/clock/duplicates: {len(stream)} records ({len(held)} backlog points, 100000 duplicates), "
              f"{expected.duplicates - no_burst.duplicates} dropped as duplicates, "
              f"{sum(1 for d in tables.dead_letters if d['reason'] == 'LATE')} LATE rows, {watch.seconds:.0f} s")


def test_unknown_site_of_a_real_truck_does_not_hold_its_other_points(tmp_path, pg_dsn, table_names):
    sim = simulate(SimulationSpec(trucks=2, hours=1.5, seed=3))
    lines = list(sim.telemetry_lines)
    first = parse_record(lines[50])
    bad = format_record(first._replace(site_guid="SITE-0l"))  # one corrupted character
    lines.insert(51, bad)
    bundle = write_bundle(tmp_path / "b", lines, sim.reference, sim.assets)
    run_job(bundle, table_names, pg_dsn)
    tables = read_tables(pg_dsn, table_names)
    expected = replay(((SOURCE_LABEL, line) for line in lines), sim.reference)
    assert [c.as_dict() for c in tables.closed] == [c.as_dict() for c in expected.sorted_closed()]
    assert {d["dead_letter_id"] for d in tables.dead_letters} == {
        dead_letter_id(d.source, d.reason, d.raw) for d in expected.dead_letters}
