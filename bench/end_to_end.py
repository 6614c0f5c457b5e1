"""The pure engine and the Flink job end to end on the same bundle, in one run, as a user runs them.

Usage: python bench/end_to_end.py [--trucks 200] [--hours 24] [--bundle DIR] [--repeat 1] [--latency-s 60]

* pure: ``asset-cycle replay BUNDLE`` (parse + engine + timers on one core), process start to exit.
* job:  ``asset-cycle run --source file:BUNDLE`` into a throwaway schema (file source -> Java batcher
        -> parse -> keyed cycle operator -> PostgreSQL upsert sinks on the local minicluster), process
        start to exit, start-up included.

Each figure: events/s = input lines / wall seconds; CPU per record = CPU seconds of the whole machine
(every process: Python, the Flink JVM, PostgreSQL) over the run / input lines, from /proc/stat, so run
it on an otherwise quiet machine. Ratio = job / pure.

* latency (``--latency-s S``, 0 skips it): bench/run_all.py's latency run, the simulator paced at
  ``--rate`` lines/s for 20 s of warm-up plus S s; arrival -> first PostgreSQL write reflecting each
  in-order point (p50 / p99 / max).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import count_lines, ensure_bundle  # noqa: E402

CLI = [sys.executable, "-m", "cli.main"]
SCHEMA = "bench_e2e"


def busy_cpu_seconds() -> float:
    """CPU seconds spent by the whole machine (user + nice + system + irq + softirq) since boot."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq = (int(v) for v in fields[:7])
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


def timed(command: list[str], lines: int) -> tuple[float, float]:
    """(wall s, machine CPU s per record) of one command, which must succeed."""
    cpu0, start = busy_cpu_seconds(), time.perf_counter()
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    wall, cpu = time.perf_counter() - start, busy_cpu_seconds() - cpu0
    if proc.returncode != 0:
        sys.exit(f"{' '.join(command)} failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    return wall, cpu / lines


def main() -> int:
    """Print the pure and end-to-end figures and their ratio."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trucks", type=int, default=200)
    parser.add_argument("--hours", type=float, default=24)
    parser.add_argument("--bundle", type=Path, help="an existing bundle instead of the generated one")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each (median reported)")
    parser.add_argument("--latency-s", type=float, default=60.0, help="latency measurement window (0: skip)")
    parser.add_argument("--rate", type=int, default=500, help="lines/s of the latency run")
    args = parser.parse_args()
    bundle = args.bundle or ensure_bundle(args.trucks, args.hours)
    lines = count_lines(bundle / "telemetry.jsonl")
    print(f"bundle {bundle}: {lines:,} lines; {os.cpu_count()} CPUs", flush=True)
    results: dict[str, list[tuple[float, float]]] = {"pure": [], "job": []}
    with tempfile.TemporaryDirectory(prefix="bench-e2e-") as tmp:
        for _ in range(args.repeat):
            results["pure"].append(timed([*CLI, "replay", str(bundle), "--out", f"{tmp}/cycles.csv", "--no-progress",
                                          "--quiet"], lines))  # fmt: skip
            print(f"  pure: {lines / results['pure'][-1][0]:,.0f} events/s", flush=True)
            timed([*CLI, "db", "reset", "--schema", SCHEMA, "--yes"], 1)
            results["job"].append(timed([*CLI, "run", "--source", f"file:{bundle}", "--schema", SCHEMA,
                                         "--checkpoint-dir", f"{tmp}/cp"], lines))  # fmt: skip
            print(f"  job:  {lines / results['job'][-1][0]:,.0f} events/s", flush=True)
        timed([*CLI, "db", "reset", "--schema", SCHEMA, "--yes"], 1)

    def median(kind: str) -> tuple[float, float]:
        runs = sorted(results[kind])
        return runs[len(runs) // 2]

    (pure_s, pure_cpu), (job_s, job_cpu) = median("pure"), median("job")
    print(f"pure engine (asset-cycle replay): {pure_s:7.1f} s  {lines / pure_s:9,.0f} events/s  "
          f"{pure_cpu * 1e6:6.1f} µs CPU/record")
    print(f"job end to end (asset-cycle run): {job_s:7.1f} s  {lines / job_s:9,.0f} events/s  "
          f"{job_cpu * 1e6:6.1f} µs CPU/record")
    print(f"ratio job/pure: {pure_s / job_s:.2f}")  # fmt: skip
    if args.latency_s > 0:
        from bench.run_all import BEST, latency

        res = latency(args.rate, warmup_s=20.0, measure_s=args.latency_s, **BEST)
        if "error" in res:
            print(f"latency: {res['error']}")
        else:
            print(f"latency at {res['rate']:,.0f} lines/s ({res['in_order_points']:,} in-order points, "
                  f"{res['missing']} without a write): p50 {res['p50_ms']:.0f} ms, p99 {res['p99_ms']:.0f} ms, "
                  f"max {res['max_ms']:.0f} ms")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
