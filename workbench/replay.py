"""Offline replay: run the engine over raw telemetry exactly as the Flink job does, without Flink.

The Flink job and this replay share every rule (TruckEngine); this module only reproduces the
job's plumbing: parse + validate (bad records are dead-lettered with a reason), asset filtering
(non-trucks are counted, unknown assets rejected), per-site reference data, and event-time
timers driven by a watermark of ``max event time seen - out_of_orderness - 1 ms`` (the Flink
bounded-out-of-orderness strategy, held back against lone far-future timestamps: see
state_machine.watermark) that fire before each record, plus a final END_OF_INPUT watermark.
Timestamps further than max_future_s ahead of ``now_ms`` are rejected when ``now_ms`` is given
(the CLI passes the wall clock, as the Flink job's parse step does). The closed cycles of a replay are the contract the Flink job is tested against.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from state_machine.config import EngineConfig
from state_machine.model import (
    ALERT_NO_REFERENCE_DATA,
    HAUL_TRUCK,
    Alert,
    CycleRecord,
    Rejection,
    StepOutput,
    TruckStatus,
)
from state_machine.reference import ReferenceData
from state_machine.telemetry import Invalid, format_record, parse_record
from state_machine.truck import END_OF_INPUT, TruckEngine, TruckState, closed_sort_key
from state_machine.watermark import WatermarkTracker

UNKNOWN_ASSET = "UNKNOWN_ASSET"
NO_REFERENCE_DATA = "NO_REFERENCE_DATA"


@dataclass(slots=True)
class DeadLetter:
    """A record that was not applied: where it came from, why, and the raw text."""

    source: str
    reason: str
    detail: str
    raw: str
    asset_guid: str | None = None
    ts_ms: int | None = None


@dataclass(slots=True)
class ReplayResult:
    """Everything a replay produced (the same content the Flink job writes to its tables)."""

    closed: list[CycleRecord] = field(default_factory=list)
    in_progress: dict[str, CycleRecord] = field(default_factory=dict)
    statuses: dict[str, TruckStatus] = field(default_factory=dict)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    alerts: list[Alert] = field(default_factory=list)
    records: int = 0
    applied_points: int = 0
    duplicates: int = 0
    reordered: int = 0
    non_truck: int = 0

    def sorted_closed(self) -> list[CycleRecord]:
        """Closed cycles ordered by asset and load start."""
        return sorted(self.closed, key=closed_sort_key)


class Replayer:
    """Feeds records one at a time (usable as a library by benchmarks and the Flink tests)."""

    def __init__(
        self,
        reference: ReferenceData,
        config: EngineConfig | None = None,
        out_of_orderness_ms: int | None = None,
        speculative: bool = True,
        now_ms: int | None = None,
    ) -> None:
        self.reference = reference
        self.config = config or EngineConfig()
        self.engine = TruckEngine(self.config, speculative=speculative)
        self.lag_ms = self.config.max_disorder_ms if out_of_orderness_ms is None else out_of_orderness_ms
        self.now_ms = now_ms
        self.states: dict[str, TruckState] = {}
        self.timers: dict[str, tuple[int, int]] = {}  # asset -> (due, time of its heap entry)
        self._heap: list[tuple[int, str]] = []
        self.watermarks = WatermarkTracker(self.lag_ms, self.config.watermark_jump_ms)
        self._sites_missing: set[str] = set()
        self.result = ReplayResult()

    def _collect(self, asset: str, out: StepOutput, state: TruckState, watermark: int | None = None) -> None:
        res = self.result
        res.closed.extend(out.closed)
        if out.in_progress is not None:
            res.in_progress[asset] = out.in_progress
        if out.status is not None:
            res.statuses[asset] = out.status
        res.alerts.extend(out.alerts)
        res.duplicates += out.duplicates
        res.reordered += out.reordered
        for rej in out.rejected:
            res.dead_letters.append(_rejection_letter(rej))
        due = state.timer_due_ms(self.config, watermark)
        queued = self.timers.get(asset)
        if due is None:
            self.timers.pop(asset, None)
        elif queued is None or due < queued[1]:
            heapq.heappush(self._heap, (due, asset))
            self.timers[asset] = (due, due)
        else:  # a later due: keep the queued heap entry and re-check it when it pops (coalescing)
            self.timers[asset] = (due, queued[1])

    def _fire_timers(self, watermark: int) -> None:
        heap = self._heap
        while heap and heap[0][0] <= watermark:
            queued_at, asset = heapq.heappop(heap)
            entry = self.timers.get(asset)
            if entry is None or entry[1] != queued_at:
                continue  # cancelled or superseded by an earlier entry
            due = entry[0]
            if due > watermark:  # the due time moved on since this entry was queued
                heapq.heappush(heap, (due, asset))
                self.timers[asset] = (due, due)
                continue
            del self.timers[asset]
            state = self.states[asset]
            out, state = self.engine.on_timer(state, due, watermark, self.reference.sites.get(state.committed.site))
            self._collect(asset, out, state, watermark)

    def feed(self, source: str, raw: str | bytes) -> None:
        """Process one raw record in arrival order."""
        res = self.result
        res.records += 1
        parsed = parse_record(raw, now_ms=self.now_ms)
        if isinstance(parsed, Invalid):
            res.dead_letters.append(DeadLetter(source, parsed.reason, parsed.detail, _text(raw),
                                               parsed.asset_guid, parsed.ts_ms))
            return
        watermark = self.watermarks.watermark
        if watermark is not None:
            self._fire_timers(watermark)
        self.watermarks.observe(parsed.ts_ms)
        asset_type = self.reference.asset_types.get(parsed.asset_guid)
        if asset_type is None:
            res.dead_letters.append(DeadLetter(source, UNKNOWN_ASSET, "asset_guid not in the asset table",
                                               _text(raw), parsed.asset_guid, parsed.ts_ms))
            return
        if asset_type != HAUL_TRUCK:
            res.non_truck += 1
            return
        site = self.reference.sites.get(parsed.site_guid)
        if site is None:
            if parsed.site_guid not in self._sites_missing:
                self._sites_missing.add(parsed.site_guid)
                res.alerts.append(Alert(ALERT_NO_REFERENCE_DATA, parsed.asset_guid, parsed.site_guid, parsed.ts_ms,
                                        parsed.latitude, parsed.longitude,
                                        f"no loaders or regions known for site {parsed.site_guid}"))
            res.dead_letters.append(DeadLetter(source, NO_REFERENCE_DATA, f"no reference data for site {parsed.site_guid}",
                                               _text(raw), parsed.asset_guid, parsed.ts_ms))
            return
        state = self.states.get(parsed.asset_guid)
        out, state = self.engine.on_point(state, parsed, site)
        self.states[parsed.asset_guid] = state
        res.applied_points += 1
        self._collect(parsed.asset_guid, out, state)

    def finish(self) -> ReplayResult:
        """End of input: fire every pending timer with the END_OF_INPUT watermark."""
        self._fire_timers(END_OF_INPUT)
        return self.result


def _text(raw: str | bytes) -> str:
    return raw if isinstance(raw, str) else raw.decode("utf-8", errors="replace")


def _rejection_letter(rej: Rejection) -> DeadLetter:
    p = rej.point
    return DeadLetter("engine", rej.reason, rej.detail, format_record(p), p.asset_guid, p.ts_ms)


def replay(
    records: Iterable[tuple[str, str | bytes]],
    reference: ReferenceData,
    config: EngineConfig | None = None,
    out_of_orderness_ms: int | None = None,
    speculative: bool = True,
    progress: Callable[[int], None] | None = None,
) -> ReplayResult:
    """Run the engine over (source, raw) records in arrival order and return everything produced."""
    replayer = Replayer(reference, config, out_of_orderness_ms, speculative)
    for n, (source, raw) in enumerate(records, 1):
        replayer.feed(source, raw)
        if progress is not None and n % 10000 == 0:
            progress(10000)
    return replayer.finish()
