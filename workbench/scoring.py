"""Score detected cycles against ground truth.

Cycles are matched one-to-one per asset_guid by load_start: every (truth, found) pair of the same
truck whose load_starts differ by at most ``tolerance_s`` is a candidate, and candidates are taken
greedily by smallest |difference| (ties by time), so each cycle is used at most once.
"""

from __future__ import annotations

import bisect
import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from state_machine.model import CycleRecord

SEGMENT_FIELDS = ("load_seconds", "load_travel_seconds", "dump_seconds", "empty_travel_seconds")


def percentile(values: Iterable[float], q: float) -> float | None:
    """Linear-interpolated percentile (q in 0..100) of values, None when empty."""
    data = sorted(values)
    if not data:
        return None
    pos = (len(data) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(data) - 1)
    return data[lo] + (data[hi] - data[lo]) * (pos - lo)


@dataclass
class ErrorStats:
    """Absolute errors (seconds) of one quantity over the matched pairs where both sides have it."""

    count: int = 0
    median: float | None = None
    p90: float | None = None
    max: float | None = None

    @classmethod
    def of(cls, errors: list[float]) -> ErrorStats:
        """Summary of a list of absolute errors."""
        if not errors:
            return cls()
        return cls(len(errors), percentile(errors, 50), percentile(errors, 90), max(errors))

    def text(self) -> str:
        """Short human form."""
        if not self.count:
            return "n/a"
        return f"median {self.median:.1f} s, p90 {self.p90:.1f} s, max {self.max:.1f} s (n={self.count})"


@dataclass
class ScoreReport:
    """Matching quality of detected cycles against ground truth."""

    tolerance_s: float
    truth_count: int
    found_count: int
    matched: int
    precision: float
    recall: float
    f1: float
    status_agreement: float | None
    complete_recall: float | None
    """Truth COMPLETE cycles matched by a found COMPLETE cycle, over all truth COMPLETE cycles."""
    complete_precision: float | None
    """Found COMPLETE cycles matched to a truth COMPLETE cycle, over all found COMPLETE cycles."""
    confusion: dict[tuple[str, str], int]
    load_start_error: ErrorStats
    total_cycle_error: ErrorStats
    segment_errors: dict[str, ErrorStats]
    missing: list[CycleRecord] = field(default_factory=list, repr=False)
    """Truth cycles without a match."""
    extra: list[CycleRecord] = field(default_factory=list, repr=False)
    """Found cycles without a match."""
    pairs: list[tuple[CycleRecord, CycleRecord]] = field(default_factory=list, repr=False)
    """Matched (truth, found) pairs."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-able metrics (without the cycle lists)."""
        def stats(s: ErrorStats) -> dict[str, Any]:
            return {"count": s.count, "median": s.median, "p90": s.p90, "max": s.max}

        return {
            "tolerance_s": self.tolerance_s,
            "truth_count": self.truth_count,
            "found_count": self.found_count,
            "matched": self.matched,
            "precision": self.precision,
            "recall": self.recall,
            "f1": self.f1,
            "status_agreement": self.status_agreement,
            "complete_recall": self.complete_recall,
            "complete_precision": self.complete_precision,
            "confusion": {f"{t}->{f}": n for (t, f), n in sorted(self.confusion.items())},
            "load_start_error": stats(self.load_start_error),
            "total_cycle_error": stats(self.total_cycle_error),
            "segment_errors": {k: stats(v) for k, v in self.segment_errors.items()},
            "missing": len(self.missing),
            "extra": len(self.extra),
        }

    def summary(self) -> str:
        """Readable multi-line report."""
        agree = "n/a" if self.status_agreement is None else f"{self.status_agreement:.1%}"
        lines = [
            f"cycles: truth {self.truth_count}, found {self.found_count}, matched {self.matched} "
            f"(tolerance {self.tolerance_s:g} s on load_start)",
            f"precision {self.precision:.3f}  recall {self.recall:.3f}  F1 {self.f1:.3f}",
            f"status agreement: {agree}",
            f"COMPLETE recall {_fmt_ratio(self.complete_recall)}  COMPLETE precision {_fmt_ratio(self.complete_precision)}",
        ]
        statuses = sorted({t for t, _ in self.confusion} | {f for _, f in self.confusion})
        if statuses:
            width = max(10, *(len(s) for s in statuses)) + 1
            lines.append("confusion (rows truth, columns found):")
            lines.append(" " * width + "".join(s.rjust(width) for s in statuses))
            for t in statuses:
                lines.append(t.ljust(width) + "".join(str(self.confusion.get((t, f), 0)).rjust(width)
                                                      for f in statuses))
        lines.append(f"load_start abs error: {self.load_start_error.text()}")
        lines.append(f"total_cycle_seconds abs error: {self.total_cycle_error.text()}")
        for name, stats in self.segment_errors.items():
            lines.append(f"{name} abs error: {stats.text()}")
        lines.append(f"missing (truth not found): {len(self.missing)}; extra (found not in truth): {len(self.extra)}")
        return "\n".join(lines)


def match_cycles(truth: list[CycleRecord], found: list[CycleRecord],
                 tolerance_s: float = 90.0) -> list[tuple[int, int]]:
    """Index pairs (truth i, found j) of the one-to-one greedy matching described in the module doc."""
    tol_ms = tolerance_s * 1000.0
    by_asset: dict[str, list[int]] = {}
    for j, rec in enumerate(found):
        if rec.load_start_ms is not None:
            by_asset.setdefault(rec.asset_guid, []).append(j)
    candidates: list[tuple[int, int, int, int]] = []
    for asset_found in by_asset.values():
        asset_found.sort(key=lambda j: found[j].load_start_ms)  # type: ignore[arg-type,return-value]
    starts = {a: [found[j].load_start_ms for j in idx] for a, idx in by_asset.items()}
    for i, rec in enumerate(truth):
        if rec.load_start_ms is None or rec.asset_guid not in by_asset:
            continue
        s = rec.load_start_ms
        idx, st = by_asset[rec.asset_guid], starts[rec.asset_guid]
        k = bisect.bisect_left(st, s - tol_ms)  # type: ignore[arg-type]
        while k < len(st) and st[k] <= s + tol_ms:  # type: ignore[operator]
            candidates.append((abs(st[k] - s), s, i, idx[k]))  # type: ignore[operator]
            k += 1
    candidates.sort()
    used_t: set[int] = set()
    used_f: set[int] = set()
    pairs = []
    for _, _, i, j in candidates:
        if i in used_t or j in used_f:
            continue
        used_t.add(i)
        used_f.add(j)
        pairs.append((i, j))
    pairs.sort()
    return pairs


def _fmt_ratio(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _ratio(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def _abs_err(a: float | int | None, b: float | int | None, scale: float = 1.0) -> float | None:
    if a is None or b is None:
        return None
    return abs(a - b) / scale


def _errors(pairs: list[tuple[CycleRecord, CycleRecord]], name: str, scale: float = 1.0) -> ErrorStats:
    """Absolute errors of one field over matched pairs (pairs where either side lacks it left out)."""
    errors = (_abs_err(getattr(t, name), getattr(f, name), scale) for t, f in pairs)
    return ErrorStats.of([e for e in errors if e is not None])


def score(truth: list[CycleRecord], found: list[CycleRecord], tolerance_s: float = 90.0) -> ScoreReport:
    """Match found cycles to truth cycles (per truck, by load_start) and compute the metrics."""
    pairs_idx = match_cycles(truth, found, tolerance_s)
    pairs = [(truth[i], found[j]) for i, j in pairs_idx]
    matched = len(pairs)
    precision = matched / len(found) if found else (1.0 if not truth else 0.0)
    recall = matched / len(truth) if truth else (1.0 if not found else 0.0)
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    confusion = Counter((t.cycle_status, f.cycle_status) for t, f in pairs)
    agree = sum(n for (t, f), n in confusion.items() if t == f)
    used_t = {i for i, _ in pairs_idx}
    used_f = {j for _, j in pairs_idx}
    both_complete = confusion.get(("COMPLETE", "COMPLETE"), 0)
    return ScoreReport(
        tolerance_s=tolerance_s,
        truth_count=len(truth),
        found_count=len(found),
        matched=matched,
        precision=precision,
        recall=recall,
        f1=f1,
        status_agreement=agree / matched if matched else None,
        complete_recall=_ratio(both_complete, sum(1 for t in truth if t.cycle_status == "COMPLETE")),
        complete_precision=_ratio(both_complete, sum(1 for f in found if f.cycle_status == "COMPLETE")),
        confusion=dict(confusion),
        load_start_error=_errors(pairs, "load_start_ms", 1000.0),
        total_cycle_error=_errors(pairs, "total_cycle_seconds"),
        segment_errors={name: _errors(pairs, name) for name in SEGMENT_FIELDS},
        missing=[r for i, r in enumerate(truth) if i not in used_t],
        extra=[r for j, r in enumerate(found) if j not in used_f],
        pairs=pairs,
    )
