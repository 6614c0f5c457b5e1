"""Compact row layouts passed between the Flink operators (and into the JDBC sinks).

Rows are flat tuples of primitives with explicit Flink types (a truck group's points are one pickled
value per truck and batch), so nothing is pickled per record. Times stay epoch milliseconds (BIGINT) until the sink converts them to timestamps; a field
``x_ms`` lands in column ``x_utc``.

* RAW_RECORD: a source's record ``(position, raw)`` (job.sources).
* GROUP / KEYED_GROUP: one truck's points of one parse batch, as the parse step emits them keyed by
  truck (udfs.parse) and the cycle operator reads them (udfs.cycle_function).
* REFERENCE: one broadcast reference update ``(kind, key, payload)``.
* CYCLE / STATUS / DEAD_LETTER / ALERT: sink rows (CycleRecord fields, TruckStatus fields, dead letters,
  operator alerts), and ENVELOPE, the cycle operator's output that carries one of them.
"""

from __future__ import annotations

import time
from dataclasses import fields

from pyflink.common import Row, Types
from pyflink.common.typeinfo import TypeInformation

from state_machine.identity import MAX_RAW_CHARS, alert_id, as_bytes, clean_text, dead_letter_id
from state_machine.model import Alert, CycleRecord, TelemetryPoint, TruckStatus, new_record
from state_machine.stream import ParsedPoint

# --------------------------------------------------------------------------- raw records and truck groups

RAW_RECORD_TYPE = Types.ROW_NAMED(["position", "raw"], [Types.STRING(), Types.STRING()])
"""A source's record: (where it came from or None, the raw text)."""
GROUP_FIELDS = ("asset", "wm_ts", "batch_end", "points")
GROUP_TYPE = Types.ROW_NAMED(list(GROUP_FIELDS),
                             [Types.STRING(), Types.LONG(), Types.BOOLEAN(), Types.PICKLED_BYTE_ARRAY()])  # fmt: skip
"""One truck's valid points of one parse batch, in arrival order (udfs.parse). ``points`` is
the columns ``(sites, timestamps, lats, lons, work_states, hints, raws, positions)``, each a tuple,
pickled by PyFlink as one byte string: one value to convert per crossing instead of one per point
and field (columns pickle and unpickle faster than one tuple per point)."""
GROUP_WM_FIELD = GROUP_FIELDS.index("wm_ts")
GROUP_END_FIELD = GROUP_FIELDS.index("batch_end")
KEYED_GROUP_TYPE = Types.ROW([Types.STRING(), GROUP_TYPE])
"""What the parse step emits: ``(asset_guid, GROUP_TYPE row)``, the shape of a Flink keyed stream's
records in PyFlink (key first), so no extra Python operator has to add the key."""
KEYED_VALUE_FIELD = 1


def group_row(asset: str, points: list[ParsedPoint], batch_end: bool) -> Row:
    """A truck's points of a batch as a GROUP_TYPE row."""
    telemetry, hints, raws, positions, contributions = zip(*points, strict=True)
    _, sites, timestamps, lats, lons, work_states = zip(*telemetry, strict=True)
    return Row(asset, max(contributions), batch_end, (sites, timestamps, lats, lons, work_states, hints, raws, positions))


def group_timestamps(row: Row) -> tuple[int, ...]:
    """The event times of a GROUP_TYPE row's points."""
    return row[3][1]


def group_points(row: Row) -> list[ParsedPoint]:
    """Inverse of group_row (the watermark contributions are not carried: 0)."""
    asset = row[0]
    return [new_record(ParsedPoint, (new_record(TelemetryPoint, (asset, site, ts, lat, lon, ws)), hint, raw, position, 0))
            for site, ts, lat, lon, ws, hint, raw, position in zip(*row[3], strict=True)]  # fmt: skip

# --------------------------------------------------------------------------- reference broadcast

REF_SITE = "site"
REF_SITE_DELETED = "site_del"
REF_ASSET = "asset"
REF_ASSET_DELETED = "asset_del"
REF_LOADED = "loaded"
"""Marker that follows the updates of the first complete load: the keyed operator's event time waits
for it (job.pipeline.reference_event_time)."""
LOADED_MARKER = (REF_LOADED, "", "")
REFERENCE_TYPE: TypeInformation = Types.TUPLE([Types.STRING(), Types.STRING(), Types.STRING()])

# --------------------------------------------------------------------------- sink rows


def _flink_type(name: str, annotation: str) -> TypeInformation:
    if name.endswith("_ms"):
        return Types.LONG()
    if annotation.startswith("str"):
        return Types.STRING()
    if annotation.startswith("float"):
        return Types.DOUBLE()
    if annotation.startswith("int"):
        return Types.INT()
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
    [Types.STRING(), Types.STRING(), Types.LONG(), Types.DOUBLE(), Types.DOUBLE(), Types.INT(), Types.STRING(),
     Types.STRING(), Types.STRING()],
)  # fmt: skip

DEAD_LETTER_FIELDS: tuple[str, ...] = (
    "dead_letter_id", "received_ms", "source", "reason", "detail", "asset_guid", "event_ms", "raw", "raw_size",
)  # fmt: skip
DEAD_LETTER_ROW_TYPE: TypeInformation = Types.ROW_NAMED(
    list(DEAD_LETTER_FIELDS),
    [Types.STRING(), Types.LONG(), Types.STRING(), Types.STRING(), Types.STRING(), Types.STRING(), Types.LONG(),
     Types.STRING(), Types.INT()],
)  # fmt: skip

ALERT_FIELDS: tuple[str, ...] = (
    "alert_id", "alert_type", "asset_guid", "site_guid", "event_ms", "latitude", "longitude", "detail",
)  # fmt: skip
ALERT_ROW_TYPE: TypeInformation = Types.ROW_NAMED(
    list(ALERT_FIELDS),
    [Types.STRING(), Types.STRING(), Types.STRING(), Types.STRING(), Types.LONG(), Types.DOUBLE(), Types.DOUBLE(),
     Types.STRING()],
)  # fmt: skip

# The cycle operator's output: (tag, cycle, status, dead_letter, alert), only the tagged part set.
OUT_TMP = 0
OUT_CYCLE = 1
OUT_STATUS = 2
OUT_DEAD_LETTER = 3
OUT_ALERT = 4
ENVELOPE_FIELDS = ("tag", "cycle", "status", "dead_letter", "alert")
ENVELOPE_TYPE: TypeInformation = Types.ROW_NAMED(
    list(ENVELOPE_FIELDS), [Types.INT(), CYCLE_ROW_TYPE, STATUS_ROW_TYPE, DEAD_LETTER_ROW_TYPE, ALERT_ROW_TYPE]
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
