"""What a report is about: the request (window, site, time zone), the map data of a site, the result,
and the cycle statuses and segments the other modules share."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, tzinfo
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from state_machine.model import COMPLETE, INVALID, OUTLIER

STATUSES = (COMPLETE, OUTLIER, INVALID)
SEGMENTS = ("load", "load_travel", "dump", "empty_travel")
SEGMENT_COLUMNS = {
    "load": "load_seconds",
    "load_travel": "load_travel_seconds",
    "dump": "dump_seconds",
    "empty_travel": "empty_travel_seconds",
}
DAY_SHIFT_START_H = 6
SHIFT_HOURS = 12


class ReportError(ValueError):
    """Invalid report request (bad window, unknown time zone, unreadable bundle)."""


@dataclass(frozen=True, slots=True)
class ReportRequest:
    """What to report: window [start, end) (aware datetimes), optional site, output directory."""

    start: datetime
    end: datetime
    out_dir: Path
    site: str | None = None
    tz: str = "UTC"
    bundle: Path | None = None
    redis_prefix: str = ""

    def __post_init__(self) -> None:
        if self.start.tzinfo is None or self.end.tzinfo is None:
            raise ReportError("--from/--to must carry a time zone (or be converted first)")
        if not self.start < self.end:
            raise ReportError(f"empty window: --from {self.start.isoformat()} is not before --to "
                              f"{self.end.isoformat()}")
        zone_info(self.tz)


@dataclass(slots=True)
class MapData:
    """Geography of one site in lon/lat: regions, loaders, trucks (latest positions or tracks)."""

    site_guid: str
    regions: list[tuple[str, str, list[tuple[float, float]]]] = field(default_factory=list)
    """(name, type, [(lon, lat), ...])"""
    loaders: list[tuple[str, float, float]] = field(default_factory=list)
    """(label, lat, lon)"""
    trucks: list[tuple[str, float, float, str | None, datetime | None]] = field(default_factory=list)
    """latest positions: (asset_guid, lat, lon, current_segment, last_event_utc)"""
    tracks: dict[str, list[list[tuple[float, float]]]] = field(default_factory=dict)
    """truck -> runs of (lat, lon) (split at reporting gaps)"""


@dataclass(slots=True)
class ReportResult:
    """What ``build_report`` wrote."""

    index_html: Path
    kpis_csv: Path
    cycles: int
    images: list[Path] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def zone_info(tz: str) -> tzinfo:
    """A tzinfo for an IANA name ('UTC', 'Australia/Perth'); ReportError when unknown."""
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ReportError(f"unknown time zone {tz!r}") from exc


def parse_time(text: str, tz: str = "UTC") -> datetime:
    """ISO 8601 date or date-time; without an offset it is taken in ``tz``. ReportError when invalid."""
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ReportError(f"not an ISO 8601 date/time: {text!r}") from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=zone_info(tz))
    return value


def format_time(value: datetime, tz: str) -> str:
    """``2024-01-15 06:00 Australia/Perth``."""
    return f"{value.astimezone(zone_info(tz)):%Y-%m-%d %H:%M} {tz}"
