"""Cycle-engine thresholds: one typed, validated config object with per-site overrides.

JSON file shape (every key optional)::

    {
      "defaults": {"load_idle_s": 20, "dump_idle_s": 20, ...},
      "sites": {"SITE-QUARRY": {"dump_idle_s": 10}}
    }

A flat object (thresholds at the top level, no "defaults"/"sites") is accepted as defaults.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any


class ConfigError(ValueError):
    """A configuration value is missing, unknown or out of range."""


@dataclass(frozen=True, slots=True)
class CycleThresholds:
    """Thresholds of the cycle rules for one site (all durations in seconds, distances in m)."""

    loader_distance_m: float = 50.0
    """A point is at a loader when its geodesic distance to the loader is <= this."""
    load_idle_s: float = 20.0
    """A truck standing at a loader this long starts LOAD_TIME (threshold met exactly counts)."""
    dump_idle_s: float = 20.0
    """A truck standing inside a dump polygon this long starts DUMP_TIME."""
    travel_idle_outlier_s: float = 600.0
    """One standstill longer than this during LOAD_TRAVEL/EMPTY_TRAVEL marks the cycle OUTLIER."""
    area_idle_outlier_s: float = 0.0
    """Opt-in (0 = off, the spec's statuses): a LOAD_TIME or DUMP_TIME longer than this marks the
    cycle OUTLIER (LOAD_AREA_IDLE / DUMP_AREA_IDLE). The time at the loader or dump is always in
    load_seconds / dump_seconds."""
    queue_radius_m: float = 150.0
    """A truck that stops within this distance of a loader (outside its bay, at a staging point) and
    goes on to load there without leaving this distance began its visit, and its wait, at that stop."""
    still_radius_m: float = 15.0
    """Two consecutive points closer than this are at the same spot (GPS noise tolerance)."""
    gap_factor: float = 2.0
    """A pair of consecutive points is a reporting gap (data missing, inference allowed) when it is
    more than this many times the truck's own reporting interval while moving; shorter pairs are
    dense data, read as reported (IDLING = standing, WORKING = moving)."""
    gap_speed_mps: float = 12.0
    """Cap of the speed a gap is driven at (the truck's own recent straight-line speed is used; this
    cap before it has moved): a fast haul speed, so that no gap is explained by slower driving than
    the truck itself shows."""
    blip_max_s: float = 45.0
    """Movement at (or away from) a load/dump spot shorter than this, followed by standing at the
    same spot again, does not end the spell (queue creep, repositioning, GPS jitter)."""
    max_gap_s: float = 1800.0
    """A gap between two consecutive points longer than this closes the open cycle INVALID
    (DATA_GAP): nothing reliable is known about what happened inside it."""
    max_disorder_s: float = 60.0
    """Points are held at least this long (event time, per truck) so that out-of-order arrivals can
    be put back in order before they are applied; the hold in force adapts, up to max_hold_s, to the
    lateness the site's stream shows (state_machine.lateness)."""
    max_hold_s: float = 900.0
    """Points are held at most this long for late arrivals (the bound of the adaptive hold; also the
    hold while a site's lateness is not known yet, the first 15 min of its stream). A point later
    than the hold in force is dead-lettered LATE. Set it to max_disorder_s for a fixed hold."""
    idle_close_s: float = 14400.0
    """When event time (the watermark) passes a silent truck's last point by this much, its open
    cycle is closed INVALID (IDLE_TIMEOUT) by a timer. Longer than any store-and-forward backlog
    that should still complete a cycle."""
    lead_hold_s: float = 300.0
    """A point more than max_disorder_s ahead of the truck's newest point (a device clock that jumped,
    live points sent before an outage's backlog, or simply the next row after a silence) is held,
    not applied: until the truck's timeline catches up with it, until the stream's event time passes
    it by this much and the truck sent a newer point (a truck's newest point waits for that up to
    idle_close_s, in the lead or, once the timeline reached it, in the buffer), or until the truck
    has sent nothing else for this long of its own time; a lone held point that the truck's timeline
    passes by this much without reaching is rejected as a clock jump (CLOCK_JUMP)."""

    state_retention_s: float = 604_800.0
    """A truck silent for this long (event time) after its open cycle was closed has its state
    cleared (7 days); it starts afresh if it comes back."""

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ConfigError(f"{f.name} must be a number, got {value!r}")
            if not value >= 0 or value != value or value == float("inf"):
                raise ConfigError(f"{f.name} must be a finite number >= 0, got {value!r}")
        if self.loader_distance_m <= 0:
            raise ConfigError("loader_distance_m must be > 0")
        if self.gap_speed_mps <= 0:
            raise ConfigError("gap_speed_mps must be > 0")
        if self.gap_factor < 1:
            raise ConfigError("gap_factor must be >= 1")
        if self.queue_radius_m < self.loader_distance_m:
            raise ConfigError("queue_radius_m must be >= loader_distance_m (the bay is part of the approach)")


THRESHOLD_NAMES = frozenset(f.name for f in fields(CycleThresholds))


def _thresholds_from(mapping: Mapping[str, Any], base: CycleThresholds, where: str) -> CycleThresholds:
    unknown = set(mapping) - THRESHOLD_NAMES
    if unknown:
        raise ConfigError(f"{where}: unknown threshold(s) {sorted(unknown)}; known: {sorted(THRESHOLD_NAMES)}")
    return replace(base, **{k: float(v) if isinstance(v, int) and not isinstance(v, bool) else v for k, v in mapping.items()})


@dataclass(frozen=True, slots=True)
class EngineConfig:
    """Default thresholds plus per-site overrides."""

    defaults: CycleThresholds = field(default_factory=CycleThresholds)
    sites: Mapping[str, CycleThresholds] = field(default_factory=dict)

    def for_site(self, site_guid: str) -> CycleThresholds:
        """Thresholds in force for a site."""
        return self.sites.get(site_guid, self.defaults)

    @property
    def max_disorder_ms(self) -> int:
        """Largest re-order window over all sites, in ms (the watermark bound must cover it)."""
        return int(max([self.defaults.max_disorder_s, *(t.max_disorder_s for t in self.sites.values())]) * 1000)

    @property
    def watermark_jump_ms(self) -> int:
        """How far ahead of the stream's newest event time one record may be before it needs
        confirmation to move the watermark (state_machine.watermark): the largest re-order window."""
        return self.max_disorder_ms

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EngineConfig:
        """Build from the JSON shape in the module docstring; raises ConfigError."""
        if not isinstance(data, Mapping):
            raise ConfigError("engine config must be a JSON object")
        if "defaults" not in data and "sites" not in data:
            data = {"defaults": data}
        unknown = set(data) - {"defaults", "sites"}
        if unknown:
            raise ConfigError(f"unknown top-level key(s) {sorted(unknown)}; expected 'defaults' and 'sites'")
        defaults = _thresholds_from(data.get("defaults") or {}, CycleThresholds(), "defaults")
        sites_raw = data.get("sites") or {}
        if not isinstance(sites_raw, Mapping):
            raise ConfigError("'sites' must be an object of site_guid -> thresholds")
        sites = {str(site): _thresholds_from(over, defaults, f"sites.{site}") for site, over in sites_raw.items()}
        return cls(defaults=defaults, sites=sites)

    def to_dict(self) -> dict[str, Any]:
        """The JSON shape accepted by from_dict (sites list only their full threshold sets)."""
        return {"defaults": asdict(self.defaults), "sites": {s: asdict(t) for s, t in self.sites.items()}}
