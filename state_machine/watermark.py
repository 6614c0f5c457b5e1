"""Event-time watermark of a record stream, robust to timestamps that jump ahead.

A watermark is "max event time seen - out_of_orderness - 1 ms" (Flink's bounded out-of-orderness
strategy). One record with a wild timestamp (a device clock glitch, a year-9999 test message) would
move it ahead for every truck: their re-order buffers would flush at once (the next out-of-order
points of every truck late) and idle timers fire. So a record more than ``max_jump_ms`` ahead of the
current maximum is only a *candidate*: it moves the maximum once ``confirm_records`` records
(itself included) agree with it (each at most ``max_jump_ms`` short of the newest candidate). In a
live fleet the next records keep to the fleet's time and a lone stray never counts; a stream whose
time really moved on (a single truck after a silence, a file that skips ahead) confirms it with its
next records. The record keeps its own timestamp for the cycle engine; only the time it contributes
to the watermark is held back. The Flink parse step and the offline replay use this same class, so
timers fire at the same points in both.
"""

from __future__ import annotations


class WatermarkTracker:
    """Tracks the watermark of one stream (one parse subtask)."""

    __slots__ = ("lag_ms", "max_jump_ms", "confirm_records", "max_ts", "_candidate", "_agree")

    def __init__(self, out_of_orderness_ms: int, max_jump_ms: int, confirm_records: int = 3) -> None:
        self.lag_ms = out_of_orderness_ms
        self.max_jump_ms = max_jump_ms
        self.confirm_records = confirm_records
        self.max_ts: int | None = None
        self._candidate: int | None = None  # newest time of the records ahead, not yet confirmed
        self._agree = 0  # records that agree with the candidate

    def observe(self, ts_ms: int) -> int:
        """Account for one record; returns the timestamp it may contribute to the watermark."""
        max_ts = self.max_ts
        if max_ts is None or ts_ms <= max_ts + self.max_jump_ms:
            if max_ts is None or ts_ms > max_ts:
                self.max_ts = max_ts = ts_ms
            candidate = self._candidate
            if candidate is not None and candidate <= max_ts + self.max_jump_ms:
                self._candidate = None  # the stream caught up with it
            return ts_ms
        candidate = self._candidate
        if candidate is None or ts_ms < candidate - self.max_jump_ms:
            self._candidate, self._agree = ts_ms, 1
        else:
            self._candidate = max(candidate, ts_ms)
            self._agree += 1
        if self._agree >= self.confirm_records:
            self.max_ts = self._candidate
            self._candidate = None
            return ts_ms
        return max_ts

    @property
    def watermark(self) -> int | None:
        """Current watermark (None before the first record)."""
        return None if self.max_ts is None else self.max_ts - self.lag_ms - 1
