"""The job graph, in one function: raw telemetry + reference updates -> cycle engine -> sinks.

::

    raw str ──parse+validate (uid parse)──> POINT ──watermarks (uid watermarks)──> key by asset_guid ─┐
         └── invalid ──> dead letters                                                               │
    reference updates ──MAX timestamps (uid reference-watermarks)──> broadcast ────────────────────┤
                                                                                                    v
                                 cycle engine, KeyedBroadcastProcessFunction (uid cycle-engine)
                                                  │ (tag, row)
                                 split (uid split-outputs) ──> tmp / final / process info / dead letters ──> SinkSet

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
from pyflink.common.watermark_strategy import TimestampAssigner
from pyflink.datastream.functions import KeySelector

from job.settings import AppSettings
from udfs.cycle_function import (
    CYCLE_TAG,
    DEAD_LETTER_TAG,
    REFERENCE_STATE,
    STATUS_TAG,
    TMP_TAG,
    CycleFunction,
    SplitOutputs,
)
from udfs.parse import DEAD_LETTER_TAG as PARSE_DEAD_LETTER_TAG
from udfs.parse import ParseFunction
from udfs.reference_poller import MaxTimestampAssigner, ReferencePoller
from udfs.rows import POINT_TYPE, REFERENCE_TYPE


class PointTimestamps(TimestampAssigner):
    """Event time of a POINT tuple."""

    def extract_timestamp(self, value, record_timestamp):
        return value[2]


class AssetKey(KeySelector):
    """asset_guid of a POINT tuple."""

    def get_key(self, value):
        return value[0]


@dataclass(frozen=True)
class PipelineStreams:
    """The streams handed to the sinks (for tests and extra outputs)."""

    cycle_tmp: Any
    cycle: Any
    process_info: Any
    dead_letters: Any


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
    """Wire parse -> watermarks -> keyed broadcast cycle engine -> split -> ``sinks`` (SinkSet-like:
    ``add(kind, stream)``). Does not attach/execute. Returns the output streams."""
    lag_ms = settings.engine.max_disorder_ms
    parsed = (
        raw_stream.process(ParseFunction(source_label, lag_ms, check_future=check_future), output_type=POINT_TYPE)
        .name("parse+validate")
        .uid("parse")
    )
    strategy = WatermarkStrategy.for_bounded_out_of_orderness(Duration.of_millis(lag_ms)).with_timestamp_assigner(
        PointTimestamps()
    )
    if settings.flink.source_idleness_ms:
        strategy = strategy.with_idleness(Duration.of_millis(settings.flink.source_idleness_ms))
    points = parsed.assign_timestamps_and_watermarks(strategy).name("watermarks").uid("watermarks")

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
        engine_factory=engine_factory,
        state_codec=state_codec,
    )
    tagged = (
        points.key_by(AssetKey(), key_type=Types.STRING())
        .connect(reference)
        .process(function)
        .name("cycle-engine")
        .uid("cycle-engine")
    )
    split = tagged.process(SplitOutputs()).name("split-outputs").uid("split-outputs")
    streams = PipelineStreams(
        cycle_tmp=split.get_side_output(TMP_TAG),
        cycle=split.get_side_output(CYCLE_TAG),
        process_info=split.get_side_output(STATUS_TAG),
        dead_letters=parsed.get_side_output(PARSE_DEAD_LETTER_TAG).union(split.get_side_output(DEAD_LETTER_TAG)),
    )
    sinks.add("cycle_tmp", streams.cycle_tmp)
    sinks.add("cycle", streams.cycle)
    sinks.add("process_info", streams.process_info)
    sinks.add("dead_letter", streams.dead_letters)
    return streams
