"""Late data and clock strays: per scenario family, what the engine loses and what it holds.

Usage: python bench/lateness_table.py [--trucks 12] [--hours 6] [--seeds 21 31] [--family NAME ...]
Each family (default: every family with late delivery, dead zones or clock strays) is simulated per seed and
replayed at default settings; so is the same spec without its lateness and strays (the in-order
delivery of the same points). Prints per family (seeds pooled): COMPLETE recall / precision against
the truth, engine dead letters LATE and CLOCK_JUMP, whether the closed cycles equal those of the
in-order delivery, the largest measured hold in force at a site and its hold at the end (max_hold_s
while its evidence is too thin; both shown at most max_hold_s, the default bound the engine clamps them
to), and the per-truck engine state
(``TruckState.to_bytes``: median / largest over every haul truck, sampled every 2,000 records; points
waiting for reference data are the operator's, not counted).
"""

from __future__ import annotations

import argparse
import statistics
from dataclasses import replace

from state_machine.config import CycleThresholds
from state_machine.model import CycleRecord
from state_machine.operator import KeyState
from workbench.replay import Replayer, ReplayResult
from workbench.scoring import score
from workbench.simulator import SCENARIO_FAMILIES, SimulationSpec, scenario_spec, simulate

SAMPLE_EVERY = 2000
MAX_HOLD_MS = int(CycleThresholds().max_hold_s * 1000)


def run(spec: SimulationSpec) -> tuple[list[CycleRecord], ReplayResult, list[int]]:
    """Truth, replay result and the sampled state sizes of one spec."""
    sim = simulate(spec)
    replayer = Replayer(sim.reference)
    sizes: list[int] = []
    for i, (_, line) in enumerate(sim.deliveries, 1):
        replayer.feed("bench", line, f"line {i}")
        if not i % SAMPLE_EVERY:
            replayer.flush()
            trucks = (KeyState.from_bytes(state).truck for state in replayer.states.values())
            sizes += [len(truck.to_bytes()) for truck in trucks if truck is not None]
    return sim.truth, replayer.finish(), sizes


def main() -> None:
    """Print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trucks", type=int, default=12)
    parser.add_argument("--hours", type=float, default=6.0)
    parser.add_argument("--seeds", type=int, nargs="+", default=[21, 31])
    parser.add_argument("--family", action="append", choices=[*SCENARIO_FAMILIES, "all"], default=None)
    args = parser.parse_args()
    families = args.family or [name for name, spec in SCENARIO_FAMILIES.items()
                               if spec.get("late_p") or spec.get("dead_zones_per_day") or spec.get("glitch_trucks")]
    if args.family == ["all"]:
        families = list(SCENARIO_FAMILIES)
    print(f"{args.trucks} trucks x {args.hours:g} h, seeds {' '.join(map(str, args.seeds))}, default settings\n")
    print("| family | truth cycles | COMPLETE recall | COMPLETE precision | LATE | CLOCK_JUMP | closed = in-order | "
          "hold max / final | state median / max |\n|---|---|---|---|---|---|---|---|---|")
    for name in families:
        truth: list[CycleRecord] = []
        found: list[CycleRecord] = []
        late = jumps = 0
        same = True
        holds: list[int] = []
        finals: list[int] = []
        sizes: list[int] = []
        for seed in args.seeds:
            spec = scenario_spec(name, trucks=args.trucks, hours=args.hours, seed=seed)
            t, result, s = run(spec)
            _, in_order, _ = run(replace(spec, late_p=0.0, late_tail_p=0.0, dead_zones_per_day=0.0, glitch_trucks=0))
            same &= [c.as_dict() for c in result.sorted_closed()] == [c.as_dict() for c in in_order.sorted_closed()]
            truth += [_tagged(c, seed) for c in t]
            found += [_tagged(c, seed) for c in result.closed]
            late += sum(d.reason == "LATE" for d in result.dead_letters)
            jumps += sum(d.reason == "CLOCK_JUMP" for d in result.dead_letters)
            holds += [min(f.max_hold_ms, MAX_HOLD_MS) for f in result.lateness.values()]
            finals += [min(f.hold_ms if f.warm else MAX_HOLD_MS, MAX_HOLD_MS) for f in result.lateness.values()]
            sizes += s
        report = score(truth, found)
        print(f"| {name} | {report.truth_count} | {report.complete_recall:.3f} | {report.complete_precision:.3f} | "
              f"{late} | {jumps} | {'yes' if same else 'no'} | {max(holds) / 1000:.0f} s / {max(finals) / 1000:.0f} s | "
              f"{statistics.median(sizes) / 1024:.2f} / {max(sizes) / 1024:.1f} KB |", flush=True)


def _tagged(cycle: CycleRecord, seed: int) -> CycleRecord:
    cycle.asset_guid = f"{cycle.asset_guid}@{seed}"
    return cycle


if __name__ == "__main__":
    main()
