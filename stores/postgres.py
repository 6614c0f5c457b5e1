"""PostgreSQL: the asset-cycle tables (names, columns, the sinks' upsert statement), connections,
migrations and resets.

The tables are a drop-in replacement of the legacy service's (schema ``dx`` by default). The
schema and table names are configurable (``TableNames``) and validated as plain lower-case
identifiers; SQL is composed with ``psycopg2.sql.Identifier`` and values are always passed as
parameters.

Column constants (``CYCLE_COLUMNS``, ``PROCESS_INFO_COLUMNS``, ``DEAD_LETTER_COLUMNS``,
``ALERT_COLUMNS``, ...) are ``(name, sql_type)`` lists in the exact order of the rows built by
the job's sink rows (udfs.rows); the sink (assetcycle.sink.JdbcUpsertSink) runs the statement of
``jdbc_upsert_sql`` (JDBC, ``?`` placeholders).
Columns with a server default (``updated_at``, ``created_at``) are not part of these lists.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import psycopg2
from psycopg2 import sql
from psycopg2.extensions import connection, parse_dsn

from state_machine.model import CycleRecord
from stores.errors import UserError

IDENTIFIER_PATTERN = r"[a-z_][a-z0-9_]{0,62}"
_IDENTIFIER_RE = re.compile(IDENTIFIER_PATTERN)
MIGRATIONS_TABLE = "schema_migrations"
DEFAULT_SQL_DIR = Path(__file__).resolve().parents[1] / "sql"

TABLE_KINDS: tuple[str, ...] = (
    "asset", "asset_info", "cycle_tmp", "cycle", "process_info", "dead_letter", "alerts",
    "load_visit", "loader_hour", "loader_status", "truck_hour",
)
VIEW_KINDS: tuple[str, ...] = ("truck_hour_kpi", "site_hour_kpi")
"""Views over the tables (sql/005_loaders.sql), named like them."""


class IdentifierError(ValueError):
    """A schema or table name is not a plain lower-case SQL identifier."""


class DatabaseUnavailable(UserError, RuntimeError):
    """PostgreSQL could not be reached; the message names host:port and never the password."""


def validate_identifier(name: str, what: str = "identifier") -> str:
    """Return ``name`` if it matches ``[a-z_][a-z0-9_]{0,62}``; raise IdentifierError otherwise."""
    if not isinstance(name, str) or _IDENTIFIER_RE.fullmatch(name) is None:
        raise IdentifierError(f"invalid {what} {name!r}: expected {IDENTIFIER_PATTERN}")
    return name


def _index_name(table: str, suffix: str) -> str:
    return f"{table[: 63 - len(suffix) - 1]}_{suffix}"


@dataclass(frozen=True, slots=True)
class TableNames:
    """Schema and table names (defaults = the legacy names), validated on construction."""

    schema: str = "dx"
    asset: str = "asset"
    asset_info: str = "asset_info"
    cycle_tmp: str = "asset_cycle_tmp_vlx"
    cycle: str = "asset_cycle_vlx"
    process_info: str = "tx_process_info"
    dead_letter: str = "asset_cycle_dead_letter"
    alerts: str = "alerts"
    load_visit: str = "load_visit"
    loader_hour: str = "loader_hour_kpi"
    loader_status: str = "loader_status"
    truck_hour: str = "truck_hour"
    truck_hour_kpi: str = "truck_hour_kpi"
    site_hour_kpi: str = "site_hour_kpi"

    def __post_init__(self) -> None:
        validate_identifier(self.schema, "schema name")
        kinds = (*TABLE_KINDS, *VIEW_KINDS)
        tables = [getattr(self, kind) for kind in kinds]
        for kind, name in zip(kinds, tables, strict=True):
            validate_identifier(name, f"table name for {kind}")
            if name == MIGRATIONS_TABLE:
                raise IdentifierError(f"table name {name!r} is reserved")
        if len(set(tables)) != len(tables):
            raise IdentifierError(f"table names must be distinct: {tables}")

    @classmethod
    def from_mapping(cls, data: Mapping[str, str]) -> TableNames:
        """Build from a mapping of field -> name (unknown keys are an error)."""
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise IdentifierError(f"unknown table kind(s) {sorted(unknown)}; known: {sorted(known)}")
        return cls(**dict(data))

    def table_name(self, kind: str) -> str:
        """The bare name of a table or view kind (see TABLE_KINDS, VIEW_KINDS)."""
        if kind not in TABLE_KINDS and kind not in VIEW_KINDS:
            raise KeyError(f"unknown table kind {kind!r}; known: {TABLE_KINDS + VIEW_KINDS}")
        return getattr(self, kind)

    def table(self, kind: str) -> sql.Identifier:
        """``schema.table`` of a kind as a psycopg2 ``sql.Identifier``."""
        return sql.Identifier(self.schema, self.table_name(kind))

    def qualified(self, kind: str) -> str:
        """``"schema"."table"`` as text (for JDBC); safe because names are validated."""
        return f'"{self.schema}"."{self.table_name(kind)}"'

    def template_args(self) -> dict[str, sql.Identifier]:
        """Identifiers substituted into the ``sql/*.sql`` templates."""
        names = {"schema": self.schema, **{kind: getattr(self, kind) for kind in (*TABLE_KINDS, *VIEW_KINDS)}}
        names.update(
            ix_load_visit_loader=_index_name(self.load_visit, "loader_departure_idx"),
            ix_loader_hour_site=_index_name(self.loader_hour, "site_hour_idx"),
            ix_truck_hour_site=_index_name(self.truck_hour, "site_hour_idx"),
            ix_asset_type_site=_index_name(self.asset, "type_site_idx"),
            ix_cycle_site_start=_index_name(self.cycle, "site_start_idx"),
            ix_cycle_loader_start=_index_name(self.cycle, "loader_start_idx"),
            ix_cycle_status=_index_name(self.cycle, "status_idx"),
            ix_dead_letter_reason=_index_name(self.dead_letter, "reason_idx"),
        )
        return {key: sql.Identifier(value) for key, value in names.items()}


# ----------------------------------------------------------------------------- columns

def _cycle_columns() -> list[tuple[str, str]]:
    out = []
    for f in fields(CycleRecord):
        kind = str(f.type)
        if f.name.endswith("_ms"):
            out.append((f.name[:-3] + "_utc", "timestamptz"))
        elif kind.startswith("str"):
            out.append((f.name, "text"))
        elif kind.startswith("float"):
            out.append((f.name, "double precision"))
        elif kind.startswith("int"):
            out.append((f.name, "integer"))
        else:  # pragma: no cover - a new field type needs a mapping here and a migration
            raise TypeError(f"no SQL type for CycleRecord.{f.name}: {kind}")
    return out


CYCLE_COLUMNS: list[tuple[str, str]] = _cycle_columns()
"""Columns of both cycle tables (temporary and final), in CycleRecord field order."""
CYCLE_FIELD_FOR_COLUMN: dict[str, str] = {
    col: f.name for (col, _), f in zip(CYCLE_COLUMNS, fields(CycleRecord), strict=True)
}

PROCESS_INFO_COLUMNS: list[tuple[str, str]] = [
    ("asset_guid", "text"),
    ("site_guid", "text"),
    ("last_event_utc", "timestamptz"),
    ("latitude", "double precision"),
    ("longitude", "double precision"),
    ("work_state_id", "smallint"),
    ("current_segment", "text"),
    ("area", "text"),
    ("area_guid", "text"),
]
DEAD_LETTER_COLUMNS: list[tuple[str, str]] = [
    ("dead_letter_id", "text"),
    ("received_utc", "timestamptz"),
    ("source", "text"),
    ("reason", "text"),
    ("detail", "text"),
    ("asset_guid", "text"),
    ("event_utc", "timestamptz"),
    ("raw", "text"),
    ("raw_size", "integer"),
]
ALERT_COLUMNS: list[tuple[str, str]] = [
    ("alert_id", "text"),
    ("alert_type", "text"),
    ("asset_guid", "text"),
    ("site_guid", "text"),
    ("event_utc", "timestamptz"),
    ("latitude", "double precision"),
    ("longitude", "double precision"),
    ("detail", "text"),
]
ASSET_COLUMNS: list[tuple[str, str]] = [
    ("asset_guid", "text"),
    ("site_guid", "text"),
    ("asset_type", "text"),
    ("asset_name", "text"),
]
ASSET_INFO_COLUMNS: list[tuple[str, str]] = [
    ("asset_guid", "text"),
    ("site_guid", "text"),
    ("latitude", "double precision"),
    ("longitude", "double precision"),
]

LOAD_VISIT_COLUMNS: list[tuple[str, str]] = [
    ("asset_guid", "text"),
    ("load_start_utc", "timestamptz"),
    ("site_guid", "text"),
    ("loader_asset_guid", "text"),
    ("first_stop_utc", "timestamptz"),
    ("arrival_utc", "timestamptz"),
    ("service_start_utc", "timestamptz"),
    ("departure_utc", "timestamptz"),
    ("open_at_end", "smallint"),
    ("queue_seconds", "double precision"),
]
LOADER_HOUR_COLUMNS: list[tuple[str, str]] = [
    ("loader_asset_guid", "text"),
    ("hour_start_utc", "timestamptz"),
    ("site_guid", "text"),
    ("loads", "integer"),
    ("busy_seconds", "double precision"),
    ("hang_seconds", "double precision"),
    ("queue_seconds", "double precision"),
    ("trucks_served", "integer"),
]
LOADER_STATUS_COLUMNS: list[tuple[str, str]] = [
    ("loader_asset_guid", "text"),
    ("site_guid", "text"),
    ("in_service_asset", "text"),
    ("in_service_since_utc", "timestamptz"),
    ("waiting_count", "integer"),
    ("waiting", "text"),
    ("oldest_wait_since_utc", "timestamptz"),
    ("idle_since_utc", "timestamptz"),
    ("event_utc", "timestamptz"),
]
TRUCK_HOUR_COLUMNS: list[tuple[str, str]] = [
    ("asset_guid", "text"),
    ("hour_start_utc", "timestamptz"),
    ("site_guid", "text"),
    ("working_seconds", "double precision"),
    ("idle_seconds", "double precision"),
    ("loaded_distance_m", "double precision"),
    ("empty_distance_m", "double precision"),
    ("cycles_closed", "integer"),
]

_COLUMNS: dict[str, list[tuple[str, str]]] = {
    "asset": ASSET_COLUMNS,
    "asset_info": ASSET_INFO_COLUMNS,
    "cycle_tmp": CYCLE_COLUMNS,
    "cycle": CYCLE_COLUMNS,
    "process_info": PROCESS_INFO_COLUMNS,
    "dead_letter": DEAD_LETTER_COLUMNS,
    "alerts": ALERT_COLUMNS,
    "load_visit": LOAD_VISIT_COLUMNS,
    "loader_hour": LOADER_HOUR_COLUMNS,
    "loader_status": LOADER_STATUS_COLUMNS,
    "truck_hour": TRUCK_HOUR_COLUMNS,
}

KEY_COLUMNS: dict[str, tuple[str, ...]] = {
    "asset": ("asset_guid",),
    "asset_info": ("asset_guid",),
    "cycle_tmp": ("asset_guid",),
    "cycle": ("asset_guid", "load_start_utc"),
    "process_info": ("asset_guid",),
    "dead_letter": ("dead_letter_id",),
    "alerts": ("alert_id",),
    "load_visit": ("asset_guid", "load_start_utc"),
    "loader_hour": ("loader_asset_guid", "hour_start_utc"),
    "loader_status": ("loader_asset_guid",),
    "truck_hour": ("asset_guid", "hour_start_utc"),
}
"""Conflict key of each table kind (its primary key)."""

# Kinds whose rows are immutable once written: a conflicting insert is ignored.
INSERT_ONLY_KINDS = frozenset({"dead_letter", "alerts"})
# Kinds with an updated_at column refreshed on every upsert.
_TOUCHED_KINDS = frozenset({"asset", "asset_info", "cycle_tmp", "cycle", "process_info", "load_visit", "loader_hour",
                            "loader_status", "truck_hour"})


def column_list(table_kind: str) -> list[tuple[str, str]]:
    """``(column, sql_type)`` in sink order for a table kind (a copy; see TABLE_KINDS)."""
    try:
        return list(_COLUMNS[table_kind])
    except KeyError:
        raise KeyError(f"unknown table kind {table_kind!r}; known: {TABLE_KINDS}") from None


def column_names(table_kind: str) -> list[str]:
    """Just the column names of ``column_list``."""
    return [name for name, _ in column_list(table_kind)]


def _upsert_spec(table_kind: str, newer_only: bool) -> tuple[list[str], tuple[str, ...], list[str], bool]:
    cols = column_names(table_kind)
    keys = KEY_COLUMNS[table_kind]
    updates = [] if table_kind in INSERT_ONLY_KINDS else [c for c in cols if c not in keys]
    guard = newer_only and "last_event_utc" in cols
    return cols, keys, updates, guard


def jdbc_upsert_sql(names: TableNames, table_kind: str, newer_only: bool = False) -> str:
    """The job's INSERT .. ON CONFLICT for one row of ``column_list`` order, as JDBC text (``?`` placeholders).

    Insert-only kinds (dead letters, alerts) use DO NOTHING. With ``newer_only`` an existing row is
    only replaced by one whose last_event_utc is not older (process info / tmp cycles).
    """
    cols, keys, updates, guard = _upsert_spec(table_kind, newer_only)
    table = names.qualified(table_kind)
    text = (f"INSERT INTO {table} ({', '.join(f'{chr(34)}{c}{chr(34)}' for c in cols)}) "
            f"VALUES ({', '.join('?' for _ in cols)}) "
            f"ON CONFLICT ({', '.join(f'{chr(34)}{k}{chr(34)}' for k in keys)}) ")
    if not updates:
        return text + "DO NOTHING"
    sets = [f'"{c}" = EXCLUDED."{c}"' for c in updates]
    if table_kind in _TOUCHED_KINDS:
        sets.append("updated_at = now()")
    text += "DO UPDATE SET " + ", ".join(sets)
    if guard:
        text += f" WHERE {table}.last_event_utc IS NULL OR EXCLUDED.last_event_utc >= {table}.last_event_utc"
    return text


# ----------------------------------------------------------------------------- connections

def _mask(text: str, secret: str | None) -> str:
    return text.replace(secret, "***") if secret else text


def describe_target(target: str | Mapping[str, Any] | None = None, **params: Any) -> tuple[str, str | None]:
    """``host:port`` of a DSN/params (for messages) and the password to mask, if any."""
    values: dict[str, Any] = {}
    if isinstance(target, str):
        try:
            values.update(parse_dsn(target))
        except Exception:  # noqa: BLE001 - an unparsable DSN still deserves a message
            values = {}
    elif target is not None:
        values.update(target)
    values.update(params)
    host = values.get("host") or os.environ.get("PGHOST") or "localhost"
    port = values.get("port") or os.environ.get("PGPORT") or 5432
    return f"{host}:{port}", values.get("password")


def connect(target: str | Mapping[str, Any] | None = None, **params: Any) -> connection:
    """Open a psycopg2 connection from a DSN/URI string or a mapping of libpq parameters.

    Extra keyword parameters override the target's. Raises DatabaseUnavailable with
    "cannot connect to PostgreSQL at host:port: ..." (password masked) when it fails.
    """
    kwargs = dict(target) if isinstance(target, Mapping) else {}
    kwargs.update(params)
    kwargs.setdefault("connect_timeout", 10)
    where, password = describe_target(target, **params)
    try:
        if isinstance(target, str):
            return psycopg2.connect(target, **kwargs)
        return psycopg2.connect(**kwargs)
    except psycopg2.Error as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise DatabaseUnavailable(
            f"cannot connect to PostgreSQL at {where}: {_mask(reason, password)}"
        ) from None


# ----------------------------------------------------------------------------- migrations

def migration_files(sql_dir: str | Path | None = None) -> list[Path]:
    """The migration files in apply order (``sql/*.sql`` sorted by name)."""
    directory = Path(sql_dir or os.environ.get("ASSET_CYCLE_SQL_DIR") or DEFAULT_SQL_DIR)
    files = sorted(directory.glob("*.sql"))
    if not files:
        raise FileNotFoundError(f"no migration files (*.sql) in {directory}")
    return files


def _lock_key(schema: str) -> int:
    digest = hashlib.sha1(f"asset-cycle-migrations:{schema}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def applied_migrations(conn: connection, names: TableNames) -> list[str]:
    """Versions recorded in ``schema.schema_migrations`` ([] when the table does not exist)."""
    with conn.cursor() as cur:
        cur.execute("SELECT to_regclass(%s)", (f'"{names.schema}"."{MIGRATIONS_TABLE}"',))
        if cur.fetchone()[0] is None:
            return []
        cur.execute(sql.SQL("SELECT version FROM {} ORDER BY version").format(
            sql.Identifier(names.schema, MIGRATIONS_TABLE)))
        return [row[0] for row in cur.fetchall()]


def apply_migrations(conn: connection, names: TableNames, sql_dir: str | Path | None = None) -> list[str]:
    """Apply the ``sql/*.sql`` files not yet recorded in schema_migrations; return their versions.

    Runs in one transaction under an advisory lock (concurrent callers wait for each other),
    commits on success and rolls back on error. Version = file name without ``.sql``.
    """
    files = migration_files(sql_dir)
    args = names.template_args()
    schema = sql.Identifier(names.schema)
    migrations = sql.Identifier(names.schema, MIGRATIONS_TABLE)
    applied: list[str] = []
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT pg_advisory_xact_lock(%s)", (_lock_key(names.schema),))
            cur.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (names.schema,))
            if cur.fetchone() is None:
                cur.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(schema))
            cur.execute(sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} (version text PRIMARY KEY, "
                "applied_at timestamptz NOT NULL DEFAULT now())").format(migrations))
            cur.execute(sql.SQL("SELECT version FROM {}").format(migrations))
            done = {row[0] for row in cur.fetchall()}
            for path in files:
                version = path.stem
                if version in done:
                    continue
                cur.execute(sql.SQL(path.read_text(encoding="utf-8")).format(**args))
                cur.execute(sql.SQL("INSERT INTO {} (version) VALUES (%s)").format(migrations), (version,))
                applied.append(version)
        conn.commit()
    except BaseException:
        conn.rollback()
        raise
    return applied


def table_exists(conn: connection, names: TableNames, kind: str) -> bool:
    """Whether the table of a kind exists."""
    with conn.cursor() as cur:
        cur.execute("SELECT to_regclass(%s)", (names.qualified(kind),))
        return cur.fetchone()[0] is not None


def reset_schema(conn: connection, names: TableNames) -> list[str]:
    """Drop the asset-cycle tables of ``names`` (and the migrations record, the updated_at trigger
    function and the schema itself when nothing else is left in it); returns what was dropped.
    Commits."""
    dropped: list[str] = []
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT pg_advisory_xact_lock(%s)", (_lock_key(names.schema),))
            for kind in VIEW_KINDS:
                cur.execute("SELECT to_regclass(%s)", (names.qualified(kind),))
                if cur.fetchone()[0] is not None:
                    cur.execute(sql.SQL("DROP VIEW {}").format(names.table(kind)))
                    dropped.append(f"{names.schema}.{names.table_name(kind)}")
            for kind in (*reversed(TABLE_KINDS), None):
                table = MIGRATIONS_TABLE if kind is None else names.table_name(kind)
                cur.execute("SELECT to_regclass(%s)", (f'"{names.schema}"."{table}"',))
                if cur.fetchone()[0] is not None:
                    cur.execute(sql.SQL("DROP TABLE {} CASCADE").format(sql.Identifier(names.schema, table)))
                    dropped.append(f"{names.schema}.{table}")
            cur.execute(sql.SQL("DROP FUNCTION IF EXISTS {}()").format(
                sql.Identifier(names.schema, "asset_cycle_touch_updated_at")))
            cur.execute("SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                        "WHERE n.nspname = %s", (names.schema,))
            left = cur.fetchone()[0]
            cur.execute("SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
                        "WHERE n.nspname = %s", (names.schema,))
            left += cur.fetchone()[0]
            cur.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (names.schema,))
            if cur.fetchone() is not None and left == 0:
                cur.execute(sql.SQL("DROP SCHEMA {}").format(sql.Identifier(names.schema)))
                dropped.append(f"schema {names.schema}")
        conn.commit()
    except BaseException:
        conn.rollback()
        raise
    return dropped
