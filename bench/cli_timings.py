"""How long `asset-cycle run` takes for what a user waits on (figures, not a test).

Usage: python bench/cli_timings.py [--repeat 3]

* demo: seconds from "job ... submitted" to the first closed cycle in the table (README: "the first
  cycles close within seconds"), then Ctrl-C;
* stop: a watched-directory run with ``--savepoint-dir``; seconds from SIGTERM to the process exit
  (savepoint taken, "job stopped").

PostgreSQL and Redis: ``ASSET_CYCLE_BENCH_PG_DSN`` (default the local test database) and Redis on
127.0.0.1:6379; a throwaway schema ``bench_<hex>`` and key prefix ``bench:<hex>:``, removed afterwards.
Wall-clock figures: other work on the machine moves them; say so when quoting one.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import PG_DSN  # noqa: E402
from bench.savepoint_race import ROOT, _env  # noqa: E402
from cli.local_services import free_local_port  # noqa: E402
from workbench.simulator import SimulationSpec, write_simulation  # noqa: E402


def _start(work: Path, name: str, args: list[str], env: dict[str, str]) -> tuple[subprocess.Popen, Path]:
    log = work / f"{name}.log"
    proc = subprocess.Popen([sys.executable, "-m", "cli", "run", *args, "--rest-port", str(free_local_port())],
                            cwd=ROOT, env={**env, "FLINK_LOG_DIR": str(work / f"{name}-flink")},
                            stdout=open(log, "w"), stderr=subprocess.STDOUT, start_new_session=True)  # noqa: SIM115
    return proc, log


def _until(check, timeout_s: float, proc: subprocess.Popen) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout_s:
        if proc.poll() is not None:
            raise RuntimeError(f"the run exited early ({proc.returncode})")
        if check():
            return time.monotonic() - start
        time.sleep(0.1)
    raise RuntimeError(f"not within {timeout_s:.0f} s")


def _end(proc: subprocess.Popen, signum: int) -> int:
    proc.send_signal(signum)
    try:
        return proc.wait(300)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)


def demo_first_cycle(work: Path, n: int, schema: str, prefix: str, env: dict[str, str], dsn: str) -> float:
    """Seconds from submission to the demo's first closed cycle."""
    import psycopg2

    def closed() -> bool:
        conn = psycopg2.connect(dsn)
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT to_regclass(%s)", (f"{schema}.asset_cycle_vlx",))
                if cur.fetchone()[0] is None:
                    return False
                cur.execute(f'SELECT count(*) FROM "{schema}".asset_cycle_vlx')
                return cur.fetchone()[0] > 0
        finally:
            conn.close()

    proc, log = _start(work, f"demo-{n}", ["--schema", schema, "--redis-prefix", prefix, "--checkpoint-dir",
                                            str(work / f"demo-cp-{n}"), "--duration-s", "600"], env)  # fmt: skip
    try:
        _until(lambda: " submitted" in log.read_text(), 300, proc)
        return _until(closed, 300, proc)
    finally:
        _end(proc, signal.SIGINT)


def stop_with_savepoint(work: Path, n: int, watched: Path, schema: str, prefix: str, env: dict[str, str]) -> float:
    """Seconds from SIGTERM to the exit of a run stopped with a savepoint."""
    proc, log = _start(work, f"stop-{n}", ["--source", f"file:{watched}", "--monitor-s", "1", "--schema", schema,
                                           "--redis-prefix", prefix, "--savepoint-dir", str(work / f"sp-{n}"),
                                           "--checkpoint-dir", str(work / f"stop-cp-{n}"), "--progress-s", "1"], env)
    _until(lambda: "progress: " in log.read_text(), 300, proc)
    started = time.monotonic()
    rc = _end(proc, signal.SIGTERM)
    took = time.monotonic() - started
    if rc != 0 or "savepoint: " not in log.read_text():
        raise RuntimeError(f"no savepoint (exit {rc}); see {log}")
    return took


def main() -> None:
    """Print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--pg-dsn", default=PG_DSN)
    args = parser.parse_args()
    import psycopg2
    import redis

    work = Path(tempfile.mkdtemp(prefix="cli-timings-", dir=ROOT / "build"))
    site = work / "site"
    write_simulation(SimulationSpec(trucks=4, hours=2, seed=3).degraded(), site)
    watched = work / "watched" / "incoming"
    watched.mkdir(parents=True)
    for name in ("assets.csv", "regions.geojson"):
        shutil.copy(site / name, watched.parent / name)
    shutil.copy(site / "telemetry.jsonl", watched / "part-1.jsonl")
    env = _env(args.pg_dsn)
    schemas, prefix = [], f"bench:{uuid.uuid4().hex[:12]}:"
    first, stops = [], []
    try:
        for n in range(args.repeat):
            schemas.append(f"bench_{uuid.uuid4().hex[:12]}")
            first.append(demo_first_cycle(work, n, schemas[-1], prefix, env, args.pg_dsn))
            stops.append(stop_with_savepoint(work, n, watched, schemas[-1], prefix, env))
    finally:
        conn = psycopg2.connect(args.pg_dsn)
        conn.autocommit = True
        with conn.cursor() as cur:
            for schema in schemas:
                cur.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        conn.close()
        client = redis.Redis(host="127.0.0.1", port=6379)
        keys = list(client.scan_iter(match=prefix + "*"))
        if keys:
            client.delete(*keys)
        client.close()

    def fig(values: list[float]) -> str:
        return f"{statistics.median(values):.1f} s (median of {len(values)}; {min(values):.1f}-{max(values):.1f})"

    print(f"demo: first closed cycle {fig(first)} after the job was submitted")
    print(f"stop with a savepoint (SIGTERM to exit): {fig(stops)}")


if __name__ == "__main__":
    main()
