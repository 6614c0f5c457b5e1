"""Run the real pipeline on a bundle into a PostgreSQL schema and read the tables back.

Used by the Flink tests (and the equivalence test against ``workbench.replay``)::

    result = run_bundle(bundle_dir, table_names, pg_dsn)
    tables = read_tables(pg_dsn, table_names)
    tables.closed  # list[CycleRecord] sorted like ReplayResult.sorted_closed()
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from job.settings import AppSettings, FlinkSettings, SinkSettings
from state_machine.config import EngineConfig
from state_machine.model import CycleRecord, TruckStatus
from state_machine.reference import ReferenceData
from stores.postgres import (
    CYCLE_COLUMNS,
    DEAD_LETTER_COLUMNS,
    KEY_COLUMNS,
    PROCESS_INFO_COLUMNS,
    TableNames,
    apply_migrations,
    column_list,
)
from workbench.replay import ReplayResult

SOURCE_LABEL = "file:telemetry.jsonl"


@dataclass
class RunResult:
    """How a run went."""

    seconds: float
    records: int

    @property
    def events_per_s(self) -> float:
        return self.records / self.seconds if self.seconds else 0.0


@dataclass
class Tables:
    """Table contents as engine types."""

    closed: list[CycleRecord] = field(default_factory=list)
    in_progress: dict[str, CycleRecord] = field(default_factory=dict)
    statuses: dict[str, TruckStatus] = field(default_factory=dict)
    dead_letters: list[dict[str, Any]] = field(default_factory=list)
    loader_rows: dict[str, dict[tuple, dict[str, Any]]] = field(default_factory=dict)
    """The loader stage's tables and truck_hour: kind -> key -> row (udfs.rows field names, times in ms)."""


LOADER_KINDS = ("load_visit", "loader_hour", "loader_status", "truck_hour")


def loader_table_differences(tables: Tables, expected: ReplayResult, any_order: bool = False) -> dict[str, list]:
    """Per table of LOADER_KINDS whose rows differ from the replay's (or that the replay leaves empty):
    up to three keys with the differing fields (table, replay) and up to three rows only in the table.
    {} when every table equals the replay. ``any_order``: the loader stage received its events in
    another order than the replay (several subtasks, a restore): an hour that a late visit emptied
    keeps its row, all zeros (docs/cycle-rules.md, Loaders), so such rows are left out on both sides."""
    from udfs.rows import (
        LOAD_VISIT_FIELDS,
        LOADER_HOUR_FIELDS,
        LOADER_STATUS_FIELDS,
        TRUCK_HOUR_FIELDS,
        load_visit_row,
        loader_hour_row,
        loader_status_row,
        truck_hour_row,
    )

    differences: dict[str, list] = {}
    for kind, fields, key, converter, replayed in (
        ("load_visit", LOAD_VISIT_FIELDS, ("asset_guid", "load_start_ms"), load_visit_row, expected.served),
        ("loader_hour", LOADER_HOUR_FIELDS, ("loader_asset_guid", "hour_start_ms"), loader_hour_row,
         expected.loader_hours),
        ("loader_status", LOADER_STATUS_FIELDS, ("loader_asset_guid",), loader_status_row, expected.loader_status),
        ("truck_hour", TRUCK_HOUR_FIELDS, ("asset_guid", "hour_start_ms"), truck_hour_row, expected.truck_hours),
    ):
        wanted = {tuple(r[k] for k in key): r for r in (dict(zip(fields, converter(v), strict=True))
                                                       for v in replayed.values())}  # fmt: skip
        got = tables.loader_rows[kind]
        if any_order and kind == "loader_hour":
            wanted, got = _without_empty_hours(wanted), _without_empty_hours(got)
        if not wanted or got != wanted:
            differences[kind] = [
                (k, {f: (got.get(k, {}).get(f), v[f]) for f in v if got.get(k, {}).get(f) != v[f]})
                for k, v in wanted.items() if got.get(k) != v][:3] + [(k, got[k], None) for k in got
                                                                       if k not in wanted][:3]  # fmt: skip
    return differences


def pg_params(dsn: str) -> dict[str, Any]:
    """libpq DSN -> dict of parameters."""
    from psycopg2.extensions import parse_dsn

    return parse_dsn(dsn)


def jdbc_url(dsn: str) -> str:
    p = pg_params(dsn)
    return f"jdbc:postgresql://{p.get('host', '127.0.0.1')}:{p.get('port', 5432)}/{p.get('dbname', 'postgres')}"


@dataclass
class LiveJob:
    """A job started by start_live_job: drop .jsonl files into ``inbox``; cancel via ``client``."""

    client: Any
    inbox: Path
    metrics_url: str | None


def start_live_job(tmp_path: Path, pg_dsn: str, redis_client: Any, names: TableNames, settings: AppSettings,
                   batch_size: int, job_name: str) -> LiveJob:
    """Start the pipeline on a watched directory with reference data polled every second from the
    test's PostgreSQL and Redis (as ``settings.reference`` says), asynchronously."""
    from job.pipeline import assemble, polling_reference_stream
    from job.reference import ReferenceConnector
    from job.sinks import JdbcTarget, SinkSet
    from job.sources import file_source
    from stores.connections import PostgresSettings, RedisSettings
    from udfs.reference_poller import ReferencePoller

    params = pg_params(pg_dsn)
    pg = PostgresSettings(host=params.get("host", "127.0.0.1"), port=int(params.get("port", 5432)),
                          dbname=params.get("dbname", "test"), user=params.get("user", "postgres"))  # fmt: skip
    rs = RedisSettings(**{k: v for k, v in redis_client.connection_pool.connection_kwargs.items()
                          if k in ("host", "port", "db")})  # fmt: skip
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    poller = ReferencePoller(ReferenceConnector(settings, pg, rs, names), 1.0)
    target = JdbcTarget(jdbc_url(pg_dsn), pg.user, None, batch_size=batch_size, batch_interval_ms=100)
    job = assemble(settings, lambda env: SinkSet(env, names, target),
                   lambda env, t_env: file_source(env, inbox, monitor_interval_s=0.5, label="file:inbox"),
                   lambda env, t_env: polling_reference_stream(env, t_env, poller), check_future=False)  # fmt: skip
    return LiveJob(job.env.execute_async(job_name), inbox, job.info.metrics_url)


def count_lines(path: Path) -> int:
    with open(path, "rb") as fh:
        return sum(1 for _ in fh)


def run_bundle(
    bundle_dir: str | Path,
    names: TableNames,
    pg_dsn: str,
    reference: ReferenceData | None = None,
    engine: EngineConfig | None = None,
    parallelism: int = 1,
    checkpoint_interval_ms: int | None = None,
    batch_size: int = 2000,
    migrate: bool = True,
    source_label: str = SOURCE_LABEL,
    execution_mode: str = "thread",
) -> RunResult:
    """Run the pipeline (bounded file source, load-once reference) into ``names``' schema."""
    import psycopg2

    from job.pipeline import assemble, bounded_reference_stream
    from job.sinks import JdbcTarget, SinkSet
    from job.sources import file_source, resolve_file_path
    from udfs.reference_poller import snapshot_records
    from workbench.bundle import read_reference

    bundle_dir = Path(bundle_dir)
    if migrate:
        conn = psycopg2.connect(pg_dsn)
        try:
            apply_migrations(conn, names)
        finally:
            conn.close()
    if reference is None:
        reference, _ = read_reference(bundle_dir)
    settings = AppSettings(
        sink=SinkSettings(jdbc_url=jdbc_url(pg_dsn), batch_size=batch_size),
        engine=engine or EngineConfig(),
        flink=FlinkSettings(parallelism=parallelism, checkpoint_interval_ms=checkpoint_interval_ms,
                            python_execution_mode=execution_mode, source_idleness_ms=None),
    )  # fmt: skip
    params = pg_params(pg_dsn)
    target = JdbcTarget(settings.sink.jdbc_url, params.get("user", "postgres"), params.get("password"),
                        batch_size=batch_size)  # fmt: skip
    job = assemble(settings, lambda env: SinkSet(env, names, target), lambda env, t_env: file_source(env, bundle_dir, label=source_label),
                   lambda env, t_env: bounded_reference_stream(env, snapshot_records(reference)),
                   check_future=False)  # fmt: skip
    records = count_lines(resolve_file_path(bundle_dir))
    start = time.perf_counter()
    job.env.execute("asset-cycle-test")
    return RunResult(time.perf_counter() - start, records)


def _without_empty_hours(rows: dict[tuple, dict[str, Any]]) -> dict[tuple, dict[str, Any]]:
    """loader_hour rows less those with no load, busy or hang time."""
    return {k: r for k, r in rows.items() if r["loads"] or r["busy_seconds"] or r["hang_seconds"]}


def _select(conn: Any, names: TableNames, kind: str, columns: list[tuple[str, str]]) -> list[tuple]:
    from psycopg2 import sql

    with conn.cursor() as cur:
        cur.execute(
            sql.SQL("SELECT {} FROM {}").format(
                sql.SQL(", ").join(sql.Identifier(c) for c, _ in columns), names.table(kind)
            )
        )
        return cur.fetchall()


def truncate_tables(pg_dsn: str, names: TableNames) -> None:
    """Empty the job's output tables (between two runs into one schema)."""
    import psycopg2
    from psycopg2 import sql

    conn = psycopg2.connect(pg_dsn)
    try:
        with conn.cursor() as cur:
            cur.execute(sql.SQL("TRUNCATE {}").format(
                sql.SQL(", ").join(names.table(k) for k in ("cycle_tmp", "cycle", "process_info", "dead_letter"))))
        conn.commit()
    finally:
        conn.close()


def read_tables(pg_dsn: str, names: TableNames) -> Tables:
    """All rows of the job's four tables as CycleRecords / TruckStatus / dicts."""
    import psycopg2

    from state_machine.truck import closed_sort_key
    from tests.job.table_rows import cycle_record_from_row, datetime_to_ms

    conn = psycopg2.connect(pg_dsn)
    try:
        out = Tables()
        out.closed = sorted(
            (cycle_record_from_row(r) for r in _select(conn, names, "cycle", CYCLE_COLUMNS)), key=closed_sort_key
        )
        for r in _select(conn, names, "cycle_tmp", CYCLE_COLUMNS):
            rec = cycle_record_from_row(r)
            out.in_progress[rec.asset_guid] = rec
        for r in _select(conn, names, "process_info", PROCESS_INFO_COLUMNS):
            out.statuses[r[0]] = TruckStatus(r[0], r[1], datetime_to_ms(r[2]), r[3], r[4], r[5], r[6], r[7], r[8])
        cols = [c for c, _ in DEAD_LETTER_COLUMNS]
        out.dead_letters = sorted(
            (dict(zip(cols, r, strict=True)) for r in _select(conn, names, "dead_letter", DEAD_LETTER_COLUMNS)),
            key=lambda d: d["dead_letter_id"],
        )
        for kind in LOADER_KINDS:
            columns = column_list(kind)
            fields = [c[:-4] + "_ms" if c.endswith("_utc") else c for c, _ in columns]
            keys = [fields[[c for c, _ in columns].index(k)] for k in KEY_COLUMNS[kind]]
            rows = out.loader_rows[kind] = {}
            for r in _select(conn, names, kind, columns):
                row = {name: datetime_to_ms(v) if sql_type == "timestamptz" else v
                       for name, (_, sql_type), v in zip(fields, columns, r, strict=True)}  # fmt: skip
                rows[tuple(row[k] for k in keys)] = row
        conn.rollback()
        return out
    finally:
        conn.close()


def table_snapshot(pg_dsn: str, names: TableNames, exclude: tuple[str, ...] = ("updated_at",)) -> dict[str, list]:
    """Every row of the job's tables (all columns but ``exclude``), sorted, for before/after checks."""
    import psycopg2
    from psycopg2 import sql

    conn = psycopg2.connect(pg_dsn)
    out: dict[str, list] = {}
    try:
        with conn.cursor() as cur:
            for kind in ("cycle_tmp", "cycle", "process_info", "dead_letter", *LOADER_KINDS):
                cur.execute(
                    "SELECT column_name FROM information_schema.columns WHERE table_schema = %s AND table_name = %s "
                    "ORDER BY ordinal_position",
                    (names.schema, names.table_name(kind)),
                )
                cols = [c for (c,) in cur.fetchall() if c not in exclude]
                cur.execute(
                    sql.SQL("SELECT {} FROM {}").format(
                        sql.SQL(", ").join(sql.Identifier(c) for c in cols), names.table(kind)
                    )
                )
                out[kind] = sorted(cur.fetchall(), key=repr)
        conn.rollback()
    finally:
        conn.close()
    return out
