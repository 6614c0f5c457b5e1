"""The per-truck operator: every per-key policy of the job, written once.

``TruckOperator`` is what runs for one truck (one key) around the cycle engine: which points wait for
reference data and when they are dead-lettered, which assets are not trucks, which alerts fire, the
engine's timers (coalesced on a grid), end of input, and when a truck's state is cleared. It is pure
(no Flink, database, file or clock): Flink's keyed operator (udfs.cycle_function) and the offline
replay (workbench.replay) both call exactly these steps with the same arguments:

    on_points(asset, state, points, refs) -> Step   a truck's points, in arrival order
    on_timer(asset, state, timer, watermark, refs)  an event-time timer the operator asked for
    on_retry(asset, state, refs)                    points wait for reference data: look again

``state`` is the key's state as versioned bytes (None for a new truck); a ``Step`` carries what to
emit, the new state (None: clear it), the event-time timer to register and whether a retry is wanted.

Policy (docs/cycle-rules.md for the engine's own rules):
* Reference data (asset types, sites) comes from ``refs``. A point of an asset whose type is not
  HAUL_TRUCK is dropped (counted). A point whose asset type or own site is not known yet is held, in
  arrival order; held points are released as soon as the data is there (on the truck's next point,
  on a retry, on a timer) and dead-lettered (UNKNOWN_ASSET / NO_REFERENCE_DATA, with a
  NO_REFERENCE_DATA alert once per site) when more than ``wait_max_points`` pile up (once the
  first complete load is in: before it, a catch-up must not turn a backlog into dead letters), when
  the watermark passes the first held point by ``wait_max_ms``, or at the end of input. Only a point
  whose own site lacks reference data waits: a truck's points for known sites go on.
* Before a point is applied, the truck's due timers run with the point's watermark hint (the stream's
  watermark before it), so each truck sees timers at the same positions of its own points whatever
  the timing of the runtime's watermarks; a timer that fires later only finds less to do.
* One event-time timer per truck, at its due time rounded up to ``timer_grid_ms``: when the due time
  moves to another slot of the grid, the registered timer is deleted and the new one registered, so a
  truck whose points keep coming (its points' hints run its due timers) is not called for timers
  that find nothing to do. A timer that fires without being the registered one (left from a cleared
  state, or from a state written before timers moved) is ignored; one that fires before the due
  time only re-arms.
* A watermark at or beyond END_THRESHOLD is the end of a bounded input: timers run with the largest
  hint seen, then with END_OF_INPUT (buffers flush, no cycle is closed), held points are dead-lettered.
* A truck silent for ``state_retention_s`` (its site's threshold) of event time after its open cycle
  was closed (IDLE_TIMEOUT) has its state cleared.
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol

import orjson

from state_machine.config import EngineConfig
from state_machine.cycle import loader_presence
from state_machine.model import (
    ALERT_NO_REFERENCE_DATA,
    HAUL_TRUCK,
    LEFT,
    SEG_NONE,
    Alert,
    CycleRecord,
    DeadLetter,
    LoaderPresence,
    LoadVisit,
    StepOutput,
    TelemetryPoint,
    TruckHour,
    TruckStatus,
)
from state_machine.reference import SiteReference
from state_machine.stream import NO_HINT, ParsedPoint
from state_machine.telemetry import format_record
from state_machine.truck import END_OF_INPUT, LATE, TruckEngine, TruckState

KEY_STATE_VERSION = 2
"""Version 2 added the truck's place at a loader and each held point's hold (a version 1 state is read as
at no loader, its held points with the engine's own hold)."""
END_THRESHOLD = 2**62
"""Watermarks at or above this are end of input (no event time comes near it)."""
UNKNOWN_ASSET = "UNKNOWN_ASSET"
NO_REFERENCE_DATA = "NO_REFERENCE_DATA"
ENGINE_SOURCE = "engine"


class References(Protocol):
    """Reference data as the operator reads it."""

    loaded: bool
    """False only before the first complete load has arrived (a job's start): no verdict on a held
    point can be reached yet, so none is dead-lettered for their number."""

    def asset_type(self, asset_guid: str) -> str | None:
        """The asset's type (HAUL_TRUCK, LOADER, ...), None when unknown."""

    def site(self, site_guid: str) -> SiteReference | None:
        """A site's loaders and regions, None when unknown."""


class HeldPoint(NamedTuple):
    """A point waiting for its reference data."""

    site_guid: str
    ts_ms: int
    latitude: float
    longitude: float
    work_state_id: int
    hint: int
    raw: str
    position: str | None
    hold: int = 0


@dataclass(slots=True)
class KeyState:
    """One truck's state: the engine's, the held points, the registered timer and the truck's place at
    a loader as last reported to the loader stage ([loader, AT_LOADER | WAITING, since_ms])."""

    truck: TruckState | None = None
    held: list[HeldPoint] = field(default_factory=list)
    timer_ms: int = -1
    presence: list | None = None

    def to_bytes(self) -> bytes:
        """Versioned compact JSON; from_bytes(to_bytes(k)) == k."""
        return orjson.dumps([KEY_STATE_VERSION, None if self.truck is None else self.truck.to_list(),
                             [list(h) for h in self.held], self.timer_ms, self.presence])  # fmt: skip

    @classmethod
    def from_bytes(cls, data: bytes) -> KeyState:
        """Decode to_bytes output (version 1, before held points kept their hold and the truck's place at a
        loader was kept, is read too); raises ValueError on an unknown version."""
        values = orjson.loads(data)
        if not values or values[0] not in (1, KEY_STATE_VERSION):
            raise ValueError(f"unsupported key state version {values[0] if values else None!r}")
        truck, held, timer = values[1:4]
        presence = values[4] if values[0] == KEY_STATE_VERSION else None
        return cls(None if truck is None else TruckState.from_list(truck), [HeldPoint(*h) for h in held], timer,
                   presence)  # fmt: skip


@dataclass(slots=True)
class OperatorOutput:
    """What a step emits. ``in_progress`` and ``status`` are the truck's latest (upserts: earlier ones
    of the same step are superseded); ``counts`` are metric increments (udfs.metrics names)."""

    closed: list[CycleRecord] = field(default_factory=list)
    in_progress: CycleRecord | None = None
    status: TruckStatus | None = None
    dead_letters: list[DeadLetter] = field(default_factory=list)
    alerts: list[Alert] = field(default_factory=list)
    visits: list[LoadVisit] = field(default_factory=list)
    presence: list[LoaderPresence] = field(default_factory=list)
    hours: list[TruckHour] = field(default_factory=list)
    counts: Counter = field(default_factory=Counter)
    dead_by_reason: Counter = field(default_factory=Counter)
    closed_by_status: Counter = field(default_factory=Counter)


@dataclass(slots=True)
class Step:
    """The result of one operator call."""

    output: OperatorOutput
    state: bytes | None
    """The key's new state; None when it is to be cleared (or was never created)."""
    timer_ms: int | None = None
    """An event-time timer to register now (the truck's only one)."""
    delete_timer_ms: int | None = None
    """The truck's registered event-time timer, to delete now (it moved to ``timer_ms``)."""
    retry: bool = False
    """Points wait for reference data: call on_retry again soon."""
    changed: bool = True
    """False when the state is unchanged (nothing to write)."""


class TruckOperator:
    """Runs the per-truck policy for any truck given its state (pure; see the module docstring).

    The instance keeps what belongs to the operator, not to a key: the engine (per-site caches),
    decoded states of recently seen trucks (bounded), the sites already alerted for missing reference
    data and the largest watermark hint seen (the end-of-input timer run).
    """

    def __init__(self, config: EngineConfig | None = None, source: str = ENGINE_SOURCE,
                 wait_max_points: int = 5000, wait_max_ms: int = 600_000, timer_grid_ms: int = 10_000,
                 speculative: bool = True, cache_size: int = 20_000) -> None:  # fmt: skip
        self.config = config or EngineConfig()
        self.engine = TruckEngine(self.config, speculative=speculative)
        self.source = source
        self.wait_max_points = wait_max_points
        self.wait_max_ms = wait_max_ms
        self.timer_grid_ms = max(1, timer_grid_ms)
        self.cache_size = cache_size
        self._cache: OrderedDict[str, tuple[bytes, KeyState]] = OrderedDict()
        self.max_hint = NO_HINT
        self.no_reference_alerted: set[str] = set()

    # -- public steps ----------------------------------------------------------------------------
    def on_points(self, asset: str, state: bytes | None, points: Iterable[ParsedPoint], refs: References) -> Step:
        """Apply a truck's points, in arrival order. The in-progress and status rows are computed once,
        after the last point (each is an upsert: the truck's latest)."""
        ks = self._load(asset, state)
        out = OperatorOutput()
        counts = out.counts
        for pp in points:
            self._point(asset, ks, pp, refs, out)
        if ks.truck is not None and counts["pointsApplied"]:
            closed = counts["cyclesClosedTotal"] + counts["closedWithoutLoadStart"] > 0
            self._collect(self.engine.emit_current(ks.truck, closed), out)
        if ks.truck is None and not ks.held:
            return Step(out, None, changed=state is not None)
        return self._finish(asset, ks, out, None)

    def on_timer(self, asset: str, state: bytes | None, timer_ms: int, watermark_ms: int, refs: References) -> Step:
        """An event-time timer fired at watermark ``watermark_ms``."""
        out = OperatorOutput()
        if state is None:
            return Step(out, None, changed=False)
        ks = self._load(asset, state)
        if ks.timer_ms != timer_ms:
            return Step(out, state, changed=False)  # not the registered one: from a cleared or older state
        end = watermark_ms >= END_THRESHOLD
        truck = ks.truck
        if not ks.held and not end and truck is not None:
            due = self._due(ks, watermark_ms)
            if due is None or due > watermark_ms:  # fired early (coalesced): nothing due yet, only re-arm
                ks.timer_ms = -1
                return self._finish(asset, ks, out, watermark_ms)
        ks.timer_ms = -1
        if ks.held:
            self._release(asset, ks, refs, out)
            if ks.held and (end or watermark_ms >= ks.held[0].ts_ms + self.wait_max_ms):
                self._reject_held(asset, ks, refs, out)
        if ks.truck is not None:
            if end:
                self._run_timers(ks, self.max_hint, refs, out)
                self._run_timers(ks, END_OF_INPUT, refs, out)
            else:
                self._run_timers(ks, watermark_ms, refs, out)
                if self._expired(ks, watermark_ms):
                    self._cache.pop(asset, None)
                    self._report_presence(asset, ks, None, out)
                    return Step(out, None)
        return self._finish(asset, ks, out, END_OF_INPUT if end else watermark_ms)

    def on_retry(self, asset: str, state: bytes | None, refs: References) -> Step:
        """Release held points whose reference data has arrived since."""
        out = OperatorOutput()
        if state is None:
            return Step(out, None, changed=False)
        ks = self._load(asset, state)
        before = len(ks.held)
        if before:
            self._release(asset, ks, refs, out)
        if len(ks.held) == before:
            return Step(out, state, retry=before > 0, changed=False)
        return self._finish(asset, ks, out, None)

    # -- points ----------------------------------------------------------------------------------
    @staticmethod
    def _lookup(refs: References, asset: str, site_guid: str) -> tuple[str, SiteReference | str | None]:
        """("ok", site) | ("skip", None) for non-trucks | ("wait", reason)."""
        kind = refs.asset_type(asset)
        if kind is None:
            return "wait", UNKNOWN_ASSET
        if kind != HAUL_TRUCK:
            return "skip", None
        site = refs.site(site_guid)
        if site is None:
            return "wait", NO_REFERENCE_DATA
        return "ok", site

    def _point(self, asset: str, ks: KeyState, pp: ParsedPoint, refs: References, out: OperatorOutput) -> None:
        p = pp.point
        status, site = self._lookup(refs, asset, p.site_guid)
        if status == "skip" and not ks.held:
            out.counts["nonTruckFiltered"] += 1
            return
        if ks.held:
            self._release(asset, ks, refs, out)
        if status == "wait":
            # only a point whose own site has no reference data waits; the truck's points for known
            # sites go on (a single corrupted site_guid must not hold a truck's cycles)
            ks.held.append(HeldPoint(p.site_guid, p.ts_ms, p.latitude, p.longitude, p.work_state_id, pp.hint,
                                     pp.raw, pp.position, pp.hold))  # fmt: skip
            out.counts["heldPoints"] += 1
            if len(ks.held) > self.wait_max_points and refs.loaded:
                self._reject_held(asset, ks, refs, out)
        elif status == "ok":
            self._apply(ks, p, pp.hint, pp.hold, site, refs, out, emit=False)  # on_points emits once at the end
        else:
            out.counts["nonTruckFiltered"] += 1

    def _apply(self, ks: KeyState, p: TelemetryPoint, hint: int, hold: int, site: SiteReference, refs: References,
               out: OperatorOutput, emit: bool = True) -> None:  # fmt: skip
        if ks.truck is not None and hint != NO_HINT:
            self._run_timers(ks, hint, refs, out)
        step, ks.truck = self.engine.on_point(ks.truck, p, site, emit, hold, None if hint == NO_HINT else hint)
        out.counts["pointsApplied"] += 1
        if hint > self.max_hint:
            self.max_hint = hint
        self._collect(step, out)

    def _release(self, asset: str, ks: KeyState, refs: References, out: OperatorOutput) -> None:
        """Apply, in order, every held point whose reference data is there; the others keep waiting
        (a point of a still unknown site must not hold the truck's points of known sites)."""
        if refs.asset_type(asset) is None:
            return  # every held point waits for the truck's own asset row
        waiting = []
        for h in ks.held:
            status, site = self._lookup(refs, asset, h.site_guid)
            if status == "wait":
                waiting.append(h)
            elif status == "ok":
                point = TelemetryPoint(asset, h.site_guid, h.ts_ms, h.latitude, h.longitude, h.work_state_id)
                self._apply(ks, point, h.hint, h.hold, site, refs, out)
            else:
                out.counts["nonTruckFiltered"] += 1
        ks.held[:] = waiting

    def _reject_held(self, asset: str, ks: KeyState, refs: References, out: OperatorOutput) -> None:
        """Dead-letter every held point (its reference data did not come in time)."""
        for h in ks.held:
            if refs.asset_type(asset) is None:
                reason, detail = UNKNOWN_ASSET, "asset_guid not in the asset table"
                out.counts["unknownAsset"] += 1
            else:
                reason, detail = NO_REFERENCE_DATA, f"no reference data for site {h.site_guid}"
                out.counts["noReferenceData"] += 1
                if h.site_guid not in self.no_reference_alerted:  # once per site (per operator instance)
                    self.no_reference_alerted.add(h.site_guid)
                    out.alerts.append(Alert(ALERT_NO_REFERENCE_DATA, asset, h.site_guid, h.ts_ms, h.latitude,
                                            h.longitude, f"no loaders or regions known for site {h.site_guid}"))
            out.dead_by_reason[reason] += 1
            out.dead_letters.append(DeadLetter(self.source, reason, detail, h.raw, asset, h.ts_ms, h.position))
        ks.held.clear()

    # -- engine output and timers ----------------------------------------------------------------
    def _collect(self, step: StepOutput, out: OperatorOutput) -> None:
        if step.in_progress is not None:
            out.in_progress = step.in_progress
        for rec in step.closed:
            if rec.load_start_ms is None:
                out.counts["closedWithoutLoadStart"] += 1
                continue
            out.counts["cyclesClosedTotal"] += 1
            out.closed_by_status[rec.cycle_status] += 1
            out.closed.append(rec)
        if step.status is not None:
            out.status = step.status
        for rej in step.rejected:
            out.counts["rejectedPoints"] += 1
            out.dead_by_reason[rej.reason] += 1
            if rej.reason == LATE:
                out.counts["latePoints"] += 1
            p = rej.point
            out.dead_letters.append(DeadLetter(ENGINE_SOURCE, rej.reason, rej.detail, format_record(p), p.asset_guid,
                                               p.ts_ms))  # fmt: skip
        out.alerts.extend(step.alerts)
        out.visits.extend(step.visits)
        out.hours.extend(step.hours)
        if step.duplicates:
            out.counts["duplicatesDropped"] += step.duplicates
        if step.reordered:
            out.counts["reordered"] += step.reordered

    def _run_timers(self, ks: KeyState, watermark_ms: int, refs: References, out: OperatorOutput) -> None:
        """Fire the truck's due engine timer(s) at ``watermark_ms``."""
        truck = ks.truck
        due = truck.timer_due_ms(self.config)
        while due is not None and due <= watermark_ms:
            step, truck = self.engine.on_timer(truck, due, watermark_ms, refs.site(truck.committed.site))
            self._collect(step, out)
            nxt = truck.timer_due_ms(self.config, watermark_ms)
            if nxt == due:
                break
            due = nxt
        ks.truck = truck

    def _quiet(self, ks: KeyState) -> bool:
        """Nothing buffered, held or open: the state only waits for retention to end."""
        truck = ks.truck
        return (truck is not None and not ks.held and not truck.pending and not truck.lead
                and truck.committed.phase == SEG_NONE and truck.committed.prev_ts is not None)  # fmt: skip

    def _retention_ms(self, ks: KeyState) -> int:
        return int(self.config.for_site(ks.truck.committed.site).state_retention_s * 1000)

    def _expired(self, ks: KeyState, watermark_ms: int) -> bool:
        return self._quiet(ks) and watermark_ms >= ks.truck.committed.prev_ts + self._retention_ms(ks)

    def _due(self, ks: KeyState, watermark_ms: int | None) -> int | None:
        """When the truck next needs a timer: the engine's, the held points' deadline, retention."""
        truck = ks.truck
        due = truck.timer_due_ms(self.config, watermark_ms) if truck is not None else None
        if ks.held:
            deadline = ks.held[0].ts_ms + self.wait_max_ms
            due = deadline if due is None else min(due, deadline)
        if due is None and self._quiet(ks):
            due = ks.truck.committed.prev_ts + self._retention_ms(ks)
        return due

    def _report_presence(self, asset: str, ks: KeyState, now: tuple[str, str, int] | None,
                         out: OperatorOutput) -> None:
        """Tell the loader stage where the truck is now, when that changed (leaving a loader first)."""
        before = ks.presence
        if (before is None and now is None) or (before is not None and now is not None and tuple(before) == now):
            return
        truck = ks.truck
        site, event_ms = (truck.committed.site, truck.newest_ms or 0) if truck is not None else ("", 0)
        if truck is not None and truck.committed.prev_ts is not None:
            cur = self.engine.current(truck)
            site, event_ms = cur.site, cur.prev_ts
        if before is not None and (now is None or now[0] != before[0]):
            out.presence.append(LoaderPresence(asset, site, before[0], LEFT, before[2], event_ms))
        if now is not None:
            out.presence.append(LoaderPresence(asset, site, now[0], now[1], now[2], event_ms))
        ks.presence = None if now is None else list(now)

    def _finish(self, asset: str, ks: KeyState, out: OperatorOutput, watermark_ms: int | None) -> Step:
        """Report the truck's place at a loader, ask for its next timer and encode its state.
        ``watermark_ms``: the watermark timers just ran at (a timer at or below it would fire again at
        once)."""
        if ks.truck is not None and ks.truck.committed.prev_ts is not None:
            self._report_presence(asset, ks, loader_presence(self.engine.current(ks.truck)), out)
        due = None if watermark_ms is not None and watermark_ms >= END_OF_INPUT else self._due(ks, watermark_ms)
        if due is not None and watermark_ms is not None and due <= watermark_ms:
            due = None if watermark_ms >= END_THRESHOLD else watermark_ms + 1
        register = delete = None
        if due is not None:
            # a timer may fire late (the next point's hint runs due timers anyway); rounding up to the
            # grid keeps it unchanged across most points
            grid = self.timer_grid_ms
            due = -(-due // grid) * grid
            if due != ks.timer_ms:
                delete = ks.timer_ms if ks.timer_ms >= 0 else None
                ks.timer_ms = register = due
        state = ks.to_bytes()
        self._remember(asset, state, ks)
        return Step(out, state, register, retry=bool(ks.held), delete_timer_ms=delete)

    # -- decoded states --------------------------------------------------------------------------
    def _load(self, asset: str, state: bytes | None) -> KeyState:
        if state is None:
            return KeyState()
        cached = self._cache.get(asset)
        if cached is not None and cached[0] == state:
            self._cache.move_to_end(asset)
            return cached[1]
        return KeyState.from_bytes(state)

    def _remember(self, asset: str, state: bytes, ks: KeyState) -> None:
        cache = self._cache
        cache[asset] = (state, ks)
        cache.move_to_end(asset)
        if len(cache) > self.cache_size:
            cache.popitem(last=False)

    @property
    def cached_trucks(self) -> int:
        """Trucks whose decoded state is cached (bounded by cache_size)."""
        return len(self._cache)
