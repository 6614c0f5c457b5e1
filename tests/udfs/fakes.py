"""Minimal stand-ins for PyFlink's runtime context, keyed state and timer service.

They let the process functions run in plain Python: ``Harness`` drives a CycleFunction the way
the Flink operator does (keyed state per current key, one event-time timer queue, watermarks that
fire due timers in timestamp order, broadcast state shared by all keys).
"""

from __future__ import annotations

import heapq
from typing import Any

from pyflink.common import Row


class FakeValueState:
    def __init__(self, store: dict, harness: Harness) -> None:
        self.store, self.h = store, harness

    def value(self) -> Any:
        return self.store.get(self.h.key)

    def update(self, value: Any) -> None:
        self.store[self.h.key] = value

    def clear(self) -> None:
        self.store.pop(self.h.key, None)


class FakeListState(FakeValueState):
    def get(self) -> list:
        return list(self.store.get(self.h.key, []))

    def update(self, values: list) -> None:
        self.store[self.h.key] = list(values)


class FakeRuntimeContext:
    def __init__(self, harness: Harness) -> None:
        self.h = harness

    def get_state(self, descriptor: Any) -> FakeValueState:
        return FakeValueState(self.h.values.setdefault(descriptor.name, {}), self.h)

    def get_list_state(self, descriptor: Any) -> FakeListState:
        return FakeListState(self.h.values.setdefault(descriptor.name, {}), self.h)

    def get_metrics_group(self) -> Any:
        raise RuntimeError("no metrics in unit tests")


class FakeBroadcastState:
    def __init__(self, data: dict) -> None:
        self.data = data

    def get(self, key: str) -> Any:
        return self.data.get(key)

    def put(self, key: str, value: Any) -> None:
        self.data[key] = value

    def remove(self, key: str) -> None:
        self.data.pop(key, None)


class FakeTimerService:
    def __init__(self, harness: Harness) -> None:
        self.h = harness

    def current_watermark(self) -> int:
        return self.h.watermark

    def register_event_time_timer(self, ts: int) -> None:
        self.h.timers.add((ts, self.h.key))
        heapq.heappush(self.h.queue, (ts, self.h.key))

    def delete_event_time_timer(self, ts: int) -> None:
        self.h.timers.discard((ts, self.h.key))

    def current_processing_time(self) -> int:
        return self.h.now_ms

    def register_processing_time_timer(self, ts: int) -> None:
        self.h.proc_timers.add((ts, self.h.key))


class FakeCtx:
    def __init__(self, harness: Harness) -> None:
        self.h = harness

    def get_broadcast_state(self, descriptor: Any) -> FakeBroadcastState:
        return FakeBroadcastState(self.h.broadcast)

    def timer_service(self) -> FakeTimerService:
        return FakeTimerService(self.h)

    def get_current_key(self) -> str:
        return self.h.key

    def time_domain(self) -> Any:

        return self.h.domain


class Harness:
    """Drives a KeyedBroadcastProcessFunction like the Flink operator (single subtask)."""

    def __init__(self, function: Any) -> None:
        self.f = function
        self.values: dict[str, dict] = {}
        self.broadcast: dict[str, Any] = {}
        self.timers: set[tuple[int, str]] = set()
        self.queue: list[tuple[int, str]] = []
        self.watermark = -(2**63)
        self.key: str | None = None
        self.out: list[Row] = []
        self.now_ms = 0
        self.proc_timers: set[tuple[int, str]] = set()
        from pyflink.datastream import TimeDomain

        self.domain = TimeDomain.EVENT_TIME
        self.ctx = FakeCtx(self)
        function.open(FakeRuntimeContext(self))

    def broadcast_element(self, value: tuple) -> None:
        self.out.extend(self.f.process_broadcast_element(value, self.ctx) or [])

    def element(self, row: tuple) -> None:
        self.key = row[0]
        self.out.extend(self.f.process_element(row, self.ctx) or [])

    def advance(self, watermark: int) -> None:
        """Raise the watermark and fire due timers (also those registered while firing)."""
        if watermark <= self.watermark:
            return
        self.watermark = watermark
        while self.queue and self.queue[0][0] <= watermark:
            ts, key = heapq.heappop(self.queue)
            if (ts, key) not in self.timers:
                continue
            self.timers.discard((ts, key))
            self.key = key
            self.out.extend(self.f.on_timer(ts, self.ctx) or [])

    def tick(self, now_ms: int) -> None:
        """Advance processing time and fire due processing-time timers."""
        from pyflink.datastream import TimeDomain

        self.now_ms = now_ms
        for ts, key in sorted(t for t in self.proc_timers if t[0] <= now_ms):
            self.proc_timers.discard((ts, key))
            self.key, self.domain = key, TimeDomain.PROCESSING_TIME
            try:
                self.out.extend(self.f.on_timer(ts, self.ctx) or [])
            finally:
                self.domain = TimeDomain.EVENT_TIME

    def take(self) -> list[Row]:
        out, self.out = self.out, []
        return out
