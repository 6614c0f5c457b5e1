"""The cycle state machine of one truck, applied to points in event-time order.

``apply_point(state, point, area, area_guid, thresholds) -> closed cycles`` advances ``state``
(a plain mutable object; callers copy it when they need the old one) by one in-order point whose
position has already been classified (see reference.SpatialIndex).

Rules (all in event time, documented in docs/cycle-rules.md):

Standing time is inferred from *pairs* of consecutive points, not by counting idle points, so
that sparse devices work. For a pair (a, b) with gap dt and displacement d, the truck needed about
d / gap_speed_mps to drive d and stood the rest, ``dt - d / gap_speed_mps`` (nothing if <= 0):
  * d <= still_radius_m: it stood the whole gap at a (GPS jitter; also a WORKING device whose
    truck does not move: engine running at a loader, a WORKING blip);
  * a IDLING: it stood at a first, then drove to b;
  * b IDLING (a moving): it drove first and stood at b (it arrived about d / gap_speed_mps after a);
  * both WORKING: it stood somewhere in the middle of the gap (a stop that falls entirely inside
    a reporting gap); the standing is placed at a, or at b when only b is in a load/dump area.

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

from operator import attrgetter

from state_machine.config import CycleThresholds
from state_machine.model import (
    ALERT_DUMP_OUTSIDE_REGION,
    ALERT_LONG_IDLE,
    ALERT_RESTRICTED_REGION,
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
    Alert,
    CycleRecord,
    TelemetryPoint,
    ms_to_iso,
)
from state_machine.reference import AREA_DUMP, AREA_LOADER, AREA_TRAVEL, SpatialIndex, approx_distance_m

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
        "lt_stop_ms", "lt_stop_s", "lt_stop_lat", "lt_stop_lon",  # longest standstill while loaded
        # the previous applied point
        "prev_ts", "prev_lat", "prev_lon", "prev_ws", "prev_area", "prev_guid", "prev_zone",
        # the open spell (standstill at a loader or in a dump region)
        "sp_kind", "sp_guid", "sp_start", "sp_until", "sp_lat", "sp_lon", "sp_confirmed", "sp_depart",
        "sp_provisional",
        # the current travel standstill run
        "st_start", "st_until", "st_alerted",
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
        self.prev_zone: str | None = None
        self._reset_spell()
        self.st_start: int | None = None
        self.st_until: int | None = None
        self.st_alerted = False

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
        self.lt_stop_ms: int | None = None
        self.lt_stop_s = 0.0
        self.lt_stop_lat = 0.0
        self.lt_stop_lon = 0.0

    def _reset_spell(self) -> None:
        self.sp_kind = ""
        self.sp_guid: str | None = None
        self.sp_start = 0
        self.sp_until = 0
        self.sp_lat = 0.0
        self.sp_lon = 0.0
        self.sp_confirmed = False
        self.sp_depart: int | None = None
        self.sp_provisional = False  # placed by _gap_stop_in_area; real standing there replaces it

    def copy(self) -> CycleState:
        """A shallow copy (all fields are immutable values)."""
        new = CycleState.__new__(CycleState)
        for name in CycleState.__slots__:
            setattr(new, name, getattr(self, name))
        return new

    def to_list(self) -> list:
        """Field values in __slots__ order (for serialisation)."""
        return list(_SLOT_VALUES(self))

    @classmethod
    def from_list(cls, values: list) -> CycleState:
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


_SLOT_VALUES = attrgetter(*CycleState.__slots__)
"""All CycleState field values as a tuple, in __slots__ order (one C call)."""


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


def _confirm_spell(s: CycleState, th: CycleThresholds, closed: list[CycleRecord],
                   alerts: list[Alert] | None) -> None:
    """The open spell reached its idle threshold: start LOAD_TIME or DUMP_TIME."""
    s.sp_confirmed = True
    if s.sp_kind == AREA_LOADER:
        if s.phase != SEG_NONE:
            if s.phase == LOAD_TRAVEL and alerts is not None:
                where = "" if s.lt_stop_ms is None else f"; longest stop while loaded {s.lt_stop_s:.0f} s here"
                alerts.append(Alert(
                    ALERT_DUMP_OUTSIDE_REGION, s.asset, s.site,
                    s.lt_stop_ms if s.lt_stop_ms is not None else s.sp_start,
                    s.lt_stop_lat if s.lt_stop_ms is not None else None,
                    s.lt_stop_lon if s.lt_stop_ms is not None else None,
                    f"loaded at {s.loader} from {ms_to_iso(s.load_start)} and back at a loader without "
                    f"dumping in any dump region{where}", str(s.load_start)))
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


def _end_spell(s: CycleState, th: CycleThresholds, closed: list[CycleRecord],
               alerts: list[Alert] | None) -> None:
    """The truck left the spell at s.sp_depart: end LOAD_TIME / DUMP_TIME if it had started."""
    if s.sp_provisional and not s.sp_confirmed:
        threshold = th.load_idle_s if s.sp_kind == AREA_LOADER else th.dump_idle_s
        if (s.sp_until - s.sp_start) >= threshold * 1000.0:
            _confirm_spell(s, th, closed, alerts)
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


def _set_prev(s: CycleState, p: TelemetryPoint, area: str, guid: str | None) -> None:
    s.prev_ts = p.ts_ms
    s.prev_lat = p.latitude
    s.prev_lon = p.longitude
    s.prev_ws = p.work_state_id
    s.prev_area = area
    s.prev_guid = guid


def _start_over(
    s: CycleState, p: TelemetryPoint, area: str, guid: str | None, reason: str, closed: list[CycleRecord]
) -> list[CycleRecord]:
    """Begin afresh at p (first point, another site, or after a data gap): close the open cycle
    INVALID with ``reason`` at the previous point and forget the spell and standstill."""
    if s.prev_ts is not None:
        rec = close_cycle(s, s.prev_ts, reason)
        if rec is not None:
            closed.append(rec)
    s._reset_spell()
    s.st_start = s.st_until = None
    s.site = p.site_guid
    _set_prev(s, p, area, guid)
    s.points += 1
    return closed


def _gap_stop_in_area(
    s: CycleState, p: TelemetryPoint, dt: float, d: float, index: SpatialIndex, th: CycleThresholds
) -> tuple[str, str, int, int] | None:
    """A stop inside a reporting gap whose two ends lie just outside a load/dump area.

    If the truck could have driven from the first point into an area and on to the second point
    and still have stood there at least the area's idle threshold, place the standing there
    (the area that leaves the longest standing wins). Returns (area, guid, from_ms, to_ms).
    """
    reach = min(dt * th.gap_speed_mps / 2.0, 300.0)
    near_a = index.areas_near(s.prev_lat, s.prev_lon, reach)
    if not near_a:
        return None
    near_b = index.areas_near(p.latitude, p.longitude, reach)
    best: tuple[float, str, str, float] | None = None
    for key, dist_a in near_a.items():
        dist_b = near_b.get(key)
        if dist_b is None:
            continue
        standing = dt - max(dist_a + dist_b, d) / th.gap_speed_mps
        threshold = th.load_idle_s if key[0] == AREA_LOADER else th.dump_idle_s
        if standing >= threshold and (best is None or standing > best[0]):
            best = (standing, key[0], key[1], dist_a)
    if best is None:
        return None
    standing, kind, area_guid, dist_a = best
    start = s.prev_ts + int(dist_a / th.gap_speed_mps * 1000.0)
    return kind, area_guid, start, start + int(standing * 1000.0)


def apply_point(
    s: CycleState, p: TelemetryPoint, area: str, guid: str | None, th: CycleThresholds,
    index: SpatialIndex | None = None, alerts: list[Alert] | None = None,
) -> list[CycleRecord]:
    """Advance the state by one point (strictly newer than the previous one); return closed cycles.

    ``index`` (the site's spatial index) enables placing a stop that fell entirely inside a
    reporting gap at a nearby load/dump area, and restricted-region alerts. ``alerts`` collects
    operator alerts (pass None for speculative runs, whose alerts would not be final).
    """
    if index is not None and index.has_zones:
        zone = index.zone_at(p.latitude, p.longitude)
        if zone is not None and zone != s.prev_zone and alerts is not None:
            alerts.append(Alert(ALERT_RESTRICTED_REGION, s.asset, p.site_guid, p.ts_ms, p.latitude, p.longitude,
                                f"entered region {zone}", zone))
        s.prev_zone = zone
    closed: list[CycleRecord] = []
    if s.prev_ts is None or p.site_guid != s.site:
        return _start_over(s, p, area, guid, SITE_CHANGE, closed)

    prev_ts = s.prev_ts
    dt = (p.ts_ms - prev_ts) / 1000.0
    d = approx_distance_m(s.prev_lat, s.prev_lon, p.latitude, p.longitude)
    near = d <= th.still_radius_m
    if dt > th.max_gap_s and not near:
        return _start_over(s, p, area, guid, DATA_GAP, closed)

    # The standing interval of the pair and where it happened (see the module docstring).
    blip_ms = th.blip_max_s * 1000.0
    stand_from = stand_to = 0
    at_p = False
    if near:
        stand_from, stand_to = prev_ts, p.ts_ms
    else:
        standing_ms = int((dt - d / th.gap_speed_mps) * 1000.0)
        if standing_ms > 0:
            if s.prev_ws == IDLING:
                stand_from, stand_to = prev_ts, prev_ts + standing_ms
            elif p.work_state_id == IDLING:
                stand_from, stand_to, at_p = p.ts_ms - standing_ms, p.ts_ms, True
            else:  # both moving: it stood somewhere in between, in whichever end is a load/dump area
                half_drive = (p.ts_ms - prev_ts - standing_ms) // 2
                stand_from, stand_to = prev_ts + half_drive, p.ts_ms - half_drive
                at_p = s.prev_area == AREA_TRAVEL and area != AREA_TRAVEL
    if at_p:
        where_area, where_guid, where_lat, where_lon = area, guid, p.latitude, p.longitude
    else:
        where_area, where_guid, where_lat, where_lon = s.prev_area, s.prev_guid, s.prev_lat, s.prev_lon
    by_detour = False
    if (index is not None and where_area == AREA_TRAVEL and area == AREA_TRAVEL
            and s.prev_ws != IDLING and p.work_state_id != IDLING
            and stand_to - stand_from >= 1000.0 * min(th.load_idle_s, th.dump_idle_s)):
        detour = _gap_stop_in_area(s, p, dt, d, index, th)
        if detour is not None:
            where_area, where_guid, stand_from, stand_to = detour
            by_detour = True
            where_lat, where_lon = (s.prev_lat + p.latitude) / 2, (s.prev_lon + p.longitude) / 2

    # 1. Attribute the standing interval to the open spell, a new spell, or a travel standstill.
    if stand_to > stand_from:
        in_spell = s.sp_kind != "" and (
            (where_area == s.sp_kind and where_guid == s.sp_guid)
            or approx_distance_m(s.sp_lat, s.sp_lon, where_lat, where_lon) <= th.still_radius_m
        )
        if not in_spell and where_area != AREA_TRAVEL:
            if s.sp_kind != "":
                _end_spell(s, th, closed, alerts)
            s.sp_provisional = by_detour
            s.sp_kind = where_area
            s.sp_guid = where_guid
            s.sp_start = stand_from
            s.sp_until = stand_from
            s.sp_lat = where_lat
            s.sp_lon = where_lon
            in_spell = True
        if in_spell:
            if s.sp_provisional and (not by_detour or stand_from > s.sp_until):
                # the truck really stands here, or stands again after moving: the earlier standing
                # was a queue wait outside the area; restart the spell from this standing
                s.sp_provisional = by_detour
                s.sp_start, s.sp_until = stand_from, stand_from
                s.sp_lat, s.sp_lon = where_lat, where_lon
            if stand_to > s.sp_until:
                s.sp_until = stand_to
            if not s.sp_confirmed and not s.sp_provisional:
                threshold = th.load_idle_s if s.sp_kind == AREA_LOADER else th.dump_idle_s
                if (s.sp_until - s.sp_start) >= threshold * 1000.0:
                    _confirm_spell(s, th, closed, alerts)
        elif s.phase in _TRAVEL_PHASES:
            if s.st_until is not None and stand_from - s.st_until <= blip_ms:
                s.st_until = max(s.st_until, stand_to)
            else:
                s.st_start, s.st_until, s.st_alerted = stand_from, stand_to, False
            s.travel_idle_s += (stand_to - stand_from) / 1000.0
            run = (s.st_until - s.st_start) / 1000.0
            if s.phase == LOAD_TRAVEL and run > s.lt_stop_s:
                s.lt_stop_ms, s.lt_stop_s, s.lt_stop_lat, s.lt_stop_lon = s.st_start, run, where_lat, where_lon
            if run > th.travel_idle_outlier_s:
                _note_outlier(s, TRAVEL_IDLE, run)
                if not s.st_alerted and alerts is not None:
                    s.st_alerted = True
                    alerts.append(Alert(ALERT_LONG_IDLE, s.asset, s.site, s.st_start, where_lat, where_lon,
                                        f"standing {run:.0f} s during {s.phase} (limit {th.travel_idle_outlier_s:g} s)"))

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
                _end_spell(s, th, closed, alerts)

    _set_prev(s, p, area, guid)
    s.points += 1
    return closed
