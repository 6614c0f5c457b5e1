"""Telemetry sources. Each yields a DataStream of ``Row(position, raw)`` records (udfs.rows'
RAW_RECORD_TYPE) plus a source label; ``raw_source`` picks the one SourceSettings.kind names.

``position`` is where the record came from, as the dead-letter table's ``source`` column stores
it: ``file:<path>:<line>``, ``kinesis:<stream>:<shard id>:<sequence number>`` or
``simulator:<n>``. The label (``kinesis:<stream>``, ``file:<path>``, ``simulator``) names the
source as a whole: dead-letter ids hash it, not the position, so the same bad record read twice
(a producer retry, a replay) stays one row.

* Kinesis: asset-cycle's own FLIP-27 source (``java/``, class ``KINESIS_SOURCE_CLASS`` in the
  job's uber-jar, see deploy.jars), polling GetRecords, built through py4j from the stream ARN and
  ``SourceSettings.kinesis_config()`` (keys mirror Flink's official ``KinesisStreamsSource``;
  CHILDREN_AFTER_CHECKPOINT set false when the job does not checkpoint).
  uid ``kinesis-source[-suffix]``.
* File: a bundle directory (its telemetry.jsonl) or a .jsonl file (bounded) is read by every subtask,
  each keeping its own trucks' lines (our ``TruckPartitionedFileSource``, uid ``file-by-truck``); a
  directory, monitored continuously for new files or read once, by Flink's FileSource with our
  ``LineNumberedTextFormat`` (lines + line numbers) in one reader (parallelism 1, uid ``file-source``),
  so its files are read one after the other.
* Simulator: PyFlink has no Python SourceFunction. A rate-limited Java source (the Table API
  ``datagen`` connector, 20 ticks/s) drives ``SimulatorPuller``, a parallelism-1 flat_map that
  owns ``workbench.simulator.iter_deliveries(spec)`` and on each tick emits the lines due by
  the wall clock (real time, accelerated, or as fast as possible). Lines keep delivery order (one
  subtask, one generator), nothing sleeps (checkpoints are never held up, process mode works),
  and it runs wherever the job runs. (A first design, a producer thread writing rolling files into
  a directory watched by a FileSource, reordered files found in the same directory scan.) The
  simulator position is not checkpointed: a restore restarts the simulation (demo source only).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from py4j.protocol import Py4JJavaError
from pyflink.common import Duration, Row, WatermarkStrategy
from pyflink.datastream import DataStream, FlatMapFunction, StreamExecutionEnvironment
from pyflink.datastream.connectors.base import Source
from pyflink.datastream.connectors.file_system import BulkFormat, FileSource
from pyflink.java_gateway import get_gateway
from pyflink.table import StreamTableEnvironment

from job.flink_env import MAX_PARALLELISM
from job.settings import SourceSettings
from udfs.rows import RAW_RECORD_TYPE
from workbench.simulator import SimulationSpec, iter_deliveries

log = logging.getLogger(__name__)

KINESIS_SOURCE_CLASS = "assetcycle.connector.kinesis.KinesisSource"
CHILDREN_AFTER_CHECKPOINT = "source.shard.children-after-checkpoint"
"""Kinesis source option: a child shard is read only once a completed checkpoint records its parents
as read to their end, so that their last records have passed every operator first (docs/deploy.md)."""
FILE_FORMAT_CLASS = "assetcycle.connector.file.LineNumberedTextFormat"
PARTITIONED_FILE_SOURCE_CLASS = "assetcycle.connector.file.TruckPartitionedFileSource"
FILE_UID = "file-source"
PARTITIONED_FILE_UID = "file-by-truck"
TELEMETRY_FILE = "telemetry.jsonl"


class SourceError(RuntimeError):
    """A source cannot be built (missing jar, missing file, bad option)."""


@dataclass(frozen=True, slots=True)
class RawSource:
    """A raw telemetry stream of RAW_RECORD_TYPE rows, its label, and whether it ends."""

    stream: DataStream
    label: str
    bounded: bool


def _java_class(name: str) -> Any:
    """A class of the job's uber-jar through py4j; SourceError when the jar is not loaded."""
    gateway = get_gateway()
    try:
        loader = gateway.jvm.Thread.currentThread().getContextClassLoader()
        gateway.jvm.Class.forName(name, False, loader)
    except Exception as exc:  # noqa: BLE001 - py4j wraps ClassNotFoundException
        raise SourceError(f"{name} is not loadable: the job's jar is not on the class path "
                          "(build it with: make setup)") from exc  # fmt: skip
    target: Any = gateway.jvm
    for part in name.split("."):
        target = getattr(target, part)
    return target


# --------------------------------------------------------------------------- kinesis


def kinesis_configuration(source: SourceSettings, checkpointing: bool) -> dict[str, str]:
    """Settings -> the Kinesis source configuration as plain key/value strings. Without
    ``checkpointing`` CHILDREN_AFTER_CHECKPOINT is false (a child shard is read once its parents
    ended, not once a checkpoint records that: none would ever complete); set true then, SourceError,
    as for a value other than true or false."""
    if not source.stream_arn:
        raise SourceError("SourceConfig.stream.arn is required for the Kinesis source")
    conf = source.kinesis_config()
    asked = conf.get(CHILDREN_AFTER_CHECKPOINT)
    choice = None if asked is None else asked.strip().lower()
    if choice not in (None, "true", "false"):
        raise SourceError(f"SourceConfig: {CHILDREN_AFTER_CHECKPOINT} must be true or false, not {asked!r}")
    if not checkpointing:
        if choice == "true":
            raise SourceError(f"SourceConfig: {CHILDREN_AFTER_CHECKPOINT}=true needs checkpointing "
                              "(no checkpoint would complete and a split shard's children would never be read)")  # fmt: skip
        conf[CHILDREN_AFTER_CHECKPOINT] = "false"
    return conf


def kinesis_label(source: SourceSettings) -> str:
    """``kinesis:<stream name>`` from the stream ARN."""
    arn = source.stream_arn or ""
    return "kinesis:" + (arn.split("/", 1)[1] if "/" in arn else arn)


def kinesis_source(env: StreamExecutionEnvironment, source: SourceSettings) -> RawSource:
    """A Kinesis raw stream (asset-cycle's polling source from the job's uber-jar); whether a child
    shard waits for a checkpoint follows ``env``'s checkpointing (see kinesis_configuration)."""
    conf = kinesis_configuration(source, env.get_checkpoint_config().is_checkpointing_enabled())
    source_class = _java_class(KINESIS_SOURCE_CLASS)
    j_conf = get_gateway().jvm.org.apache.flink.configuration.Configuration()
    for key, value in conf.items():
        j_conf.setString(key, value)
    try:
        j_source = source_class(source.stream_arn, j_conf)
    except Py4JJavaError as exc:  # IllegalArgumentException naming the option
        raise SourceError(f"SourceConfig: {exc.java_exception.getMessage()}") from None
    log.info("Kinesis source: %s (uid %s)", j_source.describe(), source.uid)
    stream = env.from_source(Source(j_source), WatermarkStrategy.no_watermarks(), source.uid,
                             type_info=RAW_RECORD_TYPE)  # fmt: skip
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


def file_source(env: StreamExecutionEnvironment, path: str | Path, monitor_interval_s: float | None = None,
                label: str | None = None) -> RawSource:  # fmt: skip
    """Lines of a bundle/.jsonl (bounded) or of a directory monitored every N s (unbounded), each
    with its ``file:<path>:<line>`` position.

    A file is read by every subtask (``TruckPartitionedFileSource``, uid ``file-by-truck``): each keeps
    the lines of the trucks its keyed operators hold, so they are parsed where they are used. A
    directory (watched, or read once) is read by one subtask (Flink's FileSource, uid ``file-source``),
    its files one after the other, and the job spreads the lines over the parse subtasks by truck."""
    p = Path(path) if monitor_interval_s else resolve_file_path(path)
    if monitor_interval_s and not p.is_dir():
        raise SourceError(f"continuous file source needs a directory, got {p}")
    label = label or f"file:{path}"
    if not p.is_dir():
        parallelism = env.get_parallelism()
        by_truck = _java_class(PARTITIONED_FILE_SOURCE_CLASS)(str(p.resolve()), parallelism, MAX_PARALLELISM)
        stream = env.from_source(Source(by_truck), WatermarkStrategy.no_watermarks(), PARTITIONED_FILE_UID,
                                 type_info=RAW_RECORD_TYPE)  # fmt: skip
        stream = stream.uid(PARTITIONED_FILE_UID).name(PARTITIONED_FILE_UID).set_parallelism(parallelism)
        return RawSource(stream, label, bounded=True)
    line_format = BulkFormat(_java_class(FILE_FORMAT_CLASS)())
    builder = FileSource.for_bulk_file_format(line_format, str(p.resolve()))
    if monitor_interval_s:
        builder = builder.monitor_continuously(Duration.of_millis(int(monitor_interval_s * 1000)))
    stream = env.from_source(builder.build(), WatermarkStrategy.no_watermarks(), FILE_UID, type_info=RAW_RECORD_TYPE)
    # one reader: files in the order they are found, lines in order (the job spreads them by truck)
    stream = stream.uid(FILE_UID).name(FILE_UID).set_parallelism(1)
    return RawSource(stream, label, bounded=not monitor_interval_s)


# --------------------------------------------------------------------------- simulator


class SimulatorPuller(FlatMapFunction):
    """tick -> the simulator's telemetry lines that are due by now (wall clock), as
    ``Row("simulator:<n>", line)`` (n counts the lines since the simulation started).

    Runs with parallelism 1. ``open`` starts ``iter_deliveries(spec)``; the simulation's past (lines
    delivered before the wall-clock time of the first tick, when ``spec.start_ms`` lies in the past)
    is due at once, and a later line ``(delivery_ms - max(delivery_ms_0, first tick)) / speed`` wall
    seconds after the first tick (``speed`` None or 0: everything as fast as possible, at most
    ``max_per_tick`` lines per tick). Never sleeps, so neither
    checkpoints nor process mode's bundles are held up. The generator position is not checkpointed:
    after a restore the simulation starts again (fine for a demo, not for production).
    """

    def __init__(self, spec: SimulationSpec, speed: float | None, max_per_tick: int = 5000,
                 max_lines: int | None = None) -> None:  # fmt: skip
        self.spec = spec
        self.speed = speed or None
        self.max_per_tick = max_per_tick
        self.max_lines = max_lines

    def open(self, runtime_context) -> None:
        self.lines = iter_deliveries(self.spec)
        self.pending: tuple[int, str] | None = None
        self.start_wall: float | None = None
        self.first_ms: int | None = None
        self.emitted = 0
        self.done = False

    def flat_map(self, value):
        if self.done:
            return
        now = time.monotonic()
        if self.start_wall is None:
            self.start_wall = now
            self.start_ms = int(time.time() * 1000)
        for _ in range(self.max_per_tick):
            if self.pending is None:
                try:
                    self.pending = next(self.lines)
                except StopIteration:
                    self.done = True
                    return
            delivery_ms, line = self.pending
            if self.first_ms is None:
                self.first_ms = delivery_ms
            ahead_ms = delivery_ms - max(self.first_ms, self.start_ms)
            if self.speed and ahead_ms > 0 and self.start_wall + ahead_ms / 1000.0 / self.speed > now:
                return
            self.pending = None
            self.emitted += 1
            yield Row(f"simulator:{self.emitted}", line)
            if self.max_lines is not None and self.emitted >= self.max_lines:
                self.done = True
                return


def ticker_stream(t_env: StreamTableEnvironment, name: str, rows_per_second: int) -> DataStream:
    """An unbounded, rate-limited stream of BIGINT ticks (the Table API datagen connector: PyFlink
    has no Python source function, and datagen is a Java source that paces itself)."""
    t_env.execute_sql(
        f"CREATE TEMPORARY TABLE IF NOT EXISTS `{name}` (tick BIGINT) WITH ("
        f"'connector' = 'datagen', 'rows-per-second' = '{int(rows_per_second)}', 'fields.tick.kind' = 'random')"
    )
    return t_env.to_data_stream(t_env.from_path(name))


def simulator_source(t_env: StreamTableEnvironment, spec: SimulationSpec, speed: float | None = 60.0, ticks_per_second: int = 20,
                     max_lines: int | None = None) -> RawSource:  # fmt: skip
    """An unbounded raw stream from the fleet simulator (see SimulatorPuller)."""
    ticks = ticker_stream(t_env, "simulator_ticker", ticks_per_second)
    stream = (
        ticks.flat_map(SimulatorPuller(spec, speed, max_lines=max_lines), output_type=RAW_RECORD_TYPE)
        .set_parallelism(1)
        .name("simulator-source")
        .uid("simulator-source")
    )
    return RawSource(stream, "simulator", bounded=False)


# --------------------------------------------------------------------------- by settings


def simulation_spec(source: SourceSettings, now_ms: int) -> SimulationSpec:
    """The simulated fleet of a simulator source: unbounded, started ``simulator_backfill_s`` before
    ``now_ms`` (that past is delivered at once). Its layout (the reference data to seed) does not
    depend on ``now_ms``."""
    spec = SimulationSpec(trucks=source.simulator_trucks, sites=source.simulator_sites, hours=None,
                          seed=source.simulator_seed, start_ms=now_ms - int(source.simulator_backfill_s * 1000))
    return spec.degraded() if source.simulator_degraded else spec


def source_label(source: SourceSettings) -> str:
    """The label the source ``source.kind`` names gets (RawSource.label)."""
    if source.kind == "kinesis":
        return kinesis_label(source)
    return f"file:{source.file_path}" if source.kind == "file" else "simulator"


def raw_source(env: StreamExecutionEnvironment, t_env: StreamTableEnvironment, source: SourceSettings) -> RawSource:
    """The source ``source.kind`` names: kinesis, file (a bundle, a .jsonl file or a watched directory) or
    simulator (a live fleet, at ``simulator_speed``)."""
    if source.kind == "kinesis":
        return kinesis_source(env, source)
    if source.kind == "file":
        if not source.file_path:
            raise SourceError("a file source needs a path (SourceConfig file.path)")
        return file_source(env, source.file_path, monitor_interval_s=source.monitor_interval_s,
                           label=source_label(source))  # fmt: skip
    if source.kind == "simulator":
        spec = simulation_spec(source, int(time.time() * 1000))
        return simulator_source(t_env, spec, speed=source.simulator_speed or None)
    raise SourceError(f"unknown source kind {source.kind!r} (kinesis, file or simulator)")
