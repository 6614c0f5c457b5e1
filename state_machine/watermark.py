"""Event-time watermark of a record stream, robust to timestamps that jump far ahead.

A watermark is "max event time seen - out_of_orderness - 1 ms" (Flink's bounded out-of-orderness
strategy). One record with a wild timestamp (a device clock glitch, a year-9999 test message)
would move it days ahead and fire every truck's timers. So a record more than ``max_jump_ms``
ahead of the current maximum does not advance it, unless ``confirm_records`` consecutive records
all agree that time really moved on (a replay file that skips a day, a stream resuming after an
outage). The record keeps its own timestamp for the cycle engine; only the time it contributes to
the watermark is held back. The Flink parse step and the offline replay use this same class, so
timers fire at the same points in both.
"""

from __future__ import annotations


class WatermarkTracker:
    """Tracks the watermark of one stream (one parse subtask)."""

    __slots__ = ("lag_ms", "max_jump_ms", "confirm_records", "max_ts", "_ahead")

    def __init__(self, out_of_orderness_ms: int, max_jump_ms: int, confirm_records: int = 50) -> None:
        self.lag_ms = out_of_orderness_ms
        self.max_jump_ms = max_jump_ms
        self.confirm_records = confirm_records
        self.max_ts: int | None = None
        self._ahead = 0  # consecutive records beyond the jump limit

    def observe(self, ts_ms: int) -> int:
        """Account for one record; returns the timestamp it may contribute to the watermark."""
        max_ts = self.max_ts
        if max_ts is None or ts_ms <= max_ts + self.max_jump_ms:
            self._ahead = 0
            if max_ts is None or ts_ms > max_ts:
                self.max_ts = ts_ms
            return ts_ms
        self._ahead += 1
        if self._ahead >= self.confirm_records:
            self._ahead = 0
            self.max_ts = ts_ms
            return ts_ms
        return max_ts

    @property
    def watermark(self) -> int | None:
        """Current watermark (None before the first record)."""
        return None if self.max_ts is None else self.max_ts - self.lag_ms - 1
