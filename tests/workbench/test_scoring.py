"""Scorer on hand-built cases."""

from __future__ import annotations

from dataclasses import replace

import pytest

from state_machine.model import COMPLETE, EMPTY_TRAVEL, INVALID, OUTLIER, CycleRecord
from workbench.scoring import match_cycles, percentile, score

T0 = 1_705_298_400_000


def cyc(asset: str, start_s: float, total_s: float = 1000.0, status: str = COMPLETE,
        segs: tuple[float, float, float, float] = (150.0, 450.0, 50.0, 350.0)) -> CycleRecord:
    s = T0 + int(start_s * 1000)
    return CycleRecord(asset, "SITE-01", status, EMPTY_TRAVEL, "L1", "D1", load_start_ms=s,
                       cycle_end_ms=s + int(total_s * 1000), total_cycle_seconds=total_s,
                       load_seconds=segs[0], load_travel_seconds=segs[1], dump_seconds=segs[2],
                       empty_travel_seconds=segs[3])


TRUTH = [cyc("A", 0), cyc("A", 1000), cyc("A", 2000), cyc("B", 500), cyc("B", 1500)]


def test_perfect() -> None:
    r = score(TRUTH, list(TRUTH))
    assert (r.matched, r.precision, r.recall, r.f1) == (5, 1.0, 1.0, 1.0)
    assert r.status_agreement == 1.0
    assert r.confusion == {(COMPLETE, COMPLETE): 5}
    assert r.load_start_error.median == 0 and r.total_cycle_error.p90 == 0
    assert not r.missing and not r.extra
    text = r.summary()
    assert "F1 1.000" in text and "COMPLETE" in text


def test_missing_cycles() -> None:
    r = score(TRUTH, TRUTH[:2] + TRUTH[3:4])
    assert r.matched == 3
    assert r.precision == 1.0
    assert r.recall == pytest.approx(3 / 5)
    assert r.f1 == pytest.approx(2 * 0.6 / 1.6)
    assert [c.load_start_ms for c in r.missing] == [TRUTH[2].load_start_ms, TRUTH[4].load_start_ms]


def test_extra_cycles() -> None:
    found = list(TRUTH) + [cyc("A", 500), cyc("C", 0)]  # an extra split and an unknown truck
    r = score(TRUTH, found)
    assert r.matched == 5
    assert r.recall == 1.0 and r.precision == pytest.approx(5 / 7)
    assert {(c.asset_guid, c.load_start_ms) for c in r.extra} == {("A", T0 + 500_000), ("C", T0)}


def test_shifted_within_and_beyond_tolerance() -> None:
    found = [cyc("A", 30, 990), cyc("A", 1000 - 60, 1070), cyc("A", 2000 + 200), cyc("B", 500), cyc("B", 1500)]
    r = score(TRUTH, found, tolerance_s=90)
    assert r.matched == 4
    assert r.load_start_error.count == 4
    assert r.load_start_error.median == pytest.approx(15.0)  # errors 30, 60, 0, 0
    assert r.load_start_error.max == 60
    assert r.total_cycle_error.max == pytest.approx(70.0)
    assert len(r.missing) == 1 and len(r.extra) == 1
    wide = score(TRUTH, found, tolerance_s=300)
    assert wide.matched == 5


def test_status_mismatch_and_confusion() -> None:
    found = [replace(TRUTH[0], cycle_status=OUTLIER), TRUTH[1], replace(TRUTH[2], cycle_status=INVALID),
             TRUTH[3], TRUTH[4]]
    truth = list(TRUTH)
    truth[1] = replace(truth[1], cycle_status=OUTLIER)
    r = score(truth, found)
    assert r.matched == 5
    assert r.status_agreement == pytest.approx(2 / 5)
    assert r.confusion == {(COMPLETE, OUTLIER): 1, (OUTLIER, COMPLETE): 1, (COMPLETE, INVALID): 1,
                           (COMPLETE, COMPLETE): 2}
    assert "INVALID" in r.summary()


def test_one_to_one_prefers_closest() -> None:
    truth = [cyc("A", 0)]
    found = [cyc("A", 50), cyc("A", -10)]
    pairs = match_cycles(truth, found, 90)
    assert pairs == [(0, 1)]
    r = score(truth, found)
    assert r.matched == 1 and len(r.extra) == 1 and r.load_start_error.max == 10


def test_never_matches_across_trucks() -> None:
    r = score([cyc("A", 0)], [cyc("B", 0)])
    assert r.matched == 0 and r.precision == 0 and r.recall == 0 and r.f1 == 0
    assert r.status_agreement is None
    assert "n/a" in r.summary()


def test_segment_errors_skip_missing_values() -> None:
    truth = [cyc("A", 0), replace(cyc("A", 1000), dump_seconds=None, load_travel_seconds=None)]
    found = [cyc("A", 0, segs=(160.0, 450.0, 40.0, 350.0)), cyc("A", 1000)]
    r = score(truth, found)
    assert r.segment_errors["load_seconds"].median == pytest.approx(5.0)  # errors 10, 0
    assert r.segment_errors["dump_seconds"].count == 1
    assert r.segment_errors["dump_seconds"].median == pytest.approx(10.0)
    d = r.to_dict()
    assert d["matched"] == 2 and d["segment_errors"]["dump_seconds"]["count"] == 1


def test_empty_inputs() -> None:
    r = score([], [])
    assert r.precision == r.recall == r.f1 == 1.0
    r = score(TRUTH, [])
    assert r.precision == 0 and r.recall == 0


def test_percentile() -> None:
    assert percentile([], 50) is None
    assert percentile([3.0], 90) == 3.0
    assert percentile([1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 90) == pytest.approx(9.1)
    assert percentile([5, 1, 3], 50) == 3
