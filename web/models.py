"""The shapes of the API's answers, for its OpenAPI schema (``/openapi.json``). Times are ISO 8601 UTC
strings (``2024-01-15T06:00:00.000Z``), durations seconds, positions WGS84 degrees."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class ErrorBody(BaseModel):
    """Every error: one line saying what is wrong."""

    error: str


class RegionShape(BaseModel):
    region_guid: str
    region_name: str
    region_type: str = Field(description="dump, or another type (drawn, not a dump area)")
    points: list[list[float]] = Field(description="[longitude, latitude] pairs of the polygon's ring")


class LoaderPlace(BaseModel):
    asset_guid: str
    asset_name: str | None
    latitude: float | None
    longitude: float | None


class Site(BaseModel):
    site_guid: str
    trucks: int = Field(description="trucks with a latest position")
    newest_event_utc: str | None = Field(description="event time of the site's newest processed point")
    last_write_utc: str | None = Field(description="when the job last wrote a truck's position (database clock)")
    loader_radius_m: float = Field(description="a truck within this distance of a loader is at it")
    queue_radius_m: float = Field(description="a truck stopped within this distance on its approach waits")
    regions: list[RegionShape]
    loaders: list[LoaderPlace]


class SitesResponse(BaseModel):
    sites: list[Site]
    tile_url: str | None = Field(description="background tile URL template ({z}/{x}/{y}), if one is configured")
    warnings: list[str] = Field(description="e.g. Redis unreachable: the map has no regions")


class CycleBrief(BaseModel):
    """A truck's cycle in progress, as the fleet list shows it."""

    load_start_utc: str | None = Field(description="None before the truck's first load")
    loader_asset_guid: str | None
    dump_region_guid: str | None
    elapsed_s: float | None = Field(description="from the load start to the truck's newest point")
    invalid_reason: str | None
    outlier_rule: str | None


class FleetTruck(BaseModel):
    asset_guid: str
    site_guid: str | None
    last_event_utc: str | None
    latitude: float | None
    longitude: float | None
    work_state: str | None = Field(description="IDLING or WORKING, as the device reported")
    segment: str | None = Field(description="LOAD_TIME, LOAD_TRAVEL, DUMP_TIME, EMPTY_TRAVEL or NONE")
    area: str | None = Field(description="L at a loader, D in a dump region, T travelling")
    area_guid: str | None
    silent_s: float | None = Field(description="how far its newest point is behind the site's newest point")
    stale: bool = Field(description="silent longer than the staleness threshold while its site reports")
    cycle: CycleBrief | None


class FleetResponse(BaseModel):
    site: str | None
    stale_after_s: float
    trucks: list[FleetTruck]


class Cycle(BaseModel):
    """A cycle with every column of the cycle tables."""

    model_config = ConfigDict(extra="allow")

    asset_guid: str
    site_guid: str
    cycle_status: str
    current_segment: str
    loader_asset_guid: str | None
    dump_region_guid: str | None
    load_start_utc: str | None
    load_end_utc: str | None
    dump_start_utc: str | None
    dump_end_utc: str | None
    cycle_end_utc: str | None
    total_cycle_seconds: float | None
    invalid_reason: str | None
    outlier_rule: str | None


class CurrentCycle(Cycle):
    elapsed_s: float | None = Field(description="from the load start to the truck's newest point")


class TruckResponse(BaseModel):
    asset_guid: str
    site_guid: str | None
    asset_type: str | None
    position: FleetTruck | None
    current_cycle: CurrentCycle | None
    cycles: list[Cycle] = Field(description="its last closed cycles, newest first")


class CyclesResponse(BaseModel):
    cycles: list[Cycle]
    next_cursor: str | None = Field(description="pass as cursor= for the next (older) page; None at the end")


class TruckAtLoader(BaseModel):
    asset_guid: str
    since_utc: str | None
    for_s: float | None = Field(description="until the site's newest point")


class ShiftFigures(BaseModel):
    start_utc: str
    end_utc: str
    loads: int
    busy_seconds: float
    hang_seconds: float
    queue_seconds: float


class LoaderBoardRow(BaseModel):
    loader_asset_guid: str
    site_guid: str | None
    asset_name: str | None
    latitude: float | None
    longitude: float | None
    state: str = Field(description="LOADING (a truck in service), IDLE (none in service; trucks may be on their way "
                                   "or waiting nearby) or UNKNOWN (no status yet)")
    in_service: TruckAtLoader | None
    waiting: list[TruckAtLoader] = Field(description="longest wait first")
    idle_since_utc: str | None
    idle_for_s: float | None = Field(description="no truck at or near it since idle_since_utc, for this long")
    shift: ShiftFigures | None = Field(description="this shift's figures (hours that started in it)")


class LoadersResponse(BaseModel):
    site: str | None
    warnings: list[str] = Field(description="e.g. a schema without the loader tables: states unknown")
    loaders: list[LoaderBoardRow]


class Alert(BaseModel):
    alert_id: str
    alert_type: str | None
    asset_guid: str | None
    site_guid: str | None
    event_utc: str | None
    latitude: float | None
    longitude: float | None
    detail: str | None


class AlertsResponse(BaseModel):
    alerts: list[Alert]


class KpisResponse(BaseModel):
    from_utc: str
    to_utc: str
    warnings: list[str] = Field(description="e.g. a schema without the loader tables: no figures")
    sites: list[dict] = Field(description="site_hour_kpi rows: trucks, loaders, loads, match factor, ...")
    loaders: list[dict] = Field(description="loader_hour rows: loads, busy, hang and queue seconds")
    trucks: list[dict] = Field(description="truck_hour_kpi rows: working, idle, distances, cycles, queue")


class SiteHealth(BaseModel):
    site_guid: str
    newest_event_utc: str | None
    event_age_s: float | None = Field(description="wall clock minus the newest event (negative: event time ahead)")
    last_write_utc: str | None
    stale: bool


class Health(BaseModel):
    status: str = Field(description="ok, stale (a site's newest event is too old) or database_unavailable")
    database: str = Field(description="reachable, or why not")
    stale_after_s: float
    sites: list[SiteHealth]
