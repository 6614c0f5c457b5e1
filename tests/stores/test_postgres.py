"""Tests of stores.postgres: identifiers, migrations (real PostgreSQL), column constants, row conversion."""

from __future__ import annotations

import time
from dataclasses import fields
from datetime import UTC, datetime
from typing import Any

import psycopg2
import pytest
from psycopg2 import sql

from state_machine import identity
from state_machine.model import CYCLE_FIELDS, CycleRecord, TruckStatus
from stores import postgres
from stores.postgres import TableNames
from tests.job import table_rows

HOSTILE_NAMES = [
    "", "Asset", "1asset", "asset-cycle", "asset cycle", 'asset"; DROP TABLE dx.asset;--', "dx.asset",
    "a" * 64, "asset\n", "\nasset", "ässet", "asset;", "asset'", "asset\x00", "ＡSSET", None, 5,
]


# ------------------------------------------------------------------------------ pure

@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_identifier_validation_rejects(name: object) -> None:
    with pytest.raises(postgres.IdentifierError):
        postgres.validate_identifier(name)  # type: ignore[arg-type]
    with pytest.raises(postgres.IdentifierError):
        TableNames(schema=name)  # type: ignore[arg-type]
    with pytest.raises(postgres.IdentifierError):
        TableNames(cycle=name)  # type: ignore[arg-type]


def test_identifier_validation_accepts() -> None:
    for name in ("dx", "_x", "a" * 63, "asset_cycle_vlx_2", "select"):
        assert postgres.validate_identifier(name) == name


def test_table_names_defaults_and_rules() -> None:
    names = TableNames()
    assert (names.schema, names.asset, names.asset_info, names.cycle_tmp, names.cycle, names.process_info,
            names.dead_letter, names.alerts) == (
        "dx", "asset", "asset_info", "asset_cycle_tmp_vlx", "asset_cycle_vlx", "tx_process_info",
        "asset_cycle_dead_letter", "alerts")
    with pytest.raises(postgres.IdentifierError, match="distinct"):
        TableNames(cycle="asset_cycle_tmp_vlx")
    with pytest.raises(postgres.IdentifierError, match="reserved"):
        TableNames(alerts="schema_migrations")
    with pytest.raises(postgres.IdentifierError, match="unknown"):
        TableNames.from_mapping({"nope": "x"})
    assert TableNames.from_mapping({"schema": "s1", "cycle": "c"}).cycle == "c"
    assert names.qualified("cycle") == '"dx"."asset_cycle_vlx"'
    with pytest.raises(KeyError):
        names.table_name("bogus")


def test_cycle_columns_cover_every_field() -> None:
    cols = [name for name, _ in postgres.CYCLE_COLUMNS]
    assert len(cols) == len(CYCLE_FIELDS)
    for field_name, (col, sql_type) in zip(CYCLE_FIELDS, postgres.CYCLE_COLUMNS, strict=True):
        if field_name.endswith("_ms"):
            assert col == field_name[:-3] + "_utc" and sql_type == "timestamptz"
        else:
            assert col == field_name
    assert {"load_start_utc", "load_end_utc", "dump_start_utc", "dump_end_utc", "cycle_end_utc",
            "last_event_utc"} <= set(cols)
    assert dict(postgres.CYCLE_COLUMNS)["point_count"] == "integer"
    assert dict(postgres.CYCLE_COLUMNS)["load_seconds"] == "double precision"
    assert dict(postgres.CYCLE_COLUMNS)["invalid_reason"] == "text"


def test_column_list_kinds() -> None:
    for kind in postgres.TABLE_KINDS:
        cols = postgres.column_list(kind)
        assert cols and all(isinstance(c, tuple) and len(c) == 2 for c in cols)
        cols.append(("x", "y"))  # a copy: the constants stay intact
        assert ("x", "y") not in postgres.column_list(kind)
        assert set(postgres.KEY_COLUMNS[kind]) <= set(postgres.column_names(kind))
    assert postgres.column_list("cycle") == postgres.column_list("cycle_tmp") == postgres.CYCLE_COLUMNS
    assert [c for c, _ in postgres.PROCESS_INFO_COLUMNS] == [
        "asset_guid", "site_guid", "last_event_utc", "latitude", "longitude", "work_state_id",
        "current_segment", "area", "area_guid"]
    with pytest.raises(KeyError):
        postgres.column_list("nope")


def _sample_record() -> CycleRecord:
    return CycleRecord(
        asset_guid="T1", site_guid="S1", cycle_status="COMPLETE", current_segment="EMPTY_TRAVEL",
        loader_asset_guid="L1", dump_region_guid="D1", load_start_ms=1_705_329_025_123,
        load_end_ms=1_705_329_125_000, dump_start_ms=1_705_329_725_001, dump_end_ms=1_705_329_785_999,
        cycle_end_ms=1_705_330_400_000, load_seconds=99.877, load_travel_seconds=600.001,
        dump_seconds=60.998, empty_travel_seconds=614.001, total_cycle_seconds=1374.877,
        travel_idle_seconds=12.5, point_count=77, load_travel_distance_m=1234.5,
        empty_travel_distance_m=1200.25, last_event_ms=1_705_330_399_000,
    )


def test_cycle_record_row_round_trip() -> None:
    record = _sample_record()
    row = table_rows.cycle_record_to_row(record)
    assert len(row) == len(postgres.CYCLE_COLUMNS)
    assert row[6] == datetime(2024, 1, 15, 14, 30, 25, 123000, tzinfo=UTC)
    assert table_rows.cycle_record_from_row(row) == record
    empty = CycleRecord("T", "S", "INPROGRESS", "NONE")
    assert table_rows.cycle_record_from_row(table_rows.cycle_record_to_row(empty)) == empty


def test_ms_datetime_conversion_exact() -> None:
    for ms in (0, 1, -1, 946_684_800_000, 253_402_300_799_999, 1_705_329_025_123):
        assert table_rows.datetime_to_ms(table_rows.ms_to_datetime(ms)) == ms
    assert table_rows.ms_to_datetime(None) is None and table_rows.datetime_to_ms(None) is None


def test_dead_letter_id_deterministic() -> None:
    a = identity.dead_letter_id("file:t.jsonl:1", "BAD_JSON", b"{")
    assert a == identity.dead_letter_id("file:t.jsonl:1", "BAD_JSON", "{")
    assert len(a) == 40 and int(a, 16) >= 0
    assert a != identity.dead_letter_id("file:t.jsonl:2", "BAD_JSON", b"{")
    assert a != identity.dead_letter_id("file:t.jsonl:1", "BAD_TYPE", b"{")
    # field boundaries are unambiguous
    assert identity.dead_letter_id("ab", "c", b"") != identity.dead_letter_id("a", "bc", b"")


def test_dead_letter_row_sanitises() -> None:
    raw = b"\x00\xff" + b"x" * 100_000
    row = table_rows.dead_letter_row("kinesis:shardId-1:42", "TOO_LARGE", "big\x00", raw, received_ms=0)
    names = [c for c, _ in postgres.DEAD_LETTER_COLUMNS]
    values = dict(zip(names, row, strict=True))
    assert values["raw_size"] == len(raw)
    assert len(values["raw"]) == identity.MAX_RAW_CHARS and "\x00" not in values["raw"]
    assert values["detail"] == "big\ufffd"
    assert values["received_utc"] == datetime(1970, 1, 1, tzinfo=UTC)
    assert values["dead_letter_id"] == identity.dead_letter_id("kinesis:shardId-1:42", "TOO_LARGE", raw)


def test_alert_row() -> None:
    row = table_rows.alert_row("UNKNOWN_SITE", "T1", "S1", 1000, 1.5, 2.5, "x")
    assert len(row) == len(postgres.ALERT_COLUMNS)
    assert row[0] == identity.alert_id("UNKNOWN_SITE", "T1", 1000)
    assert row[0] != identity.alert_id("UNKNOWN_SITE", "T1", 1001)


def test_jdbc_sql_shapes() -> None:
    names = TableNames(schema="s")
    text = postgres.jdbc_upsert_sql(names, "cycle")
    assert text.startswith('INSERT INTO "s"."asset_cycle_vlx" ("asset_guid", ')
    assert text.count("?") == len(postgres.CYCLE_COLUMNS)
    assert 'ON CONFLICT ("asset_guid", "load_start_utc") DO UPDATE SET' in text
    assert postgres.jdbc_upsert_sql(names, "dead_letter").endswith("DO NOTHING")
    assert "WHERE" in postgres.jdbc_upsert_sql(names, "process_info", newer_only=True)
    assert "WHERE" not in postgres.jdbc_upsert_sql(names, "dead_letter", newer_only=True)


def test_connect_error_is_clear_and_masks_password() -> None:
    with pytest.raises(postgres.DatabaseUnavailable) as info:
        postgres.connect("postgresql://bob:Sup3rS3cret@127.0.0.1:1/nodb", connect_timeout=2)
    message = str(info.value)
    assert message.startswith("cannot connect to PostgreSQL at 127.0.0.1:1: ")
    assert "Sup3rS3cret" not in message
    with pytest.raises(postgres.DatabaseUnavailable, match="127.0.0.1:1") as info:
        postgres.connect({"host": "127.0.0.1", "port": 1, "password": "Sup3rS3cret"}, connect_timeout=2)
    assert "Sup3rS3cret" not in str(info.value)


# ------------------------------------------------------------------------------ PostgreSQL

pg = pytest.mark.services


def _columns(conn, schema: str, table: str) -> list[tuple[str, str]]:
    with conn.cursor() as cur:
        cur.execute(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = %s AND table_name = %s ORDER BY ordinal_position",
            (schema, table),
        )
        return cur.fetchall()


_PG_TYPE = {"timestamptz": "timestamp with time zone"}


@pg
def test_migrations_idempotent(pg_conn, table_names: TableNames) -> None:
    applied = postgres.apply_migrations(pg_conn, table_names)
    files = [p.stem for p in postgres.migration_files()]
    assert applied == files and files == sorted(files)
    with pg_conn.cursor() as cur:
        cur.execute(sql.SQL("SELECT version, applied_at FROM {} ORDER BY version").format(
            sql.Identifier(table_names.schema, "schema_migrations")))
        first = cur.fetchall()
    assert [v for v, _ in first] == files
    snapshot = {kind: _columns(pg_conn, table_names.schema, table_names.table_name(kind))
                for kind in postgres.TABLE_KINDS}
    assert postgres.apply_migrations(pg_conn, table_names) == []
    assert postgres.applied_migrations(pg_conn, table_names) == files
    with pg_conn.cursor() as cur:
        cur.execute(sql.SQL("SELECT version, applied_at FROM {} ORDER BY version").format(
            sql.Identifier(table_names.schema, "schema_migrations")))
        assert cur.fetchall() == first
    for kind in postgres.TABLE_KINDS:
        assert _columns(pg_conn, table_names.schema, table_names.table_name(kind)) == snapshot[kind]
        assert postgres.table_exists(pg_conn, table_names, kind)


@pg
def test_migration_files_are_idempotent_sql(pg_conn, table_names: TableNames) -> None:
    postgres.apply_migrations(pg_conn, table_names)
    with pg_conn.cursor() as cur:  # forget what was applied: every file must run again cleanly
        cur.execute(sql.SQL("DELETE FROM {}").format(sql.Identifier(table_names.schema, "schema_migrations")))
    pg_conn.commit()
    assert postgres.apply_migrations(pg_conn, table_names) == [p.stem for p in postgres.migration_files()]


@pg
def test_table_columns_match_constants(pg_conn, migrated_tables: TableNames) -> None:
    names = migrated_tables
    for kind in postgres.TABLE_KINDS:
        actual = _columns(pg_conn, names.schema, names.table_name(kind))
        expected = [(c, _PG_TYPE.get(t, t)) for c, t in postgres.column_list(kind)]
        extra = {"alerts": [("created_at", "timestamp with time zone")], "dead_letter": []}.get(
            kind, [("updated_at", "timestamp with time zone")])
        # the sink names its columns; a column added later (queue_seconds) sits after updated_at
        assert sorted(actual) == sorted(expected + extra), kind


@pg
def test_custom_table_names(pg_conn, pg_schema: str) -> None:
    names = TableNames(schema=pg_schema, cycle="cycles_final", cycle_tmp="cycles_open", alerts="alerts_v2")
    postgres.apply_migrations(pg_conn, names)
    assert postgres.table_exists(pg_conn, names, "cycle") and postgres.table_exists(pg_conn, names, "alerts")
    assert not postgres.table_exists(pg_conn, TableNames(schema=pg_schema), "cycle")


@pg
def test_migrations_create_missing_schema(pg_conn, pg_dsn: str) -> None:
    names = TableNames(schema="t_created_by_migration_" + __import__("uuid").uuid4().hex[:8])
    try:
        assert postgres.apply_migrations(pg_conn, names)
        assert postgres.table_exists(pg_conn, names, "asset")
    finally:
        pg_conn.rollback()
        with pg_conn.cursor() as cur:
            cur.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(names.schema)))
        pg_conn.commit()


@pg
def test_failed_migration_rolls_back(pg_conn, table_names: TableNames, tmp_path) -> None:
    (tmp_path / "001_ok.sql").write_text("CREATE TABLE IF NOT EXISTS {schema}.{asset} (asset_guid text);")
    (tmp_path / "002_bad.sql").write_text("THIS IS NOT SQL;")
    with pytest.raises(psycopg2.Error):
        postgres.apply_migrations(pg_conn, table_names, sql_dir=tmp_path)
    assert postgres.applied_migrations(pg_conn, table_names) == []
    assert not postgres.table_exists(pg_conn, table_names, "asset")


@pg
def test_upserts_are_idempotent(pg_conn, migrated_tables: TableNames) -> None:
    names = migrated_tables
    record = _sample_record()
    status = TruckStatus("T1", "S1", 1_705_330_399_000, -23.5, 133.25, 3, "EMPTY_TRAVEL", "T", None)
    older = status._replace(last_event_ms=status.last_event_ms - 1000, latitude=-1.0)
    dl = table_rows.dead_letter_row("file:t.jsonl:3", "BAD_JSON", "bad", b"{oops", received_ms=1000)
    with pg_conn.cursor() as cur:
        for _ in range(2):
            cur.execute(table_rows.upsert_query(names, "cycle"), table_rows.cycle_record_to_row(record))
            cur.execute(table_rows.upsert_query(names, "cycle_tmp"), table_rows.cycle_record_to_row(record))
            cur.execute(table_rows.upsert_query(names, "process_info", newer_only=True), table_rows.truck_status_to_row(status))
            cur.execute(table_rows.upsert_query(names, "dead_letter"), dl)
            cur.execute(table_rows.upsert_query(names, "alerts"), table_rows.alert_row("X", "T1", "S1", 5, 1.0, 2.0))
        cur.execute(table_rows.upsert_query(names, "process_info", newer_only=True), table_rows.truck_status_to_row(older))
        cols = sql.SQL(", ").join(sql.Identifier(c) for c in postgres.column_names("cycle"))
        cur.execute(sql.SQL("SELECT {} FROM {}").format(cols, names.table("cycle")))
        rows = cur.fetchall()
        assert [table_rows.cycle_record_from_row(r) for r in rows] == [record]
        for kind in ("cycle_tmp", "process_info", "dead_letter", "alerts"):
            cur.execute(sql.SQL("SELECT count(*) FROM {}").format(names.table(kind)))
            assert cur.fetchone()[0] == 1, kind
        cur.execute(sql.SQL("SELECT latitude, last_event_utc FROM {}").format(names.table("process_info")))
        assert cur.fetchone() == (-23.5, table_rows.ms_to_datetime(status.last_event_ms))
        changed = CycleRecord(**{**record.as_dict(), "cycle_status": "OUTLIER", "outlier_rule": "TRAVEL_IDLE"})
        cur.execute(table_rows.upsert_query(names, "cycle"), table_rows.cycle_record_to_row(changed))
        cur.execute(sql.SQL("SELECT cycle_status, outlier_rule FROM {}").format(names.table("cycle")))
        assert cur.fetchall() == [("OUTLIER", "TRAVEL_IDLE")]
    pg_conn.rollback()


def test_cycle_record_fields_known() -> None:
    # a new CycleRecord field must get a column (and a migration): keep the mapping complete
    assert set(postgres.CYCLE_FIELD_FOR_COLUMN.values()) == {f.name for f in fields(CycleRecord)}


@pg
def test_updated_at_moves_on_every_write(pg_conn, migrated_tables: TableNames) -> None:
    """updated_at is the time of the last write: set by the upserts (psycopg2 and the JDBC sink's
    statement) and by the trigger on any other UPDATE. Each write runs in its own transaction
    (now() is the transaction's start time)."""
    names = migrated_tables
    record = _sample_record()
    status = TruckStatus("T1", "S1", 1_705_330_399_000, -23.5, 133.25, 3, "EMPTY_TRAVEL", "T", None)
    pg_conn.autocommit = True

    def stamp(kind: str) -> Any:
        with pg_conn.cursor() as cur:
            cur.execute(sql.SQL("SELECT updated_at FROM {}").format(names.table(kind)))
            return cur.fetchone()[0]

    def jdbc_upsert(kind: str, row: tuple) -> None:  # the sink's statement, '?' as psycopg2 '%s'
        with pg_conn.cursor() as cur:
            cur.execute(postgres.jdbc_upsert_sql(names, kind).replace("?", "%s"), row)

    rows = {"cycle": table_rows.cycle_record_to_row(record), "cycle_tmp": table_rows.cycle_record_to_row(record),
            "process_info": table_rows.truck_status_to_row(status)}
    for kind, row in rows.items():
        with pg_conn.cursor() as cur:
            cur.execute(table_rows.upsert_query(names, kind), row)
        inserted = stamp(kind)
        time.sleep(0.01)
        jdbc_upsert(kind, row)
        upserted = stamp(kind)
        time.sleep(0.01)
        with pg_conn.cursor() as cur:  # a write that does not mention updated_at
            cur.execute(sql.SQL("UPDATE {} SET site_guid = 'S2'").format(names.table(kind)))
        updated = stamp(kind)
        assert inserted < upserted < updated, kind


@pg
def test_the_kpi_views_add_each_trucks_queue_and_each_sites_match_factor(pg_conn, migrated_tables: TableNames) -> None:
    names = migrated_tables
    hour = datetime(2024, 1, 15, 6, tzinfo=UTC)

    def at(minutes: float) -> datetime:
        return datetime.fromtimestamp(hour.timestamp() + minutes * 60, tz=UTC)

    with pg_conn.cursor() as cur:
        for truck in ("T1", "T2"):
            cur.execute(table_rows.upsert_query(names, "truck_hour"), (truck, hour, "S1", 3000.0, 600.0, 9000.0, 8000.0, 2))
        # T1 waited 120 s and 60 s at L1 (service starts in the hour), T2 did not wait; one visit still waiting
        for truck, start, service, queue in (("T1", 5, 7, 120.0), ("T1", 35, 36, 60.0), ("T2", 20, 20, 0.0),
                                             ("T2", 58, None, 90.0)):  # fmt: skip
            cur.execute(table_rows.upsert_query(names, "load_visit"),
                        (truck, at(start), "S1", "L1", at(start), at(start), None if service is None else at(service),
                         at(start + 4), int(service is None), queue))  # fmt: skip
        cur.execute(table_rows.upsert_query(names, "loader_hour"), ("L1", hour, "S1", 3, 720.0, 2880.0, 180.0, 2))
        for truck, minutes, total in (("T1", 30, 1500.0), ("T2", 50, 1700.0)):
            record = CycleRecord(truck, "S1", "COMPLETE", "EMPTY_TRAVEL", "L1", load_start_ms=int(at(minutes - 28).timestamp() * 1000),
                                 cycle_end_ms=int(at(minutes).timestamp() * 1000), total_cycle_seconds=total)
            cur.execute(table_rows.upsert_query(names, "cycle"), table_rows.cycle_record_to_row(record))
        cur.execute(sql.SQL("SELECT asset_guid, queue_seconds, working_seconds FROM {} ORDER BY 1").format(
            names.table("truck_hour_kpi")))
        assert cur.fetchall() == [("T1", 180.0, 3000.0), ("T2", 0.0, 3000.0)]
        cur.execute(sql.SQL("SELECT trucks, loaders, loads, mean_service_seconds, mean_cycle_seconds, match_factor "
                            "FROM {}").format(names.table("site_hour_kpi")))
        trucks, loaders, loads, service, cycle, match = cur.fetchone()
    assert (trucks, loaders, loads, service, cycle) == (2, 1, 3, 240.0, 1600.0)
    assert match == pytest.approx(2 * 240.0 / (1 * 1600.0))
    pg_conn.rollback()
