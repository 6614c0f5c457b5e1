"""ParseFunction: batches in, one row per truck and batch out (with each point's watermark hint),
invalid records -> dead letters that carry the record's position (and the replay's label-based id)."""

from __future__ import annotations

from types import SimpleNamespace

from state_machine.identity import dead_letter_id
from state_machine.stream import NO_HINT
from udfs.parse import DEAD_LETTER_TAG, ParseFunction
from udfs.rows import DEAD_LETTER_FIELDS, GROUP_FIELDS, group_points

T0 = 1705298400000  # 2024-01-15T06:00:00Z


def _function(source: str = "file:x", lag_ms: int = 60_000, **kw) -> ParseFunction:
    fn = ParseFunction(source, lag_ms, lag_ms, check_future=kw.pop("check_future", False), **kw)
    fn.open(SimpleNamespace(get_metrics_group=lambda: (_ for _ in ()).throw(RuntimeError())))
    return fn


def _parse(batches: list[list[str]], fn: ParseFunction | None = None) -> list:
    fn = fn or _function()
    out, n = [], 0
    for lines in batches:
        positions = [f"file:/data/x.jsonl:{n + i}" for i in range(1, len(lines) + 1)]
        n += len(lines)
        out.extend(fn.process_element((positions, lines), None))
    return out


def rec(asset: str, ts: str) -> str:
    return (f'{{"asset_guid":"{asset}","site_guid":"S","timestamp":"{ts}","latitude":-22.7,'
            f'"longitude":118.7,"work_state_id":3}}')  # fmt: skip


def _hints(keyed) -> list[int]:
    return [pp.hint for pp in group_points(keyed[1])]


def test_a_batch_becomes_one_keyed_row_per_truck_with_each_points_hint_and_the_batch_end_flag():
    lines = [rec("A", "2024-01-15T06:00:00.000Z"), rec("A", "2024-01-15T06:00:10.000Z"),
             rec("B", "2024-01-15T06:00:50.000Z"), rec("A", "2024-01-15T06:00:30.000Z")]  # fmt: skip
    (key_a, a), (key_b, b) = _parse([lines])
    assert (key_a, key_b) == ("A", "B")
    row_a = dict(zip(GROUP_FIELDS, a, strict=True))
    assert row_a["asset"] == "A" and row_a["wm_ts"] == T0 + 30_000
    assert row_a["batch_end"] is False and b[GROUP_FIELDS.index("batch_end")] is True
    [p1, p2, p3] = group_points(a)
    assert [p1.point.ts_ms, p2.point.ts_ms, p3.point.ts_ms] == [T0, T0 + 10_000, T0 + 30_000]
    # the watermark before each record: none until the stream has a time (A's second record confirms it)
    assert [p1.hint, p2.hint, p3.hint] == [NO_HINT, NO_HINT, T0 + 50_000 - 60_001]
    assert [p1.position, p3.position] == ["file:/data/x.jsonl:1", "file:/data/x.jsonl:4"]
    assert p1.point.latitude == -22.7 and p1.point.work_state_id == 3 and p1.raw == lines[0]
    assert p1.point.asset_guid == "A" and p1.point.site_guid == "S"


def test_the_points_cross_to_java_as_one_pickled_value_and_come_back_equal():
    import pickle

    [(_, a)] = _parse([[rec("A", "2024-01-15T06:00:00.000Z"), rec("A", "2024-01-15T06:00:01.000Z")]])
    crossed = (a[0], a[1], a[2], pickle.loads(pickle.dumps(a[3])))  # what PICKLED_BYTE_ARRAY does
    assert group_points(crossed) == group_points(a)


def test_hints_carry_over_from_batch_to_batch():
    first, second, third = _parse([[rec("A", "2024-01-15T06:00:00.000Z")], [rec("A", "2024-01-15T06:00:01.000Z")],
                                   [rec("A", "2024-01-15T06:00:02.000Z")]])  # fmt: skip
    assert _hints(first) == _hints(second) == [NO_HINT] and _hints(third) == [T0 + 1000 - 60_001]


def test_invalid_records_go_to_the_dead_letter_side_output_with_reason_and_position():
    bad = '{"asset_guid":"A","site_guid":"S","timestamp":"yesterday","latitude":1,"longitude":2,"work_state_id":3}'
    [(tag, row)] = _parse([[bad]])
    assert tag is DEAD_LETTER_TAG
    letter = dict(zip(DEAD_LETTER_FIELDS, row, strict=True))
    assert letter["reason"] == "BAD_TIMESTAMP"
    assert letter["source"] == "file:/data/x.jsonl:1" and letter["raw"] == bad and letter["asset_guid"] == "A"
    assert letter["dead_letter_id"] == dead_letter_id("file:x", "BAD_TIMESTAMP", bad)
    assert letter["raw_size"] == len(bad)


def test_invalid_records_do_not_move_the_hint():
    out = _parse([["not json", rec("A", "2024-01-15T06:00:00.000Z"), rec("A", "2024-01-15T06:00:01.000Z"),
                   rec("A", "2024-01-15T06:00:02.000Z")]])  # fmt: skip
    assert out[0][0] is DEAD_LETTER_TAG
    assert _hints(out[1]) == [NO_HINT, NO_HINT, T0 + 1000 - 60_001]


def test_future_timestamps_are_rejected_when_checked():
    fn = _function("k", 1000, check_future=True)
    [(tag, row)] = list(fn.process_element((["kinesis:s:shardId-000000000001:4962"],
                                            [rec("A", "2999-01-01T00:00:00.000Z")]), None))  # fmt: skip
    assert tag is DEAD_LETTER_TAG and row[3] == "TIMESTAMP_OUT_OF_RANGE"
    assert row[2] == "kinesis:s:shardId-000000000001:4962"


def test_a_record_without_position_is_dead_lettered_with_the_source_label():
    fn = _function("simulator", 1000)
    [(tag, row)] = list(fn.process_element(([None], ["{"]), None))
    assert tag is DEAD_LETTER_TAG and row[2] == "simulator"
    assert row[0] == dead_letter_id("simulator", row[3], "{")


def test_the_same_bad_record_at_two_positions_has_one_id():
    first, second = _parse([["not json", "not json"]])
    assert first[1][0] == second[1][0]
    assert (first[1][2], second[1][2]) == ("file:/data/x.jsonl:1", "file:/data/x.jsonl:2")


class _Group:
    """A metric group that keeps what is registered: gauges as {(label, name): read()}."""

    def __init__(self, gauges: dict, label: str = "") -> None:
        self.gauges = gauges
        self.label = label

    def add_group(self, key: str, value: str | None = None) -> _Group:
        return _Group(self.gauges, value if value is not None else self.label)

    def counter(self, name: str):
        return SimpleNamespace(inc=lambda n=1: None)

    def gauge(self, name: str, read) -> None:
        self.gauges[(self.label, name)] = read


def test_each_sites_arrival_lag_and_hold_are_gauges():
    gauges: dict = {}
    fn = ParseFunction("file:x", 60_000, 60_000, check_future=False)
    fn.open(SimpleNamespace(get_metrics_group=lambda: _Group(gauges)))
    trucks = "ABCDEFGHIJKLMNOPQRST"  # enough trucks for an hour to be the evidence a measured hold needs
    lines = [rec(truck, f"2024-01-15T06:{m:02d}:{s:02d}.000Z") for m in range(60) for s in (0, 30) for truck in trucks]
    lines += [rec(truck, f"2024-01-15T06:57:{s:02d}.000Z") for s in range(1, 30) for truck in "AB"]  # 3 min late
    list(fn.process_element(([None] * len(lines), lines), None))
    figures = fn.parser.lateness.figures()["S"]
    assert figures.hold_ms > 0 and figures.arrival_lag_p99_ms >= 60_000
    assert gauges[("S", "lateHoldMs")]() == figures.hold_ms
    assert gauges[("S", "arrivalLagP50Ms")]() == figures.arrival_lag_p50_ms
    assert gauges[("S", "arrivalLagP99Ms")]() == figures.arrival_lag_p99_ms
    assert gauges[("S", "lateHoldWarm")]() == 1
