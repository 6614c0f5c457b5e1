"""All benchmark figures side by side in one run, on the same generated data.

Usage: python bench/run_all.py [--only pure,flink,latency,state] [--repeat 1] [--small]

* pure:    the `asset-cycle replay` engine (Replayer: parse + engine + timers; no live rows, as the
           job on a bounded input), events/s on one core, for each bundle.
* flink:   the real job end to end (bounded file source -> parse -> keyed cycles -> JDBC upserts into
           a throwaway PostgreSQL schema). events/s = input lines / (last committed row - first
           committed row), from the tables' ``updated_at`` (set by a bench trigger to
           clock_timestamp() on every insert and update); the wall time of env.execute() incl.
           start-up is printed too. Ratio = Flink / pure.
* latency: the simulator source (degraded: duplicates, 30 s disorder, outages) paced at 500 lines/s;
           for every in-order point, wall time it entered the job -> first tx_process_info write of
           that truck with last_event_utc >= its timestamp (bench trigger log, clock_timestamp()).
           Also -> the asset_cycle_tmp_vlx write carrying exactly its timestamp, when it made one.
* state:   10k trucks (1000 trucks x 10 sites, 25 min) through a monitored-directory file source
           (the job stays up), checkpoints every 10 s (hashmap backend); after the input is
           consumed: the latest checkpoint's size and duration from the REST API, then a canonical
           savepoint (stop) and its size on disk per truck; plus the engine's own bytes per truck.

Bundles (degraded simulator, cached under build/bench/): 200 trucks x 24 h (1 site) and 20 trucks x
10 sites x 24 h. ``--small`` uses 200 trucks x 2 h for a quick look.
"""

from __future__ import annotations

import argparse
import bisect
import json
import os
import platform
import shutil
import socket
import statistics
import sys
import time
import urllib.request
from collections import defaultdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (  # noqa: E402
    BENCH_DIR,
    PG_DSN,
    bench_schema,
    build_job,
    ensure_bundle,
    median_spread,
    run_flink_bundle,
)
from workbench.bundle import iter_telemetry_lines, read_reference  # noqa: E402
from workbench.replay import Replayer  # noqa: E402

BEST = {"parallelism": 1, "execution_mode": "thread", "batch_size": 5000, "batch_interval_ms": 200}
"""The best Flink setup found on 2 cores (see bench/README.md)."""


def machine() -> str:
    """One line about the machine."""
    cpu = platform.processor() or "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = os.getloadavg()
    return (f"{os.cpu_count()} cores ({cpu}), Python {platform.python_version()}, "
            f"load avg {load[0]:.1f}/{load[1]:.1f}/{load[2]:.1f}")  # fmt: skip


# --------------------------------------------------------------------------- (a) pure engine


def pure_engine(bundle: Path, repeat: int) -> list[float]:
    """events/s of the replay engine over the bundle's lines (no live rows, like the job on a bounded input)."""
    reference, _ = read_reference(bundle)
    lines = [line for _, line in iter_telemetry_lines(bundle)]
    rates = []
    for _ in range(repeat):
        replayer = Replayer(reference)
        feed = replayer.feed
        started = time.perf_counter()
        for line in lines:
            feed("bench", line)
        replayer.finish()
        rates.append(len(lines) / (time.perf_counter() - started))
    return rates


# --------------------------------------------------------------------------- (b) Flink end to end


def flink_e2e(bundle: Path, repeat: int, **options: Any) -> list[Any]:
    """Runs of the job on the bundle (each into its own schema)."""
    runs = []
    for _ in range(repeat):
        with bench_schema() as names:
            run = run_flink_bundle(bundle, names, **options)
        print(f"    flink {bundle.name}: {run.events_per_s:,.0f} events/s (commit window {run.window_s:.1f} s; "
              f"wall {run.wall_s:.1f} s = {run.wall_events_per_s:,.0f}/s incl. start-up; cycle-engine thread "
              f"{run.engine_cpu_us_per_record:.0f} CPU-us/record, JVM {run.cpu_total_s / run.records * 1e6:.0f}; "
              f"load {os.getloadavg()[0]:.1f}) rows {run.counts}", flush=True)  # fmt: skip
        runs.append(run)
    return runs


# --------------------------------------------------------------------------- (d) latency


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def latency(rate: int, warmup_s: float, measure_s: float, **options: Any) -> dict[str, Any]:
    """p50/p99 (ms) from arrival to the first PostgreSQL write reflecting an in-order point."""
    import psycopg2

    from bench.probes import ArrivalLoggingPuller
    from job.sources import ticker_stream
    from workbench.simulator import SimulationSpec

    ticks = 20
    per_tick = max(1, rate // ticks)
    log_path = BENCH_DIR / f"arrivals_{os.getpid()}.csv"
    log_path.unlink(missing_ok=True)
    start_ms = int(time.time() * 1000) - 60_000
    spec = SimulationSpec(trucks=200, hours=None, seed=3, start_ms=start_ms).degraded()
    ref_bundle = BENCH_DIR / "latency_reference"
    if not (ref_bundle / "assets.csv").is_file():
        from workbench.simulator import write_simulation

        write_simulation(SimulationSpec(trucks=200, hours=0.01, seed=3, start_ms=start_ms).degraded(), ref_bundle)

    def raw_factory(env: Any, t_env: Any) -> Any:
        from udfs.rows import RAW_RECORD_TYPE

        stream = ticker_stream(t_env, "bench_ticker", ticks)
        return (stream.flat_map(ArrivalLoggingPuller(spec, per_tick, str(log_path)), output_type=RAW_RECORD_TYPE)
                .set_parallelism(1).name("simulator-source").uid("simulator-source"))  # fmt: skip

    with bench_schema(log_rows=True) as names:
        env, _ = build_job(ref_bundle, names, raw_factory=raw_factory, **options)
        client = env.execute_async("asset-cycle-bench-latency")
        time.sleep(warmup_s + measure_s)
        client.cancel().result()
        time.sleep(1.0)
        conn = psycopg2.connect(PG_DSN)
        with conn.cursor() as cur:
            cur.execute(f"SELECT kind, asset_guid, (extract(epoch FROM last_event_utc) * 1000)::bigint, "
                        f"extract(epoch FROM at) FROM {names.schema}.bench_row_log ORDER BY at")  # fmt: skip
            log_rows = cur.fetchall()
        conn.rollback()
        conn.close()
    arrivals = [line.split(",") for line in log_path.read_text().splitlines() if line]
    log_path.unlink(missing_ok=True)
    if not arrivals:
        return {"error": "no arrivals logged"}
    reference, _ = read_reference(ref_bundle)
    trucks = {a for a, kind in reference.asset_types.items() if kind == "HAUL_TRUCK"}
    t0 = float(arrivals[0][2])
    rows: dict[tuple[str, str], list[tuple[float, int]]] = defaultdict(list)
    exact: dict[tuple[str, int], float] = {}
    for kind, asset, ev, at in log_rows:
        rows[(kind, asset)].append((float(at), int(ev)))
        if kind == "cycle_tmp":
            exact.setdefault((asset, int(ev)), float(at))
    newest: dict[str, int] = {}
    lat_pi: list[float] = []
    lat_tmp: list[float] = []
    missing = 0
    in_order = 0
    for asset, ev_s, wall_s in arrivals:
        ev, wall = int(ev_s), float(wall_s)
        if asset not in trucks or ev <= newest.get(asset, -1):
            continue
        newest[asset] = ev
        if not (t0 + warmup_s <= wall <= t0 + warmup_s + measure_s - 5):
            continue
        in_order += 1
        writes = rows.get(("process_info", asset), [])
        i = bisect.bisect_left(writes, (wall - 0.5, -1))
        while i < len(writes) and writes[i][1] < ev:
            i += 1
        if i < len(writes):
            lat_pi.append((writes[i][0] - wall) * 1000)
        else:
            missing += 1
        if (asset, ev) in exact:
            lat_tmp.append((exact[(asset, ev)] - wall) * 1000)

    def pct(values: list[float], q: float) -> float:
        values = sorted(values)
        return values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")

    return {
        "rate": len(arrivals) / max(1e-9, float(arrivals[-1][2]) - t0),
        "in_order_points": in_order,
        "missing": missing,
        "p50_ms": pct(lat_pi, 0.50), "p99_ms": pct(lat_pi, 0.99), "max_ms": max(lat_pi, default=float("nan")),
        "tmp_rows": len(lat_tmp), "tmp_p50_ms": pct(lat_tmp, 0.50), "tmp_p99_ms": pct(lat_tmp, 0.99),
    }  # fmt: skip


# --------------------------------------------------------------------------- (e) state size


def _rest(port: int, path: str) -> Any:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as resp:
        return json.loads(resp.read())


def _dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def engine_state_bytes(bundle: Path) -> tuple[float, int]:
    """(mean, max) TruckState.to_bytes length per truck at the end of a replay of ``bundle``."""
    reference, _ = read_reference(bundle)
    lines = ((s, line) for s, line in iter_telemetry_lines(bundle))
    replayer = Replayer(reference)
    for source, line in lines:
        replayer.feed(source, line)
    sizes = [len(s) for s in replayer.states.values()]
    return statistics.mean(sizes), max(sizes)


def state_size(trucks_per_site: int, sites: int, hours: float, checkpoint_ms: int, **options: Any) -> dict[str, Any]:
    """Checkpoint size/duration and savepoint bytes per truck with trucks_per_site x sites trucks."""
    import psycopg2

    from cli.console import stop_with_savepoint
    from job.sources import file_source

    bundle = ensure_bundle(trucks_per_site, hours, sites, seed=5)
    stream_dir = bundle / "stream"
    stream_dir.mkdir(exist_ok=True)
    link = stream_dir / "telemetry.jsonl"
    if not link.exists():
        os.link(bundle / "telemetry.jsonl", link)
    trucks = trucks_per_site * sites
    port = _free_port()
    savepoints = BENCH_DIR / f"savepoints_{os.getpid()}"
    shutil.rmtree(BENCH_DIR / "checkpoints", ignore_errors=True)

    def raw_factory(env: Any, t_env: Any) -> Any:
        return file_source(env, stream_dir, monitor_interval_s=1.0).stream

    out: dict[str, Any] = {"trucks": trucks}
    with bench_schema() as names:
        env, _ = build_job(bundle, names, raw_factory=raw_factory, checkpoint_interval_ms=checkpoint_ms,
                           rest_port=port, **options)  # fmt: skip
        started = time.time()
        client = env.execute_async("asset-cycle-bench-state")
        job_id = str(client.get_job_id())
        conn = psycopg2.connect(PG_DSN)
        last, stable_since = None, None
        while True:  # consumed when no row changed for 3 checkpoint intervals
            time.sleep(2)
            with conn.cursor() as cur:
                cur.execute(f"SELECT count(*), max(updated_at) FROM {names.qualified('process_info')}")
                n, hi = cur.fetchone()
            conn.rollback()
            if hi is not None and hi == last:
                stable_since = stable_since or time.time()
                if time.time() - stable_since > 3 * checkpoint_ms / 1000:
                    break
            else:
                last, stable_since = hi, None
        conn.close()
        out["consume_s"] = time.time() - started
        out["trucks_in_table"] = n
        stats = _rest(port, f"/jobs/{job_id}/checkpoints")
        latest = stats["latest"]["completed"]
        history = [c for c in stats.get("history", []) if c.get("status") == "COMPLETED"]
        out["checkpoint_full_bytes"] = latest.get("state_size") or latest.get("checkpointed_size")
        out["checkpoint_duration_ms"] = latest["end_to_end_duration"]
        out["checkpoint_durations_ms"] = [c["end_to_end_duration"] for c in history]
        out["checkpoint_count"] = stats["counts"]["completed"]
        path = stop_with_savepoint(client, savepoints)
        local = Path(path.replace("file:", "", 1))
        out["savepoint_bytes"] = _dir_size(local)
        out["savepoint_bytes_per_truck"] = out["savepoint_bytes"] / trucks
        shutil.rmtree(savepoints, ignore_errors=True)
    shutil.rmtree(BENCH_DIR / "checkpoints", ignore_errors=True)
    mean, biggest = engine_state_bytes(bundle)
    out["engine_bytes_per_truck_mean"] = mean
    out["engine_bytes_per_truck_max"] = biggest
    return out


# --------------------------------------------------------------------------- main


def main() -> None:
    """Run the selected benchmarks and print a summary table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="pure,flink,latency,state")
    parser.add_argument("--repeat", type=int, default=1, help="Flink runs per bundle (pure: 3x that)")
    parser.add_argument("--small", action="store_true", help="200 trucks x 2 h only (quick look)")
    parser.add_argument("--latency-s", type=float, default=60.0)
    parser.add_argument("--rate", type=int, default=500)
    args = parser.parse_args()
    only = set(args.only.split(","))
    print(f"machine: {machine()}", flush=True)
    if args.small:
        bundles = {"200t x 2h": ensure_bundle(200, 2, 1, seed=2)}
    else:
        bundles = {"200t x 24h": ensure_bundle(200, 24, 1, seed=1), "20t x 10 sites x 24h": ensure_bundle(20, 24, 10, seed=1)}
    summary: dict[str, Any] = {"machine": machine(), "setup": BEST}
    for label, bundle in bundles.items():
        row: dict[str, Any] = {}
        if "pure" in only:
            rates = pure_engine(bundle, max(1, 3 * args.repeat))
            row["pure"] = statistics.median(rates)
            print(f"  {label}: pure engine {median_spread(rates)} events/s", flush=True)
        if "flink" in only:
            runs = flink_e2e(bundle, args.repeat, **BEST)
            rates = [r.events_per_s for r in runs]
            row["flink"] = statistics.median(rates)
            row["flink_wall"] = statistics.median(r.wall_events_per_s for r in runs)
            row["flink_seconds"] = statistics.median(r.window_s for r in runs)
            row["engine_cpu_us_per_record"] = statistics.median(r.engine_cpu_us_per_record for r in runs)
            row["jvm_cpu_us_per_record"] = statistics.median(r.cpu_total_s / r.records * 1e6 for r in runs)
            print(f"  {label}: flink {median_spread(rates)} events/s", flush=True)
        if "pure" in row and "flink" in row:
            row["ratio"] = row["flink"] / row["pure"]
            print(f"  {label}: ratio {row['ratio']:.2f}", flush=True)
        summary[label] = row
    if "latency" in only:
        res = latency(args.rate, warmup_s=20.0, measure_s=args.latency_s, **BEST)
        summary["latency"] = res
        print(f"  latency at {res.get('rate', 0):.0f} lines/s: {res}", flush=True)
    if "state" in only:
        res = state_size(1000, 10, 25 / 60, checkpoint_ms=10_000, **BEST)
        summary["state"] = res
        print(f"  state: {res}", flush=True)
    print(json.dumps(summary, indent=2, default=str))


if __name__ == "__main__":
    main()
