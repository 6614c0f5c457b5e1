"""How late each site's points arrive, and how long its trucks hold points for late ones.

Measured per site on the records in arrival order (``state_machine.stream`` feeds every valid record
through ``StreamLateness.observe``), deterministically, so the Flink parse step and the offline replay
get the same figures:

* **Lateness**: how far behind its truck's timeline a point arrives (a point that comes after later
  points of its own truck: a retrying gateway, a dead zone). Only this needs a hold. The timeline is
  the truck's newest time as the engine keeps it (state_machine.truck): a point far ahead of it (a
  clock stray, a live point sent before a backlog) is set aside until the timeline reaches it, the
  stream passes it by the lead hold (the newest such point: once the truck sent a newer one), or the
  truck sends nothing else; a lone one that the timeline passes is dropped (the engine rejects it as
  CLOCK_JUMP). A truck's backlog that arrives in order after an outage is behind the stream but not
  behind its timeline, and a copy of a point that arrives while the engine still keeps its burst apart
  (max_disorder_s of stream time after it arrived) is a duplicate: neither needs a hold.
* **Arrival lag**: the stream's time minus the point's event time (backlogs included): how late data
  arrives, for dashboards (``udfs.parse`` gauges, ``workbench.replay`` summary).

Both are kept as log-bucket histograms (8 buckets per doubling, from 1 s) whose weights decay by the
stream's event time (half-life ``DECAY_HALF_LIFE_MS``); so is the largest lateness of each
truck-minute with late points (a truck's points late in one minute of stream time, a burst after a
dead zone, are one piece of evidence, not many), and the truck-minutes watched. The **hold** a site
asks for covers the largest lateness seen, judged by how much evidence backs it:

* it covers ``HOLD_MARGIN`` x the largest lateness held: a point later than that raises it at once
  (the first point of a late burst is all the stream shows of it before the engine must hold the rest)
  and it falls only once what it covers weighs less than half of ``HOLD_SUPPORT`` (a half-life after
  the last such point): slower than it rose;
* it covers the largest lateness seen on two points (``BACKED_SUPPORT``) times ``margin(backing)``,
  ``backing`` the truck-minutes late by more than half of it: ``HOLD_MARGIN`` when ten or more back it,
  much more (up to the engine's bound) when it rests on one or two truck-minutes, whose maximum says
  little about the next one. Waiting without new late points never raises it;
* it is ``HOLD_MAX`` (the engine's bound) until the site's trucks have been watched
  ``EVIDENCE_TRUCK_MINUTES`` (decayed) after its first ``WARMUP_MS`` of event time (before that, the
  longest lateness the engine can hold could not have shown): a job's start or restore, a new site, and
  for good a site or parse subtask of so few trucks that its decayed evidence never gets there. Nothing
  is lost meanwhile; closed cycles only wait longer.

The engine clamps the hold to its site's ``max_disorder_s`` .. ``max_hold_s`` (``state_machine.truck``).
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
HOLD_SUPPORT = 1.0
"""Decayed weight (in points) a lateness needs to be held: one point (the first of a burst that arrives
late is all the stream shows of it before the engine must hold the rest). It is held until its weight
falls below half of this, a half-life later: the hold falls slower than it rose."""
BACKED_SUPPORT = 2.0
"""Decayed weight (in points) of the largest lateness the margin multiplies (``margin``): one stray
point does not make a margin of its own; kept down to half of it, as HOLD_SUPPORT."""
HOLD_MARGIN = 1.5
"""The hold covers at least this many times the lateness seen (the largest lateness yet to come is
unknown); more when few truck-minutes back it (``margin``)."""
MISS_RISK = 0.01
"""For lateness spread evenly up to its largest: the chance that the hold falls short of it (``margin``)."""
WARMUP_MS = 900_000
"""Event time a site's stream runs before its trucks count as watched (the default max_hold_s: a
lateness the engine can hold may take that long to show)."""
EVIDENCE_TRUCK_MINUTES = 600.0
"""Decayed truck-minutes (a truck heard from in a minute of stream time, counted after WARMUP_MS) a
site's estimate needs before its measured hold is used (HOLD_MAX until then, and again whenever it
falls below): a lateness that a truck shows once in two hours (a dead spot passed every few cycles)
has then shown itself at least twice with 95 % probability (Poisson, mean 5). With the 1 h half-life
a site needs about 7 trucks reporting steadily (60 x 1.44 truck-minutes each) to get there."""
LAG_SAMPLE_MASK = 7
"""One point in LAG_SAMPLE_MASK + 1 (of the stream) is counted, for all of them, in the arrival lag."""
RECHECK_MS = 60_000
"""Stream time between two re-evaluations of a hold for decay."""
LEAD_HOLD_MS = int(CycleThresholds().lead_hold_s * 1000)
"""The engine's lead_hold_s (its default: the parse step knows no per-site thresholds)."""
IDLE_CLOSE_MS = int(CycleThresholds().idle_close_s * 1000)
"""The engine's idle_close_s (its default): how long a truck's newest lead point waits for a newer one."""
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


def _kept(histogram: DecayingHistogram, bucket: int, support: float, now_ms: int) -> int:
    """The bucket after decay: the highest with ``support`` points, or ``bucket`` while it keeps half."""
    kept = min(bucket, histogram.highest_supported(support / 2, now_ms))
    return max(kept, histogram.highest_supported(support, now_ms))


def margin(backing: float) -> float:
    """How many times the lateness seen the hold covers, when ``backing`` truck-minutes (decayed) were
    late by more than half of it. If lateness were spread evenly from 0 to its true largest D, about
    2 x backing of them would lie below D; the second largest of k such samples is below D / m with
    probability k / m^(k-1) at most, so m = (k / MISS_RISK)^(1 / (k - 1)) covers D but for MISS_RISK.
    HOLD_MARGIN at least (reached at about 10 backing truck-minutes); thin backing asks for much more."""
    k = 2.0 * backing
    if k <= 1.5:
        return float(HOLD_MAX)
    return max(HOLD_MARGIN, (k / MISS_RISK) ** (1.0 / (k - 1.0)))


class DecayingHistogram:
    """Log-bucket histogram whose weights halve every DECAY_HALF_LIFE_MS of stream time. Weights are
    stored scaled by 2^((t - ref) / half-life), t the stream time to the minute (one power per minute,
    not per sample), so decay costs nothing per sample; ``now_ms`` must never go back. ``buckets``: 1
    for a decaying count."""

    __slots__ = ("weights", "ref_ms", "top", "_weight", "_weight_until")

    def __init__(self, buckets: int = N_BUCKETS) -> None:
        self.weights = [0.0] * buckets
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

    def total(self, now_ms: int, lowest: int = 0) -> float:
        """The decayed weight at ``now_ms`` of the samples in ``lowest`` and every bucket above it."""
        return sum(self.weights[lowest:]) / self.weight(now_ms)

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
    """One site's lateness and arrival-lag histograms, how long its trucks have been watched, and the
    hold they give."""

    __slots__ = ("late", "late_minutes", "lag", "watched", "start_ms", "warm", "hold_bucket", "backed_bucket",
                 "recheck_ms", "hold_ms", "measured_ms", "max_hold_ms")

    def __init__(self, now_ms: int) -> None:
        self.late = DecayingHistogram()
        self.late_minutes = DecayingHistogram()  # the largest lateness of each truck-minute with late points
        self.lag = DecayingHistogram()
        self.watched = DecayingHistogram(1)  # truck-minutes: a truck heard from in a minute of stream time
        self.start_ms = now_ms
        self.warm = False
        self.hold_bucket = -1  # the largest lateness held (HOLD_SUPPORT)
        self.backed_bucket = -1  # the largest lateness seen on two points (BACKED_SUPPORT), for the margin
        self.recheck_ms = now_ms + RECHECK_MS
        self.hold_ms = HOLD_MAX
        self.measured_ms = 0  # the hold the lateness seen asks for (in force once warm)
        self.max_hold_ms = 0  # the largest measured hold in force, for reports

    def observe(self, bucket: int, now_ms: int, counted: int = -1) -> int:
        """Account for one point late by ``bucket``'s lateness, whose truck-minute was counted in bucket
        ``counted`` so far (-1: not yet), or for the passing of stream time (``bucket`` -1), at stream
        time ``now_ms``; returns the hold to ask for."""
        late = self.late
        before = (self.hold_bucket, self.backed_bucket)
        if bucket >= 0:
            late.add(bucket, now_ms)
            if bucket > counted:  # a truck-minute counts once, at its largest lateness
                if counted >= 0:
                    self.late_minutes.add(counted, now_ms, -1)
                self.late_minutes.add(bucket, now_ms)
            if bucket > self.hold_bucket:  # may rise at once
                self.hold_bucket = bucket
            if bucket > self.backed_bucket:
                self.backed_bucket = max(self.backed_bucket,
                                         late.highest_supported(BACKED_SUPPORT, now_ms, self.backed_bucket))
        elif now_ms < self.recheck_ms:
            return self.hold_ms
        decay_only = bucket < 0
        if now_ms >= self.recheck_ms:  # decay: may fall, slower than it rose
            self.recheck_ms = now_ms + RECHECK_MS
            self.hold_bucket = _kept(late, self.hold_bucket, HOLD_SUPPORT, now_ms)
            self.backed_bucket = _kept(late, self.backed_bucket, BACKED_SUPPORT, now_ms)
            self.warm = self.watched.total(now_ms) >= EVIDENCE_TRUCK_MINUTES
        elif before == (self.hold_bucket, self.backed_bucket) and bucket <= self.backed_bucket - BUCKETS_PER_DOUBLING:
            return self.hold_ms  # neither the lateness held nor the truck-minutes that back it changed
        measured = self._measure(now_ms)
        if decay_only and before == (self.hold_bucket, self.backed_bucket):
            measured = min(measured, self.measured_ms)  # thinning evidence by waiting never raises it
        self.measured_ms = measured
        self.hold_ms = hold = measured if self.warm else HOLD_MAX
        if self.warm and hold > self.max_hold_ms:
            self.max_hold_ms = hold
        return hold

    def _measure(self, now_ms: int) -> int:
        """The hold the lateness seen asks for: HOLD_MARGIN x the largest lateness held, and the largest
        lateness seen on two points x the margin that the truck-minutes backing it give."""
        hold = 0 if self.hold_bucket < 0 else HOLD_MARGIN * bucket_upper_ms(self.hold_bucket)
        backed = self.backed_bucket
        if backed >= 0:
            backing = self.late_minutes.total(now_ms, max(0, backed - BUCKETS_PER_DOUBLING + 1))
            hold = max(hold, margin(backing) * bucket_upper_ms(backed))
        return min(_UPPER_MS[-1], math.ceil(hold))  # the engine clamps it to its max_hold_s

    def figures(self) -> LatenessFigures:
        """The site's figures (reading them changes nothing)."""
        lag = self.lag
        return LatenessFigures(lag.quantile_ms(0.5) or 0, lag.quantile_ms(0.9) or 0, lag.quantile_ms(0.99) or 0,
                               self.measured_ms, self.max_hold_ms, self.warm)


_TIMELINE, _LEAD, _RECENT, _SEEN, _SITE_GUID, _SITE, _MINUTE, _LATE_BUCKET = range(8)
"""A truck's entry: its timeline, the points held ahead of it ([ts, timeline then, stream time then],
in arrival order), (stream time, ts) of its points of the last disorder_ms of stream time, the number
of its last record, its site's guid and estimate (of its last point), the last minute of stream time
it was counted as watched in and the bucket of its largest lateness in that minute (-1: none)."""


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
            truck = self._trucks[asset] = [ts_ms, None, deque(), n, None, None, -1, -1]
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
        minute = now_ms // 60_000
        if truck[_MINUTE] != minute:
            truck[_MINUTE], truck[_LATE_BUCKET] = minute, -1
            if now_ms >= site.start_ms + WARMUP_MS:  # before, the longest lateness could not have shown
                site.watched.add(0, now_ms)
        if not n & LAG_SAMPLE_MASK:
            lag = now_ms - ts_ms
            site.lag.add(bucket_of(lag) if lag > 1000 else 0, now_ms, LAG_SAMPLE_MASK + 1)
        if behind:
            bucket, counted = bucket_of(behind), truck[_LATE_BUCKET]
            if bucket > counted:
                truck[_LATE_BUCKET] = bucket
            return site.observe(bucket, now_ms, counted)
        if now_ms >= site.recheck_ms:
            return site.observe(-1, now_ms)
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
        truck[_MINUTE] = truck[_LATE_BUCKET] = -1  # watched by this site from now on
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
            watermark = now_ms - self.lag_ms
            if lead and watermark >= min(held[0] for held in lead) + LEAD_HOLD_MS:
                lead = truck[_LEAD] = self._take_lead_on_stream_time(truck, lead, watermark)
                timeline = truck[_TIMELINE]
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

    @staticmethod
    def _take_lead_on_stream_time(truck: list, lead: list, watermark_ms: int) -> list | None:
        """As the engine when the stream's time passed the first lead point by the lead hold: the truck's
        timeline moves to the newest lead point the watermark reached, but for the newest of them all,
        which waits for a newer point of the truck or IDLE_CLOSE_MS of stream time; returns what stays
        held (None: nothing)."""
        newest = max(held[0] for held in lead)
        taken = [held[0] for held in lead if held[0] <= watermark_ms
                 and (held[0] < newest or watermark_ms >= newest + IDLE_CLOSE_MS)]
        if not taken:
            return lead
        timeline = truck[_TIMELINE] = max(truck[_TIMELINE], *taken)  # the truck moved on
        return [[ts, timeline, since] for ts, _, since in lead if ts > timeline] or None

    def _forget(self) -> None:
        """Drop trucks not heard from for FORGET_AFTER records."""
        since = self._records - FORGET_AFTER
        self._trucks = {a: t for a, t in self._trucks.items() if t[_SEEN] > since}
        self._forget_at = max(4096, 2 * len(self._trucks))
