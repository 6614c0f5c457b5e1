"""JDBC sinks into PostgreSQL through Flink's Table API JDBC connector (upserts by PRIMARY KEY).

``pyflink.datastream.connectors.jdbc.JdbcSink`` does not work with JDBC connector 4.x, so each
DataStream of rows (udfs.rows layouts, explicit types) becomes a Table, its columns are cast to
the target columns of ``job.db`` and inserted into a temporary ``'connector' = 'jdbc'`` table
declared with the table's primary key: the connector then writes ``INSERT .. ON CONFLICT (pk)
DO UPDATE`` in batches (``sink.buffer-flush.max-rows`` / ``.interval``, reduced by key inside a
batch) and flushes on every checkpoint. All inserts go into one StatementSet attached to the
DataStream job (``attach_as_datastream``), so a single ``env.execute()`` runs everything.

Timestamps: rows carry epoch milliseconds. The JDBC connector cannot write TIMESTAMP_LTZ, and
writes TIMESTAMP(3) through ``java.sql.Timestamp`` in the JVM's default time zone (the PostgreSQL
driver then sends the value with that zone's offset into ``timestamptz``). So each ``x_ms`` value
becomes ``CAST(TO_TIMESTAMP_LTZ(x_ms, 3) AS TIMESTAMP(3))`` with ``table.local-time-zone`` set to
the JVM's default zone: the wall-clock value and the driver's interpretation use the same zone and
the instant lands exactly (local runs also pin the JVM to UTC, which avoids DST-ambiguous hours).

Idempotency: cycles are keyed by (asset_guid, load_start_utc), the temporary table and process
info by asset_guid, dead letters and alerts by their deterministic ids, so a replay rewrites the
same rows (a dead letter's ``received_utc`` is refreshed: it is the processing time).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from job.db import KEY_COLUMNS, TableNames, column_list

log = logging.getLogger(__name__)

SINK_KINDS = ("cycle_tmp", "cycle", "process_info", "dead_letter", "alerts")

_SQL_TO_FLINK = {
    "text": "STRING",
    "timestamptz": "TIMESTAMP(3)",
    "double precision": "DOUBLE",
    "integer": "INT",
    "smallint": "SMALLINT",
    "bigint": "BIGINT",
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
    """(column, Flink type) of a sink kind, in job.db order."""
    if kind not in SINK_KINDS:
        raise SinkError(f"unknown sink kind {kind!r}; known: {SINK_KINDS}")
    out = []
    for name, sql_type in column_list(kind):
        try:
            out.append((name, _SQL_TO_FLINK[sql_type]))
        except KeyError:
            raise SinkError(f"no Flink type for {kind}.{name} ({sql_type})") from None
    return out


def sink_ddl(sink_name: str, kind: str, names: TableNames, target: JdbcTarget) -> str:
    """``CREATE TEMPORARY TABLE`` of a JDBC upsert sink (contains the password: never log it)."""
    cols = sink_columns(kind)
    keys = KEY_COLUMNS[kind]
    body = ",\n  ".join(f"`{name}` {ftype}{' NOT NULL' if name in keys else ''}" for name, ftype in cols)
    options = {
        "connector": "jdbc",
        "url": target.url,
        "table-name": f"{names.schema}.{names.table_name(kind)}",
        "username": target.username,
        "password": target.password or "",
        "sink.buffer-flush.max-rows": str(target.batch_size),
        "sink.buffer-flush.interval": f"{target.batch_interval_ms}ms",
        "sink.max-retries": str(target.max_retries),
    }
    opts = ",\n  ".join(f"'{k}' = '{_escape(v)}'" for k, v in options.items())
    key_list = ", ".join(f"`{k}`" for k in keys)
    return (
        f"CREATE TEMPORARY TABLE `{sink_name}` (\n  {body},\n  PRIMARY KEY ({key_list}) NOT ENFORCED\n)"
        f" WITH (\n  {opts}\n)"
    )


def _escape(value: str) -> str:
    return value.replace("'", "''")


def select_expressions(kind: str, row_fields: list[str]) -> list[Any]:
    """Table API expressions turning a udfs.rows row into the sink's columns (types cast)."""
    from pyflink.table import DataTypes
    from pyflink.table.expressions import call, col, null_of

    types = {
        "STRING": DataTypes.STRING(),
        "TIMESTAMP(3)": DataTypes.TIMESTAMP(3),
        "DOUBLE": DataTypes.DOUBLE(),
        "INT": DataTypes.INT(),
        "SMALLINT": DataTypes.SMALLINT(),
        "BIGINT": DataTypes.BIGINT(),
    }
    exprs = []
    for name, ftype in sink_columns(kind):
        src = source_field(name)
        if src not in row_fields:
            exprs.append(null_of(types[ftype]).alias(name))
            continue
        if ftype == "TIMESTAMP(3)":
            expr = call("TO_TIMESTAMP_LTZ", col(src), 3).cast(types[ftype])
        else:
            expr = col(src).cast(types[ftype])
        exprs.append(expr.alias(name))
    return exprs


def jvm_time_zone() -> str:
    """The gateway JVM's default time zone id."""
    from pyflink.java_gateway import get_gateway

    return str(get_gateway().jvm.java.util.TimeZone.getDefault().getID())


@dataclass
class SinkSet:
    """Collects the job's outputs and attaches them as one StatementSet.

    ``add(kind, stream)`` declares (once per kind) the JDBC sink and adds an insert of ``stream``;
    ``attach()`` must be called once, after every add, before ``env.execute()``.
    """

    env: Any
    names: TableNames
    target: JdbcTarget
    prefix: str = "sink"
    t_env: Any = None
    _statements: Any = None
    _declared: set[str] = field(default_factory=set)
    _added: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        from pyflink.table import StreamTableEnvironment

        if self.t_env is None:
            self.t_env = StreamTableEnvironment.create(self.env)
        self.t_env.get_config().set("table.local-time-zone", jvm_time_zone())
        self._statements = self.t_env.create_statement_set()

    def sink_name(self, kind: str) -> str:
        return f"{self.prefix}_{kind}"

    def add(self, kind: str, stream: Any) -> None:
        """Insert a DataStream of rows (a ROW_NAMED type, udfs.rows layout) into the sink of ``kind``."""
        self.add_table(kind, self.t_env.from_data_stream(stream))

    def add_table(self, kind: str, table: Any) -> None:
        """Insert a Table whose columns are udfs.rows fields into the sink of ``kind``."""
        name = self.sink_name(kind)
        if kind not in self._declared:
            self.t_env.execute_sql(sink_ddl(name, kind, self.names, self.target))
            self._declared.add(kind)
        row_fields = list(table.get_schema().get_field_names())
        self._statements.add_insert(name, table.select(*select_expressions(kind, row_fields)))
        self._added.append(kind)

    def attach(self) -> None:
        """Attach every insert to the DataStream job (call once)."""
        if not self._added:
            raise SinkError("no sink streams were added")
        self._statements.attach_as_datastream()
        log.info("JDBC sinks attached: %s -> %s (%r)", self._added, self.names.schema, self.target)
