"""How late each site's points arrive, and how long its trucks hold points for late ones.

Measured per site on the records in arrival order (``state_machine.stream`` feeds every valid record
through ``StreamLateness.observe``), deterministically, so the Flink parse step and the offline replay
get the same figures:

* **Lateness**: how far behind its truck's timeline a point arrives (a point that comes after later
  points of its own truck: a retrying gateway, a dead zone). Only this needs a hold. The timeline is
  the truck's newest time as the engine keeps it (state_machine.truck): a point far ahead of it (a
  clock stray, a live point sent before a backlog) is set aside until the timeline reaches it, the
  stream passes it by the lead hold, or the truck sends nothing else; a lone one that the timeline
  passes is dropped (the engine rejects it as CLOCK_JUMP). A truck's backlog that arrives in order
  after an outage is behind the stream but not behind its timeline, and a copy of a point that arrives
  while the engine still keeps its burst apart (max_disorder_s of stream time after it arrived) is a
  duplicate: neither needs a hold.
* **Arrival lag**: the stream's time minus the point's event time (backlogs included): how late data
  arrives, for dashboards (``udfs.parse`` gauges, ``workbench.replay`` summary).

Both are kept as log-bucket histograms (8 buckets per doubling, from 1 s) whose weights decay by the
stream's event time (half-life ``DECAY_HALF_LIFE_MS``). The **hold** a site asks for is
``HOLD_MARGIN`` x the largest lateness seen with a decayed weight of at least ``HOLD_SUPPORT`` points
(the upper edge of its bucket): it rises as soon as a second point shows a larger lateness, falls
slowly once the lateness is gone, and one stray point (a clock that jumped back) never moves it. Until
a site's stream has run ``WARMUP_MS`` of event time nothing is known about its lateness and the hold
asked for is ``HOLD_MAX`` (a job's start or restore, a new site: nothing is lost meanwhile, closed
cycles only wait longer). The engine clamps the hold to its site's ``max_disorder_s`` ..
``max_hold_s`` (``state_machine.truck``).
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections import deque
from typing import NamedTuple

from state_machine.config import CycleThresholds
from state_machine.truck import LEAD_MAX
from state_machine.watermark import FORGET_AFTER

HOLD_MAX = 2**62
"""The hold asked for while a site's lateness is not known yet: as long as the engine allows."""
BUCKETS_PER_DOUBLING = 8
N_BUCKETS = 17 * BUCKETS_PER_DOUBLING + 1  # 1 s .. 2^17 s (36 h); bucket 0 holds everything up to 1 s
DECAY_HALF_LIFE_MS = 3_600_000
HOLD_SUPPORT = 2.0
"""Decayed weight (in points) a lateness needs before the hold covers it: one stray never counts."""
HOLD_MARGIN = 1.5
"""The hold covers this many times the lateness seen (the largest lateness yet to come is unknown)."""
WARMUP_MS = 900_000
"""Event time a site's stream must have run before its measured hold is used (HOLD_MAX until then)."""
LAG_SAMPLE_MASK = 7
"""One point in LAG_SAMPLE_MASK + 1 (of the stream) is counted, for all of them, in the arrival lag."""
RECHECK_MS = 60_000
"""Stream time between two re-evaluations of a hold for decay."""
LEAD_HOLD_MS = int(CycleThresholds().lead_hold_s * 1000)
"""The engine's lead_hold_s (its default: the parse step knows no per-site thresholds)."""
MAX_SITES = 1024
"""Sites measured apart; the points of further sites (a flood of made-up site ids) share one estimate."""
_RENORMALISE_AT = 64.0  # half-lives since the reference time: rescale the weights (float range)


_UPPER_MS = tuple(math.ceil(1000.0 * 2.0 ** (b / BUCKETS_PER_DOUBLING)) for b in range(N_BUCKETS))


def bucket_of(ms: int) -> int:
    """The histogram bucket of a duration: the first whose upper edge is at least ``ms`` (0: up to 1 s)."""
    return min(bisect_left(_UPPER_MS, ms), N_BUCKETS - 1)


def bucket_upper_ms(bucket: int) -> int:
    """The largest duration in a bucket, in ms."""
    return _UPPER_MS[bucket]


class DecayingHistogram:
    """Log-bucket histogram whose weights halve every DECAY_HALF_LIFE_MS of stream time. Weights are
    stored scaled by 2^((t - ref) / half-life), t the stream time to the minute (one power per minute,
    not per sample), so decay costs nothing per sample; ``now_ms`` must never go back."""

    __slots__ = ("weights", "ref_ms", "top", "_weight", "_weight_until")

    def __init__(self) -> None:
        self.weights = [0.0] * N_BUCKETS
        self.ref_ms: int | None = None
        self.top = -1  # highest non-empty bucket
        self._weight = 1.0
        self._weight_until = -(2**63)  # the stream time up to which _weight holds

    def weight(self, now_ms: int) -> float:
        """The stored weight of one sample taken at ``now_ms``."""
        if now_ms < self._weight_until:
            return self._weight
        minute = now_ms - now_ms % 60_000
        ref = self.ref_ms
        if ref is None:
            self.ref_ms = ref = minute
        age = (minute - ref) / DECAY_HALF_LIFE_MS
        if age > _RENORMALISE_AT:
            factor = 2.0**-age
            self.weights = [w * factor for w in self.weights]
            self.ref_ms = minute
            age = 0.0
        self._weight = 2.0**age
        self._weight_until = minute + 60_000
        return self._weight

    def add(self, bucket: int, now_ms: int, count: int = 1) -> None:
        """Count ``count`` samples in ``bucket`` at stream time ``now_ms``."""
        self.weights[bucket] += count * self.weight(now_ms)
        if bucket > self.top:
            self.top = bucket

    def highest_supported(self, support: float, now_ms: int, above: int = -1) -> int:
        """The highest bucket whose tail (it and every bucket above it) weighs at least ``support``
        points at ``now_ms``; only buckets above ``above`` are looked at (-1: none of them)."""
        threshold = support * self.weight(now_ms)
        weights = self.weights
        acc = 0.0
        for b in range(self.top, above, -1):
            acc += weights[b]
            if acc >= threshold:
                return b
        return -1

    def quantile_ms(self, q: float) -> int | None:
        """Upper edge (ms) of the bucket holding the q-quantile (0..1) of the decayed weight; None when
        empty. (Every weight carries the same scale: reading changes nothing.)"""
        total = sum(self.weights)
        if total <= 0.0:
            return None
        target = q * total
        acc = 0.0
        for b, w in enumerate(self.weights):
            acc += w
            if acc >= target and w > 0.0:
                return _UPPER_MS[b]
        return _UPPER_MS[self.top]


class LatenessFigures(NamedTuple):
    """What a site's stream shows (ms): arrival-lag quantiles, the hold measured now and the largest one
    measured so far (0: none beyond the engine's max_disorder_s), and whether the warm-up is over
    (before it, points are held max_hold_s)."""

    arrival_lag_p50_ms: int
    arrival_lag_p90_ms: int
    arrival_lag_p99_ms: int
    hold_ms: int
    max_hold_ms: int
    warm: bool


class SiteLateness:
    """One site's lateness and arrival-lag histograms and the hold they give."""

    __slots__ = ("late", "lag", "start_ms", "warm", "hold_bucket", "recheck_ms", "hold_ms", "max_hold_ms")

    def __init__(self, now_ms: int) -> None:
        self.late = DecayingHistogram()
        self.lag = DecayingHistogram()
        self.start_ms = now_ms
        self.warm = False
        self.hold_bucket = -1
        self.recheck_ms = now_ms + RECHECK_MS
        self.hold_ms = HOLD_MAX
        self.max_hold_ms = 0  # the largest measured hold (after the warm-up), for reports

    def observe(self, behind_ms: int, now_ms: int) -> int:
        """Account for one point ``behind_ms`` (> 0) behind its truck's timeline, or for the passing of
        stream time (``behind_ms`` 0), at stream time ``now_ms``; returns the hold to ask for."""
        changed = False
        if behind_ms > 0:
            bucket = bucket_of(behind_ms)
            self.late.add(bucket, now_ms)
            if bucket > self.hold_bucket:  # may rise at once
                higher = self.late.highest_supported(HOLD_SUPPORT, now_ms, self.hold_bucket)
                if higher > self.hold_bucket:
                    self.hold_bucket, changed = higher, True
        if now_ms >= self.recheck_ms:  # decay: may fall
            self.recheck_ms = now_ms + RECHECK_MS
            bucket = self.late.highest_supported(HOLD_SUPPORT, now_ms)
            if bucket != self.hold_bucket:
                self.hold_bucket, changed = bucket, True
            if not self.warm and now_ms >= self.start_ms + WARMUP_MS:
                self.warm = changed = True
        if changed and self.warm:
            hold = self.measured_hold_ms()
            self.hold_ms = hold
            if hold > self.max_hold_ms:
                self.max_hold_ms = hold
        return self.hold_ms

    def measured_hold_ms(self) -> int:
        """The hold the lateness seen so far asks for (also during the warm-up)."""
        return 0 if self.hold_bucket < 0 else math.ceil(HOLD_MARGIN * bucket_upper_ms(self.hold_bucket))

    def figures(self) -> LatenessFigures:
        """The site's figures (reading them changes nothing)."""
        lag = self.lag
        return LatenessFigures(lag.quantile_ms(0.5) or 0, lag.quantile_ms(0.9) or 0, lag.quantile_ms(0.99) or 0,
                               self.measured_hold_ms(), self.max_hold_ms, self.warm)


_TIMELINE, _LEAD, _RECENT, _SEEN, _SITE_GUID, _SITE = range(6)
"""A truck's entry: its timeline, the points held ahead of it ([ts, timeline then, stream time then],
in arrival order), (stream time, ts) of its points of the last disorder_ms of stream time, the number
of its last record, its site's guid and estimate (of its last point)."""


class StreamLateness:
    """Lateness and holds of every site of one stream (one parse subtask). ``disorder_ms``: the
    engine's max_disorder_s (how far ahead of its timeline a truck's point is set aside, how long a
    burst is kept apart); ``lag_ms``: the watermark's lag behind the stream time."""

    __slots__ = ("disorder_ms", "lag_ms", "sites", "_trucks", "_records", "_forget_at")

    def __init__(self, disorder_ms: int, lag_ms: int) -> None:
        self.disorder_ms = disorder_ms
        self.lag_ms = lag_ms
        self.sites: dict[str, SiteLateness] = {}
        self._trucks: dict[str, list] = {}
        self._records = 0
        self._forget_at = 4096

    def observe(self, asset: str, site_guid: str, ts_ms: int, now_ms: int | None) -> int:
        """Account for one point of truck ``asset`` at ``site_guid`` (``now_ms``: the stream's time
        before it, None while it has none); returns the hold its truck should use."""
        n = self._records = self._records + 1
        truck = self._trucks.get(asset)
        behind = 0
        if truck is None:
            truck = self._trucks[asset] = [ts_ms, None, deque(), n, None, None]
            if len(self._trucks) > self._forget_at:
                self._forget()
        else:
            truck[_SEEN] = n
            timeline = truck[_TIMELINE]
            if timeline < ts_ms <= timeline + self.disorder_ms and truck[_LEAD] is None:
                truck[_TIMELINE] = ts_ms  # in order (the common case)
            else:
                behind = self._behind(truck, ts_ms, now_ms)
        if now_ms is None:
            return HOLD_MAX
        recent = truck[_RECENT]
        if recent and recent[0][0] <= now_ms - self.disorder_ms:
            recent.popleft()  # (at most one per point here; _behind drops every expired one)
        recent.append((now_ms, ts_ms))
        site = truck[_SITE] if truck[_SITE_GUID] == site_guid else self._site(truck, site_guid, now_ms)
        if not n & LAG_SAMPLE_MASK:
            lag = now_ms - ts_ms
            site.lag.add(bucket_of(lag) if lag > 1000 else 0, now_ms, LAG_SAMPLE_MASK + 1)
        if behind or now_ms >= site.recheck_ms:
            return site.observe(behind, now_ms)
        return site.hold_ms

    def _site(self, truck: list, site_guid: str, now_ms: int) -> SiteLateness:
        """The estimate of ``site_guid`` (created on first use), remembered in the truck's entry."""
        site = self.sites.get(site_guid)
        if site is None:
            if len(self.sites) >= MAX_SITES:
                site = self.sites.get("")  # the shared estimate of the sites beyond MAX_SITES
                if site is None:
                    site = self.sites[""] = SiteLateness(now_ms)
            else:
                site = self.sites[site_guid] = SiteLateness(now_ms)
        truck[_SITE_GUID], truck[_SITE] = site_guid, site
        return site

    def figures(self) -> dict[str, LatenessFigures]:
        """Each site's figures (reading them changes nothing)."""
        return {site: lateness.figures() for site, lateness in self.sites.items()}

    def _behind(self, truck: list, ts_ms: int, now_ms: int | None) -> int:
        """How far behind its truck's timeline a point is, when the engine needs a hold for it (see the
        module docstring); moves the timeline on as the engine moves its newest time."""
        timeline = truck[_TIMELINE]
        lead = truck[_LEAD]
        recent = truck[_RECENT]
        if now_ms is not None:
            settled = now_ms - self.disorder_ms
            while recent and recent[0][0] <= settled:
                recent.popleft()
            if lead and now_ms - self.lag_ms >= min(held[0] for held in lead) + LEAD_HOLD_MS:
                timeline = truck[_TIMELINE] = max(timeline, *(held[0] for held in lead))  # the truck moved on
                lead = truck[_LEAD] = None
        if ts_ms <= timeline:
            if recent and ts_ms >= min(t for _, t in recent):
                return 0  # the engine still keeps the points that came with it apart: nothing is committed past it
            return timeline - ts_ms
        disorder = self.disorder_ms
        if ts_ms <= timeline + disorder:
            truck[_TIMELINE] = timeline = ts_ms
            if lead:
                lead = [held for held in lead if held[0] > timeline + disorder]  # reached: they join in order
                lead = truck[_LEAD] = [held for held in lead if not (  # a lone stray the timeline went past
                    timeline - held[1] >= LEAD_HOLD_MS and (now_ms is None or now_ms - held[2] >= LEAD_HOLD_MS)
                    and all(abs(other[0] - held[0]) > disorder for other in lead if other is not held))] or None
            return 0
        if lead is None:
            lead = truck[_LEAD] = []
        lead.append([ts_ms, timeline, now_ms if now_ms is not None else 0])
        if len(lead) > 2 * LEAD_MAX or all(held[1] == timeline for held in lead) and (
                len(lead) >= LEAD_MAX or max(h[0] for h in lead) - min(h[0] for h in lead) >= LEAD_HOLD_MS):
            truck[_TIMELINE] = max(held[0] for held in lead)  # the truck's time moved on
            truck[_LEAD] = None
        return 0

    def _forget(self) -> None:
        """Drop trucks not heard from for FORGET_AFTER records."""
        since = self._records - FORGET_AFTER
        self._trucks = {a: t for a, t in self._trucks.items() if t[_SEEN] > since}
        self._forget_at = max(4096, 2 * len(self._trucks))
