"""Writing and reading the job's tables from tests with psycopg2.

Rows are the product's own (``udfs.rows``: ``cycle_row``, ``status_row``, ``dead_letter``,
``alert_row``); ``sink_params`` binds one the way the job's JDBC sink does (an epoch-ms field feeds a
``timestamptz`` column as that UTC instant, everything else as it is), and ``upsert_query`` is the
sink's statement (``stores.postgres.jdbc_upsert_sql``) with psycopg2 placeholders. Nothing here
builds or cleans a row itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import fields
from datetime import UTC, datetime, timedelta
from typing import Any

from state_machine.model import CycleRecord
from stores.postgres import TableNames, column_list, jdbc_upsert_sql

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


def sink_params(kind: str, row: Sequence[Any]) -> tuple:
    """A ``udfs.rows`` row of a table kind as psycopg2 parameters in column order, bound as the
    JDBC sink binds it (epoch ms -> ``timestamptz``)."""
    columns = column_list(kind)
    values = list(row)
    if len(values) != len(columns):
        raise ValueError(f"a {kind} row has {len(values)} fields, the table {len(columns)} columns")
    return tuple(ms_to_datetime(v) if sql_type == "timestamptz" else v
                 for v, (_, sql_type) in zip(values, columns, strict=True))  # fmt: skip


_CYCLE_FIELD_NAMES = tuple(f.name for f in fields(CycleRecord))
_CYCLE_MS_FIELDS = frozenset(name for name in _CYCLE_FIELD_NAMES if name.endswith("_ms"))


def cycle_record_from_row(row: Sequence[Any]) -> CycleRecord:
    """A cycle read back from a table (columns selected in CYCLE_COLUMNS order)."""
    values = {
        name: datetime_to_ms(value) if name in _CYCLE_MS_FIELDS else value
        for name, value in zip(_CYCLE_FIELD_NAMES, row, strict=False)
    }
    return CycleRecord(**values)
