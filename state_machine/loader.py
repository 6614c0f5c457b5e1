"""The per-loader stage: a loader's visits in their order of service, queue and hang time, its hourly
figures and the live state of its bay. Every per-loader policy is here, written once; Flink's keyed
operator (udfs.loader_function) and the offline replay (workbench.replay) call the same steps:

    on_visit(loader, state, visit, parts) -> LoaderStep       a load visit that ended (state_machine.cycle)
    on_cycle(loader, state, cycle, parts) -> LoaderStep       a closed cycle that began with a load here
    on_presence(loader, state, presence, parts) -> LoaderStep a truck arrived, waits, or left (live)

A loader's state is stored in two pieces, so that a step writes what it changed and not the loader's
whole history (up to MAX_VISITS visits and their cycles: hundreds of KiB, which a step would otherwise
copy through Flink twice). ``state`` is the small versioned part: the bay's live state and the
bookkeeping (None for a new loader). The visits and cycles are stored apart, in one part per hour of
load start (``parts``: a callable returning {hour index: bytes}); the operator reads them only when it
does not hold the loader's decoded state (``holds``: after a restore, or once it let DECODED_KEEP newer
loaders take its place). A ``LoaderStep`` carries what to emit, the new ``state`` and the parts that
changed (``parts``: bytes, or None to delete; ``store_parts`` applies them to a dict).

Order of service (docs/cycle-rules.md, Loaders). A loader serves one truck at a time, so its visits are
taken in the order the trucks left. A visit whose first stop came before the previous truck left waited
for it: its service began at that departure and its queue is the time in between. Any other visit's
service began on its arrival in the bay (or at the previous departure, when that came later), with no
queue. Hang is the time between one departure and the next service start. Every figure is a function
of the set of visits received, whatever their order of arrival: a visit that arrives late (its truck's
data came late) updates the figures it changes, and the rows already written are upserted again. So
the tables end the same in Flink and in the replay.

Hours (UTC): loads are the services started in the hour; busy and hang are the parts of services and
of the gaps between them that fall in the hour (the sum over hours is the whole window's figure); queue
is the waits of the visits whose service started in the hour.

Retention: a loader keeps its MAX_VISITS latest visits (by departure) and the cycles they began. A count,
not a span of event time: a batch of history brings one truck's visits hours after another's (a big
batch of a small fleet spans a day), and they must still meet; and Flink's watermark can jump to the
end of time when a source goes idle. A visit older than every one kept, once MAX_VISITS are kept,
changes nothing (counted: ``loaderVisitsTooLate``).
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields, replace

import orjson

from state_machine.model import (
    AT_LOADER,
    LEFT,
    CycleRecord,
    LoaderHour,
    LoaderPresence,
    LoaderStatus,
    LoadVisit,
    ServedVisit,
)

LOADER_STATE_VERSION = 2
"""Version 2 keeps the visits and cycles in parts by hour of load start (version 1 held them in the one
value: it is still read, and its parts are all written at the loader's next step)."""
HOUR_MS = 3_600_000
MAX_VISITS = 1000
"""Visits kept per loader (about three days of a loader serving 12 trucks an hour)."""

_CYCLE_FIELD_NAMES = tuple(f.name for f in fields(CycleRecord))
_LOAD_START = _CYCLE_FIELD_NAMES.index("load_start_ms")
_QUEUE = _CYCLE_FIELD_NAMES.index("queue_seconds")
DECODED_KEEP = 4096
"""Loaders whose decoded state an operator keeps (decoding one reads up to MAX_VISITS visits)."""

VisitKey = tuple[str, int]
"""A visit's and its cycle's key: (truck, load start)."""
PartReader = Callable[[], Mapping[int, bytes]]
"""Reads a loader's stored parts, {hour index of load start: bytes}."""


def _part_of(key: VisitKey) -> int:
    """The stored part of a visit or cycle: the hour of its load start."""
    return (key[1] or 0) // HOUR_MS


def store_parts(parts: dict[int, bytes], changed: Mapping[int, bytes | None]) -> None:
    """Apply a step's changed parts (None: deleted) to a loader's stored parts."""
    for part, data in changed.items():
        if data is None:
            parts.pop(part, None)
        else:
            parts[part] = data


def _visit_key(v: LoadVisit) -> tuple[int, int, str, int]:
    """Visits that ended in order of departure, then those still open in order of their first stop."""
    return (1, v.first_stop_ms, v.asset_guid, v.load_start_ms) if v.open else (0, v.departure_ms, v.asset_guid,
                                                                                v.load_start_ms)  # fmt: skip


def serve(visits: list[LoadVisit], previous_departure_ms: int | None = None,
          after_open: bool = False) -> list[ServedVisit]:
    """The visits (in _visit_key order) with their service start and queue; ``previous_departure_ms``
    is the departure of the visit served before the first one, when known, and ``after_open`` whether the
    visit before the first one is still open. Of the visits still open at the end of the input, the
    first to arrive is in service (until its last point); the others were still waiting: no service
    start, their wait so far as queue."""
    served: list[ServedVisit] = []
    previous = previous_departure_ms
    for v in visits:
        if v.open and (served[-1].visit.open if served else after_open):  # waiting behind the truck in service
            served.append(ServedVisit(v, None, round((v.departure_ms - v.first_stop_ms) / 1000.0, 3)))
            continue
        if previous is not None and v.first_stop_ms < previous:
            start, queue = previous, (previous - v.first_stop_ms) / 1000.0  # it stood waiting for that truck
        else:
            start, queue = (v.arrival_ms if previous is None else max(v.arrival_ms, previous)), 0.0
        served.append(ServedVisit(v, min(start, v.departure_ms), round(queue, 3)))
        previous = v.departure_ms
    return served


def _overlap_s(start: int, end: int, hour: int) -> float:
    return max(0, min(end, hour + HOUR_MS) - max(start, hour)) / 1000.0


def _hours(start: int, end: int) -> range:
    return range(start - start % HOUR_MS, end + 1, HOUR_MS)


def hour_figures(loader: str, site: str, served: list[ServedVisit], hour: int,
                 previous_departure_ms: int | None = None) -> LoaderHour:
    """One hour's figures of a loader from its served visits (in order of departure)."""
    loads = busy = hang = queue = 0.0
    trucks = set()
    previous = previous_departure_ms
    for sv in served:
        v = sv.visit
        if sv.service_start_ms is None:
            continue
        if hour <= sv.service_start_ms < hour + HOUR_MS:
            loads += 1
            queue += sv.queue_seconds
            trucks.add(v.asset_guid)
        busy += _overlap_s(sv.service_start_ms, v.departure_ms, hour)
        if previous is not None and sv.service_start_ms > previous:
            hang += _overlap_s(previous, sv.service_start_ms, hour)
        previous = v.departure_ms
    return LoaderHour(loader, site, hour, int(loads), round(busy, 3), round(hang, 3), round(queue, 3), len(trucks))


def _spans(served: Iterable[ServedVisit], previous_departure_ms: int | None) -> dict[tuple[str, int], tuple[int, int]]:
    """Each served visit's reach in time: from the previous departure (the gap before it, hang) or its
    service start, whichever is earlier, to its departure."""
    spans = {}
    previous = previous_departure_ms
    for sv in served:
        start = sv.service_start_ms
        if start is not None:
            spans[(sv.visit.asset_guid, sv.visit.load_start_ms)] = (
                start if previous is None else min(start, previous), sv.visit.departure_ms)
        previous = sv.visit.departure_ms
    return spans


def _touched_hours(before: list[ServedVisit], after: list[ServedVisit], previous_departure_ms: int | None) -> set[int]:
    """The hours whose figures may differ between two orders of service: those that a visit whose
    service, queue or reach changed covered before or covers now (``before`` and ``after`` may be the
    two orders' tails from where they differ, ``previous_departure_ms`` the departure before them)."""
    old, new = _spans(before, previous_departure_ms), _spans(after, previous_departure_ms)
    touched = {key for key in old.keys() | new.keys() if old.get(key) != new.get(key)}
    touched.update(_served_key(sv) for sv in set(after) - set(before))
    return {hour for spans in (old, new) for key in touched if key in spans for hour in _hours(*spans[key])}


def _served_key(sv: ServedVisit) -> tuple[str, int]:
    return sv.visit.asset_guid, sv.visit.load_start_ms


def _is_open(v: LoadVisit) -> bool:
    return v.open


def _departure(sv: ServedVisit) -> int:
    return sv.visit.departure_ms


@dataclass(slots=True)
class LoaderState:
    """One loader's state: its recent visits (by departure), the closed cycles they began, the trucks
    at or near it now, and what was last emitted of its status."""

    site: str = ""
    visits: list[LoadVisit] = field(default_factory=list)
    previous_departure_ms: int | None = None
    """Departure of the last visit no longer kept (the one before visits[0])."""
    cycles: dict[VisitKey, list] = field(default_factory=dict)
    """The closed cycles the kept visits began, as CycleRecord field values (as they are stored)."""
    presence: dict[str, tuple[str, int]] = field(default_factory=dict)
    """Trucks at or waiting for the loader: asset -> (AT_LOADER | WAITING, since_ms)."""
    horizon_ms: int | None = None
    """Visits that left before this were forgotten (the departure of the last one let go)."""
    idle_since_ms: int | None = None
    """The latest departure of a visit: since when the loader is idle when no truck is at it."""
    event_ms: int | None = None
    """The newest instant the status reflects (a departure, or a truck's arrival or first stop). Both
    are maxima over what arrived, so the order events came in does not change them."""
    status: LoaderStatus | None = None
    writes: int = field(default=0, compare=False)
    """How many times the state was encoded: stored with it, so that a state's encoding differs from
    every earlier one of the loader (an operator's decoded copy is recognised by its encoding alone)."""
    served: list[ServedVisit] | None = field(default=None, compare=False, repr=False)
    """``serve(visits, previous_departure_ms)``, kept while the state stays decoded."""
    by_key: dict[VisitKey, LoadVisit] = field(default_factory=dict, compare=False, repr=False)
    """The kept visits by key."""
    part_keys: dict[int, set[VisitKey]] = field(default_factory=dict, compare=False, repr=False)
    """The keys of the kept visits and cycles by stored part."""
    dirty: set[int] = field(default_factory=set, compare=False, repr=False)
    """The stored parts changed since the state was last encoded."""

    def set_visit(self, visit: LoadVisit) -> None:
        """Note a visit added to ``visits`` or replacing its earlier report there."""
        key = (visit.asset_guid, visit.load_start_ms)
        self.by_key[key] = visit
        self._touch(key)

    def set_cycle(self, key: VisitKey, values: list) -> None:
        """Keep (or replace) the stored values of the cycle ``key``."""
        self.cycles[key] = values
        self._touch(key)

    def _touch(self, key: VisitKey) -> None:
        part = _part_of(key)
        self.part_keys.setdefault(part, set()).add(key)
        self.dirty.add(part)

    def let_go(self, visits: list[VisitKey], cycles: list[VisitKey]) -> None:
        """Forget visits (already taken out of ``visits``) and cycles."""
        for key in visits:
            self.by_key.pop(key, None)
        for key in cycles:
            self.cycles.pop(key, None)
        for key in visits + cycles:
            part = _part_of(key)
            self.dirty.add(part)
            if key not in self.by_key and key not in self.cycles:
                self.part_keys.get(part, set()).discard(key)

    def served_visits(self) -> list[ServedVisit]:
        """The kept visits in their order of service (computed once per decoded state)."""
        if self.served is None:
            self.served = serve(self.visits, self.previous_departure_ms)
        return self.served

    def encode(self) -> tuple[bytes, dict[int, bytes | None]]:
        """The state's versioned compact JSON and its changed parts (None: now empty); decode(state,
        parts) == self once the parts are stored."""
        self.writes += 1
        state = orjson.dumps([
            LOADER_STATE_VERSION, self.writes, self.site, self.previous_departure_ms,
            [[asset, where, since] for asset, (where, since) in self.presence.items()],
            self.idle_since_ms, self.event_ms, None if self.status is None else list(self.status), self.horizon_ms,
        ])  # fmt: skip
        changed: dict[int, bytes | None] = {}
        for part in sorted(self.dirty):
            keys = sorted(self.part_keys.get(part, ()), key=lambda k: (k[0], k[1] or 0))
            if not keys:
                self.part_keys.pop(part, None)
                changed[part] = None
                continue
            changed[part] = orjson.dumps([[list(self.by_key[k]) for k in keys if k in self.by_key],
                                          [self.cycles[k] for k in keys if k in self.cycles]])  # fmt: skip
        self.dirty.clear()
        return state, changed

    @classmethod
    def decode(cls, state: bytes, parts: Mapping[int, bytes]) -> LoaderState:
        """Decode encode() output and the stored parts (a version 1 state holds everything: ``parts``
        is not read, and every part is written at its next encoding); raises ValueError on an
        unknown version."""
        values = orjson.loads(state)
        version = values[0] if values else None
        if version == 1:
            _, site, visits, previous, cycles, presence, idle_since, event_ms, status, horizon = values
            writes, stored = 0, [(visits, cycles)]
        elif version == LOADER_STATE_VERSION:
            _, writes, site, previous, presence, idle_since, event_ms, status, horizon = values
            stored = [orjson.loads(data) for data in parts.values()]
        else:
            raise ValueError(f"unsupported loader state version {version!r}")
        ls = cls(site, [], previous, {}, {asset: (where, since) for asset, where, since in presence}, horizon,
                 idle_since, event_ms, None if status is None else LoaderStatus(*status), writes)  # fmt: skip
        for visits, cycles in stored:
            for values in visits:
                ls.set_visit(LoadVisit(*values))
            for values in cycles:
                ls.set_cycle((values[0], values[_LOAD_START]), values)
        ls.visits = sorted(ls.by_key.values(), key=_visit_key)
        if version == LOADER_STATE_VERSION:
            ls.dirty.clear()
        return ls


@dataclass(slots=True)
class LoaderOutput:
    """What a step emits: visits whose service changed, closed cycles (with their queue), hour rows and
    the loader's status (each an upsert: the latest wins); ``counts`` are metric increments."""

    served: list[ServedVisit] = field(default_factory=list)
    cycles: list[CycleRecord] = field(default_factory=list)
    hours: list[LoaderHour] = field(default_factory=list)
    status: LoaderStatus | None = None
    counts: Counter = field(default_factory=Counter)


@dataclass(slots=True)
class LoaderStep:
    """The result of one call: what to emit, the loader's new state and its changed parts."""

    output: LoaderOutput
    state: bytes
    parts: dict[int, bytes | None] = field(default_factory=dict)
    """The stored parts that changed: their new bytes, None for one now empty (to delete)."""


class LoaderOperator:
    """Runs the per-loader policy for any loader given its state (pure; see the module docstring)."""

    def __init__(self, max_visits: int = MAX_VISITS) -> None:
        self.max_visits = max_visits
        self._decoded: dict[str, tuple[bytes, LoaderState]] = {}
        """Each loader's last state as bytes and decoded (a state is read back without decoding it)."""

    def holds(self, loader: str, state: bytes | None) -> bool:
        """Whether the loader's next step needs no stored parts: a new loader, or one whose decoded state
        this operator holds (it wrote ``state`` last)."""
        if state is None:
            return True
        kept = self._decoded.get(loader)
        return kept is not None and kept[0] == state

    # -- public steps ----------------------------------------------------------------------------
    def on_visit(self, loader: str, state: bytes | None, visit: LoadVisit, parts: PartReader | None = None) -> LoaderStep:
        """A load visit ended (or an open one was reported): re-serve the loader's visits and emit
        what changed."""
        ls = self._load(loader, state, parts, visit.site_guid)
        out = LoaderOutput()
        kept = ls.visits
        if ls.horizon_ms is not None and visit.departure_ms < ls.horizon_ms:
            out.counts["loaderVisitsTooLate"] += 1
            return self._step(loader, ls, out)
        old_served = ls.served_visits()
        replaced = None  # the index of the visit's earlier report (open then, or sent again)
        if (visit.asset_guid, visit.load_start_ms) in ls.by_key:
            replaced = next((i for i in range(len(kept) - 1, -1, -1)
                             if kept[i].asset_guid == visit.asset_guid and kept[i].load_start_ms == visit.load_start_ms),
                            None)  # fmt: skip
        visits = kept if replaced is None else kept[:replaced] + kept[replaced + 1:]
        at = bisect_right(visits, _visit_key(visit), key=_visit_key)
        visits.insert(at, visit)
        ls.visits = visits
        ls.set_visit(visit)
        # the order of service before the first visit that moved is unchanged: serve from there on
        first = at if replaced is None else min(at, replaced)
        head = old_served[:first]
        before_tail = old_served[first:]
        # (after a visit still waiting, only open visits come, and they wait too: no departure is used)
        before_first = head[-1].visit.departure_ms if head else ls.previous_departure_ms
        served_tail = serve(visits[first:], before_first, after_open=bool(head) and head[-1].visit.open)
        served = ls.served = head + served_tail
        before = {_served_key(sv): sv for sv in before_tail}
        changed = [sv for sv in served_tail if before.get(_served_key(sv)) != sv]
        out.served.extend(changed)
        out.counts["loaderVisits"] += 1
        hours = _touched_hours(before_tail, served_tail, before_first)
        floor = None if ls.previous_departure_ms is None else ls.previous_departure_ms - ls.previous_departure_ms % HOUR_MS
        ended = bisect_left(visits, True, key=_is_open)  # the visits that ended come first, by departure
        for hour in sorted(hours):
            if floor is None or hour > floor:  # an hour that began before the visits kept is final
                # a visit that left before the hour adds nothing to it: start at the first that did not
                start = bisect_left(served, hour, hi=ended, key=_departure)
                previous = served[start - 1].visit.departure_ms if start else ls.previous_departure_ms
                out.hours.append(hour_figures(loader, ls.site, served[start:], hour, previous))
        for sv in changed:
            key = _served_key(sv)
            values = ls.cycles.get(key)
            if values is not None and values[_QUEUE] != sv.queue_seconds:
                values[_QUEUE] = sv.queue_seconds
                ls.set_cycle(key, values)
                out.cycles.append(CycleRecord(*values))
        if not visit.open and (ls.idle_since_ms is None or visit.departure_ms > ls.idle_since_ms):
            ls.idle_since_ms = visit.departure_ms
        ls.event_ms = max(ls.event_ms or visit.departure_ms, visit.departure_ms)
        self._forget(ls)
        self._status(loader, ls, out)
        return self._step(loader, ls, out)

    def on_cycle(self, loader: str, state: bytes | None, cycle: CycleRecord, parts: PartReader | None = None) -> LoaderStep:
        """A closed cycle that began with a load at this loader: emitted with its visit's queue (None
        while no visit is known for it), kept so that a later change of the queue updates it."""
        ls = self._load(loader, state, parts, cycle.site_guid)
        out = LoaderOutput()
        key = (cycle.asset_guid, cycle.load_start_ms)
        served = ls.served_visits()
        queue = next((served[i].queue_seconds for i in range(len(served) - 1, -1, -1)
                      if _served_key(served[i]) == key), None)  # fmt: skip (a cycle closes soon after its visit)
        cycle = replace(cycle, queue_seconds=queue)
        if ls.horizon_ms is None or (cycle.load_start_ms or 0) >= ls.horizon_ms:
            ls.set_cycle(key, [getattr(cycle, name) for name in _CYCLE_FIELD_NAMES])
        out.cycles.append(cycle)
        return self._step(loader, ls, out)

    def on_presence(self, loader: str, state: bytes | None, presence: LoaderPresence,
                    parts: PartReader | None = None) -> LoaderStep:  # fmt: skip
        """A truck's place relative to this loader changed: update the loader's live status."""
        ls = self._load(loader, state, parts, presence.site_guid)
        out = LoaderOutput()
        if presence.state == LEFT:
            ls.presence.pop(presence.asset_guid, None)
        else:
            ls.presence[presence.asset_guid] = (presence.state, presence.since_ms)
            ls.event_ms = max(ls.event_ms or presence.since_ms, presence.since_ms)
        self._status(loader, ls, out)
        return self._step(loader, ls, out)

    # -- internals -------------------------------------------------------------------------------
    def _load(self, loader: str, state: bytes | None, parts: PartReader | None, site: str) -> LoaderState:
        held = self.holds(loader, state)
        kept = self._decoded.pop(loader, None)
        if state is None:
            ls = LoaderState(site)
        elif held:
            ls = kept[1]
        elif parts is None:
            raise ValueError(f"loader {loader}: its stored parts are needed (its state is not held decoded)")
        else:
            ls = LoaderState.decode(state, parts())
        ls.site = ls.site or site
        return ls

    def _step(self, loader: str, ls: LoaderState, out: LoaderOutput) -> LoaderStep:
        """The step's result; the state is kept decoded for the loader's next call."""
        state, parts = ls.encode()
        if len(self._decoded) >= DECODED_KEEP:
            del self._decoded[next(iter(self._decoded))]
        self._decoded[loader] = (state, ls)
        return LoaderStep(out, state, parts)

    def _forget(self, ls: LoaderState) -> None:
        """Let the oldest visits (and the cycles they began) go beyond MAX_VISITS."""
        n = len(ls.visits) - self.max_visits
        if n <= 0:
            return
        let_go = [v for v in ls.visits[:n] if not v.open]
        if not let_go:
            return
        last = let_go[-1]
        ls.previous_departure_ms = ls.horizon_ms = last.departure_ms
        del ls.visits[: len(let_go)]
        if ls.served is not None:  # the visits after them were served after last's departure: unchanged
            del ls.served[: len(let_go)]
        ls.let_go([(v.asset_guid, v.load_start_ms) for v in let_go],
                  [k for k, c in ls.cycles.items() if (c[_LOAD_START] or 0) <= last.load_start_ms])

    @staticmethod
    def _status(loader: str, ls: LoaderState, out: LoaderOutput) -> None:
        """The loader's live status, emitted when it changed: the first truck to have arrived of those
        in its bay is in service, every other truck at or near it waits."""
        present = sorted(ls.presence.items(), key=lambda item: (item[1][1], item[0]))
        at_loader = [(asset, since) for asset, (where, since) in present if where == AT_LOADER]
        in_service = at_loader[0] if at_loader else None
        waiting = [(asset, since) for asset, (_, since) in present if in_service is None or asset != in_service[0]]
        status = LoaderStatus(
            loader, ls.site, in_service[0] if in_service else None, in_service[1] if in_service else None,
            len(waiting), ",".join(f"{asset}@{since}" for asset, since in waiting),
            waiting[0][1] if waiting else None, None if present else ls.idle_since_ms,
            ls.event_ms if ls.event_ms is not None else (ls.idle_since_ms or 0),
        )  # fmt: skip
        if status != ls.status:
            ls.status = status
            out.status = status
