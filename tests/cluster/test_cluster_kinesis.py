"""The job on a real session cluster reading Kinesis (the local emulator, in a network namespace of its
own), submitted through its entry point: four shards read at parallelism 2 and 3, and one shard read at
parallelism 2, with and without a shard split while the job runs. Every result is compared with the
offline replay of what the stream holds, in arrival order: at parallelism N each reader's records, in
the order it reads them (its shards merged by arrival time), are parsed by a subtask of their own with
the watermark of that part of the stream, and every truck's points, whichever reader read them, go to
its one keyed state (tests.workbench.partitioned_replay), so the job writes what that replay writes.
(That can differ from one replay of the whole stream: records that arrive within the same millisecond
are merged shard after shard, and a reader of every shard then sees some trucks run up to a batch ahead
of the others, which makes points of the others LATE that a reader of fewer shards applies.)

With fewer shards than source subtasks a reader has no shard and sends nothing: its parse subtask
never sends a watermark, and the cycle operator's event time (the minimum over its inputs) would stay
at its start. The production default ``source.idleness.ms`` (30 s) declares such a subtask idle;
cycles whose closing needs event time (a truck gone quiet: its cycle closes by the idle timeout once
the fleet's event time has passed it) then close while the job runs, as the replay closes them.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import psycopg2
import pytest

from cli.flink_cluster import FlinkCluster
from job.settings import SourceSettings
from stores.postgres import TableNames, apply_migrations
from stores.reference import seed_reference
from tests.cluster.cluster_support import (
    closed_cycles,
    job_settings,
    live_expectation,
    records_out,
    stop_with_savepoint,
    submit,
    subtask_reads,
    wait_for,
)
from tests.job.kinesis_emulator import REGION, KinesisEmulator
from tests.job.kinesis_support import StreamRecord, arrival_order, put_lines, stream_records
from tests.job.reliability_support import assert_tables_equal_replay_of
from tests.workbench.partitioned_replay import replay_parts
from workbench.replay import Replayer
from workbench.simulator import Simulation, SimulationSpec, simulate

pytestmark = [pytest.mark.cluster, pytest.mark.flink, pytest.mark.services, pytest.mark.kinesis]

SOURCE_OPERATOR = "Source__kinesis-source"


def _prepare(pg_dsn: str, names: TableNames, redis_client: Any, redis_prefix: str, sim: Simulation) -> None:
    conn = psycopg2.connect(pg_dsn)
    try:
        apply_migrations(conn, names)
        seed_reference(conn, redis_client, names, sim.reference, sim.assets, redis_key_prefix=redis_prefix)
    finally:
        conn.close()


def _source(kinesis: KinesisEmulator, arn: str) -> SourceSettings:
    return SourceSettings(kind="kinesis", stream_arn=arn, aws_region=REGION, aws_endpoint=kinesis.endpoint,
                          init_position="TRIM_HORIZON", extra={"source.shard.discovery.interval": "1 s"})  # fmt: skip


@pytest.fixture(scope="module")
def four_shards(kinesis: KinesisEmulator) -> tuple[str, Simulation, list[StreamRecord]]:
    """A degraded site put into a stream of four shards: (ARN, the simulation, its records in arrival order)."""
    sim = simulate(SimulationSpec(trucks=8, hours=3, seed=17).degraded())
    arn = kinesis.create_stream("cluster-four", shards=4)
    put_lines(kinesis.client(), arn, sim.telemetry_lines)
    records = arrival_order(stream_records(kinesis.client(), arn))
    assert len({r.shard_id for r in records}) == 4
    return arn, sim, records


def shards_of_readers(shard_ids: list[str], readers: int) -> list[set[str]]:
    """Which shards each reader gets when they are all found at once: in shard id order, each to the
    reader with the fewest, the lowest index on a tie (KinesisShardEnumerator; checked against what
    each subtask read)."""
    owned: list[set[str]] = [set() for _ in range(readers)]
    for shard in sorted(shard_ids):
        min(owned, key=len).add(shard)
    return owned


@pytest.mark.parametrize("parallelism", [2, 3])
def test_four_shards_at_parallelism_n_equal_the_replay(
    parallelism: int, four_shards: tuple[str, Simulation, list[str]], kinesis: KinesisEmulator,
    flink_cluster: FlinkCluster, tmp_path: Path, pg_dsn: str, redis_url: str, redis_client: Any, redis_prefix: str,
    table_names: TableNames,
) -> None:  # fmt: skip
    arn, sim, records = four_shards
    lines = [r.data for r in records]
    _prepare(pg_dsn, table_names, redis_client, redis_prefix, sim)
    settings = job_settings(_source(kinesis, arn), table_names, pg_dsn, redis_url, redis_prefix, tmp_path,
                            parallelism)  # fmt: skip
    job = submit(flink_cluster, settings, pg_dsn, tmp_path / "application_properties.json")
    try:
        wait_for(job, lambda: records_out(job, SOURCE_OPERATOR) >= len(lines), f"{len(lines)} records read")
        stop_with_savepoint(job, tmp_path / "savepoints", drain=True)
    finally:
        job.cancel()
    assert records_out(job, SOURCE_OPERATOR) in (0, len(lines))  # the job's metrics are gone once it stopped
    # each reader parses its shards' records in arrival order, with the watermark of what it reads
    reader_of = {shard: reader for reader, shards in enumerate(shards_of_readers(
        sorted({r.shard_id for r in records}), parallelism)) for shard in shards}  # fmt: skip
    reads = [(reader_of[r.shard_id], r.data) for r in records]
    assert subtask_reads(job, "kinesis-source") == [  # every reader had shards
        sum(1 for reader, _ in reads if reader == subtask) for subtask in range(parallelism)]
    assert_tables_equal_replay_of(pg_dsn, table_names, sim.reference, reads, live=True)


def _quiet_half(sim: Simulation, quiet_after_ms: int) -> list[str]:
    """The site's lines, but every other truck sends nothing after ``quiet_after_ms`` (its last cycle then
    closes only when the fleet's event time passes its idle timeout)."""
    import json

    records = [json.loads(line) for line in sim.telemetry_lines]
    quiet = set(sorted({r["asset_guid"] for r in records})[::2])
    cut = sim.spec.start_ms + quiet_after_ms
    return [line for line, r in zip(sim.telemetry_lines, records, strict=True)
            if r["asset_guid"] not in quiet or _ms(r["timestamp"]) <= cut]  # fmt: skip


def _ms(timestamp: str) -> int:
    from datetime import datetime

    return int(datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp() * 1000)


@pytest.fixture(scope="module")
def quiet_site() -> tuple[Simulation, list[str]]:
    """Six trucks for six hours, three of them quiet after 90 minutes (a clean site: every line parses)."""
    sim = simulate(SimulationSpec(trucks=6, hours=6, seed=3))
    lines = _quiet_half(sim, 90 * 60_000)
    # the data needs event time: without timers (a watermark that never moves) fewer cycles close
    frozen = Replayer(sim.reference, speculative=True)
    frozen._fire_timers = lambda watermark: None
    for line in lines:
        frozen.feed("x", line)
    assert len(frozen.result.closed) < len(live_expectation(sim.reference, lines).closed)
    return sim, lines


@pytest.mark.parametrize("reshard", [False, True], ids=["steady", "split-while-running"])
def test_one_shard_read_at_parallelism_2_cycles_close_while_the_job_runs(
    reshard: bool, quiet_site: tuple[Simulation, list[str]], kinesis: KinesisEmulator, flink_cluster: FlinkCluster,
    tmp_path: Path, pg_dsn: str, redis_url: str, redis_client: Any, redis_prefix: str, table_names: TableNames,
) -> None:  # fmt: skip
    sim, lines = quiet_site
    _prepare(pg_dsn, table_names, redis_client, redis_prefix, sim)
    client = kinesis.client()
    name = f"one-shard-{'split' if reshard else 'steady'}"
    arn = kinesis.create_stream(name, shards=1)
    first = len(lines) // 3 if reshard else len(lines)
    put_lines(client, arn, lines[:first])
    job = submit(flink_cluster, job_settings(_source(kinesis, arn), table_names, pg_dsn, redis_url, redis_prefix,
                                             tmp_path, parallelism=2), pg_dsn, tmp_path / "properties.json")  # fmt: skip
    try:
        if reshard:
            wait_for(job, lambda: records_out(job, SOURCE_OPERATOR) >= first, "the records before the split")
            shard = client.list_shards(StreamARN=arn)["Shards"][0]
            low, high = int(shard["HashKeyRange"]["StartingHashKey"]), int(shard["HashKeyRange"]["EndingHashKey"])
            client.split_shard(StreamARN=arn, ShardToSplit=shard["ShardId"], NewStartingHashKey=str((low + high) // 2))
            kinesis.wait_active(name)
            put_lines(client, arn, lines[first:])
        records = arrival_order(stream_records(client, arn))
        assert len(records) == len(lines) and len({r.shard_id for r in records}) == (3 if reshard else 1)
        # each reader parses what it read (after a split the child shards may go to either reader), with
        # the watermark and lateness of what it reads: which shard each read is told by its record count.
        # A truck whose child shard went to the other reader reaches its one keyed state through both
        # readers' parse subtasks, its parent shard's records first.
        wait_for(job, lambda: sum(subtask_reads(job, "kinesis-source")) == len(lines), f"{len(lines)} records read")
        reads = _reads_of_readers(records, subtask_reads(job, "kinesis-source"))
        if reshard:
            assert _trucks_read_by_both(reads), "no truck's records went to both readers: the case is not tested"
        # the readers go idle once they have read everything: the event time is the furthest reader's; the
        # stream has no end, so points still held for late ones stay held (a site of 6 trucks holds them
        # max_hold_s: state_machine.lateness)
        live = [c.as_dict() for c in replay_parts(reads, sim.reference, speculative=True, idle_after_last=True,
                                                  end_of_input=False).sorted_closed()]  # fmt: skip
        # the idle timeouts close while the job runs: the watermark moves although one reader has no shard
        wait_for(job, lambda: closed_cycles(pg_dsn, table_names) == live, f"the {len(live)} cycles the replay closes")
        stop_with_savepoint(job, tmp_path / "savepoints", drain=True)
    finally:
        job.cancel()
    assert_tables_equal_replay_of(pg_dsn, table_names, sim.reference, reads, live=True, idle_after_last=True)


def _reads_of_readers(records: list[StreamRecord], reads: list[int]) -> list[tuple[int, str]]:
    """``(reader, raw line)`` of every record in arrival order, for the one way of giving the shards to the
    readers whose record counts are ``reads`` (each subtask's count)."""
    shards = sorted({r.shard_id for r in records})
    matches = []
    for owners in itertools.product(range(len(reads)), repeat=len(shards)):
        owner = dict(zip(shards, owners, strict=True))
        if [sum(1 for r in records if owner[r.shard_id] == reader) for reader in range(len(reads))] == reads:
            matches.append([(owner[r.shard_id], r.data) for r in records])
    assert len(matches) == 1, f"{len(matches)} ways of reading {len(shards)} shards as {reads}"
    return matches[0]


def _trucks_read_by_both(reads: list[tuple[int, str]]) -> set[str]:
    """The trucks whose records were read by more than one reader."""
    import json

    readers: dict[str, set[int]] = {}
    for reader, line in reads:
        readers.setdefault(json.loads(line)["asset_guid"], set()).add(reader)
    return {truck for truck, seen in readers.items() if len(seen) > 1}
