"""`asset-cycle produce`: batching and retries (a stub client), and the real CLI against the emulator."""

from __future__ import annotations

from collections import defaultdict

import pytest

from cli.commands.produce import MAX_BATCH_RECORDS, KinesisProducer, partition_key
from tests.job.kinesis_emulator import ACCESS_KEY, REGION, SECRET_KEY, KinesisEmulator
from tests.job.kinesis_support import stream_records
from workbench.simulator import SimulationSpec, write_simulation

ARN = "arn:aws:kinesis:us-east-1:000000000000:stream/s"


def line(asset: str, n: int) -> str:
    return f'{{"asset_guid": "{asset}", "n": {n}}}'


class StubKinesis:
    """put_records that throttles the first ``throttle`` records of each of the first calls."""

    def __init__(self, throttle_calls: int = 0, fail: set[str] = frozenset()) -> None:
        self.throttle_calls = throttle_calls
        self.fail = fail
        self.calls: list[list[dict]] = []
        self.stored: list[tuple[str, bytes]] = []

    def put_records(self, StreamARN: str, Records: list[dict]) -> dict:  # noqa: N803 - boto3's names
        assert StreamARN == ARN
        self.calls.append(Records)
        results = []
        for i, record in enumerate(Records):
            if record["Data"].decode() in self.fail:
                results.append({"ErrorCode": "AccessDeniedException", "ErrorMessage": "no"})
            elif len(self.calls) <= self.throttle_calls and i % 2 == 0:
                results.append({"ErrorCode": "ProvisionedThroughputExceededException", "ErrorMessage": "slow down"})
            else:
                self.stored.append((record["PartitionKey"], record["Data"]))
                results.append({"SequenceNumber": str(len(self.stored)), "ShardId": "shardId-000000000000"})
        return {"FailedRecordCount": sum("ErrorCode" in r for r in results), "Records": results}


def test_batches_of_at_most_500_keyed_by_asset_guid():
    stub = StubKinesis()
    producer = KinesisProducer(stub, ARN, sleep=lambda s: None)
    lines = [line(f"T{i % 7}", i) for i in range(1234)]
    for text in lines:
        producer.add(text)
    stats = producer.close()
    assert [len(c) for c in stub.calls] == [500, 500, 234]
    assert stats.sent == 1234 and stats.failed == 0 and stats.retried == 0
    assert [(k, d.decode()) for k, d in stub.stored] == [(f"T{i % 7}", text) for i, text in enumerate(lines)]


def test_throttled_records_are_retried_with_backoff_until_they_are_in():
    stub = StubKinesis(throttle_calls=3)
    sleeps: list[float] = []
    producer = KinesisProducer(stub, ARN, batch_size=10, sleep=sleeps.append)
    for i in range(10):
        producer.add(line("T1", i))
    stats = producer.close()
    assert stats.sent == 10 and stats.failed == 0 and stats.retried == 5 + 3 + 2
    assert sleeps == [0.05, 0.1, 0.2]  # exponential back-off between attempts
    assert sorted(d.decode() for _, d in stub.stored) == sorted(line("T1", i) for i in range(10))


def test_records_refused_for_good_are_counted_as_failed():
    bad = line("T1", 3)
    stub = StubKinesis(fail={bad})
    producer = KinesisProducer(stub, ARN, sleep=lambda s: None)
    for i in range(5):
        producer.add(line("T1", i))
    stats = producer.close()
    assert (stats.sent, stats.failed) == (4, 1)
    assert "1 failed" in stats.line()


def test_partition_key_falls_back_to_a_hash_for_lines_without_asset_guid():
    assert partition_key(line("S01-HT-001", 1)) == "S01-HT-001"
    keys = {partition_key(text) for text in ("not json", "[1, 2]", '{"asset_guid": 7}', '{"asset_guid": ""}')}
    assert len(keys) == 4 and all(k.startswith("unkeyed-") and len(k) <= 256 for k in keys)
    assert partition_key("not json") == partition_key("not json")


def test_batch_size_is_bounded():
    with pytest.raises(ValueError, match="1..500"):
        KinesisProducer(StubKinesis(), ARN, batch_size=MAX_BATCH_RECORDS + 1)


# --------------------------------------------------------------------------- CLI against the emulator


@pytest.fixture
def aws_env(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)


@pytest.mark.kinesis
@pytest.mark.slow
def test_cli_sends_a_bundle_and_a_simulated_fleet(tmp_path, aws_env, capsys):
    from cli.main import main

    bundle = tmp_path / "site"
    write_simulation(SimulationSpec(trucks=6, hours=1, seed=3).degraded(), bundle)
    lines = (bundle / "telemetry.jsonl").read_text(encoding="utf-8").splitlines()
    with KinesisEmulator() as kinesis:
        arn = kinesis.create_stream("produce", shards=4)
        assert main(["produce", "--stream-arn", arn, "--endpoint-url", kinesis.endpoint, str(bundle)]) == 0
        out = capsys.readouterr()
        summary = out.out.strip().splitlines()[-1]
        assert summary.startswith(f"produce: {len(lines)} records sent in ") and "0 failed" in summary

        records = stream_records(kinesis.client(), arn)
        assert len(records) == len(lines)
        stored: dict[str, list[str]] = defaultdict(list)
        for r in sorted(records, key=lambda r: (r.shard_id, int(r.sequence_number))):
            stored[r.partition_key].append(r.data)
        sent: dict[str, list[str]] = defaultdict(list)
        for text in lines:
            sent[partition_key(text)].append(text)
        assert stored == sent  # partition key asset_guid, each truck's lines in order

        other = kinesis.create_stream("fleet", shards=2)
        assert main(["produce", "--stream-arn", other, "--endpoint-url", kinesis.endpoint, "--simulate",
                     "--trucks", "3", "--speed", "3600", "--limit", "300", "--quiet"]) == 0  # fmt: skip
        assert len(stream_records(kinesis.client(), other)) == 300
        assert capsys.readouterr().out.startswith("produce: 300 records sent")

        missing = arn.replace("stream/produce", "stream/absent")
        assert main(["produce", "--stream-arn", missing, "--endpoint-url", kinesis.endpoint, str(bundle)]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("asset-cycle produce: error: cannot write to") and "\n" not in err
    with capsys.disabled():
        print(f"\n{summary}")  # the producer's records/s against the emulator


def test_cli_needs_exactly_one_input(aws_env, capsys):
    from cli.main import main

    assert main(["produce", "--stream-arn", ARN]) == 2
    assert "either a BUNDLE_DIR" in capsys.readouterr().err
    assert main(["produce", "--stream-arn", "arn:aws:s3:::bucket", "--simulate"]) == 2
    assert "must look like" in capsys.readouterr().err
