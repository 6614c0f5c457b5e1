"""Helpers of the Kinesis end-to-end tests: put a bundle's lines into an emulated stream, run the
real pipeline on asset-cycle's Kinesis source, stop it by draining event time, read what it read.

``put_lines`` writes with ``asset-cycle produce``'s producer (partition key asset_guid). The
Kinesis source merges the shards of a reader in arrival order (ApproximateArrivalTimestamp, then
shard id, sequence number), so with parallelism 1 and a backlog the job consumes exactly
``arrival_order(stream_records(...))``; the tests feed the offline replay that order.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pyflink.datastream import FlatMapFunction

from job.settings import AppSettings, FlinkSettings, ReferenceSettings, SinkSettings, SourceSettings
from state_machine.reference import ReferenceData
from stores.postgres import TableNames, apply_migrations
from tests.job.flink_harness import jdbc_url, pg_params
from tests.job.kinesis_emulator import REGION, jvm_credentials
from tests.job.reliability_support import free_port, rest_get


@dataclass(frozen=True)
class StreamRecord:
    """A record as the stream holds it."""

    shard_id: str
    sequence_number: str
    arrival_ms: int
    data: str
    partition_key: str

    def position(self, stream: str) -> str:
        """The position the job's Kinesis source gives this record."""
        return f"kinesis:{stream}:{self.shard_id}:{self.sequence_number}"


def put_lines(client: Any, stream_arn: str, lines: list[str]) -> float:
    """Put ``lines`` in order with the producer of ``asset-cycle produce``; returns records/s."""
    from cli.commands.produce import KinesisProducer

    producer = KinesisProducer(client, stream_arn)
    for line in lines:
        producer.add(line)
    stats = producer.close()
    assert stats.sent == len(lines) and stats.failed == 0
    return stats.records_per_s


def stream_records(client: Any, stream_arn: str) -> list[StreamRecord]:
    """Every record of every shard (TRIM_HORIZON to the end), shard by shard."""
    out: list[StreamRecord] = []
    shards = client.list_shards(StreamARN=stream_arn)["Shards"]
    for shard in shards:
        iterator = client.get_shard_iterator(StreamARN=stream_arn, ShardId=shard["ShardId"],
                                             ShardIteratorType="TRIM_HORIZON")["ShardIterator"]  # fmt: skip
        while iterator:
            response = client.get_records(StreamARN=stream_arn, ShardIterator=iterator, Limit=10000)
            for r in response["Records"]:
                out.append(StreamRecord(shard["ShardId"], r["SequenceNumber"],
                                        int(r["ApproximateArrivalTimestamp"].timestamp() * 1000),
                                        r["Data"].decode("utf-8", "replace"), r["PartitionKey"]))  # fmt: skip
            if not response["Records"] and response.get("MillisBehindLatest", 0) == 0:
                break
            iterator = response.get("NextShardIterator")
    return out


def arrival_order(records: list[StreamRecord]) -> list[StreamRecord]:
    """The order the job's source releases a backlog in (one reader)."""
    return sorted(records, key=lambda r: (r.arrival_ms, r.shard_id, int(r.sequence_number)))


@dataclass
class KinesisRun:
    """What a Kinesis job run did."""

    seconds: float = 0.0
    source_records: int = 0
    savepoint: str | None = None
    checkpoints: list[Path] = field(default_factory=list)


class PositionTap(FlatMapFunction):
    """(position, raw) -> nothing; the position is appended to ``path`` (one line each, flushed)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def open(self, runtime_context) -> None:
        self.out = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()

    def flat_map(self, value):
        self.out.write(value[0] + "\n")
        self.out.flush()
        return iter(())

    def close(self) -> None:
        self.out.close()


def source_records_out(port: int, job_id: str, uid: str) -> int:
    """numRecordsOut of the Kinesis source operator (all subtasks), from the REST API."""
    job = rest_get(port, f"/jobs/{job_id}") or {}
    total = 0
    for vertex in job.get("vertices", []):
        if uid not in vertex.get("name", ""):
            continue
        listing = rest_get(port, f"/jobs/{job_id}/vertices/{vertex['id']}/metrics") or []
        wanted = [m["id"] for m in listing if m["id"].endswith(f"Source__{uid}.numRecordsOut")]
        if wanted:
            values = rest_get(port, f"/jobs/{job_id}/vertices/{vertex['id']}/metrics?get=" + ",".join(wanted)) or []
            total += sum(int(float(m["value"])) for m in values)
    return total


def migrate(pg_dsn: str, names: TableNames) -> None:
    import psycopg2

    conn = psycopg2.connect(pg_dsn)
    try:
        apply_migrations(conn, names)
    finally:
        conn.close()


def run_kinesis_job(
    tmp_path: Path,
    pg_dsn: str,
    names: TableNames,
    reference: ReferenceData,
    source: SourceSettings,
    expected_records: int,
    *,
    tap: Path | None = None,
    during: Any = None,
    timeout_s: float = 300.0,
) -> KinesisRun:
    """Run the pipeline on ``source`` (parallelism 1, reference data loaded once) until its source
    emitted ``expected_records``, then stop with a draining savepoint (event time to the end, as at
    the end of a file). ``tap``: a file the source's positions are appended to, in emission order.
    ``during(job_id, port)`` is called while the job runs (e.g. to reshard)."""
    from pyflink.java_gateway import get_gateway

    from cli.console import release_snapshot, reporter_snapshot, stop_with_savepoint
    from job.pipeline import assemble, bounded_reference_stream
    from job.sinks import JdbcTarget, SinkSet
    from job.sources import kinesis_source
    from udfs.reference_poller import snapshot_records

    migrate(pg_dsn, names)
    port = free_port()
    settings = AppSettings(
        source=source,
        sink=SinkSettings(jdbc_url=jdbc_url(pg_dsn), batch_size=2000),
        reference=ReferenceSettings(),
        flink=FlinkSettings(parallelism=1, rest_port=port, source_idleness_ms=None, checkpoint_interval_ms=2000,
                            savepoint_dir=str(tmp_path / "savepoints")),
    )  # fmt: skip
    params = pg_params(pg_dsn)
    target = JdbcTarget(settings.sink.jdbc_url, params.get("user", "postgres"), None, batch_size=2000)

    def tapped_kinesis(env: Any, t_env: Any) -> Any:
        for key, value in jvm_credentials().items():
            get_gateway().jvm.System.setProperty(key, value)
        raw = kinesis_source(env, source)
        if tap is not None:
            from pyflink.datastream import DataStream

            positions = raw.stream.flat_map(PositionTap(str(tap))).set_parallelism(1).name("position-tap")
            jvm = get_gateway().jvm
            DataStream(positions._j_data_stream.sinkTo(
                jvm.org.apache.flink.streaming.api.functions.sink.v2.DiscardingSink()))
        return raw

    env = assemble(settings, lambda env: SinkSet(env, names, target), tapped_kinesis,
                   lambda env, t_env: bounded_reference_stream(env, snapshot_records(reference)),
                   check_future=False).env  # fmt: skip
    run = KinesisRun()
    start = time.perf_counter()
    client = env.execute_async("asset-cycle-kinesis-test")
    job_id = str(client.get_job_id())
    try:
        while True:
            run.source_records = source_records_out(port, job_id, source.uid)
            if run.source_records >= expected_records:
                break
            if during is not None:
                during(job_id, port)
            if time.perf_counter() - start > timeout_s:
                raise TimeoutError(f"the source emitted {run.source_records} of {expected_records} records "
                                   f"in {timeout_s:.0f} s")  # fmt: skip
            time.sleep(0.5)
        run.savepoint = stop_with_savepoint(client, tmp_path / "savepoints", drain=True)
        client.get_job_execution_result().result()
        # every record the source emitted until the stop (a record read twice or past the expected
        # count included), as counted where it entered the parse step; the in-JVM reporter keeps the
        # finished tasks' last values
        run.source_records = reporter_snapshot(job_id).records_in
        release_snapshot(job_id)
    except BaseException:
        client.cancel().result()
        raise
    run.seconds = time.perf_counter() - start
    return run


def kinesis_settings(endpoint: str, stream_arn: str, **overrides: Any) -> SourceSettings:
    """SourceSettings for the emulator's stream (shards discovered every second)."""
    extra = {"source.shard.discovery.interval": "1 s", **overrides.pop("extra", {})}
    return SourceSettings(kind="kinesis", stream_arn=stream_arn, aws_region=REGION, aws_endpoint=endpoint,
                          extra=extra, **overrides)  # fmt: skip


def read_tap(tap: Path) -> list[str]:
    """Positions a PositionTap wrote, in order."""
    return tap.read_text().splitlines() if tap.exists() else []


def properties_file(path: Path, groups: dict[str, dict[str, str]]) -> Path:
    """An MSF-shaped application_properties.json."""
    path.write_text(json.dumps([{"PropertyGroupId": g, "PropertyMap": m} for g, m in groups.items()]))
    return path
