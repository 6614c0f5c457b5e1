"""The processes that move on a site: haul trucks (one full cycle planned per step, loaders serving
one truck at a time, first come first served, with the ground truth of each closed cycle), water
trucks, dozers and reporting loaders."""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from state_machine.config import CycleThresholds
from state_machine.model import (
    COMPLETE,
    EMPTY_TRAVEL,
    IDLING,
    INVALID,
    LOAD_TRAVEL,
    OUTLIER,
    WORKING,
    CycleRecord,
    LoadVisit,
    ServedVisit,
)
from workbench.simulator.geometry import BENCH, FLAT, HAIRPIN, RAMP, XY, LoaderGeo, Polyline, SiteGeo, polar
from workbench.simulator.motion import STAND, STAND_REPORTED, Leg, drive, entry_time, kmh
from workbench.simulator.spec import SimulationSpec

TRAVEL_IDLE_OUTLIER_S = 600.0
LOADER_RADIUS_M = 50.0
"""The loader's bay: a truck within this distance of a loader is at it (the engine's loader_distance_m)."""
LOAD_IDLE_MS = int(CycleThresholds().load_idle_s * 1000)
DUMP_IDLE_MS = int(CycleThresholds().dump_idle_s * 1000)
EXACT, SHORT = "exact", "short"  # threshold stops (SimulationSpec.threshold_stops)
CLOSE_GUARD_MS = 240_000  # data kept after a closing load_start near the end of the run (sparse devices: 1-3 min)



@dataclass
class OpenCycle:
    loader: str
    load_start: int
    load_end: int
    dump: str | None = None
    dump_start: int | None = None
    dump_end: int | None = None
    travel_stands: list[tuple[int, int]] = field(default_factory=list)  # (start_ms, duration_ms)
    load_dist: float = 0.0
    empty_dist: float = 0.0
    queue_s: float | None = None


class Proc:
    """Something that sends telemetry: a plan step producing legs, plus the ping schedule."""

    order: int
    guid: str
    site: SiteGeo
    stop_ms: float

    def __init__(self, spec: SimulationSpec, site: SiteGeo, guid: str, order: int) -> None:
        self.order = order
        self.guid = guid
        self.site = site
        self.stop_ms = math.inf if spec.end_ms is None else spec.end_ms
        key = f"{spec.seed}/{site.index}/{guid}"
        self.rng = random.Random(key + "/motion")
        self.prng = random.Random(key + "/ping")
        self.drng = random.Random(key + "/degrade")
        self.lrng = random.Random(key + "/late")  # late delivery: its own stream, the rest stays as without it
        self.glitch_at: float | None = None  # when the device sends its one stray point (see SimulationSpec)
        lo, hi = spec.ping_interval_s
        self.interval_ms = self.prng.uniform(lo, hi) * 1000.0
        self.late_first_idle = self.prng.random() < 0.5  # on_change devices only
        self.moves = True  # trucks and wanderers; a loader or dozer reports its own work state
        self.next_ping = spec.start_ms + int(self.prng.uniform(0, self.interval_ms))
        rate = spec.outages_per_day / 86_400_000.0
        self.outage_rate = rate
        self.outage: tuple[int, int] | None = None
        self.backlog = 0
        if rate > 0:
            s = spec.start_ms + int(self.drng.expovariate(rate))
            self.outage = (s, s + int(self.drng.uniform(300_000, 1_800_000)))
        self.dead_zone_rate = spec.dead_zones_per_day / 86_400_000.0
        self.dead_zone: tuple[int, int, int] | None = None  # (start, end, when its pings arrive)
        self.dead_zone_backlog = 0
        if self.dead_zone_rate > 0:
            self.dead_zone = self.next_dead_zone(spec, spec.start_ms)

    def next_dead_zone(self, spec: SimulationSpec, after: int) -> tuple[int, int, int]:
        """The device's next dead zone after ``after``: (start, end, when its pings arrive), in ms."""
        lrng = self.lrng
        start = after + int(lrng.expovariate(self.dead_zone_rate))
        end = start + int(lrng.uniform(*spec.dead_zone_s) * 1000)
        return start, end, end + int(lrng.uniform(*spec.dead_zone_delay_s) * 1000)

    def step(self, t: int) -> tuple[list[Leg], int | None]:  # pragma: no cover - abstract
        raise NotImplementedError


class Truck(Proc):
    def __init__(self, spec: SimulationSpec, site: SiteGeo, guid: str, order: int, loader: int,
                 ghost: bool, truth: Callable[[CycleRecord], None] | None,
                 visit_truth: Callable[[ServedVisit], None] | None = None) -> None:
        super().__init__(spec, site, guid, order)
        self.spec = spec
        self.ghost = ghost
        self.truth = truth
        self.visit_truth = visit_truth
        self.loader = loader
        self.dump = self.rng.randrange(len(site.dumps))
        self.factor = self.rng.uniform(0.9, 1.1)
        self.end_ms = spec.end_ms
        self.cycle: OpenCycle | None = None
        self.v_empty = self._empty_speeds()
        # stops last long enough for two idle pings of an interval device to span the idle threshold
        # (whatever the device reports, so that reporting options never change the motion); only the
        # threshold stops of spec.threshold_stops are shorter, and they are reported at both ends
        self.min_stop_ms = 2.0 * (1.0 + spec.ping_jitter) * self.interval_ms + 22_000

    def _empty_speeds(self) -> dict[str, float]:
        rng, spec = self.rng, self.spec
        return {FLAT: kmh(rng, 30, 45, self.factor), RAMP: rng.uniform(*spec.empty_ramp_mps) * self.factor,
                HAIRPIN: rng.uniform(3.0, 4.0), BENCH: rng.uniform(4.0, 6.0)}

    def _loaded_speeds(self) -> dict[str, float]:
        rng, spec = self.rng, self.spec
        ramp = rng.uniform(*spec.loaded_ramp_mps) * self.factor
        return {FLAT: kmh(rng, 20, 30, self.factor), RAMP: ramp, HAIRPIN: min(ramp, rng.uniform(2.0, 2.5)),
                BENCH: rng.uniform(2.5, 4.0)}

    def _stop_ms(self, lo_s: float, hi_s: float) -> int:
        return int(max(self.rng.uniform(lo_s, hi_s) * 1000, self.min_stop_ms))

    def _threshold_stop(self, short_too: bool) -> str | None:
        """EXACT (a stop exactly at the idle threshold), SHORT (shorter; dumps only) or None (an
        ordinary stop); draws nothing unless the spec asks for threshold stops (other families keep
        their random streams)."""
        share = self.spec.threshold_stops
        if not share:
            return None
        r = self.rng.random()
        if r < share:
            return EXACT
        return SHORT if short_too and r < 2 * share else None

    def start(self, t0: int) -> tuple[list[Leg], int]:
        """Start somewhere on the empty return road to the assigned loader."""
        site = self.site
        path = site.dumps[self.dump].road.reversed() + site.loaders[self.loader].road
        _, rest = path.split(self.rng.random() * path.length)
        return drive(rest, t0, self.v_empty, slow_start=False, slow_end=False)

    def _travel(self, path: Polyline, t: int, v: dict[str, float], legs: list[Leg], idle: bool,
                skip_start: float, skip_end: float, slow_start: bool, slow_end: bool) -> int:
        """Drive a haul, with an optional long idle somewhere on the road part (clear of every loader
        circle and dump region, where it would be a load or a dump)."""
        cyc = self.cycle
        if idle and path.length > skip_start + skip_end + 10:
            for _ in range(20):
                d = self.rng.uniform(skip_start, path.length - skip_end)
                if self.site.clear_of_areas(path.at(d)):
                    break
            else:
                d = None
            if d is not None:
                p1, p2 = path.split(d)
                _, t = drive(p1, t, v, slow_start, True, legs)
                dur = int(self.rng.uniform(660, 1200) * 1000)
                legs.append((t, t + dur, STAND, p1.pts[-1], IDLING))
                if cyc is not None:
                    cyc.travel_stands.append((t, dur))
                t += dur
                _, t = drive(p2, t, v, True, slow_end, legs)
                return t
        _, t = drive(path, t, v, slow_start, slow_end, legs)
        return t

    def step(self, t: int) -> tuple[list[Leg], int | None]:
        """Arrived (moving) at the approach point of the assigned loader at t: plan one full cycle."""
        if t >= self.stop_ms:
            return [], None
        spec, rng, site = self.spec, self.rng, self.site
        ld = site.loaders[self.loader]
        legs: list[Leg] = []
        v_app = self.v_empty
        _, t_direct = drive(ld.to_spot, t, v_app, slow_start=False)
        queue_stands: list[tuple[int, int]] = []
        if self.ghost or ld.free_at <= t_direct:
            _, t_s = drive(ld.to_spot, t, v_app, slow_start=False, legs=legs)
            load_start = t_s
        else:
            t_leave = self._queue(ld, t, v_app, legs)
            _, t_s = drive(Polyline([ld.queue, ld.spot]), t_leave, 2.0, False, False, legs)
            # the load starts at its first rest in the bay; standing before that, outside it, is travel
            stands = [(t0, t1, payload) for t0, t1, kind, payload, _ws in legs if kind == STAND]
            inside = [t0 for t0, _t1, xy in stands if math.dist(xy, ld.pos) <= LOADER_RADIUS_M]
            load_start = inside[0] if inside else t_s
            queue_stands = [(t0, t1 - t0) for t0, t1, _xy in stands if t0 < load_start]
        if self._threshold_stop(short_too=False) == EXACT and load_start == t_s:  # not after a wait in the bay
            load_end = t_s + LOAD_IDLE_MS
            legs.append((t_s, load_end, STAND_REPORTED, ld.spot, IDLING))
        else:
            load_end = t_s + self._stop_ms(60, 240)
            legs.append((t_s, load_end, STAND, ld.spot, IDLING))
        queue_s = None
        if not self.ghost:
            queue_s = self._visit_truth(ld, legs, load_start, load_end)
            ld.free_at = load_end
        # close the previous cycle at this load_start
        if self.cycle is not None and not self.ghost:
            self.cycle.travel_stands.extend(queue_stands)
            self.cycle.empty_dist += ld.to_spot.length
            self._close(load_start)
        self.cycle = OpenCycle(ld.guid, load_start, load_end, queue_s=queue_s)
        cyc = self.cycle
        # loaded haul
        if rng.random() < spec.reassign_p * 2 and len(site.dumps) > 1:
            self.dump = rng.choice([k for k in range(len(site.dumps)) if k != self.dump])
        d = site.dumps[self.dump]
        v_loaded = self._loaded_speeds()
        self.v_empty = self._empty_speeds()
        bad = rng.random() < spec.bad_dumps
        idle_loaded = rng.random() < spec.long_idles
        idle_empty = rng.random() < spec.long_idles
        out_of_bay = Polyline([ld.spot, ld.approach]) + ld.road.reversed()
        if bad:
            part = d.road
            for _ in range(20):  # tip on the road, clear of every load and dump area
                part, _rest = d.road.split(rng.uniform(0.3, 0.7) * d.road.length)
                if site.clear_of_areas(part.pts[-1]):
                    break
            stop_pt = part.pts[-1]
            haul = out_of_bay + part
            t = self._travel(haul, load_end, v_loaded, legs, idle_loaded, 250.0, 150.0, True, True)
            tip_end = t + self._stop_ms(25, 90)
            legs.append((t, tip_end, STAND, stop_pt, IDLING))
            cyc.travel_stands.append((t, tip_end - t))
            back = part.reversed()
        else:
            spot = polar(d.centre, d.spot_radius * math.sqrt(rng.random()), rng.uniform(0, 2 * math.pi))
            into = Polyline([d.road.pts[-1], spot])
            haul = out_of_bay + d.road + into
            t = self._travel(haul, load_end, v_loaded, legs, idle_loaded, 250.0, 250.0, True, True)
            stop = self._threshold_stop(short_too=True)
            if stop is None:
                tip_end = t + self._stop_ms(25, 90)
                legs.append((t, tip_end, STAND, spot, IDLING))
            else:
                tip_end = t + (DUMP_IDLE_MS if stop == EXACT else int(rng.uniform(5_000, DUMP_IDLE_MS - 100)))
                legs.append((t, tip_end, STAND_REPORTED, spot, IDLING))
            if stop == SHORT:  # too short to be read as a dump: the cycle has none (NO_DUMP)
                bad = True
            else:
                cyc.dump, cyc.dump_start, cyc.dump_end = d.guid, t, tip_end
            back = into.reversed() + d.road.reversed()
        cyc.load_dist = haul.length
        # empty haul to the (maybe new) loader
        if rng.random() < spec.reassign_p and len(site.loaders) > 1:
            self.loader = rng.choice([k for k in range(len(site.loaders)) if k != self.loader])
        elif not self.ghost:
            self.loader = self._dispatch(tip_end, back.length)
        nld = site.loaders[self.loader]
        back = back + nld.road
        t_next = self._travel(back, tip_end, self.v_empty, legs, idle_empty, 250.0, 250.0, True, False)
        if bad:
            cyc.load_dist += back.length
        else:
            cyc.empty_dist += back.length
        return legs, t_next

    def _queue(self, ld: LoaderGeo, t: int, v: dict[str, float], legs: list[Leg]) -> int:
        """Drive from the approach point to the loader's queue spot and stand there until the loader is
        free; return when this truck leaves it for the loading spot."""
        _, t_q = drive(Polyline([ld.approach, ld.queue]), t, v, slow_start=False, legs=legs)
        t_leave = max(t_q, ld.free_at) + int(self.rng.uniform(3000, 10000))
        legs.append((t_q, t_leave, STAND, ld.queue, IDLING))
        return t_leave

    def _visit_truth(self, ld: LoaderGeo, legs: list[Leg], load_start: int, departure: int) -> float:
        """Report this visit's truth: its first stop (at the queue spot or the loading spot), its entry
        into the bay (for good: the last one before it stands in the bay), and its service start (the
        previous truck's departure if it stopped while that one was still served, else its arrival or
        that departure, whichever came later); return its queue."""
        first_stop = next(t0 for t0, _t1, kind, _payload, _ws in legs if kind in (STAND, STAND_REPORTED))
        arrival = entry_time(legs, ld.pos, LOADER_RADIUS_M)
        assert arrival is not None, "every visit ends at the loading spot, inside the bay"
        previous_departure = ld.free_at
        if first_stop < previous_departure:
            service_start = previous_departure
            queue_s = (previous_departure - first_stop) / 1000.0
        else:
            service_start, queue_s = max(arrival, previous_departure), 0.0
        if self.visit_truth is not None and (self.end_ms is None or load_start <= self.end_ms):
            open_at_end = self.end_ms is not None and departure > self.end_ms
            visit = LoadVisit(self.guid, self.site.guid, ld.guid, load_start, arrival, first_stop,
                              min(departure, self.end_ms) if open_at_end else departure, open_at_end)
            self.visit_truth(ServedVisit(visit, service_start, queue_s))
        return queue_s

    def _dispatch(self, t: int, to_hub_m: float) -> int:
        """Keep the assigned loader unless its expected queue exceeds 3 min; then take the soonest free."""
        loaders = self.site.loaders
        v = self.v_empty[FLAT]

        def ready(k: int) -> float:
            eta = t + (to_hub_m + loaders[k].road.length) / v * 1000.0
            return max(eta, loaders[k].free_at)

        cur = self.loader
        eta_cur = t + (to_hub_m + loaders[cur].road.length) / v * 1000.0
        if loaders[cur].free_at - eta_cur <= 180_000:
            return cur
        return min(range(len(loaders)), key=lambda k: (ready(k), k != cur, k))

    def _close(self, next_load_start: int) -> None:
        cyc = self.cycle
        assert cyc is not None
        end = self.end_ms
        if end is not None:
            if next_load_start > end:
                return
            if next_load_start > end - CLOSE_GUARD_MS:
                self.stop_ms = max(self.stop_ms, next_load_start + CLOSE_GUARD_MS)
        if self.truth is None:
            return
        s = cyc.load_start
        rec = CycleRecord(
            asset_guid=self.guid,
            site_guid=self.site.guid,
            cycle_status=COMPLETE,
            current_segment=EMPTY_TRAVEL,
            loader_asset_guid=cyc.loader,
            load_start_ms=s,
            load_end_ms=cyc.load_end,
            cycle_end_ms=next_load_start,
            load_seconds=(cyc.load_end - s) / 1000.0,
            total_cycle_seconds=(next_load_start - s) / 1000.0,
            travel_idle_seconds=sum(dur for _, dur in cyc.travel_stands) / 1000.0,
            queue_seconds=cyc.queue_s,
        )
        if cyc.dump is None:
            rec.cycle_status = INVALID
            rec.invalid_reason = "NO_DUMP"
            rec.current_segment = LOAD_TRAVEL
            rec.load_travel_distance_m = round(cyc.load_dist, 1)
        else:
            assert cyc.dump_start is not None and cyc.dump_end is not None
            rec.dump_region_guid = cyc.dump
            rec.dump_start_ms, rec.dump_end_ms = cyc.dump_start, cyc.dump_end
            rec.load_travel_seconds = (cyc.dump_start - cyc.load_end) / 1000.0
            rec.dump_seconds = (cyc.dump_end - cyc.dump_start) / 1000.0
            rec.empty_travel_seconds = (next_load_start - cyc.dump_end) / 1000.0
            rec.load_travel_distance_m = round(cyc.load_dist, 1)
            rec.empty_travel_distance_m = round(cyc.empty_dist, 1)
            hits = []
            area_limit = self.spec.area_idle_outlier_s
            if area_limit and rec.load_seconds is not None and rec.load_seconds > area_limit:
                hits.append((s, "LOAD_AREA_IDLE", rec.load_seconds))
            if area_limit and rec.dump_seconds > area_limit:
                hits.append((cyc.dump_start, "DUMP_AREA_IDLE", rec.dump_seconds))
            for start, dur in cyc.travel_stands:
                if dur / 1000.0 > TRAVEL_IDLE_OUTLIER_S:
                    hits.append((start, "TRAVEL_IDLE", dur / 1000.0))
            if hits:
                _, rule, secs = min(hits)
                rec.cycle_status, rec.outlier_rule, rec.outlier_seconds = OUTLIER, rule, secs
        self.truth(rec)


class Wanderer(Proc):
    """A water truck (or similar) driving between road ends with stops."""

    def __init__(self, spec: SimulationSpec, site: SiteGeo, guid: str, order: int) -> None:
        super().__init__(spec, site, guid, order)
        self.roads = [ld.road for ld in site.loaders] + [d.road for d in site.dumps]
        self.at = self.rng.randrange(len(self.roads))

    def step(self, t: int) -> tuple[list[Leg], int | None]:
        if t >= self.stop_ms:
            return [], None
        rng = self.rng
        nxt = rng.randrange(len(self.roads))
        path = self.roads[self.at].reversed() + self.roads[nxt]
        self.at = nxt
        legs, t1 = drive(path, t, kmh(rng, 15, 25, 1.0))
        t2 = t1 + int(rng.uniform(30, 300) * 1000)
        legs.append((t1, t2, STAND, path.pts[-1], IDLING))
        return legs, t2


class Dozer(Proc):
    """A dozer pushing material around inside one dump region."""

    def __init__(self, spec: SimulationSpec, site: SiteGeo, guid: str, order: int) -> None:
        super().__init__(spec, site, guid, order)
        self.dump = site.dumps[self.rng.randrange(len(site.dumps))]
        self.pos = self.dump.centre
        self.moves = False

    def step(self, t: int) -> tuple[list[Leg], int | None]:
        if t >= self.stop_ms:
            return [], None
        rng, d = self.rng, self.dump
        target = polar(d.centre, (d.spot_radius + 10) * math.sqrt(rng.random()), rng.uniform(0, 2 * math.pi))
        legs, t1 = drive(Polyline([self.pos, target]), t, 1.5, False, False)
        self.pos = target
        t2 = t1 + int(rng.uniform(20, 120) * 1000)
        legs.append((t1, t2, STAND, target, rng.choice((IDLING, WORKING))))
        return legs, t2


class LoaderUnit(Proc):
    """A loader reporting from its position: digging (WORKING) and waiting (IDLING) spells."""

    def __init__(self, spec: SimulationSpec, site: SiteGeo, guid: str, order: int, pos: XY) -> None:
        super().__init__(spec, site, guid, order)
        self.pos = pos
        self.moves = False

    def step(self, t: int) -> tuple[list[Leg], int | None]:
        if t >= self.stop_ms:
            return [], None
        rng = self.rng
        t1 = t + int(rng.uniform(60, 300) * 1000)
        t2 = t1 + int(rng.uniform(30, 600) * 1000)
        p = polar(self.pos, rng.uniform(0, 4), rng.uniform(0, 2 * math.pi))
        return [(t, t1, STAND, p, WORKING), (t1, t2, STAND, p, IDLING)], t2


