"""PostgreSQL sinks: the job's tables written by our own JDBC upsert sink (java/: assetcycle.sink).

Each DataStream of rows (udfs.rows layouts, explicit types, fields in the order of the columns of
``stores.postgres``) is written by ``assetcycle.sink.JdbcUpsertSink`` with the statement of
``stores.postgres.jdbc_upsert_sql``: ``INSERT .. ON CONFLICT (pk) DO UPDATE`` (``updated_at = now()`` on the
tables that have it) or ``DO NOTHING`` for dead letters and alerts. Epoch milliseconds (an ``x_ms``
field) are bound as a UTC ``timestamptz`` (column ``x_utc``): no time zone in between.

Why not Flink's JDBC connector: when PostgreSQL is down, its sink fails the task, and closing the
failed task throws the failed write again, which Flink treats as fatal for the whole TaskManager
(a local run then has no slot left; MSF replaces the TaskManager and restarts the job). Our sink
retries an outage with backoff inside the running task instead (metrics ``sinkRetries``,
``sinkTimeSinceLastWriteMs``), never throws on close, writes one transaction per batch (reduced by
primary key: the last row of a key wins, the first for the insert-only kinds, as DO NOTHING does
across batches), and flushes on every checkpoint: at least once, and exactly-once in effect because
every write is an idempotent upsert. See docs/reliability.md.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from pyflink.datastream import DataStream, StreamExecutionEnvironment
from pyflink.java_gateway import get_gateway

from stores.postgres import INSERT_ONLY_KINDS, KEY_COLUMNS, TableNames, column_list, jdbc_upsert_sql

log = logging.getLogger(__name__)

SINK_KINDS = ("cycle_tmp", "cycle", "process_info", "dead_letter", "alerts", "truck_hour", "load_visit", "loader_hour",
              "loader_status")
MAX_BACKOFF_MS = 5000
"""Longest wait between two write attempts during an outage (bounds the recovery delay)."""

_ROW_TYPE_FOR_SQL = {  # the udfs.rows field type that feeds a column of each SQL type
    "text": "STRING",
    "timestamptz": "LONG",  # epoch ms
    "double precision": "DOUBLE",
    "integer": "INT",
    "smallint": "INT",
    "bigint": "LONG",
}
_SQL_TO_JDBC_TYPE = {  # java.sql.Types codes, for NULL parameters
    "text": 12,  # VARCHAR
    "timestamptz": 2014,  # TIMESTAMP_WITH_TIMEZONE
    "double precision": 8,  # DOUBLE
    "integer": 4,  # INTEGER
    "smallint": 5,  # SMALLINT
    "bigint": -5,  # BIGINT
}


class SinkError(RuntimeError):
    """A sink cannot be declared (unknown kind, unmapped column type)."""


@dataclass(frozen=True, slots=True)
class JdbcTarget:
    """Where and how to write. The password is masked in repr."""

    url: str
    username: str = "postgres"
    password: str | None = None
    batch_size: int = 2000
    batch_interval_ms: int = 200
    max_retries: int = 3

    def __repr__(self) -> str:
        return (
            f"JdbcTarget(url={self.url!r}, username={self.username!r}, password={'***' if self.password else None}, "
            f"batch_size={self.batch_size}, batch_interval_ms={self.batch_interval_ms}, max_retries={self.max_retries})"
        )


def source_field(column: str) -> str:
    """Row field feeding a column: ``x_utc`` columns come from ``x_ms`` fields."""
    return column[: -len("_utc")] + "_ms" if column.endswith("_utc") else column


def sink_columns(kind: str) -> list[tuple[str, str]]:
    """(column, Flink type of the row field that feeds it: STRING, LONG, DOUBLE, INT) of a sink kind,
    in stores.postgres order."""
    if kind not in SINK_KINDS:
        raise SinkError(f"unknown sink kind {kind!r}; known: {SINK_KINDS}")
    out = []
    for name, sql_type in column_list(kind):
        try:
            out.append((name, _ROW_TYPE_FOR_SQL[sql_type]))
        except KeyError:
            raise SinkError(f"no row type for {kind}.{name} ({sql_type})") from None
    return out


@dataclass(frozen=True, slots=True)
class SinkSpec:
    """Everything the Java sink of one table needs (contains the password: never log it)."""

    kind: str
    url: str
    username: str
    password: str
    upsert_sql: str
    key_fields: tuple[int, ...]
    first_row_wins: bool
    null_types: tuple[int, ...]
    batch_size: int
    flush_interval_ms: int
    max_retries: int

    def __repr__(self) -> str:
        return f"SinkSpec({self.kind} -> {self.url} as {self.username}, batch {self.batch_size})"


def sink_spec(kind: str, names: TableNames, target: JdbcTarget) -> SinkSpec:
    """The upsert statement, key positions, buffer rule and NULL types of a kind's table."""
    columns = column_list(kind)
    sink_columns(kind)  # validates the kind and the column types
    positions = {name: i for i, (name, _) in enumerate(columns)}
    return SinkSpec(kind=kind, url=target.url, username=target.username, password=target.password or "",
                    upsert_sql=jdbc_upsert_sql(names, kind), key_fields=tuple(positions[k] for k in KEY_COLUMNS[kind]),
                    first_row_wins=kind in INSERT_ONLY_KINDS,
                    null_types=tuple(_SQL_TO_JDBC_TYPE[t] for _, t in columns), batch_size=target.batch_size,
                    flush_interval_ms=target.batch_interval_ms, max_retries=target.max_retries)  # fmt: skip


def java_sink(spec: SinkSpec) -> Any:
    """The ``assetcycle.sink.JdbcUpsertSink`` of a spec (the job's jar must be on the class path)."""
    gateway = get_gateway()

    def int_array(values: tuple[int, ...]) -> Any:
        array = gateway.new_array(gateway.jvm.int, len(values))
        for i, value in enumerate(values):
            array[i] = value
        return array

    sink_class = gateway.jvm.assetcycle.sink.JdbcUpsertSink
    return sink_class(spec.kind, spec.url, spec.username, spec.password, spec.upsert_sql, int_array(spec.key_fields),
                      spec.first_row_wins, int_array(spec.null_types), spec.batch_size, spec.flush_interval_ms,
                      spec.max_retries, MAX_BACKOFF_MS)  # fmt: skip


_JAVA_TYPE_NAME = {"STRING": "String", "LONG": "Long", "DOUBLE": "Double", "INT": "Integer"}
"""How Flink's Java type information prints each row field type of sink_columns."""


def check_row_type(kind: str, java_row_type: str) -> None:
    """Raise SinkError unless a row type (as its Java type information prints it, ``Row(name: Type,
    ...)``: one call to the JVM, where converting the type to Python costs a hundred) has, in order and
    with their types, the fields that feed the kind's columns."""
    fields = ", ".join(f"{source_field(name)}: {_JAVA_TYPE_NAME[ftype]}" for name, ftype in sink_columns(kind))
    expected = f"Row({fields})"
    if java_row_type != expected:
        raise SinkError(f"rows for {kind} are {java_row_type}, the table needs {expected}")


@dataclass
class SinkSet:
    """Collects the job's outputs and attaches one sink per table.

    ``add(kind, stream)`` adds rows for a kind's table; ``attach()`` must be called once, after every
    add, before ``env.execute()``.
    """

    env: StreamExecutionEnvironment
    names: TableNames
    target: JdbcTarget
    _streams: dict[str, list[DataStream]] = field(default_factory=dict)

    def add(self, kind: str, stream: DataStream) -> None:
        """Insert a DataStream of rows into the sink of ``kind``: a ROW_NAMED type whose fields are the
        table's columns in order (udfs.rows layouts: an ``x_ms`` field feeds column ``x_utc``)."""
        check_row_type(kind, stream._j_data_stream.getType().toString())
        self._streams.setdefault(kind, []).append(stream)

    def attach(self) -> None:
        """One JdbcUpsertSink per kind, fed by every stream added for it (call once)."""
        if not self._streams:
            raise SinkError("no sink streams were added")
        for kind, streams in self._streams.items():
            stream = streams[0].union(*streams[1:]) if len(streams) > 1 else streams[0]
            spec = sink_spec(kind, self.names, self.target)
            table = f"{self.names.schema}.{self.names.table_name(kind)}"
            stream._j_data_stream.sinkTo(java_sink(spec)).name(f"sink: {table}").uid(f"sink-{kind}")
        log.info("PostgreSQL sinks attached: %s -> %s (%r)", sorted(self._streams), self.names.schema, self.target)
