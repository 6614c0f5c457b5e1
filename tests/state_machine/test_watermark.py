"""The watermark tracker shared by the Flink parse step and the replay."""

from state_machine.watermark import WatermarkTracker

HOUR = 3_600_000


def test_bounded_out_of_orderness():
    wm = WatermarkTracker(60_000, 6 * HOUR)
    assert wm.watermark is None
    for ts in (1_000_000, 1_030_000, 1_010_000):
        wm.observe(ts)
    assert wm.watermark == 1_030_000 - 60_000 - 1


def test_lone_far_future_timestamp_does_not_move_the_watermark():
    wm = WatermarkTracker(60_000, 6 * HOUR, confirm_records=5)
    wm.observe(10 * HOUR)
    assert wm.observe(10 * HOUR + 365 * 24 * HOUR) == 10 * HOUR  # held back
    wm.observe(10 * HOUR + 1000)
    assert wm.max_ts == 10 * HOUR + 1000


def test_confirmed_jump_is_accepted():
    wm = WatermarkTracker(60_000, 6 * HOUR, confirm_records=5)
    wm.observe(10 * HOUR)
    later = 40 * HOUR
    for i in range(5):
        wm.observe(later + i)
    assert wm.max_ts == later + 4
