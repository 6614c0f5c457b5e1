"""Tests of telemetry parsing/validation: one test per reason, properties, a hostile corpus."""

from __future__ import annotations

import datetime
import json
import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from state_machine import telemetry as t
from state_machine.model import TelemetryPoint
from state_machine.telemetry import Invalid, format_record, format_timestamp, parse_record

GOOD = {
    "asset_guid": "truck-HAU-001-SITE-456",
    "site_guid": "SITE-456-NORTH-PIT",
    "timestamp": "2024-01-15T14:30:25.123Z",
    "latitude": -23.7749123,
    "longitude": 133.4194567,
    "work_state_id": 3,
}
GOOD_MS = 1705329025123


def rec(**changes: object) -> bytes:
    data = {**GOOD, **changes}
    return json.dumps({k: v for k, v in data.items() if v is not _DROP}, allow_nan=True).encode()


_DROP = object()


def reason(raw: str | bytes, **kw: object) -> str:
    result = parse_record(raw, **kw)
    assert isinstance(result, Invalid), result
    return result.reason


def test_valid_record() -> None:
    point = parse_record(rec())
    assert point == TelemetryPoint(GOOD["asset_guid"], GOOD["site_guid"], GOOD_MS, -23.7749123, 133.4194567, 3)
    assert parse_record(rec().decode()) == point
    assert parse_record(bytearray(rec())) == point


def test_extra_fields_ignored() -> None:
    assert isinstance(parse_record(rec(speed=12.5, extra={"a": [1, 2]})), TelemetryPoint)


def test_integer_coordinates_and_idling() -> None:
    point = parse_record(rec(latitude=-23, longitude=133, work_state_id=2))
    assert isinstance(point, TelemetryPoint)
    assert type(point.latitude) is float and point.latitude == -23.0
    assert point.work_state_id == 2


@pytest.mark.parametrize(
    ("ts", "expected"),
    [
        ("2024-01-15T14:30:25.123Z", GOOD_MS),
        ("2024-01-15T14:30:25Z", GOOD_MS - 123),
        ("2024-01-15 14:30:25.123Z", GOOD_MS),
        ("2024-01-15T14:30:25.123z", GOOD_MS),
        ("2024-01-15T14:30:25.1Z", GOOD_MS - 23),
        ("2024-01-15T14:30:25.123999999Z", GOOD_MS),  # truncated to ms
        ("2024-01-15T14:30:25.123+00:00", GOOD_MS),
        ("2024-01-15T16:30:25.123+02:00", GOOD_MS),
        ("2024-01-15T16:30:25.123+0200", GOOD_MS),
        ("2024-01-15T09:00:25.123-05:30", GOOD_MS),
        ("2024-01-16T00:30:25.123+10:00", GOOD_MS),
        (GOOD_MS, GOOD_MS),  # epoch ms (> 1e11)
        (GOOD_MS / 1000.0, GOOD_MS),  # epoch seconds with fraction
        (1705329025, GOOD_MS - 123),  # epoch seconds
        ("2000-01-01T00:00:00.000Z", t.MIN_TS_MS),
        ("2024-02-29T00:00:00Z", 1709164800000),
    ],
)
def test_timestamp_forms(ts: object, expected: int) -> None:
    point = parse_record(rec(timestamp=ts))
    assert isinstance(point, TelemetryPoint), point
    assert point.ts_ms == expected


def test_too_large_checked_before_parsing() -> None:
    raw = b"{" + b" " * (t.MAX_RECORD_BYTES + 1)
    assert reason(raw) == t.TOO_LARGE
    big_str = '{"asset_guid": "' + "\u00e9" * 40_000 + '"}'  # 40k chars but 80k bytes
    assert reason(big_str) == t.TOO_LARGE


@pytest.mark.parametrize(
    "raw",
    [b"", b"   ", b"not json", b"{", b"[1, 2]", b"null", b"42", b'"str"', b"\xff\xfe{}",
     b'{"a": NaN}', b'{"latitude": Infinity}', b'{"a": 1e400}', b'{"a": "\\ud800"}'],
)
def test_bad_json(raw: bytes) -> None:
    assert reason(raw) == t.BAD_JSON


@pytest.mark.parametrize("field", t.REQUIRED_FIELDS)
def test_missing_field(field: str) -> None:
    result = parse_record(rec(**{field: _DROP}))
    assert isinstance(result, Invalid) and result.reason == t.MISSING_FIELD
    assert result.detail == field
    assert parse_record(rec(**{field: None})).reason == t.MISSING_FIELD  # null counts as missing


def test_missing_fields_all_named() -> None:
    result = parse_record(b'{"asset_guid": "a"}')
    assert result.reason == t.MISSING_FIELD
    assert result.detail == "site_guid, timestamp, latitude, longitude, work_state_id"
    assert result.asset_guid == "a"


@pytest.mark.parametrize(
    "changes",
    [
        {"asset_guid": 123}, {"asset_guid": ["a"]}, {"site_guid": True}, {"site_guid": {"a": 1}},
        {"timestamp": True}, {"timestamp": ["2024-01-15T14:30:25Z"]}, {"latitude": "-23.7"},
        {"latitude": True}, {"longitude": [1.0]}, {"longitude": False}, {"work_state_id": 3.0},
        {"work_state_id": True}, {"work_state_id": "3"}, {"work_state_id": 1e30},
    ],
)
def test_bad_type(changes: dict) -> None:
    assert reason(rec(**changes)) == t.BAD_TYPE


@pytest.mark.parametrize("value", ["", "   ", "x" * 129, "a\x00b", "tab\there", "nl\n", "del\x7f", "c1\x85"])
def test_bad_ids(value: str) -> None:
    assert reason(rec(asset_guid=value)) == t.BAD_ASSET_ID
    result = parse_record(rec(site_guid=value))
    assert result.reason == t.BAD_SITE_ID and result.asset_guid == GOOD["asset_guid"]


def test_id_limits_accepted() -> None:
    assert isinstance(parse_record(rec(asset_guid="x" * 128)), TelemetryPoint)
    assert isinstance(parse_record(rec(site_guid="Ünïcødé 矿山 ⛏️ 🚚")), TelemetryPoint)


@pytest.mark.parametrize(
    "ts",
    ["", "yesterday", "2024-01-15", "2024-13-01T00:00:00Z", "2024-02-30T00:00:00Z", "2023-02-29T00:00:00Z",
     "2024-01-15T24:00:00Z", "2024-01-15T14:60:00Z", "2024-01-15T14:30:60Z", "2024-01-15T14:30:25.Z",
     "2024-01-15T14:30:25+25:00", "2024-01-15T14:30:25+05:60", "2024-01-15T14:30:25 Z",
     "１９９９-01-01T00:00:00Z", "2024-01-15T14:30:25.123Z trailing", "+024-01-15T14:30:25Z",
     "2024-W03-1T14:30:25Z", "20240115T143025Z"],
)
def test_bad_timestamp(ts: object) -> None:
    assert reason(rec(timestamp=ts)) == t.BAD_TIMESTAMP


@pytest.mark.parametrize("ts", ["2024-01-15T14:30:25", "2024-01-15T14:30:25.123", "2024-01-15 14:30:25"])
def test_no_timezone(ts: str) -> None:
    assert reason(rec(timestamp=ts)) == t.NO_TIMEZONE


@pytest.mark.parametrize(
    "ts", ["1999-12-31T23:59:59.999Z", "1970-01-01T00:00:00Z", 0, -5, 946684799, 1e20, -1e300]
)
def test_timestamp_out_of_range(ts: object) -> None:
    assert reason(rec(timestamp=ts)) == t.TIMESTAMP_OUT_OF_RANGE


def test_future_limit_uses_now_parameter() -> None:
    now = GOOD_MS - 300_000
    assert isinstance(parse_record(rec(), now_ms=now), TelemetryPoint)  # exactly 300 s ahead: ok
    result = parse_record(rec(), now_ms=now - 1)
    assert result.reason == t.TIMESTAMP_OUT_OF_RANGE and result.ts_ms == GOOD_MS
    assert isinstance(parse_record(rec(), now_ms=now - 1, max_future_s=301), TelemetryPoint)
    assert isinstance(parse_record(rec(timestamp="2090-01-01T00:00:00Z")), TelemetryPoint)  # no now


def test_non_finite_coordinate() -> None:
    assert reason(rec(latitude=float("nan"))) == t.BAD_JSON  # NaN literal: orjson rejects it
    assert reason(b'{"latitude": 1e999}') == t.BAD_JSON


def test_non_finite_coordinate_after_parse(monkeypatch: pytest.MonkeyPatch) -> None:
    # A JSON decoder that accepts NaN/Infinity (e.g. a different fast path) must still be caught.
    monkeypatch.setattr(t.orjson, "loads", lambda raw: json.loads(raw))
    assert reason(rec(latitude=float("nan"))) == t.NON_FINITE_COORDINATE
    assert reason(rec(longitude=float("-inf"))) == t.NON_FINITE_COORDINATE
    assert reason(rec(timestamp=float("nan"))) == t.BAD_TIMESTAMP
    assert reason(rec(timestamp=float("inf"))) == t.BAD_TIMESTAMP


@pytest.mark.parametrize("lat", [90.0000001, -91, 1e308, 1e30])
def test_lat_out_of_range(lat: float) -> None:
    assert reason(rec(latitude=lat)) == t.LAT_OUT_OF_RANGE


@pytest.mark.parametrize("lon", [180.0000001, -181, 10**30])
def test_lon_out_of_range(lon: float) -> None:
    assert reason(rec(longitude=lon)) == t.LON_OUT_OF_RANGE


def test_coordinate_limits_accepted() -> None:
    for lat, lon in ((90, 180), (-90, -180), (0, 1e-9), (1e-300, 0)):
        assert isinstance(parse_record(rec(latitude=lat, longitude=lon)), TelemetryPoint)


@pytest.mark.parametrize(("lat", "lon"), [(0, 0), (0.0, 0.0), (-0.0, 0.0), (-0.0, -0.0), (0, -0.0)])
def test_no_gps_fix(lat: float, lon: float) -> None:
    result = parse_record(rec(latitude=lat, longitude=lon))
    assert result.reason == t.NO_GPS_FIX and result.ts_ms == GOOD_MS


@pytest.mark.parametrize("ws", [0, 1, 4, -3, 2**63, 10**18])
def test_unknown_work_state(ws: int) -> None:
    assert reason(rec(work_state_id=ws)) == t.UNKNOWN_WORK_STATE


def test_negative_zero_normalised() -> None:
    point = parse_record(rec(latitude=-0.0, longitude=12.5))
    assert isinstance(point, TelemetryPoint)
    assert math.copysign(1.0, point.latitude) == 1.0


def test_reasons_documented() -> None:
    for code in t.REASONS:
        assert code in (t.__doc__ or ""), code


def test_invalid_is_namedtuple() -> None:
    result = parse_record(b"[]")
    assert result == Invalid(t.BAD_JSON, result.detail, None, None)
    assert result._fields == ("reason", "detail", "asset_guid", "ts_ms")


def test_non_bytes_input_never_raises() -> None:
    assert reason(None) == t.BAD_JSON  # type: ignore[arg-type]
    assert reason(12) == t.BAD_JSON  # type: ignore[arg-type]


# ------------------------------------------------------------------------------ hostile corpus

HOSTILE: list[tuple[bytes | str, str | None]] = [
    (rec(asset_guid="'; DROP TABLE dx.asset;--"), None),
    (rec(site_guid="1' OR '1'='1"), None),
    (rec(asset_guid="Robert'); DROP TABLE students;--"), None),
    (rec(asset_guid="\u202etruck\u202d"), None),  # bidi overrides are not control chars
    (rec(asset_guid="車両-🚚-ß-ﬁ-\u0301" * 8), None),
    (rec(asset_guid="🚚" * 129), t.BAD_ASSET_ID),
    (b'{"asset_guid": "' + b"A" * (1024 * 1024) + b'"}', t.TOO_LARGE),
    (b"[" * 1000 + b"]" * 1000, t.BAD_JSON),
    (b'{"a":' * 2000 + b"1" + b"}" * 2000, t.BAD_JSON),  # nesting beyond orjson's limit
    (rec(asset_guid={"nested": {"deep": [1, 2, 3]}}), t.BAD_TYPE),
    (rec(latitude=[1.0, 2.0]), t.BAD_TYPE),
    (b"[" + rec() + b"]", t.BAD_JSON),
    (rec(asset_guid=None, site_guid=None), t.MISSING_FIELD),
    (b'{"asset_guid":null,"site_guid":null,"timestamp":null,"latitude":null,"longitude":null,'
     b'"work_state_id":null}', t.MISSING_FIELD),
    (rec(latitude=10**400), t.BAD_JSON),  # overflows a double
    (rec(latitude=-0.0, longitude=-0.0), t.NO_GPS_FIX),
    (rec(work_state_id=10**30), t.BAD_TYPE),  # parsed as float by orjson
    (rec(work_state_id=-(2**63)), t.UNKNOWN_WORK_STATE),
    (rec(timestamp=10**30), t.TIMESTAMP_OUT_OF_RANGE),
    (rec(timestamp="9" * 10_000), t.BAD_TIMESTAMP),
    (rec(timestamp="2024-01-15T14:30:25." + "9" * 5000 + "Z"), None),
    (b"\x00" * 100, t.BAD_JSON),
    (b"\xef\xbb\xbf" + rec(), t.BAD_JSON),  # BOM
    ("{\"asset_guid\": \"\udc80\"}", t.BAD_JSON),  # lone surrogate in a str
    (rec(asset_guid="x\u2028y"), None),
]


@pytest.mark.parametrize(("raw", "expected"), HOSTILE, ids=[f"hostile{i}" for i in range(len(HOSTILE))])
def test_hostile_corpus(raw: bytes | str, expected: str | None) -> None:
    result = parse_record(raw)
    if expected is None:
        assert isinstance(result, TelemetryPoint), result
    else:
        assert isinstance(result, Invalid) and result.reason == expected, result
        assert len(result.detail) <= 400


# ------------------------------------------------------------------------------ properties

@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
def test_random_bytes_never_raise(raw: bytes) -> None:
    result = parse_record(raw)
    assert isinstance(result, (TelemetryPoint, Invalid))


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
_field_values = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=40),
    st.sampled_from(["2024-01-15T14:30:25.123Z", "2024-01-15T14:30:25", "", "2", "3"]), st.just([]), st.just({}),
)


@settings(max_examples=300)
@given(_json)
def test_random_json_never_raises(value: object) -> None:
    result = parse_record(json.dumps(value))  # stdlib: also ints beyond 64 bits
    assert isinstance(result, (TelemetryPoint, Invalid))


@settings(max_examples=300)
@given(st.dictionaries(st.sampled_from(t.REQUIRED_FIELDS), _field_values), st.integers(0, 2**45))
def test_random_records_never_raise(changes: dict, now_ms: int) -> None:
    result = parse_record(json.dumps({**GOOD, **changes}), now_ms=now_ms)
    assert isinstance(result, (TelemetryPoint, Invalid))
    if isinstance(result, Invalid):
        assert result.reason in t.REASONS


_ids = st.text(min_size=1, max_size=128).filter(
    lambda s: not s.isspace() and t._CONTROL.search(s) is None
)
_points = st.builds(
    TelemetryPoint,
    asset_guid=_ids,
    site_guid=_ids,
    ts_ms=st.integers(t.MIN_TS_MS, t.MAX_TS_MS),
    latitude=st.floats(-90, 90, allow_nan=False),
    longitude=st.floats(-180, 180, allow_nan=False),
    work_state_id=st.sampled_from([2, 3]),
).filter(lambda p: not (p.latitude == 0 and p.longitude == 0)).map(
    lambda p: p._replace(latitude=p.latitude + 0.0, longitude=p.longitude + 0.0)
)


@settings(max_examples=400)
@given(_points)
def test_format_parse_round_trip(point: TelemetryPoint) -> None:
    line = format_record(point)
    assert "\n" not in line
    assert parse_record(line) == point
    assert parse_record(line.encode()) == point


@settings(max_examples=300)
@given(st.integers(t.MIN_TS_MS, t.MAX_TS_MS))
def test_format_timestamp_round_trip(ts_ms: int) -> None:
    text = format_timestamp(ts_ms)
    assert len(text) == 24
    assert t._iso_to_ms(text) == ts_ms
    assert t._iso_to_ms(text.replace("T", " ").replace("Z", "+00:00")) == ts_ms


def _is_date(text: str) -> bool:
    try:
        datetime.date(int(text[:4]), int(text[5:7]), int(text[8:10]))
    except ValueError:
        return False
    return True


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.integers(t.MIN_TS_MS, 4_102_444_800_000), st.integers(0, 99), st.integers(1, 31)),
                min_size=1, max_size=30))  # fmt: skip
def test_cached_timestamp_halves_never_accept_or_misread_anything(items):
    """The common-form cache (minute and second halves) gives what the full parse gives, and a bad
    second or day is rejected even when the other half is cached."""
    for ts_ms, second, day in items:
        text = format_timestamp(ts_ms)
        assert t._iso_to_ms(text) == ts_ms and t._iso_to_ms(text) == ts_ms  # cold, then cached
        other_second = f"{text[:17]}{second:02d}{text[19:]}"
        expected = ts_ms + (second - int(text[17:19])) * 1000 if second <= 59 else t.BAD_TIMESTAMP
        assert t._iso_to_ms(other_second) == expected
        other_day = f"{text[:8]}{day:02d}{text[10:]}"  # e.g. the 31st of a 30-day month
        assert (t._iso_to_ms(other_day) != t.BAD_TIMESTAMP) == _is_date(other_day)
