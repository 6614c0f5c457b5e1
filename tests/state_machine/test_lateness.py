"""The hold a site's trucks use for late points (state_machine.lateness): measured on the stream,
covering the lateness it shows, untouched by what needs no hold (in-order backlogs, duplicates of a
burst, live points sent before a backlog, a lone stray ahead), and trusted only on enough evidence."""

from __future__ import annotations

import random

from state_machine.lateness import (
    HOLD_MARGIN,
    HOLD_MAX,
    MISS_RISK,
    WARMUP_MS,
    DecayingHistogram,
    StreamLateness,
    bucket_of,
    bucket_upper_ms,
    margin,
)
from state_machine.watermark import WatermarkTracker

MIN = 60_000
T = 10 * 3_600_000


class Stream:
    """Feeds (truck, ts) records through the tracker and the lateness estimate as StreamParser does."""

    def __init__(self) -> None:
        self.tracker = WatermarkTracker(MIN, MIN)
        self.lateness = StreamLateness(MIN, MIN)
        self.hold = HOLD_MAX

    def feed(self, truck: str, ts: int, site: str = "S") -> int:
        now = self.tracker.max_ts
        self.tracker.observe(truck, ts)
        self.hold = self.lateness.observe(truck, site, ts, now)
        return self.hold


def live(stream: Stream, trucks: int, start: int, minutes: float, every: int = 20_000) -> int:
    """Every truck pings every ``every`` ms, on time; returns the end time."""
    ts = start
    while ts < start + minutes * MIN:
        for n in range(trucks):
            stream.feed(f"T{n}", ts + n)
        ts += every
    return ts


FLEET = 20
"""Trucks of a site whose evidence gets past EVIDENCE_TRUCK_MINUTES within WARM_MIN minutes."""
WARM_MIN = 55


def test_the_hold_is_the_maximum_until_the_trucks_were_watched_long_enough_then_the_floor_on_ordered_data():
    stream = Stream()
    end = live(stream, FLEET, T, 10)
    assert stream.hold == HOLD_MAX
    end = live(stream, FLEET, end, (WARMUP_MS + 8 * MIN) / MIN - 10)
    assert stream.hold == HOLD_MAX  # 15 min of event time are not enough: 20 trucks x 8 min watched since
    live(stream, FLEET, end, WARM_MIN)
    assert stream.hold == 0  # nothing late: the engine's floor (max_disorder_s) applies


def test_how_long_a_site_is_held_the_maximum_after_a_start_depends_on_its_trucks():
    """The figures of docs/cycle-rules.md: 12, 20 and 50 trucks reporting every 20 s."""
    for trucks, minutes in ((12, 90), (20, 53), (50, 29)):
        stream = Stream()
        end = live(stream, trucks, T, minutes - 1)
        assert stream.hold == HOLD_MAX
        live(stream, trucks, end, 1)
        assert stream.hold != HOLD_MAX, trucks


def test_a_site_of_six_trucks_is_never_trusted_on_what_it_has_seen():
    """Six trucks are watched about 6 x 60 x 1.44 = 520 decayed truck-minutes at most: too little to
    rule out a lateness they show once in two hours, so the hold stays the engine's bound."""
    stream = Stream()
    live(stream, 6, T, 8 * 60)
    assert stream.hold == HOLD_MAX


def test_a_late_point_raises_the_hold_at_once_and_thin_evidence_asks_for_more_than_the_margin():
    stream = Stream()
    end = live(stream, FLEET, T, WARM_MIN)
    assert stream.hold == 0
    stream.feed("T0", end - 4 * MIN)  # one point 4 min late: the first of a burst, or a stray
    behind = (end - 20_000) - (end - 4 * MIN)  # T0's newest point was end - 20 s
    assert HOLD_MARGIN * behind <= stream.hold <= 1.2 * HOLD_MARGIN * behind
    stream.feed("T1", end - 4 * MIN - 5000)  # a second truck-minute: late data, known from two samples only
    assert stream.hold >= 4 * HOLD_MARGIN * behind
    for n in range(2, 12):  # many trucks show it: the lateness is known, the margin is HOLD_MARGIN
        stream.feed(f"T{n}", end - 4 * MIN - 5000)
    behind = (end - 20_000 + 11) - (end - 4 * MIN - 5000)
    assert HOLD_MARGIN * behind <= stream.hold <= 1.2 * HOLD_MARGIN * behind


def test_waiting_without_late_points_never_raises_the_hold():
    stream = Stream()
    end = live(stream, FLEET, T, WARM_MIN)
    stream.feed("T0", end - 3 * MIN)
    stream.feed("T1", end - 3 * MIN)  # two truck-minutes: a thin margin
    holds = [stream.hold]
    for _ in range(90):
        end = live(stream, FLEET, end, 1)
        holds.append(stream.hold)
    assert holds == sorted(holds, reverse=True) and holds[-1] < holds[0]


def test_the_margin_grows_as_the_truck_minutes_backing_the_largest_lateness_get_few():
    margins = [margin(backing) for backing in (1, 2, 3, 5, 8, 10, 20, 100)]
    assert margins == sorted(margins, reverse=True)
    assert margins[0] > 100 and margins[1] > 5 and margins[-3:] == [HOLD_MARGIN] * 3
    for backing in (2, 3, 5, 8):  # uniform lateness: the 2nd largest of 2 x backing is below D / margin
        k = 2 * backing          # with probability k / m^(k-1) at most, MISS_RISK by construction
        assert k / margin(backing) ** (k - 1) <= MISS_RISK * 1.0001


def test_the_hold_falls_slowly_once_the_lateness_is_gone():
    stream = Stream()
    end = live(stream, FLEET, T, WARM_MIN)
    for n in range(FLEET):
        stream.feed(f"T{n}", end - 5 * MIN)
    raised = stream.hold
    end = live(stream, FLEET, end, 60)
    assert 5 * MIN <= stream.hold <= raised  # an hour later, still covered
    live(stream, FLEET, end, 8 * 60)
    assert stream.hold == 0


def test_a_backlog_arriving_in_order_after_an_outage_needs_no_hold():
    stream = Stream()
    end = live(stream, FLEET, T, WARM_MIN)
    for ts in range(end, end + 20 * MIN, 20_000):  # T0 is silent for 20 min, the others go on
        for n in range(1, FLEET):
            stream.feed(f"T{n}", ts)
    for ts in range(end, end + 20 * MIN, 20_000):
        stream.feed("T0", ts)  # its backlog, in order, 20 min behind the stream
    assert stream.hold == 0


def test_a_live_point_sent_before_the_backlog_and_copies_of_the_burst_need_no_hold():
    """At reconnection a truck sends a live point, then its 20-minute backlog in a burst; copies of
    backlog points arrive right after the burst (at-least-once delivery)."""
    stream = Stream()
    end = live(stream, FLEET, T, WARM_MIN)
    ts = end
    while ts < end + 20 * MIN:
        for n in range(1, FLEET):
            stream.feed(f"T{n}", ts + n)
        ts += 20_000
    stream.feed("T0", ts)  # live
    backlog = list(range(end, ts, 20_000))
    for b in backlog:
        stream.feed("T0", b)
    for b in random.Random(1).sample(backlog, 10):
        stream.feed("T0", b)  # duplicates, 20 min behind the truck's newest point
    assert stream.hold == 0


def test_a_lone_stray_ahead_then_the_truck_going_on_needs_no_hold():
    stream = Stream()
    end = live(stream, FLEET, T, WARM_MIN)
    stream.feed("T0", end + 2 * 3_600_000)
    live(stream, FLEET, end, 30)
    assert stream.hold == 0


def test_a_lone_stray_ahead_then_a_silence_and_the_backlog_needs_no_hold():
    """A truck's last point before a 20-minute outage is a stray 2 min ahead; its backlog arrives in
    order after the stream passed the stray by more than the lead hold. As in the engine, nothing the
    truck sent confirms the stray, so the backlog is not behind the truck's timeline."""
    stream = Stream()
    end = live(stream, FLEET, T, WARM_MIN)
    stream.feed("T0", end + 2 * MIN)
    for ts in range(end, end + 20 * MIN, 20_000):
        for n in range(1, FLEET):
            stream.feed(f"T{n}", ts)
    for ts in range(end, end + 20 * MIN, 20_000):
        stream.feed("T0", ts)  # the backlog, in order, 20 min behind the stream
    assert stream.hold == 0


def test_sites_are_measured_apart():
    stream = Stream()
    ts = T
    while ts < T + WARM_MIN * MIN:
        for n in range(FLEET):
            stream.feed(f"A{n}", ts, "SITE-A")
            stream.feed(f"B{n}", ts, "SITE-B")
        ts += 20_000
    for n in range(4):
        stream.feed(f"A{n}", ts - 3 * MIN, "SITE-A")
    assert stream.feed("B0", ts, "SITE-B") == 0
    assert stream.feed("A0", ts, "SITE-A") >= 3 * MIN


def test_decaying_histogram_quantiles_and_buckets():
    h = DecayingHistogram()
    for k in range(100):
        h.add(bucket_of(1000 * (k + 1)), T)
    assert 49_000 <= h.quantile_ms(0.5) <= 50_000 * 2 ** (1 / 8)
    assert h.quantile_ms(0.99) >= 99_000
    assert h.highest_supported(2.0, T) == bucket_of(99_000)  # the two largest samples share a bucket
    assert h.highest_supported(2.0, T + 3_600_000) < bucket_of(99_000)  # halved an hour later: 2 need more
    for ms in (1, 999, 1000, 1001, 60_000, 10**9):
        assert bucket_upper_ms(bucket_of(ms)) >= min(ms, bucket_upper_ms(bucket_of(10**9)))
