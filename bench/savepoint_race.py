"""Stop-with-savepoint under CPU load, many times: how often the savepoint is taken, retried or lost.

Usage: python bench/savepoint_race.py [--runs 20] [--load 2] [--max-delay-s 0.6] [--seed 1]

Each run is ``asset-cycle run`` on a watched directory holding a small degraded bundle (the job stays
up), stopped with SIGTERM and ``--savepoint-dir``. Its ``reference-snapshot`` source is bounded: it
finishes right after the first checkpoint has completed (a finished task waits for one), so the
SIGTERM is sent at a random moment 0..``--max-delay-s`` after that checkpoint's metadata appears,
which is when a stop can race the finishing task (the TaskManager has finished it, the JobManager
does not know yet; the savepoint then failed with "Task local checkpoint failure" and the job was
cancelled without one; the console now retries it). Meanwhile ``--load`` busy processes keep the CPUs
saturated. Prints one line per run (exit code, savepoint taken, retries, the first failure) and the
counts at the end; exits 1 when a savepoint was lost.

PostgreSQL and Redis: ``ASSET_CYCLE_BENCH_PG_DSN`` (default the local test database) and Redis on
127.0.0.1:6379; a throwaway schema ``bench_<hex>`` and key prefix ``bench:<hex>:``, removed afterwards.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import PG_DSN  # noqa: E402
from cli.local_services import free_local_port  # noqa: E402
from workbench.simulator import SimulationSpec, write_simulation  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def _busy() -> None:
    while True:
        pass


def _env(pg_dsn: str) -> dict[str, str]:
    params = dict(part.split("=", 1) for part in pg_dsn.split())
    env = {k: v for k, v in os.environ.items() if k != "ASSET_CYCLE_LOCAL"}
    env.update(ASSET_CYCLE_PG_HOST=params.get("host", "127.0.0.1"), ASSET_CYCLE_PG_PORT=params.get("port", "5432"),
               ASSET_CYCLE_PG_DB=params.get("dbname", "test"), ASSET_CYCLE_PG_USER=params.get("user", "postgres"),
               ASSET_CYCLE_REDIS_HOST="127.0.0.1", ASSET_CYCLE_REDIS_PORT="6379")  # fmt: skip
    return env


def _wait_for(log: Path, proc: subprocess.Popen, text: str, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and proc.poll() is None:
        if text in log.read_text(errors="replace"):
            return True
        time.sleep(0.05)
    return False


def _first_checkpoint(root: Path, proc: subprocess.Popen, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and proc.poll() is None:
        if any(root.glob("*/chk-*/_metadata")):
            return True
        time.sleep(0.01)
    return False


def one_run(work: Path, n: int, watched: Path, schema: str, prefix: str, delay_s: float, env: dict[str, str]) -> dict:
    """One stop-with-savepoint run; what the console said about it."""
    log = work / f"run-{n}.log"
    savepoints = work / f"sp-{n}"
    args = [sys.executable, "-m", "cli", "run", "--source", f"file:{watched}", "--monitor-s", "1", "--schema", schema,
            "--redis-prefix", prefix, "--savepoint-dir", str(savepoints), "--checkpoint-dir", str(work / f"cp-{n}"),
            "--rest-port", str(free_local_port()), "--progress-s", "1", "--checkpoint-interval", "2000"]  # fmt: skip
    with open(log, "w") as out:
        proc = subprocess.Popen(args, cwd=ROOT, env={**env, "FLINK_LOG_DIR": str(work / f"flink-{n}")}, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
        try:
            running = _wait_for(log, proc, "job running", 300)
            checkpointed = running and _first_checkpoint(work / f"cp-{n}", proc, 120)
            if checkpointed:
                time.sleep(delay_s)
            proc.send_signal(signal.SIGTERM)
            rc = proc.wait(300)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(30)
    text = log.read_text(errors="replace")
    taken = re.findall(r"^savepoint: (\S+)$", text, re.M)
    retries = re.findall(r"^the savepoint failed \((.*)\); trying again", text, re.M)
    lost = re.findall(r"^no savepoint: (.*)$", text, re.M)
    return {"rc": rc, "running": running, "taken": bool(taken) and Path(taken[-1]).is_dir(), "retries": retries,
            "lost": lost, "delay_s": delay_s}


def main() -> int:
    """Run the loop; print the counts."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--load", type=int, default=os.cpu_count() or 2, help="busy processes (default: one per CPU)")
    parser.add_argument("--max-delay-s", type=float, default=0.6)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--pg-dsn", default=PG_DSN)
    args = parser.parse_args()

    import psycopg2
    import redis

    rng = random.Random(args.seed)
    work = Path(tempfile.mkdtemp(prefix="savepoint-race-", dir=ROOT / "build"))
    site = work / "site"
    write_simulation(SimulationSpec(trucks=4, hours=2, seed=3).degraded(), site)
    watched = work / "watched" / "incoming"
    watched.mkdir(parents=True)
    for name in ("assets.csv", "regions.geojson"):
        shutil.copy(site / name, watched.parent / name)
    shutil.copy(site / "telemetry.jsonl", watched / "part-1.jsonl")
    schema, prefix = f"bench_{uuid.uuid4().hex[:12]}", f"bench:{uuid.uuid4().hex[:12]}:"
    env = _env(args.pg_dsn)
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(1))  # the finally below ends the load
    load = [multiprocessing.Process(target=_busy, daemon=True) for _ in range(args.load)]
    for p in load:
        p.start()
    results = []
    try:
        for n in range(args.runs):
            delay = rng.uniform(0.0, args.max_delay_s)
            started = time.monotonic()
            r = one_run(work, n, watched, schema, prefix, delay, env)
            results.append(r)
            print(f"run {n + 1:2d}: SIGTERM {delay:.2f} s after the first checkpoint -> exit {r['rc']}, savepoint "
                  f"{'taken' if r['taken'] else 'LOST'}, {len(r['retries'])} retries"
                  + (f" (first: {r['retries'][0]})" if r["retries"] else "")
                  + (f"; no savepoint: {r['lost'][0]}" if r["lost"] else "")
                  + f"; {time.monotonic() - started:.0f} s", flush=True)  # fmt: skip
    finally:
        for p in load:
            p.terminate()
        conn = psycopg2.connect(args.pg_dsn)
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        conn.close()
        client = redis.Redis(host="127.0.0.1", port=6379)
        keys = list(client.scan_iter(match=prefix + "*"))
        if keys:
            client.delete(*keys)
        client.close()
    taken = sum(r["taken"] for r in results)
    retried = sum(1 for r in results if r["retries"])
    print(f"{len(results)} stops with a savepoint under {args.load} busy processes: {taken} savepoints taken, "
          f"{len(results) - taken} lost, {retried} needed a retry ({sum(len(r['retries']) for r in results)} retries); "
          f"all exit 0: {all(r['rc'] == 0 for r in results)}; logs in {work}")
    return 0 if taken == len(results) and all(r["rc"] == 0 for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
