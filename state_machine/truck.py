"""Per-truck processing: dedup, re-ordering, the cycle state machine, and what to emit.

``TruckEngine.on_point(state, point, site, emit) -> (StepOutput, state)``,
``TruckEngine.on_timer(state, timer_ms, watermark_ms, site) -> (StepOutput, state)`` and
``TruckEngine.emit_current(state, closed) -> StepOutput`` (the rows of points applied with
``emit=False``) are the only entry points; the per-truck operator (state_machine.operator), which the
Flink function and the offline replay both run, calls exactly these.

Ordering (per truck, deterministic for a given arrival order):
  * A point is held in a re-order buffer until the truck's newest point is the hold newer; then it
    is committed, in event-time order, to the cycle state machine. Closed cycles come only from
    committed points, so they never change afterwards. The hold comes with each point, measured on
    the site's stream (state_machine.lateness), clamped to max_disorder_s .. max_hold_s.
  * Exact duplicates (same timestamp, position and work state) are dropped and counted; the same
    timestamp with different content is rejected as CONFLICTING_DUPLICATE (first one wins).
  * A point older than the newest committed point is rejected as LATE (never silently lost), and so is
    one more than the hold behind the truck's newest point and before every buffered point.
  * A point more than max_disorder_s ahead of the truck's newest point is *held* (the lead), not
    applied: it may be a device clock that jumped, live points sent before an outage's backlog, or
    just the next row after a silence. Lead points join the buffer when the truck's timeline catches
    up with them (a backlog filling the gap; a glitch a few minutes ahead, committed in order). The
    truck's time really moved on, and the lead's points that follow one another within lead_hold_s
    from its first join the buffer, when the truck sent nothing else while they piled up (LEAD_MAX
    points or lead_hold_s of their own time) or when they are more than 2 x LEAD_MAX (late points of
    its own kept arriving in between: a device reporting every second, with some points late); and
    the lead points the stream's event time reached join it once that time passes the first by
    lead_hold_s, but for the newest: nothing the truck sent confirms it yet (a stray before a silence
    whose backlog is still to come), so it joins when the truck's timeline reaches it, a newer point
    of the truck joins, or the stream passes it by idle_close_s. A lone lead point that the truck's
    timeline passes by lead_hold_s without reaching it is rejected as CLOCK_JUMP, with an alert; at
    the end of the input every lead point joins.
  * For low latency the temporary-table row is computed speculatively from the committed state
    plus the buffered points (optional); it is an upsert, so a later re-order simply overwrites it.
Timers: the truck needs a timer at newest + hold (to flush its buffer when it goes quiet; when its
points arrive behind the stream, as a backlog or through a slow link, at the stream's watermark when
its last point arrived + hold, so that it is flushed only after the hold has passed without a point
from it) and, with a cycle open, at last point + idle_close_s (to close it IDLE_TIMEOUT). A watermark
of END_OF_INPUT (bounded input finished) flushes but never closes cycles.
"""

from __future__ import annotations

from base64 import b64decode, b64encode
from bisect import bisect_left, bisect_right, insort
from struct import calcsize, pack, unpack
from typing import NamedTuple

import orjson

from state_machine import truck_hours
from state_machine.config import CycleThresholds, EngineConfig
from state_machine.cycle import IDLE_TIMEOUT, CycleState, apply_point, close_cycle, open_visit
from state_machine.model import (
    ALERT_CLOCK_JUMP,
    IDLING,
    SEG_NONE,
    Alert,
    CycleRecord,
    Rejection,
    StepOutput,
    TelemetryPoint,
    TruckStatus,
    new_record,
)
from state_machine.reference import SiteReference, SpatialCache, SpatialIndex

STATE_VERSION = 3
END_OF_INPUT = 2**63 - 1
_RECENT_KEEP = 48
HELD = "held"
SPEC_MARK_EVERY = 8
"""Copies of the speculative state are kept every this many buffered points (in memory only)."""
LEAD_MAX = 48
"""Lead points held at most while the truck sends nothing else (more: its time really moved on)."""

LATE = "LATE"
CONFLICTING_DUPLICATE = "CONFLICTING_DUPLICATE"
CLOCK_JUMP = "CLOCK_JUMP"


class _Entry(NamedTuple):
    """A buffered point with its classification (taken once, when it arrived)."""

    ts_ms: int
    point: TelemetryPoint
    area: str
    guid: str | None
    arrival_ms: int | None = None  # the stream's watermark when it arrived, up to a whole second (None: unknown)


def _entry_ts(e: _Entry) -> int:
    return e.ts_ms


def _fingerprint(p: TelemetryPoint) -> int:
    """16-bit digest of a point's content (tells exact duplicates from conflicting ones)."""
    return (round(p.latitude * 1e7) * 1_000_003 + round(p.longitude * 1e7) * 31 + p.work_state_id) & 0xFFFF


class TruckState:
    """What is kept per truck in Flink keyed state (see to_bytes for the serialised form)."""

    __slots__ = ("asset", "committed", "pending", "newest_ms", "recent", "lead", "hold_ms", "arrival_ms", "hours",
                 "_spec", "_spec_n", "_marks", "_dirty", "_row_key")

    def __init__(self, asset: str, site: str) -> None:
        self.asset = asset
        self.committed = CycleState(asset, site)
        self.pending: list[_Entry] = []
        self.newest_ms: int | None = None
        self.recent: list[list[int]] = []  # [ts, 16-bit fingerprint] of the last committed points
        self.lead: list[tuple[_Entry, int]] = []  # held points ahead (sorted), each with newest_ms at arrival
        self.hold_ms: int | None = None  # the hold in force (its last point's); None: the site's max_disorder_s
        self.arrival_ms: int | None = None  # the stream's watermark when its last point arrived (None: unknown)
        self.hours: list[list[int]] = []  # the hourly figures being accumulated (state_machine.truck_hours)
        # not serialised: the speculative state (committed + the first _spec_n buffered points), copies of
        # it every SPEC_MARK_EVERY points, and the first buffer index it no longer reflects (re-order)
        self._spec: CycleState | None = None
        self._spec_n = 0
        self._marks: list[tuple[int, CycleState]] = []
        self._dirty: int | None = None
        self._row_key: tuple | None = None  # key of the last emitted in-progress row, not serialised

    # -- serialisation -------------------------------------------------------------------------
    def to_list(self) -> list:
        """Versioned compact form (JSON-able); from_list(to_list(s)) == s. Held points are flat lists of
        small numbers (_encode_entries), the newest time is the base of the others."""
        base = self.newest_ms or 0
        site = self.committed.site
        tags: dict[tuple, int] = {}
        return [
            STATE_VERSION,
            self.asset,
            self.committed.to_list(),
            _encode_entries(self.pending, base, self.arrival_ms, site, tags),
            self.newest_ms,
            _encode_recent(self.recent, self.committed.prev_ts),
            _encode_entries([e for e, _ in self.lead], base, self.arrival_ms, site, tags,
                            [base - anchor for _, anchor in self.lead]),
            [list(tag) for tag in tags],
            self.hold_ms,
            None if self.arrival_ms is None else base - self.arrival_ms,
            self.hours,
        ]

    def to_bytes(self) -> bytes:
        """to_list as compact JSON; from_bytes(to_bytes(s)) == s."""
        return orjson.dumps(self.to_list())

    @classmethod
    def from_bytes(cls, data: bytes) -> TruckState:
        """Decode to_bytes output; raises ValueError on an unknown version."""
        return cls.from_list(orjson.loads(data))

    @classmethod
    def from_list(cls, values: list) -> TruckState:
        """Inverse of to_list (versions 1, before the lead buffer, and 2, before the adaptive hold, are
        migrated); raises ValueError on an unknown version."""
        version = values[0] if values else None
        if version not in (1, 2, STATE_VERSION):
            raise ValueError(f"unsupported truck state version {version!r}")
        asset, committed, pending, newest, recent, lead = values[1:7]
        state = cls.__new__(cls)
        state.asset = asset
        state.newest_ms = newest
        base = newest or 0
        state.hold_ms = state.arrival_ms = None
        state.hours = []
        if version == 1:  # v1: absolute held points, one clock-jump suspect, no moving history
            state.committed = CycleState.from_list([*committed, [], []])
            state.pending = [_entry_from_list(asset, e, 0, "") for e in pending]
            state.lead = [(_entry_from_list(asset, lead, 0, ""), newest)] if lead else []
        elif version == 2:  # v2: one list per held point, with absolute positions
            state.committed = CycleState.from_list(committed)
            site = state.committed.site
            state.pending = [_entry_from_list(asset, e, base, site) for e in pending]
            state.lead = [(_entry_from_list(asset, e[:7], base, site), base - e[7]) for e in lead]
            state.hours = values[7] if len(values) > 7 else []  # (a trailing item of version 2 for a while)
        else:
            tags, state.hold_ms, arrival = values[7:10]
            state.hours = values[10] if len(values) > 10 else []
            state.arrival_ms = arrival = None if arrival is None else base - arrival
            state.committed = CycleState.from_list(committed)
            site = state.committed.site
            state.pending = [e for e, _ in _decode_entries(asset, pending, base, arrival, site, tags, False)]
            state.lead = [(e, base - anchor) for e, anchor in _decode_entries(asset, lead, base, arrival, site, tags, True)]
        state.recent = _decode_recent(recent, state.committed.prev_ts, version)
        state._spec = None
        state._spec_n = 0
        state._marks = []
        state._dirty = None
        state._row_key = None
        return state

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TruckState) and self.to_bytes() == other.to_bytes()

    # -- timers ----------------------------------------------------------------------------------
    def timer_due_ms(self, config: EngineConfig, watermark_ms: int | None = None) -> int | None:
        """Event time at which on_timer must run next (None: no timer needed).

        Pass the current watermark after on_timer: once it is END_OF_INPUT no timer is needed
        (registering one at or below the final watermark would fire again forever).
        """
        if watermark_ms is not None and watermark_ms >= END_OF_INPUT:
            return None
        th = config.for_site(self.committed.site)
        due: list[int] = []
        if self.pending:
            newest = self.newest_ms or 0
            if self.pending[0].ts_ms <= newest:
                arrival = self.arrival_ms
                quiet_from = newest if arrival is None or arrival < newest else arrival
                due.append(quiet_from + (self.hold_ms or int(th.max_disorder_s * 1000)))
            if self.pending[-1].ts_ms > newest:  # joined lead points beyond the truck's timeline
                beyond = next(e.ts_ms for e in self.pending if e.ts_ms > newest)
                unconfirmed = beyond == self.pending[-1].ts_ms  # the newest waits as a lone lead point does
                due.append(beyond + int((th.idle_close_s if unconfirmed else th.lead_hold_s) * 1000))
        if len(self.lead) > 1:  # all but the newest lead point may join on the stream's time
            due.append(self.lead[0][0].ts_ms + int(th.lead_hold_s * 1000))
        if self.lead:
            due.append(self.lead[-1][0].ts_ms + int(th.idle_close_s * 1000))
        last = self.committed.prev_ts
        if self.committed.phase != SEG_NONE and last is not None:
            due.append(last + int(th.idle_close_s * 1000))
        hour_end = truck_hours.unreported_until(self.hours, last)
        if hour_end is not None and not self.pending and not self.lead:  # a quiet truck's hour, once it is over
            due.append(hour_end + (self.hold_ms or int(th.max_disorder_s * 1000)))
        return min(due) if due else None

    def quiet_from_ms(self) -> int:
        """The event time from which the truck counts as quiet: its newest point's, or, when its points
        arrive behind the stream, the stream's watermark at its last arrival."""
        newest = self.newest_ms or 0
        arrival = self.arrival_ms
        return newest if arrival is None or arrival < newest else arrival


_RECENT_WIDTHS = (("H", 1 << 16), ("I", 1 << 32), ("Q", 1 << 64))


def _encode_recent(recent: list[list[int]], base: int | None) -> str:
    """[ts, fp] pairs (ascending ts), newest first, as one string: a struct code, then base64 of the
    times before the next newer one (the newest: before ``base``) as unsigned numbers of that code
    (the narrowest that holds them) and the 16-bit fingerprints."""
    diffs: list[int] = []
    fps: list[int] = []
    prev = base or 0
    for ts, fp in reversed(recent):
        diffs.append(prev - ts)
        fps.append(fp)
        prev = ts
    widest = max(diffs, default=0)
    code = next(code for code, limit in _RECENT_WIDTHS if widest < limit)
    return code + b64encode(pack(f"<{len(diffs)}{code}{len(fps)}H", *diffs, *fps)).decode()


def _decode_recent(encoded: list[int] | str, base: int | None, version: int = STATE_VERSION) -> list[list[int]]:
    if version < 3:  # a flat list of (base - ts, fp), oldest first
        return [[base - encoded[i], encoded[i + 1]] for i in range(0, len(encoded), 2)]
    code, raw = encoded[0], b64decode(encoded[1:])
    n = len(raw) // (calcsize(code) + 2)
    values = unpack(f"<{n}{code}{n}H", raw)
    recent: list[list[int]] = []
    prev = base or 0
    for diff, fp in zip(values[:n], values[n:], strict=True):
        prev -= diff
        recent.append([prev, fp])
    recent.reverse()
    return recent


def _same_timestamp(out: StepOutput, point: TelemetryPoint, identical: bool, other: str) -> None:
    """A point with the timestamp of one already seen: an exact duplicate is counted, a different
    one rejected (the first one wins)."""
    if identical:
        out.duplicates += 1
    else:
        out.rejected.append(Rejection(point, CONFLICTING_DUPLICATE, f"differs from {other}"))


def _encode_entries(entries: list[_Entry], base: int, arrival: int | None, site: str, tags: dict[tuple, int],
                    anchors: list[int] | None = None) -> list:
    """Held points as one flat list of small numbers, per point: time after the previous one (the first:
    after ``base``); latitude and longitude as differences from the previous one in 1e-7 degrees (an
    int; a float is the value itself, when 1e-7 degrees do not hold it exactly); the index of its
    (site or 0 for the truck's own, work state, area, area guid) in ``tags`` (filled here); its arrival
    (whole seconds) before the previous one's, in seconds (the first: before ``arrival``; null:
    unknown); then the anchor from ``anchors`` when given."""
    flat: list = []
    extend = flat.extend
    prev_ts, prev_lat, prev_lon, prev_arrival = base, 0, 0, _whole_seconds(arrival)
    for i, e in enumerate(entries):
        p = e.point
        lat, lon = p.latitude, p.longitude
        q_lat, q_lon = round(lat * 1e7), round(lon * 1e7)
        tag = (0 if p.site_guid == site else p.site_guid, p.work_state_id, e.area, e.guid)
        code = tags.get(tag)
        if code is None:
            code = tags[tag] = len(tags)
        entry_arrival = e.arrival_ms
        extend((p.ts_ms - prev_ts, q_lat - prev_lat if q_lat / 1e7 == lat else lat,
                q_lon - prev_lon if q_lon / 1e7 == lon else lon, code,
                None if entry_arrival is None else (prev_arrival - entry_arrival) // 1000))
        if anchors is not None:
            flat.append(anchors[i])
        prev_ts, prev_lat, prev_lon = p.ts_ms, q_lat, q_lon
        if entry_arrival is not None:
            prev_arrival = entry_arrival
    return flat


def _whole_seconds(ms: int | None) -> int:
    """``ms`` rounded up to a whole second (0 for None)."""
    return 0 if ms is None else -(-ms // 1000) * 1000


def _decode_entries(asset: str, flat: list, base: int, arrival: int | None, site: str, tags: list,
                    anchored: bool) -> list[tuple[_Entry, int]]:
    """Inverse of _encode_entries: (entry, anchor or 0) pairs."""
    width = 6 if anchored else 5
    out: list[tuple[_Entry, int]] = []
    ts, q_lat, q_lon, prev_arrival = base, 0, 0, _whole_seconds(arrival)
    for i in range(0, len(flat), width):
        dts, d_lat, d_lon, code, d_arrival = flat[i:i + 5]
        ts += dts
        if type(d_lat) is int:
            q_lat += d_lat
            lat = q_lat / 1e7
        else:
            lat, q_lat = d_lat, round(d_lat * 1e7)
        if type(d_lon) is int:
            q_lon += d_lon
            lon = q_lon / 1e7
        else:
            lon, q_lon = d_lon, round(d_lon * 1e7)
        entry_arrival = None
        if d_arrival is not None:
            entry_arrival = prev_arrival = prev_arrival - 1000 * d_arrival
        entry_site, ws, area, guid = tags[code]
        point = TelemetryPoint(asset, site if entry_site == 0 else entry_site, ts, lat, lon, ws)
        out.append((_Entry(ts, point, area, guid, entry_arrival), flat[i + 5] if anchored else 0))
    return out


def _entry_from_list(asset: str, v: list, base: int, site: str) -> _Entry:
    dts, entry_site, lat, lon, ws, area, guid = v
    ts = base + dts
    return _Entry(ts, TelemetryPoint(asset, site if entry_site == 0 else entry_site, ts, lat, lon, ws), area, guid)


def _timeline_length(lead: list[tuple[_Entry, int]], gap_ms: int) -> int:
    """How many lead points, from the first, follow one another at most ``gap_ms`` apart."""
    n = 1
    while n < len(lead) and lead[n][0].ts_ms - lead[n - 1][0].ts_ms <= gap_ms:
        n += 1
    return n


class _SiteRuntime(NamedTuple):
    """Per-site values needed on every point, resolved once per reference object."""

    site: SiteReference | None
    th: CycleThresholds
    index: SpatialIndex | None
    disorder_ms: int
    lead_hold_ms: int
    max_hold_ms: int
    max_gap_ms: int
    idle_close_ms: int


class TruckEngine:
    """Stateless service object: runs steps for any truck given its state (pure, no I/O)."""

    def __init__(self, config: EngineConfig | None = None, speculative: bool = True) -> None:
        self.config = config or EngineConfig()
        self.speculative = speculative
        self.spatial = SpatialCache()
        self._runtime: dict[str, _SiteRuntime] = {}  # per site, for the newest reference seen

    def _site_runtime(self, site_guid: str, site: SiteReference | None = None) -> _SiteRuntime:
        """Thresholds and spatial index of a site; `site` updates the reference in use."""
        rt = self._runtime.get(site_guid)
        if rt is not None and (site is None or site is rt.site):
            return rt
        th = self.config.for_site(site_guid)
        index = self.spatial.get(site, th.loader_distance_m) if site is not None else None
        disorder = int(th.max_disorder_s * 1000)
        rt = _SiteRuntime(site, th, index, disorder, int(th.lead_hold_s * 1000), max(disorder, int(th.max_hold_s * 1000)),
                          int(th.max_gap_s * 1000), int(th.idle_close_s * 1000))
        self._runtime[site_guid] = rt
        return rt

    # -- public steps ----------------------------------------------------------------------------
    def on_point(
        self, state: TruckState | None, point: TelemetryPoint, site: SiteReference, emit: bool = True,
        hold_ms: int = 0, arrival_ms: int | None = None,
    ) -> tuple[StepOutput, TruckState]:
        """Apply one arriving point (any order) and return what to emit and the new state. With
        ``emit=False`` the in-progress and status rows are left out (a caller applying several points
        asks for them once, with emit_current). ``hold_ms``: how long to hold points for late ones
        (state_machine.lateness; clamped to the site's max_disorder_s .. max_hold_s); ``arrival_ms``:
        the stream's watermark as the point arrived (its hint), None when unknown."""
        out = StepOutput()
        if state is None:
            state = TruckState(point.asset_guid, point.site_guid)
        rt = self._site_runtime(point.site_guid, site)
        hold = rt.disorder_ms if hold_ms <= rt.disorder_ms else min(hold_ms, rt.max_hold_ms)
        state.hold_ms = None if hold == rt.disorder_ms else hold
        if arrival_ms is not None and (state.arrival_ms is None or arrival_ms > state.arrival_ms):
            state.arrival_ms = arrival_ms
        area, guid, _ = rt.index.classify(point.latitude, point.longitude)
        entry = new_record(_Entry, (point.ts_ms, point, area, guid,
                                    None if arrival_ms is None else -(-arrival_ms // 1000) * 1000))

        verdict = self._admit(state, entry, rt, hold, out)
        if verdict is None:
            return out, state
        if verdict is not HELD:
            self._commit(state, out, state.newest_ms - hold, None if arrival_ms is None else arrival_ms - rt.disorder_ms)
        if emit:
            self._emit_current(state, out, closed=bool(out.closed), force_full=False)
        else:
            self._current(state)  # keeps the speculative state incremental (one point applied on top)
        return out, state

    def current(self, state: TruckState) -> CycleState:
        """The truck's live state: what the temporary-table row shows (speculative or committed)."""
        return self._current(state)

    def emit_current(self, state: TruckState, closed: bool) -> StepOutput:
        """The truck's status row and, when its open cycle changed (or ``closed``: a cycle closed
        since the last one), its in-progress row: what on_point emits, for points applied with
        ``emit=False``."""
        out = StepOutput()
        self._emit_current(state, out, closed=closed, force_full=False)
        return out

    def on_timer(
        self, state: TruckState, timer_ms: int, watermark_ms: int, site: SiteReference | None = None
    ) -> tuple[StepOutput, TruckState]:
        """Event-time timer: flush the buffer; close a silent truck's cycle (not at end of input)."""
        out = StepOutput()
        if site is not None:
            self._site_runtime(site.site_guid, site)
        rt = self._site_runtime(state.committed.site)
        if state.lead and (watermark_ms >= END_OF_INPUT or watermark_ms >= state.lead[0][0].ts_ms + rt.lead_hold_ms):
            self._take_lead_on_stream_time(state, watermark_ms, rt)
        if state.pending and state.quiet_from_ms() + (state.hold_ms or rt.disorder_ms) <= watermark_ms:
            self._commit(state, out, self._quiet_horizon(state, watermark_ms, rt))
        last = state.committed.prev_ts
        if watermark_ms >= END_OF_INPUT and not state.pending:
            visit = open_visit(state.committed)  # the input ended while the truck was at a loader
            if visit is not None:
                out.visits.append(visit)
            truck_hours.report(state.hours, state.committed.prev_ts, state.asset, state.committed.site, out.hours)
        if (
            watermark_ms < END_OF_INPUT
            and not state.pending
            and last is not None
            and state.committed.phase != SEG_NONE
            and watermark_ms >= last + rt.idle_close_ms
        ):
            rec = close_cycle(state.committed, last, IDLE_TIMEOUT)
            if rec is not None:
                out.closed.append(rec)
                state._spec = None
                truck_hours.account(state.hours, None, IDLING, 0.0, 0.0, last, [rec], rt.max_gap_ms, state.asset,
                                    state.committed.site, self.speculative, out.hours)  # fmt: skip
        hour_end = truck_hours.unreported_until(state.hours, last)
        if (watermark_ms < END_OF_INPUT and not state.pending and not state.lead and hour_end is not None
                and watermark_ms >= hour_end + (state.hold_ms or rt.disorder_ms)):
            truck_hours.report(state.hours, last, state.asset, state.committed.site, out.hours)
        self._emit_current(state, out, closed=bool(out.closed), force_full=True)
        return out, state

    # -- internals -------------------------------------------------------------------------------
    def _apply(self, cycle: CycleState, e: _Entry, out: StepOutput | None = None) -> list[CycleRecord]:
        """Apply one buffered point with its site's thresholds and current spatial index; alerts and
        load visits go to ``out`` (None: a speculative run, whose outputs are not final)."""
        rt = self._site_runtime(e.point.site_guid)
        if out is None:
            return apply_point(cycle, e.point, e.area, e.guid, rt.th, rt.index)
        return apply_point(cycle, e.point, e.area, e.guid, rt.th, rt.index, out.alerts, out.visits)

    def _admit(self, state: TruckState, entry: _Entry, rt: _SiteRuntime, hold: int,
               out: StepOutput) -> bool | str | None:
        """Dedup / late / lead checks and buffering. None: dropped or rejected; HELD: in the lead;
        else whether it was appended in order to the buffer."""
        ts = entry.ts_ms
        point = entry.point
        committed_ts = state.committed.prev_ts
        if committed_ts is not None and ts <= committed_ts:
            fp = _fingerprint(point)
            for rts, rfp in state.recent:
                if rts == ts:
                    _same_timestamp(out, point, rfp == fp, "the applied point")
                    return None
            out.rejected.append(
                Rejection(point, LATE, f"{(committed_ts - ts) / 1000:.3f}s older than the last applied point")
            )
            return None
        pending = state.pending
        k = bisect_left(pending, ts, key=_entry_ts) if pending and ts <= pending[-1].ts_ms else len(pending)
        if k < len(pending) and pending[k].ts_ms == ts:
            _same_timestamp(out, point, pending[k].point == point, "a buffered point")
            return None
        for e, _anchor in state.lead:
            if e.ts_ms == ts:
                _same_timestamp(out, point, e.point == point, "a held point")
                return None

        newest = state.newest_ms
        if newest is not None and ts < newest - hold and (not state.pending or ts < state.pending[0].ts_ms):
            # beyond the hold and before every buffered point: what a commit would have passed (nothing was
            # committed yet at a stream's start, or a burst is still kept apart)
            out.rejected.append(Rejection(point, LATE, f"{(newest - ts) / 1000:.3f}s older than the truck's newest "
                                                      f"point, beyond the hold of {hold / 1000:.0f}s"))
            return None
        disorder = rt.disorder_ms
        if newest is not None and ts > newest + disorder:
            insort(state.lead, (entry, newest), key=lambda held: held[0].ts_ms)
            lead = state.lead
            quiet = lead[0][1] == newest  # nothing else arrived since the first lead point
            n = _timeline_length(lead, rt.lead_hold_ms)  # a stray far beyond them is not part of it
            if (quiet and (n >= LEAD_MAX or lead[n - 1][0].ts_ms - lead[0][0].ts_ms >= rt.lead_hold_ms)
                    or len(lead) > 2 * LEAD_MAX):  # (more than a glitch makes, whatever else came)
                self._take_lead(state, n)  # the truck's time moved on
                return False
            state._spec = None
            return HELD

        in_order = k == len(pending)
        if in_order:
            pending.append(entry)
        else:
            pending.insert(k, entry)
            if newest is not None and ts < newest:
                out.reordered += 1
            state._dirty = k if state._dirty is None else min(state._dirty, k)
        if newest is None or ts > newest:
            state.newest_ms = ts
        if state.lead:
            self._settle_lead(state, rt, out)
        return in_order

    def _settle_lead(self, state: TruckState, rt: _SiteRuntime, out: StepOutput) -> None:
        """After the truck's timeline moved: lead points it reached join the buffer in order; a lone
        one it passed by lead_hold_s without reaching is rejected as a clock jump."""
        lead = state.lead
        disorder = rt.disorder_ms
        # newest_ms stays the truck's own timeline (what arrived in order): joined lead points wait in
        # the buffer until it passes them, so the rest of a backlog can still arrive before them
        reach = (state.newest_ms or 0) + disorder
        n = 0
        while n < len(lead) and lead[n][0].ts_ms <= reach:
            insort(state.pending, lead[n][0], key=lambda e: e.ts_ms)
            n += 1
        if n:
            del lead[:n]
            state._spec = None
        newest = state.newest_ms or 0
        arrival = state.arrival_ms
        k = 0
        while k < len(lead):
            entry, anchor = lead[k]
            lone = all(abs(other.ts_ms - entry.ts_ms) > disorder for other, _ in lead if other is not entry)
            # the truck's timeline went on for lead_hold_s, and so did the stream since it arrived (a
            # backlog delivered in a burst after it is still on its way to it)
            if (lone and newest - anchor >= rt.lead_hold_ms
                    and (arrival is None or entry.arrival_ms is None or arrival - entry.arrival_ms >= rt.lead_hold_ms)):
                self._reject_lead(state, k, out, f"{(entry.ts_ms - anchor) / 1000:.0f} s ahead of the truck's "
                                  f"timeline, which went on for {(newest - anchor) / 1000:.0f} s without reaching it")
            else:
                k += 1

    @staticmethod
    def _quiet_horizon(state: TruckState, watermark_ms: int, rt: _SiteRuntime) -> int:
        """How far a quiet truck's buffer commits: its timeline is final. Lead points that joined the
        buffer beyond it wait until the stream's time passes them by lead_hold_s (the rest of a backlog
        may come), but for the newest, which nothing the truck sent after it confirms: like a lone lead
        point, it waits idle_close_s, or a backlog behind a stray would turn LATE."""
        if watermark_ms >= END_OF_INPUT:
            return END_OF_INPUT
        newest = state.newest_ms or 0
        horizon = max(newest, watermark_ms - rt.lead_hold_ms)
        last = state.pending[-1].ts_ms
        if newest < last <= horizon and watermark_ms < last + rt.idle_close_ms:
            return last - 1
        return horizon

    @staticmethod
    def _reject_lead(state: TruckState, k: int, out: StepOutput, detail: str) -> None:
        entry, _anchor = state.lead.pop(k)
        p = entry.point
        out.rejected.append(Rejection(p, CLOCK_JUMP, detail))
        out.alerts.append(Alert(ALERT_CLOCK_JUMP, p.asset_guid, p.site_guid, p.ts_ms, p.latitude, p.longitude,
                                f"device clock jumped ahead: {detail}; the point was rejected"))
        state._spec = None

    @staticmethod
    def _take_lead_on_stream_time(state: TruckState, watermark_ms: int, rt: _SiteRuntime) -> None:
        """The stream's time passed the first lead point by lead_hold_s: the lead points it reached join
        the buffer, but for the newest one, which nothing the truck sent after it confirms yet. That one
        (a lone point ahead of a truck gone silent: a clock stray, or a live point before a backlog that
        is still on its way) joins only once the stream passes it by idle_close_s, the longest a backlog
        is waited for; committing it earlier would turn that backlog LATE. A lone point the stream has
        not reached stays held, to be judged by the truck's own timeline."""
        lead = state.lead
        if watermark_ms >= END_OF_INPUT:
            reached = len(lead)
        else:
            reached = bisect_right(lead, watermark_ms, key=lambda held: held[0].ts_ms)
            if reached == len(lead) and watermark_ms < lead[-1][0].ts_ms + rt.idle_close_ms:
                reached -= 1
        if reached:
            TruckEngine._take_lead(state, reached)
            # what stays held came after the point the truck's timeline now is at, with nothing between
            state.lead = [(entry, state.newest_ms) for entry, _anchor in state.lead]

    @staticmethod
    def _take_lead(state: TruckState, n: int) -> None:
        """The first n lead points join the buffer (the truck's time moved on to them)."""
        for entry, _anchor in state.lead[:n]:
            insort(state.pending, entry, key=lambda e: e.ts_ms)
            state.newest_ms = max(state.newest_ms or entry.ts_ms, entry.ts_ms)
        del state.lead[:n]
        state._spec = None

    def _commit(self, state: TruckState, out: StepOutput, horizon_ms: int, settled_ms: int | None = None) -> None:
        """Apply buffered points with ts <= horizon to the committed state, in order; with ``settled_ms``
        only those that arrived at or before that watermark (a burst of backlog stays in the buffer
        until the stream has moved max_disorder_s past it, so that a copy sent right after it is still
        recognised as a duplicate)."""
        pending = state.pending
        n = 0
        committed = state.committed
        while n < len(pending) and pending[n].ts_ms <= horizon_ms:
            e = pending[n]
            if settled_ms is not None and e.arrival_ms is not None and e.arrival_ms > settled_ms:
                break
            prev_ts, prev_ws, loaded_m, empty_m = committed.prev_ts, committed.prev_ws, committed.lt_dist, committed.et_dist
            new_cycle = committed.load_start
            closed = self._apply(committed, e, out)
            if committed.load_start != new_cycle:  # a new cycle began: its distances count from 0
                loaded_m = empty_m = 0.0
            truck_hours.account(state.hours, prev_ts, prev_ws, committed.lt_dist - loaded_m, committed.et_dist - empty_m,
                                e.ts_ms, closed, self._site_runtime(committed.site).max_gap_ms, state.asset,
                                committed.site, self.speculative, out.hours)  # fmt: skip
            out.closed.extend(closed)
            state.recent.append([e.ts_ms, _fingerprint(e.point)])
            n += 1
        if n:
            del pending[:n]
            if len(state.recent) > _RECENT_KEEP:
                del state.recent[: len(state.recent) - _RECENT_KEEP]
            # the speculative state is unchanged (the same points, in the same order); re-index it
            if state._dirty is not None and state._dirty < n:
                state._spec = None  # a re-ordered point was committed at once: recompute from committed
            elif state._spec is not None:
                state._spec_n -= n
                state._dirty = None if state._dirty is None else state._dirty - n
                state._marks = [(i - n, mark) for i, mark in state._marks if i > n]

    def _current(self, state: TruckState) -> CycleState:
        """The state to show in the temporary table: speculative (committed + buffer, and the lead
        while the truck sends nothing else) or committed. Kept incrementally: an in-order point is
        applied on top; after a re-order the buffer is re-applied from the last copy taken before it."""
        lead = state.lead
        shown_lead = lead if lead and lead[0][1] == state.newest_ms else ()
        pending = state.pending
        if not self.speculative or not (pending or shown_lead):
            state._spec = None
            return state.committed
        spec = state._spec
        if spec is None or shown_lead:
            start, marks = 0, []
            spec = state.committed.copy()
        elif state._dirty is not None:
            marks = [m for m in state._marks if m[0] <= state._dirty]
            start, spec = marks[-1] if marks else (0, state.committed)
            spec = spec.copy()
        else:
            start, marks = state._spec_n, state._marks
        for i in range(start, len(pending)):
            self._apply(spec, pending[i])
            if not (i + 1) % SPEC_MARK_EVERY:
                marks.append((i + 1, spec.copy()))
        state._dirty = None
        if shown_lead:
            state._spec = None
            for e, _anchor in shown_lead:
                self._apply(spec, e)
            return spec
        state._spec, state._spec_n, state._marks = spec, len(pending), marks
        return spec

    def _emit_current(self, state: TruckState, out: StepOutput, closed: bool, force_full: bool) -> None:
        cur = self._current(state)
        if cur.prev_ts is None:
            return
        out.status = TruckStatus(
            state.asset, cur.site, cur.prev_ts, cur.prev_lat, cur.prev_lon, cur.prev_ws,
            cur.phase, cur.prev_area, cur.prev_guid,
        )
        key = (cur.site, cur.phase, cur.loader, cur.region, cur.load_start, cur.load_end, cur.dump_start,
               cur.dump_end, cur.invalid, cur.outlier_rule)
        if force_full:
            key = (*key, cur.prev_ts, cur.points)
        if key != state._row_key or closed:
            state._row_key = key
            out.in_progress = cur.in_progress_record()


def closed_sort_key(rec: CycleRecord) -> tuple:
    """Stable order for closed cycles (asset, load_start)."""
    return (rec.asset_guid, rec.load_start_ms or 0)
