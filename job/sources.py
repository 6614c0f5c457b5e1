"""Telemetry sources. Each yields a DataStream of raw JSON strings plus a source label.

The label (``kinesis:<stream>``, ``file:<path>``, ``simulator``) is what the dead-letter table
records as ``source`` and what ``dead_letter_id`` hashes: the connectors hand out lines without
their position (a FileSource text line does not say which file or line it came from, the Kinesis
string schema drops shard and sequence number), so the label is per source, not per record.

* Kinesis: ``KinesisStreamsSource`` (flink-connector-aws-kinesis-streams 6.x, shaded sql jar)
  built through py4j: ``setStreamArn``, a source ``Configuration`` (``kinesis_configuration``:
  init position / timestamp, reader type POLLING|EFO, EFO consumer name, region, endpoint, any
  other ``source.*``/``aws.*`` key) and ``SimpleStringSchema``. uid ``kinesis-source[-suffix]``.
* File: a FileSource of text lines: a bundle directory (its telemetry.jsonl) or a .jsonl file
  (bounded), or a directory monitored continuously for new files.
* Simulator: PyFlink has no Python SourceFunction, so a producer thread in the client process
  pulls ``state_machine.simulator.iter_deliveries`` (real time, accelerated, or as fast as
  possible), writes rolling ``part-*.jsonl`` files (hidden while being written, renamed when
  complete) into a spool directory, and a continuously monitoring FileSource reads them. Files are
  read exactly once (the FileSource checkpoints which files it has seen) and old files are pruned.
  This works on the local minicluster (client and TaskManager share the host); it is a demo
  source, not an MSF one.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from job.settings import SourceSettings

log = logging.getLogger(__name__)

KINESIS_SOURCE_CLASS = "org.apache.flink.connector.kinesis.source.KinesisStreamsSource"
KINESIS_SKIP_MESSAGE = (
    "flink-connector-aws-kinesis-streams jar not found in .jars/; it is fetched from Maven Central where "
    "reachable: python -m deploy.jars fetch --kinesis"
)
TELEMETRY_FILE = "telemetry.jsonl"


class SourceError(RuntimeError):
    """A source cannot be built (missing jar, missing file, bad option)."""


@dataclass(frozen=True, slots=True)
class RawSource:
    """A raw telemetry stream, its label, and whether it ends."""

    stream: Any
    label: str
    bounded: bool


# --------------------------------------------------------------------------- kinesis


def kinesis_configuration(source: SourceSettings) -> dict[str, str]:
    """Settings -> the Kinesis source Configuration as plain key/value strings."""
    if not source.stream_arn:
        raise SourceError("SourceConfig.stream.arn is required for the Kinesis source")
    return source.kinesis_config()


def kinesis_label(source: SourceSettings) -> str:
    """``kinesis:<stream name>`` from the stream ARN."""
    arn = source.stream_arn or ""
    return "kinesis:" + (arn.split("/", 1)[1] if "/" in arn else arn)


def kinesis_class_available() -> bool:
    """Whether the Kinesis source class can be loaded by the gateway JVM."""
    from pyflink.java_gateway import get_gateway

    gateway = get_gateway()
    try:
        loader = gateway.jvm.Thread.currentThread().getContextClassLoader()
        gateway.jvm.Class.forName(KINESIS_SOURCE_CLASS, False, loader)
        return True
    except Exception:  # noqa: BLE001 - py4j wraps ClassNotFoundException
        return False


def kinesis_source(env: Any, source: SourceSettings) -> RawSource:
    """A Kinesis raw stream (needs the connector jar on pipeline.jars / the client class loader)."""
    from pyflink.common import Types, WatermarkStrategy
    from pyflink.common.serialization import SimpleStringSchema
    from pyflink.datastream.connectors.base import Source
    from pyflink.java_gateway import get_gateway

    conf = kinesis_configuration(source)
    if not kinesis_class_available():
        raise SourceError(f"{KINESIS_SOURCE_CLASS} is not loadable: {KINESIS_SKIP_MESSAGE}")
    gateway = get_gateway()
    j_conf = gateway.jvm.org.apache.flink.configuration.Configuration()
    for key, value in conf.items():
        j_conf.setString(key, value)
    j_source = (
        gateway.jvm.org.apache.flink.connector.kinesis.source.KinesisStreamsSource.builder()
        .setStreamArn(source.stream_arn)
        .setSourceConfig(j_conf)
        .setDeserializationSchema(SimpleStringSchema()._j_deserialization_schema)
        .build()
    )
    stream = env.from_source(Source(j_source), WatermarkStrategy.no_watermarks(), "kinesis-source",
                             type_info=Types.STRING())  # fmt: skip
    stream = stream.uid(source.uid).name(source.uid)
    return RawSource(stream, kinesis_label(source), bounded=False)


# --------------------------------------------------------------------------- files


def resolve_file_path(path: str | Path) -> Path:
    """A bundle directory -> its telemetry.jsonl; a file stays; SourceError when missing."""
    p = Path(path)
    if p.is_dir() and (p / TELEMETRY_FILE).is_file():
        return p / TELEMETRY_FILE
    if p.exists():
        return p
    raise SourceError(f"telemetry source {p} does not exist (give a bundle directory or a .jsonl file)")


def file_source(env: Any, path: str | Path, monitor_interval_s: float | None = None,
                uid: str = "file-source", label: str | None = None) -> RawSource:  # fmt: skip
    """Text lines of a bundle/.jsonl (bounded) or of a directory monitored every N s (unbounded)."""
    from pyflink.common import Duration, Types, WatermarkStrategy
    from pyflink.datastream.connectors.file_system import FileSource, StreamFormat

    p = Path(path) if monitor_interval_s else resolve_file_path(path)
    if monitor_interval_s and not p.is_dir():
        raise SourceError(f"continuous file source needs a directory, got {p}")
    builder = FileSource.for_record_stream_format(StreamFormat.text_line_format(), str(p.resolve()))
    if monitor_interval_s:
        builder = builder.monitor_continuously(Duration.of_millis(int(monitor_interval_s * 1000)))
    stream = env.from_source(builder.build(), WatermarkStrategy.no_watermarks(), uid, type_info=Types.STRING())
    stream = stream.uid(uid).name(uid)
    return RawSource(stream, label or f"file:{path}", bounded=not monitor_interval_s)


# --------------------------------------------------------------------------- simulator


class SpoolWriter(threading.Thread):
    """Writes lines into rolling files of a directory (``part-<n>.jsonl``, atomically renamed).

    ``lines`` yields ``(delivery_ms, line)`` in delivery order. With ``speed`` > 0 a line is
    released when ``(delivery_ms - first) / speed`` wall seconds have passed; ``speed`` None or 0
    writes as fast as possible. Files roll every ``roll_s`` or ``max_lines``; files older than
    ``keep_s`` are deleted. Stops at the end of ``lines``, after ``max_lines_total``, or on stop().
    """

    def __init__(
        self,
        lines: Iterator[tuple[int, str]],
        directory: str | Path,
        speed: float | None = 60.0,
        roll_s: float = 1.0,
        max_lines: int = 20_000,
        keep_s: float = 600.0,
        max_lines_total: int | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        super().__init__(name="simulator-spool", daemon=True)
        self.lines = lines
        self.directory = Path(directory)
        self.speed = speed or None
        self.roll_s = roll_s
        self.max_lines = max_lines
        self.keep_s = keep_s
        self.max_lines_total = max_lines_total
        self.clock = clock
        self.sleep = sleep
        self.written = 0
        self.files = 0
        self.error: BaseException | None = None
        self._stop_event = threading.Event()

    def stop(self) -> None:
        self._stop_event.set()

    def _flush(self, buf: list[str]) -> None:
        if not buf:
            return
        name = f"part-{self.files:08d}.jsonl"
        tmp = self.directory / f".{name}.inprogress"
        tmp.write_text("".join(buf), encoding="utf-8")
        os.replace(tmp, self.directory / name)
        self.files += 1
        buf.clear()

    def _prune(self) -> None:
        cutoff = time.time() - self.keep_s
        for f in self.directory.glob("part-*.jsonl"):
            try:
                if f.stat().st_mtime < cutoff:
                    f.unlink()
            except OSError:
                pass

    def run(self) -> None:
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            buf: list[str] = []
            start_wall = self.clock()
            first_ms: int | None = None
            last_roll = start_wall
            for delivery_ms, line in self.lines:
                if self._stop_event.is_set():
                    break
                if first_ms is None:
                    first_ms = delivery_ms
                if self.speed:
                    due = start_wall + (delivery_ms - first_ms) / 1000.0 / self.speed
                    while True:
                        now = self.clock()
                        if now >= due or self._stop_event.is_set():
                            break
                        if buf and now - last_roll >= self.roll_s:
                            self._flush(buf)
                            last_roll = now
                        self.sleep(min(due - now, self.roll_s / 4))
                buf.append(line if line.endswith("\n") else line + "\n")
                self.written += 1
                now = self.clock()
                if len(buf) >= self.max_lines or now - last_roll >= self.roll_s:
                    self._flush(buf)
                    last_roll = now
                    if self.files % 50 == 0:
                        self._prune()
                if self.max_lines_total is not None and self.written >= self.max_lines_total:
                    break
            self._flush(buf)
        except BaseException as exc:  # noqa: BLE001 - reported by the caller
            self.error = exc
            log.exception("simulator spool writer failed")


def simulator_source(
    env: Any,
    spool_dir: str | Path,
    lines: Iterator[tuple[int, str]],
    speed: float | None = 60.0,
    monitor_interval_s: float = 1.0,
    max_lines_total: int | None = None,
) -> tuple[RawSource, SpoolWriter]:
    """An unbounded raw stream fed by a simulator producer thread (started here)."""
    spool = Path(spool_dir)
    spool.mkdir(parents=True, exist_ok=True)
    writer = SpoolWriter(lines, spool, speed=speed, max_lines_total=max_lines_total)
    raw = file_source(env, spool, monitor_interval_s=monitor_interval_s, uid="simulator-source",
                      label="simulator")  # fmt: skip
    writer.start()
    return raw, writer
