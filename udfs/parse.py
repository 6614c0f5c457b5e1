"""Parse + validate raw telemetry: valid points go on as POINT tuples, bad records to a side output.

Input: ``RAW_RECORD_TYPE`` rows ``(position, raw)`` from every source (job.sources). A dead letter's
``source`` is the record's position (``file:<path>:<line>``, ``kinesis:<stream>:<shard>:<sequence
number>``; the source label when a record has none); its ``dead_letter_id`` hashes the source
label, reason and raw bytes as before, so the same bad record read twice is one row and the
offline replay (fed the label) produces the same ids.

With ``keyed_output`` a point leaves as ``((asset_guid, POINT), ts_ms)``: the record shape that
PyFlink's timestamp extraction and key_by would build in two more Python operators; the pipeline
feeds it straight into Flink's Java timestamp assigner and key-by (one Python call per record
before the keyed operator instead of three).

Also computes the per-record watermark hint (``max event time seen before this record -
out_of_orderness - 1``, with lone far-future timestamps held back: state_machine.watermark), i.e.
the watermark the offline replay uses before each record; the same held-back time is what the
record contributes to Flink's own watermarks. The cycle
operator fires a truck's due timer with it before applying the truck's next point, so timer
decisions do not depend on how late Flink's periodic watermarks arrive (see udfs.cycle_function).

Metrics (udfs.metrics): recordsIn, recordsParsed, deadLetters{reason}, deadLetterRecords; counted in Python and
passed to Flink at most once a second (checked on each record: the counts of the last records
before the input pauses reach Flink with the next record, or when the operator closes).
"""

from __future__ import annotations

import time

from pyflink.common import Row, Types
from pyflink.datastream import OutputTag, ProcessFunction

from state_machine.telemetry import Invalid, parse_record
from state_machine.watermark import WatermarkTracker
from udfs.metrics import OperatorMetrics
from udfs.rows import DEAD_LETTER_ROW_TYPE, NO_HINT, POINT_TYPE, dead_letter

DEAD_LETTER_TAG = OutputTag("parse-dead-letters", DEAD_LETTER_ROW_TYPE)
RAW_RECORD_TYPE = Types.ROW_NAMED(["position", "raw"], [Types.STRING(), Types.STRING()])
"""Input: (where the record came from or None, the raw text)."""
KEYED_POINT_TYPE = Types.ROW([Types.STRING(), POINT_TYPE])
KEYED_OUTPUT_TYPE = Types.TUPLE([KEYED_POINT_TYPE, Types.LONG()])
"""Output with ``keyed_output``: ((asset_guid, POINT), event time ms)."""


class ParseFunction(ProcessFunction):
    """(position, raw) -> POINT tuple; invalid records -> DEAD_LETTER_TAG with the parser's reason
    and the record's position. ``source`` is the source label (dead-letter ids)."""

    def __init__(self, source: str, out_of_orderness_ms: int, max_future_s: float = 300.0,
                 check_future: bool = True, keyed_output: bool = False,
                 max_jump_ms: int = 21_600_000) -> None:  # fmt: skip
        self.source = source
        self.keyed_output = keyed_output
        self.lag_ms = int(out_of_orderness_ms)
        self.max_jump_ms = int(max_jump_ms)
        self.max_future_s = max_future_s
        self.check_future = check_future
        self.watermarks = WatermarkTracker(self.lag_ms, self.max_jump_ms)
        self.metrics: OperatorMetrics | None = None

    def open(self, runtime_context) -> None:
        self.watermarks = WatermarkTracker(self.lag_ms, self.max_jump_ms)
        m = self.metrics = OperatorMetrics(runtime_context)
        self.c_in = m.counter("recordsIn")
        self.c_parsed = m.counter("recordsParsed")
        self.c_dead = m.labelled("reason", "deadLetters", total="deadLetterRecords")

    def close(self) -> None:
        if self.metrics is not None:
            self.metrics.flush()

    def process_element(self, record, ctx):
        position, raw = record[0], record[1]
        wall_ms = int(time.time() * 1000)
        parsed = parse_record(raw, now_ms=wall_ms if self.check_future else None, max_future_s=self.max_future_s)
        self.c_in.inc()
        if isinstance(parsed, Invalid):
            self.c_dead.inc(parsed.reason)
            if wall_ms >= self.metrics.next_flush_ms:
                self.metrics.flush_due(wall_ms)
            yield DEAD_LETTER_TAG, dead_letter(
                self.source, parsed.reason, parsed.detail, raw, parsed.asset_guid, parsed.ts_ms, position=position
            )
            return
        self.c_parsed.inc()
        if wall_ms >= self.metrics.next_flush_ms:
            self.metrics.flush_due(wall_ms)
        watermark = self.watermarks.watermark
        hint = NO_HINT if watermark is None else watermark
        ts = parsed.ts_ms
        watermark_ts = self.watermarks.observe(ts)  # a lone far-future time does not move it
        point = (parsed.asset_guid, parsed.site_guid, ts, parsed.latitude, parsed.longitude,
                 parsed.work_state_id, hint, raw)  # fmt: skip
        if self.keyed_output:
            # ((asset_guid, point), event time): the shapes PyFlink's own key_by and timestamp
            # assigner produce, so Java operators can take over from here (see job.pipeline)
            yield Row(parsed.asset_guid, point), watermark_ts
        else:
            yield point
