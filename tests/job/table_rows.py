"""Writing and reading the job's tables from tests with psycopg2: rows in ``stores.postgres`` column order
and the upsert the job's sink runs (``stores.postgres.jdbc_upsert_sql`` with psycopg2 placeholders)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import fields
from datetime import UTC, datetime, timedelta
from typing import Any

from state_machine.identity import MAX_RAW_CHARS, alert_id, as_bytes, clean_text, dead_letter_id
from state_machine.model import CycleRecord, TruckStatus
from stores.postgres import TableNames, jdbc_upsert_sql

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MS = timedelta(milliseconds=1)


def upsert_query(names: TableNames, table_kind: str, newer_only: bool = False) -> str:
    """The job's upsert statement with psycopg2 ``%s`` placeholders."""
    return jdbc_upsert_sql(names, table_kind, newer_only).replace("?", "%s")


def ms_to_datetime(ts_ms: int | None) -> datetime | None:
    """Epoch ms to an aware UTC datetime (exact), None stays None."""
    if ts_ms is None:
        return None
    return EPOCH + timedelta(milliseconds=ts_ms)


def datetime_to_ms(value: datetime | None) -> int | None:
    """Aware datetime to epoch ms (floor), None stays None."""
    if value is None:
        return None
    return (value - EPOCH) // _ONE_MS


_CYCLE_FIELD_NAMES = tuple(f.name for f in fields(CycleRecord))
_CYCLE_MS_FIELDS = frozenset(name for name in _CYCLE_FIELD_NAMES if name.endswith("_ms"))


def cycle_record_to_row(record: CycleRecord) -> tuple:
    """A cycle as a row in CYCLE_COLUMNS order (epoch ms -> aware UTC datetime)."""
    return tuple(
        ms_to_datetime(getattr(record, name)) if name in _CYCLE_MS_FIELDS else getattr(record, name)
        for name in _CYCLE_FIELD_NAMES
    )


def cycle_record_from_row(row: Sequence[Any]) -> CycleRecord:
    """Inverse of cycle_record_to_row (a row selected in CYCLE_COLUMNS order)."""
    values = {
        name: datetime_to_ms(value) if name in _CYCLE_MS_FIELDS else value
        for name, value in zip(_CYCLE_FIELD_NAMES, row, strict=False)
    }
    return CycleRecord(**values)


def truck_status_to_row(status: TruckStatus) -> tuple:
    """A truck status as a row in PROCESS_INFO_COLUMNS order."""
    return (
        status.asset_guid,
        status.site_guid,
        ms_to_datetime(status.last_event_ms),
        status.latitude,
        status.longitude,
        status.work_state_id,
        status.current_segment,
        status.area,
        status.area_guid,
    )








def dead_letter_row(source: str, reason: str, detail: str | None, raw: str | bytes,
                    asset_guid: str | None = None, event_ms: int | None = None,
                    received_ms: int | None = None) -> tuple:
    """A dead letter as a row in DEAD_LETTER_COLUMNS order.

    ``raw`` is stored as text (invalid UTF-8 replaced, NUL replaced, truncated to 64 KiB
    characters); ``raw_size`` is the original size in bytes. ``received_ms`` defaults to now.
    """
    data = as_bytes(raw)
    text = data[: MAX_RAW_CHARS * 4].decode("utf-8", "replace")
    received = ms_to_datetime(received_ms) if received_ms is not None else datetime.now(UTC)
    return (
        dead_letter_id(source, reason, data),
        received,
        clean_text(source, 1024),
        reason,
        clean_text(detail, 4096),
        clean_text(asset_guid, 1024),
        ms_to_datetime(event_ms),
        clean_text(text, MAX_RAW_CHARS),
        len(data),
    )




def alert_row(alert_type: str, asset_guid: str | None, site_guid: str | None, event_ms: int | None,
              latitude: float | None, longitude: float | None, detail: str | None = None,
              key: str = "") -> tuple:
    """An alert as a row in ALERT_COLUMNS order (id from ``alert_id``)."""
    return (
        alert_id(alert_type, asset_guid, event_ms, key),
        alert_type,
        asset_guid,
        site_guid,
        ms_to_datetime(event_ms),
        latitude,
        longitude,
        clean_text(detail, 4096),
    )
