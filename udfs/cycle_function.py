"""The keyed (by asset_guid) broadcast function around the cycle engine. No cycle rules here.

Per truck (keyed state: one ValueState write per record; read only on the first record of a truck
after open/restore, otherwise served from the instance's copy of what it last wrote)::

    (engine state bytes, registered timer ms or -1, held point count, first held event ms)

plus a ListState of points held while the truck's reference data is missing.

* Reference data arrives on the broadcast input as ``(kind, key, payload)`` updates (udfs.rows
  REF_*), is stored in broadcast state (restored from checkpoints) and cached as SiteReference
  objects in the Python instance (filled lazily from broadcast state after a restore).
* A point of an asset whose type is not HAUL_TRUCK is dropped (counted). A point whose asset type
  or site reference is not (yet) known is held; held points are released, in arrival order, as
  soon as the data is there (checked on the truck's next point and by a processing-time retry
  timer every second), and dead-lettered (UNKNOWN_ASSET / NO_REFERENCE_DATA) when more than
  ``wait_max_points`` pile up, when the watermark passes the first held point + ``wait_max_ms``,
  or at end of input.
* Timers: an event-time timer per truck at ``state.timer_due_ms`` rounded up to ``timer_grid_ms``,
  coalesced: a new one is registered only when the due time moves earlier than the registered one,
  and none is ever deleted; a timer that fires before the truck's (since moved) due time only
  re-arms, and superseded ones are ignored (a late firing only delays a silent truck's output).
  Before applying a point the truck's due timer is also fired with the point's watermark hint
  (udfs.parse): the offline replay fires timers with a per-record watermark, Flink's periodic
  watermarks lag behind it, and this makes each truck see timer firings at exactly the same
  positions of its own point sequence as in the replay. At end of input (watermark at or beyond
  END_THRESHOLD) timers fire first with the largest hint seen, then with END_OF_INPUT.
* Output: one typed envelope row per output, ``(tag, cycle, status, dead_letter, alert)`` with only the
  tagged part set (udfs.rows ENVELOPE_TYPE, tags OUT_*); the Table API splits it by tag straight
  into the sinks. (Side outputs are not used: PyFlink 2.2's thread mode does not route side
  outputs yielded from a keyed-broadcast ``on_timer``, and every side output would add one more
  Python->Java crossing per row.)
* Alerts (``StepOutput.alerts``) leave as OUT_ALERT envelopes; NO_REFERENCE_DATA alerts are raised
  here, for the first held point dead-lettered for a missing site (once per site per operator
  instance, i.e. per subtask and job run).
* Metrics (udfs.metrics, group ``kinesisanalytics.assetCycle``) are counted in Python and passed
  to Flink on a processing-time timer about once a second (no per-record JNI calls).
* The decoded engine state of each truck is cached in the Python instance together with the
  bytes it was written as; when keyed state returns the same bytes the cached object is used
  (no decode). After a restore the bytes differ and the state is decoded.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

from pyflink.common import Row, Types
from pyflink.datastream import TimeDomain
from pyflink.datastream.functions import KeyedBroadcastProcessFunction
from pyflink.datastream.state import ListStateDescriptor, MapStateDescriptor, ValueStateDescriptor

from state_machine.config import EngineConfig
from state_machine.model import ALERT_NO_REFERENCE_DATA, HAUL_TRUCK, Alert, StepOutput, TelemetryPoint
from state_machine.reference import SiteReference, site_reference_from_mapping
from state_machine.telemetry import format_record
from udfs.metrics import FLUSH_INTERVAL_MS, BatchedCounter, OperatorMetrics
from udfs.rows import (
    NO_HINT,
    OUT_ALERT,
    OUT_CYCLE,
    OUT_DEAD_LETTER,
    OUT_STATUS,
    OUT_TMP,
    REF_ASSET,
    REF_ASSET_DELETED,
    REF_SITE,
    REF_SITE_DELETED,
    alert_row,
    cycle_row,
    dead_letter,
    status_row,
)

END_OF_INPUT = 2**63 - 1
END_THRESHOLD = 2**62
"""Watermarks at or above this are end of input (no event time comes near it; the polling reference
stream's own watermark is Long.MAX_VALUE - 1)."""
UNKNOWN_ASSET = "UNKNOWN_ASSET"
NO_REFERENCE_DATA = "NO_REFERENCE_DATA"
ENGINE_SOURCE = "engine"

REFERENCE_STATE = MapStateDescriptor("reference", Types.STRING(), Types.STRING())
TRUCK_STATE_TYPE = Types.TUPLE([Types.PRIMITIVE_ARRAY(Types.BYTE()), Types.LONG(), Types.INT(), Types.LONG()])
HELD_TYPE = Types.TUPLE(
    [Types.STRING(), Types.LONG(), Types.DOUBLE(), Types.DOUBLE(), Types.INT(), Types.LONG(), Types.STRING()]
)


_MISSING = object()


def _default_engine(config: EngineConfig) -> Any:
    from state_machine.truck import TruckEngine

    return TruckEngine(config)


def _default_state_codec() -> tuple[Callable[[bytes], Any], Callable[[Any], bytes]]:
    from state_machine.truck import TruckState

    return TruckState.from_bytes, lambda s: s.to_bytes()


_Counter = BatchedCounter  # batched Flink counter (udfs.metrics): one JNI call per 256 increments or flush


class CycleFunction(KeyedBroadcastProcessFunction):
    """Runs the cycle engine per truck with broadcast reference data (see module docstring)."""

    def __init__(
        self,
        engine_config: dict,
        source: str,
        wait_max_points: int = 5000,
        wait_max_ms: int = 600_000,
        engine_factory: Callable[[EngineConfig], Any] | None = None,
        state_codec: Callable[[], tuple[Callable[[bytes], Any], Callable[[Any], bytes]]] | None = None,
        timer_grid_ms: int = 10_000,
    ) -> None:
        self.engine_config = engine_config
        self.source = source
        self.wait_max_points = int(wait_max_points)
        self.wait_max_ms = int(wait_max_ms)
        self.engine_factory = engine_factory
        self.state_codec = state_codec
        self.timer_grid_ms = max(1, int(timer_grid_ms))

    # -- lifecycle -------------------------------------------------------------------------------
    def open(self, runtime_context) -> None:
        self.config = EngineConfig.from_dict(self.engine_config)
        self.engine = (self.engine_factory or _default_engine)(self.config)
        self.decode, self.encode = (self.state_codec or _default_state_codec)()
        self.truck_state = runtime_context.get_state(ValueStateDescriptor("truck", TRUCK_STATE_TYPE))
        self.held = runtime_context.get_list_state(ListStateDescriptor("held", HELD_TYPE))
        self.sites: dict[str, Any] = {}
        self.asset_types: dict[str, Any] = {}
        self.cache: dict[str, tuple[bytes, Any]] = {}
        # asset -> the exact tuple last written to its ValueState by this instance (keyed state is
        # only written through _save, and open() starts empty, also after a restore): saves the
        # value() JNI call and the byte[] -> bytes copy on every record
        self.stored: dict[str, tuple] = {}
        self.max_hint = NO_HINT
        self.max_event_ms: int | None = None
        self.no_ref_alerted: set[str] = set()
        m = self.metrics = OperatorMetrics(runtime_context)
        self.c_points = m.counter("pointsApplied")
        self.c_non_truck = m.counter("nonTruckFiltered")
        self.c_held = m.counter("heldPoints")
        self.c_no_ref = m.counter("noReferenceData")
        self.c_unknown = m.counter("unknownAsset")
        self.c_rejected = m.counter("rejectedPoints")
        self.c_late = m.counter("latePoints")
        self.c_duplicates = m.counter("duplicatesDropped")
        self.c_reordered = m.counter("reordered")
        self.c_closed = m.counter("cyclesClosedTotal")
        self.c_no_start = m.counter("closedWithoutLoadStart")
        self.c_dead = m.labelled("reason", "deadLetters", total="deadLetterRecords")
        self.c_status = m.labelled("status", "cyclesClosed")
        self.c_alerts = m.labelled("alertType", "alerts")
        self.g_trucks = m.gauge("trucksTracked")
        self.g_lag = m.gauge("eventTimeLagMs")
        # one processing-time timer chain (about once a second) flushes the metrics; none without metrics
        self.flush_timer_ms = -1
        self.need_flush_timer = m.group is not None

    def close(self) -> None:
        if getattr(self, "metrics", None) is not None:
            self._flush_metrics(None)

    # -- reference data --------------------------------------------------------------------------
    def process_broadcast_element(self, value, ctx):
        kind, key, payload = value[0], value[1], value[2]
        state = ctx.get_broadcast_state(REFERENCE_STATE)
        if kind == REF_SITE:
            state.put("s:" + key, payload)
            self.sites[key] = site_reference_from_mapping(json.loads(payload))
        elif kind == REF_SITE_DELETED:
            state.remove("s:" + key)
            self.sites[key] = None
        elif kind == REF_ASSET:
            state.put("a:" + key, payload)
            self.asset_types[key] = payload
        elif kind == REF_ASSET_DELETED:
            state.remove("a:" + key)
            self.asset_types[key] = None
        # cached negative lookups may be stale now
        self.sites = {k: v for k, v in self.sites.items() if v is not _MISSING}
        self.asset_types = {k: v for k, v in self.asset_types.items() if v is not _MISSING}
        return iter(())

    def _site(self, ctx, site_guid: str) -> SiteReference | None:
        site = self.sites.get(site_guid, _MISSING)
        if site is _MISSING:
            payload = ctx.get_broadcast_state(REFERENCE_STATE).get("s:" + site_guid)
            site = site_reference_from_mapping(json.loads(payload)) if payload else None
            self.sites[site_guid] = site if site is not None else _MISSING
        return None if site is _MISSING else site

    def _asset_type(self, ctx, asset_guid: str) -> str | None:
        kind = self.asset_types.get(asset_guid, _MISSING)
        if kind is _MISSING:
            kind = ctx.get_broadcast_state(REFERENCE_STATE).get("a:" + asset_guid)
            self.asset_types[asset_guid] = kind if kind is not None else _MISSING
        return None if kind is _MISSING else kind

    def _lookup(self, ctx, asset_guid: str, site_guid: str) -> tuple[str, Any]:
        """("ok", site) | ("skip", None) for non-trucks | ("wait", reason)."""
        kind = self._asset_type(ctx, asset_guid)
        if kind is None:
            return "wait", UNKNOWN_ASSET
        if kind != HAUL_TRUCK:
            return "skip", None
        site = self._site(ctx, site_guid)
        if site is None:
            return "wait", NO_REFERENCE_DATA
        return "ok", site

    # -- output ----------------------------------------------------------------------------------
    def _emit(self, out: StepOutput) -> Iterator[Row]:
        if out.in_progress is not None:
            yield Row(OUT_TMP, cycle_row(out.in_progress), None, None, None)
        for rec in out.closed:
            if rec.load_start_ms is None:
                self.c_no_start.inc()
                continue
            self.c_closed.inc()
            self.c_status.inc(rec.cycle_status)
            yield Row(OUT_CYCLE, cycle_row(rec), None, None, None)
        if out.status is not None:
            yield Row(OUT_STATUS, None, status_row(out.status), None, None)
        for rej in out.rejected:
            self.c_rejected.inc()
            self.c_dead.inc(rej.reason)
            if rej.reason == "LATE":
                self.c_late.inc()
            p = rej.point
            letter = dead_letter(ENGINE_SOURCE, rej.reason, rej.detail, format_record(p), p.asset_guid, p.ts_ms)
            yield Row(OUT_DEAD_LETTER, None, None, letter, None)
        for alert in out.alerts:
            self.c_alerts.inc(alert.alert_type)
            yield Row(OUT_ALERT, None, None, None, alert_row(alert))
        if out.duplicates:
            self.c_duplicates.inc(out.duplicates)
        if out.reordered:
            self.c_reordered.inc(out.reordered)

    def _run_timers(self, ctx, truck: Any, wm: int, emitted: list) -> Any:
        """Fire the truck's due timer(s) at watermark ``wm`` (as the replay does)."""
        due = truck.timer_due_ms(self.config)
        while due is not None and due <= wm:
            out, truck = self.engine.on_timer(truck, due, wm, self._site(ctx, truck.committed.site))
            emitted.extend(self._emit(out))
            nxt = truck.timer_due_ms(self.config, wm)
            if nxt == due:
                break
            due = nxt
        return truck

    def _apply(self, ctx, truck: Any, point: tuple, site: SiteReference, emitted: list) -> Any:
        asset, site_guid, ts, lat, lon, ws, hint = point[:7]
        if truck is not None and hint != NO_HINT:
            truck = self._run_timers(ctx, truck, hint, emitted)
        out, truck = self.engine.on_point(truck, TelemetryPoint(asset, site_guid, ts, lat, lon, ws), site)
        self.c_points.inc()
        if self.max_event_ms is None or ts > self.max_event_ms:
            self.max_event_ms = ts
        emitted.extend(self._emit(out))
        return truck

    def _reject_held(self, asset: str, held: list[tuple], ctx, emitted: list) -> None:
        for site_guid, ts, lat, lon, _ws, _hint, raw in held:
            kind = self._asset_type(ctx, asset)
            if kind is None:
                reason, detail = UNKNOWN_ASSET, "asset_guid not in the asset table"
                self.c_unknown.inc()
            else:
                reason, detail = NO_REFERENCE_DATA, f"no reference data for site {site_guid}"
                self.c_no_ref.inc()
                if site_guid not in self.no_ref_alerted:  # once per site (per subtask and job run)
                    self.no_ref_alerted.add(site_guid)
                    alert = Alert(ALERT_NO_REFERENCE_DATA, asset, site_guid, ts, lat, lon,
                                  f"no loaders or regions known for site {site_guid}")
                    self.c_alerts.inc(ALERT_NO_REFERENCE_DATA)
                    emitted.append(Row(OUT_ALERT, None, None, None, alert_row(alert)))
            self.c_dead.inc(reason)
            letter = dead_letter(self.source, reason, detail, raw, asset, ts)
            emitted.append(Row(OUT_DEAD_LETTER, None, None, letter, None))

    def _release(self, ctx, asset: str, truck: Any, held: list[tuple], emitted: list) -> tuple[Any, list[tuple]]:
        """Apply held points in order while their reference data is there; return what still waits."""
        for i, (site_guid, ts, lat, lon, ws, hint, _raw) in enumerate(held):
            status, site = self._lookup(ctx, asset, site_guid)
            if status == "wait":
                return truck, held[i:]
            if status == "ok":
                truck = self._apply(ctx, truck, (asset, site_guid, ts, lat, lon, ws, hint), site, emitted)
            else:
                self.c_non_truck.inc()
        return truck, []

    # -- main input ------------------------------------------------------------------------------
    def process_element(self, value, ctx):
        asset, site_guid, ts, lat, lon, ws, hint, raw = value
        if hint > self.max_hint:
            self.max_hint = hint
        if self.need_flush_timer:
            self._schedule_flush(ctx)
        stored = self.stored.get(asset)
        if stored is None:
            stored = self.truck_state.value()
        if stored is None:
            blob, timer, held_n, held_first = b"", -1, 0, 0
        else:
            blob, timer, held_n, held_first = stored
        status, site = self._lookup(ctx, asset, site_guid)
        if status == "skip" and held_n == 0:
            self.c_non_truck.inc()
            return
        emitted: list = []
        truck = self._decode(asset, blob)
        held: list[tuple] = []
        if held_n:
            truck, held = self._release(ctx, asset, truck, list(self.held.get()), emitted)
        if status == "wait":
            # only a point whose own site has no reference data yet waits; the truck's points for
            # known sites go on (a single corrupted site_guid must not hold a truck's cycles)
            held.append((site_guid, ts, lat, lon, ws, hint, raw))
            self.c_held.inc()
            if len(held) > self.wait_max_points:
                self._reject_held(asset, held, ctx, emitted)
                held = []
        elif status == "ok":
            truck = self._apply(ctx, truck, (asset, site_guid, ts, lat, lon, ws, hint), site, emitted)
        else:
            self.c_non_truck.inc()
        if held_n or held:
            self._store_held(held)
            held_first = held[0][1] if held else 0
            if held:
                self._schedule_retry(ctx)
        self._save(ctx, asset, truck, timer, len(held), held_first)
        yield from emitted

    def _decode(self, asset: str, blob: Any) -> Any:
        if not blob:
            return None
        blob = bytes(blob)
        cached = self.cache.get(asset)
        if cached is not None and cached[0] == blob:
            return cached[1]
        return self.decode(blob)

    def _save(self, ctx, asset: str, truck: Any, timer: int, held_n: int, held_first: int,
              wm: int | None = None) -> None:  # fmt: skip
        """Store the truck's state and (re-)register its single timer. ``wm``: the watermark the
        caller fired timers at (on_timer); a timer at or below it would fire again at once."""
        due = truck.timer_due_ms(self.config, wm) if truck is not None else None
        if held_n:
            deadline = held_first + self.wait_max_ms
            due = deadline if due is None else min(due, deadline)
        if due is not None and wm is not None and due <= wm:
            due = None if wm >= END_THRESHOLD else wm + 1
        if due is not None:
            # a timer may fire late (a point's watermark hint runs due timers anyway); rounding up
            # to the grid keeps it unchanged across most points and saves two JNI calls each time
            grid = self.timer_grid_ms
            due = -(-due // grid) * grid
        new_timer = self._arm(ctx, timer, -1 if due is None else due)
        if truck is not None:
            blob = self.encode(truck)
            self.cache[asset] = (blob, truck)
        else:
            blob = b""
            self.cache.pop(asset, None)
        stored = (blob, new_timer, held_n, held_first)
        self.truck_state.update(stored)
        self.stored[asset] = stored

    @staticmethod
    def _arm(ctx, timer: int, wanted: int) -> int:
        """Timer coalescing: register ``wanted`` only when it is earlier than the registered
        ``timer`` (or none is); timers are never deleted. A timer that fires before the truck's
        due time only re-arms (on_timer), so per record there is usually no timer call at all.
        Returns the timer the truck's state records (its earliest pending one)."""
        if wanted >= 0 and (timer < 0 or wanted < timer):
            ctx.timer_service().register_event_time_timer(wanted)
            return wanted
        return timer

    # -- timers ----------------------------------------------------------------------------------
    def on_timer(self, timestamp: int, ctx):
        processing = ctx.time_domain() == TimeDomain.PROCESSING_TIME
        if processing and self.metrics.group is not None and self.flush_timer_ms in (timestamp, -1):
            self._flush_metrics(ctx.timer_service().current_processing_time())
            self._schedule_flush(ctx)
        asset = ctx.get_current_key()
        stored = self.stored.get(asset)
        if stored is None:
            stored = self.truck_state.value()
        if stored is None:
            return
        blob, timer, held_n, held_first = stored
        if processing:
            yield from self._retry_held(ctx, stored)
            return
        if timer != timestamp:
            return  # superseded by an earlier timer (coalescing: timers are never deleted)
        wm = ctx.timer_service().current_watermark()
        end = wm >= END_THRESHOLD
        emitted: list = []
        truck = self._decode(asset, blob)
        if not held_n and not end and truck is not None:
            due = truck.timer_due_ms(self.config, wm)
            if due is None or due > wm:  # fired early (coalesced): nothing due yet, only re-arm
                self._rearm(ctx, asset, stored, truck, wm)
                return
        held: list[tuple] = []
        if held_n:
            truck, held = self._release(ctx, asset, truck, list(self.held.get()), emitted)
            if held and (end or wm >= held_first + self.wait_max_ms):
                self._reject_held(asset, held, ctx, emitted)
                held = []
            self._store_held(held)
            held_first = held[0][1] if held else 0
        if truck is not None:
            if end:
                truck = self._run_timers(ctx, truck, self.max_hint, emitted)
                truck = self._run_timers(ctx, truck, END_OF_INPUT, emitted)
            else:
                truck = self._run_timers(ctx, truck, wm, emitted)
        self._save(ctx, asset, truck, -1, len(held), held_first, END_OF_INPUT if end else wm)
        yield from emitted

    def _rearm(self, ctx, asset: str, stored: tuple, truck: Any, wm: int) -> None:
        """After an early firing: register the truck's next timer; the engine state is unchanged."""
        blob, _timer, held_n, held_first = stored
        due = truck.timer_due_ms(self.config, wm)
        if due is not None:
            grid = self.timer_grid_ms
            due = -(-max(due, wm + 1) // grid) * grid
        stored = (bytes(blob), self._arm(ctx, -1, -1 if due is None else due), held_n, held_first)
        self.truck_state.update(stored)
        self.stored[asset] = stored

    def _retry_held(self, ctx, stored: tuple) -> Iterator[Row]:
        """Processing-time retry: release held points once their reference data has arrived
        (broadcast updates cannot reach keyed state directly in PyFlink)."""
        blob, timer, held_n, held_first = stored
        if not held_n:
            return
        asset = ctx.get_current_key()
        emitted: list = []
        truck, held = self._release(ctx, asset, self._decode(asset, blob), list(self.held.get()), emitted)
        if len(held) == held_n:
            self._schedule_retry(ctx)
            return
        self._store_held(held)
        if held:
            self._schedule_retry(ctx)
        self._save(ctx, asset, truck, timer, len(held), held[0][1] if held else 0)
        yield from emitted

    # -- metrics ---------------------------------------------------------------------------------
    def _schedule_flush(self, ctx) -> None:
        """(Re-)arm the metrics flush timer: the next whole second, on the current key."""
        service = ctx.timer_service()
        self.flush_timer_ms = (service.current_processing_time() // FLUSH_INTERVAL_MS + 1) * FLUSH_INTERVAL_MS
        service.register_processing_time_timer(self.flush_timer_ms)
        self.need_flush_timer = False

    def _flush_metrics(self, now_ms: int | None) -> None:
        """Pass counts on to Flink and update the gauges (trucks with state in this subtask since
        it started, wall clock - newest event time applied)."""
        self.metrics.flush()
        self.g_trucks.set(len(self.cache))
        if now_ms is not None and self.max_event_ms is not None:
            self.g_lag.set(now_ms - self.max_event_ms)

    @staticmethod
    def _schedule_retry(ctx) -> None:
        service = ctx.timer_service()
        # whole seconds: at most one retry timer per truck and second
        service.register_processing_time_timer((service.current_processing_time() // 1000 + 1) * 1000)

    def _store_held(self, held: list[tuple]) -> None:
        if held:
            self.held.update(held)
        else:
            self.held.clear()
