"""Tests of job.reference_store (real PostgreSQL/Redis), settings masking and the seed/db CLI."""

from __future__ import annotations

import io
import json
import logging
from contextlib import redirect_stderr, redirect_stdout

import boto3
import pytest
from botocore.stub import Stubber
from psycopg2 import sql

from job import reference_store as rs
from job.db import TableNames, applied_migrations
from state_machine.reference import Loader, ReferenceData, Region, SiteReference, group_sites

SECRET = "pa55-w0rd-XYZ-9876"

SQUARE = ((133.40, -23.78), (133.41, -23.78), (133.41, -23.77), (133.40, -23.77))


def _reference() -> tuple[ReferenceData, list[tuple]]:
    loaders = [
        Loader("LDR-2", "SITE-A", -23.7701, 133.4002),
        Loader("LDR-1", "SITE-A", -23.7700000001, 133.40000000000003),
        Loader("LDR-B", "SITE-B", 10.5, -70.25),
    ]
    regions = [
        Region("D-1", "North Dump", "dump", "SITE-A", SQUARE),
        Region("D-2", "South Dump ⛏ 'quoted'", "dump", "SITE-A", tuple((x + 0.1, y) for x, y in SQUARE)),
        Region("Z-9", "Crusher", "load", "SITE-A", tuple((x, y - 0.1) for x, y in SQUARE)),
        Region("D-C", "Only region of C", "dump", "SITE-C", SQUARE),
    ]
    assets = [
        ("TRK-1", "SITE-A", "HAUL_TRUCK", None, None),
        ("TRK-2", "SITE-B", "HAUL_TRUCK", None, None),
        ("'; DROP TABLE dx.asset;--", "SITE-A", "HAUL_TRUCK", None, None),
        ("DOZ-1", "SITE-A", "DOZER", None, None),
        ("LDR-1", "SITE-A", "LOADER", -23.7700000001, 133.40000000000003),
        ("LDR-2", "SITE-A", "LOADER", -23.7701, 133.4002),
        ("LDR-B", "SITE-B", "LOADER", 10.5, -70.25),
    ]
    reference = ReferenceData(asset_types={a[0]: a[2] for a in assets}, sites=group_sites(loaders, regions))
    return reference, assets


def _normalised(ref: ReferenceData) -> tuple[dict, dict]:
    sites = {
        guid: SiteReference(guid, tuple(sorted(s.loaders, key=lambda x: x.asset_guid)),
                            tuple(sorted(s.regions, key=lambda r: r.region_guid)))
        for guid, s in ref.sites.items()
    }
    return dict(ref.asset_types), sites


# ------------------------------------------------------------------------------ services

services = pytest.mark.services


@services
def test_seed_load_round_trip(pg_conn, redis_client, migrated_tables: TableNames, redis_prefix: str) -> None:
    reference, assets = _reference()
    summary = rs.seed_reference(pg_conn, redis_client, migrated_tables, reference, assets, redis_prefix)
    assert summary == rs.SeedSummary(assets=7, loaders=3, sites=3, regions=4)
    stats = rs.ReferenceLoadStats()
    loaded = rs.load_reference_data(pg_conn, redis_client, migrated_tables, redis_prefix, stats=stats)
    assert _normalised(loaded) == _normalised(reference)
    assert (stats.assets, stats.loaders, stats.regions, stats.skipped_regions, stats.region_keys) == (7, 3, 4, 0, 2)
    # legacy formats
    raw = redis_client.hgetall(rs.regions_key("SITE-A", redis_prefix))
    assert set(raw) == {b"North Dump", "South Dump ⛏ 'quoted'".encode(), b"Crusher"}
    assert json.loads(raw[b"North Dump"])["region_points"].startswith("133.4 -23.78, ")
    # load leaves no transaction open on an idle connection
    assert pg_conn.get_transaction_status() == 0


@services
def test_seed_is_idempotent_and_replaces_regions(pg_conn, redis_client, migrated_tables: TableNames,
                                                 redis_prefix: str) -> None:
    reference, assets = _reference()
    rs.seed_reference(pg_conn, redis_client, migrated_tables, reference, assets, redis_prefix)
    rs.seed_reference(pg_conn, redis_client, migrated_tables, reference, assets, redis_prefix)
    with pg_conn.cursor() as cur:
        cur.execute(sql.SQL("SELECT count(*) FROM {}").format(migrated_tables.table("asset")))
        assert cur.fetchone()[0] == 7
    pg_conn.rollback()
    # a new reference without SITE-C regions and with a moved loader replaces the old state
    site_a = reference.sites["SITE-A"]
    moved = Loader("LDR-2", "SITE-A", -23.5, 133.5)
    new_ref = ReferenceData(reference.asset_types, {
        "SITE-A": SiteReference("SITE-A", (site_a.loaders[0], moved), site_a.regions[:1]),
        "SITE-C": SiteReference("SITE-C"),
    })
    rs.seed_reference(pg_conn, redis_client, migrated_tables, new_ref, [], redis_prefix)
    loaded = rs.load_reference_data(pg_conn, redis_client, migrated_tables, redis_prefix)
    assert "SITE-C" not in loaded.sites
    assert loaded.sites["SITE-A"].regions == site_a.regions[:1]
    assert moved in loaded.sites["SITE-A"].loaders


@services
def test_duplicate_region_names_rejected(pg_conn, redis_client, migrated_tables: TableNames,
                                         redis_prefix: str) -> None:
    ref = ReferenceData({}, {"S": SiteReference("S", (), (
        Region("R1", "same", "dump", "S", SQUARE), Region("R2", "same", "dump", "S", SQUARE)))})
    with pytest.raises(ValueError, match="two regions named 'same'"):
        rs.seed_reference(pg_conn, redis_client, migrated_tables, ref, [], redis_prefix)
    assert redis_client.exists(rs.regions_key("S", redis_prefix)) == 0


@services
def test_malformed_region_skipped_with_warning(pg_conn, redis_client, migrated_tables: TableNames,
                                               redis_prefix: str, caplog: pytest.LogCaptureFixture) -> None:
    good = Region("D-1", "North Dump", "dump", "SITE-X", SQUARE)
    key = rs.regions_key("SITE-X", redis_prefix)
    redis_client.hset(key, mapping={
        "North Dump": good.to_redis_value(),
        "not json": "{oops",
        "two points": json.dumps({"region_guid": "D-2", "region_points": "1 2, 3 4", "region_type": "dump"}),
        "no points": json.dumps({"region_guid": "D-3"}),
        "a list": "[1, 2, 3]",
        "bad pair": json.dumps({"region_guid": "D-4", "region_points": "1 2, 3, 5 6, 7 8"}),
        "nan point": json.dumps({"region_guid": "D-5", "region_points": "nan 2, 3 4, 5 6"}),
        "swapped": json.dumps({"region_guid": "D-6", "region_points": "-23.7 133.4, -23.8 133.4, -23.8 133.5"}),
    })
    redis_client.set(rs.regions_key("SITE-WRONGTYPE", redis_prefix), "not a hash")
    redis_client.hset(f"{redis_prefix}other:key", "x", "y")  # not matched by the pattern
    stats = rs.ReferenceLoadStats()
    with caplog.at_level(logging.WARNING, logger="job.reference_store"):
        loaded = rs.load_reference_data(pg_conn, redis_client, migrated_tables, redis_prefix, stats=stats)
    assert loaded.sites == {"SITE-X": SiteReference("SITE-X", (), (good,))}
    assert stats.skipped_regions == 7 and stats.regions == 1
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    for field_name in ("not json", "two points", "no points", "a list", "bad pair", "nan point", "swapped"):
        assert any(key in m and repr(field_name) in m for m in messages), field_name
    assert any("SITE-WRONGTYPE" in m for m in messages)


@services
def test_load_with_decoding_client(pg_conn, redis_url: str, migrated_tables: TableNames, redis_prefix: str) -> None:
    import redis

    reference, assets = _reference()
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        rs.seed_reference(pg_conn, client, migrated_tables, reference, assets, redis_prefix)
        loaded = rs.load_reference_data(pg_conn, client, migrated_tables, redis_prefix)
    finally:
        client.close()
    assert _normalised(loaded) == _normalised(reference)


@services
def test_prefix_isolation_and_glob_characters(pg_conn, redis_client, migrated_tables: TableNames,
                                              redis_prefix: str) -> None:
    region = Region("D-1", "North Dump", "dump", "S1", SQUARE)
    odd = redis_prefix + "[x]*?:"
    redis_client.hset(rs.regions_key("S1", odd), "North Dump", region.to_redis_value())
    redis_client.hset(rs.regions_key("S2", redis_prefix + "zz"), "North Dump", region.to_redis_value())
    loaded = rs.load_reference_data(pg_conn, redis_client, migrated_tables, odd)
    assert list(loaded.sites) == ["S1"]


@services
def test_loader_without_position_skipped(pg_conn, redis_client, migrated_tables: TableNames,
                                         redis_prefix: str) -> None:
    names = migrated_tables
    with pg_conn.cursor() as cur:
        cur.execute(sql.SQL("INSERT INTO {} (asset_guid, site_guid, asset_type) VALUES (%s, %s, %s), (%s, %s, %s)")
                    .format(names.table("asset")), ("L1", "S", "LOADER", "L2", "S", "LOADER"))
        cur.execute(sql.SQL("INSERT INTO {} (asset_guid, site_guid, latitude, longitude) VALUES "
                            "(%s, %s, %s, %s), (%s, %s, %s, %s)").format(names.table("asset_info")),
                    ("L1", "S", None, None, "L2", "S", float("nan"), 1.0))
    pg_conn.commit()
    stats = rs.ReferenceLoadStats()
    loaded = rs.load_reference_data(pg_conn, redis_client, names, redis_prefix, stats=stats)
    assert loaded.sites == {} and loaded.asset_types == {"L1": "LOADER", "L2": "LOADER"}
    assert stats.skipped_loaders == 2


# ------------------------------------------------------------------------------ CLI


def _cli(*argv: str) -> tuple[int, str, str]:
    from job.cli import main

    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


@services
def test_cli_db_init(pg_dsn: str, pg_conn, pg_schema: str) -> None:
    code, out, _ = _cli("db", "init", "--schema", pg_schema, "--pg-dsn", pg_dsn)
    assert code == 0 and "applied 001_reference" in out
    code, out, _ = _cli("db", "init", "--schema", pg_schema, "--pg-dsn", pg_dsn)
    assert code == 0 and "up to date" in out
    assert applied_migrations(pg_conn, TableNames(schema=pg_schema))
    code, out, _ = _cli("db", "status", "--schema", pg_schema, "--pg-dsn", pg_dsn)
    assert code == 0 and "pending" not in out


def test_cli_db_init_errors() -> None:
    code, _, err = _cli("db", "init", "--pg-dsn", f"postgresql://bob:{SECRET}@127.0.0.1:1/x")
    assert code == 2
    assert "cannot connect to PostgreSQL at 127.0.0.1:1:" in err and SECRET not in err
    code, _, err = _cli("db", "init", "--schema", "dx; DROP SCHEMA public", "--pg-dsn", "host=127.0.0.1")
    assert code == 2 and "invalid schema name" in err
    code, _, err = _cli("db", "init", "--table", "cycle=Bad-Name", "--pg-dsn", "host=127.0.0.1")
    assert code == 2 and "invalid table name" in err


@services
def test_cli_seed(tmp_path, pg_dsn: str, pg_conn, pg_schema: str, redis_client, redis_url: str,
                  redis_prefix: str) -> None:
    from workbench.bundle import write_bundle

    reference, assets = _reference()
    write_bundle(tmp_path, [], reference, assets)
    code, out, err = _cli("seed", str(tmp_path), "--schema", pg_schema, "--pg-dsn", pg_dsn,
                          "--redis-url", redis_url, "--redis-prefix", redis_prefix)
    assert code == 0, err
    assert "applied 001_reference" in out and "seeded 7 assets" in out
    names = TableNames(schema=pg_schema)
    loaded = rs.load_reference_data(pg_conn, redis_client, names, redis_prefix)
    assert _normalised(loaded) == _normalised(reference)
    code, _, err = _cli("seed", str(tmp_path / "missing"), "--schema", pg_schema, "--pg-dsn", pg_dsn)
    assert code == 2 and "not a directory" in err


@services
def test_cli_seed_redis_down(tmp_path, pg_dsn: str, pg_schema: str) -> None:
    from workbench.bundle import write_bundle

    reference, assets = _reference()
    write_bundle(tmp_path, [], reference, assets)
    code, _, err = _cli("seed", str(tmp_path), "--schema", pg_schema, "--pg-dsn", pg_dsn,
                        "--redis-url", f"redis://u:{SECRET}@127.0.0.1:1/0")
    assert code == 2 and "cannot connect to Redis at 127.0.0.1:1" in err and SECRET not in err


# ------------------------------------------------------------------------------ settings


def test_settings_defaults_and_env() -> None:
    assert rs.PostgresSettings.from_env({}) == rs.PostgresSettings("127.0.0.1", 5432, "postgres", "postgres")
    assert rs.RedisSettings.from_env({}) == rs.RedisSettings("127.0.0.1", 6379, 0)
    pg = rs.PostgresSettings.from_env({
        "ASSET_CYCLE_PG_HOST": "db.internal", "ASSET_CYCLE_PG_PORT": "6432", "ASSET_CYCLE_PG_DB": "mine",
        "ASSET_CYCLE_PG_USER": "svc", "ASSET_CYCLE_PG_PASSWORD": SECRET, "ASSET_CYCLE_PG_SSLMODE": "verify-full"})
    assert (pg.host, pg.port, pg.dbname, pg.user, pg.password, pg.sslmode) == (
        "db.internal", 6432, "mine", "svc", SECRET, "verify-full")
    assert pg.jdbc_url() == "jdbc:postgresql://db.internal:6432/mine?sslmode=verify-full"
    assert rs.PostgresSettings().jdbc_url() == "jdbc:postgresql://127.0.0.1:5432/postgres"
    rd = rs.RedisSettings.from_env({"ASSET_CYCLE_REDIS_HOST": "cache", "ASSET_CYCLE_REDIS_PORT": "6380",
                                    "ASSET_CYCLE_REDIS_DB": "2", "ASSET_CYCLE_REDIS_USERNAME": "u",
                                    "ASSET_CYCLE_REDIS_PASSWORD": SECRET, "ASSET_CYCLE_REDIS_TLS": "true"})
    assert (rd.host, rd.port, rd.db, rd.username, rd.password, rd.tls) == ("cache", 6380, 2, "u", SECRET, True)
    with pytest.raises(rs.SettingsError, match="ASSET_CYCLE_PG_PORT"):
        rs.PostgresSettings.from_env({"ASSET_CYCLE_PG_PORT": "x"})
    with pytest.raises(rs.SettingsError, match="ASSET_CYCLE_REDIS_TLS"):
        rs.RedisSettings.from_env({"ASSET_CYCLE_REDIS_TLS": "maybe"})
    with pytest.raises(rs.SettingsError, match="sslmode"):
        rs.PostgresSettings(sslmode="bogus")


def test_settings_mask_passwords(caplog: pytest.LogCaptureFixture) -> None:
    pg = rs.PostgresSettings(password=SECRET)
    rd = rs.RedisSettings(password=SECRET, username="u")
    for obj in (pg, rd):
        assert SECRET not in repr(obj) and SECRET not in str(obj) and SECRET not in f"{obj}"
    assert "***" in repr(pg) and "***" in repr(rd)
    assert SECRET not in pg.jdbc_url()
    log = logging.getLogger("test.settings")
    with caplog.at_level(logging.DEBUG):
        log.info("settings %s %r", pg, rd)
        rs.log.info("settings %s %s", pg, rd)
    assert caplog.records
    assert SECRET not in caplog.text
    assert all(SECRET not in r.getMessage() for r in caplog.records)


def _stubbed(secret_string: str | None = None, error: str | None = None):
    client = boto3.client("secretsmanager", region_name="us-east-1",
                          aws_access_key_id="x", aws_secret_access_key="y")
    stubber = Stubber(client)
    if error:
        stubber.add_client_error("get_secret_value", service_error_code=error,
                                 expected_params={"SecretId": "prod/pg"})
    else:
        stubber.add_response("get_secret_value",
                             {"Name": "prod/pg", "SecretString": secret_string},
                             expected_params={"SecretId": "prod/pg"})
    stubber.activate()
    return client, stubber


def test_postgres_from_secret(caplog: pytest.LogCaptureFixture) -> None:
    secret = json.dumps({"host": "mine.rds.amazonaws.com", "port": "5432", "dbname": "mining",
                         "username": "svc", "password": SECRET})
    client, stubber = _stubbed(secret)
    with caplog.at_level(logging.DEBUG):
        pg = rs.PostgresSettings.from_secret("prod/pg", "us-east-1", client=client)
    stubber.assert_no_pending_responses()
    assert (pg.host, pg.port, pg.dbname, pg.user, pg.password, pg.sslmode) == (
        "mine.rds.amazonaws.com", 5432, "mining", "svc", SECRET, "require")
    assert pg.jdbc_url() == "jdbc:postgresql://mine.rds.amazonaws.com:5432/mining?sslmode=require"
    assert SECRET not in repr(pg) and SECRET not in caplog.text


def test_redis_from_secret() -> None:
    secret = json.dumps({"host": "cache.aws", "port": "6379", "username": "svc", "password": SECRET})
    client, stubber = _stubbed(secret)
    rd = rs.RedisSettings.from_secret("prod/pg", "us-east-1", client=client, tls=True)
    assert (rd.host, rd.port, rd.username, rd.password, rd.tls) == ("cache.aws", 6379, "svc", SECRET, True)
    assert SECRET not in repr(rd)


def test_secret_errors_do_not_leak() -> None:
    client, _ = _stubbed(error="ResourceNotFoundException")
    with pytest.raises(rs.SettingsError, match="ResourceNotFoundException"):
        rs.PostgresSettings.from_secret("prod/pg", "us-east-1", client=client)
    client, _ = _stubbed(secret_string=f"not json {SECRET}")
    with pytest.raises(rs.SettingsError) as info:
        rs.PostgresSettings.from_secret("prod/pg", "us-east-1", client=client)
    assert SECRET not in str(info.value)
    client, _ = _stubbed(secret_string=json.dumps({"password": SECRET}))
    with pytest.raises(rs.SettingsError, match="lacks host") as info:
        rs.PostgresSettings.from_secret("prod/pg", "us-east-1", client=client)
    assert SECRET not in str(info.value)


def test_service_settings_from_env_uses_legacy_secret() -> None:
    secret = json.dumps({"host": "h", "port": 5433, "dbname": "d", "username": "u", "password": SECRET})
    client, stubber = _stubbed(secret)
    settings = rs.postgres_settings_from_env(
        {"PGSQL_CREDENTIALS_SECRET_NAME": "prod/pg", "AWS_REGION": "us-east-1"}, client=client)
    assert settings.port == 5433 and settings.password == SECRET
    stubber.assert_no_pending_responses()
    env = {"ASSET_CYCLE_PG_HOST": "x", "ASSET_CYCLE_REDIS_HOST": "y"}
    assert rs.postgres_settings_from_env(env).host == "x" and rs.redis_settings_from_env(env).host == "y"


def test_regions_key_format() -> None:
    assert rs.regions_key("SITE-456") == "site:SITE-456:regions"
    assert rs.regions_key("S", "pfx:") == "pfx:site:S:regions"
