"""Custom Flink metrics of the Python operators: group layout and cheap batched updates.

Layout: every metric lives under ``<operator scope>.kinesisanalytics.assetCycle`` (GROUP_PATH).
Amazon MSF forwards custom metrics registered below a group named ``kinesisanalytics`` to
CloudWatch (namespace ``AWS/KinesisAnalytics``); elsewhere the extra group is just a name part
(Prometheus: ``flink_taskmanager_job_task_operator_kinesisanalytics_assetCycle_<name>``).
Per-value metrics (dead letters by reason, cycles by status, alerts by type, reference age by
site) use a key/value group (``add_group("reason", "LATE")``): a Prometheus label and a
CloudWatch dimension. See docs/monitoring.md for the list.

Cost: in thread mode every Flink metric call is a JNI call, so nothing here touches Flink per
record. ``BatchedCounter`` counts in Python and passes increments on in batches (every
``batch`` increments, and on ``flush()``, which the operators call about once a second and at
the end); ``Gauge.set`` talks to Flink only when the value changed and is called on flushes.
Gauges are Java-side values set from Python (PyFlink's thread-mode "distribution" is exactly a
settable long gauge), not Python callables polled by the reporter thread. In process mode they
fall back to ordinary polled Python gauges.
"""

from __future__ import annotations

from typing import Any

GROUP_PATH: tuple[str, ...] = ("kinesisanalytics", "assetCycle")
FLUSH_INTERVAL_MS = 1000


def metric_group(runtime_context: Any, path: tuple[str, ...] = GROUP_PATH) -> Any | None:
    """The operator's ``kinesisanalytics.assetCycle`` metric group, None when metrics are unavailable."""
    try:
        group = runtime_context.get_metrics_group()
        for name in path:
            group = group.add_group(name)
        return group
    except Exception:  # noqa: BLE001 - metrics are optional (unit tests, fakes)
        return None


class BatchedCounter:
    """A Flink counter fed in batches: ``inc`` is plain Python, Flink sees the increments every
    ``batch`` counts and on ``flush()``. ``value`` is the exact local count (also without Flink)."""

    __slots__ = ("value", "_pending", "_batch", "_flink")

    def __init__(self, group: Any, name: str, batch: int = 256) -> None:
        self.value = 0
        self._pending = 0
        self._batch = batch
        self._flink = None
        if group is not None:
            try:
                self._flink = group.counter(name)
            except Exception:  # noqa: BLE001
                self._flink = None

    def inc(self, n: int = 1) -> None:
        self.value += n
        if self._flink is not None:
            self._pending += n
            if self._pending >= self._batch:
                self._flink.inc(self._pending)
                self._pending = 0

    def flush(self) -> None:
        """Pass pending increments on to Flink."""
        if self._pending and self._flink is not None:
            self._flink.inc(self._pending)
            self._pending = 0


class LabelledCounters:
    """One BatchedCounter per label value (``group.add_group(key, value).counter(name)``), created
    on first use; with ``total`` also an unlabelled counter of that name counting them all."""

    __slots__ = ("_group", "_key", "_name", "_batch", "counters", "total")

    def __init__(self, group: Any, key: str, name: str, batch: int = 256, total: str | None = None) -> None:
        self._group = group
        self._key = key
        self._name = name
        self._batch = batch
        self.counters: dict[str, BatchedCounter] = {}
        self.total = BatchedCounter(group, total, batch) if total else None

    def inc(self, label: str, n: int = 1) -> None:
        if self.total is not None:
            self.total.inc(n)
        counter = self.counters.get(label)
        if counter is None:
            sub = None
            if self._group is not None:
                try:
                    sub = self._group.add_group(self._key, str(label))
                except Exception:  # noqa: BLE001
                    sub = None
            counter = self.counters[label] = BatchedCounter(sub, self._name, self._batch)
        counter.inc(n)

    @property
    def values(self) -> dict[str, int]:
        """label -> local count."""
        return {label: c.value for label, c in self.counters.items()}

    def flush(self) -> None:
        for counter in self.counters.values():
            counter.flush()
        if self.total is not None:
            self.total.flush()


class Gauge:
    """A long gauge set from Python (see module docstring); ``set`` is cheap when unchanged."""

    __slots__ = ("value", "_flink", "_reported")

    def __init__(self, group: Any, name: str) -> None:
        self.value = 0
        self._reported: int | None = None
        self._flink = None
        if group is None:
            return
        try:
            if type(group).__module__.startswith("pyflink.fn_execution.metrics.embedded"):
                self._flink = group.distribution(name)  # thread mode: a Java long gauge, update() sets it
            else:
                group.gauge(name, lambda: self.value)  # process mode: polled in the Python worker
        except Exception:  # noqa: BLE001
            self._flink = None

    def set(self, value: int) -> None:
        value = int(value)
        self.value = value
        if self._flink is not None and value != self._reported:
            self._flink.update(value)
            self._reported = value


class LabelledGauges:
    """One Gauge per label value under a key/value group, created on first use."""

    __slots__ = ("_group", "_key", "_name", "gauges")

    def __init__(self, group: Any, key: str, name: str) -> None:
        self._group = group
        self._key = key
        self._name = name
        self.gauges: dict[str, Gauge] = {}

    def set(self, label: str, value: int) -> None:
        gauge = self.gauges.get(label)
        if gauge is None:
            sub = None
            if self._group is not None:
                try:
                    sub = self._group.add_group(self._key, str(label))
                except Exception:  # noqa: BLE001
                    sub = None
            gauge = self.gauges[label] = Gauge(sub, self._name)
        gauge.set(value)


class OperatorMetrics:
    """The metrics of one operator instance: creates them under GROUP_PATH and flushes them all."""

    def __init__(self, runtime_context: Any) -> None:
        self.group = metric_group(runtime_context)
        self._flushable: list[Any] = []
        self.next_flush_ms = 0

    def counter(self, name: str, batch: int = 256) -> BatchedCounter:
        counter = BatchedCounter(self.group, name, batch)
        self._flushable.append(counter)
        return counter

    def labelled(self, key: str, name: str, batch: int = 256, total: str | None = None) -> LabelledCounters:
        counters = LabelledCounters(self.group, key, name, batch, total)
        self._flushable.append(counters)
        return counters

    def gauge(self, name: str) -> Gauge:
        return Gauge(self.group, name)

    def labelled_gauges(self, key: str, name: str) -> LabelledGauges:
        return LabelledGauges(self.group, key, name)

    def flush(self) -> None:
        """Pass every pending counter increment on to Flink."""
        for item in self._flushable:
            item.flush()

    def flush_due(self, now_ms: int) -> bool:
        """Flush when FLUSH_INTERVAL_MS passed since the last flush; True when it did."""
        if now_ms < self.next_flush_ms:
            return False
        self.next_flush_ms = now_ms + FLUSH_INTERVAL_MS
        self.flush()
        return True
