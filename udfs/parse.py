"""Parse step of the job: batches of raw records in, one row per truck and batch out.

Input: rows ``(positions[], raws[])`` (string arrays), built in Java by ``assetcycle.pipeline.
RecordBatcher`` from the sources' ``RAW_RECORD_TYPE`` rows ``(position, raw)`` (job.sources), so a
batch of records crosses into Python in one call. Each record goes through
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

from pyflink.common import Row, Types
from pyflink.datastream import OutputTag, ProcessFunction

from state_machine.model import DeadLetter, TelemetryPoint, new_record
from state_machine.stream import ParsedPoint, StreamParser
from udfs.metrics import OperatorMetrics
from udfs.rows import DEAD_LETTER_ROW_TYPE, dead_letter

DEAD_LETTER_TAG = OutputTag("parse-dead-letters", DEAD_LETTER_ROW_TYPE)
RAW_RECORD_TYPE = Types.ROW_NAMED(["position", "raw"], [Types.STRING(), Types.STRING()])
"""A source's record: (where it came from or None, the raw text)."""
GROUP_FIELDS = ("asset", "wm_ts", "batch_end", "points")
GROUP_TYPE = Types.ROW_NAMED(list(GROUP_FIELDS),
                             [Types.STRING(), Types.LONG(), Types.BOOLEAN(), Types.PICKLED_BYTE_ARRAY()])  # fmt: skip
"""One truck's valid points of one batch, in arrival order (see the module docstring). ``points`` is
the columns ``(sites, timestamps, lats, lons, work_states, hints, raws, positions, holds)``, each a tuple,
pickled by PyFlink as one byte string: one value to convert per crossing instead of one per point
and field (columns pickle and unpickle faster than one tuple per point)."""
GROUP_WM_FIELD = GROUP_FIELDS.index("wm_ts")
GROUP_END_FIELD = GROUP_FIELDS.index("batch_end")
KEYED_GROUP_TYPE = Types.ROW([Types.STRING(), GROUP_TYPE])
"""What the parse step emits: ``(asset_guid, GROUP_TYPE row)``, the shape of a Flink keyed stream's
records in PyFlink (key first), so no extra Python operator has to add the key."""
KEYED_VALUE_FIELD = 1


def group_row(asset: str, points: list[ParsedPoint], batch_end: bool) -> Row:
    """A truck's points of a batch as a GROUP_TYPE row."""
    telemetry, hints, raws, positions, contributions, holds = zip(*points, strict=True)
    _, sites, timestamps, lats, lons, work_states = zip(*telemetry, strict=True)
    return Row(asset, max(contributions), batch_end,
               (sites, timestamps, lats, lons, work_states, hints, raws, positions, holds))


def group_timestamps(row) -> tuple[int, ...]:
    """The event times of a GROUP_TYPE row's points."""
    return row[3][1]


def group_points(row) -> list[ParsedPoint]:
    """Inverse of group_row (the watermark contributions are not carried: 0)."""
    asset = row[0]
    return [new_record(ParsedPoint, (new_record(TelemetryPoint, (asset, site, ts, lat, lon, ws)), hint, raw, position, 0,
                                     hold))
            for site, ts, lat, lon, ws, hint, raw, position, hold in zip(*row[3], strict=True)]  # fmt: skip


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
