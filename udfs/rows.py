"""Compact row layouts passed between the Flink operators (and into the JDBC sinks).

Rows are flat tuples of primitives with explicit Flink types (a truck group's points are one pickled
value per truck and batch), so nothing is pickled per record. Times stay epoch milliseconds (BIGINT) until the sink converts them to timestamps; a field
``x_ms`` lands in column ``x_utc``.

* RAW_RECORD: a source's record ``(position, raw)`` (job.sources).
* GROUP / KEYED_GROUP: one truck's points of one parse batch, as the parse step emits them keyed by
  truck (udfs.parse) and the cycle operator reads them (udfs.cycle_function).
* REFERENCE: one broadcast reference update ``(kind, key, payload)``.
* CYCLE / STATUS / DEAD_LETTER / ALERT / TRUCK_HOUR: sink rows (CycleRecord fields, TruckStatus fields,
  dead letters, operator alerts, a truck's hour), and ENVELOPE, the cycle operator's output that carries
  one of them or a LOADER_EVENT.
* LOADER_EVENT / KEYED_LOADER_EVENT: what the cycle operator sends the loader stage, keyed by loader: a
  closed cycle, a load visit or a truck's presence at the loader (udfs.loader_function).
* LOAD_VISIT / LOADER_HOUR / LOADER_STATUS: the loader stage's sink rows, and LOADER_ENVELOPE, its
  output that carries one of them or a closed cycle.
"""

from __future__ import annotations

import time
from dataclasses import fields

from pyflink.common import Row, Types
from pyflink.common.typeinfo import TypeInformation

from state_machine.identity import MAX_RAW_CHARS, alert_id, as_bytes, clean_text, dead_letter_id
from state_machine.model import (
    Alert,
    CycleRecord,
    LoaderHour,
    LoaderPresence,
    LoaderStatus,
    LoadVisit,
    ServedVisit,
    TelemetryPoint,
    TruckHour,
    TruckStatus,
    new_record,
)
from state_machine.stream import ParsedPoint

# one instance of each field type for every row type: PyFlink converts each instance to its Java type
# once, with eight calls to the JVM, when a job graph is built
STRING, LONG, DOUBLE, INT, BOOLEAN = Types.STRING(), Types.LONG(), Types.DOUBLE(), Types.INT(), Types.BOOLEAN()

# --------------------------------------------------------------------------- raw records and truck groups

RAW_RECORD_TYPE = Types.ROW_NAMED(["position", "raw"], [STRING, STRING])
"""A source's record: (where it came from or None, the raw text)."""
GROUP_FIELDS = ("asset", "wm_ts", "batch_end", "points")
GROUP_TYPE = Types.ROW_NAMED(list(GROUP_FIELDS), [STRING, LONG, BOOLEAN, Types.PICKLED_BYTE_ARRAY()])
"""One truck's valid points of one parse batch, in arrival order (udfs.parse). ``points`` is
the columns ``(sites, timestamps, lats, lons, work_states, hints, raws, positions, holds)``, each a tuple,
pickled by PyFlink as one byte string: one value to convert per crossing instead of one per point
and field (columns pickle and unpickle faster than one tuple per point)."""
GROUP_WM_FIELD = GROUP_FIELDS.index("wm_ts")
GROUP_END_FIELD = GROUP_FIELDS.index("batch_end")
KEYED_GROUP_TYPE = Types.ROW([STRING, GROUP_TYPE])
"""What the parse step emits: ``(asset_guid, GROUP_TYPE row)``, the shape of a Flink keyed stream's
records in PyFlink (key first), so no extra Python operator has to add the key."""
KEYED_VALUE_FIELD = 1


def group_row(asset: str, points: list[ParsedPoint], batch_end: bool) -> Row:
    """A truck's points of a batch as a GROUP_TYPE row."""
    telemetry, hints, raws, positions, contributions, holds = zip(*points, strict=True)
    _, sites, timestamps, lats, lons, work_states = zip(*telemetry, strict=True)
    return Row(asset, max(contributions), batch_end,
               (sites, timestamps, lats, lons, work_states, hints, raws, positions, holds))


def group_timestamps(row: Row) -> tuple[int, ...]:
    """The event times of a GROUP_TYPE row's points."""
    return row[3][1]


def group_points(row: Row) -> list[ParsedPoint]:
    """Inverse of group_row (the watermark contributions are not carried: 0)."""
    asset = row[0]
    return [new_record(ParsedPoint, (new_record(TelemetryPoint, (asset, site, ts, lat, lon, ws)), hint, raw, position, 0,
                                     hold))
            for site, ts, lat, lon, ws, hint, raw, position, hold in zip(*row[3], strict=True)]  # fmt: skip

# --------------------------------------------------------------------------- reference broadcast

REF_SITE = "site"
REF_SITE_DELETED = "site_del"
REF_ASSET = "asset"
REF_ASSET_DELETED = "asset_del"
REF_LOADED = "loaded"
"""Marker that follows the updates of the first complete load: the keyed operator's event time waits
for it (job.pipeline.reference_event_time)."""
LOADED_MARKER = (REF_LOADED, "", "")
REFERENCE_TYPE: TypeInformation = Types.TUPLE([STRING, STRING, STRING])

# --------------------------------------------------------------------------- sink rows


def _flink_type(name: str, annotation: str) -> TypeInformation:
    if name.endswith("_ms"):
        return LONG
    if annotation.startswith("str"):
        return STRING
    if annotation.startswith("float"):
        return DOUBLE
    if annotation.startswith("int"):
        return INT
    raise TypeError(f"no Flink type for field {name}: {annotation}")


CYCLE_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(CycleRecord))
CYCLE_ROW_TYPE: TypeInformation = Types.ROW_NAMED(
    list(CYCLE_FIELDS), [_flink_type(f.name, str(f.type)) for f in fields(CycleRecord)]
)
_CYCLE_INT_FIELDS = tuple(
    i for i, f in enumerate(fields(CycleRecord)) if not f.name.endswith("_ms") and str(f.type).startswith("int")
)
_CYCLE_FLOAT_FIELDS = tuple(i for i, f in enumerate(fields(CycleRecord)) if str(f.type).startswith("float"))

STATUS_FIELDS: tuple[str, ...] = TruckStatus._fields
STATUS_ROW_TYPE: TypeInformation = Types.ROW_NAMED(
    list(STATUS_FIELDS),
    [STRING, STRING, LONG, DOUBLE, DOUBLE, INT, STRING, STRING, STRING],
)

DEAD_LETTER_FIELDS: tuple[str, ...] = (
    "dead_letter_id", "received_ms", "source", "reason", "detail", "asset_guid", "event_ms", "raw", "raw_size",
)  # fmt: skip
DEAD_LETTER_ROW_TYPE: TypeInformation = Types.ROW_NAMED(
    list(DEAD_LETTER_FIELDS),
    [STRING, LONG, STRING, STRING, STRING, STRING, LONG, STRING, INT],
)

ALERT_FIELDS: tuple[str, ...] = (
    "alert_id", "alert_type", "asset_guid", "site_guid", "event_ms", "latitude", "longitude", "detail",
)  # fmt: skip
ALERT_ROW_TYPE: TypeInformation = Types.ROW_NAMED(
    list(ALERT_FIELDS),
    [STRING, STRING, STRING, STRING, LONG, DOUBLE, DOUBLE, STRING],
)

TRUCK_HOUR_FIELDS: tuple[str, ...] = (
    "asset_guid", "hour_start_ms", "site_guid", "working_seconds", "idle_seconds", "loaded_distance_m",
    "empty_distance_m", "cycles_closed",
)  # fmt: skip
TRUCK_HOUR_ROW_TYPE: TypeInformation = Types.ROW_NAMED(
    list(TRUCK_HOUR_FIELDS),
    [STRING, LONG, STRING, DOUBLE, DOUBLE, DOUBLE, DOUBLE, INT],
)

# --------------------------------------------------------------------------- to the loader stage

VISIT_ROW_TYPE: TypeInformation = Types.ROW_NAMED(
    list(LoadVisit._fields),
    [STRING, STRING, STRING, LONG, LONG, LONG, LONG, BOOLEAN],
)
PRESENCE_ROW_TYPE: TypeInformation = Types.ROW_NAMED(
    list(LoaderPresence._fields),
    [STRING, STRING, STRING, STRING, LONG, LONG],
)
LOADER_EVENT_FIELDS = ("loader", "cycle", "visit", "presence")
LOADER_EVENT_TYPE: TypeInformation = Types.ROW_NAMED(
    list(LOADER_EVENT_FIELDS), [STRING, CYCLE_ROW_TYPE, VISIT_ROW_TYPE, PRESENCE_ROW_TYPE]
)
"""One event for a loader: a closed cycle that began with a load there, a load visit, or a truck's
presence (only one of the three set)."""
KEYED_LOADER_EVENT_TYPE: TypeInformation = Types.ROW([STRING, LOADER_EVENT_TYPE])
"""``(loader_guid, LOADER_EVENT row)``: the shape of a Flink keyed stream's records in PyFlink."""

# The cycle operator's output: one tagged part set (the loader event carries its own key).
OUT_TMP = 0
OUT_LOADER = 1
OUT_STATUS = 2
OUT_DEAD_LETTER = 3
OUT_ALERT = 4
OUT_TRUCK_HOUR = 5
ENVELOPE_FIELDS = ("tag", "cycle", "status", "dead_letter", "alert", "truck_hour", "loader")
ENVELOPE_TYPE: TypeInformation = Types.ROW_NAMED(
    list(ENVELOPE_FIELDS),
    [INT, CYCLE_ROW_TYPE, STATUS_ROW_TYPE, DEAD_LETTER_ROW_TYPE, ALERT_ROW_TYPE, TRUCK_HOUR_ROW_TYPE,
     KEYED_LOADER_EVENT_TYPE],
)  # fmt: skip

# --------------------------------------------------------------------------- the loader stage's rows

LOAD_VISIT_FIELDS: tuple[str, ...] = (
    "asset_guid", "load_start_ms", "site_guid", "loader_asset_guid", "first_stop_ms", "arrival_ms",
    "service_start_ms", "departure_ms", "open_at_end", "queue_seconds",
)  # fmt: skip
LOAD_VISIT_ROW_TYPE: TypeInformation = Types.ROW_NAMED(
    list(LOAD_VISIT_FIELDS),
    [STRING, LONG, STRING, STRING, LONG, LONG, LONG, LONG, INT, DOUBLE],
)
LOADER_HOUR_FIELDS: tuple[str, ...] = (
    "loader_asset_guid", "hour_start_ms", "site_guid", "loads", "busy_seconds", "hang_seconds", "queue_seconds",
    "trucks_served",
)  # fmt: skip
LOADER_HOUR_ROW_TYPE: TypeInformation = Types.ROW_NAMED(
    list(LOADER_HOUR_FIELDS),
    [STRING, LONG, STRING, INT, DOUBLE, DOUBLE, DOUBLE, INT],
)
LOADER_STATUS_FIELDS: tuple[str, ...] = (
    "loader_asset_guid", "site_guid", "in_service_asset", "in_service_since_ms", "waiting_count", "waiting",
    "oldest_wait_since_ms", "idle_since_ms", "event_ms",
)  # fmt: skip
LOADER_STATUS_ROW_TYPE: TypeInformation = Types.ROW_NAMED(
    list(LOADER_STATUS_FIELDS),
    [STRING, STRING, STRING, LONG, INT, STRING, LONG, LONG, LONG],
)

# The loader stage's output: one tagged part set.
L_CYCLE = 0
L_VISIT = 1
L_HOUR = 2
L_STATUS = 3
LOADER_ENVELOPE_FIELDS = ("tag", "cycle", "load_visit", "loader_hour", "loader_status")
LOADER_ENVELOPE_TYPE: TypeInformation = Types.ROW_NAMED(
    list(LOADER_ENVELOPE_FIELDS),
    [INT, CYCLE_ROW_TYPE, LOAD_VISIT_ROW_TYPE, LOADER_HOUR_ROW_TYPE, LOADER_STATUS_ROW_TYPE],
)


def cycle_row(rec: CycleRecord) -> Row:
    """A CycleRecord as a CYCLE_ROW_TYPE row (ints/floats coerced to their declared types)."""
    values = [getattr(rec, name) for name in CYCLE_FIELDS]
    for i in _CYCLE_INT_FIELDS:
        if values[i] is not None:
            values[i] = int(values[i])
    for i in _CYCLE_FLOAT_FIELDS:
        if values[i] is not None:
            values[i] = float(values[i])
    return Row(*values)


def status_row(status: TruckStatus) -> Row:
    """A TruckStatus as a STATUS_ROW_TYPE row."""
    return Row(
        status.asset_guid, status.site_guid, int(status.last_event_ms), float(status.latitude),
        float(status.longitude), int(status.work_state_id), status.current_segment, status.area, status.area_guid,
    )  # fmt: skip


def dead_letter(
    source: str,
    reason: str,
    detail: str | None,
    raw: str | bytes,
    asset_guid: str | None = None,
    event_ms: int | None = None,
    received_ms: int | None = None,
    position: str | None = None,
) -> Row:
    """A DEAD_LETTER_ROW_TYPE row. The id hashes ``source`` (the source label), reason and raw record;
    the ``source`` column holds the record's ``position`` when known. ``raw`` is kept as text (invalid
    UTF-8 and NUL replaced, at most MAX_RAW_CHARS), ``raw_size`` is its size in bytes."""
    data = as_bytes(raw)
    text = data[: MAX_RAW_CHARS * 4].decode("utf-8", "replace")
    received = int(time.time() * 1000) if received_ms is None else received_ms
    return Row(dead_letter_id(source, reason, data), received, clean_text(position or source, 1024), reason,
               clean_text(detail, 4096), clean_text(asset_guid, 1024), event_ms, clean_text(text, MAX_RAW_CHARS),
               len(data))  # fmt: skip


def alert_row(alert: Alert) -> Row:
    """An engine Alert as an ALERT_ROW_TYPE row."""
    lat = None if alert.latitude is None else float(alert.latitude)
    lon = None if alert.longitude is None else float(alert.longitude)
    return Row(alert_id(alert.alert_type, alert.asset_guid, alert.event_ms, alert.key), alert.alert_type,
               alert.asset_guid, alert.site_guid, int(alert.event_ms), lat, lon, clean_text(alert.detail, 4096))  # fmt: skip


def truck_hour_row(hour: TruckHour) -> Row:
    """A TruckHour as a TRUCK_HOUR_ROW_TYPE row."""
    return Row(hour.asset_guid, int(hour.hour_start_ms), hour.site_guid, float(hour.working_seconds),
               float(hour.idle_seconds), float(hour.loaded_distance_m), float(hour.empty_distance_m),
               int(hour.cycles_closed))  # fmt: skip


def loader_event(loader: str, cycle: CycleRecord | None = None, visit: LoadVisit | None = None,
                 presence: LoaderPresence | None = None) -> Row:
    """A KEYED_LOADER_EVENT_TYPE row carrying one of a closed cycle, a visit or a presence."""
    return Row(loader, Row(loader, None if cycle is None else cycle_row(cycle), None if visit is None else Row(*visit),
                           None if presence is None else Row(*presence)))  # fmt: skip


def event_cycle(row: Row) -> CycleRecord:
    """The CycleRecord of a CYCLE_ROW_TYPE row."""
    return CycleRecord(*row)


def event_visit(row: Row) -> LoadVisit:
    """The LoadVisit of a VISIT_ROW_TYPE row."""
    return LoadVisit(*row)


def event_presence(row: Row) -> LoaderPresence:
    """The LoaderPresence of a PRESENCE_ROW_TYPE row."""
    return LoaderPresence(*row)


def load_visit_row(sv: ServedVisit) -> Row:
    """A served visit as a LOAD_VISIT_ROW_TYPE row."""
    v = sv.visit
    return Row(v.asset_guid, int(v.load_start_ms), v.site_guid, v.loader_guid, int(v.first_stop_ms),
               int(v.arrival_ms), None if sv.service_start_ms is None else int(sv.service_start_ms),
               int(v.departure_ms), int(v.open), float(sv.queue_seconds))  # fmt: skip


def loader_hour_row(hour: LoaderHour) -> Row:
    """A LoaderHour as a LOADER_HOUR_ROW_TYPE row."""
    return Row(hour.loader_guid, int(hour.hour_start_ms), hour.site_guid, int(hour.loads), float(hour.busy_seconds),
               float(hour.hang_seconds), float(hour.queue_seconds), int(hour.trucks_served))  # fmt: skip


def loader_status_row(status: LoaderStatus) -> Row:
    """A LoaderStatus as a LOADER_STATUS_ROW_TYPE row."""
    return Row(status.loader_guid, status.site_guid, status.in_service_asset, status.in_service_since_ms,
               int(status.waiting_count), status.waiting, status.oldest_wait_since_ms, status.idle_since_ms,
               int(status.event_ms))  # fmt: skip
