"""The job graph, in one function: raw telemetry + reference updates -> cycle engine -> sinks.

::

    raw str ──parse+validate (uid parse)──> ((asset, POINT), ts) ──watermarks (uid watermarks, Java)──> key by ─┐
         └── invalid ──> dead letters                                                               │
    reference updates ──MAX timestamps (uid reference-watermarks)──> broadcast ────────────────────┤
                                                                                                    v
                                 cycle engine, KeyedBroadcastProcessFunction (uid cycle-engine)
                                                  │ envelope rows (tag, cycle, status, dead letter, alert)
                                 Table API: split by tag ──> tmp / final / process info / dead letters / alerts ──> SinkSet

Watermarks: bounded out-of-orderness = the engine's max_disorder (plus optional idleness). The
reference stream gets Long.MAX_VALUE timestamps, so its watermark never holds back the keyed
operator (a two-input operator takes the minimum of both inputs); the cycle function treats a
watermark beyond year 10000 as end of input. Do not enable source idleness with an unbounded
source unless the fleet is never silent as a whole: an all-idle main input lets the combined
watermark jump to the reference stream's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pyflink.common import Duration, Types, WatermarkStrategy

from job.settings import AppSettings
from udfs import faults
from udfs.cycle_function import REFERENCE_STATE, CycleFunction
from udfs.parse import DEAD_LETTER_TAG as PARSE_DEAD_LETTER_TAG
from udfs.parse import KEYED_OUTPUT_TYPE, KEYED_POINT_TYPE, ParseFunction
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
    POINT_TYPE,
    REFERENCE_TYPE,
    STATUS_FIELDS,
)


@dataclass(frozen=True)
class PipelineStreams:
    """What the pipeline produced (for tests and extra outputs)."""

    envelopes: Any  # DataStream of ENVELOPE_TYPE rows from the cycle operator
    parse_dead_letters: Any  # DataStream of DEAD_LETTER_ROW_TYPE rows
    tables: dict[str, list[Any]]  # sink kind -> Tables inserted into it


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


def key_by_asset(parsed: Any, strategy: WatermarkStrategy) -> Any:
    """((asset_guid, POINT), ts) records -> event-time watermarks (uid ``watermarks``) -> KeyedStream
    of POINT by asset_guid, all in Java operators (PyFlink's ``assign_timestamps_and_watermarks``
    with a Python assigner and ``key_by`` would add two Python operators with the same effect)."""
    from pyflink.datastream import DataStream, KeyedStream
    from pyflink.java_gateway import get_gateway

    jvm = get_gateway().jvm
    eventtime = jvm.org.apache.flink.streaming.api.functions.python.eventtime
    j_strategy = strategy._j_watermark_strategy.withTimestampAssigner(eventtime.CustomTimestampAssigner())
    parallelism = parsed._j_data_stream.getParallelism()  # forward from parse: no reordering before key by
    j_stamped = parsed._j_data_stream.assignTimestampsAndWatermarks(j_strategy)
    j_stamped.uid("watermarks").name("watermarks").setParallelism(parallelism)
    j_rows = j_stamped.map(eventtime.RemoveTimestampMapFunction(), KEYED_POINT_TYPE.get_java_type_info())
    j_rows.uid("remove-timestamp").name("remove-timestamp").setParallelism(parallelism)
    j_keyed = j_rows.keyBy(jvm.KeyByKeySelector(), Types.ROW([Types.STRING()]).get_java_type_info())
    return KeyedStream(j_keyed, POINT_TYPE, DataStream(j_rows))


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
    engine_factory: Any = None,
    state_codec: Any = None,
) -> PipelineStreams:
    """Wire parse -> watermarks -> keyed broadcast cycle engine -> split -> ``sinks`` (a SinkSet:
    ``t_env``, ``add(kind, stream)``, ``add_table(kind, table)``). Does not attach/execute."""
    lag_ms = settings.engine.max_disorder_ms
    parsed = (
        raw_stream.process(ParseFunction(source_label, lag_ms, check_future=check_future, keyed_output=True,
                                         max_jump_ms=settings.engine.watermark_jump_ms),
                           output_type=KEYED_OUTPUT_TYPE)
        .name("parse+validate")
        .uid("parse")
        # as many subtasks as the source: records go forward, so a truck's records keep their order (a
        # rebalance from a one-subtask source such as the simulator would interleave two parse subtasks)
        .set_parallelism(raw_stream._j_data_stream.getParallelism())
    )  # fmt: skip
    strategy = WatermarkStrategy.for_bounded_out_of_orderness(Duration.of_millis(lag_ms))
    if settings.flink.source_idleness_ms:
        strategy = strategy.with_idleness(Duration.of_millis(settings.flink.source_idleness_ms))
    keyed_points = key_by_asset(parsed, strategy)

    reference = (
        reference_stream.assign_timestamps_and_watermarks(
            WatermarkStrategy.for_monotonous_timestamps().with_timestamp_assigner(MaxTimestampAssigner())
        )
        .name("reference-watermarks")
        .uid("reference-watermarks")
        .broadcast(REFERENCE_STATE)
    )
    fault_plan = faults.FaultPlan.from_env()  # test-only switch, off by default (udfs.faults)
    engine_factory = faults.engine_factory_with_faults(fault_plan, engine_factory)
    function = CycleFunction(
        settings.engine.to_dict(),
        source_label,
        wait_max_points=settings.reference.wait_max_points,
        wait_max_ms=int(settings.reference.wait_max_s * 1000),
        engine_factory=engine_factory,
        state_codec=state_codec,
    )
    envelopes = (
        keyed_points.connect(reference)
        .process(function, output_type=ENVELOPE_TYPE)
        .name("cycle-engine")
        .uid("cycle-engine")
    )
    parse_dead = side_output(parsed, PARSE_DEAD_LETTER_TAG)
    envelopes = faults.sink_path_with_faults(fault_plan, envelopes, ENVELOPE_TYPE)
    tables = split_envelopes(sinks.t_env, envelopes)
    inserted: dict[str, list[Any]] = {}
    for kind, table in tables.items():
        sinks.add_table(kind, table)
        inserted.setdefault(kind, []).append(table)
    sinks.add("dead_letter", parse_dead)
    return PipelineStreams(envelopes, parse_dead, inserted)
