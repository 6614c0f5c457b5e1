"""The stream-level step before the per-truck operator: parse and validate each record, and track
the stream's event time.

``StreamParser.parse(raw, position, now_ms)`` returns a ``ParsedPoint`` (the point, the watermark
hint, the raw text, the record's position, its watermark contribution and the hold its truck should
use) or a ``DeadLetter`` with the parser's reason. The hint is the stream's watermark *before* the
record (``state_machine.watermark``): the per-truck operator fires a truck's due timers with it before
applying the truck's next point, which makes timer decisions independent of when Flink's own
watermarks arrive. The hold is how long the truck keeps points for late ones, measured on the site's
stream (``state_machine.lateness``). The Flink parse step and the offline replay run this same class
over the same records in the same order, so both see the same hints and holds.
"""

from __future__ import annotations

from typing import NamedTuple

from state_machine.lateness import StreamLateness
from state_machine.model import DeadLetter, TelemetryPoint, new_record
from state_machine.telemetry import Invalid, parse_record
from state_machine.watermark import NO_TIME, WatermarkTracker

NO_HINT = NO_TIME
"""The hint of a record seen before the stream has a time (no watermark yet)."""


class ParsedPoint(NamedTuple):
    """A valid point on its way to its truck's operator."""

    point: TelemetryPoint
    hint: int  # the stream's watermark before this record (NO_HINT: none yet)
    raw: str  # the original text (dead letters keep it)
    position: str | None  # file:path:line, kinesis:stream:shard:sequence, ... when known
    watermark_ts: int  # the event time it contributes to the stream's watermark (a lone jump: held back)
    hold: int = 0  # how long (ms) its truck should hold points for late ones (the engine clamps it)


class StreamParser:
    """Parses one stream's records in arrival order (one per parse subtask in Flink)."""

    __slots__ = ("source", "max_future_s", "watermarks", "lateness")
    # source: the stream's label, recorded in dead letters (their ids hash it)

    def __init__(self, source: str, out_of_orderness_ms: int, max_jump_ms: int, max_future_s: float = 300.0) -> None:
        self.source = source
        self.max_future_s = max_future_s
        self.watermarks = WatermarkTracker(out_of_orderness_ms, max_jump_ms)
        self.lateness = StreamLateness(max_jump_ms, out_of_orderness_ms)

    def parse(self, raw: str | bytes, position: str | None = None, now_ms: int | None = None) -> ParsedPoint | DeadLetter:
        """The record as a point (with its watermark hint and contribution, and its hold) or a dead letter.
        ``now_ms``: reject timestamps more than max_future_s ahead of it (None: no such check)."""
        parsed = parse_record(raw, now_ms=now_ms, max_future_s=self.max_future_s)
        text = raw if isinstance(raw, str) else raw.decode("utf-8", errors="replace")
        tracker = self.watermarks
        if isinstance(parsed, Invalid):
            return DeadLetter(self.source, parsed.reason, parsed.detail, text, parsed.asset_guid, parsed.ts_ms, position)
        watermark = tracker.watermark
        now = tracker.max_ts
        contribution = tracker.observe(parsed.asset_guid, parsed.ts_ms)
        hold = self.lateness.observe(parsed.asset_guid, parsed.site_guid, parsed.ts_ms, now)
        return new_record(ParsedPoint, (parsed, NO_HINT if watermark is None else watermark, text, position,
                                        contribution, hold))
