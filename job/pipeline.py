"""The job graph, in one function: raw telemetry + reference updates -> cycle operator -> sinks.

::

    (position, raw) ──RecordBatcher (uid batch, Java)──> (positions[], raws[])
        ──parse+validate (uid parse, Python: state_machine.stream)──> one row per truck and batch
        │   └── invalid ──> dead letters
        ──BatchEndWatermarks (uid watermarks, Java: watermarks only at batch ends)──> key by truck ─┐
    reference updates ──MAX timestamps (uid reference-watermarks)──> broadcast ─────────────────────┤
                                                                                                    v
                        cycle operator, KeyedBroadcastProcessFunction (uid cycle-engine): TruckOperator
                                                  │ envelope rows (tag, cycle, status, dead letter, alert)
                        Table API: split by tag ──> tmp / final / process info / dead letters / alerts ──> SinkSet

Records cross into Python a batch at a time (RecordBatcher: up to BATCH_MAX_RECORDS, at most
BATCH_MAX_DELAY_MS, flushed before every checkpoint barrier and watermark), and into the keyed
operator one truck's points of a batch at a time. Batching changes no output: the operator applies
each point with its own watermark hint, and a watermark only ever follows the whole batch it covers.

Watermarks: bounded out-of-orderness = the engine's max_disorder (plus optional idleness). The
reference stream gets Long.MAX_VALUE timestamps, so its watermark never holds back the keyed
operator (a two-input operator takes the minimum of both inputs); the operator treats a watermark
beyond year 10000 as end of input. Do not enable source idleness with an unbounded source unless the
fleet is never silent as a whole: an all-idle main input lets the combined watermark jump to the
reference stream's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pyflink.common import Types, WatermarkStrategy

from job.settings import AppSettings
from udfs.cycle_function import REFERENCE_STATE, CycleFunction
from udfs.parse import DEAD_LETTER_TAG as PARSE_DEAD_LETTER_TAG
from udfs.parse import (
    GROUP_END_FIELD,
    GROUP_TYPE,
    GROUP_WM_FIELD,
    KEYED_GROUP_TYPE,
    KEYED_VALUE_FIELD,
    ParseFunction,
)
from udfs.reference_poller import MaxTimestampAssigner, ReferencePoller
from udfs.rows import (
    ALERT_FIELDS,
    CYCLE_FIELDS,
    DEAD_LETTER_FIELDS,
    ENVELOPE_TYPE,
    OUT_ALERT,
    OUT_CYCLE,
    OUT_DEAD_LETTER,
    OUT_STATUS,
    OUT_TMP,
    REFERENCE_TYPE,
    STATUS_FIELDS,
)

BATCH_MAX_RECORDS = 8192
BATCH_MAX_DELAY_MS = 100

def side_output(stream: Any, tag: Any) -> Any:
    """A side output as a DataStream of the tag's type, without PyFlink's extra identity map (the
    tag's type is a proper Row type, so the Java side output can be used as is)."""
    from pyflink.datastream import DataStream

    return DataStream(stream._j_data_stream.getSideOutput(tag.get_java_output_tag()))


def split_envelopes(t_env: Any, envelopes: Any) -> dict[str, Any]:
    """Envelope rows -> one Table per sink kind, with udfs.rows field names."""
    from pyflink.table.expressions import col

    table = t_env.from_data_stream(envelopes)

    def part(tag: int, nested: str, names: tuple[str, ...]) -> Any:
        return table.where(col("tag") == tag).select(*[col(nested).get(n).alias(n) for n in names])

    return {
        "cycle_tmp": part(OUT_TMP, "cycle", CYCLE_FIELDS),
        "cycle": part(OUT_CYCLE, "cycle", CYCLE_FIELDS),
        "process_info": part(OUT_STATUS, "status", STATUS_FIELDS),
        "dead_letter": part(OUT_DEAD_LETTER, "dead_letter", DEAD_LETTER_FIELDS),
        "alerts": part(OUT_ALERT, "alert", ALERT_FIELDS),
    }


def batched(raw_stream: Any) -> Any:
    """(position, raw) rows -> (positions[], raws[]) batches, at the source's parallelism (Java)."""
    from pyflink.datastream import DataStream
    from pyflink.java_gateway import get_gateway

    batcher_class = get_gateway().jvm.assetcycle.pipeline.RecordBatcher
    batcher = batcher_class(BATCH_MAX_RECORDS, BATCH_MAX_DELAY_MS)
    j_batched = raw_stream._j_data_stream.transform("batch", batcher_class.outputType(), batcher)
    j_batched.uid("batch").setParallelism(raw_stream._j_data_stream.getParallelism())
    return DataStream(j_batched)


def keyed_with_batch_end_watermarks(groups: Any, lag_ms: int, idleness_ms: int | None) -> Any:
    """The parse step's ``(asset_guid, group)`` rows keyed by truck, event time from each group's
    ``wm_ts`` with watermarks only at batch ends (Java; PyFlink's ``key_by`` would add a Python
    operator that only prepends the key, which the parse step already did)."""
    from pyflink.datastream import DataStream, KeyedStream
    from pyflink.java_gateway import get_gateway

    jvm = get_gateway().jvm
    strategy = jvm.assetcycle.pipeline.BatchEndWatermarks(KEYED_VALUE_FIELD, GROUP_WM_FIELD, GROUP_END_FIELD, lag_ms)
    if idleness_ms:
        strategy = strategy.withIdleness(jvm.java.time.Duration.ofMillis(idleness_ms))
    j_stamped = groups._j_data_stream.assignTimestampsAndWatermarks(strategy)
    j_stamped.uid("watermarks").name("watermarks").setParallelism(groups._j_data_stream.getParallelism())
    j_keyed = j_stamped.keyBy(jvm.KeyByKeySelector(), Types.ROW([Types.STRING()]).get_java_type_info())
    return KeyedStream(j_keyed, GROUP_TYPE, DataStream(j_stamped))


def bounded_reference_stream(env: Any, records: list[tuple[str, str, str]]) -> Any:
    """Reference updates loaded once (finite collection; ends, so bounded jobs can finish)."""
    return env.from_collection(records, type_info=REFERENCE_TYPE).name("reference-snapshot").uid("reference-snapshot")


def polling_reference_stream(env: Any, t_env: Any, poller: ReferencePoller) -> Any:
    """Reference updates polled every N s: a 1-row-per-second datagen ticker drives the poller.

    (PyFlink has no Python source; the Table API ``datagen`` connector is an unbounded,
    rate-limited Java source, so the poller is called once a second and checkpoints are never
    delayed by it.)
    """
    from job.sources import ticker_stream

    ticks = ticker_stream(t_env, "reference_ticker", 1)
    return (
        ticks.flat_map(poller, output_type=REFERENCE_TYPE)
        .set_parallelism(1)
        .name("reference-poller")
        .uid("reference-poller")
    )


def build_pipeline(
    env: Any,
    raw_stream: Any,
    reference_stream: Any,
    sinks: Any,
    settings: AppSettings,
    source_label: str,
    check_future: bool = True,
    operator_factory: Callable[..., Any] | None = None,
    sink_path: Callable[[Any], Any] | None = None,
) -> None:
    """Wire batch -> parse -> watermarks -> keyed broadcast cycle operator -> split -> ``sinks`` (a
    SinkSet: ``t_env``, ``add(kind, stream)``, ``add_table(kind, table)``). Does not attach/execute.

    ``operator_factory`` replaces udfs.cycle_function.default_operator; ``sink_path`` is applied to
    the envelope stream before it is split into the sinks (both for tests).
    """
    lag_ms = settings.engine.max_disorder_ms
    parallelism = raw_stream._j_data_stream.getParallelism()
    groups = (
        batched(raw_stream)
        .process(ParseFunction(source_label, lag_ms, settings.engine.watermark_jump_ms, check_future=check_future),
                 output_type=KEYED_GROUP_TYPE)
        .name("parse+validate")
        .uid("parse")
        # as many subtasks as the source: records go forward, so a truck's records keep their order (a
        # rebalance from a one-subtask source such as the simulator would interleave two parse subtasks)
        .set_parallelism(parallelism)
    )  # fmt: skip
    keyed = keyed_with_batch_end_watermarks(groups, lag_ms, settings.flink.source_idleness_ms)

    reference = (
        reference_stream.assign_timestamps_and_watermarks(
            WatermarkStrategy.for_monotonous_timestamps().with_timestamp_assigner(MaxTimestampAssigner())
        )
        .name("reference-watermarks")
        .uid("reference-watermarks")
        .broadcast(REFERENCE_STATE)
    )
    function = CycleFunction(
        settings.engine.to_dict(),
        source_label,
        wait_max_points=settings.reference.wait_max_points,
        wait_max_ms=int(settings.reference.wait_max_s * 1000),
        operator_factory=operator_factory,
    )
    envelopes = keyed.connect(reference).process(function, output_type=ENVELOPE_TYPE).name("cycle-engine").uid(
        "cycle-engine")
    parse_dead = side_output(groups, PARSE_DEAD_LETTER_TAG)
    if sink_path is not None:
        envelopes = sink_path(envelopes)
    tables = split_envelopes(sinks.t_env, envelopes)
    for kind, table in tables.items():
        sinks.add_table(kind, table)
    sinks.add("dead_letter", parse_dead)


@dataclass(frozen=True)
class AssembledJob:
    """A job graph ready to execute: its environment, what was configured, its source."""

    env: Any
    info: Any  # job.flink_env.EnvInfo
    source: Any  # job.sources.RawSource


def assemble(
    settings: AppSettings,
    sinks: Callable[[Any], Any],
    source: Callable[[Any, Any], Any],
    reference: Callable[[Any, Any], Any],
    *,
    on_msf: bool = False,
    extra_conf: dict[str, str] | None = None,
    check_future: bool = True,
    operator_factory: Callable[..., Any] | None = None,
    sink_path: Callable[[Any], Any] | None = None,
) -> AssembledJob:
    """The one place the job graph is put together (the job's entry point, the tests and the bench).

    ``sinks(env)`` returns the sink set the rows go to (job.sinks.SinkSet: ``t_env``, ``add``,
    ``add_table``, ``attach``), ``source(env, t_env)`` a job.sources.RawSource, ``reference(env,
    t_env)`` a stream of reference updates.
    Raises job.flink_env.FlinkEnvError / job.sources.SourceError with a clear message."""
    from job.flink_env import create_environment

    env, info = create_environment(settings.flink, on_msf=on_msf, extra_conf=extra_conf)
    sink_set = sinks(env)
    raw = source(env, sink_set.t_env)
    build_pipeline(env, raw.stream, reference(env, sink_set.t_env), sink_set, settings, raw.label,
                             check_future=check_future, operator_factory=operator_factory, sink_path=sink_path)  # fmt: skip
    sink_set.attach()
    return AssembledJob(env, info, raw)
