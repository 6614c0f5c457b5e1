"""What ``asset-cycle serve`` serves and how: the database and tables, Redis, the engine thresholds (for the
loaders' radii), the address, the bearer token, staleness thresholds and shifts."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from state_machine.config import EngineConfig
from stores.connections import RedisSettings
from stores.errors import SettingsError
from stores.postgres import TableNames

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080
DEFAULT_STALE_TRUCK_S = 300.0
DEFAULT_STALE_SITE_S = 300.0
DEFAULT_SHIFT_STARTS = ("06:00", "18:00")
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1", "[::1]")


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` keeps the server on this machine (127.0.0.0/8, ::1, localhost)."""
    if host.strip("[]").lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def parse_shift_starts(text: str) -> tuple[int, ...]:
    """``"06:00,18:00"`` -> minutes after local midnight, sorted (SettingsError on a bad time)."""
    minutes = []
    for part in (p.strip() for p in text.split(",") if p.strip()):
        hours, sep, mins = part.partition(":")
        if not (sep and hours.isdigit() and mins.isdigit() and int(hours) < 24 and int(mins) < 60):
            raise SettingsError(f"shift start {part!r} is not a time of day HH:MM")
        minutes.append(int(hours) * 60 + int(mins))
    if not minutes:
        raise SettingsError("at least one shift start (HH:MM) is needed")
    return tuple(sorted(set(minutes)))


def time_zone(name: str) -> ZoneInfo:
    """The IANA time zone ``name`` (SettingsError when unknown)."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise SettingsError(f"unknown time zone {name!r} (an IANA name such as UTC or Australia/Perth)") from None


@dataclass(frozen=True)
class ServeSettings:
    """Settings of the live view. ``database`` is a libpq DSN/URI or a mapping of libpq parameters (it may
    hold a password: never shown in ``repr``); ``redis`` None = no dump regions on the map."""

    database: str | Mapping[str, Any]
    names: TableNames
    redis: RedisSettings | None = None
    redis_prefix: str = ""
    engine: EngineConfig = field(default_factory=EngineConfig)
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    token: str | None = None
    tile_url: str | None = None
    stale_truck_s: float = DEFAULT_STALE_TRUCK_S
    stale_site_s: float = DEFAULT_STALE_SITE_S
    shift_starts: tuple[int, ...] = field(default_factory=lambda: parse_shift_starts(",".join(DEFAULT_SHIFT_STARTS)))
    tz: str = "UTC"

    def __post_init__(self) -> None:
        if not is_loopback(self.host) and not self.token:
            raise SettingsError(f"--host {self.host} is not loopback: a bearer token is required "
                                "(--token-file FILE or $ASSET_CYCLE_WEB_TOKEN)")  # fmt: skip
        if self.token is not None and len(self.token) < 16:
            raise SettingsError("the bearer token must be at least 16 characters long")
        if self.stale_truck_s <= 0 or self.stale_site_s <= 0:
            raise SettingsError("staleness thresholds must be positive (seconds)")
        if self.tile_url is not None and not self.tile_url.startswith(("https://", "http://")):
            raise SettingsError(f"--tile-url must be an http(s) URL template, got {self.tile_url!r}")
        time_zone(self.tz)

    def __repr__(self) -> str:
        return (f"ServeSettings(schema={self.names.schema!r}, host={self.host!r}, port={self.port}, "
                f"token={'***' if self.token else None}, redis_prefix={self.redis_prefix!r})")

    __str__ = __repr__

    @property
    def url(self) -> str:
        """The page's address."""
        host = f"[{self.host}]" if ":" in self.host and not self.host.startswith("[") else self.host
        return f"http://{host}:{self.port}/"
