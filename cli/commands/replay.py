"""`asset-cycle replay`: run the pure cycle engine over a site bundle, without Flink."""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

from tqdm import tqdm

from cli.errors import CliError
from job.settings import load_engine_config
from state_machine.config import EngineConfig
from state_machine.truck import closed_sort_key
from stores.errors import SettingsError
from workbench.bundle import (
    BundleError,
    iter_telemetry_lines,
    read_reference,
    write_cycles_csv,
    write_loader_hours_csv,
    write_visits_csv,
)
from workbench.replay import Replayer


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `replay` sub-command."""
    p = subparsers.add_parser(
        "replay",
        help="run the cycle engine over a site bundle and write cycles as CSV",
        description="Replay a bundle's telemetry.jsonl (in line order = arrival order) through the cycle "
        "engine exactly as the Flink job would, and write closed cycles as CSV.",
    )
    p.add_argument("bundle", help="site bundle directory (telemetry.jsonl, regions.geojson, assets.csv)")
    p.add_argument("--out", required=True, help="CSV file for closed cycles")
    p.add_argument("--in-progress", help="CSV file for the cycle still open per truck at the end")
    p.add_argument("--loaders-out", metavar="FILE",
                   help="CSV file for each loader's hours (loads, busy, hang and queue seconds; as loader_hour_kpi)")
    p.add_argument("--visits-out", metavar="FILE",
                   help="CSV file for every load visit in its loader's order of service (queue per visit)")
    p.add_argument("--dead-letters", help="CSV file for rejected lines (line, reason, detail, raw)")
    p.add_argument("--config", help="engine thresholds JSON (defaults + per-site overrides)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--quiet", action="store_true", help="do not list rejected lines on stderr")
    p.set_defaults(func=run_replay)


def run_replay(args: argparse.Namespace) -> int:
    """Handler of `asset-cycle replay`."""
    try:
        config = load_engine_config(args.config) if args.config else EngineConfig()
        reference, _ = read_reference(args.bundle)
    except (SettingsError, BundleError, OSError) as exc:
        raise CliError(str(exc)) from exc
    telemetry = Path(args.bundle) / "telemetry.jsonl"
    if not telemetry.is_file():
        raise CliError(f"{telemetry} not found")

    replayer = Replayer(reference, config, now_ms=int(time.time() * 1000))
    started = time.perf_counter()
    bar = None
    if not args.no_progress and telemetry.stat().st_size > 5_000_000 and sys.stderr.isatty():
        bar = tqdm(total=telemetry.stat().st_size, unit="B", unit_scale=True, desc="replay", file=sys.stderr)
    label = f"file:{telemetry}"  # one source label: records are applied in batches, as the job does
    for line_no, line in iter_telemetry_lines(args.bundle):
        replayer.feed(label, line, f"{label}:{line_no}")
        if bar is not None:
            bar.update(len(line) + 1)
    result = replayer.finish()
    if bar is not None:
        bar.close()
    elapsed = time.perf_counter() - started

    write_cycles_csv(args.out, sorted(result.closed, key=closed_sort_key))
    if args.in_progress:
        write_cycles_csv(args.in_progress, [result.in_progress[a] for a in sorted(result.in_progress)])
    if args.loaders_out:
        write_loader_hours_csv(args.loaders_out, [result.loader_hours[k] for k in sorted(result.loader_hours)])
    if args.visits_out:
        write_visits_csv(args.visits_out, sorted(result.served.values(), key=lambda sv: (
            sv.visit.site_guid, sv.visit.loader_guid, sv.visit.departure_ms, sv.visit.asset_guid)))
    if args.dead_letters:
        with open(args.dead_letters, "w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(["source", "reason", "detail", "asset_guid", "raw"])
            for dl in result.dead_letters:
                writer.writerow([dl.position or dl.source, dl.reason, dl.detail, dl.asset_guid or "", dl.raw[:2000]])
    if not args.quiet:
        for dl in result.dead_letters[:50]:
            print(f"{dl.position or dl.source}: {dl.reason}: {dl.detail}", file=sys.stderr)
        if len(result.dead_letters) > 50:
            print(f"... and {len(result.dead_letters) - 50} more rejected records", file=sys.stderr)

    by_status: dict[str, int] = {}
    for rec in result.closed:
        by_status[rec.cycle_status] = by_status.get(rec.cycle_status, 0) + 1
    reasons: dict[str, int] = {}
    for dl in result.dead_letters:
        reasons[dl.reason] = reasons.get(dl.reason, 0) + 1
    rate = result.records / elapsed if elapsed > 0 else 0.0
    print(
        f"replayed {result.records} records ({result.applied_points} applied, {result.duplicates} duplicates, "
        f"{result.reordered} re-ordered, {result.non_truck} non-truck, {len(result.dead_letters)} rejected "
        f"{dict(sorted(reasons.items()))}) in {elapsed:.2f}s ({rate:,.0f} records/s); "
        f"closed cycles {len(result.closed)} {dict(sorted(by_status.items()))}; "
        f"{len(result.in_progress)} trucks in progress; {len(result.served)} load visits at "
        f"{len({sv.visit.loader_guid for sv in result.served.values()})} loaders"
    )
    return 0
