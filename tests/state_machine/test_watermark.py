"""The watermark tracker shared by the Flink parse step and the replay."""

from state_machine.watermark import WatermarkTracker

MIN = 60_000
HOUR = 3_600_000


def test_bounded_out_of_orderness():
    wm = WatermarkTracker(MIN, MIN)
    assert wm.watermark is None
    for ts in (1_000_000, 1_030_000, 1_010_000):
        wm.observe(ts)
    assert wm.watermark == 1_030_000 - MIN - 1


def test_lone_stray_ahead_of_a_live_fleet_never_moves_the_watermark():
    """One record 2 min / 30 min / a year ahead, then the fleet goes on at its own time."""
    for ahead in (2 * MIN, 30 * MIN, 365 * 24 * HOUR):
        wm = WatermarkTracker(MIN, MIN)
        wm.observe(10 * HOUR)
        assert wm.observe(10 * HOUR + ahead) == 10 * HOUR  # held back
        for k in range(1, 200):
            wm.observe(10 * HOUR + k * 1000)
        assert wm.max_ts == 10 * HOUR + 199_000


def test_two_unrelated_strays_do_not_confirm_each_other():
    wm = WatermarkTracker(MIN, MIN)
    wm.observe(10 * HOUR)
    wm.observe(10 * HOUR + 30 * MIN)
    wm.observe(10 * HOUR + 1000)
    wm.observe(10 * HOUR + 2 * HOUR)  # far from the first candidate: replaces it, does not confirm it
    wm.observe(10 * HOUR + 2000)
    assert wm.max_ts == 10 * HOUR + 2000


def test_stream_that_moved_on_confirms_with_its_next_records():
    """A single truck after a silence, or a file that skips a day: the next records agree."""
    wm = WatermarkTracker(MIN, MIN)
    wm.observe(10 * HOUR)
    later = 34 * HOUR
    wm.observe(later)
    wm.observe(later + 15_000)
    assert wm.max_ts == 10 * HOUR
    wm.observe(later + 30_000)
    assert wm.max_ts == later + 30_000


def test_catching_up_with_a_candidate_clears_it():
    wm = WatermarkTracker(MIN, MIN)
    wm.observe(0)
    wm.observe(3 * MIN)  # a candidate
    for ts in range(0, 3 * MIN, 20_000):
        wm.observe(ts)  # the fleet's time reaches it: it is ordinary now
    assert wm.max_ts >= 2 * MIN
    wm.observe(9 * MIN)  # a new lone stray, not confirmed by the old candidate
    wm.observe(9 * MIN + 1000)
    assert wm.max_ts < 9 * MIN
