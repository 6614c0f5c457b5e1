"""Plain data types shared by the engine, the simulator, the CLI and the Flink adapters.

Times are integer epoch milliseconds (UTC) everywhere inside the engine; durations are float
seconds. Nothing here reads a clock or talks to a database.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from typing import Any, NamedTuple

IDLING = 2
WORKING = 3
WORK_STATES = (IDLING, WORKING)

# Segment names (the cycle phases) and cycle statuses, as in the legacy service.
SEG_NONE = "NONE"  # no cycle open yet (before the truck's first load)
LOAD_TIME = "LOAD_TIME"
LOAD_TRAVEL = "LOAD_TRAVEL"
DUMP_TIME = "DUMP_TIME"
EMPTY_TRAVEL = "EMPTY_TRAVEL"
SEGMENTS = (SEG_NONE, LOAD_TIME, LOAD_TRAVEL, DUMP_TIME, EMPTY_TRAVEL)

INPROGRESS = "INPROGRESS"
COMPLETE = "COMPLETE"
INVALID = "INVALID"
OUTLIER = "OUTLIER"
# Asset types in dx.asset / assets.csv.
HAUL_TRUCK = "HAUL_TRUCK"
LOADER = "LOADER"

# Builds a NamedTuple from the tuple of all its fields, in order: what calling the class does, without
# its argument handling (about 140 ns less per call: used where a record is built per point).
new_record = tuple.__new__


class TelemetryPoint(NamedTuple):
    """One validated telemetry message."""

    asset_guid: str
    site_guid: str
    ts_ms: int
    latitude: float
    longitude: float
    work_state_id: int


@dataclass(slots=True)
class DeadLetter:
    """A record that was not applied: its source label, where it came from (file:line, shard and
    sequence number) when known, why, and the raw text."""

    source: str
    reason: str
    detail: str
    raw: str
    asset_guid: str | None = None
    ts_ms: int | None = None
    position: str | None = None


class Rejection(NamedTuple):
    """A point the engine did not apply, with the reason (late, conflicting duplicate, ...)."""

    point: TelemetryPoint
    reason: str
    detail: str = ""


def ms_to_iso(ts_ms: int | None) -> str:
    """Epoch milliseconds to ISO 8601 UTC with millisecond precision and a trailing Z."""
    if ts_ms is None:
        return ""
    dt = datetime.fromtimestamp(ts_ms / 1000.0, tz=UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts_ms % 1000:03d}Z"


@dataclass(slots=True)
class CycleRecord:
    """One cycle, in progress (temporary table) or closed (final table).

    A cycle runs from one load_start to the next load_start of the same truck. Segment times
    are epoch ms; durations are seconds. ``cycle_end_ms`` is the next load_start for a closed
    cycle (or the last point time when the cycle was closed by a data gap or site change).
    """

    asset_guid: str
    site_guid: str
    cycle_status: str
    current_segment: str
    loader_asset_guid: str | None = None
    dump_region_guid: str | None = None
    load_start_ms: int | None = None
    load_end_ms: int | None = None
    dump_start_ms: int | None = None
    dump_end_ms: int | None = None
    cycle_end_ms: int | None = None
    load_seconds: float | None = None
    load_travel_seconds: float | None = None
    dump_seconds: float | None = None
    empty_travel_seconds: float | None = None
    total_cycle_seconds: float | None = None
    invalid_reason: str | None = None
    outlier_rule: str | None = None
    outlier_seconds: float | None = None
    travel_idle_seconds: float = 0.0
    point_count: int = 0
    load_travel_distance_m: float = 0.0
    empty_travel_distance_m: float = 0.0
    last_event_ms: int | None = None
    queue_seconds: float | None = None
    """How long the truck waited for its loader before this cycle's load (state_machine.loader); set on
    closed cycles once the loader's order of service is known, None before that."""

    def as_dict(self) -> dict[str, Any]:
        """The record as a plain dict (field name -> value)."""
        return asdict(self)


CYCLE_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(CycleRecord))

# CSV columns written by `asset-cycle replay` and `asset-cycle simulate` (truth_cycles.csv).
CYCLE_CSV_COLUMNS: tuple[str, ...] = (
    "asset_guid",
    "site_guid",
    "cycle_status",
    "loader_asset_guid",
    "dump_region_guid",
    "load_start_utc",
    "load_end_utc",
    "dump_start_utc",
    "dump_end_utc",
    "cycle_end_utc",
    "load_seconds",
    "load_travel_seconds",
    "dump_seconds",
    "empty_travel_seconds",
    "total_cycle_seconds",
    "invalid_reason",
    "outlier_rule",
    "outlier_seconds",
    "travel_idle_seconds",
    "point_count",
    "load_travel_distance_m",
    "empty_travel_distance_m",
    "current_segment",
    "queue_seconds",
)


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def cycle_to_csv_row(record: CycleRecord) -> dict[str, str]:
    """A cycle as a CSV row keyed by CYCLE_CSV_COLUMNS (times as ISO 8601 UTC)."""
    row: dict[str, str] = {}
    for column in CYCLE_CSV_COLUMNS:
        if column.endswith("_utc"):
            row[column] = ms_to_iso(getattr(record, column[: -len("_utc")] + "_ms"))
        else:
            row[column] = _fmt(getattr(record, column))
    return row


class TruckStatus(NamedTuple):
    """Latest processed point of a truck: process info and live fleet state."""

    asset_guid: str
    site_guid: str
    last_event_ms: int
    latitude: float
    longitude: float
    work_state_id: int
    current_segment: str
    area: str  # "L" at a loader, "D" in a dump region, "T" travelling
    area_guid: str | None


# Alert types (issue: operator experience). Each is emitted once per occurrence.
ALERT_DUMP_OUTSIDE_REGION = "DUMP_OUTSIDE_REGION"
ALERT_LONG_IDLE = "LONG_IDLE"
ALERT_RESTRICTED_REGION = "RESTRICTED_REGION_ENTRY"
ALERT_NO_REFERENCE_DATA = "NO_REFERENCE_DATA"
ALERT_CLOCK_JUMP = "CLOCK_JUMP"


class Alert(NamedTuple):
    """Something an operator should look at, at one instant and place."""

    alert_type: str
    asset_guid: str
    site_guid: str
    event_ms: int
    latitude: float | None
    longitude: float | None
    detail: str
    key: str = ""  # distinguishes alerts of one type at the same instant (e.g. the region)


class LoadVisit(NamedTuple):
    """One truck's visit to a loader, from its truck's committed points (docs/cycle-rules.md, Loaders).

    Times are the engine's estimates of the instants (between the two pings around each, or across a
    reporting gap from the truck's own speed): ``first_stop_ms`` is the start of the first standstill of
    the approach (at a staging point within queue_radius_m, or in the bay), ``arrival_ms`` the entry
    into the bay (within loader_distance_m), ``departure_ms`` the moment the truck moved off loaded.
    ``open``: the input ended (or the truck went silent) while the truck was still at the loader;
    ``departure_ms`` is then its last point."""

    asset_guid: str
    site_guid: str
    loader_guid: str
    load_start_ms: int
    """The load_start of the cycle this visit starts (its key in the cycle tables)."""
    arrival_ms: int
    first_stop_ms: int
    departure_ms: int
    open: bool = False


class LoaderPresence(NamedTuple):
    """Where a truck is relative to a loader, live (the truck's latest state): ``state`` is AT_LOADER
    (standing in its bay: being loaded or waiting there), WAITING (standing on its approach, within
    queue_radius_m) or LEFT; ``since_ms`` when that began, ``event_ms`` the truck's newest point."""

    asset_guid: str
    site_guid: str
    loader_guid: str
    state: str
    since_ms: int
    event_ms: int


AT_LOADER = "AT_LOADER"
WAITING = "WAITING"
LEFT = "LEFT"


class LoaderHour(NamedTuple):
    """One loader's figures for one hour (UTC): loads = services started in the hour; busy and hang =
    the parts of services and of the gaps between consecutive services that fall in the hour; queue =
    the waits of the visits whose service started in the hour; trucks served = distinct trucks."""

    loader_guid: str
    site_guid: str
    hour_start_ms: int
    loads: int
    busy_seconds: float
    hang_seconds: float
    queue_seconds: float
    trucks_served: int


class TruckHour(NamedTuple):
    """One truck's figures for one hour (UTC), from its committed points (state_machine.truck_hours)."""

    asset_guid: str
    site_guid: str
    hour_start_ms: int
    working_seconds: float
    idle_seconds: float
    loaded_distance_m: float
    empty_distance_m: float
    cycles_closed: int


class LoaderStatus(NamedTuple):
    """A loader's live state: the truck in service (the first to arrive of those standing in its bay),
    the trucks waiting (``waiting``: "truck@since_ms" joined by commas, longest wait first), and since
    when it has been idle (no truck at it: its last visit's departure; None while one is); ``event_ms``
    is the newest instant it reflects."""

    loader_guid: str
    site_guid: str
    in_service_asset: str | None
    in_service_since_ms: int | None
    waiting_count: int
    waiting: str
    oldest_wait_since_ms: int | None
    idle_since_ms: int | None
    event_ms: int


class ServedVisit(NamedTuple):
    """A load visit with its place in its loader's order of service (state_machine.loader)."""

    visit: LoadVisit
    service_start_ms: int | None
    """When the loader began to serve it: the previous truck's departure if it was waiting for it,
    else its arrival (or the previous departure, when that came later); None for a truck still waiting
    when the input ended (its queue is then the wait so far)."""
    queue_seconds: float
    """From its first stop while the loader served another truck to its service start (0: no wait)."""


@dataclass(slots=True)
class StepOutput:
    """What one engine step produced.

    in_progress: the truck's current cycle row for the temporary table, only when it changed.
    closed: cycles that closed and can no longer change (for the final table).
    status: the newest processed point (process info / fleet state), None when nothing new.
    rejected: points not applied, each with a reason (late, conflicting duplicate, clock jump).
    alerts: operator alerts raised by committed points (final, emitted once per occurrence).
    visits: load visits that ended at committed points (final).
    hours: the truck's hourly figures that changed (upserts).
    """

    in_progress: CycleRecord | None = None
    closed: list[CycleRecord] = field(default_factory=list)
    status: TruckStatus | None = None
    rejected: list[Rejection] = field(default_factory=list)
    alerts: list[Alert] = field(default_factory=list)
    visits: list[LoadVisit] = field(default_factory=list)
    hours: list[TruckHour] = field(default_factory=list)
    duplicates: int = 0
    reordered: int = 0
