"""Event time of a record stream, robust to device clocks that jump ahead.

A watermark is "stream time - out_of_orderness - 1 ms" (Flink's bounded out-of-orderness strategy),
the stream time being the newest event time seen. One record with a wild timestamp (a device clock
glitch, a year-9999 test message) must not move it: every truck's re-order buffer would flush at once
(the next out-of-order points of every truck late) and idle timers would fire. Nor may several such
strays of several trucks, arriving hours apart. So the stream time is built from *trucks*, not
records:

* Each truck has a newest time. A record up to ``max_jump_ms`` ahead of it moves it on as usual (a
  truck's first record: up to max_jump_ms ahead of the stream time). A record further ahead is a
  *candidate*: it becomes the truck's time only when the truck's next record agrees with it (not more
  than max_jump_ms before it, not more than ``AGREE_MS`` after it) and nothing in between moved the
  truck's time (as the engine's lead buffer, state_machine.truck: a backlog arriving after a live
  point fills the gap instead). A lone stray never does; a truck whose clock really moved on (a device
  reset, the next row after a silence) confirms it with its next record.
* The stream time follows the trucks' times up to max_jump_ms at a time. A truck whose time is
  further ahead (it confirmed a jump) moves it only when, among the trucks seen in the last
  ``ACTIVE_WINDOW`` records, more than half are that far ahead: the stream time then becomes the
  newest time that this majority has reached. A stream that really moved on (a file that skips a
  day, a single truck after a silence) is followed; up to half of a fleet with wrong clocks is not.
  At the start the stream has no time (no watermark) until such a majority of its trucks agree, so
  a first record that is a stray does not set it either.

The record keeps its own timestamp for the cycle engine; the time it *contributes* to the watermark
(Flink's ``BatchEndWatermarks`` takes the max of the contributions) never exceeds the stream time, so
Flink's watermark is this tracker's. The Flink parse step and the offline replay use this same class,
so timers fire at the same points in both.
"""

from __future__ import annotations

AGREE_MS = 3_600_000
"""A truck's second record ahead confirms its candidate when at most this much later than it."""
ACTIVE_WINDOW = 1024
"""Records over which the trucks taking part in the stream are counted (the majority for a jump)."""
FORGET_AFTER = 1 << 20
"""Records after which a truck not heard from is forgotten (bounds the memory a flood of made-up
asset ids could take)."""
NO_TIME = -(2**63)
"""The contribution of a record while the stream has no time yet (Long.MIN_VALUE: no watermark)."""

_NEWEST, _CANDIDATE, _ANCHOR, _SEEN = range(4)
"""A truck's entry: its newest confirmed time, the candidate and the newest time when it came, the
number of its last record."""


class WatermarkTracker:
    """Tracks the time and watermark of one stream (one parse subtask)."""

    __slots__ = ("lag_ms", "max_jump_ms", "max_ts", "_trucks", "_ahead", "_records", "_forget_at")

    def __init__(self, out_of_orderness_ms: int, max_jump_ms: int) -> None:
        self.lag_ms = out_of_orderness_ms
        self.max_jump_ms = max_jump_ms
        self.max_ts: int | None = None  # the stream time
        self._trucks: dict[str, list] = {}
        self._ahead: set[str] = set()  # trucks whose time may be more than max_jump_ms ahead of the stream's
        self._records = 0
        self._forget_at = 4096  # trucks held before the next sweep of forgotten ones

    def observe(self, asset: str, ts_ms: int) -> int:
        """Account for one record of truck ``asset``; returns the time it may contribute to the
        watermark."""
        n = self._records = self._records + 1
        truck = self._trucks.get(asset)
        if truck is None:
            truck = self._trucks[asset] = [None, None, None, n]
            if len(self._trucks) > self._forget_at:
                self._forget()
        else:
            truck[_SEEN] = n
        newest = truck[_NEWEST]
        max_ts = self.max_ts
        jump = self.max_jump_ms
        if ts_ms <= newest + jump if newest is not None else max_ts is not None and ts_ms <= max_ts + jump:
            if newest is not None and ts_ms <= newest:
                return NO_TIME if max_ts is None else min(ts_ms, max_ts)
            truck[_NEWEST] = newest = ts_ms
            candidate = truck[_CANDIDATE]
            if candidate is not None and candidate <= ts_ms + jump:
                truck[_CANDIDATE] = None  # the truck caught up with it
        else:
            candidate = truck[_CANDIDATE]
            if (candidate is not None and truck[_ANCHOR] == newest
                    and candidate - jump <= ts_ms <= candidate + AGREE_MS):
                truck[_NEWEST] = newest = max(candidate, ts_ms)  # the truck's time moved on
                truck[_CANDIDATE] = None
            else:
                truck[_CANDIDATE], truck[_ANCHOR] = ts_ms, newest  # ahead of its truck: a lone record never counts
                return NO_TIME if max_ts is None else min(ts_ms, max_ts)
        if max_ts is not None and newest <= max_ts + jump:
            if newest > max_ts:
                self.max_ts = newest
            return newest
        self._ahead.add(asset)
        return self._majority_ahead()

    def _majority_ahead(self) -> int:
        """Move the stream time when most active trucks are ahead of it; returns the new stream time
        (NO_TIME while it has none)."""
        trucks = self._trucks
        since = self._records - ACTIVE_WINDOW
        active = sum(1 for t in trucks.values() if t[_SEEN] > since)
        floor = None if self.max_ts is None else self.max_ts + self.max_jump_ms
        ahead = {a for a in self._ahead if a in trucks and (floor is None or trucks[a][_NEWEST] > floor)}
        times = sorted((trucks[a][_NEWEST] for a in ahead if trucks[a][_SEEN] > since), reverse=True)
        need = active // 2 + 1
        if len(times) >= need:
            self.max_ts = times[need - 1]
            floor = self.max_ts + self.max_jump_ms
            ahead = {a for a in ahead if trucks[a][_NEWEST] > floor}
        self._ahead = ahead
        return NO_TIME if self.max_ts is None else self.max_ts

    def _forget(self) -> None:
        """Drop trucks not heard from for FORGET_AFTER records."""
        since = self._records - FORGET_AFTER
        self._trucks = {a: t for a, t in self._trucks.items() if t[_SEEN] > since}
        self._ahead &= self._trucks.keys()
        self._forget_at = max(4096, 2 * len(self._trucks))

    @property
    def watermark(self) -> int | None:
        """Current watermark (None before the stream has a time)."""
        return None if self.max_ts is None else self.max_ts - self.lag_ms - 1
