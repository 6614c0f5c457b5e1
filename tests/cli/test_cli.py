"""The asset-cycle CLI where no Flink job runs: version, help, and one line (no traceback) for
every user mistake: a missing AWS region or credentials, a bad setting in the environment, an
unreachable PostgreSQL or Redis, a wrong option. Plus ``db reset``."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

from cli.main import build_parser
from tests.job.reliability_support import PROJECT_ROOT, cli_env


def free_port() -> int:
    """A TCP port free right now on 127.0.0.1 (outside the ephemeral range: cli.local_services.free_local_port)."""
    from cli.local_services import free_local_port

    return free_local_port()


def cli(*args: str, env: dict[str, str] | None = None, timeout_s: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cli.main", *args], cwd=PROJECT_ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout_s, check=False)  # fmt: skip


def assert_one_line_error(proc: subprocess.CompletedProcess, *needles: str) -> str:
    """Exit code 2, no traceback, the error on one line of stderr containing every needle."""
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr + proc.stdout, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1, proc.stderr
    for needle in needles:
        assert needle in errors[0], (needle, errors[0])
    return errors[0]


def test_version() -> None:
    proc = cli("--version")
    assert proc.returncode == 0 and proc.stdout.strip() == f"asset-cycle {version('asset-cycle')}"


def _undocumented(parser: argparse.ArgumentParser, path: str) -> list[str]:
    missing = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: choice.help for choice in action._choices_actions}
            for name, sub in action.choices.items():
                if not helps.get(name) or not sub.description:
                    missing.append(f"{path} {name}")
                missing += _undocumented(sub, f"{path} {name}")
        elif not action.help:
            missing.append(f"{path} {'/'.join(action.option_strings) or action.dest}")
    return missing


def test_every_command_and_option_has_help() -> None:
    assert _undocumented(build_parser(), "asset-cycle") == []


def _no_aws(tmp_path: Path, **extra: str) -> dict[str, str]:
    """No AWS configuration at all, and no instance-metadata lookups (no traffic leaves the machine)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(AWS_CONFIG_FILE=str(tmp_path / "none"), AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "none"),
               AWS_EC2_METADATA_DISABLED="true", **extra)  # fmt: skip
    return env


@pytest.mark.parametrize("action", [["snapshots"], ["stop"], ["start"], ["deploy", "--bucket", "b", "--no-upload"]])
def test_msf_without_a_region_says_what_to_set(tmp_path: Path, action: list[str]) -> None:
    assert_one_line_error(cli("msf", *action, env=_no_aws(tmp_path)), "no AWS region", "--region", "AWS_REGION")


def test_msf_without_credentials_says_what_to_set(tmp_path: Path) -> None:
    proc = cli("msf", "snapshots", env=_no_aws(tmp_path, AWS_REGION="eu-west-1"))
    assert_one_line_error(proc, "no AWS credentials", "AWS_PROFILE", "AWS_ACCESS_KEY_ID")


@pytest.mark.parametrize(("variable", "value"), [("ASSET_CYCLE_PG_PORT", "54x2"), ("ASSET_CYCLE_PG_SSLMODE", "maybe"),
                                                  ("ASSET_CYCLE_REDIS_PORT", "six"), ("ASSET_CYCLE_REDIS_TLS", "sure")])
def test_a_bad_setting_in_the_environment_is_named(variable: str, value: str) -> None:
    env = {**os.environ, variable: value}
    line = assert_one_line_error(cli("run", "--source", "file:/nonexistent", env=env))
    assert variable in line, line


@pytest.mark.services
def test_unreachable_postgres_says_what_to_set(pg_dsn: str, redis_url: str) -> None:
    env = cli_env(pg_dsn, redis_url, ASSET_CYCLE_PG_PORT=str(free_port()))
    assert_one_line_error(cli("run", env=env), "cannot connect to PostgreSQL at 127.0.0.1:", "ASSET_CYCLE_PG_HOST")


@pytest.mark.services
def test_unreachable_redis_says_what_to_set(pg_dsn: str, redis_url: str) -> None:
    env = cli_env(pg_dsn, redis_url, ASSET_CYCLE_REDIS_PORT=str(free_port()))
    assert_one_line_error(cli("run", env=env), "cannot connect to Redis at 127.0.0.1:", "ASSET_CYCLE_REDIS_HOST")


@pytest.mark.parametrize(("args", "needle"), [
    (["--source", "tape"], "--source must be simulator"),
    (["--resume"], "--resume needs a source that can be read again"),
    (["--source", "file:x", "--resume", "--from-savepoint", "y"], "not both"),
    (["--monitor-s", "1"], "--monitor-s needs --source file:DIR"),
])  # fmt: skip
def test_wrong_run_options_are_one_line(args: list[str], needle: str) -> None:
    assert_one_line_error(cli("run", *args), needle)


@pytest.mark.services
def test_db_reset_removes_a_schemas_tables_and_its_redis_keys(pg_dsn: str, redis_url: str, pg_schema: str,
                                                                redis_prefix: str, redis_client) -> None:  # fmt: skip
    import psycopg2

    env = cli_env(pg_dsn, redis_url)
    assert cli("db", "init", "--pg-dsn", pg_dsn, "--schema", pg_schema, env=env).returncode == 0
    redis_client.hset(f"{redis_prefix}site:S1:regions", "r", "{}")
    redis_client.hset(f"{redis_prefix}other", "k", "v")
    common = ["db", "reset", "--pg-dsn", pg_dsn, "--schema", pg_schema, "--redis-prefix", redis_prefix]

    asked = cli(*common, env=env)
    assert_one_line_error(asked, "nothing removed", "--yes")
    assert f"would drop 11 table(s) and 2 view(s) in schema {pg_schema}" in asked.stdout and "1 Redis key(s)" in asked.stdout

    done = cli(*common, "--yes", env=env)
    assert done.returncode == 0, done.stderr
    assert f"schema {pg_schema})" in done.stdout and "deleted 1 Redis key(s)" in done.stdout
    conn = psycopg2.connect(pg_dsn)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (pg_schema,))
            assert cur.fetchone() is None
    finally:
        conn.close()
    assert not redis_client.exists(f"{redis_prefix}site:S1:regions")
    assert redis_client.exists(f"{redis_prefix}other")  # only region hashes are the job's
