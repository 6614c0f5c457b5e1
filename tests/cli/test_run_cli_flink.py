"""``asset-cycle run`` through the real CLI on the local minicluster: what it prints (state changes,
progress, the summary of a bounded run, an empty or all-bad input said as such, quiet by default),
how it stops (Ctrl-C, SIGTERM with a savepoint: exit 0, one line each, no traceback), that every
port the local job opens is on loopback, and that the demo closes cycles. (How long the demo takes to
close its first cycle and a stop with a savepoint takes are figures of bench/cli_timings.py.)"""

from __future__ import annotations

import re
import signal
from collections import Counter
from pathlib import Path

import pytest

from tests.job.reliability_support import CliRun, cli_env, free_port
from workbench.bundle import iter_telemetry_lines, read_reference
from workbench.replay import replay
from workbench.simulator import SimulationSpec, write_simulation

pytestmark = [pytest.mark.flink, pytest.mark.services]

SECRET = "s3cr3t-pw-never-printed"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A degraded 4-truck, 2-hour site (duplicates, disorder, malformed lines, unknown assets)."""
    path = tmp_path_factory.mktemp("cli-site") / "site"
    write_simulation(SimulationSpec(trucks=4, hours=2, seed=3).degraded(), path)
    return path


def _bundle_with(tmp_path: Path, site: Path, lines: list[str]) -> Path:
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    for name in ("assets.csv", "regions.geojson"):
        (bundle / name).write_bytes((site / name).read_bytes())
    (bundle / "telemetry.jsonl").write_text("".join(line + "\n" for line in lines))
    return bundle


def _args(tmp_path: Path, pg_schema: str, redis_prefix: str) -> list[str]:
    return ["--schema", pg_schema, "--redis-prefix", redis_prefix, "--rest-port", str(free_port()),
            "--checkpoint-dir", str(tmp_path / "cp")]  # fmt: skip


def _no_traceback(output: str) -> None:
    assert "Traceback" not in output and "Exception" not in output, output[-3000:]


def test_a_bounded_run_prints_its_states_progress_and_a_summary_equal_to_the_replay(
        tmp_path: Path, site: Path, pg_dsn: str, redis_url: str, pg_schema: str, redis_prefix: str) -> None:
    env = cli_env(pg_dsn, redis_url, ASSET_CYCLE_PG_PASSWORD=SECRET)
    run = CliRun([*_args(tmp_path, pg_schema, redis_prefix), "--source",
                  f"file:{site}", "--verbose", "--progress-s", "1"], env, tmp_path / "run.log")  # fmt: skip
    assert run.wait(400) == 0, run.output()[-3000:]
    out = run.output()
    _no_traceback(out)
    assert SECRET not in out
    assert "apache_beam" not in out and "BigQuery" not in out
    assert f"file:{site} -> PostgreSQL 127.0.0.1:" in out and f"schema {pg_schema}" in out
    assert re.search(r"^job [0-9a-f]{32} submitted$", out, re.M)
    assert re.search(r"^job running; Ctrl-C stops it$", out, re.M)
    assert "settings: mode=demo" in out  # --verbose: the settings, short and masked
    assert max(len(line) for line in out.splitlines() if "settings:" in line) < 600

    expected = replay(((f"file:{site}", line) for _, line in iter_telemetry_lines(site)), read_reference(site)[0])
    reasons = Counter(d.reason for d in expected.dead_letters)
    statuses = Counter(c.cycle_status for c in expected.closed)
    [summary] = [line for line in out.splitlines() if line.startswith("finished in ")]
    assert f": {expected.records:,} records ({expected.applied_points:,} applied, {expected.duplicates:,} duplicates, " \
           f"{expected.reordered:,} re-ordered, {reasons.get('LATE', 0):,} late, {expected.non_truck:,} non-truck)" \
           in summary, summary
    assert f"{len(expected.dead_letters):,} dead letters {{" + ", ".join(
        f"{k}: {v:,}" for k, v in sorted(reasons.items())) + "}" in summary, summary
    assert f"{len(expected.closed):,} closed cycles {{" + ", ".join(
        f"{k}: {v:,}" for k, v in sorted(statuses.items())) + "}" in summary, summary


def test_an_empty_input_is_said_as_such(tmp_path: Path, site: Path, pg_dsn: str, redis_url: str, pg_schema: str,
                                        redis_prefix: str) -> None:  # fmt: skip
    bundle = _bundle_with(tmp_path, site, [])
    run = CliRun([*_args(tmp_path, pg_schema, redis_prefix), "--source", f"file:{bundle}"], cli_env(pg_dsn, redis_url),
                 tmp_path / "run.log")  # fmt: skip
    assert run.wait(400) == 0, run.output()[-3000:]
    _no_traceback(run.output())
    assert f"file:{bundle} had no records; nothing was written" in run.output()


def test_an_input_of_nothing_but_bad_records_is_said_as_such(tmp_path: Path, site: Path, pg_dsn: str, redis_url: str,
                                                             pg_schema: str, redis_prefix: str) -> None:  # fmt: skip
    bundle = _bundle_with(tmp_path, site, ["not json"] * 5 + ['{"asset_guid": 1}'] * 3)
    run = CliRun([*_args(tmp_path, pg_schema, redis_prefix), "--source", f"file:{bundle}"], cli_env(pg_dsn, redis_url),
                 tmp_path / "run.log")  # fmt: skip
    assert run.wait(400) == 0, run.output()[-3000:]
    out = run.output()
    _no_traceback(out)
    assert f"every one of the 8 records of file:{bundle} was rejected {{BAD_JSON: 5, " in out, out[-2000:]
    assert f"nothing was applied (see {pg_schema}.asset_cycle_dead_letter)" in out


# --------------------------------------------------------------------------- stopping, ports


def _listening_sockets(session_id: int) -> list[tuple[str, int, int]]:
    """(local address, port, pid) of every TCP socket listening in a process session (from /proc)."""
    import ipaddress
    import os

    inodes: dict[str, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.getsid(int(entry)) != session_id:
                continue
            for fd in os.listdir(f"/proc/{entry}/fd"):
                target = os.readlink(f"/proc/{entry}/fd/{fd}")
                if target.startswith("socket:["):
                    inodes[target[8:-1]] = int(entry)
        except (OSError, ProcessLookupError):
            continue
    found = []
    for table, width in (("/proc/net/tcp", 4), ("/proc/net/tcp6", 16)):
        with open(table) as fh:
            for line in list(fh)[1:]:
                fields = line.split()
                if fields[3] != "0A" or fields[9] not in inodes:  # 0A = LISTEN
                    continue
                hex_addr, hex_port = fields[1].split(":")
                raw = bytes.fromhex(hex_addr)
                # /proc prints each 32-bit word in host (little-endian) order
                words = b"".join(raw[i:i + 4][::-1] for i in range(0, width, 4))
                address = ipaddress.ip_address(words)
                found.append((str(address), int(hex_port, 16), inodes[fields[9]]))
    return found


def _loopback(address: str) -> bool:
    import ipaddress

    ip = ipaddress.ip_address(address)
    return ip.is_loopback or (ip.version == 6 and ip.ipv4_mapped is not None and ip.ipv4_mapped.is_loopback)


def test_ctrl_c_stops_cleanly_and_every_port_of_the_local_job_is_on_loopback(
        tmp_path: Path, site: Path, pg_dsn: str, redis_url: str, pg_schema: str, redis_prefix: str) -> None:
    watched = tmp_path / "site" / "incoming"
    watched.mkdir(parents=True)
    for name in ("assets.csv", "regions.geojson"):
        (watched.parent / name).write_bytes((site / name).read_bytes())
    (watched / "part-1.jsonl").write_text((site / "telemetry.jsonl").read_text())
    metrics_port = free_port()
    run = CliRun([*_args(tmp_path, pg_schema, redis_prefix), "--source",
                  f"file:{watched}", "--monitor-s", "1", "--metrics-port", str(metrics_port), "--checkpoint-interval",
                  "2000"], cli_env(pg_dsn, redis_url), tmp_path / "run.log")  # fmt: skip
    try:
        run.wait_for_line("job running", 300)
        run.wait_for(lambda: (tmp_path / "cp").exists() and any((tmp_path / "cp").glob("*/chk-*/_metadata")), 120,
                     "a checkpoint")  # fmt: skip
        sockets = _listening_sockets(run.proc.pid)
        assert any(port == metrics_port for _, port, _ in sockets), sockets
        assert len(sockets) >= 4, sockets  # py4j, REST, BLOB, RPC, metrics ...
        assert [s for s in sockets if not _loopback(s[0])] == []
        rc = run.signal(signal.SIGINT, 120)
    finally:
        run.stop()
    out = run.output()
    assert rc == 0, out[-3000:]
    _no_traceback(out)
    tail = out[out.index("stopping the job (Ctrl-C)"):].splitlines()
    assert tail[:3] == ["stopping the job (Ctrl-C)", "cancelling the job", "job stopped"], tail
    assert tail[3].startswith(f"latest checkpoint: {tmp_path / 'cp'}/") and "--resume" in tail[3], tail


def test_sigterm_stops_with_a_savepoint(tmp_path: Path, site: Path, pg_dsn: str, redis_url: str, pg_schema: str,
                                        redis_prefix: str) -> None:  # fmt: skip
    watched = tmp_path / "site" / "incoming"
    watched.mkdir(parents=True)
    for name in ("assets.csv", "regions.geojson"):
        (watched.parent / name).write_bytes((site / name).read_bytes())
    (watched / "part-1.jsonl").write_text((site / "telemetry.jsonl").read_text())
    run = CliRun([*_args(tmp_path, pg_schema, redis_prefix), "--source", f"file:{watched}", "--monitor-s", "1",
                  "--savepoint-dir", str(tmp_path / "sp"), "--progress-s", "1"], cli_env(pg_dsn, redis_url),
                 tmp_path / "run.log")  # fmt: skip
    try:
        run.wait_for_line("progress: ", 300)
        rc = run.signal(signal.SIGTERM, 120)
    finally:
        run.stop()
    out = run.output()
    assert rc == 0, out[-3000:]
    _no_traceback(out)
    [path] = re.findall(r"^savepoint: (\S+)$", out, re.M)
    assert Path(path).is_dir() and Path(path).resolve().is_relative_to((tmp_path / "sp").resolve())
    assert out.rstrip().endswith("job stopped")


# --------------------------------------------------------------------------- the demo


def test_the_demo_closes_cycles_and_writes_no_dead_letters(
        tmp_path: Path, pg_dsn: str, redis_url: str, pg_schema: str, redis_prefix: str) -> None:
    import psycopg2

    def first_cycle() -> bool:
        conn = psycopg2.connect(pg_dsn)
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT to_regclass(%s)", (f"{pg_schema}.asset_cycle_vlx",))
                if cur.fetchone()[0] is None:
                    return False
                cur.execute(f'SELECT count(*) FROM "{pg_schema}".asset_cycle_vlx')
                return cur.fetchone()[0] > 0
        finally:
            conn.close()

    run = CliRun([*_args(tmp_path, pg_schema, redis_prefix), "--duration-s", "240"], cli_env(pg_dsn, redis_url),
                 tmp_path / "run.log")  # fmt: skip
    try:
        run.wait_for_line(" submitted", 300)
        run.wait_for(first_cycle, 240, "the first closed cycle")  # how soon: bench/cli_timings.py
        out = run.output()
        assert "simulated fleet (12 trucks per site, 30x real time)" in out and f"schema {pg_schema}" in out
        rc = run.signal(signal.SIGINT, 120)
    finally:
        run.stop()
    assert rc == 0
    conn = psycopg2.connect(pg_dsn)
    try:
        with conn.cursor() as cur:
            cur.execute(f'SELECT reason, count(*) FROM "{pg_schema}".asset_cycle_dead_letter GROUP BY 1')
            assert cur.fetchall() == []  # the demo fleet is clean: nothing late, nothing waiting too long
    finally:
        conn.close()
