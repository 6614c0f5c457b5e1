"""The job on the local minicluster against the real PostgreSQL and Redis."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from state_machine.identity import dead_letter_id
from state_machine.model import HAUL_TRUCK, LOADER
from state_machine.reference import Loader, ReferenceData, Region, SiteReference
from state_machine.telemetry import format_record
from tests.job.flink_harness import SOURCE_LABEL, read_tables, run_bundle, table_snapshot, truncate_tables
from tests.job.reliability_support import free_port
from tests.job.test_metrics_flink import scrape
from workbench.replay import replay
from workbench.simulator import SimulationSpec, simulate

pytestmark = [pytest.mark.flink, pytest.mark.services]


def write_bundle(directory: Path, lines: list[str], reference: ReferenceData, assets) -> Path:
    from workbench.bundle import write_bundle as write

    write(directory, lines, reference, assets)
    return directory


@pytest.fixture(scope="module")
def small_sim():
    return simulate(SimulationSpec(trucks=3, hours=2, seed=4).degraded())


BAD_LINES = [
    "not json at all",
    '{"asset_guid": "S01-HT-001", "site_guid": "SITE-01", "timestamp": "2024-01-15T06:30:00", '
    '"latitude": -22.7, "longitude": 118.7, "work_state_id": 3}',
    '{"asset_guid": "S01-HT-001", "site_guid": "SITE-01", "timestamp": "2024-01-15T06:30:00Z", '
    '"latitude": 0, "longitude": 0, "work_state_id": 3}',
    '{"asset_guid": "S01-HT-001", "site_guid": "SITE-01", "timestamp": "2024-01-15T06:30:00Z", '
    '"latitude": -22.7, "longitude": 118.7, "work_state_id": 9}',
]


def test_bundle_fills_tables_like_the_replay_and_reruns_change_nothing(tmp_path, small_sim, pg_dsn, table_names):
    lines = small_sim.telemetry_lines[:600] + BAD_LINES + small_sim.telemetry_lines[600:]
    bundle = write_bundle(tmp_path / "b", lines, small_sim.reference, small_sim.assets)
    result = run_bundle(bundle, table_names, pg_dsn)
    assert result.records == len(lines)
    expected = replay(((SOURCE_LABEL, line) for line in lines), small_sim.reference)
    tables = read_tables(pg_dsn, table_names)

    # cycles (timestamps landed exactly in timestamptz columns: compared as epoch ms)
    assert len(tables.closed) > 3
    assert [c.as_dict() for c in tables.closed] == [c.as_dict() for c in expected.sorted_closed()]
    assert {k: v.as_dict() for k, v in tables.in_progress.items()} == {
        k: v.as_dict() for k, v in expected.in_progress.items()
    }
    assert tables.statuses == expected.statuses

    # dead letters: every bad record with its reason, deduplicated by the deterministic id
    by_id = {d["dead_letter_id"]: d for d in tables.dead_letters}
    assert set(by_id) == {dead_letter_id(d.source, d.reason, d.raw) for d in expected.dead_letters}
    telemetry = (bundle / "telemetry.jsonl").resolve()
    reasons = {d["raw"]: d["reason"] for d in tables.dead_letters if d["source"].startswith("file:")}
    # parse dead letters carry their file and line number
    assert [by_id[dead_letter_id(SOURCE_LABEL, reasons[b], b)]["source"] for b in BAD_LINES] == [
        f"file:{telemetry}:{601 + i}" for i in range(len(BAD_LINES))]
    assert reasons[BAD_LINES[0]] == "BAD_JSON"
    assert reasons[BAD_LINES[1]] == "NO_TIMEZONE"
    assert reasons[BAD_LINES[2]] == "NO_GPS_FIX"
    assert reasons[BAD_LINES[3]] == "UNKNOWN_WORK_STATE"
    assert any(d["reason"] == "UNKNOWN_ASSET" for d in tables.dead_letters)

    # a second run of the same file changes no row (received_utc is the processing time)
    before = table_snapshot(pg_dsn, table_names, exclude=("updated_at", "received_utc"))
    run_bundle(bundle, table_names, pg_dsn, migrate=False)
    assert table_snapshot(pg_dsn, table_names, exclude=("updated_at", "received_utc")) == before


def test_a_record_dead_lettered_twice_keeps_its_first_position_whatever_the_batches(tmp_path, small_sim, pg_dsn,
                                                                                   table_names):  # fmt: skip
    """Dead letters are insert-only (DO NOTHING: the first row written stays), so the sink's buffer
    keeps a key's first row too; otherwise a duplicated record's position would depend on whether
    both copies fell into one batch (a restart or a slow flush moves batch ends; CI failed so)."""
    lines = small_sim.telemetry_lines
    first_line: dict[str, int] = {}
    copies: dict[str, int] = {}
    for number, line in enumerate(lines, start=1):
        first_line.setdefault(line, number)
        copies[line] = copies.get(line, 0) + 1
    bundle = write_bundle(tmp_path / "b", lines, small_sim.reference, small_sim.assets)
    telemetry = (bundle / "telemetry.jsonl").resolve()
    positions = {}
    for batch_size in (5000, 1):  # one batch for everything; one row per batch
        run_bundle(bundle, table_names, pg_dsn, batch_size=batch_size)
        rows = read_tables(pg_dsn, table_names).dead_letters
        twice = [d for d in rows if copies.get(d["raw"], 0) > 1 and d["reason"] == "UNKNOWN_ASSET"]
        assert len(twice) >= 3, "the degraded bundle has duplicated points of its unknown truck"
        assert all(d["source"] == f"file:{telemetry}:{first_line[d['raw']]}" for d in twice)
        positions[batch_size] = sorted((d["dead_letter_id"], d["source"]) for d in rows)
        truncate_tables(pg_dsn, table_names)
    assert positions[5000] == positions[1]


def test_timestamps_land_in_timestamptz_exactly(tmp_path, pg_dsn, table_names):
    """A UTC instant with milliseconds round-trips through the JDBC sink whatever the session zone."""
    import psycopg2

    site = SiteReference("S1", (Loader("L1", "S1", -22.7, 118.7),), ())
    reference = ReferenceData({"T1": HAUL_TRUCK, "L1": LOADER}, {"S1": site})
    from state_machine.model import TelemetryPoint

    ts = 1_710_000_000_123  # 2024-03-09T16:00:00.123Z
    lines = [format_record(TelemetryPoint("T1", "S1", ts, -22.8, 118.8, 3))]
    bundle = write_bundle(tmp_path / "b", lines, reference, [("T1", "S1", HAUL_TRUCK, None, None),
                                                             ("L1", "S1", LOADER, -22.7, 118.7)])  # fmt: skip
    run_bundle(bundle, table_names, pg_dsn)
    conn = psycopg2.connect(pg_dsn)
    try:
        with conn.cursor() as cur:
            cur.execute("SET TIME ZONE 'America/New_York'")
            cur.execute(f'SELECT extract(epoch FROM last_event_utc) * 1000, last_event_utc::text '
                        f'FROM "{table_names.schema}".tx_process_info')  # fmt: skip
            epoch_ms, text = cur.fetchone()
    finally:
        conn.close()
    assert int(epoch_ms) == ts
    assert text == "2024-03-09 11:00:00.123-05"


def _seed(pg_dsn, names, redis_client, prefix, reference, assets) -> None:
    import psycopg2

    from stores.reference import seed_reference

    conn = psycopg2.connect(pg_dsn)
    try:
        seed_reference(conn, redis_client, names, reference, assets, redis_key_prefix=prefix)
    finally:
        conn.close()


def _wait_for(predicate, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(1.0)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what} (last: {last!r})")


def test_reference_changes_reach_a_running_job(tmp_path, pg_dsn, migrated_tables, redis_client, redis_prefix):
    """Continuous mode: a new dump region in Redis and a moved loader in PostgreSQL are picked up."""
    import psycopg2

    from job.settings import AppSettings, FlinkSettings, ReferenceSettings
    from state_machine.model import TelemetryPoint
    from tests.job.flink_harness import start_live_job

    names = migrated_tables
    square = ((118.800, -22.800), (118.802, -22.800), (118.802, -22.802), (118.800, -22.802))
    far = ((118.90, -22.90), (118.91, -22.90), (118.91, -22.91), (118.90, -22.91))
    site0 = SiteReference("S1", (Loader("L1", "S1", -22.70, 118.70),), (Region("R0", "old dump", "dump", "S1", far),))
    assets = [("T1", "S1", HAUL_TRUCK, None, None), ("T2", "S1", HAUL_TRUCK, None, None),
              ("L1", "S1", LOADER, -22.70, 118.70)]  # fmt: skip
    _seed(pg_dsn, names, redis_client, redis_prefix, ReferenceData({}, {"S1": site0}), assets)

    port = free_port()
    settings = AppSettings(reference=ReferenceSettings(poll_interval_s=1.0, redis_key_prefix=redis_prefix),
                           flink=FlinkSettings(parallelism=1, source_idleness_ms=None, metrics_port=port))  # fmt: skip
    job = start_live_job(tmp_path, pg_dsn, redis_client, names, settings, batch_size=10,
                         job_name="reference-change-test")  # fmt: skip

    def updates() -> float:
        """Reference changes the poller has broadcast so far (its referenceUpdates counter)."""
        return scrape(port).get(("referenceUpdates", ""), 0.0)
    client, inbox = job.client, job.inbox

    def status(asset: str):
        conn = psycopg2.connect(pg_dsn)
        try:
            with conn.cursor() as cur:
                cur.execute(f'SELECT area, area_guid FROM "{names.schema}".tx_process_info WHERE asset_guid = %s',
                            (asset,))  # fmt: skip
                return cur.fetchone()
        finally:
            conn.close()

    def drop(name: str, points: list[TelemetryPoint]) -> None:
        tmp = inbox / f".{name}.tmp"
        tmp.write_text("".join(format_record(p) + "\n" for p in points))
        tmp.rename(inbox / name)

    t0 = 1_705_298_400_000
    try:
        drop("a.jsonl", [TelemetryPoint("T1", "S1", t0, -22.801, 118.801, 2),
                         TelemetryPoint("T2", "S1", t0, -22.750, 118.750, 2)])  # fmt: skip
        assert _wait_for(lambda: status("T1"), 90, "T1's first status") == ("T", None)
        assert status("T2") == ("T", None)

        # a new dump region around T1 (Redis), then the loader moved next to T2 (PostgreSQL): one
        # change at a time (each store is written in one transaction), each waited for until the
        # poller has broadcast it (one update each)
        before = _wait_for(updates, 60, "the first reference load's updates")
        site1 = SiteReference("S1", (Loader("L1", "S1", -22.70, 118.70),),
                              (Region("R0", "old dump", "dump", "S1", far), Region("R9", "new dump", "dump", "S1", square)))
        _seed(pg_dsn, names, redis_client, redis_prefix, ReferenceData({}, {"S1": site1}), assets)
        _wait_for(lambda: updates() >= before + 1, 60, "the new region to be broadcast")
        site1 = SiteReference("S1", (Loader("L1", "S1", -22.750, 118.750),), site1.regions)
        _seed(pg_dsn, names, redis_client, redis_prefix, ReferenceData({}, {"S1": site1}),
              [(g, s, k, -22.750, 118.750) if g == "L1" else (g, s, k, la, lo) for g, s, k, la, lo in assets])
        _wait_for(lambda: updates() >= before + 2, 60, "the moved loader to be broadcast")
        drop("b.jsonl", [TelemetryPoint("T1", "S1", t0 + 5000, -22.801, 118.801, 2),
                         TelemetryPoint("T2", "S1", t0 + 5000, -22.750, 118.750, 2)])  # fmt: skip
        assert _wait_for(lambda: status("T1") if status("T1") != ("T", None) else None, 90,
                         "the new region") == ("D", "R9")  # fmt: skip
        assert _wait_for(lambda: status("T2") if status("T2") != ("T", None) else None, 30,
                         "the moved loader") == ("L", "L1")  # fmt: skip
    finally:
        client.cancel().result()


def test_an_empty_reference_store_still_lets_event_time_advance(tmp_path, pg_dsn, migrated_tables, redis_client,
                                                                  redis_prefix):  # fmt: skip
    """Continuous mode, nothing in PostgreSQL or Redis: the first (empty) load's marker releases the
    reference stream's watermark, so a truck's held points are dead-lettered UNKNOWN_ASSET after
    wait_max_s of event time instead of waiting forever (before the marker, an empty load sent no
    record at all and the keyed operator's watermark stayed at Long.MIN_VALUE)."""
    from job.settings import AppSettings, FlinkSettings, ReferenceSettings
    from state_machine.model import TelemetryPoint
    from tests.job.flink_harness import start_live_job

    names = migrated_tables
    settings = AppSettings(reference=ReferenceSettings(poll_interval_s=1.0, redis_key_prefix=redis_prefix,
                                                       wait_max_s=30.0),
                           flink=FlinkSettings(parallelism=1, source_idleness_ms=None))  # fmt: skip
    job = start_live_job(tmp_path, pg_dsn, redis_client, names, settings, batch_size=10,
                         job_name="empty-reference-test")  # fmt: skip
    t0 = 1_705_298_400_000
    points = [TelemetryPoint("T1", "S1", t0 + i * 10_000, -22.80, 118.80, 2) for i in range(30)]  # 290 s
    try:
        (job.inbox / ".a.tmp").write_text("".join(format_record(p) + "\n" for p in points))
        (job.inbox / ".a.tmp").rename(job.inbox / "a.jsonl")

        def unknown_asset_letters():
            rows = read_tables(pg_dsn, names).dead_letters
            return [d for d in rows if d["reason"] == "UNKNOWN_ASSET"]

        letters = _wait_for(unknown_asset_letters, 90, "UNKNOWN_ASSET dead letters")
        assert {d["asset_guid"] for d in letters} == {"T1"}
        assert {d["raw"] for d in letters} <= {format_record(p) for p in points}
    finally:
        job.client.cancel().result()


def test_dead_letters_keep_the_original_record(tmp_path, pg_dsn, table_names):
    reference = ReferenceData({"T1": HAUL_TRUCK}, {"S1": SiteReference("S1")})
    raw = json.dumps({"asset_guid": "T1", "site_guid": "S1", "timestamp": "2024-01-15T06:00:00Z",
                      "latitude": 95.0, "longitude": 118.7, "work_state_id": 3})  # fmt: skip
    bundle = write_bundle(tmp_path / "b", [raw], reference, [("T1", "S1", HAUL_TRUCK, None, None)])
    run_bundle(bundle, table_names, pg_dsn)
    [letter] = read_tables(pg_dsn, table_names).dead_letters
    assert letter["reason"] == "LAT_OUT_OF_RANGE" and letter["raw"] == raw and letter["asset_guid"] == "T1"
    assert letter["raw_size"] == len(raw) and letter["source"] == f"file:{(bundle / 'telemetry.jsonl').resolve()}:1"
    assert letter["event_utc"] is not None
