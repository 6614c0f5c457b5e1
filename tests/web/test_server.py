"""The live view's server around the data: read-only sessions and the documented read-only role, a
database outage (503 with a clear message, then recovery without a restart), the bearer token, the
loopback Host check, security headers, error bodies, the OpenAPI schema, the page's local-only assets,
and the small pure helpers (shifts, cursors, the loader status' waiting list)."""

from __future__ import annotations

import re
import urllib.parse
import uuid
from datetime import UTC, datetime
from pathlib import Path

import psycopg2
import psycopg2.errors
import pytest
from psycopg2 import sql
from psycopg2.extensions import parse_dsn

from stores.connections import RedisSettings
from stores.errors import SettingsError
from stores.postgres import TableNames
from tests.web.support import TcpProxy, get, serving
from web.app import decode_cursor, encode_cursor, parse_waiting, shift_window
from web.db import DatabaseDown, ReadOnlyPool
from web.security import content_security_policy
from web.settings import ServeSettings, parse_shift_starts

pytestmark = pytest.mark.services

ROOT = Path(__file__).resolve().parents[2]
ENDPOINTS = ("/api/sites", "/api/fleet", "/api/cycles", "/api/loaders", "/api/alerts", "/api/kpis")


def _settings(pg_dsn: str, names: TableNames, redis_url: str, redis_prefix: str, **extra: object) -> ServeSettings:
    return ServeSettings(database=pg_dsn, names=names, redis=RedisSettings.from_url(redis_url),
                         redis_prefix=redis_prefix, port=0, **extra)  # fmt: skip


# --------------------------------------------------------------------------- read-only


def test_the_servers_sessions_cannot_write(pg_dsn: str, migrated_tables: TableNames) -> None:
    pool = ReadOnlyPool(pg_dsn)
    try:
        with pytest.raises(psycopg2.errors.ReadOnlySqlTransaction):
            pool.fetch(sql.SQL("INSERT INTO {} (asset_guid, site_guid, asset_type) VALUES ('x', 's', 'HAUL_TRUCK')")
                       .format(migrated_tables.table("asset")))  # fmt: skip
        assert pool.fetch("SHOW statement_timeout") == [{"statement_timeout": "5s"}]
    finally:
        pool.close()


def _documented_role_sql() -> str:
    text = (ROOT / "docs" / "web.md").read_text()
    [block] = re.findall(r"<!-- read-only role -->\n```sql\n(.*?)```", text, re.S)
    return block


def test_the_documented_read_only_role_serves_every_endpoint_and_writes_nothing(
        pg_dsn: str, migrated_tables: TableNames, redis_url: str, redis_prefix: str) -> None:  # fmt: skip
    role, password = f"viewer_{uuid.uuid4().hex[:10]}", uuid.uuid4().hex
    statements = (_documented_role_sql().replace("asset_cycle_viewer", role).replace("CHANGE-ME", password)
                  .replace(" dx ", f" {migrated_tables.schema} ").replace(" dx;", f" {migrated_tables.schema};"))
    admin = psycopg2.connect(pg_dsn)
    admin.autocommit = True
    try:
        with admin.cursor() as cur:
            cur.execute(statements)
        viewer = {**parse_dsn(pg_dsn), "user": role, "password": password}
        with serving(_settings(viewer, migrated_tables, redis_url, redis_prefix)) as url:
            for path in ENDPOINTS:
                answer = get(url + path.lstrip("/"))
                assert answer.status == 200, (path, answer.body)
        conn = psycopg2.connect(**viewer)
        try:
            with conn.cursor() as cur:
                with pytest.raises(psycopg2.errors.ReadOnlySqlTransaction):  # the role's sessions are read-only
                    cur.execute(sql.SQL("DELETE FROM {}").format(migrated_tables.table("cycle")))
                conn.rollback()
                cur.execute("SET TRANSACTION READ WRITE")
                with pytest.raises(psycopg2.errors.InsufficientPrivilege):  # and it may not write anyway
                    cur.execute(sql.SQL("DELETE FROM {}").format(migrated_tables.table("cycle")))
        finally:
            conn.close()
    finally:
        with admin.cursor() as cur:
            cur.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
            cur.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))
        admin.close()


# --------------------------------------------------------------------------- outages


def test_a_database_that_goes_away_answers_503_and_the_server_recovers_when_it_is_back(
        pg_dsn: str, migrated_tables: TableNames, redis_url: str, redis_prefix: str) -> None:  # fmt: skip
    params = parse_dsn(pg_dsn)
    proxy = TcpProxy((params.get("host", "127.0.0.1"), int(params.get("port", 5432))))
    try:
        through_proxy = {**params, "host": "127.0.0.1", "port": proxy.port}
        with serving(_settings(through_proxy, migrated_tables, redis_url, redis_prefix)) as url:
            assert get(url + "api/fleet").status == 200
            proxy.cut()
            for path in (*ENDPOINTS, "/health"):
                answer = get(url + path.lstrip("/"))
                assert answer.status == 503, (path, answer.body)
                error = answer.json().get("error") or answer.json()["database"]
                assert "database" in error or "PostgreSQL" in error, error
                assert "\n" not in error
            proxy.restore()
            assert get(url + "api/fleet").status == 200  # the same server, no restart
            assert get(url + "health").json()["database"] == "reachable"
    finally:
        proxy.close()


def test_an_unreachable_database_is_database_down_with_its_address() -> None:
    probe = TcpProxy(("127.0.0.1", 9))
    port = probe.port
    probe.close()
    pool = ReadOnlyPool({"host": "127.0.0.1", "port": port, "user": "postgres", "dbname": "postgres"})
    with pytest.raises(DatabaseDown, match=f"127.0.0.1:{port}"):
        pool.check()


# --------------------------------------------------------------------------- security


def test_every_answer_carries_security_headers_and_the_page_loads_nothing_from_elsewhere(
        pg_dsn: str, migrated_tables: TableNames, redis_url: str, redis_prefix: str) -> None:  # fmt: skip
    with serving(_settings(pg_dsn, migrated_tables, redis_url, redis_prefix)) as url:
        for path in ("", "static/app.js", "vendor/leaflet/leaflet.js", "api/fleet", "api/trucks/none", "nowhere"):
            headers = get(url + path).headers
            assert headers["content-security-policy"] == content_security_policy(None), path
            assert headers["x-content-type-options"] == "nosniff"
            assert headers["x-frame-options"] == "DENY"
            assert headers["referrer-policy"] == "no-referrer"
            assert "server" not in headers
        page = get(url).body.decode()
        assert re.findall(r"""(?:src|href)=["']([^"']+)""", page) == [
            "data:,", "/vendor/leaflet/leaflet.css", "/static/app.css", "/vendor/leaflet/leaflet.js", "/static/app.js"]
        script = get(url + "static/app.js").body.decode()
        assert "innerHTML" not in script and "http://" not in script and "https://" not in script


def test_a_configured_token_guards_the_api_and_health_but_not_the_pages_files(
        pg_dsn: str, migrated_tables: TableNames, redis_url: str, redis_prefix: str) -> None:  # fmt: skip
    token = uuid.uuid4().hex
    with serving(_settings(pg_dsn, migrated_tables, redis_url, redis_prefix, token=token)) as url:
        for path in ("api/fleet", "health", "api/trucks/x"):
            for headers in ({}, {"Authorization": "Bearer wrong-token-wrong-token"}, {"Authorization": token}):
                answer = get(url + path, headers)
                assert answer.status == 401, (path, headers)
                assert answer.headers["www-authenticate"] == "Bearer"
                assert answer.json() == {"error": "a bearer token is required (Authorization: Bearer TOKEN)"}
        assert get(url + "api/fleet", {"Authorization": f"Bearer {token}"}).status == 200
        assert get(url).status == 200 and get(url + "static/app.js").status == 200


def test_beyond_loopback_a_token_is_required(pg_dsn: str) -> None:
    names = TableNames()
    with pytest.raises(SettingsError, match="bearer token is required"):
        ServeSettings(database=pg_dsn, names=names, host="0.0.0.0")
    with pytest.raises(SettingsError, match="at least 16"):
        ServeSettings(database=pg_dsn, names=names, host="0.0.0.0", token="short")
    ServeSettings(database=pg_dsn, names=names, host="0.0.0.0", token="x" * 16)
    ServeSettings(database=pg_dsn, names=names, host="localhost")


def test_bound_to_loopback_it_refuses_other_host_names(pg_dsn: str, migrated_tables: TableNames, redis_url: str,
                                                       redis_prefix: str) -> None:  # fmt: skip
    with serving(_settings(pg_dsn, migrated_tables, redis_url, redis_prefix)) as url:
        port = url.rsplit(":", 1)[1].strip("/")
        for host in ("attacker.example", f"attacker.example:{port}", "127.0.0.1.nip.io"):
            answer = get(url + "api/fleet", {"Host": host})
            assert answer.status == 400, host
            assert "loopback" in answer.json()["error"]
        for host in (f"localhost:{port}", f"127.0.0.1:{port}", "localhost"):
            assert get(url + "api/fleet", {"Host": host}).status == 200, host


# --------------------------------------------------------------------------- errors and the schema


@pytest.mark.parametrize(("path", "status", "error"), [
    ("api/fleet?sit=x", 400, "unknown parameter 'sit' (this endpoint takes site)"),
    ("api/cycles?limit=0", 400, "limit: Input should be greater than or equal to 1 (got '0')"),
    ("api/cycles?limit=x", 400, "limit: Input should be a valid integer, unable to parse string as an integer (got 'x')"),
    ("api/cycles?status=DONE", 400, "status: Input should be 'COMPLETE', 'INVALID' or 'OUTLIER' (got 'DONE')"),
    ("api/cycles?from=yesterday", 400, "from: 'yesterday' is not an ISO 8601 time (e.g. 2024-01-15T06:00Z)"),
    ("api/cycles?from=2024-01-15T08:00Z&to=2024-01-15T06:00Z", 400, "to must be after from"),
    ("api/cycles?cursor=bm9wZQ", 400, "cursor: not a cursor this API returned (use next_cursor as it is)"),
    ("api/alerts?since=2024-13-01", 400, "since: '2024-13-01' is not an ISO 8601 time (e.g. 2024-01-15T06:00Z)"),
    ("api/kpis?from=2024-01-01T00:00Z&to=2024-03-01T00:00Z", 400,
     "the window from 2024-01-01T00:00:00.000Z to 2024-03-01T00:00:00.000Z is longer than 31 days"),
    ("api/fleet?site=" + "x" * 201, 400, "site: String should have at most 200 characters (got '" + "x" * 201 + "')"),
    ("api/trucks/T-404", 404, "unknown truck 'T-404' (no position, cycle or closed cycle in schema {schema})"),
    ("api/nothing", 404, "Not Found"),
])  # fmt: skip
def test_a_bad_request_is_answered_with_one_line(pg_dsn: str, migrated_tables: TableNames, redis_url: str,
                                                 redis_prefix: str, path: str, status: int, error: str) -> None:
    with serving(_settings(pg_dsn, migrated_tables, redis_url, redis_prefix)) as url:
        answer = get(url + path)
    assert answer.status == status
    assert answer.json() == {"error": error.format(schema=migrated_tables.schema)}
    assert answer.headers["content-type"] == "application/json"


def test_the_openapi_schema_describes_every_endpoint(pg_dsn: str, migrated_tables: TableNames, redis_url: str,
                                                     redis_prefix: str) -> None:  # fmt: skip
    with serving(_settings(pg_dsn, migrated_tables, redis_url, redis_prefix)) as url:
        schema = get(url + "openapi.json").json()
        assert get(url + "docs").status == 404  # no documentation page pulling scripts from a CDN
    assert set(schema["paths"]) == {*ENDPOINTS, "/api/trucks/{truck_id}", "/health"}
    for path, item in schema["paths"].items():
        ok = item["get"]["responses"]["200"]["content"]["application/json"]["schema"]
        assert "$ref" in ok, path
    cycles = {p["name"] for p in schema["paths"]["/api/cycles"]["get"]["parameters"]}
    assert cycles == {"site", "truck", "loader", "status", "from", "to", "limit", "cursor"}
    assert "404" in schema["paths"]["/api/trucks/{truck_id}"]["get"]["responses"]
    assert "FleetTruck" in schema["components"]["schemas"]


# --------------------------------------------------------------------------- helpers


def test_this_shift_is_the_one_the_sites_newest_event_falls_in() -> None:
    starts = parse_shift_starts("18:00, 06:00")
    assert starts == (360, 1080)
    at = datetime(2024, 1, 15, 5, 59, tzinfo=UTC)
    assert shift_window(at, starts, "UTC") == (datetime(2024, 1, 14, 18, tzinfo=UTC), datetime(2024, 1, 15, 6, tzinfo=UTC))
    # Perth is UTC+8: its 06:00 shift start is 22:00 UTC the day before
    assert shift_window(datetime(2024, 1, 15, 1, tzinfo=UTC), starts, "Australia/Perth") == (
        datetime(2024, 1, 14, 22, tzinfo=UTC), datetime(2024, 1, 15, 10, tzinfo=UTC))
    with pytest.raises(SettingsError, match="not a time of day"):
        parse_shift_starts("25:00")


def test_a_cursor_round_trips_and_nothing_else_decodes() -> None:
    at = datetime(2024, 1, 15, 6, 0, 1, 123000, tzinfo=UTC)
    assert decode_cursor(encode_cursor(at, "T,1@x")) == (at, "T,1@x")


def test_the_waiting_list_of_a_loader_status_is_read_in_order() -> None:
    assert parse_waiting("HT-2@1705298400000,HT-7@1705298460000") == [
        ("HT-2", datetime(2024, 1, 15, 6, tzinfo=UTC)), ("HT-7", datetime(2024, 1, 15, 6, 1, tzinfo=UTC))]
    assert parse_waiting("") == []


def test_a_truck_id_with_a_slash_and_other_characters_is_found(pg_dsn: str, migrated_tables: TableNames,
                                                                redis_url: str, redis_prefix: str) -> None:  # fmt: skip
    guid = "HT/7 ä,@1"
    conn = psycopg2.connect(pg_dsn)
    with conn, conn.cursor() as cur:
        cur.execute(sql.SQL("INSERT INTO {} (asset_guid, site_guid, last_event_utc, latitude, longitude, work_state_id, "
                            "current_segment, area) VALUES (%s, 'S', now(), -22.7, 118.7, 3, 'NONE', 'T')")
                    .format(migrated_tables.table("process_info")), (guid,))  # fmt: skip
    conn.close()
    with serving(_settings(pg_dsn, migrated_tables, redis_url, redis_prefix)) as url:
        body = get(url + "api/trucks/" + urllib.parse.quote(guid, safe="")).json()
    assert body["asset_guid"] == guid and body["position"]["segment"] == "NONE" and body["current_cycle"] is None


def test_a_tile_server_is_allowed_for_images_only() -> None:
    policy = content_security_policy("https://{s}.tiles.example.org/{z}/{x}/{y}.png")
    assert "img-src 'self' data: https://*.tiles.example.org;" in policy
    assert "script-src 'self';" in policy and "connect-src 'self';" in policy
    assert "tiles.example.org" not in policy.replace("img-src 'self' data: https://*.tiles.example.org;", "")
