"""ParseFunction: valid points with the replay's per-record watermark hint, invalid -> dead letters
that carry the record's source position (and keep the label-based id of the replay)."""

from __future__ import annotations

from types import SimpleNamespace

from job.db import dead_letter_id
from udfs.parse import DEAD_LETTER_TAG, ParseFunction
from udfs.rows import DEAD_LETTER_FIELDS, NO_HINT


def _parse(lines: list[str], lag_ms: int = 60_000) -> list:
    fn = ParseFunction("file:x", lag_ms, check_future=False)
    fn.open(SimpleNamespace(get_metrics_group=lambda: (_ for _ in ()).throw(RuntimeError())))
    out = []
    for n, line in enumerate(lines, 1):
        out.extend(fn.process_element((f"file:/data/x.jsonl:{n}", line), None))
    return out


def rec(asset: str, ts: str) -> str:
    return (f'{{"asset_guid":"{asset}","site_guid":"S","timestamp":"{ts}","latitude":-22.7,'
            f'"longitude":118.7,"work_state_id":3}}')  # fmt: skip


def test_valid_records_carry_the_watermark_hint_of_the_records_before():
    out = _parse([rec("A", "2024-01-15T06:00:00.000Z"), rec("B", "2024-01-15T06:10:00.000Z"),
                  rec("A", "2024-01-15T06:05:00.000Z")])  # fmt: skip
    t0 = 1705298400000
    assert [o[:3] for o in out] == [("A", "S", t0), ("B", "S", t0 + 600_000), ("A", "S", t0 + 300_000)]
    assert [o[6] for o in out] == [NO_HINT, t0 - 60_001, t0 + 600_000 - 60_001]
    assert out[0][3:6] == (-22.7, 118.7, 3)
    assert out[0][7] == rec("A", "2024-01-15T06:00:00.000Z")


def test_invalid_records_go_to_the_dead_letter_side_output_with_reason():
    bad = '{"asset_guid":"A","site_guid":"S","timestamp":"yesterday","latitude":1,"longitude":2,"work_state_id":3}'
    [(tag, row)] = _parse([bad])
    assert tag is DEAD_LETTER_TAG
    letter = dict(zip(DEAD_LETTER_FIELDS, row, strict=True))
    assert letter["reason"] == "BAD_TIMESTAMP"
    assert letter["source"] == "file:/data/x.jsonl:1" and letter["raw"] == bad and letter["asset_guid"] == "A"
    assert letter["dead_letter_id"] == dead_letter_id("file:x", "BAD_TIMESTAMP", bad)
    assert letter["raw_size"] == len(bad)


def test_invalid_records_do_not_move_the_hint():
    out = _parse(["not json", rec("A", "2024-01-15T06:00:00.000Z"), rec("A", "2024-01-15T06:00:01.000Z")])
    assert out[0][0] is DEAD_LETTER_TAG
    assert out[1][6] == NO_HINT and out[2][6] == 1705298400000 - 60_001


def test_future_timestamps_are_rejected_when_checked():
    fn = ParseFunction("k", 1000, max_future_s=300)
    fn.open(SimpleNamespace(get_metrics_group=lambda: (_ for _ in ()).throw(RuntimeError())))
    [(tag, row)] = list(fn.process_element(("kinesis:s:shardId-000000000001:4962", rec("A", "2999-01-01T00:00:00.000Z")),
                                           None))  # fmt: skip
    assert tag is DEAD_LETTER_TAG and row[3] == "TIMESTAMP_OUT_OF_RANGE"
    assert row[2] == "kinesis:s:shardId-000000000001:4962"


def test_keyed_output_has_the_shape_of_key_by_plus_timestamp():
    fn = ParseFunction("file:x", 60_000, check_future=False, keyed_output=True)
    fn.open(SimpleNamespace(get_metrics_group=lambda: (_ for _ in ()).throw(RuntimeError())))
    [(keyed, ts)] = list(fn.process_element(("file:x:1", rec("A", "2024-01-15T06:00:00.000Z")), None))
    assert ts == 1705298400000
    assert keyed[0] == "A" and keyed[1][:3] == ("A", "S", ts)


def test_a_record_without_position_is_dead_lettered_with_the_source_label():
    fn = ParseFunction("simulator", 1000, check_future=False)
    fn.open(SimpleNamespace(get_metrics_group=lambda: (_ for _ in ()).throw(RuntimeError())))
    [(tag, row)] = list(fn.process_element((None, "{"), None))
    assert tag is DEAD_LETTER_TAG and row[2] == "simulator"
    assert row[0] == dead_letter_id("simulator", row[3], "{")


def test_the_same_bad_record_at_two_positions_has_one_id():
    first, second = _parse(["not json", "not json"])
    assert first[1][0] == second[1][0]
    assert (first[1][2], second[1][2]) == ("file:/data/x.jsonl:1", "file:/data/x.jsonl:2")
