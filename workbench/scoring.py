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
from dataclasses import asdict, dataclass, field
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


@dataclass
class LoaderScore:
    """One loader's totals, found against truth (services started up to the end of the run)."""

    loader_guid: str
    truth_loads: int
    found_loads: int
    truth_hang_s: float
    found_hang_s: float
    truth_busy_s: float
    found_busy_s: float

    @property
    def loads_error(self) -> float:
        """Relative error of the number of loads."""
        return abs(self.found_loads - self.truth_loads) / max(1, self.truth_loads)

    @property
    def hang_error(self) -> float:
        """Relative error of the hang time (against the truth's; 0 when both are 0)."""
        if not self.truth_hang_s:
            return 0.0 if not self.found_hang_s else math.inf
        return abs(self.found_hang_s - self.truth_hang_s) / self.truth_hang_s


@dataclass
class VisitScoreReport:
    """Queue time per visit and hang time and loads per loader, found against truth."""

    truth_count: int
    found_count: int
    matched: int
    queue_error: ErrorStats
    queue_within_30s: float | None
    """Share of matched visits whose queue is within 30 s of the truth."""
    loaders: list[LoaderScore]
    truth_queue_s: float
    found_queue_s: float

    def to_dict(self) -> dict[str, Any]:
        """The figures as plain data (JSON)."""
        return {"truth_count": self.truth_count, "found_count": self.found_count, "matched": self.matched,
                "queue_error": asdict(self.queue_error), "queue_within_30s": self.queue_within_30s,
                "truth_queue_s": self.truth_queue_s, "found_queue_s": self.found_queue_s,
                "loaders": [{**asdict(lo), "loads_error": lo.loads_error, "hang_error": lo.hang_error}
                            for lo in self.loaders]}  # fmt: skip

    def summary(self) -> str:
        """Several lines, human readable."""
        lines = [f"visits: truth {self.truth_count}, found {self.found_count}, matched {self.matched}; "
                 f"queue error {self.queue_error.text()}, within 30 s {self.queue_within_30s or 0:.3f}; "
                 f"total queue truth {self.truth_queue_s:.0f} s, found {self.found_queue_s:.0f} s"]
        for ls in self.loaders:
            lines.append(f"  {ls.loader_guid}: loads {ls.found_loads}/{ls.truth_loads}, hang {ls.found_hang_s:.0f}/"
                         f"{ls.truth_hang_s:.0f} s ({ls.hang_error:.3f}), busy {ls.found_busy_s:.0f}/"
                         f"{ls.truth_busy_s:.0f} s")
        return "\n".join(lines)


def _loader_totals(visits: Iterable[Any]) -> dict[str, tuple[int, float, float]]:
    """loader -> (loads, hang s, busy s) of served visits: hang is each gap between one departure and
    the next service start, in the order of departure."""
    by_loader: dict[str, list[Any]] = {}
    for sv in visits:
        by_loader.setdefault(sv.visit.loader_guid, []).append(sv)
    totals = {}
    for loader, served in by_loader.items():
        served.sort(key=lambda sv: (sv.visit.departure_ms, sv.visit.asset_guid))
        hang = busy = 0.0
        for k, sv in enumerate(served):
            busy += (sv.visit.departure_ms - sv.service_start_ms) / 1000.0
            if k:
                hang += max(0, sv.service_start_ms - served[k - 1].visit.departure_ms) / 1000.0
        totals[loader] = (len(served), hang, busy)
    return totals


END_MARGIN_MS = 120_000
"""Services started this close to the end of a run are left out of the score (both sides): an arrival in
the last ping interval can be estimated after the end."""


def score_visits(truth: Iterable[Any], found: Iterable[Any], end_ms: int | None = None,
                 tolerance_s: float = 120.0) -> VisitScoreReport:
    """Score found served visits (state_machine.model.ServedVisit) against the simulator's.

    Visits are matched one-to-one per truck and loader by departure (within ``tolerance_s``, nearest
    first). Only services started up to END_MARGIN_MS before ``end_ms`` count (both sides)."""
    last = None if end_ms is None else end_ms - END_MARGIN_MS

    def counted(sv: Any) -> bool:
        return sv.service_start_ms is not None and (last is None or sv.service_start_ms <= last)

    truth_list = [sv for sv in truth if counted(sv)]
    found_list = [sv for sv in found if counted(sv)]
    by_key: dict[tuple[str, str], list[Any]] = {}
    for sv in truth_list:
        by_key.setdefault((sv.visit.asset_guid, sv.visit.loader_guid), []).append(sv)
    candidates = []
    for j, sv in enumerate(found_list):
        for i, tv in enumerate(by_key.get((sv.visit.asset_guid, sv.visit.loader_guid), ())):
            diff = abs(sv.visit.departure_ms - tv.visit.departure_ms)
            if diff <= tolerance_s * 1000:
                candidates.append((diff, id(tv), i, j, tv))
    used_truth: set[int] = set()
    used_found: set[int] = set()
    errors = []
    for _diff, tid, _i, j, tv in sorted(candidates, key=lambda c: (c[0], c[3])):
        if tid in used_truth or j in used_found:
            continue
        used_truth.add(tid)
        used_found.add(j)
        errors.append(abs(found_list[j].queue_seconds - tv.queue_seconds))
    truth_totals, found_totals = _loader_totals(truth_list), _loader_totals(found_list)
    loaders = [LoaderScore(loader, *_pick(truth_totals.get(loader), found_totals.get(loader)))
               for loader in sorted(set(truth_totals) | set(found_totals))]
    return VisitScoreReport(
        truth_count=len(truth_list), found_count=len(found_list), matched=len(errors),
        queue_error=ErrorStats.of(errors),
        queue_within_30s=(sum(1 for e in errors if e <= 30.0) / len(errors)) if errors else None,
        loaders=loaders, truth_queue_s=sum(sv.queue_seconds for sv in truth_list),
        found_queue_s=sum(sv.queue_seconds for sv in found_list),
    )  # fmt: skip


def _pick(truth: tuple[int, float, float] | None, found: tuple[int, float, float] | None) -> tuple:
    t = truth or (0, 0.0, 0.0)
    f = found or (0, 0.0, 0.0)
    return t[0], f[0], t[1], f[1], t[2], f[2]
