"""The cluster mode of the command line, end to end: `asset-cycle cluster up` starts a JobManager and two
TaskManagers (separate JVMs, on 127.0.0.1 only), `asset-cycle run --cluster` submits the job through its
entry point and follows it through the REST API (a bounded file to its end; a watched directory
stopped into a savepoint at the end of --duration-s), `cluster status` reports it, and `cluster down`
leaves no process behind. The cluster is stopped also when a test fails."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from cli.flink_cluster import CONTROL_JVM_OPTIONS, TASKMANAGER_JVM_OPTIONS, FlinkCluster, alive
from cli.local_services import free_local_port
from stores.postgres import TableNames
from tests.job.reliability_support import (
    PROJECT_ROOT,
    assert_tables_equal_replay,
    cli_env,
    drop_file,
    expected_last_events,
    last_events,
    watched_site,
)
from workbench.bundle import iter_telemetry_lines
from workbench.simulator import SimulationSpec, write_simulation

pytestmark = [pytest.mark.cluster, pytest.mark.flink, pytest.mark.services]


def _cli(env: dict[str, str], *args: str, timeout_s: float = 600.0) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cli", *args], cwd=PROJECT_ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout_s)  # fmt: skip


@pytest.fixture
def services_dir(tmp_path: Path) -> Iterator[Path]:
    """A services folder of the test's own (the cluster's directory is in it); its cluster is stopped at
    the end whatever happened."""
    path = tmp_path / "services"
    try:
        yield path
    finally:
        FlinkCluster(path / "flink-cluster").stop()


def test_cluster_up_run_status_and_down(
    tmp_path: Path, services_dir: Path, pg_dsn: str, redis_url: str, redis_prefix: str, table_names: TableNames,
    extra_schema: TableNames,
) -> None:
    env = cli_env(pg_dsn, redis_url, ASSET_CYCLE_SERVICES_DIR=str(services_dir))
    rest_port = free_local_port()
    up = _cli(env, "cluster", "up", "--taskmanagers", "2", "--rest-port", str(rest_port))
    assert up.returncode == 0, up.stdout + up.stderr
    assert f"Flink Web UI / REST: http://127.0.0.1:{rest_port}" in up.stdout
    assert "TaskManagers: 2 running, 2 registered" in up.stdout
    cluster = FlinkCluster(services_dir / "flink-cluster")
    state = cluster.state()
    assert state is not None and len(state.taskmanagers) == 2
    assert (cluster.lib_dir / Path(next(cluster.lib_dir.glob("asset-cycle-flink-*.jar"))).name).exists()
    # the JobManager's JVM compiles with C1 only (it carries no records), the TaskManagers' with both
    # tiers and raised compile thresholds
    assert CONTROL_JVM_OPTIONS in _jvm_options(state.jobmanager)
    assert TASKMANAGER_JVM_OPTIONS not in _jvm_options(state.jobmanager)
    assert all(CONTROL_JVM_OPTIONS not in _jvm_options(pid) for pid in state.taskmanagers)
    assert all(TASKMANAGER_JVM_OPTIONS in _jvm_options(pid) for pid in state.taskmanagers)

    # a bounded file: submitted through the entry point, followed to its end, every slot used
    bundle = tmp_path / "site"
    write_simulation(SimulationSpec(trucks=6, hours=3, seed=21).degraded(), bundle)
    lines = [line for _, line in iter_telemetry_lines(bundle)]
    common = ["--cluster", "--schema", table_names.schema, "--redis-prefix", redis_prefix, "--progress-s", "1"]
    run = _cli(env, "run", "--source", f"file:{bundle}", *common, "--checkpoint-dir", str(tmp_path / "ck"))
    out = run.stdout + run.stderr
    assert run.returncode == 0, out[-4000:]
    assert f"Flink Web UI: http://127.0.0.1:{rest_port} (parallelism 2" in out
    assert re.search(r"^job [0-9a-f]{32} submitted$", out, re.MULTILINE) and "Traceback" not in out
    assert re.search(r"^finished in [\d.]+ s; the cluster last reported [\d,]+ records in", out, re.MULTILINE), out
    assert_tables_equal_replay(pg_dsn, table_names, bundle, lines)

    # a watched directory, stopped into a savepoint at the end of --duration-s (through the REST API)
    watched = watched_site(tmp_path / "watched", bundle)
    drop_file(watched, "part-1.jsonl", lines)
    savepoints = tmp_path / "savepoints"
    status_seen = {}

    def status_while_running() -> None:
        status_seen["text"] = _cli(env, "cluster", "status").stdout

    live = subprocess.Popen([sys.executable, "-m", "cli", "run", "--source", f"file:{watched}", "--monitor-s", "0.5",
                             *common, "--schema", extra_schema.schema, "--checkpoint-dir", str(tmp_path / "ck2"),
                             "--savepoint-dir", str(savepoints), "--duration-s", "25"],
                            cwd=PROJECT_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
    try:
        expected = expected_last_events(bundle, lines)
        deadline_ok = _wait(lambda: last_events(pg_dsn, extra_schema) == expected, 120)
        status_while_running()
        output, _ = live.communicate(timeout=300)
    finally:
        if live.poll() is None:
            live.kill()
    assert deadline_ok, "the watched directory's lines were not processed"
    assert live.returncode == 0, output[-4000:]
    found = re.findall(r"^savepoint: (\S+)$", output, re.MULTILINE)
    assert found and Path(found[-1]).is_dir() and Path(found[-1]).resolve().is_relative_to(savepoints.resolve()), output
    assert "stopping the job (--duration-s 25 reached)" in output and "job stopped" in output
    assert "jobs running: 1" in status_seen["text"], status_seen

    down = _cli(env, "cluster", "down")
    assert down.returncode == 0 and "stopped: TaskManager" in down.stdout, down.stdout + down.stderr
    assert not any(alive(pid) for pid in [state.jobmanager, *state.taskmanagers])
    assert _cli(env, "cluster", "status").stdout.strip() == "no cluster running"


def _jvm_options(pid: int) -> list[str]:
    """The command line of the process ``pid`` (a cluster process is its JVM)."""
    return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")


def _wait(condition, timeout_s: float) -> bool:
    import time

    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.5)
    return True


def test_run_cluster_without_a_cluster_is_a_one_line_error(tmp_path: Path, pg_dsn: str, redis_url: str) -> None:
    env = cli_env(pg_dsn, redis_url, ASSET_CYCLE_SERVICES_DIR=str(tmp_path / "services"))
    run = _cli(env, "run", "--cluster", "--source", f"file:{tmp_path}", "--no-seed", timeout_s=120)
    assert run.returncode == 2
    assert run.stderr.strip().splitlines() == [
        "asset-cycle run: error: no cluster is running: start one with `asset-cycle cluster up` (or give "
        "--jobmanager HOST:PORT)"]
