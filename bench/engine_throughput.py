"""Pure-engine throughput: events/s of `asset-cycle replay`'s engine on a simulated site.

Usage: python bench/engine_throughput.py [--trucks 200] [--hours 24] [--sites 1] [--seed 1]
           [--bundle DIR] [--batch-records N] [--profile]
Generates the bundle once (cached under build/bench/), then times parse + engine over all lines
in one process (single core). Prints events/s and the accuracy against the simulator's truth.
``--batch-records N`` cuts a batch every N records instead of the job's 32,768 (the batches a parse
subtask behind a network hop gets hold what arrives in 100 ms: about 8,000 records on the 200-truck
bundle at parallelism 2), to measure what the engine pays per call (a truck's points of one batch).
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import time
from pathlib import Path

from workbench.bundle import iter_telemetry_lines, read_cycles_csv, read_reference
from workbench.replay import BATCH_RECORDS, Replayer
from workbench.scoring import score
from workbench.simulator import SimulationSpec, write_simulation


def ensure_bundle(args: argparse.Namespace) -> Path:
    """The benchmark bundle, generated on first use."""
    if args.bundle:
        return Path(args.bundle)
    out = Path("build/bench") / f"site_{args.trucks}t_{args.hours:g}h_{args.sites}s_seed{args.seed}"
    if not (out / "truth_cycles.csv").is_file():
        started = time.perf_counter()
        stats = write_simulation(SimulationSpec(trucks=args.trucks, hours=args.hours, sites=args.sites,
                                                seed=args.seed).degraded(), out)
        print(f"generated {out}: {stats.lines} lines in {time.perf_counter() - started:.1f}s")
    return out


def main() -> None:
    """Run the benchmark and print its figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trucks", type=int, default=200)
    parser.add_argument("--hours", type=float, default=24.0)
    parser.add_argument("--sites", type=int, default=1)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--bundle", help="use an existing bundle instead of generating one")
    parser.add_argument("--speculative", action="store_true", help="also compute live tmp rows (Flink live mode)")
    parser.add_argument("--profile", action="store_true", help="print a cProfile of the run")
    parser.add_argument("--batch-records", type=int, help=f"records per batch (default: the job's, {BATCH_RECORDS})")
    args = parser.parse_args()
    if args.batch_records is not None and not 1 <= args.batch_records <= BATCH_RECORDS:
        parser.error(f"--batch-records must be 1..{BATCH_RECORDS} (the replay cuts a batch at {BATCH_RECORDS} anyway)")

    bundle = ensure_bundle(args)
    reference, _ = read_reference(bundle)
    lines = [line for _, line in iter_telemetry_lines(bundle)]
    replayer = Replayer(reference, speculative=args.speculative)
    feed = replayer.feed
    profiler = cProfile.Profile() if args.profile else None
    started = time.perf_counter()
    if profiler:
        profiler.enable()
    batch = args.batch_records or max(len(lines), 1)
    for start in range(0, len(lines), batch):
        for line in lines[start:start + batch]:
            feed("bench", line)
        if args.batch_records:
            replayer.flush()
    result = replayer.finish()
    if profiler:
        profiler.disable()
    elapsed = time.perf_counter() - started
    print(f"bundle: {bundle} ({len(lines):,} lines)")
    print(f"pure engine: {len(lines) / elapsed:,.0f} events/s ({elapsed:.2f} s, {elapsed / len(lines) * 1e6:.1f} µs "
          f"per record, 1 core, speculative={'on' if args.speculative else 'off'}, "
          f"{args.batch_records or BATCH_RECORDS:,} records per batch)")
    truth_file = bundle / "truth_cycles.csv"
    if truth_file.is_file():
        report = score(read_cycles_csv(truth_file), result.closed)
        print(f"accuracy: precision {report.precision:.4f} recall {report.recall:.4f} "
              f"status agreement {report.status_agreement:.4f} "
              f"median total-cycle error {report.total_cycle_error.median:.1f} s")
    if profiler:
        pstats.Stats(profiler).sort_stats("tottime").print_stats(20)


if __name__ == "__main__":
    main()
