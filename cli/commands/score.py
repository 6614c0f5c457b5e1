"""`asset-cycle score TRUTH.csv CYCLES.csv`: compare detected cycles (and, with ``--visits``, load visits:
queue per visit, loads and hang per loader) with ground truth."""

from __future__ import annotations

import argparse
import json

from cli.errors import CliError
from workbench.bundle import BundleError, read_cycles_csv, read_visits_csv
from workbench.scoring import score, score_visits


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `score` sub-command."""
    p = subparsers.add_parser(
        "score",
        help="score detected cycles (CSV) against ground truth (truth_cycles.csv)",
        description="Match cycles one-to-one per truck by load_start within a tolerance and print "
        "precision/recall/F1, status agreement and timing errors.",
    )
    p.add_argument("truth", help="ground truth CSV (e.g. BUNDLE/truth_cycles.csv)")
    p.add_argument("cycles", help="detected cycles CSV (e.g. from `asset-cycle replay`)")
    p.add_argument("--tolerance-s", type=float, default=90.0, help="load_start match tolerance (default 90 s)")
    p.add_argument("--visits", nargs=2, metavar=("TRUTH_VISITS", "VISITS"),
                   help="also score load visits: the simulator's truth_visits.csv against `replay --visits-out`")
    p.add_argument("--json", action="store_true", help="print the metrics as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Handler of `asset-cycle score`."""
    try:
        truth = read_cycles_csv(args.truth)
        found = read_cycles_csv(args.cycles)
        visits = [read_visits_csv(path) for path in args.visits] if args.visits else None
    except BundleError as exc:
        raise CliError(str(exc)) from None
    report = score(truth, found, args.tolerance_s)
    visit_report = None
    if visits is not None:
        ends = [c.cycle_end_ms for c in truth if c.cycle_end_ms is not None]
        visit_report = score_visits(visits[0], visits[1], max(ends) if ends else None)
    if args.json:
        data = report.to_dict()
        if visit_report is not None:
            data["visits"] = visit_report.to_dict()
        print(json.dumps(data, indent=2))
    else:
        print(report.summary())
        if visit_report is not None:
            print(visit_report.summary())
    return 0
