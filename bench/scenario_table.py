"""Accuracy of the cycle engine on every named scenario family, as a table (optionally side by side
with another checkout of the project, e.g. an older commit, on the very same bundles).

Usage: python bench/scenario_table.py [--trucks 12] [--hours 6] [--seeds 21 31] [--family NAME ...]
           [--compare PATH_TO_OTHER_CHECKOUT]
Bundles are simulated once per family and seed into build/bench/scenarios/. The other checkout runs
its own `asset-cycle replay` (python -m cli.main replay, or job.cli in checkouts from before cli/, with
PYTHONPATH at that checkout) on them and is scored here with the same scorer. Prints recall / precision / COMPLETE recall / status agreement /
median total-cycle error per family (all seeds pooled).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

from state_machine.model import CycleRecord
from workbench.bundle import iter_telemetry_lines, read_cycles_csv, read_reference
from workbench.replay import Replayer
from workbench.scoring import ScoreReport, score
from workbench.simulator import SCENARIO_FAMILIES, scenario_spec, write_simulation

OUT = Path(__file__).resolve().parents[1] / "build" / "bench" / "scenarios"


def bundle(name: str, trucks: int, hours: float, seed: int) -> Path:
    """The family's bundle for one seed, simulated on first use."""
    out = OUT / f"{name}_{trucks}t_{hours:g}h_seed{seed}"
    if not (out / "truth_cycles.csv").is_file():
        write_simulation(scenario_spec(name, trucks=trucks, hours=hours, seed=seed), out)
    return out


def replay_here(path: Path) -> list[CycleRecord]:
    """Closed cycles of this checkout's engine on a bundle."""
    reference, _ = read_reference(path)
    replayer = Replayer(reference)
    for line_no, line in iter_telemetry_lines(path):
        replayer.feed("bench", line, f"line {line_no}")
    return replayer.finish().closed


def replay_there(checkout: Path, path: Path) -> list[CycleRecord]:
    """Closed cycles of another checkout's `asset-cycle replay` on a bundle."""
    out = path / f"cycles_{checkout.name}.csv"
    env = dict(os.environ, PYTHONPATH=str(checkout))
    module = "cli.main" if (checkout / "cli" / "main.py").is_file() else "job.cli"
    subprocess.run([sys.executable, "-m", module, "replay", str(path), "--out", str(out), "--quiet",
                    "--no-progress"], cwd=checkout, env=env, check=True, capture_output=True)
    return read_cycles_csv(out)


def row(name: str, report: ScoreReport) -> str:
    def f(value: float | None) -> str:
        return "—" if value is None else f"{value:.3f}"

    median = report.total_cycle_error.median
    return (f"| {name} | {report.truth_count} | {f(report.recall)} | {f(report.precision)} | "
            f"{f(report.complete_recall)} | {f(report.status_agreement)} | "
            f"{'—' if median is None else f'{median:.1f} s'} |")


def main() -> None:
    """Print the table (and timings on stderr)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trucks", type=int, default=12)
    parser.add_argument("--hours", type=float, default=6.0)
    parser.add_argument("--seeds", type=int, nargs="+", default=[21, 31])
    parser.add_argument("--family", action="append", choices=list(SCENARIO_FAMILIES), default=None)
    parser.add_argument("--compare", type=Path, default=None, help="another checkout to score side by side")
    args = parser.parse_args()
    families = args.family or list(SCENARIO_FAMILIES)
    header = ("| family | truth cycles | recall | precision | COMPLETE recall | status agreement | "
              "median total-cycle error |\n|---|---|---|---|---|---|---|")
    tables: dict[str, list[str]] = {"this checkout": []}
    if args.compare:
        tables[f"{args.compare}"] = []
    for name in families:
        truth: list[CycleRecord] = []
        found: dict[str, list[CycleRecord]] = {key: [] for key in tables}
        for seed in args.seeds:
            path = bundle(name, args.trucks, args.hours, seed)
            cycles = read_cycles_csv(path / "truth_cycles.csv")
            truth += [_tagged(c, seed) for c in cycles]
            started = time.perf_counter()
            found["this checkout"] += [_tagged(c, seed) for c in replay_here(path)]
            print(f"{name} seed {seed}: replay {time.perf_counter() - started:.1f} s", file=sys.stderr)
            if args.compare:
                found[f"{args.compare}"] += [_tagged(c, seed) for c in replay_there(args.compare, path)]
        for key, cycles in found.items():
            tables[key].append(row(name, score(truth, cycles)))
    for key, rows in tables.items():
        print(f"\n{key} ({args.trucks} trucks x {args.hours:g} h, seeds {' '.join(map(str, args.seeds))}):\n")
        print(header)
        print("\n".join(rows))


def _tagged(cycle: CycleRecord, seed: int) -> CycleRecord:
    """The cycle with its truck named per seed, so that several seeds pool into one score."""
    cycle.asset_guid = f"{cycle.asset_guid}@{seed}"
    return cycle


if __name__ == "__main__":
    main()
