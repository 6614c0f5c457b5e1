"""The cycle state machine of one truck, applied to points in event-time order.

``apply_point(state, point, area, area_guid, thresholds) -> closed cycles`` advances ``state``
(a plain mutable object; callers copy it when they need the old one) by one in-order point whose
position has already been classified (see reference.SpatialIndex).

Rules (all in event time, documented with their reasoning in docs/cycle-rules.md):

Standing is evidence-based. Dense data is read as the spec reads it: a truck stands while it
reports IDLING; a run of consecutive IDLING points at one loader / in one dump region is a
standstill there from its first to its last idle point, and the first point after it that is
WORKING (or elsewhere) is the departure. WORKING points are movement, however short the distance
between two of them looks (a winding road or a hairpin brings pings close together). Inference acts
only where data is missing: a pair of consecutive points is a *gap* when it is more than
``gap_factor`` times longer than this truck's own reporting interval while moving (the median of
its last moving pairs). Across a gap the truck's own recent straight-line speed (capped at
``gap_speed_mps``) says how long the distance between the two points took to drive; the rest of the
gap was standing: after an IDLING point (it stood there, then left), before an IDLING point (it
arrived, then stood), or, with WORKING at both ends, at the same spot (both ends within
``still_radius_m``) or in a load/dump area at one end or within reach of both ends.

Spells. A spell is a standstill at one loader (within loader_distance_m) or inside one dump
region. It starts with its first standing evidence and becomes LOAD_TIME / DUMP_TIME once it has
lasted >= load_idle_s / dump_idle_s (exactly met counts); the segment is back-dated to the spell
start. While a spell is open, a point "stays" if it is in the same area or within still_radius_m of
the spell's anchor (GPS jitter at a boundary). The first point that does not stay idle at the spell
marks a pending departure; standing again at the spell within blip_max_s (or two of the truck's
reporting intervals, when longer) cancels it (queue creep, spotting under the loader); otherwise
the spell ends at the pending departure. Entering another
load/dump area ends it at once.

Cycles. LOAD_TIME -> LOAD_TRAVEL -> DUMP_TIME -> EMPTY_TRAVEL; the next LOAD_TIME closes the
cycle at its load_start (total = next load_start - load_start). Status on close:
  * INVALID when a segment is missing or a transition is abnormal (invalid_reason): NO_DUMP
    (LOAD_TRAVEL straight back to LOAD_TIME: dumped outside any region), REPEATED_DUMP (a second
    dump in EMPTY_TRAVEL), DATA_GAP (a gap > max_gap_s with the truck elsewhere afterwards),
    SITE_CHANGE, IDLE_TIMEOUT (the truck went silent; closed by a timer);
  * else OUTLIER when one standstill during LOAD_TRAVEL/EMPTY_TRAVEL exceeded
    travel_idle_outlier_s (TRAVEL_IDLE; a standstill is one unbroken run of standing evidence),
    or, only where area_idle_outlier_s > 0 (opt-in per site), LOAD_TIME/DUMP_TIME exceeded it
    (LOAD_AREA_IDLE / DUMP_AREA_IDLE); outlier_seconds is the longest such idle;
  * else COMPLETE.
Every time the machine records lies between the previous point and the current one, so segment
times are ordered and durations are never negative.
"""

from __future__ import annotations

from operator import attrgetter

from state_machine.config import CycleThresholds
from state_machine.model import (
    ALERT_DUMP_OUTSIDE_REGION,
    ALERT_LONG_IDLE,
    ALERT_RESTRICTED_REGION,
    AT_LOADER,
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
    WAITING,
    Alert,
    CycleRecord,
    LoadVisit,
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
        # the truck's own reporting while moving: intervals (ms) and straight-line speeds (cm/s) of
        # its last moving pairs
        "iv_hist", "v_hist",
        # the approach to a loader (load visits): when the first standstill near loaders began and the
        # loaders (within queue_radius_m of every point since) it may be for; the entry into a loader's
        # bay; the estimated start of the open spell
        "ap_start", "ap_guids", "arr_ms", "arr_guid", "sp_kpi",
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
        self.iv_hist: list[int] = []
        self.v_hist: list[int] = []
        self._reset_approach()

    def _reset_approach(self) -> None:
        self.ap_start: int | None = None
        self.ap_guids: list[str] = []
        self.arr_ms: int | None = None
        self.arr_guid: str | None = None

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
        self.sp_kpi = 0  # the spell's start as an instant (between the pings around it), for load visits

    def copy(self) -> CycleState:
        """A copy sharing nothing mutable with this state."""
        new = CycleState.__new__(CycleState)
        for name in CycleState.__slots__:
            setattr(new, name, getattr(self, name))
        new.iv_hist = list(self.iv_hist)
        new.v_hist = list(self.v_hist)
        new.ap_guids = list(self.ap_guids)
        return new

    def to_list(self) -> list:
        """Field values in __slots__ order (for serialisation)."""
        return list(_SLOT_VALUES(self))

    @classmethod
    def from_list(cls, values: list) -> CycleState:
        """Inverse of to_list. A shorter list (a state saved before the load-visit fields existed) gets
        their initial values: no approach under way, the open spell's start as its estimated start."""
        new = cls.__new__(cls)
        if len(values) < len(cls.__slots__):
            new._reset_approach()
            new.sp_kpi = values[cls.__slots__.index("sp_start")]
        for name, value in zip(cls.__slots__, values, strict=False):
            setattr(new, name, value)
        if len(values) > len(cls.__slots__):
            raise ValueError(f"cycle state has {len(values)} fields, at most {len(cls.__slots__)} are known")
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


def _load_visit(s: CycleState, departure_ms: int, open_: bool) -> LoadVisit:
    """The visit of the open load spell, leaving at ``departure_ms``; the approach is then over."""
    first_stop = s.sp_kpi
    if s.ap_start is not None and s.sp_guid in s.ap_guids:
        first_stop = min(first_stop, s.ap_start)  # it stood on its approach, outside the bay, first
    arrival = min(s.arr_ms, s.sp_kpi) if s.arr_guid == s.sp_guid and s.arr_ms is not None else s.sp_kpi
    visit = LoadVisit(s.asset, s.site, s.sp_guid, s.load_start, arrival, first_stop, max(departure_ms, s.sp_kpi),
                      open_)  # fmt: skip
    s._reset_approach()
    return visit


def open_visit(s: CycleState) -> LoadVisit | None:
    """The load visit under way (LOAD_TIME, still at the loader) when a bounded input ends, up to the
    truck's last point."""
    if s.phase != LOAD_TIME or s.sp_kind != AREA_LOADER or not s.sp_confirmed or s.prev_ts is None:
        return None
    return _load_visit(s, s.prev_ts, True)


def loader_presence(s: CycleState) -> tuple[str, str, int] | None:
    """(loader, AT_LOADER or WAITING, since) of a truck's state: standing in a loader's bay (before or
    during its load), or on its approach to loaders (the nearest); None when at no loader."""
    if s.sp_kind == AREA_LOADER and (s.phase == LOAD_TIME or not s.sp_confirmed):
        return s.sp_guid, AT_LOADER, s.sp_kpi
    if s.ap_guids and s.ap_start is not None and s.sp_kind == "":
        return s.ap_guids[0], WAITING, s.ap_start
    return None


def _end_spell(s: CycleState, th: CycleThresholds, closed: list[CycleRecord],
               alerts: list[Alert] | None, depart_ms: int, visits: list[LoadVisit] | None = None) -> None:
    """The truck left the spell at ``depart_ms``: end LOAD_TIME / DUMP_TIME if it had started (a load
    adds its visit to ``visits``)."""
    if s.sp_provisional and not s.sp_confirmed:
        threshold = th.load_idle_s if s.sp_kind == AREA_LOADER else th.dump_idle_s
        if (s.sp_until - s.sp_start) >= threshold * 1000.0:
            _confirm_spell(s, th, closed, alerts)
    if s.sp_confirmed:
        depart_ms = max(depart_ms, s.sp_start)
        tentative = s.st_start is not None and s.st_start >= depart_ms  # a standstill noted while leaving
        length = (depart_ms - s.sp_start) / 1000.0
        area_limit = th.area_idle_outlier_s
        if s.phase == LOAD_TIME and s.sp_kind == AREA_LOADER:
            if visits is not None:  # the departure as an instant: between the last idle ping and this one
                visits.append(_load_visit(s, (s.sp_until + depart_ms) // 2, False))
            s.load_end = depart_ms
            s.phase = LOAD_TRAVEL
            if area_limit and length > area_limit:
                _note_outlier(s, LOAD_AREA_IDLE, length)
        elif s.phase == DUMP_TIME and s.sp_kind == AREA_DUMP:
            s.dump_end = depart_ms
            s.phase = EMPTY_TRAVEL
            if area_limit and length > area_limit:
                _note_outlier(s, DUMP_AREA_IDLE, length)
        if tentative and s.phase in _TRAVEL_PHASES:
            _credit_travel_standing(s, (s.st_until - s.st_start) / 1000.0, s.prev_lat, s.prev_lon, th, alerts)
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
    s._reset_approach()
    s.st_start = s.st_until = None
    s.site = p.site_guid
    _set_prev(s, p, area, guid)
    s.points += 1
    return closed


UNWITNESSED_EXTRA = 1.0
"""Intervals a gap with WORKING at both ends must last beyond gap_factor before a stop is inferred
inside it: no end of it witnessed the standing, and two pings dropped while a truck slows down look
alike."""
IDLE_DRIFT_RADII = 3.0
"""Two idle points on the road at most this many still radii apart are one standstill (GPS outliers)."""
MOVING_HISTORY = 5
"""Moving pairs remembered per truck for its reporting interval and speed (medians)."""
DEFAULT_INTERVAL_MS = 30_000
"""Reporting interval assumed before a truck's first moving pairs (the spec: every 10-30 s)."""
MIN_SPEED_CMS = 100
"""Floor of the speed used across a gap (1 m/s): a crawling truck's history never turns a gap into
hours of driving."""


def _note_moving_pair(s: CycleState, dt_ms: int, d: float) -> None:
    """Remember one moving pair (WORKING at both ends, displaced): its interval and speed."""
    iv, v = s.iv_hist, s.v_hist
    iv.append(dt_ms)
    v.append(int(d * 100_000 / dt_ms))
    if len(iv) > MOVING_HISTORY:
        del iv[0], v[0]


def _median(values: list[int]) -> int:
    return sorted(values)[len(values) // 2]


def _interval_ms(s: CycleState) -> int:
    """The truck's reporting interval while moving (median of its last moving pairs)."""
    return _median(s.iv_hist) if s.iv_hist else DEFAULT_INTERVAL_MS


def _longer_than(s: CycleState, dt_ms: int, intervals: float) -> bool:
    """Whether a pair lasts more than ``intervals`` of the truck's interval (the median is only
    computed when the shortest recent interval does not settle it)."""
    hist = s.iv_hist
    if not hist:
        return dt_ms > intervals * DEFAULT_INTERVAL_MS
    if dt_ms <= intervals * min(hist):
        return False
    return dt_ms > intervals * _median(hist)


def _blip_ms(s: CycleState, th: CycleThresholds) -> float:
    """How long a movement may last and still be a blip: blip_max_s, or two of the truck's own
    reporting intervals when that is longer (the first idle ping after a short move comes one
    interval after the first moving one)."""
    return max(th.blip_max_s * 1000.0, 2.0 * _interval_ms(s))


def _speed_mps(s: CycleState, th: CycleThresholds) -> float:
    """The speed a gap is driven at: the truck's own recent straight-line speed, within
    [1 m/s, gap_speed_mps] (gap_speed_mps before it has any moving history)."""
    if not s.v_hist:
        return th.gap_speed_mps
    return min(th.gap_speed_mps, max(MIN_SPEED_CMS, _median(s.v_hist)) / 100.0)


def _drive_ms(s: CycleState, d: float, th: CycleThresholds) -> int:
    """How long driving ``d`` metres (straight line) took, at _speed_mps."""
    return int(d * 1000.0 / _speed_mps(s, th))


def _gap_stop_in_area(
    s: CycleState, p: TelemetryPoint, dt_ms: int, d: float, index: SpatialIndex, th: CycleThresholds
) -> tuple[str, str, int, int] | None:
    """A stop inside a reporting gap whose two ends lie just outside a load/dump area.

    If the truck could have driven from the first point into an area and on to the second point
    and still have stood there at least the area's idle threshold, place the standing there
    (the area that leaves the longest standing wins). Returns (area, guid, from_ms, to_ms).
    """
    reach = min(_speed_mps(s, th) * dt_ms / 2000.0, 300.0)
    near_a = index.areas_near(s.prev_lat, s.prev_lon, reach)
    if not near_a:
        return None
    near_b = index.areas_near(p.latitude, p.longitude, reach)
    best: tuple[int, str, str, float] | None = None
    for key, dist_a in near_a.items():
        dist_b = near_b.get(key)
        if dist_b is None:
            continue
        standing = dt_ms - _drive_ms(s, max(dist_a + dist_b, d), th)
        threshold = th.load_idle_s if key[0] == AREA_LOADER else th.dump_idle_s
        if standing >= threshold * 1000.0 and (best is None or standing > best[0]):
            best = (standing, key[0], key[1], dist_a)
    if best is None:
        return None
    standing, kind, area_guid, dist_a = best
    start = s.prev_ts + _drive_ms(s, dist_a, th)
    return kind, area_guid, start, start + standing


def _stand(
    s: CycleState, kind: str, guid: str | None, lat: float, lon: float, from_ms: int, to_ms: int,
    provisional: bool, th: CycleThresholds, closed: list[CycleRecord], alerts: list[Alert] | None,
    visits: list[LoadVisit] | None = None, index: SpatialIndex | None = None, start_ms: int | None = None,
) -> None:
    """Attribute one piece of standing evidence [from_ms, to_ms] at a place to the open spell, a new
    spell, or (between load and dump areas) the current travel standstill. ``start_ms``: when the
    standing began as an instant, for load visits (from_ms when the evidence gives it: a dense pair puts
    it between its pings); ``index`` lets a standstill on the road start an approach to the loaders
    within queue_radius_m."""
    if start_ms is None:
        start_ms = from_ms
    blip_ms = _blip_ms(s, th)
    in_spell = s.sp_kind != "" and (
        (kind == s.sp_kind and guid == s.sp_guid)
        or approx_distance_m(s.sp_lat, s.sp_lon, lat, lon) <= th.still_radius_m
    )
    if in_spell and s.sp_provisional and (not provisional or from_ms > s.sp_until):
        # the truck really stands here, or stands again after moving: the earlier standing (placed
        # here from a reporting gap) was a queue wait outside the area; restart the spell from this one
        if s.sp_kind == AREA_LOADER and s.ap_start is None:
            s.ap_start, s.ap_guids = s.sp_kpi, [s.sp_guid]  # that wait was the approach's first stop
        s.sp_provisional = provisional
        s.sp_kpi = start_ms
        s.sp_start = s.sp_until = from_ms
        s.sp_lat, s.sp_lon = lat, lon
        s.sp_depart = None
    elif in_spell and s.sp_depart is not None and from_ms - s.sp_depart > blip_ms:
        _end_spell(s, th, closed, alerts, s.sp_depart, visits)  # standing here again, but too long after leaving
        in_spell = False
    if not in_spell and kind != AREA_TRAVEL:
        if s.sp_kind != "":
            _end_spell(s, th, closed, alerts, s.sp_depart if s.sp_depart is not None else from_ms, visits)
        if kind == AREA_DUMP:
            s._reset_approach()
        s.sp_provisional = provisional
        s.sp_kind = kind
        s.sp_guid = guid
        s.sp_kpi = start_ms
        s.sp_start = from_ms
        s.sp_until = from_ms
        s.sp_lat = lat
        s.sp_lon = lon
        in_spell = True
    if in_spell:
        if to_ms > s.sp_until:
            s.sp_until = to_ms
        if s.sp_depart is not None and to_ms > s.sp_depart:
            s.sp_depart = None  # it stood here after the pending departure: that was a blip
        if not s.sp_confirmed and not s.sp_provisional:
            threshold = th.load_idle_s if s.sp_kind == AREA_LOADER else th.dump_idle_s
            if (s.sp_until - s.sp_start) >= threshold * 1000.0:
                _confirm_spell(s, th, closed, alerts)
        return
    # on the road: a travel standstill; while the truck is leaving a load/dump spell (a pending
    # departure, which a blip could still cancel) only where it starts is noted
    leaving = s.sp_kind != "" and s.sp_depart is not None and s.phase in (LOAD_TIME, DUMP_TIME)
    if index is not None and not s.ap_guids and not leaving and s.phase not in (LOAD_TIME, DUMP_TIME):
        near = index.loaders_within(lat, lon, th.queue_radius_m)
        if near:  # a stop near loaders: the approach to one of them may begin here (a staging queue)
            s.ap_start, s.ap_guids = start_ms, near
    if s.phase not in _TRAVEL_PHASES and not leaving:
        return
    if s.st_until is not None and from_ms <= s.st_until:
        s.st_until = max(s.st_until, to_ms)  # the same unbroken standstill goes on
    else:
        s.st_start, s.st_until, s.st_alerted = from_ms, to_ms, False
    if not leaving:
        _credit_travel_standing(s, (to_ms - from_ms) / 1000.0, lat, lon, th, alerts)


def _credit_travel_standing(s: CycleState, seconds: float, lat: float, lon: float, th: CycleThresholds,
                            alerts: list[Alert] | None) -> None:
    """Count standing of the current travel standstill run; note it if it is the longest while loaded
    or an outlier (with a LONG_IDLE alert once per run)."""
    s.travel_idle_s += seconds
    run = (s.st_until - s.st_start) / 1000.0
    if s.phase == LOAD_TRAVEL and run > s.lt_stop_s:
        s.lt_stop_ms, s.lt_stop_s, s.lt_stop_lat, s.lt_stop_lon = s.st_start, run, lat, lon
    if run > th.travel_idle_outlier_s:
        _note_outlier(s, TRAVEL_IDLE, run)
        if not s.st_alerted and alerts is not None:
            s.st_alerted = True
            alerts.append(Alert(ALERT_LONG_IDLE, s.asset, s.site, s.st_start, lat, lon,
                                f"standing {run:.0f} s during {s.phase} (limit {th.travel_idle_outlier_s:g} s)"))


def _follow_approach(s: CycleState, p: TelemetryPoint, area: str, guid: str | None, gap: bool,
                     index: SpatialIndex, th: CycleThresholds) -> None:
    """Keep the approach's loaders that p is still within queue_radius_m of (none left: the approach is
    over), and note the entry into a loader's bay: between the two pings around it, or across a gap
    after driving straight to the bay's edge at the truck's own speed."""
    if s.ap_guids and not (s.sp_kind == AREA_LOADER and s.sp_guid in s.ap_guids):  # (at the loader: settled)
        keep = [g for g in s.ap_guids
                if index.distance_to_loader_m(g, p.latitude, p.longitude) <= th.queue_radius_m]
        if len(keep) != len(s.ap_guids):
            if keep:
                s.ap_guids = keep
            else:
                s.ap_start, s.ap_guids = None, []
    settled = s.sp_kind == AREA_LOADER and s.sp_guid == s.arr_guid  # it stands at the loader it entered
    if area == AREA_LOADER:
        if not settled and s.arr_guid != guid and not (s.prev_area == AREA_LOADER and s.prev_guid == guid):
            ta, tb = s.prev_ts, p.ts_ms
            if gap:
                to_edge = index.distance_to_loader_m(guid, s.prev_lat, s.prev_lon) - index.loader_distance_m
                s.arr_ms = min(tb, ta + _drive_ms(s, max(0.0, to_edge), th))
            else:
                s.arr_ms = (ta + tb) // 2
            s.arr_guid = guid
    elif s.arr_guid is not None and not settled and s.arr_guid not in s.ap_guids:
        s.arr_ms = s.arr_guid = None  # it drove through the bay without stopping there


def apply_point(
    s: CycleState, p: TelemetryPoint, area: str, guid: str | None, th: CycleThresholds,
    index: SpatialIndex | None = None, alerts: list[Alert] | None = None, visits: list[LoadVisit] | None = None,
) -> list[CycleRecord]:
    """Advance the state by one point (strictly newer than the previous one); return closed cycles.

    ``index`` (the site's spatial index) enables placing a stop that fell entirely inside a
    reporting gap at a nearby load/dump area, restricted-region alerts and load visits' approaches.
    ``alerts`` collects operator alerts and ``visits`` the load visits that end (pass None for
    speculative runs, whose outputs would not be final).
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

    ta = s.prev_ts
    tb = p.ts_ms
    dt_ms = tb - ta
    d = approx_distance_m(s.prev_lat, s.prev_lon, p.latitude, p.longitude)
    near = d <= th.still_radius_m
    if dt_ms > th.max_gap_s * 1000.0 and not near:
        return _start_over(s, p, area, guid, DATA_GAP, closed)

    # 1. The pair's standing evidence (see the module docstring) and the departure it implies.
    a_idle = s.prev_ws == IDLING
    b_idle = p.work_state_id == IDLING
    gap = _longer_than(s, dt_ms, th.gap_factor)
    if index is not None:
        _follow_approach(s, p, area, guid, gap, index, th)
    depart_ms = tb  # dense data: the first point that does not stay idle is the departure
    prev_area, prev_guid, prev_lat, prev_lon = s.prev_area, s.prev_guid, s.prev_lat, s.prev_lon
    # idle at both ends of a dense pair in one place (the same loader or dump region, or on the road
    # within GPS noise of each other) is one unbroken standstill, as the spec reads consecutive idle points
    same_place = b_idle and area == prev_area and guid == prev_guid and (
        area != AREA_TRAVEL or d <= IDLE_DRIFT_RADII * th.still_radius_m)
    if a_idle and (near or same_place):
        # idle at both ends at one spot, silent at the spot where it idled, or (on the road) leaving:
        # a standstill lasts until the first point that does not continue it, as a load lasts until
        # the first WORKING point; a spell's idle threshold counts idle points only
        until = tb if b_idle or gap or prev_area == AREA_TRAVEL else ta
        _stand(s, prev_area, prev_guid, prev_lat, prev_lon, ta, until, False, th, closed, alerts, visits, index)
    elif a_idle or b_idle:
        # standing the gap leaves besides driving (none in dense data), split when idle at both ends
        spare = max(0, dt_ms - _drive_ms(s, d, th)) if gap else 0
        at_a = spare // 2 if b_idle else spare
        if a_idle:
            until = ta + at_a
            if gap:
                depart_ms = until
            elif prev_area == AREA_TRAVEL and not b_idle:
                until = tb  # a standstill on the road lasts until the first point that moved on
            _stand(s, prev_area, prev_guid, prev_lat, prev_lon, ta, until, False, th, closed, alerts, visits, index)
        if b_idle:
            arrive = tb - (spare - at_a if a_idle else spare)
            # dense pings: it came to rest between them (the spec's reading starts the standing at b)
            _stand(s, area, guid, p.latitude, p.longitude, arrive, tb, False, th, closed, alerts, visits, index,
                   arrive if gap else (ta + tb) // 2)
    elif gap and _longer_than(s, dt_ms, th.gap_factor + UNWITNESSED_EXTRA):
        # WORKING at both ends of a (longer) gap: a stop that no ping witnessed
        standing = dt_ms - _drive_ms(s, d, th)
        if standing > 0:
            half_drive = (dt_ms - standing) // 2
            from_ms, to_ms, provisional = (ta, tb, False) if near else (ta + half_drive, tb - half_drive, False)
            place = (prev_area, prev_guid, prev_lat, prev_lon)
            if prev_area == AREA_TRAVEL and area != AREA_TRAVEL:
                # it drove into the area during the gap; whether it stood there or outside (a queue)
                # no ping says: provisional, real standing there replaces it
                place = (area, guid, p.latitude, p.longitude)
                provisional = True
            elif not near:
                place = (AREA_TRAVEL, None, (prev_lat + p.latitude) / 2, (prev_lon + p.longitude) / 2)
            if (index is not None and place[0] == AREA_TRAVEL
                    and standing >= 1000.0 * min(th.load_idle_s, th.dump_idle_s)):
                detour = _gap_stop_in_area(s, p, dt_ms, d, index, th)
                if detour is not None:  # both ends within reach of a load/dump area: it stood there
                    kind, area_guid, from_ms, to_ms = detour
                    place = (kind, area_guid, (prev_lat + p.latitude) / 2, (prev_lon + p.longitude) / 2)
                    provisional = True
            _stand(s, *place, from_ms, to_ms, provisional, th, closed, alerts, visits, index)
            depart_ms = to_ms
    if not (a_idle or b_idle or near):
        _note_moving_pair(s, dt_ms, d)  # after the gap test, which uses the history before this pair

    # 2. Distance travelled (standing jitter is not distance; a departing truck is travelling).
    if not near:
        phase = s.phase
        if phase == LOAD_TRAVEL or (phase == LOAD_TIME and s.sp_depart is not None):
            s.lt_dist += d
        elif phase == EMPTY_TRAVEL or (phase == DUMP_TIME and s.sp_depart is not None):
            s.et_dist += d

    # 3. Does p stay idle at the open spell, or is the truck leaving it?
    if s.sp_kind != "":
        stays = (area == s.sp_kind and guid == s.sp_guid) or approx_distance_m(
            s.sp_lat, s.sp_lon, p.latitude, p.longitude
        ) <= th.still_radius_m
        # a spell placed from a gap (provisional) is left only by leaving the area: driving on in it
        # may still end in real standing there, which replaces it
        if not stays if s.sp_provisional else not (stays and b_idle):
            if s.sp_depart is None:
                s.sp_depart = max(s.sp_until, min(depart_ms, tb))
            entered_other_area = area in (AREA_LOADER, AREA_DUMP) and not stays
            if entered_other_area or tb - s.sp_depart > _blip_ms(s, th):
                _end_spell(s, th, closed, alerts, s.sp_depart, visits)

    _set_prev(s, p, area, guid)
    s.points += 1
    return closed
