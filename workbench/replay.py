"""Offline replay: run the job's per-record steps over raw telemetry, without Flink.

The Flink job and this replay call the same code: ``state_machine.stream.StreamParser`` (parse,
validate, the stream's watermark and each record's watermark hint) and
``state_machine.operator.TruckOperator`` (every per-truck policy: reference-data holds, non-truck
filtering, the engine, timers, dead letters, alerts). This module only plays Flink's part: it keeps
each truck's state bytes, registers the timers the operator asks for and deletes those it moves
from, as Flink does, fires those due after each batch at the batch's watermark, and at the end fires
everything with the END_OF_INPUT watermark. Reference data is static (a ReferenceData). Timestamps
further than max_future_s ahead of ``now_ms`` are rejected when ``now_ms`` is given (the CLI passes
the wall clock, as the Flink job's parse step does). ``speculative`` (the live in-progress rows of
state_machine.truck) defaults to off, as the job runs a bounded input: the final rows are the same
either way. The closed cycles of a replay are the contract the Flink job is tested against.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from state_machine.config import EngineConfig
from state_machine.lateness import LatenessFigures
from state_machine.loader import LoaderOperator, LoaderStep, store_parts
from state_machine.model import (
    Alert,
    CycleRecord,
    DeadLetter,
    LoaderHour,
    LoaderStatus,
    LoadVisit,
    ServedVisit,
    TruckHour,
    TruckStatus,
)
from state_machine.operator import OperatorOutput, Step, TruckOperator
from state_machine.reference import ReferenceData
from state_machine.stream import ParsedPoint, StreamParser
from state_machine.truck import END_OF_INPUT, closed_sort_key


@dataclass(slots=True)
class ReplayResult:
    """Everything a replay produced (the same content the Flink job writes to its tables). ``closed``
    holds each closed cycle once, as last emitted (its queue filled by its loader's stage), in the order
    they closed; ``served``, ``loader_hours`` and ``loader_status`` the loader stage's rows by key."""

    closed: list[CycleRecord] = field(default_factory=list)
    in_progress: dict[str, CycleRecord] = field(default_factory=dict)
    statuses: dict[str, TruckStatus] = field(default_factory=dict)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    alerts: list[Alert] = field(default_factory=list)
    visits: list[LoadVisit] = field(default_factory=list)
    served: dict[tuple[str, int], ServedVisit] = field(default_factory=dict)
    loader_hours: dict[tuple[str, int], LoaderHour] = field(default_factory=dict)
    loader_status: dict[str, LoaderStatus] = field(default_factory=dict)
    truck_hours: dict[tuple[str, int], TruckHour] = field(default_factory=dict)
    records: int = 0
    applied_points: int = 0
    duplicates: int = 0
    reordered: int = 0
    non_truck: int = 0
    lateness: dict[str, LatenessFigures] = field(default_factory=dict)
    """Per site: arrival-lag quantiles and the hold for late points (state_machine.lateness), at the end."""

    def sorted_closed(self) -> list[CycleRecord]:
        """Closed cycles ordered by asset and load start."""
        return sorted(self.closed, key=closed_sort_key)


BATCH_RECORDS = 32768
"""Records per batch, as the job's RecordBatcher (job.pipeline.BATCH_MAX_RECORDS) cuts them."""


class Replayer:
    """Feeds records one at a time (usable as a library by benchmarks and the Flink tests).

    Records are taken in batches as the job takes them: each batch's valid points go to the operator
    one call per truck (in arrival order), then the timers due at the batch's watermark fire. The
    outputs do not depend on the batch size (every point carries its own watermark hint); batching
    only saves encoding a truck's state after every point.
    """

    def __init__(
        self,
        reference: ReferenceData,
        config: EngineConfig | None = None,
        out_of_orderness_ms: int | None = None,
        speculative: bool = False,
        now_ms: int | None = None,
        source: str = "replay",
    ) -> None:
        self.reference = reference
        self.config = config or EngineConfig()
        lag_ms = self.config.max_disorder_ms if out_of_orderness_ms is None else out_of_orderness_ms
        self.parser = StreamParser(source, lag_ms, self.config.watermark_jump_ms)
        self.operator = TruckOperator(self.config, source, speculative=speculative)
        self.loaders = LoaderOperator()
        self.loader_states: dict[str, bytes] = {}
        self.loader_parts: dict[str, dict[int, bytes]] = {}
        self._closed_at: dict[tuple[str, int | None], int] = {}  # index of each closed cycle in result.closed
        self.now_ms = now_ms
        self.states: dict[str, bytes] = {}
        self._heap: list[tuple[int, int, str]] = []  # (timer, order, asset), deleted ones left in until due
        self._timers: set[tuple[int, str]] = set()  # (timer, asset) registered and not deleted
        self._order = 0
        self._pending: dict[str, list[ParsedPoint]] = {}  # this batch's points by truck, in arrival order
        self._pending_records = 0
        self._result = ReplayResult()

    @property
    def result(self) -> ReplayResult:
        """Everything produced so far (the current batch applied first)."""
        self.flush()
        return self._result

    def _collect(self, asset: str, step: Step) -> None:
        out: OperatorOutput = step.output
        res = self._result
        loaders = self.loaders
        for visit in out.visits:
            self._loader_step(visit.loader_guid, loaders.on_visit, visit)
        for hour in out.hours:
            res.truck_hours[(hour.asset_guid, hour.hour_start_ms)] = hour
        for presence in out.presence:
            self._loader_step(presence.loader_guid, loaders.on_presence, presence)
        for cycle in out.closed:
            self._loader_step(cycle.loader_asset_guid or "", loaders.on_cycle, cycle)
        if out.in_progress is not None:
            res.in_progress[asset] = out.in_progress
        if out.status is not None:
            res.statuses[asset] = out.status
        res.alerts.extend(out.alerts)
        res.visits.extend(out.visits)
        res.dead_letters.extend(out.dead_letters)
        counts = out.counts
        res.duplicates += counts["duplicatesDropped"]
        res.reordered += counts["reordered"]
        res.applied_points += counts["pointsApplied"]
        res.non_truck += counts["nonTruckFiltered"]
        if step.state is None:
            self.states.pop(asset, None)
        else:
            self.states[asset] = step.state
        if step.delete_timer_ms is not None:
            self._timers.discard((step.delete_timer_ms, asset))
        if step.timer_ms is not None and (step.timer_ms, asset) not in self._timers:  # one per key and time
            self._timers.add((step.timer_ms, asset))
            self._order += 1
            heapq.heappush(self._heap, (step.timer_ms, self._order, asset))

    def _closed(self, cycle: CycleRecord) -> None:
        key = (cycle.asset_guid, cycle.load_start_ms)
        res = self._result
        at = self._closed_at.get(key)
        if at is None:
            self._closed_at[key] = len(res.closed)
            res.closed.append(cycle)
        else:
            res.closed[at] = cycle

    def _loader_step(self, loader: str, call: Callable[..., LoaderStep], event: object) -> None:
        """Run one loader step (``call``: an on_* of the loader operator), keep the loader's new state and
        its rows (upserts: the latest of a key wins)."""
        parts = self.loader_parts.setdefault(loader, {})
        step = call(loader, self.loader_states.get(loader), event, parts.copy)
        self.loader_states[loader] = step.state
        store_parts(parts, step.parts)
        out, res = step.output, self._result
        for sv in out.served:
            res.served[(sv.visit.asset_guid, sv.visit.load_start_ms)] = sv
        for cycle in out.cycles:
            self._closed(cycle)
        for hour in out.hours:
            res.loader_hours[(hour.loader_guid, hour.hour_start_ms)] = hour
        if out.status is not None:
            res.loader_status[loader] = out.status

    def _fire_timers(self, watermark: int) -> None:
        heap, timers = self._heap, self._timers
        operator, reference = self.operator, self.reference
        while heap and heap[0][0] <= watermark:
            timer, _, asset = heapq.heappop(heap)
            if (timer, asset) not in timers:
                continue  # deleted
            timers.discard((timer, asset))
            state = self.states.get(asset)
            if state is not None:
                self._collect(asset, operator.on_timer(asset, state, timer, watermark, reference))

    def feed(self, source: str, raw: str | bytes, position: str | None = None) -> None:
        """Process one raw record in arrival order; ``source`` is its source label (dead letters)."""
        res = self._result
        res.records += 1
        if source != self.parser.source:
            self.flush()
            self.parser.source = self.operator.source = source
        parsed = self.parser.parse(raw, position, self.now_ms)
        if isinstance(parsed, ParsedPoint):
            self._pending.setdefault(parsed.point.asset_guid, []).append(parsed)
        else:
            res.dead_letters.append(parsed)
        self._pending_records += 1
        if self._pending_records >= BATCH_RECORDS:
            self.flush()

    def flush(self) -> None:
        """Apply the current batch, then fire the timers due at the stream's watermark."""
        pending, self._pending, self._pending_records = self._pending, {}, 0
        operator, reference, states = self.operator, self.reference, self.states
        for asset, points in pending.items():
            self._collect(asset, operator.on_points(asset, states.get(asset), points, reference))
        watermark = self.parser.watermarks.watermark
        if pending and watermark is not None:
            self._fire_timers(watermark)

    def finish(self) -> ReplayResult:
        """End of input: the last batch, then every pending timer with the END_OF_INPUT watermark."""
        self.flush()
        self._fire_timers(END_OF_INPUT)
        self._result.lateness = self.parser.lateness.figures()
        return self._result


def replay(
    records: Iterable[tuple[str, str | bytes]],
    reference: ReferenceData,
    config: EngineConfig | None = None,
    out_of_orderness_ms: int | None = None,
    speculative: bool = False,
    progress: Callable[[int], None] | None = None,
) -> ReplayResult:
    """Run the job's steps over (source, raw) records in arrival order and return everything produced."""
    replayer = Replayer(reference, config, out_of_orderness_ms, speculative)
    for n, (source, raw) in enumerate(records, 1):
        replayer.feed(source, raw)
        if progress is not None and n % 10000 == 0:
            progress(10000)
    return replayer.finish()
