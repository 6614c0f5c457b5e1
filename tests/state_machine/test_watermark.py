"""The stream time shared by the Flink parse step and the replay (state_machine.watermark): built from
trucks, robust to strays of many trucks, still following a stream that really moved on."""

from __future__ import annotations

import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from state_machine.watermark import NO_TIME, WatermarkTracker

MIN = 60_000
HOUR = 3_600_000
DAY = 24 * HOUR
T = 10 * HOUR


def fleet(trucks: int, start: int, minutes: float, rng: random.Random, disorder_ms: int = 30_000) -> list[tuple[str, int]]:
    """(truck, ts) of a live fleet in arrival order: pings every 10-30 s, each delayed 0..disorder_ms."""
    records = []
    for n in range(trucks):
        every = rng.uniform(10_000, 30_000)
        ts = start + rng.uniform(0, every)
        while ts < start + minutes * MIN:
            records.append((ts + rng.uniform(0, disorder_ms), f"T{n:02d}", int(ts)))
            ts += every
    return [(truck, ts) for _, truck, ts in sorted(records)]


def test_bounded_out_of_orderness():
    wm = WatermarkTracker(MIN, MIN)
    assert wm.watermark is None
    for ts in (T, T + 30_000, T + 10_000):
        wm.observe("A", ts)
    assert wm.watermark == T + 30_000 - MIN - 1


def test_the_stream_has_no_time_until_a_truck_confirms_its_own():
    """A first record may be a stray: the stream's time starts with a truck's second record."""
    wm = WatermarkTracker(MIN, MIN)
    assert wm.observe("A", T) == NO_TIME and wm.max_ts is None
    assert wm.observe("A", T + 20_000) == T + 20_000 and wm.max_ts == T + 20_000


def test_a_first_record_that_is_a_stray_does_not_set_the_stream_time():
    wm = WatermarkTracker(MIN, MIN)
    wm.observe("A", T + DAY)
    for k in range(1, 5):
        wm.observe("A", T + k * 15_000)
    assert wm.max_ts == T + 60_000


def test_lone_stray_ahead_of_a_live_fleet_never_moves_the_watermark():
    """One record 2 min / 30 min / a year ahead, then the fleet goes on at its own time."""
    for ahead in (2 * MIN, 30 * MIN, 365 * DAY):
        wm = WatermarkTracker(MIN, MIN)
        wm.observe("A", T)
        wm.observe("A", T + 1000)
        assert wm.observe("A", T + ahead) == T + 1000  # held back
        for k in range(2, 200):
            wm.observe("A", T + k * 1000)
        assert wm.max_ts == T + 199_000


STRAY_OFFSETS = [2 * MIN, 30 * MIN, 2 * HOUR, DAY, -30 * MIN]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(trucks=st.integers(3, 30), seed=st.integers(0, 10**6), offset=st.sampled_from(STRAY_OFFSETS),
       glitched_share=st.floats(0.0, 1 / 3), same_moment=st.booleans())
def test_strays_of_up_to_a_third_of_the_trucks_never_move_the_stream_time(trucks, seed, offset, glitched_share,
                                                                           same_moment):
    """One stray per glitched truck (k of N, k <= N/3), at random moments or all at the same one: the
    stream time never passes the newest genuine time seen, and every record's contribution (what Flink's
    watermark takes the max of) stays within it."""
    rng = random.Random(seed)
    records = fleet(trucks, T, 60, rng)
    glitched = rng.sample(sorted({truck for truck, _ in records}), int(trucks * glitched_share))
    moment = rng.uniform(T, T + 60 * MIN)
    arrivals: list[tuple[str, int, bool]] = []
    pending = set(glitched)
    for truck, ts in records:
        arrivals.append((truck, ts, False))
        if truck in pending and ts >= (moment if same_moment else T + rng.uniform(0, 60 * MIN)):
            pending.discard(truck)
            arrivals.append((truck, ts + offset, True))
    wm = WatermarkTracker(MIN, MIN)
    newest_genuine = None
    for truck, ts, stray in arrivals:
        if not stray:
            newest_genuine = ts if newest_genuine is None else max(newest_genuine, ts)
        contribution = wm.observe(truck, ts)
        assert wm.max_ts is None or wm.max_ts <= newest_genuine
        assert contribution == NO_TIME or contribution <= wm.max_ts
    assert wm.max_ts is not None and wm.max_ts >= newest_genuine - MIN


def test_half_of_a_fleet_whose_clocks_moved_on_does_not_move_the_stream_but_most_of_it_does():
    wm = WatermarkTracker(MIN, MIN)
    for k in range(3):
        for n in range(10):
            wm.observe(f"T{n}", T + k * 20_000 + n)
    for k in range(3):
        for n in range(5):
            wm.observe(f"T{n}", T + DAY + k * 20_000)  # half the fleet, each confirming its own jump
        for n in range(5, 10):
            wm.observe(f"T{n}", T + (3 + k) * 20_000)
    assert wm.max_ts < T + HOUR
    wm.observe("T5", T + DAY)
    wm.observe("T5", T + DAY + 20_000)  # the sixth of ten trucks: a majority
    assert wm.max_ts >= T + DAY


def test_a_whole_stream_that_skips_ahead_is_followed():
    """A file whose second part is a day later: the stream time follows once most trucks confirm it."""
    rng = random.Random(3)
    wm = WatermarkTracker(MIN, MIN)
    day1 = fleet(12, T, 30, rng)
    day2 = fleet(12, T + DAY, 30, rng)
    for truck, ts in day1 + day2[:60]:
        wm.observe(truck, ts)
    assert wm.max_ts >= T + DAY
    for truck, ts in day2[60:]:
        wm.observe(truck, ts)
    assert wm.max_ts == max(ts for _, ts in day2)


def test_a_single_truck_after_a_silence_is_followed_at_its_second_record():
    wm = WatermarkTracker(MIN, MIN)
    for k in range(5):
        wm.observe("A", T + k * 15_000)
    later = T + DAY
    wm.observe("A", later)
    assert wm.max_ts == T + 60_000
    assert wm.observe("A", later + 15_000) == later + 15_000 and wm.max_ts == later + 15_000


def test_a_new_truck_joins_at_the_stream_time():
    wm = WatermarkTracker(MIN, MIN)
    for k in range(3):
        wm.observe("A", T + k * 15_000)
    assert wm.observe("B", T + 40_000) == T + 40_000 and wm.max_ts == T + 40_000


def test_catching_up_with_a_candidate_clears_it():
    wm = WatermarkTracker(MIN, MIN)
    wm.observe("A", T)
    wm.observe("A", T + 1000)
    wm.observe("A", T + 3 * MIN)  # a candidate
    for ts in range(T + 20_000, T + 3 * MIN, 20_000):
        wm.observe("A", ts)  # the truck's time reaches it: it is ordinary now
    assert wm.max_ts >= T + 2 * MIN
    wm.observe("A", T + 9 * MIN)  # a new lone stray, not confirmed by the old candidate
    wm.observe("A", T + 3 * MIN + 20_000)
    assert wm.max_ts < T + 9 * MIN
