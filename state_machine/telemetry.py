"""Parsing and validation of raw telemetry records (one JSON object per record).

``parse_record`` turns raw bytes/str into a ``TelemetryPoint`` or an ``Invalid`` with a stable,
upper-case reason code. It is pure (the current time is a parameter) and never raises for any
input. Checks run in this order; the first failure wins:

==========================  ===================================================================
Reason                      Meaning
==========================  ===================================================================
TOO_LARGE                   raw record longer than 64 KiB (UTF-8 bytes), checked before parsing
BAD_JSON                    not valid UTF-8 JSON (includes NaN/Infinity literals and numbers
                            that overflow a double), or the top level is not an object
MISSING_FIELD               a required field is absent or null; detail lists the field names
BAD_TYPE                    wrong JSON type: ids not strings, timestamp not string/number,
                            coordinates not numbers, work_state_id not an integer (strict:
                            booleans are never numbers, 3.0 is not an integer)
BAD_ASSET_ID                asset_guid empty/blank, longer than 128 chars or has control chars
BAD_SITE_ID                 same rules for site_guid
BAD_TIMESTAMP               not an ISO 8601 timestamp of the accepted forms (or a non-finite
                            number)
NO_TIMEZONE                 ISO 8601 timestamp without 'Z' or a UTC offset
TIMESTAMP_OUT_OF_RANGE      before 2000-01-01T00:00:00Z, after 9999-12-31, or (when ``now_ms``
                            is given) more than ``max_future_s`` ahead of now
NON_FINITE_COORDINATE       latitude/longitude NaN or infinite
LAT_OUT_OF_RANGE            latitude outside [-90, 90]
LON_OUT_OF_RANGE            longitude outside [-180, 180]
NO_GPS_FIX                  latitude == 0 and longitude == 0 (receiver without a fix)
UNKNOWN_WORK_STATE          work_state_id is an integer other than 2 (IDLING) or 3 (WORKING)
==========================  ===================================================================

Accepted timestamps:

* ISO 8601 ``YYYY-MM-DD[T| ]HH:MM:SS[.fraction][Z|±HH:MM|±HHMM]``; the fraction may have any
  number of digits and is truncated to milliseconds; 'Z' may be lower case. Converted to UTC
  epoch milliseconds.
* a JSON number (not a boolean) holding epoch time: values greater than 1e11 are milliseconds,
  smaller values are seconds (fractions kept to the millisecond, rounded).

Extra fields are ignored. Coordinates may be JSON integers; they are returned as floats and a
negative zero is normalised to 0.0. ``format_record`` writes the canonical JSON line that
``parse_record`` reads back exactly.
"""

from __future__ import annotations

import math
import re
from datetime import date
from typing import Any, NamedTuple

import orjson

from state_machine.model import WORK_STATES, TelemetryPoint, new_record

MAX_RECORD_BYTES = 64 * 1024
MAX_ID_LENGTH = 128
MIN_TS_MS = 946_684_800_000  # 2000-01-01T00:00:00Z
MAX_TS_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z
EPOCH_MS_THRESHOLD = 1e11  # numeric timestamps above this are ms, otherwise seconds

TOO_LARGE = "TOO_LARGE"
BAD_JSON = "BAD_JSON"
MISSING_FIELD = "MISSING_FIELD"
BAD_TYPE = "BAD_TYPE"
BAD_ASSET_ID = "BAD_ASSET_ID"
BAD_SITE_ID = "BAD_SITE_ID"
BAD_TIMESTAMP = "BAD_TIMESTAMP"
NO_TIMEZONE = "NO_TIMEZONE"
TIMESTAMP_OUT_OF_RANGE = "TIMESTAMP_OUT_OF_RANGE"
NON_FINITE_COORDINATE = "NON_FINITE_COORDINATE"
LAT_OUT_OF_RANGE = "LAT_OUT_OF_RANGE"
LON_OUT_OF_RANGE = "LON_OUT_OF_RANGE"
NO_GPS_FIX = "NO_GPS_FIX"
UNKNOWN_WORK_STATE = "UNKNOWN_WORK_STATE"

REASONS: tuple[str, ...] = (
    TOO_LARGE, BAD_JSON, MISSING_FIELD, BAD_TYPE, BAD_ASSET_ID, BAD_SITE_ID, BAD_TIMESTAMP,
    NO_TIMEZONE, TIMESTAMP_OUT_OF_RANGE, NON_FINITE_COORDINATE, LAT_OUT_OF_RANGE, LON_OUT_OF_RANGE,
    NO_GPS_FIX, UNKNOWN_WORK_STATE,
)

REQUIRED_FIELDS: tuple[str, ...] = (
    "asset_guid", "site_guid", "timestamp", "latitude", "longitude", "work_state_id",
)

_DETAIL_MAX = 200
_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")
_ISO = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[T ]([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.([0-9]+))?"
    r"(?:([Zz])|([+-])([0-9]{2}):?([0-9]{2}))?"
)
_FAST_ISO = re.compile(r"([0-9]{4}-[0-9]{2}-[0-9]{2})T([0-9]{2}):([0-9]{2}):([0-9]{2})\.([0-9]{3})Z")
_DAY_CACHE: dict[str, int] = {}
_MINUTE_MS: dict[str, int] = {}  # "YYYY-MM-DDTHH:MM" -> epoch ms of that minute (see _iso_to_ms)
_SECOND_MS: dict[str, int] = {}  # ":SS.mmmZ" -> ms into the minute
_NUMBER = (int, float)


class Invalid(NamedTuple):
    """A rejected record: stable reason code, human detail, and what could be read of it."""

    reason: str
    detail: str
    asset_guid: str | None = None
    ts_ms: int | None = None


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


_GOOD_IDS: set[str] = set()  # ids already accepted (fleets are small; bounded below)


def _id_problem(value: str) -> str | None:
    """Why a guid string is unacceptable, or None when it is fine."""
    if value in _GOOD_IDS:
        return None
    problem = _id_problem_uncached(value)
    if problem is None:
        if len(_GOOD_IDS) >= 100_000:
            _GOOD_IDS.clear()
        _GOOD_IDS.add(value)
    return problem


def _id_problem_uncached(value: str) -> str | None:
    if not value or value.isspace():
        return "empty"
    if len(value) > MAX_ID_LENGTH:
        return f"longer than {MAX_ID_LENGTH} characters ({len(value)})"
    if value.isascii() and value.isprintable():
        return None
    if _CONTROL.search(value):
        return "contains control characters"
    return None


def _epoch_days(day: str) -> int | None:
    """Days since 1970-01-01 of an ASCII "YYYY-MM-DD" (cached), None for an impossible date."""
    try:
        days = date(int(day[0:4]), int(day[5:7]), int(day[8:10])).toordinal() - _EPOCH_ORDINAL
    except ValueError:
        return None
    if len(_DAY_CACHE) >= 4096:
        _DAY_CACHE.clear()
    _DAY_CACHE[day] = days
    return days


def _iso_to_ms(text: str) -> int | str:
    """Epoch ms for an ISO 8601 string, or a reason code (BAD_TIMESTAMP / NO_TIMEZONE)."""
    # the common form "YYYY-MM-DDTHH:MM:SS.mmmZ" as two cached halves: the minute ("YYYY-MM-DDTHH:MM")
    # and ":SS.mmmZ", each stored only after a whole timestamp holding it was validated, so any two
    # known halves make a valid timestamp
    minute = _MINUTE_MS.get(text[:16])
    if minute is not None:
        second = _SECOND_MS.get(text[16:])
        if second is not None:
            return minute + second
    m = _FAST_ISO.fullmatch(text)
    if m is not None:
        day, hh, mi, ss, ms = m.groups()
        days = _DAY_CACHE.get(day)
        if days is None:
            days = _epoch_days(day)
            if days is None:
                return BAD_TIMESTAMP
        h, mnt, s = int(hh), int(mi), int(ss)
        if h > 23 or mnt > 59 or s > 59:
            return BAD_TIMESTAMP
        if len(_MINUTE_MS) >= 4096:
            _MINUTE_MS.clear()
        if len(_SECOND_MS) >= 60_000:  # at most 60,000 distinct ":SS.mmmZ" anyway
            _SECOND_MS.clear()
        second = s * 1000 + int(ms)
        _MINUTE_MS[text[:16]] = minute = ((days * 24 + h) * 60 + mnt) * 60_000
        _SECOND_MS[text[16:]] = second
        return minute + second
    m = _ISO.fullmatch(text)
    if m is None:
        return BAD_TIMESTAMP
    year, month, day, hh, mi, ss, frac, zulu, sign, oh, om = m.groups()
    try:
        days = date(int(year), int(month), int(day)).toordinal() - _EPOCH_ORDINAL
    except ValueError:
        return BAD_TIMESTAMP
    h, mnt, s = int(hh), int(mi), int(ss)
    if h > 23 or mnt > 59 or s > 59:
        return BAD_TIMESTAMP
    if zulu is None and sign is None:
        return NO_TIMEZONE
    ms = int((frac + "00")[:3]) if frac else 0
    total = ((days * 24 + h) * 60 + mnt) * 60_000 + s * 1000 + ms
    if sign is not None:
        off_h, off_m = int(oh), int(om)
        if off_h > 23 or off_m > 59:
            return BAD_TIMESTAMP
        offset = (off_h * 60 + off_m) * 60_000
        total = total - offset if sign == "+" else total + offset
    return total


def _number_to_ms(value: float) -> int | str:
    if not math.isfinite(value):
        return BAD_TIMESTAMP
    if abs(value) > 1e16:  # far outside any plausible epoch, avoid huge ints
        return TIMESTAMP_OUT_OF_RANGE
    if value > EPOCH_MS_THRESHOLD:
        return int(round(value))
    return int(round(value * 1000))


def _utf8_size(raw: str) -> int:
    return len(raw.encode("utf-8", "surrogatepass"))


def parse_record(raw: str | bytes, now_ms: int | None = None,
                 max_future_s: float = 300.0) -> TelemetryPoint | Invalid:
    """Parse and validate one raw telemetry record; never raises (see module docstring)."""
    try:
        size = len(raw)
    except TypeError:
        return Invalid(BAD_JSON, f"record is {type(raw).__name__}, not bytes or str")
    if size > MAX_RECORD_BYTES // 4 and isinstance(raw, str):
        size = _utf8_size(raw)
    if size > MAX_RECORD_BYTES:
        return Invalid(TOO_LARGE, f"{size} bytes > {MAX_RECORD_BYTES}")
    try:
        obj = orjson.loads(raw)
    except (orjson.JSONDecodeError, TypeError) as exc:
        return Invalid(BAD_JSON, str(exc)[:_DETAIL_MAX])
    if type(obj) is not dict:
        return Invalid(BAD_JSON, f"top-level JSON value is {type(obj).__name__}, not an object")

    asset = obj.get("asset_guid")
    site = obj.get("site_guid")
    ts = obj.get("timestamp")
    lat = obj.get("latitude")
    lon = obj.get("longitude")
    ws = obj.get("work_state_id")
    if asset is None or site is None or ts is None or lat is None or lon is None or ws is None:
        missing = [name for name in REQUIRED_FIELDS if obj.get(name) is None]
        good = asset if type(asset) is str and _id_problem(asset) is None else None
        return Invalid(MISSING_FIELD, ", ".join(missing), good)

    # Types (strict: bool is a subclass of int and is rejected explicitly).
    if type(asset) is not str:
        return Invalid(BAD_TYPE, f"asset_guid must be a string, got {type(asset).__name__}")
    problem = _id_problem(asset)
    if problem is not None:
        return Invalid(BAD_ASSET_ID, f"asset_guid {problem}: {_short(asset)}")
    if type(site) is not str:
        return Invalid(BAD_TYPE, f"site_guid must be a string, got {type(site).__name__}", asset)
    tt = type(ts)
    if tt is not str and tt not in _NUMBER:
        return Invalid(BAD_TYPE, f"timestamp must be a string or number, got {tt.__name__}", asset)
    if type(lat) not in _NUMBER:
        return Invalid(BAD_TYPE, f"latitude must be a number, got {type(lat).__name__}", asset)
    if type(lon) not in _NUMBER:
        return Invalid(BAD_TYPE, f"longitude must be a number, got {type(lon).__name__}", asset)
    if type(ws) is not int:
        return Invalid(BAD_TYPE, f"work_state_id must be an integer, got {type(ws).__name__}", asset)

    problem = _id_problem(site)
    if problem is not None:
        return Invalid(BAD_SITE_ID, f"site_guid {problem}: {_short(site)}", asset)

    ts_ms = _iso_to_ms(ts) if tt is str else _number_to_ms(ts)
    if type(ts_ms) is str:
        detail = "no 'Z' or UTC offset" if ts_ms == NO_TIMEZONE else "not an accepted timestamp"
        return Invalid(ts_ms, f"{detail}: {_short(ts)}", asset)
    if ts_ms < MIN_TS_MS or ts_ms > MAX_TS_MS:
        return Invalid(TIMESTAMP_OUT_OF_RANGE, f"{_short(ts)} outside 2000-01-01..9999-12-31", asset, None)
    if now_ms is not None and ts_ms > now_ms + max_future_s * 1000.0:
        return Invalid(TIMESTAMP_OUT_OF_RANGE,
                       f"{_short(ts)} is {(ts_ms - now_ms) / 1000.0:.3f} s in the future "
                       f"(max {max_future_s:g} s)", asset, ts_ms)

    lat = float(lat)
    lon = float(lon)
    if not (math.isfinite(lat) and math.isfinite(lon)):
        return Invalid(NON_FINITE_COORDINATE, f"latitude={lat!r} longitude={lon!r}", asset, ts_ms)
    if not -90.0 <= lat <= 90.0:
        return Invalid(LAT_OUT_OF_RANGE, f"latitude {lat!r} outside [-90, 90]", asset, ts_ms)
    if not -180.0 <= lon <= 180.0:
        return Invalid(LON_OUT_OF_RANGE, f"longitude {lon!r} outside [-180, 180]", asset, ts_ms)
    if lat == 0.0 and lon == 0.0:
        return Invalid(NO_GPS_FIX, "latitude and longitude are both 0", asset, ts_ms)
    if ws not in WORK_STATES:
        return Invalid(UNKNOWN_WORK_STATE, f"work_state_id {_short(ws)} not in {WORK_STATES}", asset, ts_ms)
    return new_record(TelemetryPoint, (asset, site, ts_ms, lat + 0.0, lon + 0.0, ws))


def format_timestamp(ts_ms: int) -> str:
    """Epoch ms to the canonical ``YYYY-MM-DDTHH:MM:SS.mmmZ`` (proleptic Gregorian, UTC)."""
    days, rest = divmod(ts_ms, 86_400_000)
    d = date.fromordinal(days + _EPOCH_ORDINAL)
    secs, ms = divmod(rest, 1000)
    hh, secs = divmod(secs, 3600)
    mi, ss = divmod(secs, 60)
    return f"{d.year:04d}-{d.month:02d}-{d.day:02d}T{hh:02d}:{mi:02d}:{ss:02d}.{ms:03d}Z"


def format_record(point: TelemetryPoint) -> str:
    """The canonical JSON line of a point (no trailing newline); parse_record reads it back."""
    return orjson.dumps(
        {
            "asset_guid": point.asset_guid,
            "site_guid": point.site_guid,
            "timestamp": format_timestamp(point.ts_ms),
            "latitude": float(point.latitude),
            "longitude": float(point.longitude),
            "work_state_id": int(point.work_state_id),
        }
    ).decode()
