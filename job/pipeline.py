"""The job graph, in one function: raw telemetry + reference updates -> cycle operator -> sinks.

::

    (position, raw) ──[by truck]──RecordBatcher (uid batch, Java)──> (positions[], raws[])
        ──parse+validate (uid parse, Python: state_machine.stream)──> one row per truck and batch
        │   └── invalid ──> dead letters
        ──BatchEndWatermarks (uid watermarks, Java: watermarks only at batch ends)──> key by truck ─┐
    reference updates ──ReferenceWatermarks (uid reference-watermarks, Java)──> broadcast ──────────┤
                                                                                                    v
                        cycle operator, KeyedBroadcastProcessFunction (uid cycle-engine): TruckOperator
                                                  │ envelope rows (one tagged part each)
         EnvelopeSplitter (uid split-by-table, Java): by tag ──> tmp / process info / dead letters / alerts /
                                                  │              truck hours ──> SinkSet
                                                  └─ loader events (closed cycles, load visits, trucks' presence)
        key by loader ──> loader operator, KeyedProcessFunction (uid loader-engine): LoaderOperator
         EnvelopeSplitter (uid split-loader-rows, Java): by tag ──> final cycles (with their queue) / load visits /
                                                                 loader hours / loader status ──> SinkSet

Parallelism: a Kinesis source has one reader per subtask and each reader's records are batched and
parsed in its own subtask; so are a file's, whose every reader keeps the lines of its own subtask's
trucks (job.sources.file_source); a watched directory or the simulator is read by one subtask and its
records are spread over the parse subtasks by truck (TruckPartitioner, Java). Either way a truck's records reach one
parse subtask in the order they were read, and each parse subtask computes the watermark of the
records it sees (the replay of each subtask's records gives every truck the rows the replay of the
whole stream gives it: tests/workbench/test_replay.py).

Records cross into Python a batch at a time (RecordBatcher: up to BATCH_MAX_RECORDS, at most
BATCH_MAX_DELAY_MS, flushed before every checkpoint barrier and watermark), and into the keyed
operator one truck's points of a batch at a time. Batching changes no output: the operator applies
each point with its own watermark hint, and a watermark only ever follows the whole batch it covers.

Watermarks: bounded out-of-orderness = the engine's max_disorder (plus optional idleness). A
two-input operator takes the minimum of its inputs' watermarks, leaving out idle ones: the reference
stream emits none until the marker after its first complete load and is idle from then on
(ReferenceWatermarks, Java, at the reference stream's parallelism so that its one subtask sees the
marker), so the keyed operator's event time waits for the reference data once and is the
telemetry's alone afterwards. When every telemetry channel is idle as well (readers without a shard,
a fleet silent for longer than the source idleness) event time stays where it is. The operator
treats a watermark beyond year 10000 as end of input (a bounded source's end).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from pyflink.common import Types
from pyflink.common.typeinfo import TypeInformation
from pyflink.datastream import DataStream, KeyedStream, OutputTag, StreamExecutionEnvironment
from pyflink.java_gateway import get_gateway
from pyflink.table import StreamTableEnvironment

from job.flink_env import MAX_PARALLELISM, EnvInfo, create_environment
from job.settings import AppSettings
from job.sources import RawSource, ticker_stream
from udfs.cycle_function import REFERENCE_STATE, CycleFunction
from udfs.loader_function import LoaderFunction
from udfs.parse import DEAD_LETTER_TAG as PARSE_DEAD_LETTER_TAG
from udfs.parse import ParseFunction
from udfs.reference_poller import ReferencePoller
from udfs.rows import (
    ENVELOPE_FIELDS,
    ENVELOPE_TYPE,
    GROUP_END_FIELD,
    GROUP_TYPE,
    GROUP_WM_FIELD,
    KEYED_GROUP_TYPE,
    KEYED_VALUE_FIELD,
    L_CYCLE,
    L_HOUR,
    L_STATUS,
    L_VISIT,
    LOADER_ENVELOPE_FIELDS,
    LOADER_ENVELOPE_TYPE,
    LOADER_EVENT_TYPE,
    OUT_ALERT,
    OUT_DEAD_LETTER,
    OUT_LOADER,
    OUT_STATUS,
    OUT_TMP,
    OUT_TRUCK_HOUR,
    REF_LOADED,
    REFERENCE_TYPE,
    STRING,
)

BATCH_MAX_RECORDS = 32768
BATCH_MAX_DELAY_MS = 100


class Sinks(Protocol):
    """Where the job's rows go: job.sinks.SinkSet (the tests' MemorySinks too)."""

    def add(self, kind: str, stream: DataStream) -> None:
        """Rows for the table of ``kind`` (job.sinks.SINK_KINDS)."""

    def attach(self) -> None:
        """Attach the sinks, once, after every add."""


def side_output(stream: DataStream, tag: OutputTag) -> DataStream:
    """A side output as a DataStream of the tag's type, without PyFlink's extra identity map (the
    tag's type is a proper Row type, so the Java side output can be used as is)."""
    return DataStream(stream._j_data_stream.getSideOutput(tag.get_java_output_tag()))


KEY_TYPE = Types.ROW([STRING])
"""The key of the keyed streams (a truck's or a loader's guid: the first field of their records)."""
LOADER_EVENTS = "loader_events"
"""The cycle operator's output that goes to the loader stage, not to a sink."""
TRUCK_OUTPUTS = {OUT_TMP: ("cycle_tmp", "cycle"), OUT_LOADER: (LOADER_EVENTS, "loader"),
                 OUT_STATUS: ("process_info", "status"), OUT_DEAD_LETTER: ("dead_letter", "dead_letter"),
                 OUT_ALERT: ("alerts", "alert"), OUT_TRUCK_HOUR: ("truck_hour", "truck_hour")}  # fmt: skip
"""Where each tag of the cycle operator's envelope (udfs.rows OUT_*) goes, and its part."""
LOADER_OUTPUTS = {L_CYCLE: ("cycle", "cycle"), L_VISIT: ("load_visit", "load_visit"),
                  L_HOUR: ("loader_hour", "loader_hour"), L_STATUS: ("loader_status", "loader_status")}  # fmt: skip
"""Where each tag of the loader operator's envelope (udfs.rows L_*) goes, and its part."""


def split_envelopes(envelopes: DataStream, outputs: dict[int, tuple[str, str]] = TRUCK_OUTPUTS,
                    fields: tuple[str, ...] = ENVELOPE_FIELDS, envelope_type: TypeInformation = ENVELOPE_TYPE,
                    uid: str = "split-by-table") -> dict[str, DataStream]:
    """Envelope rows -> one DataStream per destination of the tagged part's rows (udfs.rows layouts), in
    one Java operator (assetcycle.pipeline.EnvelopeSplitter, side outputs; no Table API planner)."""
    gateway = get_gateway()
    tags = sorted(outputs)
    if tags != list(range(len(tags))):
        raise ValueError(f"envelope tags must be 0..n-1, got {tags}")
    part_by_tag = gateway.new_array(gateway.jvm.int, len(tags))
    for tag in tags:
        part_by_tag[tag] = fields.index(outputs[tag][1])
    j_type = envelope_type.get_java_type_info()
    splitter = gateway.jvm.assetcycle.pipeline.EnvelopeSplitter(j_type, part_by_tag)
    j_split = envelopes._j_data_stream.process(splitter, j_type)
    j_split.name(uid).uid(uid)
    return {outputs[tag][0]: DataStream(j_split.getSideOutput(splitter.outputTag(tag))) for tag in tags}


def keyed_by_loader(events: DataStream) -> KeyedStream:
    """The loader events ``(loader_guid, LOADER_EVENT row)`` keyed by loader (Java key selector, as for
    the trucks: the key is the row's first field)."""
    jvm = get_gateway().jvm
    j_keyed = events._j_data_stream.keyBy(jvm.KeyByKeySelector(), KEY_TYPE.get_java_type_info())
    return KeyedStream(j_keyed, LOADER_EVENT_TYPE, events)


def batched(raw_stream: DataStream, parallelism: int) -> DataStream:
    """(position, raw) rows -> (positions[], raws[]) batches (Java), in ``parallelism`` subtasks: the
    source's own (records go forward: a Kinesis reader's shards keep their arrival order, a file reader's
    trucks their lines' order), or, when one subtask reads the source (a watched directory, the
    simulator) and the job runs more, all of them, the records
    spread by truck (assetcycle.pipeline.TruckPartitioner: each truck's records stay in order, in the
    subtask whose cycle operator holds the truck's key, so none crosses the network to reach it)."""
    jvm = get_gateway().jvm
    j_raw = raw_stream._j_data_stream
    if j_raw.getParallelism() == 1 and parallelism > 1:
        j_raw = jvm.assetcycle.pipeline.TruckPartitioner.byTruck(j_raw, MAX_PARALLELISM)
    else:
        parallelism = j_raw.getParallelism()
    batcher = jvm.assetcycle.pipeline.RecordBatcher(BATCH_MAX_RECORDS, BATCH_MAX_DELAY_MS)
    j_batched = j_raw.transform("batch", jvm.assetcycle.pipeline.RecordBatcher.outputType(), batcher)
    j_batched.uid("batch").setParallelism(parallelism)
    return DataStream(j_batched)


def keyed_with_batch_end_watermarks(groups: DataStream, lag_ms: int, idleness_ms: int | None) -> KeyedStream:
    """The parse step's ``(asset_guid, group)`` rows keyed by truck, event time from each group's
    ``wm_ts`` with watermarks only at batch ends (Java; PyFlink's ``key_by`` would add a Python
    operator that only prepends the key, which the parse step already did)."""
    jvm = get_gateway().jvm
    strategy = jvm.assetcycle.pipeline.BatchEndWatermarks(KEYED_VALUE_FIELD, GROUP_WM_FIELD, GROUP_END_FIELD, lag_ms)
    if idleness_ms:
        strategy = strategy.withIdleness(jvm.java.time.Duration.ofMillis(idleness_ms))
    j_stamped = groups._j_data_stream.assignTimestampsAndWatermarks(strategy)
    j_stamped.uid("watermarks").name("watermarks").setParallelism(groups._j_data_stream.getParallelism())
    j_keyed = j_stamped.keyBy(jvm.KeyByKeySelector(), KEY_TYPE.get_java_type_info())
    return KeyedStream(j_keyed, GROUP_TYPE, DataStream(j_stamped))


def reference_event_time(reference_stream: DataStream) -> DataStream:
    """The reference updates with the event time the keyed operator needs from them: none until the
    first complete load (LOADED_MARKER), then idle (assetcycle.pipeline.ReferenceWatermarks, Java), at
    the parallelism of the stream (one subtask: it must see the marker)."""
    operator = get_gateway().jvm.assetcycle.pipeline.ReferenceWatermarks(0, REF_LOADED)
    j_stream = reference_stream._j_data_stream
    j_marked = j_stream.transform("reference-watermarks", REFERENCE_TYPE.get_java_type_info(), operator)
    j_marked.uid("reference-watermarks").setParallelism(j_stream.getParallelism())
    return DataStream(j_marked)


def bounded_reference_stream(env: StreamExecutionEnvironment, records: list[tuple[str, str, str]]) -> DataStream:
    """Reference updates loaded once (finite collection; ends, so bounded jobs can finish)."""
    return env.from_collection(records, type_info=REFERENCE_TYPE).name("reference-snapshot").uid("reference-snapshot")


def polling_reference_stream(env: StreamExecutionEnvironment, t_env: StreamTableEnvironment,
                             poller: ReferencePoller) -> DataStream:
    """Reference updates polled every N s: a 1-row-per-second datagen ticker drives the poller.

    (PyFlink has no Python source; the Table API ``datagen`` connector is an unbounded,
    rate-limited Java source, so the poller is called once a second and checkpoints are never
    delayed by it.)
    """
    ticks = ticker_stream(t_env, "reference_ticker", 1)
    return (
        ticks.flat_map(poller, output_type=REFERENCE_TYPE)
        .set_parallelism(1)
        .name("reference-poller")
        .uid("reference-poller")
    )


def build_pipeline(
    env: StreamExecutionEnvironment,
    raw_stream: DataStream,
    reference_stream: DataStream,
    sinks: Sinks,
    settings: AppSettings,
    source_label: str,
    check_future: bool = True,
    live_rows: bool = True,
    operator_factory: Callable[..., Any] | None = None,
    sink_path: Callable[[DataStream], DataStream] | None = None,
) -> None:
    """Wire batch -> parse -> watermarks -> keyed broadcast cycle operator -> split -> ``sinks`` (a
    SinkSet: ``add(kind, stream)``, ``attach()``). Does not attach/execute.

    ``live_rows``: in-progress and status rows computed speculatively from the points still held for
    re-ordering (the live view, state_machine.truck); without it they show the committed state, which
    is what a bounded input ends with anyway. ``operator_factory`` replaces
    udfs.cycle_function.default_operator; ``sink_path`` is applied to
    the envelope stream before it is split into the sinks (both for tests).
    """
    lag_ms = settings.engine.max_disorder_ms
    batches = batched(raw_stream, env.get_parallelism())
    groups = (
        batches.process(ParseFunction(source_label, lag_ms, settings.engine.watermark_jump_ms,
                                      check_future=check_future), output_type=KEYED_GROUP_TYPE)
        .name("parse+validate")
        .uid("parse")
        # as many subtasks as the batcher, fed forward: a truck's records reach one parse subtask, in order
        .set_parallelism(batches._j_data_stream.getParallelism())
    )  # fmt: skip
    keyed = keyed_with_batch_end_watermarks(groups, lag_ms, settings.flink.source_idleness_ms)

    reference = reference_event_time(reference_stream).broadcast(REFERENCE_STATE)
    function = CycleFunction(
        settings.engine.to_dict(),
        source_label,
        wait_max_points=settings.reference.wait_max_points,
        wait_max_ms=int(settings.reference.wait_max_s * 1000),
        live_rows=live_rows,
        operator_factory=operator_factory,
    )
    envelopes = keyed.connect(reference).process(function, output_type=ENVELOPE_TYPE).name("cycle-engine").uid(
        "cycle-engine")
    parse_dead = side_output(groups, PARSE_DEAD_LETTER_TAG)
    if sink_path is not None:
        envelopes = sink_path(envelopes)
    outputs = split_envelopes(envelopes)
    loader_rows = (keyed_by_loader(outputs.pop(LOADER_EVENTS))
                   .process(LoaderFunction(), output_type=LOADER_ENVELOPE_TYPE)
                   .name("loader-engine").uid("loader-engine"))  # fmt: skip
    outputs.update(split_envelopes(loader_rows, LOADER_OUTPUTS, LOADER_ENVELOPE_FIELDS, LOADER_ENVELOPE_TYPE,
                                   "split-loader-rows"))  # fmt: skip
    for kind, stream in outputs.items():
        sinks.add(kind, stream)
    sinks.add("dead_letter", parse_dead)


@dataclass(frozen=True)
class AssembledJob:
    """A job graph ready to execute: its environment, what was configured, its source."""

    env: StreamExecutionEnvironment
    info: EnvInfo
    source: RawSource


def assemble(
    settings: AppSettings,
    sinks: Callable[[StreamExecutionEnvironment], Sinks],
    source: Callable[[StreamExecutionEnvironment, StreamTableEnvironment], RawSource],
    reference: Callable[[StreamExecutionEnvironment, StreamTableEnvironment], DataStream],
    *,
    on_msf: bool = False,
    extra_conf: dict[str, str] | None = None,
    check_future: bool = True,
    operator_factory: Callable[..., Any] | None = None,
    sink_path: Callable[[DataStream], DataStream] | None = None,
) -> AssembledJob:
    """The one place the job graph is put together (the job's entry point, the tests and the bench).

    ``sinks(env)`` returns the sink set the rows go to (job.sinks.SinkSet: ``add(kind, stream)``,
    ``attach()``), ``source(env, t_env)`` a job.sources.RawSource, ``reference(env, t_env)`` a stream
    of reference updates. ``t_env`` is a StreamTableEnvironment created on first use (only the
    datagen tickers of the simulator and the reference poller need one: its planner costs seconds
    of start-up).
    Raises job.flink_env.FlinkEnvError / job.sources.SourceError with a clear message."""
    env, info = create_environment(settings.flink, on_msf=on_msf, extra_conf=extra_conf)
    sink_set = sinks(env)
    t_env = LazyTableEnvironment(env)
    raw = source(env, t_env)
    # live rows serve people watching a live fleet; a bounded input (a history replay) ends with the
    # same rows without them, at about 25 % less engine work
    build_pipeline(env, raw.stream, reference(env, t_env), sink_set, settings, raw.label,
                   check_future=check_future, live_rows=not raw.bounded, operator_factory=operator_factory,
                   sink_path=sink_path)  # fmt: skip
    sink_set.attach()
    return AssembledJob(env, info, raw)


class LazyTableEnvironment:
    """A StreamTableEnvironment of ``env``, created when first used (attribute access)."""

    def __init__(self, env: StreamExecutionEnvironment) -> None:
        self._env = env
        self._t_env: StreamTableEnvironment | None = None

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        if self._t_env is None:
            self._t_env = StreamTableEnvironment.create(self._env)
        return getattr(self._t_env, name)
