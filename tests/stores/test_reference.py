"""Tests of stores.reference against a real PostgreSQL and Redis: seed, load, malformed data."""

from __future__ import annotations

import json
import logging

import pytest
from psycopg2 import sql

from state_machine.reference import Loader, ReferenceData, Region, SiteReference, group_sites
from stores import reference as rs
from stores.postgres import TableNames

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
    with caplog.at_level(logging.WARNING, logger="stores.reference"):
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



def test_regions_key_format() -> None:
    assert rs.regions_key("SITE-456") == "site:SITE-456:regions"
    assert rs.regions_key("S", "pfx:") == "pfx:site:S:regions"
