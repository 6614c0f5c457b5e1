"""The keyed (by loader) function of the loader stage: Flink's side of state_machine.loader.LoaderOperator.

All per-loader policy (order of service, queue, hang, hours, live status, retention) is the operator's;
this class only adapts it to Flink:

* Input: udfs.rows LOADER_EVENT rows from the cycle operator (a closed cycle, a load visit or a truck's
  presence), keyed by loader; each becomes one ``on_cycle`` / ``on_visit`` / ``on_presence`` call.
* Keyed state: the operator's state bytes in one ValueState and its stored parts (visits and cycles by
  hour of load start) in one MapState, read only when the operator does not hold the loader decoded
  (after a restore, or once DECODED_KEEP other loaders took its place); a step writes the parts it
  changed (no timers: its retention is a count).
* Output: one LOADER_ENVELOPE row per output (tags L_*): closed cycles with their queue, served visits,
  hour rows and the loader's status, split into the sinks by the Java ``EnvelopeSplitter``.
* Metrics (udfs.metrics): visits and visits too late to count; per site, the queue and hang of the
  newest hour and the trucks waiting now, over this subtask's loaders.
"""

from __future__ import annotations

from collections.abc import Iterator

from pyflink.common import Row, Types
from pyflink.datastream.functions import KeyedProcessFunction
from pyflink.datastream.state import MapStateDescriptor, ValueStateDescriptor

from state_machine.loader import LoaderOperator, LoaderOutput
from state_machine.model import LoaderHour
from udfs.metrics import OperatorMetrics
from udfs.rows import (
    L_CYCLE,
    L_HOUR,
    L_STATUS,
    L_VISIT,
    cycle_row,
    event_cycle,
    event_presence,
    event_visit,
    load_visit_row,
    loader_hour_row,
    loader_status_row,
)

LOADER_STATE = ValueStateDescriptor("loader", Types.PICKLED_BYTE_ARRAY())
LOADER_PARTS = MapStateDescriptor("loader-parts", Types.LONG(), Types.PICKLED_BYTE_ARRAY())


class LoaderFunction(KeyedProcessFunction):
    """Runs LoaderOperator per loader (see module docstring)."""

    def open(self, runtime_context) -> None:
        self.operator = LoaderOperator()
        self.state = runtime_context.get_state(LOADER_STATE)
        self.parts = runtime_context.get_map_state(LOADER_PARTS)
        m = self.metrics = OperatorMetrics(runtime_context)
        self.counters = {name: m.counter(name, batch=1) for name in ("loaderVisits", "loaderVisitsTooLate")}
        self.g_queue = m.labelled_gauges("site", "loaderQueueSecondsHour")
        self.g_hang = m.labelled_gauges("site", "loaderHangSecondsHour")
        self.g_waiting = m.labelled_gauges("site", "trucksWaiting")
        self.hours: dict[str, dict[str, LoaderHour]] = {}  # site -> loader -> its newest hour row
        self.waiting: dict[str, dict[str, int]] = {}  # site -> loader -> trucks waiting

    def process_element(self, event, ctx) -> Iterator[Row]:
        loader = event[0]
        value = self.state.value()
        state = None if value is None else bytes(value)
        if event[2] is not None:
            step = self.operator.on_visit(loader, state, event_visit(event[2]), self._read_parts)
        elif event[3] is not None:
            step = self.operator.on_presence(loader, state, event_presence(event[3]), self._read_parts)
        else:
            step = self.operator.on_cycle(loader, state, event_cycle(event[1]), self._read_parts)
        self.state.update(step.state)
        for part, data in step.parts.items():
            if data is None:
                self.parts.remove(part)
            else:
                self.parts.put(part, data)
        return self._rows(step.output)

    def _read_parts(self) -> dict[int, bytes]:
        """The current loader's stored parts (the operator asks only when it does not hold them)."""
        return {int(part): bytes(data) for part, data in self.parts.items()}

    def _rows(self, out: LoaderOutput) -> Iterator[Row]:
        for name, n in out.counts.items():
            self.counters[name].inc(n)
        for cycle in out.cycles:
            yield Row(L_CYCLE, cycle_row(cycle), None, None, None)
        for sv in out.served:
            yield Row(L_VISIT, None, load_visit_row(sv), None, None)
        for hour in out.hours:
            self._note_hour(hour)
            yield Row(L_HOUR, None, None, loader_hour_row(hour), None)
        if out.status is not None:
            site = self.waiting.setdefault(out.status.site_guid, {})
            site[out.status.loader_guid] = out.status.waiting_count
            self.g_waiting.set(out.status.site_guid, sum(site.values()))
            yield Row(L_STATUS, None, None, None, loader_status_row(out.status))

    def _note_hour(self, hour: LoaderHour) -> None:
        """Keep each loader's newest hour; the site's gauges sum the loaders' rows of its newest hour."""
        site = self.hours.setdefault(hour.site_guid, {})
        kept = site.get(hour.loader_guid)
        if kept is not None and kept.hour_start_ms > hour.hour_start_ms:
            return
        site[hour.loader_guid] = hour
        newest = max(h.hour_start_ms for h in site.values())
        current = [h for h in site.values() if h.hour_start_ms == newest]
        self.g_queue.set(hour.site_guid, round(sum(h.queue_seconds for h in current)))
        self.g_hang.set(hour.site_guid, round(sum(h.hang_seconds for h in current)))
