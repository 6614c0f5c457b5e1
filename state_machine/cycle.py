"""The cycle state machine of one truck, applied to points in event-time order.

``apply_point(state, point, area, area_guid, thresholds) -> closed cycles`` advances ``state``
(a plain mutable object; callers copy it when they need the old one) by one in-order point whose
position has already been classified (see reference.SpatialIndex).

Rules (all in event time, documented in docs/cycle-rules.md):

Standing time is inferred from *pairs* of consecutive points, not by counting idle points, so
that sparse devices work. For a pair (a, b) with gap dt and displacement d:
  * a IDLING and d <= still_radius_m: the truck stood the whole gap (dt);
  * a IDLING and d >  still_radius_m: it stood dt - d / gap_speed_mps (>= 0): the rest of the
    gap is what it needed to drive d;
  * a WORKING and d <= still_radius_m: it stood the whole gap (the device says WORKING but the
    truck did not move: engine running at a loader, a WORKING blip);
  * otherwise it was moving.
The standing time of a pair belongs to where ``a`` is. When a moving point ``a`` is followed by
an IDLING point ``b`` far away, the truck arrived at ``b`` about d / gap_speed_mps after ``a``
and stood the rest of the gap: that "arrival credit" counts towards a spell opened at ``b``
(the spell still starts at ``b``, its first idle point) and towards a travel standstill.

Spells. A spell is a standstill at one loader (within loader_distance_m) or inside one dump
region. It starts at the first point of its first standing pair (the first idle point). It
becomes LOAD_TIME / DUMP_TIME once it has lasted >= load_idle_s / dump_idle_s (exactly met
counts); the segment is back-dated to the spell start. While a spell is open, a point "stays" if
it is in the same area or within still_radius_m of the spell's anchor (GPS jitter at a boundary).
The first WORKING point (or the first point away from the spell) marks a pending departure; a
WORKING point that has not moved since the previous point only moves the pending departure
forward (devices that report WORKING while the engine runs at a standstill). If the truck stands
idle again at the spell (same area or anchor) within blip_max_s, the movement was a blip (queue
creep, spotting, GPS jump) and the spell goes on. Otherwise the spell ends at the pending departure: load_end /
dump_end is the first WORKING (moving) point after the standing. Entering another load/dump area
ends it at once.

Cycles. LOAD_TIME -> LOAD_TRAVEL -> DUMP_TIME -> EMPTY_TRAVEL; the next LOAD_TIME closes the
cycle at its load_start (total = next load_start - load_start). Status on close:
  * INVALID when a segment is missing or a transition is abnormal (invalid_reason): NO_DUMP
    (LOAD_TRAVEL straight back to LOAD_TIME: dumped outside any region), REPEATED_DUMP (a second
    dump in EMPTY_TRAVEL), DATA_GAP (a gap > max_gap_s with the truck elsewhere afterwards),
    SITE_CHANGE, IDLE_TIMEOUT (the truck went silent; closed by a timer);
  * else OUTLIER when one standstill during LOAD_TRAVEL/EMPTY_TRAVEL exceeded
    travel_idle_outlier_s (TRAVEL_IDLE) or LOAD_TIME/DUMP_TIME exceeded area_idle_outlier_s
    (LOAD_AREA_IDLE / DUMP_AREA_IDLE); outlier_seconds is the longest such idle;
  * else COMPLETE.
Travel standstills separated by less than blip_max_s of movement count as one.
"""

from __future__ import annotations

from state_machine.config import CycleThresholds
from state_machine.model import (
    COMPLETE,
    DUMP_TIME,
    EMPTY_TRAVEL,
    IDLING,
    INPROGRESS,
    INVALID,
    LOAD_TIME,
    LOAD_TRAVEL,
    OUTLIER,
    SEG_NONE,
    CycleRecord,
    TelemetryPoint,
)
from state_machine.reference import AREA_DUMP, AREA_LOADER, approx_distance_m

NO_DUMP = "NO_DUMP"
REPEATED_DUMP = "REPEATED_DUMP"
DATA_GAP = "DATA_GAP"
SITE_CHANGE = "SITE_CHANGE"
IDLE_TIMEOUT = "IDLE_TIMEOUT"
TRAVEL_IDLE = "TRAVEL_IDLE"
LOAD_AREA_IDLE = "LOAD_AREA_IDLE"
DUMP_AREA_IDLE = "DUMP_AREA_IDLE"

_TRAVEL_PHASES = (LOAD_TRAVEL, EMPTY_TRAVEL)


class CycleState:
    """Everything the state machine remembers about one truck (small, flat, serialisable)."""

    __slots__ = (
        "asset", "site", "phase",
        # the open cycle
        "loader", "region", "load_start", "load_end", "dump_start", "dump_end",
        "invalid", "outlier_rule", "outlier_s", "travel_idle_s", "points", "lt_dist", "et_dist",
        # the previous applied point
        "prev_ts", "prev_lat", "prev_lon", "prev_ws", "prev_area", "prev_guid", "prev_credit",
        # the open spell (standstill at a loader or in a dump region)
        "sp_kind", "sp_guid", "sp_start", "sp_until", "sp_credit", "sp_lat", "sp_lon", "sp_confirmed",
        "sp_depart",
        # the current travel standstill run
        "st_start", "st_until",
    )

    def __init__(self, asset: str, site: str) -> None:
        self.asset = asset
        self.site = site
        self.phase = SEG_NONE
        self._reset_cycle()
        self.prev_ts: int | None = None
        self.prev_lat = 0.0
        self.prev_lon = 0.0
        self.prev_ws = 0
        self.prev_area = ""
        self.prev_guid: str | None = None
        self.prev_credit = 0
        self._reset_spell()
        self.st_start: int | None = None
        self.st_until: int | None = None

    def _reset_cycle(self) -> None:
        self.loader: str | None = None
        self.region: str | None = None
        self.load_start: int | None = None
        self.load_end: int | None = None
        self.dump_start: int | None = None
        self.dump_end: int | None = None
        self.invalid: str | None = None
        self.outlier_rule: str | None = None
        self.outlier_s = 0.0
        self.travel_idle_s = 0.0
        self.points = 0
        self.lt_dist = 0.0
        self.et_dist = 0.0

    def _reset_spell(self) -> None:
        self.sp_kind = ""
        self.sp_guid: str | None = None
        self.sp_start = 0
        self.sp_until = 0
        self.sp_credit = 0
        self.sp_lat = 0.0
        self.sp_lon = 0.0
        self.sp_confirmed = False
        self.sp_depart: int | None = None

    def copy(self) -> "CycleState":
        """A shallow copy (all fields are immutable values)."""
        new = CycleState.__new__(CycleState)
        for name in CycleState.__slots__:
            setattr(new, name, getattr(self, name))
        return new

    def to_list(self) -> list:
        """Field values in __slots__ order (for serialisation)."""
        return [getattr(self, name) for name in CycleState.__slots__]

    @classmethod
    def from_list(cls, values: list) -> "CycleState":
        """Inverse of to_list."""
        new = cls.__new__(cls)
        for name, value in zip(cls.__slots__, values, strict=True):
            setattr(new, name, value)
        return new

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CycleState) and self.to_list() == other.to_list()

    def in_progress_record(self) -> CycleRecord:
        """The open cycle (or the truck's state before its first load) as a temporary-table row."""
        rec = CycleRecord(
            asset_guid=self.asset,
            site_guid=self.site,
            cycle_status=INPROGRESS,
            current_segment=self.phase,
            loader_asset_guid=self.loader,
            dump_region_guid=self.region,
            load_start_ms=self.load_start,
            load_end_ms=self.load_end,
            dump_start_ms=self.dump_start,
            dump_end_ms=self.dump_end,
            invalid_reason=self.invalid,
            outlier_rule=self.outlier_rule,
            outlier_seconds=self.outlier_s if self.outlier_rule else None,
            travel_idle_seconds=round(self.travel_idle_s, 3),
            point_count=self.points,
            load_travel_distance_m=round(self.lt_dist, 1),
            empty_travel_distance_m=round(self.et_dist, 1),
            last_event_ms=self.prev_ts,
        )
        _fill_durations(rec)
        return rec


def _secs(start: int | None, end: int | None) -> float | None:
    return None if start is None or end is None else (end - start) / 1000.0


def _fill_durations(rec: CycleRecord) -> None:
    rec.load_seconds = _secs(rec.load_start_ms, rec.load_end_ms)
    rec.load_travel_seconds = _secs(rec.load_end_ms, rec.dump_start_ms)
    rec.dump_seconds = _secs(rec.dump_start_ms, rec.dump_end_ms)
    rec.empty_travel_seconds = _secs(rec.dump_end_ms, rec.cycle_end_ms)
    rec.total_cycle_seconds = _secs(rec.load_start_ms, rec.cycle_end_ms)


def close_cycle(s: CycleState, end_ms: int, reason: str | None) -> CycleRecord | None:
    """Close the open cycle at ``end_ms`` (None when no cycle is open) and reset it.

    ``reason`` forces INVALID (DATA_GAP, SITE_CHANGE, IDLE_TIMEOUT, NO_DUMP); otherwise the status
    follows from the segments seen and the outlier rules.
    """
    if s.phase == SEG_NONE or s.load_start is None:
        return None
    rec = s.in_progress_record()
    rec.cycle_end_ms = end_ms
    invalid = s.invalid or reason
    if invalid is None and (s.load_end is None or s.dump_start is None or s.dump_end is None):
        invalid = NO_DUMP if s.dump_start is None else "INCOMPLETE"
    if invalid is not None:
        rec.cycle_status = INVALID
        rec.invalid_reason = invalid
    elif s.outlier_rule is not None:
        rec.cycle_status = OUTLIER
    else:
        rec.cycle_status = COMPLETE
    rec.current_segment = s.phase
    _fill_durations(rec)
    s._reset_cycle()
    s.phase = SEG_NONE
    return rec


def _note_outlier(s: CycleState, rule: str, seconds: float) -> None:
    if seconds > s.outlier_s:
        s.outlier_rule = rule
        s.outlier_s = round(seconds, 3)


def _confirm_spell(s: CycleState, th: CycleThresholds, closed: list[CycleRecord]) -> None:
    """The open spell reached its idle threshold: start LOAD_TIME or DUMP_TIME."""
    s.sp_confirmed = True
    if s.sp_kind == AREA_LOADER:
        if s.phase != SEG_NONE:
            rec = close_cycle(s, s.sp_start, NO_DUMP if s.phase == LOAD_TRAVEL else None)
            if rec is not None:
                closed.append(rec)
        s.phase = LOAD_TIME
        s.loader = s.sp_guid
        s.load_start = s.sp_start
    elif s.phase == LOAD_TRAVEL:
        s.phase = DUMP_TIME
        s.region = s.sp_guid
        s.dump_start = s.sp_start
    elif s.phase == EMPTY_TRAVEL and s.invalid is None:
        s.invalid = REPEATED_DUMP


def _end_spell(s: CycleState, th: CycleThresholds) -> None:
    """The truck left the spell at s.sp_depart: end LOAD_TIME / DUMP_TIME if it had started."""
    if s.sp_confirmed and s.sp_depart is not None:
        length = (s.sp_depart - s.sp_start) / 1000.0
        if s.phase == LOAD_TIME and s.sp_kind == AREA_LOADER:
            s.load_end = s.sp_depart
            s.phase = LOAD_TRAVEL
            if length > th.area_idle_outlier_s:
                _note_outlier(s, LOAD_AREA_IDLE, length)
        elif s.phase == DUMP_TIME and s.sp_kind == AREA_DUMP:
            s.dump_end = s.sp_depart
            s.phase = EMPTY_TRAVEL
            if length > th.area_idle_outlier_s:
                _note_outlier(s, DUMP_AREA_IDLE, length)
    s._reset_spell()


def _set_prev(s: CycleState, p: TelemetryPoint, area: str, guid: str | None, credit: int = 0) -> None:
    s.prev_credit = credit
    s.prev_ts = p.ts_ms
    s.prev_lat = p.latitude
    s.prev_lon = p.longitude
    s.prev_ws = p.work_state_id
    s.prev_area = area
    s.prev_guid = guid


def apply_point(
    s: CycleState, p: TelemetryPoint, area: str, guid: str | None, th: CycleThresholds
) -> list[CycleRecord]:
    """Advance the state by one point (strictly newer than the previous one); return closed cycles."""
    closed: list[CycleRecord] = []
    if s.prev_ts is None:
        s.site = p.site_guid
        _set_prev(s, p, area, guid)
        s.points += 1
        return closed
    if p.site_guid != s.site:
        rec = close_cycle(s, s.prev_ts, SITE_CHANGE)
        if rec is not None:
            closed.append(rec)
        s._reset_spell()
        s.st_start = s.st_until = None
        s.site = p.site_guid
        _set_prev(s, p, area, guid)
        s.points += 1
        return closed

    prev_ts = s.prev_ts
    dt = (p.ts_ms - prev_ts) / 1000.0
    d = approx_distance_m(s.prev_lat, s.prev_lon, p.latitude, p.longitude)
    near = d <= th.still_radius_m

    if dt > th.max_gap_s and not near:
        rec = close_cycle(s, prev_ts, DATA_GAP)
        if rec is not None:
            closed.append(rec)
        s._reset_spell()
        s.st_start = s.st_until = None
        _set_prev(s, p, area, guid)
        s.points += 1
        return closed

    # Standing time of the pair: at prev's spot (still) or, when a moving truck arrives at an idle
    # point, just before p (arrival credit, carried with p and added to a spell opened at p).
    credit = 0
    if near:
        still = dt
    elif s.prev_ws == IDLING:
        still = max(0.0, dt - d / th.gap_speed_mps)
    else:
        still = 0.0
        if p.work_state_id == IDLING:
            credit = int(round(max(0.0, dt - d / th.gap_speed_mps) * 1000.0))
    still_until = prev_ts + int(round(still * 1000.0))
    blip_ms = th.blip_max_s * 1000.0

    # 1. Attribute the standing time of the pair (prev -> p) to where prev was.
    if still > 0.0 or s.prev_credit:
        prev_in_spell = s.sp_kind != "" and (
            (s.prev_area == s.sp_kind and s.prev_guid == s.sp_guid)
            or approx_distance_m(s.sp_lat, s.sp_lon, s.prev_lat, s.prev_lon) <= th.still_radius_m
        )
        if not prev_in_spell and s.prev_area in (AREA_LOADER, AREA_DUMP):
            if s.sp_kind != "":
                _end_spell(s, th)
            s.sp_kind = s.prev_area
            s.sp_guid = s.prev_guid
            s.sp_start = prev_ts
            s.sp_until = prev_ts
            s.sp_credit = s.prev_credit
            s.sp_lat = s.prev_lat
            s.sp_lon = s.prev_lon
            prev_in_spell = True
        if prev_in_spell:
            if still_until > s.sp_until:
                s.sp_until = still_until
            if not s.sp_confirmed:
                threshold = th.load_idle_s if s.sp_kind == AREA_LOADER else th.dump_idle_s
                if (s.sp_until - s.sp_start + s.sp_credit) >= threshold * 1000.0:
                    _confirm_spell(s, th, closed)
        elif s.phase in _TRAVEL_PHASES:
            if s.st_until is not None and prev_ts - s.prev_credit - s.st_until <= blip_ms:
                s.st_until = still_until
            else:
                s.st_start, s.st_until = prev_ts - s.prev_credit, still_until
            s.travel_idle_s += still + s.prev_credit / 1000.0
            run = (s.st_until - s.st_start) / 1000.0
            if run > th.travel_idle_outlier_s:
                _note_outlier(s, TRAVEL_IDLE, run)

    # 2. Distance travelled (standing jitter is not distance; a departing truck is travelling).
    if not near:
        phase = s.phase
        if phase == LOAD_TRAVEL or (phase == LOAD_TIME and s.sp_depart is not None):
            s.lt_dist += d
        elif phase == EMPTY_TRAVEL or (phase == DUMP_TIME and s.sp_depart is not None):
            s.et_dist += d

    # 3. Does p stay at the open spell, or is the truck leaving it?
    if s.sp_kind != "":
        stays = (area == s.sp_kind and guid == s.sp_guid) or approx_distance_m(
            s.sp_lat, s.sp_lon, p.latitude, p.longitude
        ) <= th.still_radius_m
        if stays and (p.work_state_id == IDLING or near):
            s.sp_depart = None  # still standing at the spell (a blip, if there was one, is over)
        if not (stays and p.work_state_id == IDLING):
            if s.sp_depart is None:
                s.sp_depart = p.ts_ms  # first WORKING point after the standing (or first point away)
            entered_other_area = area in (AREA_LOADER, AREA_DUMP) and not stays
            if entered_other_area or p.ts_ms - s.sp_depart > blip_ms:
                _end_spell(s, th)

    _set_prev(s, p, area, guid, credit)
    s.points += 1
    return closed
