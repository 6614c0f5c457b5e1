"""``asset-cycle serve`` from the command line: it starts, says where it listens, answers, and stops on
Ctrl-C with exit 0; a user's mistake (an unreachable database, a non-loopback address without a token,
a port in use, an empty token file) is one line with exit code 2, no traceback."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cli.test_cli import assert_one_line_error, cli, free_port
from tests.job.reliability_support import cli_env
from tests.web.support import get

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def test_an_unreachable_database_is_one_line_naming_where_and_what_to_set() -> None:
    port = free_port()
    proc = cli("serve", "--pg-dsn", f"host=127.0.0.1 port={port} user=postgres dbname=postgres connect_timeout=3",
               "--port", "0")  # fmt: skip
    assert_one_line_error(proc, f"cannot connect to PostgreSQL at 127.0.0.1:{port}", "ASSET_CYCLE_PG_HOST")


def test_beyond_loopback_without_a_token_is_one_line() -> None:
    env = {k: v for k, v in os.environ.items() if k != "ASSET_CYCLE_WEB_TOKEN"}
    assert_one_line_error(cli("serve", "--host", "0.0.0.0", env=env), "bearer token is required", "--token-file")


def test_an_empty_token_file_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("\n")
    assert_one_line_error(cli("serve", "--token-file", str(tmp_path / "token")), "is empty")


@pytest.mark.services
def test_a_port_in_use_is_one_line(pg_dsn: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert_one_line_error(cli("serve", "--pg-dsn", pg_dsn, "--port", str(port)),
                              f"cannot listen on 127.0.0.1:{port}", "in use")  # fmt: skip


@pytest.mark.services
def test_serve_starts_answers_and_stops_on_ctrl_c(pg_dsn: str, redis_url: str, migrated_tables) -> None:
    port = free_port()
    env = cli_env(pg_dsn, redis_url)
    proc = subprocess.Popen([sys.executable, "-m", "cli.main", "serve", "--schema", migrated_tables.schema, "--port",
                             str(port)], cwd=PROJECT_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)  # fmt: skip
    try:
        first = proc.stdout.readline()
        assert re.match(rf"^live view: http://127\.0\.0\.1:{port}/ \(schema {migrated_tables.schema}\); API schema: "
                        rf"http://127\.0\.0\.1:{port}/openapi\.json; Ctrl-C stops it$", first), first
        assert get(f"http://127.0.0.1:{port}/api/fleet").json()["trucks"] == []
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "Traceback" not in err and err.strip() == "stopped", err


def test_local_properties_give_the_database_tables_and_redis_prefix(tmp_path: Path) -> None:
    import json

    from cli.commands.serve import serve_settings
    from cli.main import build_parser

    props = tmp_path / "application_properties.json"
    props.write_text(json.dumps([
        {"PropertyGroupId": "SourceConfig", "PropertyMap": {"stream.arn": "arn:aws:kinesis:eu-west-1:1:stream/s"}},
        {"PropertyGroupId": "SinkConfig", "PropertyMap": {"jdbc.url": "jdbc:postgresql://db.example:6543/ops",
                                                          "schema": "mine", "table.cycle": "cycles"}},
        {"PropertyGroupId": "ReferenceConfig", "PropertyMap": {"redis.host": "cache.example", "redis.key.prefix": "p:"}},
        {"PropertyGroupId": "EngineConfig", "PropertyMap": {"loader_distance_m": "65"}},
    ]))  # fmt: skip
    settings = serve_settings(build_parser().parse_args(["serve", "--local-properties", str(props)]))
    assert (settings.names.schema, settings.names.cycle) == ("mine", "cycles")
    assert (settings.database["host"], settings.database["port"], settings.database["dbname"]) == (
        "db.example", 6543, "ops")
    assert (settings.redis.host, settings.redis_prefix) == ("cache.example", "p:")
    assert settings.engine.for_site("any").loader_distance_m == 65
