"""Parse step of the job: batches of raw records in, one row per truck and batch out.

Input: rows ``(positions[], raws[])`` (string arrays), built in Java by ``assetcycle.pipeline.
RecordBatcher`` from the sources' ``RAW_RECORD_TYPE`` rows ``(position, raw)`` (job.sources; the row
layouts are in udfs.rows), so a batch of records crosses into Python in one call. Each record goes through
``state_machine.stream.StreamParser`` (parse, validate, the stream's watermark and the record's hint),
exactly as the offline replay runs it. Invalid records leave on ``DEAD_LETTER_TAG`` (``source`` = the
record's position when known; the id hashes the source label, as the replay's). The valid points of a
batch are grouped by truck, in arrival order, into one ``GROUP_TYPE`` row per truck (emitted with
its key as ``KEYED_GROUP_TYPE``): the points as pickled columns plus ``wm_ts`` (the largest
watermark contribution among them) and ``batch_end`` on the batch's last row;
``assetcycle.pipeline.BatchEndWatermarks`` turns those into Flink watermarks only at batch ends, so
a watermark never overtakes points of its own batch.

Metrics (udfs.metrics): recordsIn, recordsParsed, deadLetters{reason}, deadLetterRecords; per site
(state_machine.lateness) arrivalLagP50Ms / arrivalLagP90Ms / arrivalLagP99Ms, lateHoldMs and
lateHoldWarm, set about once a second.
"""

from __future__ import annotations

import time

from pyflink.common import Row
from pyflink.datastream import OutputTag, ProcessFunction

from state_machine.model import DeadLetter
from state_machine.stream import ParsedPoint, StreamParser
from udfs.metrics import OperatorMetrics
from udfs.rows import DEAD_LETTER_ROW_TYPE, dead_letter, group_row

DEAD_LETTER_TAG = OutputTag("parse-dead-letters", DEAD_LETTER_ROW_TYPE)


class ParseFunction(ProcessFunction):
    """(positions[], raws[]) -> KEYED_GROUP_TYPE rows per truck; invalid records -> DEAD_LETTER_TAG."""

    def __init__(self, source: str, out_of_orderness_ms: int, max_jump_ms: int, max_future_s: float = 300.0,
                 check_future: bool = True) -> None:  # fmt: skip
        self.source = source
        self.lag_ms = int(out_of_orderness_ms)
        self.max_jump_ms = int(max_jump_ms)
        self.max_future_s = max_future_s
        self.check_future = check_future

    def open(self, runtime_context) -> None:
        self.parser = StreamParser(self.source, self.lag_ms, self.max_jump_ms, self.max_future_s)
        m = self.metrics = OperatorMetrics(runtime_context)
        self.c_in = m.counter("recordsIn")
        self.c_parsed = m.counter("recordsParsed")
        self.c_dead = m.labelled("reason", "deadLetters", total="deadLetterRecords")
        self.g_site = {name: m.labelled_gauges("site", name) for name in (
            "arrivalLagP50Ms", "arrivalLagP90Ms", "arrivalLagP99Ms", "lateHoldMs", "lateHoldWarm")}

    def close(self) -> None:
        if getattr(self, "metrics", None) is not None:
            self.metrics.flush()

    def process_element(self, batch, ctx):
        wall_ms = int(time.time() * 1000)
        now_ms = wall_ms if self.check_future else None
        parse = self.parser.parse
        groups: dict[str, list[ParsedPoint]] = {}
        positions, raws = batch[0], batch[1]
        self.c_in.inc(len(raws))
        for position, raw in zip(positions, raws, strict=True):
            parsed = parse(raw, position, now_ms)
            if isinstance(parsed, DeadLetter):
                self.c_dead.inc(parsed.reason)
                yield DEAD_LETTER_TAG, dead_letter(self.source, parsed.reason, parsed.detail, parsed.raw,
                                                   parsed.asset_guid, parsed.ts_ms, position=position)  # fmt: skip
                continue
            group = groups.get(parsed.point.asset_guid)
            if group is None:
                groups[parsed.point.asset_guid] = [parsed]
            else:
                group.append(parsed)
        parsed_n = sum(len(g) for g in groups.values())
        if parsed_n:
            self.c_parsed.inc(parsed_n)
        if wall_ms >= self.metrics.next_flush_ms and self.metrics.flush_due(wall_ms):
            self._set_site_gauges()
        last = len(groups)
        for n, (asset, points) in enumerate(groups.items(), 1):
            yield Row(asset, group_row(asset, points, n == last))

    def _set_site_gauges(self) -> None:
        """Per site: arrival-lag quantiles, the hold its late points ask for, whether it is measured yet."""
        gauges = self.g_site
        for site, f in self.parser.lateness.figures().items():
            for name, value in (("arrivalLagP50Ms", f.arrival_lag_p50_ms), ("arrivalLagP90Ms", f.arrival_lag_p90_ms),
                                ("arrivalLagP99Ms", f.arrival_lag_p99_ms), ("lateHoldMs", f.hold_ms),
                                ("lateHoldWarm", int(f.warm))):  # fmt: skip
                gauges[name].set(site, value)
