"""The keyed (by asset_guid) broadcast function: Flink's side of state_machine.operator.TruckOperator.

All per-truck policy (reference holds, non-truck filtering, the engine, timers and their grid, end
of input, retention, dead letters, alerts) is the operator's; this class only adapts it to Flink:

* Input: udfs.rows GROUP_TYPE rows (from udfs.parse), one truck's points of one parse batch; each becomes one
  ``on_points`` call, with one keyed-state read and write.
* Keyed state: the operator's state bytes in one ValueState (cleared when the operator says so).
* Timers: the event-time timer the operator asks for is registered, the one it moved from deleted;
  a processing-time timer retries held points every second (broadcast updates cannot reach keyed
  state directly in PyFlink) and flushes the metrics.
* Reference data arrives on the broadcast input as ``(kind, key, payload)`` updates (udfs.rows
  REF_*), is kept in broadcast state (restored from checkpoints) and cached as SiteReference objects
  (filled lazily from broadcast state after a restore): ``BroadcastReferences``.
* Output: one envelope row per output with only the tagged part set (udfs.rows ENVELOPE_TYPE, tags
  OUT_*), split by the Java ``EnvelopeSplitter`` (job.pipeline.split_envelopes) into the sinks and the
  loader stage: closed cycles, load visits and trucks' presence at loaders go to the loader stage keyed
  by loader (udfs.loader_function), which writes the closed cycles with their queue. The in-progress
  row and the status row are upserts: one each per call (the truck's latest).
* Metrics (udfs.metrics, group ``kinesisanalytics.assetCycle``) are counted from the operator's
  output and passed to Flink about once a second.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

from pyflink.common import Row, Types
from pyflink.datastream import TimeDomain
from pyflink.datastream.functions import KeyedBroadcastProcessFunction
from pyflink.datastream.state import MapStateDescriptor, ValueStateDescriptor

from state_machine.config import EngineConfig
from state_machine.operator import OperatorOutput, Step, TruckOperator
from state_machine.reference import SiteReference, site_reference_from_mapping
from udfs.metrics import FLUSH_INTERVAL_MS, OperatorMetrics
from udfs.rows import (
    OUT_ALERT,
    OUT_DEAD_LETTER,
    OUT_LOADER,
    OUT_STATUS,
    OUT_TMP,
    OUT_TRUCK_HOUR,
    REF_ASSET,
    REF_ASSET_DELETED,
    REF_LOADED,
    REF_SITE,
    REF_SITE_DELETED,
    alert_row,
    cycle_row,
    dead_letter,
    group_points,
    group_timestamps,
    loader_event,
    status_row,
    truck_hour_row,
)

REFERENCE_STATE = MapStateDescriptor("reference", Types.STRING(), Types.STRING())
KEY_STATE = ValueStateDescriptor("truck", Types.PICKLED_BYTE_ARRAY())

class BroadcastReferences:
    """References (state_machine.operator) read from broadcast state, cached per instance: what was
    found, and what was found absent until the next broadcast update (an unknown truck is looked up
    for every point, and broadcast state is a JNI call away)."""

    def __init__(self) -> None:
        self.sites: dict[str, SiteReference] = {}
        self.asset_types: dict[str, str] = {}
        self.absent_sites: set[str] = set()
        self.absent_assets: set[str] = set()
        self.loaded = False  # the first complete load's marker arrived (udfs.rows REF_LOADED)
        self.context: Any = None  # the current call's context: broadcast state is read from it on a cache miss only

    def update(self, state: Any, kind: str, key: str, payload: str) -> None:
        """Apply one broadcast update (and forget cached absences, which may be stale now)."""
        if kind == REF_LOADED:  # no data: the updates before it were a complete load
            self.loaded = True
            return
        if kind == REF_SITE:
            state.put("s:" + key, payload)
            self.sites[key] = site_reference_from_mapping(json.loads(payload))
        elif kind == REF_SITE_DELETED:
            state.remove("s:" + key)
            self.sites.pop(key, None)
        elif kind == REF_ASSET:
            state.put("a:" + key, payload)
            self.asset_types[key] = payload
        elif kind == REF_ASSET_DELETED:
            state.remove("a:" + key)
            self.asset_types.pop(key, None)
        self.absent_sites.clear()
        self.absent_assets.clear()

    def site(self, site_guid: str) -> SiteReference | None:
        site = self.sites.get(site_guid)
        if site is None and site_guid not in self.absent_sites:
            payload = self.context.get_broadcast_state(REFERENCE_STATE).get("s:" + site_guid)
            if payload:
                site = self.sites[site_guid] = site_reference_from_mapping(json.loads(payload))
            else:
                self.absent_sites.add(site_guid)
        return site

    def asset_type(self, asset_guid: str) -> str | None:
        kind = self.asset_types.get(asset_guid)
        if kind is None and asset_guid not in self.absent_assets:
            kind = self.context.get_broadcast_state(REFERENCE_STATE).get("a:" + asset_guid)
            if kind is not None:
                self.asset_types[asset_guid] = kind
            else:
                self.absent_assets.add(asset_guid)
        return kind


def default_operator(config: EngineConfig, source: str, **options: Any) -> TruckOperator:
    """The operator the job runs (tests may pass another factory with the same signature)."""
    return TruckOperator(config, source, **options)


class CycleFunction(KeyedBroadcastProcessFunction):
    """Runs TruckOperator per truck with broadcast reference data (see module docstring)."""

    def __init__(self, engine_config: dict, source: str, wait_max_points: int = 5000, wait_max_ms: int = 600_000,
                 live_rows: bool = True, operator_factory: Callable[..., TruckOperator] | None = None) -> None:  # fmt: skip
        self.engine_config = engine_config
        self.source = source
        self.options: dict[str, Any] = {"wait_max_points": int(wait_max_points), "wait_max_ms": int(wait_max_ms),
                                        "speculative": bool(live_rows)}  # fmt: skip
        self.operator_factory = operator_factory or default_operator

    # -- lifecycle -------------------------------------------------------------------------------
    def open(self, runtime_context) -> None:
        config = EngineConfig.from_dict(self.engine_config)
        self.operator = self.operator_factory(config, self.source, **self.options)
        self.state = runtime_context.get_state(KEY_STATE)
        self.refs = BroadcastReferences()
        self.max_event_ms: int | None = None
        m = self.metrics = OperatorMetrics(runtime_context)
        self.counters = {name: m.counter(name) for name in (
            "pointsApplied", "nonTruckFiltered", "heldPoints", "noReferenceData", "unknownAsset", "rejectedPoints",
            "latePoints", "duplicatesDropped", "reordered", "cyclesClosedTotal", "closedWithoutLoadStart")}
        self.c_dead = m.labelled("reason", "deadLetters", total="deadLetterRecords")
        self.c_status = m.labelled("status", "cyclesClosed")
        self.c_alerts = m.labelled("alertType", "alerts")
        self.g_trucks = m.gauge("trucksTracked")
        self.g_lag = m.gauge("eventTimeLagMs")
        self.flush_timer_ms = -1  # one processing-time chain (about once a second) flushes the metrics
        self.need_flush_timer = m.group is not None

    def close(self) -> None:
        if getattr(self, "metrics", None) is not None:
            self._flush_metrics(None)

    # -- inputs ----------------------------------------------------------------------------------
    def process_broadcast_element(self, value, ctx):
        self.refs.update(ctx.get_broadcast_state(REFERENCE_STATE), value[0], value[1], value[2])
        return iter(())

    def process_element(self, group, ctx):
        if self.need_flush_timer:
            self._schedule_flush(ctx)
        self.refs.context = ctx
        points = group_points(group)
        newest = max(group_timestamps(group))
        if self.max_event_ms is None or newest > self.max_event_ms:
            self.max_event_ms = newest
        step = self.operator.on_points(group[0], self._read(), points, self.refs)
        yield from self._apply(step, ctx)

    def on_timer(self, timestamp: int, ctx):
        self.refs.context = ctx
        asset = ctx.get_current_key()
        if ctx.time_domain() == TimeDomain.PROCESSING_TIME:
            if self.metrics.group is not None and self.flush_timer_ms in (timestamp, -1):
                self._flush_metrics(ctx.timer_service().current_processing_time())
                self._schedule_flush(ctx)
            step = self.operator.on_retry(asset, self._read(), self.refs)
        else:
            step = self.operator.on_timer(asset, self._read(), timestamp, ctx.timer_service().current_watermark(),
                                          self.refs)  # fmt: skip
        yield from self._apply(step, ctx)

    # -- state, timers, output -------------------------------------------------------------------
    def _read(self) -> bytes | None:
        value = self.state.value()
        return None if value is None else bytes(value)

    def _apply(self, step: Step, ctx) -> Iterator[Row]:
        if step.changed:
            if step.state is None:
                self.state.clear()
            else:
                self.state.update(step.state)
        service = ctx.timer_service()
        if step.delete_timer_ms is not None:
            service.delete_event_time_timer(step.delete_timer_ms)
        if step.timer_ms is not None:
            service.register_event_time_timer(step.timer_ms)
        if step.retry:  # whole seconds: at most one retry timer per truck and second
            service.register_processing_time_timer((service.current_processing_time() // 1000 + 1) * 1000)
        return self._rows(step.output)

    def _rows(self, out: OperatorOutput) -> Iterator[Row]:
        for name, n in out.counts.items():
            self.counters[name].inc(n)
        for reason, n in out.dead_by_reason.items():
            self.c_dead.inc(reason, n)
        for status, n in out.closed_by_status.items():
            self.c_status.inc(status, n)
        if out.in_progress is not None:
            yield Row(OUT_TMP, cycle_row(out.in_progress), None, None, None, None, None)
        # to the loader stage, in the order the replay hands them over (workbench.replay)
        for visit in out.visits:
            yield Row(OUT_LOADER, None, None, None, None, None, loader_event(visit.loader_guid, visit=visit))
        for hour in out.hours:
            yield Row(OUT_TRUCK_HOUR, None, None, None, None, truck_hour_row(hour), None)
        for presence in out.presence:
            yield Row(OUT_LOADER, None, None, None, None, None,
                      loader_event(presence.loader_guid, presence=presence))  # fmt: skip
        for rec in out.closed:
            yield Row(OUT_LOADER, None, None, None, None, None, loader_event(rec.loader_asset_guid or "", cycle=rec))
        if out.status is not None:
            yield Row(OUT_STATUS, None, status_row(out.status), None, None, None, None)
        for d in out.dead_letters:
            yield Row(OUT_DEAD_LETTER, None, None,
                      dead_letter(d.source, d.reason, d.detail, d.raw, d.asset_guid, d.ts_ms, position=d.position),
                      None, None, None)  # fmt: skip
        for alert in out.alerts:
            self.c_alerts.inc(alert.alert_type)
            yield Row(OUT_ALERT, None, None, None, alert_row(alert), None, None)

    # -- metrics ---------------------------------------------------------------------------------
    def _schedule_flush(self, ctx) -> None:
        """(Re-)arm the metrics flush timer: the next whole second, on the current key."""
        service = ctx.timer_service()
        self.flush_timer_ms = (service.current_processing_time() // FLUSH_INTERVAL_MS + 1) * FLUSH_INTERVAL_MS
        service.register_processing_time_timer(self.flush_timer_ms)
        self.need_flush_timer = False

    def _flush_metrics(self, now_ms: int | None) -> None:
        """Pass counts on to Flink and update the gauges (trucks with a decoded state in this
        subtask, wall clock - newest event time seen)."""
        self.metrics.flush()
        self.g_trucks.set(self.operator.cached_trucks)
        if now_ms is not None and self.max_event_ms is not None:
            self.g_lag.set(now_ms - self.max_event_ms)
