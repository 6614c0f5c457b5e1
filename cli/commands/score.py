"""`asset-cycle score TRUTH.csv CYCLES.csv`: compare detected cycles with ground truth."""

from __future__ import annotations

import argparse
import json

from cli.errors import CliError
from workbench.bundle import BundleError, read_cycles_csv
from workbench.scoring import score


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
    p.add_argument("--json", action="store_true", help="print the metrics as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Handler of `asset-cycle score`."""
    try:
        truth = read_cycles_csv(args.truth)
        found = read_cycles_csv(args.cycles)
    except BundleError as exc:
        raise CliError(str(exc)) from None
    report = score(truth, found, args.tolerance_s)
    print(json.dumps(report.to_dict(), indent=2) if args.json else report.summary())
    return 0
