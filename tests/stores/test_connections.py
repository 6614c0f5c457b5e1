"""Tests of stores.connections: settings from the environment and Secrets Manager, passwords masked."""

from __future__ import annotations

import json
import logging

import boto3
import pytest
from botocore.stub import Stubber

from stores import connections, reference
from tests.stores.test_reference import SECRET

# ------------------------------------------------------------------------------ settings


def test_settings_defaults_and_env() -> None:
    assert connections.PostgresSettings.from_env({}) == connections.PostgresSettings("127.0.0.1", 5432, "postgres", "postgres")
    assert connections.RedisSettings.from_env({}) == connections.RedisSettings("127.0.0.1", 6379, 0)
    pg = connections.PostgresSettings.from_env({
        "ASSET_CYCLE_PG_HOST": "db.internal", "ASSET_CYCLE_PG_PORT": "6432", "ASSET_CYCLE_PG_DB": "mine",
        "ASSET_CYCLE_PG_USER": "svc", "ASSET_CYCLE_PG_PASSWORD": SECRET, "ASSET_CYCLE_PG_SSLMODE": "verify-full"})
    assert (pg.host, pg.port, pg.dbname, pg.user, pg.password, pg.sslmode) == (
        "db.internal", 6432, "mine", "svc", SECRET, "verify-full")
    assert pg.jdbc_url() == "jdbc:postgresql://db.internal:6432/mine?sslmode=verify-full"
    assert connections.PostgresSettings().jdbc_url() == "jdbc:postgresql://127.0.0.1:5432/postgres"
    rd = connections.RedisSettings.from_env({"ASSET_CYCLE_REDIS_HOST": "cache", "ASSET_CYCLE_REDIS_PORT": "6380",
                                    "ASSET_CYCLE_REDIS_DB": "2", "ASSET_CYCLE_REDIS_USERNAME": "u",
                                    "ASSET_CYCLE_REDIS_PASSWORD": SECRET, "ASSET_CYCLE_REDIS_TLS": "true"})
    assert (rd.host, rd.port, rd.db, rd.username, rd.password, rd.tls) == ("cache", 6380, 2, "u", SECRET, True)
    with pytest.raises(connections.SettingsError, match="ASSET_CYCLE_PG_PORT"):
        connections.PostgresSettings.from_env({"ASSET_CYCLE_PG_PORT": "x"})
    with pytest.raises(connections.SettingsError, match="ASSET_CYCLE_REDIS_TLS"):
        connections.RedisSettings.from_env({"ASSET_CYCLE_REDIS_TLS": "maybe"})
    with pytest.raises(connections.SettingsError, match="sslmode"):
        connections.PostgresSettings(sslmode="bogus")


def test_settings_mask_passwords(caplog: pytest.LogCaptureFixture) -> None:
    pg = connections.PostgresSettings(password=SECRET)
    rd = connections.RedisSettings(password=SECRET, username="u")
    for obj in (pg, rd):
        assert SECRET not in repr(obj) and SECRET not in str(obj) and SECRET not in f"{obj}"
    assert "***" in repr(pg) and "***" in repr(rd)
    assert SECRET not in pg.jdbc_url()
    log = logging.getLogger("test.settings")
    with caplog.at_level(logging.DEBUG):
        log.info("settings %s %r", pg, rd)
        reference.log.info("settings %s %s", pg, rd)
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
        pg = connections.PostgresSettings.from_secret("prod/pg", "us-east-1", client=client)
    stubber.assert_no_pending_responses()
    assert (pg.host, pg.port, pg.dbname, pg.user, pg.password, pg.sslmode) == (
        "mine.rds.amazonaws.com", 5432, "mining", "svc", SECRET, "require")
    assert pg.jdbc_url() == "jdbc:postgresql://mine.rds.amazonaws.com:5432/mining?sslmode=require"
    assert SECRET not in repr(pg) and SECRET not in caplog.text


def test_redis_from_secret() -> None:
    secret = json.dumps({"host": "cache.aws", "port": "6379", "username": "svc", "password": SECRET})
    client, stubber = _stubbed(secret)
    rd = connections.RedisSettings.from_secret("prod/pg", "us-east-1", client=client, tls=True)
    assert (rd.host, rd.port, rd.username, rd.password, rd.tls) == ("cache.aws", 6379, "svc", SECRET, True)
    assert SECRET not in repr(rd)


def test_secret_errors_do_not_leak() -> None:
    client, _ = _stubbed(error="ResourceNotFoundException")
    with pytest.raises(connections.SettingsError, match="ResourceNotFoundException"):
        connections.PostgresSettings.from_secret("prod/pg", "us-east-1", client=client)
    client, _ = _stubbed(secret_string=f"not json {SECRET}")
    with pytest.raises(connections.SettingsError) as info:
        connections.PostgresSettings.from_secret("prod/pg", "us-east-1", client=client)
    assert SECRET not in str(info.value)
    client, _ = _stubbed(secret_string=json.dumps({"password": SECRET}))
    with pytest.raises(connections.SettingsError, match="lacks host") as info:
        connections.PostgresSettings.from_secret("prod/pg", "us-east-1", client=client)
    assert SECRET not in str(info.value)


def test_service_settings_from_env_uses_legacy_secret() -> None:
    secret = json.dumps({"host": "h", "port": 5433, "dbname": "d", "username": "u", "password": SECRET})
    client, stubber = _stubbed(secret)
    settings = connections.postgres_settings_from_env(
        {"PGSQL_CREDENTIALS_SECRET_NAME": "prod/pg", "AWS_REGION": "us-east-1"}, client=client)
    assert settings.port == 5433 and settings.password == SECRET
    stubber.assert_no_pending_responses()
    env = {"ASSET_CYCLE_PG_HOST": "x", "ASSET_CYCLE_REDIS_HOST": "y"}
    assert connections.postgres_settings_from_env(env).host == "x" and connections.redis_settings_from_env(env).host == "y"
