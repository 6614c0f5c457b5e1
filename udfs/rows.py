"""Compact row layouts passed between the Flink operators (and into the JDBC sinks).

Everything is a flat tuple of primitives with an explicit Flink type, so nothing is pickled per
record. Times stay epoch milliseconds (BIGINT) until the sink converts them to timestamps; a field
``x_ms`` lands in column ``x_utc``.

* POINT: a validated telemetry point on its way to the keyed cycle operator, plus the watermark
  hint (``max event time seen before it - out_of_orderness - 1``, the per-record watermark of the
  replay; see udfs.cycle_function) and the raw record (for NO_REFERENCE_DATA / UNKNOWN_ASSET dead
  letters, which keep the original text).
* REFERENCE: one broadcast reference update ``(kind, key, payload)``.
* CYCLE / STATUS / DEAD_LETTER / ALERT: sink rows (CycleRecord fields, TruckStatus fields, dead letters,
  operator alerts).
"""

from __future__ import annotations

import time
from dataclasses import fields
from typing import Any

from pyflink.common import Row, Types
from pyflink.common.typeinfo import TypeInformation

from state_machine.model import Alert, CycleRecord, TruckStatus

# --------------------------------------------------------------------------- point

POINT_FIELDS = ("asset_guid", "site_guid", "ts_ms", "latitude", "longitude", "work_state_id", "wm_hint", "raw")
POINT_TYPE: TypeInformation = Types.TUPLE(
    [Types.STRING(), Types.STRING(), Types.LONG(), Types.DOUBLE(), Types.DOUBLE(), Types.INT(), Types.LONG(),
     Types.STRING()]
)  # fmt: skip
NO_HINT = -(2**63)

# --------------------------------------------------------------------------- reference broadcast

REF_SITE = "site"
REF_SITE_DELETED = "site_del"
REF_ASSET = "asset"
REF_ASSET_DELETED = "asset_del"
REF_READY = "ready"
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
    """A DEAD_LETTER_ROW_TYPE row; id and text cleaning from job.db.dead_letter_row. The id hashes
    ``source`` (the source label); the ``source`` column holds the record's ``position`` when known."""
    from job.db import dead_letter_id, dead_letter_row

    received = int(time.time() * 1000) if received_ms is None else received_ms
    row = dead_letter_row(position or source, reason, detail, raw, asset_guid, None, received)
    letter_id = row[0] if position is None else dead_letter_id(source, reason, raw)
    return Row(letter_id, received, row[2], row[3], row[4], row[5], event_ms, row[7], int(row[8]))


def alert_row(alert: Alert) -> Row:
    """An engine Alert as an ALERT_ROW_TYPE row (id and text cleaning from job.db.alert_row)."""
    from job.db import alert_row as db_alert_row

    row = db_alert_row(alert.alert_type, alert.asset_guid, alert.site_guid, alert.event_ms, alert.latitude,
                       alert.longitude, alert.detail, alert.key)  # fmt: skip
    lat = None if alert.latitude is None else float(alert.latitude)
    lon = None if alert.longitude is None else float(alert.longitude)
    return Row(row[0], alert.alert_type, alert.asset_guid, alert.site_guid, int(alert.event_ms), lat, lon, row[7])


def row_values(row: Any) -> tuple:
    """Plain tuple of a Row / tuple (for tests)."""
    return tuple(row)
