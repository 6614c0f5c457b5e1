"""The job on a real Kinesis API: npm kinesis-local (tests/job/kinesis_emulator.py: its own network
namespace, reachable on 127.0.0.1 only), asset-cycle's Kinesis source, 4 shards, records put with
boto3 (partition key asset_guid).

CBOR stays on (the AWS SDK's default for Kinesis, and what production uses): the emulator answers
every call the source makes in CBOR (ListShards with ShardFilter, GetShardIterator AT_TIMESTAMP with
millisecond timestamps, GetRecords at a shard's end), so nothing here sets ``aws.cborEnabled``; the
first test checks that the job's requests were CBOR. (Measured too: with ``aws.cborEnabled=false``
the source speaks JSON to the emulator and reads the same records.)

The source merges a reader's shards in arrival order; with one reader and the records put before
the job starts, the job consumes exactly ``arrival_order(stream_records(...))``, and its tables
must equal the offline replay of the lines in that order (the same order per truck as put).
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict

import pytest

from cli.commands.produce import partition_key
from state_machine.identity import dead_letter_id
from stores.postgres import TableNames
from tests.job.flink_harness import read_tables
from tests.job.kinesis_emulator import KinesisEmulator
from tests.job.kinesis_support import (
    arrival_order,
    kinesis_settings,
    put_lines,
    read_tap,
    run_kinesis_job,
    stream_records,
)
from tests.job.reliability_support import snapshot
from workbench.replay import replay
from workbench.simulator import SimulationSpec, simulate

pytestmark = [pytest.mark.flink, pytest.mark.services, pytest.mark.kinesis, pytest.mark.slow]

STREAM = "telemetry"
SHARDS = 4


@pytest.fixture(scope="module")
def kinesis():
    with KinesisEmulator() as emulator:
        yield emulator


@pytest.fixture(scope="module")
def site():
    """A degraded simulated site: duplicates, disorder, outages, bad lines, unknown assets."""
    return simulate(SimulationSpec(trucks=10, hours=3, seed=17).degraded())


@pytest.fixture(scope="module")
def small_site():
    """A smaller degraded site for the runs that only check what is read (the emulator is slow)."""
    return simulate(SimulationSpec(trucks=5, hours=2, seed=23).degraded())


def _stream(kinesis, name: str) -> str:
    return kinesis.create_stream(name, shards=SHARDS)


def _assert_tables_equal_replay(pg_dsn, names, stream, lines, reference) -> None:
    expected = replay((("kinesis:" + stream, line) for line in lines), reference)
    tables = read_tables(pg_dsn, names)
    assert len(expected.closed) > 20
    got_closed = [c.as_dict() for c in tables.closed]
    want_closed = [c.as_dict() for c in expected.sorted_closed()]
    assert got_closed == want_closed, _first_difference(got_closed, want_closed)
    assert {k: v.as_dict() for k, v in tables.in_progress.items()} == {
        k: v.as_dict() for k, v in expected.in_progress.items()}
    assert tables.statuses == expected.statuses
    got = {d["dead_letter_id"]: (d["reason"], d["raw"]) for d in tables.dead_letters}
    want = {dead_letter_id(d.source, d.reason, d.raw): (d.reason, d.raw) for d in expected.dead_letters}
    assert sorted(got.items() - want.items()) == [] and sorted(want.items() - got.items()) == []


def test_degraded_site_through_kinesis_equals_the_replay(tmp_path, kinesis, site, pg_dsn, table_names):
    arn = _stream(kinesis, STREAM)
    client = kinesis.client()
    lines = site.telemetry_lines
    started = time.perf_counter()
    put_rate = put_lines(client, arn, lines)
    put_s = time.perf_counter() - started
    records = stream_records(client, arn)
    assert len(records) == len(lines) and len({r.shard_id for r in records}) == SHARDS
    # partition key asset_guid: a truck's lines are in one shard, in the order they were put
    stored: dict[str, list[str]] = defaultdict(list)
    shard_of: dict[str, set[str]] = defaultdict(set)
    for r in sorted(records, key=lambda r: (r.shard_id, int(r.sequence_number))):
        stored[r.partition_key].append(r.data)
        shard_of[r.partition_key].add(r.shard_id)
    sent: dict[str, list[str]] = defaultdict(list)
    for line in lines:
        sent[partition_key(line)].append(line)
    assert stored == sent and all(len(s) == 1 for s in shard_of.values())

    tap = tmp_path / "positions.txt"
    kinesis.content_types.clear()
    run = run_kinesis_job(tmp_path, pg_dsn, table_names, site.reference, kinesis_settings(
        kinesis.endpoint, arn, init_position="TRIM_HORIZON"), len(lines), tap=tap)  # fmt: skip
    # CBOR stays on: every call the job's source made was CBOR (boto3 in this test speaks JSON)
    assert set(kinesis.content_types) == {"application/x-amz-cbor-1.1"}
    print(f"\n{len(lines)} records: put {put_s:.1f} s ({put_rate:.0f}/s); job {run.seconds:.1f} s "
          f"to drain incl. start-up ({len(lines) / run.seconds:.0f} records/s)")

    # read exactly once, in arrival order (the order the replay gets)
    consumed = read_tap(tap)
    ordered = arrival_order(records)
    assert run.source_records == len(lines)
    assert consumed == [r.position(STREAM) for r in ordered]
    _assert_tables_equal_replay(pg_dsn, table_names, STREAM, [r.data for r in ordered], site.reference)

    # parse dead letters carry the record's shard and sequence number
    position_of = {r.data: r.position(STREAM) for r in records}
    parse_letters = [d for d in read_tables(pg_dsn, table_names).dead_letters
                     if d["reason"] not in ("UNKNOWN_ASSET", "NO_REFERENCE_DATA", "LATE", "DUPLICATE")]  # fmt: skip
    assert parse_letters
    for letter in parse_letters:
        assert letter["source"] == position_of[letter["raw"]], letter


def test_trim_horizon_at_timestamp_and_the_reprocess_recipe(tmp_path, kinesis, small_site, pg_dsn, table_names):
    """TRIM_HORIZON reads everything the stream holds, AT_TIMESTAMP what arrived from then on; the
    reprocess recipe (a new source uid, AT_TIMESTAMP before the first record, empty keyed state)
    rewrites the first run's rows and nothing else."""
    arn = _stream(kinesis, "positions")
    client = kinesis.client()
    lines = small_site.telemetry_lines
    half = len(lines) // 2
    put_lines(client, arn, lines[:half])
    # the middle: just after the first half's last arrival; the second half is put once the clock
    # (the emulator stamps arrivals with this machine's) has passed it
    middle_ms = max(r.arrival_ms for r in stream_records(client, arn)) + 1
    while time.time() * 1000 <= middle_ms + 1:
        time.sleep(0.001)
    put_lines(client, arn, lines[half:])
    records = stream_records(client, arn)
    first_ms = min(r.arrival_ms for r in records)
    second_half = {r.position("positions") for r in records if r.arrival_ms >= middle_ms}
    assert len(second_half) == len(lines) - half

    def settings(**kw):
        return kinesis_settings(kinesis.endpoint, arn, **kw)

    run = run_kinesis_job(tmp_path / "th", pg_dsn, table_names, small_site.reference,
                          settings(init_position="TRIM_HORIZON"), len(lines))  # fmt: skip
    assert run.source_records == len(lines)
    first = snapshot(pg_dsn, table_names)

    # reprocess: new uid, from a timestamp before the first record, empty keyed state, same tables
    reprocess = settings(init_position="AT_TIMESTAMP", uid_suffix="reprocess-1",
                         init_timestamp=_iso(first_ms - 1000))  # fmt: skip
    run = run_kinesis_job(tmp_path / "re", pg_dsn, table_names, small_site.reference, reprocess, len(lines))
    assert run.source_records == len(lines)
    assert snapshot(pg_dsn, table_names) == first

    # AT_TIMESTAMP in the middle: only what arrived from then on
    other = TableNames(schema=table_names.schema + "_mid")
    tap = tmp_path / "mid.txt"
    try:
        run = run_kinesis_job(tmp_path / "mid", pg_dsn, other, small_site.reference,
                              settings(init_position="AT_TIMESTAMP", init_timestamp=_iso(middle_ms)),
                              len(second_half), tap=tap)  # fmt: skip
        assert run.source_records == len(second_half)
        assert set(read_tap(tap)) == second_half
    finally:
        _drop_schema(pg_dsn, other.schema)


def _first_difference(got: list[dict], want: list[dict]) -> str:
    """Where two lists of cycles first differ, field by field (for assertion messages)."""
    for i, (a, b) in enumerate(zip(got, want, strict=False)):
        if a != b:
            return f"cycle {i} of {len(got)}/{len(want)}: " + ", ".join(
                f"{k}: job {a.get(k)!r} replay {b.get(k)!r}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k))
    return f"{len(got)} cycles in the tables, {len(want)} in the replay"


def _iso(ms: int) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _drop_schema(pg_dsn: str, schema: str) -> None:
    import psycopg2
    from psycopg2 import sql

    conn = psycopg2.connect(pg_dsn)
    try:
        with conn.cursor() as cur:
            cur.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
        conn.commit()
    finally:
        conn.close()


def test_a_shard_split_while_the_job_runs_loses_nothing_and_reads_nothing_twice(
    tmp_path, kinesis, small_site, pg_dsn, table_names
):
    """Split a shard mid-stream: the parent is read to its end before its children, every record is
    read exactly once, each truck's records in the order they were put, and the tables equal the
    replay of what the job read in that order."""
    arn = _stream(kinesis, "reshard")
    client = kinesis.client()
    lines = small_site.telemetry_lines
    first = len(lines) // 3
    put_lines(client, arn, lines[:first])
    busiest = Counter(r.shard_id for r in stream_records(client, arn)).most_common(1)[0][0]
    parent = next(s for s in client.list_shards(StreamARN=arn)["Shards"] if s["ShardId"] == busiest)
    stage = {"split": False}

    def split_then_put_the_rest(job_id, port):
        from tests.job.kinesis_support import source_records_out

        if stage["split"] or source_records_out(port, job_id, "kinesis-source") < first:
            return
        low, high = int(parent["HashKeyRange"]["StartingHashKey"]), int(parent["HashKeyRange"]["EndingHashKey"])
        client.split_shard(StreamARN=arn, ShardToSplit=parent["ShardId"], NewStartingHashKey=str((low + high) // 2))
        kinesis.wait_active("reshard")
        stage["split"] = True
        put_lines(client, arn, lines[first:])

    tap = tmp_path / "positions.txt"
    run = run_kinesis_job(tmp_path, pg_dsn, table_names, small_site.reference,
                          kinesis_settings(kinesis.endpoint, arn, init_position="TRIM_HORIZON"), len(lines),
                          tap=tap, during=split_then_put_the_rest)  # fmt: skip
    assert stage["split"]
    shards = {s["ShardId"]: s for s in client.list_shards(StreamARN=arn)["Shards"]}
    children = [sid for sid, s in shards.items() if s.get("ParentShardId") == parent["ShardId"]]
    assert len(shards) == SHARDS + 2 and len(children) == 2

    records = stream_records(client, arn)
    by_position = {r.position("reshard"): r for r in records}
    consumed = read_tap(tap)
    assert run.source_records == len(lines) == len(consumed) == len(set(consumed))  # nothing lost, nothing twice
    assert set(consumed) == set(by_position)
    assert {by_position[p].shard_id for p in consumed} >= set(children)  # the children were read
    # the parent's records all come before its children's
    parent_last = max(i for i, p in enumerate(consumed) if by_position[p].shard_id == parent["ShardId"])
    child_first = min(i for i, p in enumerate(consumed) if by_position[p].shard_id in children)
    assert parent_last < child_first
    # each truck's records in the order they were put
    read_per_key: dict[str, list[str]] = defaultdict(list)
    for p in consumed:
        read_per_key[by_position[p].partition_key].append(by_position[p].data)
    sent: dict[str, list[str]] = defaultdict(list)
    for line in lines:
        sent[partition_key(line)].append(line)
    assert read_per_key == sent
    _assert_tables_equal_replay(pg_dsn, table_names, "reshard", [by_position[p].data for p in consumed],
                                small_site.reference)
