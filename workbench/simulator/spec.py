"""What a simulation is asked for: :class:`SimulationSpec`, the degradation preset and the named
scenario families."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

DEFAULT_START_MS = int(datetime(2024, 1, 15, 6, 0, 0, tzinfo=UTC).timestamp() * 1000)



@dataclass(frozen=True)
class SimulationSpec:
    """All simulator options. Counts of trucks/loaders/dumps/non-trucks/unknown assets are per site."""

    trucks: int = 5
    loaders: int | None = None
    """None: one loader per 5 trucks."""
    dumps: int | None = None
    """None: one dump region per ~15 trucks (at least 2)."""
    hours: float | None = 2.0
    """Length of the run; None for an unbounded stream (iter_deliveries only)."""
    seed: int = 0
    sites: int = 1
    start_ms: int = DEFAULT_START_MS
    center_lat: float = -22.7
    center_lon: float = 118.7
    site_spacing_km: float = 60.0
    """Distance between consecutive site centres (eastwards)."""
    restricted_region: bool = True
    ping_interval_s: tuple[float, float] = (10.0, 30.0)
    """Range of the per-truck base ping interval (each interval jitters by +-ping_jitter)."""
    ping_jitter: float = 0.2
    device: str = "interval"
    """"interval": a ping every ping interval whatever the truck does (stops last long enough for two
    idle pings spanning the idle threshold, as the spec's reading assumes); "on_change": a row about
    every second while moving and every 1-3 min while standing (the first one either right at the stop
    or only 1-3 min later), the work state derived from speed."""
    layout: str = "radial"
    """"radial": pit and dump clusters around a hub, faces 250 m to several km apart; "pit": one open
    pit whose ramp (see ``ramp``) climbs from a floor with faces ``face_spacing_m`` apart along a
    bench road that passes within ``bench_offset_m`` of every loader, dumps on the surface."""
    ramp: str = "switchback"
    """Pit layout: "switchback" (legs 150-300 m long, 25-40 m apart, joined by hairpins) or "spiral"."""
    ramp_faces: int = 1
    """Pit layout with a switchback ramp: faces beside hairpins (at most loaders - 1)."""
    face_spacing_m: tuple[float, float] = (150.0, 300.0)
    bench_offset_m: tuple[float, float] = (20.0, 40.0)
    loaded_ramp_mps: tuple[float, float] = (2.5, 5.0)
    empty_ramp_mps: tuple[float, float] = (6.0, 12.0)
    queue_inside_p: float = 0.5
    """Probability that a loader's queue spot is inside its 50 m circle (the truck waits in the bay);
    otherwise trucks wait at a staging point outside it."""
    area_idle_outlier_s: float = 0.0
    """Truth: a load or dump longer than this is an OUTLIER (0 = off, the spec's statuses)."""
    threshold_stops: float = 0.0
    """Share of loads and of dumps made exactly as long as the idle threshold (``load_idle_s`` /
    ``dump_idle_s`` of the default thresholds, 20 s), and, as often, of dump stops shorter than it
    (5-19.9 s). Otherwise every stop lasts long enough for two idle pings of an interval device to span
    the threshold. Such a stop is reported at both ends (an idle row as the truck stops and one as it
    moves off, whatever the device's interval), so the stop as the spec reads it (idle from the first
    to the last report) is its true length, and the truth follows that reading: exactly at the
    threshold it counts (meeting it counts), shorter it does not (the truck stood in the dump region
    without dumping: INVALID NO_DUMP, as for a dump outside any region)."""
    gps_sigma_m: float = 3.0
    gps_outlier_p: float = 0.005
    """Fraction of pings with a 10-20 m position outlier."""
    sparse_idle: bool = False
    """While standing, devices ping only every 60-120 s (none during a short stop)."""
    reassign_p: float = 0.05
    """Probability per cycle that a truck is sent to another loader (dumps: twice that)."""
    # degradations
    duplicates: float = 0.0
    disorder_s: float = 0.0
    drop: float = 0.0
    outages_per_day: float = 0.0
    outage_loss: bool = False
    long_idles: float = 0.0
    bad_dumps: float = 0.0
    non_trucks: int = 0
    """Water trucks/dozers per site; when > 0 the loaders send telemetry too."""
    malformed: float = 0.0
    unknown_assets: int = 0
    late_p: float = 0.0
    """Fraction of the pings sent live that are delivered late (a retrying gateway): each such ping
    arrives ``late_s`` later than it would have (after the later pings of its truck)."""
    late_s: tuple[float, float] = (0.0, 0.0)
    """Range (min, max) of the delay of a late ping, seconds (uniform)."""
    late_tail_p: float = 0.0
    """Fraction of the pings sent live that are delivered ``late_tail_s`` later instead (a rarer, longer
    delay beside ``late_p``'s: a heavy tail that a few trucks show only now and then)."""
    late_tail_s: tuple[float, float] = (0.0, 0.0)
    """Range (min, max) of the delay of a ping of the tail, seconds (uniform)."""
    dead_zones_per_day: float = 0.0
    """Dead zones per device and day (Poisson): every ping of a zone waits in a relay and the zone's
    pings arrive together, in order, ``dead_zone_delay_s`` after it ends, behind the pings the device
    sent live since (a truck passing a spot without coverage)."""
    dead_zone_s: tuple[float, float] = (0.0, 0.0)
    """Range (min, max) of the length of a dead zone, seconds (uniform)."""
    dead_zone_delay_s: tuple[float, float] = (0.0, 0.0)
    """Range (min, max) of how long after its end a dead zone's pings arrive, seconds (uniform)."""
    glitch_trucks: int = 0
    """Haul trucks per site whose device clock glitches once: one stray point at a random moment of
    the run, with the position and work state of the point before it and a timestamp
    ``glitch_offset_s`` away from it (ahead when > 0, back when < 0), sent right after it. A stray is
    not a real point: the truth is the motion."""
    glitch_offset_s: float = 0.0
    glitch_before_outage: bool = False
    """The glitch truck's stray is, instead, the first point of its first outage, stamped
    ``glitch_offset_s`` away and sent live as the outage begins: its last word before the outage's
    backlog (which arrives in order when the outage ends)."""

    def __post_init__(self) -> None:
        for name in ("trucks", "sites", "non_trucks", "unknown_assets", "ramp_faces", "glitch_trucks"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")
        if self.sites < 1:
            raise ValueError("sites must be >= 1")
        if self.loaders is not None and self.loaders < 1:
            raise ValueError("loaders must be >= 1")
        if self.dumps is not None and self.dumps < 1:
            raise ValueError("dumps must be >= 1")
        if self.hours is not None and not self.hours > 0:
            raise ValueError("hours must be > 0 (or None for an unbounded stream)")
        if self.device not in ("interval", "on_change"):
            raise ValueError("device must be 'interval' or 'on_change'")
        if self.layout not in ("radial", "pit") or self.ramp not in ("switchback", "spiral"):
            raise ValueError("layout must be 'radial' or 'pit', ramp 'switchback' or 'spiral'")
        for name in ("face_spacing_m", "bench_offset_m", "loaded_ramp_mps", "empty_ramp_mps"):
            lo, hi = getattr(self, name)
            if not 0 < lo <= hi:
                raise ValueError(f"{name} must be (min, max) with 0 < min <= max")
        if not 0.0 <= self.threshold_stops <= 0.5:
            raise ValueError("threshold_stops must be in [0, 0.5] (as many short dumps as exact stops)")
        for name in ("duplicates", "drop", "long_idles", "bad_dumps", "malformed", "gps_outlier_p", "reassign_p",
                     "ping_jitter", "queue_inside_p", "late_p", "late_tail_p"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be a fraction in [0, 1]")
        if self.disorder_s < 0 or self.outages_per_day < 0 or self.gps_sigma_m < 0 or self.dead_zones_per_day < 0:
            raise ValueError("disorder_s, outages_per_day, dead_zones_per_day and gps_sigma_m must be >= 0")
        lo, hi = self.ping_interval_s
        if not 0 < lo <= hi:
            raise ValueError("ping_interval_s must be (min, max) with 0 < min <= max")
        for name in ("late_s", "late_tail_s", "dead_zone_s", "dead_zone_delay_s"):
            lo, hi = getattr(self, name)
            if not 0 <= lo <= hi:
                raise ValueError(f"{name} must be (min, max) with 0 <= min <= max")
        if self.dead_zones_per_day and not self.dead_zone_s[1] > 0:
            raise ValueError("dead_zone_s must be longer than 0 s when dead_zones_per_day > 0")
        if self.glitch_trucks > self.trucks:
            raise ValueError("glitch_trucks must be <= trucks")

    @property
    def n_loaders(self) -> int:
        """Loaders per site (resolved)."""
        return self.loaders if self.loaders is not None else max(1, math.ceil(self.trucks / 5))

    @property
    def n_dumps(self) -> int:
        """Dump regions per site (resolved)."""
        return self.dumps if self.dumps is not None else max(2, math.ceil(self.trucks / 15))

    @property
    def end_ms(self) -> int | None:
        """End of the run (epoch ms) or None when unbounded."""
        return None if self.hours is None else self.start_ms + int(round(self.hours * 3_600_000))

    def degraded(self) -> SimulationSpec:
        """This spec with the realistic degradation mix of DEGRADED_PRESET applied."""
        return replace(self, **DEGRADED_PRESET)


DEGRADED_PRESET: dict[str, Any] = {
    "duplicates": 0.02,
    "disorder_s": 30.0,
    "drop": 0.01,
    "outages_per_day": 2.0,
    "long_idles": 0.03,
    "bad_dumps": 0.02,
    "non_trucks": 2,
    "malformed": 0.002,
    "unknown_assets": 1,
}

_PIT = {"layout": "pit", "gps_sigma_m": 3.5}
_DEAD_ZONES = {"dead_zones_per_day": 12.0, "dead_zone_s": (30.0, 180.0), "dead_zone_delay_s": (60.0, 600.0)}
SCENARIO_FAMILIES: dict[str, dict[str, Any]] = {
    "clean": {},
    "degraded": DEGRADED_PRESET,
    "sparse-idle": {"sparse_idle": True},
    "sparse-pings": {"ping_interval_s": (25.0, 45.0)},
    "noisy-gps": {"gps_sigma_m": 6.0, "gps_outlier_p": 0.03, **DEGRADED_PRESET},
    "multi-site": {"sites": 3, **DEGRADED_PRESET},
    "switchback-pit": {**_PIT, "ramp": "switchback"},
    "hairpin-faces": {**_PIT, "ramp": "switchback", "ramp_faces": 2, "loaders": 4, "ping_interval_s": (15.0, 20.0),
                      "loaded_ramp_mps": (2.5, 4.0)},
    "spiral-pit": {**_PIT, "ramp": "spiral", "gps_sigma_m": 4.0, "loaded_ramp_mps": (4.5, 5.0)},
    "close-faces": {**_PIT, "face_spacing_m": (150.0, 190.0), "bench_offset_m": (15.0, 35.0), "loaders": 5},
    "in-bay-queue": {**_PIT, "queue_inside_p": 1.0, "loaders": 2},
    "staging-queue": {**_PIT, "queue_inside_p": 0.0, "loaders": 2},
    "degraded-pit": {**_PIT, **DEGRADED_PRESET},
    "sparse-device": {**_PIT, "device": "on_change"},
    "sparse-device-radial": {"device": "on_change", **DEGRADED_PRESET},
    "over-trucked": {"loaders": 1},
    "over-trucked-staging": {**_PIT, "loaders": 2, "queue_inside_p": 0.0, "reassign_p": 0.0, "trucks": 16},
    "under-trucked": {"loaders": 4},
    "late-2min-10pct": {**DEGRADED_PRESET, "late_p": 0.10, "late_s": (5.0, 120.0)},
    "late-5min-30pct": {**DEGRADED_PRESET, "late_p": 0.30, "late_s": (0.0, 300.0)},
    "late-10min-5pct": {**DEGRADED_PRESET, "late_p": 0.05, "late_s": (0.0, 600.0)},
    "late-sparse-device": {"device": "on_change", **DEGRADED_PRESET, "late_p": 0.10, "late_s": (0.0, 300.0)},
    "late-tail-14min-1pct": {**DEGRADED_PRESET, "late_p": 0.01, "late_s": (720.0, 840.0)},
    "late-2min-tail-14min": {**DEGRADED_PRESET, "late_p": 0.10, "late_s": (5.0, 120.0), "late_tail_p": 0.01,
                             "late_tail_s": (720.0, 840.0)},
    "late-dead-zones": {**DEGRADED_PRESET, **_DEAD_ZONES},
    "late-dead-zones-sparse-device": {"device": "on_change", **DEGRADED_PRESET, **_DEAD_ZONES},
    "clock-strays-ahead": {**DEGRADED_PRESET, "glitch_trucks": 4, "glitch_offset_s": 7200.0},
    "clock-strays-back": {**DEGRADED_PRESET, "glitch_trucks": 4, "glitch_offset_s": -1800.0},
    "clock-strays-before-outages": {**DEGRADED_PRESET, "outages_per_day": 8.0, "glitch_trucks": 4,
                                    "glitch_offset_s": 120.0, "glitch_before_outage": True},
    "threshold-stops": {"threshold_stops": 0.3, "ping_interval_s": (5.0, 10.0), "gps_outlier_p": 0.0},
}
"""Named scenario families (overrides of SimulationSpec): the engine's accuracy bar is checked on each
(tests/workbench/test_scenarios.py, on seeds 21-23; bench/scenario_table.py); `asset-cycle simulate --scenario`."""


def scenario_spec(name: str, **overrides: Any) -> SimulationSpec:
    """The SimulationSpec of a named family (``overrides`` on top, e.g. trucks, hours, seed)."""
    if name not in SCENARIO_FAMILIES:
        raise ValueError(f"unknown scenario {name!r}; known: {', '.join(SCENARIO_FAMILIES)}")
    family = dict(SCENARIO_FAMILIES[name])
    if "sites" in family and "trucks" not in overrides:
        family.setdefault("trucks", 6)
    return SimulationSpec(**{**family, **overrides})


