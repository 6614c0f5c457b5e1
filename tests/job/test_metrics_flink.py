"""Custom metrics through Flink's Prometheus reporter, scraped from a running job.

The job reads a continuously monitored directory (so it keeps running and its operators keep
their metrics registered) with the reference data polled from PostgreSQL/Redis. After the data
file, a second file with one record is dropped a little later: the parse step passes its counts
on to Flink at most once a second, on a record, and this record carries the tail.

Expected values come from the offline replay of the same lines. The data ends with 60 points of
a loader one day later than the fleet's last point: they move the watermark (a lone far-future
time is held back, 50 in a row are believed) so that every truck timer of the real data fires in
the job as in the replay, without an end of input.
"""

from __future__ import annotations

import json
import re
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from state_machine.model import LOADER
from state_machine.operator import KeyState
from state_machine.telemetry import Invalid, parse_record
from udfs.metrics import FLUSH_INTERVAL_MS
from workbench.replay import Replayer
from workbench.simulator import SimulationSpec, simulate

pytestmark = [pytest.mark.flink, pytest.mark.services]

PREFIX = "flink_taskmanager_job_task_operator_kinesisanalytics_assetCycle_"
_SAMPLE = re.compile(r"^(\w+)(?:\{(.*)\})?\s+(\S+)$")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')
LABEL_KEYS = ("reason", "status", "alertType", "site")


def free_port() -> int:
    """A TCP port free right now on 127.0.0.1 (outside the ephemeral range: cli.local_services.free_local_port)."""
    from cli.local_services import free_local_port

    return free_local_port()


def scrape(port: int) -> dict[tuple[str, str], float]:
    """{(metric name after the assetCycle group, label value or ""): value summed over subtasks and
    operators}; {} while the endpoint is not up."""
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    except OSError:
        return {}
    out: dict[tuple[str, str], float] = {}
    for line in text.splitlines():
        m = _SAMPLE.match(line)
        if not m or not m.group(1).startswith(PREFIX):
            continue
        name = m.group(1)[len(PREFIX):]
        labels = dict(_LABEL.findall(m.group(2) or ""))
        label = ""
        for key in LABEL_KEYS:
            if name.startswith(key + "_"):
                name, label = name[len(key) + 1:], labels.get(key, "")
        out[(name, label)] = out.get((name, label), 0.0) + float(m.group(3))
    return out


def _far_future_lines(loader: str, site: str, start_ms: int, n: int) -> list[str]:
    from state_machine.model import ms_to_iso

    return [json.dumps({"asset_guid": loader, "site_guid": site, "timestamp": ms_to_iso(start_ms + i * 1000),
                        "latitude": -22.7, "longitude": 118.7, "work_state_id": 2}) for i in range(n)]  # fmt: skip


def expected_metrics(lines: list[str], reference: Any) -> dict[tuple[str, str], float]:
    """What the job's counters must say after ``lines`` (replay, timers fired at the last watermark)."""
    replayer = Replayer(reference)
    for line in lines:
        replayer.feed("file:inbox", line)
    res = replayer.result
    want: dict[tuple[str, str], float] = {
        ("recordsIn", ""): res.records,
        ("recordsParsed", ""): sum(1 for line in lines if not isinstance(parse_record(line), Invalid)),
        ("pointsApplied", ""): res.applied_points,
        ("nonTruckFiltered", ""): res.non_truck,
        ("duplicatesDropped", ""): res.duplicates,
        ("reordered", ""): res.reordered,
        ("latePoints", ""): sum(1 for d in res.dead_letters if d.reason == "LATE"),
        ("cyclesClosedTotal", ""): sum(1 for c in res.closed if c.load_start_ms is not None),
        # trucks with an engine state (the replay also keeps the held points of an unknown asset, which
        # the job, with wait_max_points=0, dead-letters at once)
        ("trucksTracked", ""): sum(1 for state in replayer.states.values() if KeyState.from_bytes(state).truck),
        ("referencePollFailures", ""): 0,
        ("deadLetterRecords", ""): len(res.dead_letters),  # parse + cycle operators (the CloudWatch alarm's metric)
    }
    for reason, n in Counter(d.reason for d in res.dead_letters).items():
        want[("deadLetters", reason)] = n
    for status, n in Counter(c.cycle_status for c in res.closed if c.load_start_ms is not None).items():
        want[("cyclesClosed", status)] = n
    for kind, n in Counter(a.alert_type for a in res.alerts).items():
        want[("alerts", kind)] = n
    return want


def _differences(got: dict, want: dict) -> dict:
    return {k: (got.get(k), v) for k, v in want.items() if got.get(k) != v}


def test_prometheus_metrics_match_the_replay(tmp_path: Path, pg_dsn: str, migrated_tables: Any, redis_client: Any,
                                             redis_prefix: str) -> None:  # fmt: skip
    import psycopg2

    from job.settings import AppSettings, FlinkSettings, ReferenceSettings
    from stores.reference import seed_reference
    from tests.job.flink_harness import start_live_job

    names = migrated_tables
    sim = simulate(SimulationSpec(trucks=4, hours=3, seed=23).degraded())
    site = sorted(sim.reference.sites)[0]
    loader = next(g for g, s, kind, *_ in sim.assets if kind == LOADER and s == site)
    last_ms = max(p.ts_ms for p in (parse_record(x) for x in sim.telemetry_lines) if not isinstance(p, Invalid))
    bad = ["not json at all", '{"asset_guid": "X", "timestamp": "2024-01-15T06:30:00Z"}']
    data = sim.telemetry_lines + bad + _far_future_lines(loader, site, last_ms + 86_400_000, 60)
    trigger = _far_future_lines(loader, site, last_ms + 86_500_000, 1)
    want = expected_metrics(data + trigger, sim.reference)
    assert want[("cyclesClosedTotal", "")] > 10 and want[("deadLetters", "UNKNOWN_ASSET")] > 0

    conn = psycopg2.connect(pg_dsn)
    try:
        seed_reference(conn, redis_client, names, sim.reference, sim.assets, redis_key_prefix=redis_prefix)
    finally:
        conn.close()
    port = free_port()
    # wait_max_points=0: an unknown asset's point is dead-lettered at once, as in the replay
    settings = AppSettings(
        reference=ReferenceSettings(poll_interval_s=1.0, redis_key_prefix=redis_prefix, wait_max_points=0),
        flink=FlinkSettings(parallelism=1, source_idleness_ms=None, metrics_port=port),
    )
    job = start_live_job(tmp_path, pg_dsn, redis_client, names, settings, batch_size=500, job_name="metrics-test")
    assert job.metrics_url == f"http://127.0.0.1:{port}/metrics"
    client, inbox = job.client, job.inbox

    def drop(name: str, lines: list[str]) -> None:
        tmp = inbox / f".{name}.tmp"
        tmp.write_text("".join(line + "\n" for line in lines))
        tmp.rename(inbox / name)

    def wait(what: str, timeout_s: float, done: Any) -> dict:
        deadline = time.monotonic() + timeout_s
        got: dict = {}
        while time.monotonic() < deadline:
            got = scrape(port)
            if done(got):
                return got
            time.sleep(1.0)
        raise AssertionError(f"timed out waiting for {what}: {got}")

    try:
        # the reference data is in (polled, broadcast) before the telemetry arrives
        wait("the reference poller", 120, lambda m: m.get(("referenceSites", ""), 0) >= 1)
        drop("a.jsonl", data)
        engine = {k: want[k] for k in (("pointsApplied", ""), ("cyclesClosedTotal", ""), ("duplicatesDropped", ""))}
        wait("the cycle operator's counters", 180, lambda m: not _differences(m, engine))
        # every record of a.jsonl parsed (so the trigger comes in a later batch); the parse step passes
        # its counts on when a record comes and FLUSH_INTERVAL_MS have passed since it last did (seen
        # just now): the trigger is dropped once that is due, so that its own count is passed on
        wait("the parse step's count of a.jsonl", 60, lambda m: m.get(("recordsIn", ""), 0) >= len(data))
        flush_due = time.monotonic() + FLUSH_INTERVAL_MS / 1000
        while time.monotonic() < flush_due:
            time.sleep(0.05)
        drop("b.jsonl", trigger)
        got = wait("every counter", 60, lambda m: not _differences(m, want))
    finally:
        client.cancel().result()

    assert not _differences(got, want)
    assert got[("recordsIn", "")] == len(data) + 1
    assert 0 <= got[("referenceAgeSeconds", site)] <= 10  # confirmed by the 1 s poll
    assert got[("eventTimeLagMs", "")] > 0  # 2024 data: wall clock far ahead
    print(f"\n{len(got)} series; records in {got[('recordsIn', '')]:.0f}, "
          f"cycles closed {got[('cyclesClosedTotal', '')]:.0f}, dead letters "
          f"{ {k[1]: v for k, v in got.items() if k[0] == 'deadLetters'} }")

