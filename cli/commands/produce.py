"""`asset-cycle produce`: write telemetry to a Kinesis data stream with ``put_records``.

Two inputs: a bundle's ``telemetry.jsonl`` (or any .jsonl file), sent in line order as fast as the
stream takes it (or at ``--rate``); or ``--simulate``, a live simulated fleet sent at the pace of its
own clock (``--speed`` simulated seconds per second) until Ctrl-C, ``--duration-s`` or ``--limit``.

Each line becomes one record with partition key ``asset_guid`` (a line without one is keyed by its
hash, so it still lands somewhere and the job dead-letters it). Records go in batches of at most
500 records and 5 MiB. Records the stream refuses as throttled (or with an internal error) are
retried with exponential back-off until they are in; a retried record may land after later records
of the same truck, which the job's reordering window absorbs. A progress line every few seconds and
a summary at the end; exit code 1 when records were finally refused.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from botocore.exceptions import BotoCoreError, ClientError

from cli.errors import CliError
from workbench.simulator import SimulationSpec, iter_deliveries

MAX_BATCH_RECORDS = 500
MAX_BATCH_BYTES = 5 * 1024 * 1024
MAX_RECORD_BYTES = 1024 * 1024
MAX_PARTITION_KEY_CHARS = 256
RETRYABLE_ERRORS = frozenset({"ProvisionedThroughputExceededException", "InternalFailure", "KMSThrottlingException"})
PROGRESS_EVERY_S = 2.0


@dataclass
class ProduceStats:
    """What a producer sent so far."""

    sent: int = 0
    retried: int = 0
    failed: int = 0
    too_large: int = 0
    seconds: float = 0.0

    @property
    def records_per_s(self) -> float:
        return self.sent / self.seconds if self.seconds > 0 else 0.0

    def line(self) -> str:
        """One progress line."""
        extra = f", {self.too_large} too large (skipped)" if self.too_large else ""
        return (f"{self.sent} records sent in {self.seconds:.1f} s ({self.records_per_s:.0f} records/s), "
                f"{self.retried} retried, {self.failed} failed{extra}")  # fmt: skip


def partition_key(line: str) -> str:
    """The record's partition key: its ``asset_guid``, or a hash of the line when it has none."""
    try:
        guid = orjson.loads(line).get("asset_guid")
    except (orjson.JSONDecodeError, AttributeError):
        guid = None
    if isinstance(guid, str) and 0 < len(guid) <= MAX_PARTITION_KEY_CHARS:
        return guid
    return "unkeyed-" + hashlib.sha1(line.encode("utf-8", "surrogatepass")).hexdigest()


class KinesisProducer:
    """Batches lines into ``put_records`` calls and retries what the stream refuses as throttled."""

    def __init__(self, client: Any, stream_arn: str, batch_size: int = MAX_BATCH_RECORDS, max_attempts: int = 30,
                 sleep: Callable[[float], None] = time.sleep,
                 progress: Callable[[ProduceStats], None] | None = None) -> None:  # fmt: skip
        if not 1 <= batch_size <= MAX_BATCH_RECORDS:
            raise ValueError(f"batch size must be 1..{MAX_BATCH_RECORDS}, got {batch_size}")
        self.client = client
        self.stream_arn = stream_arn
        self.batch_size = batch_size
        self.max_attempts = max_attempts
        self.sleep = sleep
        self.progress = progress
        self.stats = ProduceStats()
        self._batch: list[dict[str, Any]] = []
        self._batch_bytes = 0
        self._started = time.monotonic()
        self._last_progress = self._started

    def add(self, line: str) -> None:
        """Queue one line; sends a batch when it is full."""
        data = line.encode("utf-8", "replace")
        key = partition_key(line)
        size = len(data) + len(key.encode())
        if len(data) > MAX_RECORD_BYTES:
            self.stats.too_large += 1
            return
        if len(self._batch) >= self.batch_size or self._batch_bytes + size > MAX_BATCH_BYTES:
            self.flush()
        self._batch.append({"Data": data, "PartitionKey": key})
        self._batch_bytes += size

    def flush(self) -> None:
        """Send the queued records until each is in (or refused for good)."""
        records, self._batch, self._batch_bytes = self._batch, [], 0
        delay = 0.05
        for attempt in range(1, self.max_attempts + 1):
            if not records:
                break
            response = self.client.put_records(StreamARN=self.stream_arn, Records=records)
            retry = []
            for record, result in zip(records, response["Records"], strict=True):
                code = result.get("ErrorCode")
                if code is None:
                    self.stats.sent += 1
                elif code in RETRYABLE_ERRORS and attempt < self.max_attempts:
                    retry.append(record)
                else:
                    self.stats.failed += 1
            self.stats.retried += len(retry)
            records = retry
            if records:
                self.sleep(delay)
                delay = min(delay * 2, 5.0)
        self._tick()

    def _tick(self) -> None:
        now = time.monotonic()
        self.stats.seconds = now - self._started
        if self.progress is not None and now - self._last_progress >= PROGRESS_EVERY_S:
            self._last_progress = now
            self.progress(self.stats)

    def close(self) -> ProduceStats:
        """Send what is left; the final statistics."""
        self.flush()
        self.stats.seconds = time.monotonic() - self._started
        return self.stats


def bundle_lines(path: str | Path) -> Iterator[str]:
    """Lines (without newline) of a bundle's telemetry.jsonl or of a .jsonl file."""
    p = Path(path)
    if p.is_dir():
        p = p / "telemetry.jsonl"
    if not p.is_file():
        raise CliError(f"{p} not found (give a bundle directory or a .jsonl file)")
    with open(p, encoding="utf-8", errors="replace", newline="") as fh:
        for line in fh:
            yield line.rstrip("\r\n")


def simulated_lines(trucks: int, sites: int, seed: int, degraded: bool, speed: float,
                    clock: Callable[[], float] = time.monotonic,
                    sleep: Callable[[float], None] = time.sleep) -> Iterator[str]:  # fmt: skip
    """A live fleet starting now: each line when the simulated clock (``speed`` x wall clock) is due."""
    spec = SimulationSpec(trucks=trucks, sites=sites, hours=None, seed=seed, start_ms=int(time.time() * 1000))
    start = clock()
    first_ms: int | None = None
    for delivery_ms, line in iter_deliveries(spec.degraded() if degraded else spec):
        first_ms = delivery_ms if first_ms is None else first_ms
        wait = (delivery_ms - first_ms) / 1000.0 / speed - (clock() - start)
        if wait > 0:
            sleep(wait)
        yield line


def paced(lines: Iterable[str], rate: float | None, clock: Callable[[], float] = time.monotonic,
          sleep: Callable[[float], None] = time.sleep) -> Iterator[str]:  # fmt: skip
    """``lines`` at most ``rate`` per second (all at once when rate is None)."""
    if not rate:
        yield from lines
        return
    start = clock()
    for n, line in enumerate(lines):
        wait = n / rate - (clock() - start)
        if wait > 0:
            sleep(wait)
        yield line


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `produce` sub-command."""
    p = subparsers.add_parser(
        "produce",
        help="write telemetry to a Kinesis data stream (a bundle, or a live simulated fleet)",
        description="Write telemetry lines to a Kinesis data stream with put_records (batches of <= 500, "
        "partition key asset_guid, throttled records retried). Credentials and region come from the "
        "AWS defaults (environment, profile, role).",
    )
    p.add_argument("bundle", nargs="?", help="site bundle directory or .jsonl file, sent in line order")
    p.add_argument("--stream-arn", required=True, help="the stream (arn:aws:kinesis:REGION:ACCOUNT:stream/NAME)")
    p.add_argument("--region", help="AWS region (default: from the stream ARN)")
    p.add_argument("--endpoint-url", help="Kinesis endpoint, e.g. http://127.0.0.1:4568 for a local emulator")
    p.add_argument("--simulate", action="store_true", help="send a live simulated fleet instead of a bundle")
    p.add_argument("--trucks", type=int, default=12, help="simulate: haul trucks per site (default 12)")
    p.add_argument("--sites", type=int, default=1, help="simulate: sites (default 1)")
    p.add_argument("--seed", type=int, default=7, help="simulate: random seed")
    p.add_argument("--degraded", action="store_true", help="simulate: realistic degradations")
    p.add_argument("--speed", type=float, default=1.0,
                   help="simulate: simulated seconds per wall-clock second (default 1 = real time)")
    p.add_argument("--rate", type=float, help="at most N records/s (default: as fast as the stream takes them)")
    p.add_argument("--limit", type=int, help="stop after N records")
    p.add_argument("--duration-s", type=float, help="stop after N seconds")
    p.add_argument("--batch-size", type=int, default=MAX_BATCH_RECORDS, help="records per put_records (1..500)")
    p.add_argument("--quiet", action="store_true", help="no progress lines, only the summary")
    p.set_defaults(func=run)


def _client(args: argparse.Namespace) -> Any:
    # deferred: boto3 takes a quarter of a second to import; only this command's run needs it
    import boto3
    from botocore.config import Config

    parts = args.stream_arn.split(":")
    if len(parts) < 6 or parts[2] != "kinesis" or not parts[5].startswith("stream/"):
        raise CliError(f"--stream-arn must look like arn:aws:kinesis:REGION:ACCOUNT:stream/NAME, got {args.stream_arn}")
    region = args.region or parts[3]
    if not region:
        raise CliError("no AWS region: give --region or a stream ARN with a region")
    return boto3.client("kinesis", region_name=region, endpoint_url=args.endpoint_url,
                        config=Config(retries={"mode": "standard", "max_attempts": 10}))  # fmt: skip


def run(args: argparse.Namespace) -> int:
    """Handler of `asset-cycle produce`."""
    if bool(args.bundle) == bool(args.simulate):
        raise CliError("give either a BUNDLE_DIR (or .jsonl file) or --simulate")
    if args.speed <= 0 or (args.rate is not None and args.rate <= 0):
        raise CliError("--speed and --rate must be > 0")
    client = _client(args)
    lines = (simulated_lines(args.trucks, args.sites, args.seed, args.degraded, args.speed) if args.simulate
             else bundle_lines(args.bundle))  # fmt: skip
    progress = None if args.quiet else (lambda s: print(f"produce: {s.line()}", file=sys.stderr, flush=True))
    try:
        producer = KinesisProducer(client, args.stream_arn, args.batch_size, progress=progress)
    except ValueError as exc:
        raise CliError(str(exc)) from exc
    deadline = None if args.duration_s is None else time.monotonic() + args.duration_s
    interrupted = False
    try:
        try:
            for n, line in enumerate(paced(lines, args.rate), 1):
                producer.add(line)
                if (args.limit is not None and n >= args.limit) or (deadline is not None and time.monotonic() >= deadline):
                    break
        except KeyboardInterrupt:
            interrupted = True
        stats = producer.close()
    except (ClientError, BotoCoreError) as exc:
        raise CliError(f"cannot write to {args.stream_arn}: {exc}") from exc
    print(f"produce: {'stopped: ' if interrupted else ''}{stats.line()}", flush=True)
    return 1 if stats.failed else (130 if interrupted else 0)
