"""From motion to telemetry lines: the ping schedule of interval and on-change devices, GPS noise,
and the degradations of delivery (drops, duplicates, disorder, outages with backlogs, malformed
lines). :class:`Runner` is the discrete-event loop every public entry point drives."""

from __future__ import annotations

import heapq
import json
import math
import random
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

from state_machine.model import HAUL_TRUCK, IDLING, LOADER, WORKING, CycleRecord, ServedVisit
from state_machine.reference import ReferenceData
from workbench.simulator.fleet import Dozer, LoaderUnit, Proc, Truck, Wanderer
from workbench.simulator.geometry import XY, build_site
from workbench.simulator.motion import MOVE, STAND, STAND_REPORTED, Leg
from workbench.simulator.spec import SimulationSpec

AssetTuple = tuple[str, str, str, float | None, float | None]



def _position(t: int, t0: int, t1: int, kind: int, payload: Any) -> XY:
    """Where a leg puts its process at time t."""
    if kind == MOVE:
        path, d0, d1 = payload
        return path.at(d0 + (d1 - d0) * (t - t0) / (t1 - t0))
    return payload

_ISO_CACHE: dict[int, str] = {}


def _iso(ts_ms: int) -> str:
    minute = ts_ms // 60_000
    prefix = _ISO_CACHE.get(minute)
    if prefix is None:
        if len(_ISO_CACHE) > 4096:
            _ISO_CACHE.clear()
        prefix = datetime.fromtimestamp(minute * 60, tz=UTC).strftime("%Y-%m-%dT%H:%M:")
        _ISO_CACHE[minute] = prefix
    rest = ts_ms - minute * 60_000
    return f"{prefix}{rest // 1000:02d}.{rest % 1000:03d}Z"


def _malformed(rng: random.Random, guid: str, site: str, iso: str, lat: float, lon: float, ws: int) -> str:
    """One broken variant of a message (bad JSON, missing field, out-of-range value, ...)."""
    msg: dict[str, Any] = {"asset_guid": guid, "site_guid": site, "timestamp": iso,
                           "latitude": round(lat, 7), "longitude": round(lon, 7), "work_state_id": ws}
    kind = rng.randrange(10)
    if kind == 0:
        text = json.dumps(msg)
        return text[: rng.randrange(5, len(text) - 5)]
    if kind == 1:
        del msg[rng.choice(list(msg))]
    elif kind == 2:
        msg["work_state_id"] = 7
    elif kind == 3:
        msg["latitude"] = 123.0
    elif kind == 4:
        msg["longitude"] = -200.5
    elif kind == 5:
        msg["timestamp"] = rng.choice(("not-a-time", "2024-13-45T25:61:00.000Z", "", "1705300000"))
    elif kind == 6:
        return rng.choice(("[1, 2, 3]", "null", "\"text\"", "{}", ""))
    elif kind == 7:
        msg["latitude"] = "abc"
    elif kind == 8:
        msg["asset_guid"] = ""
    else:
        msg["work_state_id"] = None
    return json.dumps(msg)


class Runner:
    """The discrete-event loop shared by simulate(), iter_deliveries() and write_simulation()."""

    def __init__(self, spec: SimulationSpec, truth: Callable[[CycleRecord], None] | None,
                 visit_truth: Callable[[ServedVisit], None] | None = None) -> None:
        self.spec = spec
        self.sites = [build_site(spec, k) for k in range(spec.sites)]
        self.assets: list[AssetTuple] = []
        self.initial: list[tuple[Proc, list[Leg], int]] = []
        order = 0
        for site in self.sites:
            s = site.guid
            for ld in site.loaders:
                lat, lon = site.frame.to_ll(*ld.pos)
                self.assets.append((ld.guid, s, LOADER, lat, lon))
            for n in range(spec.trucks):
                guid = f"{site.code}-HT-{n + 1:03d}"
                self.assets.append((guid, s, HAUL_TRUCK, None, None))
                truck = Truck(spec, site, guid, order, n % len(site.loaders), False, truth, visit_truth)
                if n < spec.glitch_trucks:
                    end = spec.end_ms if spec.end_ms is not None else spec.start_ms + 86_400_000
                    truck.glitch_at = random.Random(f"{spec.seed}/{site.index}/{guid}/glitch").uniform(spec.start_ms, end)
                order += 1
                legs, t1 = truck.start(spec.start_ms)
                self.initial.append((truck, legs, t1))
            for n in range(spec.non_trucks):
                if n % 2 == 0:
                    guid = f"{site.code}-WT-{n // 2 + 1:02d}"
                    self.assets.append((guid, s, "WATER_TRUCK", None, None))
                    proc: Proc = Wanderer(spec, site, guid, order)
                else:
                    guid = f"{site.code}-DZ-{n // 2 + 1:02d}"
                    self.assets.append((guid, s, "DOZER", None, None))
                    proc = Dozer(spec, site, guid, order)
                order += 1
                self.initial.append((proc, [], spec.start_ms))
            if spec.non_trucks > 0:
                for ld in site.loaders:
                    self.initial.append((LoaderUnit(spec, site, ld.guid, order, ld.pos), [], spec.start_ms))
                    order += 1
            for n in range(spec.unknown_assets):
                guid = f"{site.code}-UNK-{n + 1:03d}"
                ghost = Truck(spec, site, guid, order, n % len(site.loaders), True, None)
                order += 1
                legs, t1 = ghost.start(spec.start_ms)
                self.initial.append((ghost, legs, t1))
        self.reference = ReferenceData(
            asset_types={a[0]: a[2] for a in self.assets},
            sites={site.guid: site.reference for site in self.sites},
        )
        self._heap: list[tuple[int, int, str]] = []
        self._seq = 0
        sp = spec
        self._dup = sp.duplicates
        self._drop = sp.drop
        self._disorder_ms = sp.disorder_s * 1000.0
        self._malf = sp.malformed
        self._sigma = sp.gps_sigma_m
        self._outp = sp.gps_outlier_p
        self._late = sp.late_p
        self._late_ms = (sp.late_s[0] * 1000.0, sp.late_s[1] * 1000.0)
        self._late_tail = sp.late_tail_p
        self._late_tail_ms = (sp.late_tail_s[0] * 1000.0, sp.late_tail_s[1] * 1000.0)
        self._glitch_ms = int(sp.glitch_offset_s * 1000)

    # -- pings

    def _emit_legs(self, proc: Proc, legs: list[Leg]) -> None:
        if self.spec.device == "on_change":
            self._emit_on_change(proc, legs)
            return
        sparse = self.spec.sparse_idle
        stop = proc.stop_ms
        prng = proc.prng
        interval = proc.interval_ms
        lo, hi = 1.0 - self.spec.ping_jitter, 1.0 + self.spec.ping_jitter
        t = proc.next_ping
        for t0, t1, kind, payload, ws in legs:
            if kind == STAND_REPORTED:
                t = self._reported_stand(proc, t0, t1, payload, ws, interval * lo, interval * hi)
                continue
            if kind == STAND and sparse:
                t = t0 + int(prng.uniform(60_000, 120_000))
                while t < t1 and t < stop:
                    self._ping(proc, t, payload[0], payload[1], ws)
                    t += int(prng.uniform(60_000, 120_000))
                t = t1 + int(prng.uniform(1000, interval))
                continue
            if t < t0:
                t = t0
            while t < t1:
                if t >= stop:
                    proc.next_ping = t
                    return
                self._ping(proc, t, *_position(t, t0, t1, kind, payload), ws)
                t += int(interval * prng.uniform(lo, hi))
        proc.next_ping = t

    def _emit_on_change(self, proc: Proc, legs: list[Leg]) -> None:
        """A device that logs on change: about every second while moving, every 1-3 min while
        standing (the first standing row right at the stop for half the devices, 1-3 min later for the
        others); its work state comes from speed (standing = IDLING, moving = WORKING)."""
        stop = proc.stop_ms
        prng = proc.prng
        late_first_idle = proc.late_first_idle
        t = proc.next_ping
        for t0, t1, kind, payload, ws in legs:
            if kind == STAND_REPORTED:
                t = self._reported_stand(proc, t0, t1, payload, IDLING if proc.moves else ws, 60_000, 180_000)
                continue
            if kind == STAND:
                t = t0 + (int(prng.uniform(60_000, 180_000)) if late_first_idle else int(prng.uniform(0, 2000)))
                while t < t1 and t < stop:
                    self._ping(proc, t, payload[0], payload[1], IDLING if proc.moves else ws)
                    t += int(prng.uniform(60_000, 180_000))
                t = t1 + int(prng.uniform(0, 1000))  # the first moving row, right at the departure
                continue
            if t < t0:
                t = t0
            while t < t1:
                if t >= stop:
                    proc.next_ping = t
                    return
                self._ping(proc, t, *_position(t, t0, t1, kind, payload), WORKING)
                t += int(prng.uniform(800, 1500))
        proc.next_ping = t

    def _reported_stand(self, proc: Proc, t0: int, t1: int, pos: XY, ws: int, lo_ms: float, hi_ms: float) -> int:
        """A stop reported at both ends (motion.STAND_REPORTED): idle rows at t0 and at t1 and the
        device's own rows between; returns the time of the first row after it (moving off)."""
        prng = proc.prng
        t = t0
        while t < t1:
            self._ping(proc, t, pos[0], pos[1], ws)
            t += int(prng.uniform(lo_ms, hi_ms))
        self._ping(proc, t1, pos[0], pos[1], ws)
        return t1 + int(prng.uniform(1000, max(lo_ms, 1001)))

    def _ping(self, proc: Proc, ts: int, x: float, y: float, ws: int) -> None:
        if ts >= proc.stop_ms:
            return
        prng = proc.prng
        sigma = self._sigma
        if sigma:
            x += prng.gauss(0.0, sigma)
            y += prng.gauss(0.0, sigma)
        if self._outp and prng.random() < self._outp:
            r, a = prng.uniform(10, 20), prng.uniform(0, 2 * math.pi)
            x += r * math.cos(a)
            y += r * math.sin(a)
        frame = proc.site.frame
        lat = frame.lat0 + y / frame.m_lat
        lon = frame.lon0 + x / frame.m_lon
        iso = _iso(ts)
        line = (f'{{"asset_guid": "{proc.guid}", "site_guid": "{proc.site.guid}", "timestamp": "{iso}", '
                f'"latitude": {lat:.7f}, "longitude": {lon:.7f}, "work_state_id": {ws}}}')
        delivery = ts
        drng = proc.drng
        if self._drop and drng.random() < self._drop:
            return
        if proc.outage is not None:
            while ts >= proc.outage[1]:
                s = proc.outage[1] + int(drng.expovariate(proc.outage_rate))
                proc.outage = (s, s + int(drng.uniform(300_000, 1_800_000)))
                proc.backlog = 0
            if ts >= proc.outage[0]:
                if self.spec.outage_loss:
                    return
                proc.backlog += 1
                delivery = proc.outage[1] + proc.backlog * 10
                if proc.glitch_at is not None and self.spec.glitch_before_outage:
                    proc.glitch_at = None  # the stray, sent live as the outage begins, before its backlog
                    self._push(ts, line.replace(iso, _iso(ts + self._glitch_ms)))
        if proc.glitch_at is not None and not self.spec.glitch_before_outage and ts >= proc.glitch_at:
            proc.glitch_at = None  # the stray, sent right after this point with its position and state
            self._push(delivery + 1, line.replace(iso, _iso(ts + self._glitch_ms)))
        if delivery == ts:  # sent live (a backlog is sent in order when the outage ends)
            if self._disorder_ms:
                delivery += int(drng.random() * self._disorder_ms)
            if proc.dead_zone is not None and (relayed := self._through_dead_zone(proc, proc.dead_zone, ts)) != ts:
                delivery = relayed  # sent in order with the rest of its dead zone
            elif self._late and proc.lrng.random() < self._late:
                delivery += int(proc.lrng.uniform(*self._late_ms))
            elif self._late_tail and proc.lrng.random() < self._late_tail:
                delivery += int(proc.lrng.uniform(*self._late_tail_ms))
        self._push(delivery, line)
        if self._dup and drng.random() < self._dup:
            self._push(delivery + int(drng.uniform(0, 40_000)), line)
        if self._malf and drng.random() < self._malf:
            self._push(delivery, _malformed(drng, proc.guid, proc.site.guid, iso, lat, lon, ws))

    def _through_dead_zone(self, proc: Proc, zone: tuple[int, int, int], ts: int) -> int:
        """When a ping sent live at ``ts`` arrives: ``ts``, or after the dead zone (``zone``: the device's
        current one) it is in, in order."""
        while ts >= zone[1]:
            zone = proc.dead_zone = proc.next_dead_zone(self.spec, zone[1])
            proc.dead_zone_backlog = 0
        if ts < zone[0]:
            return ts
        proc.dead_zone_backlog += 1
        return zone[2] + proc.dead_zone_backlog * 10

    def _push(self, delivery: int, line: str) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (delivery, self._seq, line))

    # -- main loop

    def run(self) -> Iterator[tuple[int, str]]:
        events: list[tuple[int, int, Proc]] = []
        for proc, legs, t1 in self.initial:
            self._emit_legs(proc, legs)
            heapq.heappush(events, (t1, proc.order, proc))
        self.initial = []
        heap = self._heap
        pop = heapq.heappop
        while events:
            t, _, proc = pop(events)
            while heap and heap[0][0] < t:
                d, _, line = pop(heap)
                yield d, line
            legs, nxt = proc.step(t)
            self._emit_legs(proc, legs)
            if nxt is not None:
                heapq.heappush(events, (nxt, proc.order, proc))
        while heap:
            d, _, line = pop(heap)
            yield d, line


