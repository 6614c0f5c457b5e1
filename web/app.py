"""The live view's FastAPI application: the JSON API over the live tables, its OpenAPI schema
(``/openapi.json``), ``/health`` and the page (``/``, its own files under ``/static/``, Leaflet under
``/vendor/leaflet/``).

Read-only: every answer comes from ``web.queries``' SELECTs through ``web.db.ReadOnlyPool``. "Now" for a
site is its newest event (event time): a truck is stale when its newest point is more than
``stale_truck_s`` behind its site's, a cycle's elapsed time runs to the truck's newest point, and this
shift is the one the site's newest event falls in. ``/health`` alone compares event time with the wall
clock (``stale_site_s``), to say whether the data is live.

Errors are JSON ``{"error": "one line"}``: 400 for a bad or unknown parameter, 404 for an unknown truck or
path, 503 when the database does not answer (or lacks a table), 401 without the bearer token when one
is required. Every answer carries security headers (``web.security``).
"""

from __future__ import annotations

import base64
import binascii
import logging
import re
from collections.abc import Mapping
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

import orjson
import psycopg2
import psycopg2.errors
from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from web import models
from web.db import DatabaseDown, ReadOnlyPool
from web.geometry import RegionCache
from web.queries import LOADER_TYPE, Queries
from web.security import SecurityMiddleware
from web.settings import ServeSettings, time_zone

log = logging.getLogger(__name__)
STATIC_DIR = Path(__file__).resolve().parent / "static"
LEAFLET_DIR = Path(__file__).resolve().parents[1] / "tools" / "web" / "node_modules" / "leaflet" / "dist"
"""Leaflet as `make setup` installs it (npm, pinned by tools/web/package-lock.json)."""
CLOSED_STATUSES = ("COMPLETE", "INVALID", "OUTLIER")
WORK_STATES = {2: "IDLING", 3: "WORKING"}
MAX_TEXT = 200
MAX_KPI_WINDOW = timedelta(days=31)
DEFAULT_KPI_WINDOW = timedelta(hours=12)
_WAITING_ITEM = re.compile(r"(.*?)@(-?\d+)(?:,|$)")

Text = Annotated[str | None, Query(max_length=MAX_TEXT)]
Time = Annotated[str | None, Query(max_length=64, description="ISO 8601; without an offset: UTC")]


class BadRequest(ValueError):
    """A request parameter is wrong (HTTP 400, one line)."""


class NotFound(LookupError):
    """No such object (HTTP 404, one line)."""


class Json(JSONResponse):
    """JSON by orjson (the API's rows are already plain values: strings, numbers, None)."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


# --------------------------------------------------------------------------- values


def iso(value: datetime | None) -> str | None:
    """A timestamp as ISO 8601 UTC with milliseconds and ``Z``."""
    if value is None:
        return None
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def seconds_between(start: datetime | None, end: datetime | None) -> float | None:
    """``end - start`` in seconds (None when either is unknown)."""
    return None if start is None or end is None else round((end - start).total_seconds(), 3)


def parse_time(text: str | None, name: str) -> datetime | None:
    """A query parameter's ISO 8601 time (no offset = UTC); BadRequest naming ``name`` otherwise."""
    if text is None:
        return None
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        raise BadRequest(f"{name}: {text!r} is not an ISO 8601 time (e.g. 2024-01-15T06:00Z)") from None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def encode_cursor(load_start: datetime, asset_guid: str) -> str:
    """The opaque position after a cycle in the newest-first order."""
    return base64.urlsafe_b64encode(orjson.dumps([iso(load_start), asset_guid])).decode().rstrip("=")


def decode_cursor(text: str) -> tuple[datetime, str]:
    """The position ``encode_cursor`` made (BadRequest for anything else)."""
    try:
        start, truck = orjson.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
        parsed = parse_time(start, "cursor")
        if parsed is None or not isinstance(truck, str):
            raise ValueError
        return parsed, truck
    except (ValueError, TypeError, binascii.Error, orjson.JSONDecodeError, BadRequest):
        raise BadRequest("cursor: not a cursor this API returned (use next_cursor as it is)") from None


def shift_window(site_now: datetime, shift_starts: tuple[int, ...], tz_name: str) -> tuple[datetime, datetime]:
    """(start, end) in UTC of the shift ``site_now`` falls in; shifts start at ``shift_starts`` (minutes
    after local midnight) in the time zone ``tz_name``."""
    tz = time_zone(tz_name)
    day = site_now.astimezone(tz).date()
    starts = sorted(datetime.combine(day + timedelta(days=d), time(m // 60, m % 60), tzinfo=tz).astimezone(UTC)
                    for d in (-1, 0, 1) for m in shift_starts)  # fmt: skip
    start = max(s for s in starts if s <= site_now)
    return start, min(s for s in starts if s > start)


def parse_waiting(text: str | None) -> list[tuple[str, datetime]]:
    """loader_status.waiting (``truck@since_ms`` joined by commas) -> [(truck, since)]."""
    return [(m.group(1), datetime.fromtimestamp(int(m.group(2)) / 1000, UTC))
            for m in _WAITING_ITEM.finditer(text or "") if m.group(1)]  # fmt: skip


def _row_times(row: Mapping[str, Any]) -> dict[str, Any]:
    return {key: iso(value) if isinstance(value, datetime) else value for key, value in row.items()}


# --------------------------------------------------------------------------- the application


class LiveView:
    """What the routes answer, over one pool, one region cache and the settings."""

    def __init__(self, settings: ServeSettings, pool: ReadOnlyPool, regions: RegionCache) -> None:
        self.settings = settings
        self.pool = pool
        self.region_cache = regions
        self.q = Queries(settings.names)

    # -- sites ----------------------------------------------------------------------------------------------
    def sites(self) -> dict[str, Any]:
        summaries = {r["site_guid"]: r for r in self.pool.fetch(self.q.sites)}
        loaders = self.pool.fetch(self.q.loaders, {"loader_type": LOADER_TYPE, "site": None})
        regions, problem = self.region_cache.regions()
        names = set(summaries) | {r["site_guid"] for r in loaders if r["site_guid"]} | set(regions)
        sites = []
        for site in sorted(names):
            summary = summaries.get(site, {})
            thresholds = self.settings.engine.for_site(site)
            sites.append({
                "site_guid": site, "trucks": summary.get("trucks", 0),
                "newest_event_utc": iso(summary.get("newest_event_utc")),
                "last_write_utc": iso(summary.get("last_write_utc")),
                "loader_radius_m": thresholds.loader_distance_m,
                "queue_radius_m": thresholds.queue_radius_m,
                "regions": [{"region_guid": r.region_guid, "region_name": r.region_name,
                             "region_type": r.region_type, "points": [list(p) for p in r.points]}
                            for r in regions.get(site, [])],
                "loaders": [{"asset_guid": r["asset_guid"], "asset_name": r["asset_name"], "latitude": r["latitude"],
                             "longitude": r["longitude"]} for r in loaders if r["site_guid"] == site],
            })  # fmt: skip
        return {"sites": sites, "tile_url": self.settings.tile_url, "warnings": [problem] if problem else []}

    # -- fleet ----------------------------------------------------------------------------------------------
    def _trucks(self, site: str | None, truck: str | None) -> list[dict[str, Any]]:
        """Rows of the fleet query as the API's trucks (the hot path: PostgreSQL formats the values)."""
        stale_after = self.settings.stale_truck_s
        return [{
            "asset_guid": r["asset_guid"], "site_guid": r["site_guid"], "last_event_utc": r["last_event_utc"],
            "latitude": r["latitude"], "longitude": r["longitude"], "work_state": WORK_STATES.get(r["work_state_id"]),
            "segment": r["current_segment"], "area": r["area"], "area_guid": r["area_guid"], "silent_s": r["silent_s"],
            "stale": r["silent_s"] is not None and r["silent_s"] > stale_after,
            "cycle": {"load_start_utc": r["load_start_utc"], "loader_asset_guid": r["loader_asset_guid"],
                      "dump_region_guid": r["dump_region_guid"], "elapsed_s": r["elapsed_s"],
                      "invalid_reason": r["invalid_reason"], "outlier_rule": r["outlier_rule"]}
            if r["has_cycle"] else None,
        } for r in self.pool.fetch(self.q.fleet, {"site": site, "truck": truck})]  # fmt: skip

    def fleet(self, site: str | None) -> dict[str, Any]:
        return {"site": site, "stale_after_s": self.settings.stale_truck_s, "trucks": self._trucks(site, None)}

    def truck(self, truck: str, cycles: int) -> dict[str, Any]:
        params = {"truck": truck}
        [position] = self._trucks(None, truck) or [None]
        [current] = self.pool.fetch(self.q.truck_current_cycle, params) or [None]
        [asset] = self.pool.fetch(self.q.truck_asset, params) or [None]
        closed = self.pool.fetch(self.q.cycles, self._cycle_filter(truck=truck, limit=cycles))
        if position is None and current is None and not closed:
            raise NotFound(f"unknown truck {truck!r} (no position, cycle or closed cycle in schema "
                           f"{self.settings.names.schema})")  # fmt: skip
        if current is not None:
            elapsed = position["cycle"]["elapsed_s"] if position and position["cycle"] else seconds_between(
                current["load_start_utc"], current["last_event_utc"])
            current = {**_row_times(current), "elapsed_s": elapsed}
        site = (position or current or asset or closed[0])["site_guid"]
        if position is not None:
            position["cycle"] = None  # the cycle in progress is current_cycle, in full
        return {"asset_guid": truck, "site_guid": site, "asset_type": asset["asset_type"] if asset else None,
                "position": position, "current_cycle": current,
                "cycles": [_row_times(r) for r in closed]}  # fmt: skip

    # -- cycles ---------------------------------------------------------------------------------------------
    @staticmethod
    def _cycle_filter(*, site: str | None = None, truck: str | None = None, loader: str | None = None,
                      status: str | None = None, start: datetime | None = None, end: datetime | None = None,
                      after: tuple[datetime, str] | None = None, limit: int) -> dict[str, Any]:  # fmt: skip
        return {"site": site, "truck": truck, "loader": loader, "status": status, "start": start, "end": end,
                "after_start": after[0] if after else None, "after_truck": after[1] if after else None,
                "limit": limit}  # fmt: skip

    def cycles(self, site: str | None, truck: str | None, loader: str | None, status: str | None, start: str | None,
               end: str | None, limit: int, cursor: str | None) -> dict[str, Any]:  # fmt: skip
        begin, finish = parse_time(start, "from"), parse_time(end, "to")
        if begin and finish and finish <= begin:
            raise BadRequest("to must be after from")
        after = decode_cursor(cursor) if cursor else None
        rows = self.pool.fetch(self.q.cycles, self._cycle_filter(site=site, truck=truck, loader=loader, status=status,
                                                                 start=begin, end=finish, after=after,
                                                                 limit=limit + 1))  # fmt: skip
        page = rows[:limit]
        more = len(rows) > limit
        return {"cycles": [_row_times(r) for r in page],
                "next_cursor": encode_cursor(page[-1]["load_start_utc"], page[-1]["asset_guid"]) if more else None}

    # -- loaders --------------------------------------------------------------------------------------------
    def _site_clocks(self) -> dict[str, datetime]:
        return {r["site_guid"]: r["newest_event_utc"] for r in self.pool.fetch(self.q.sites) if r["newest_event_utc"]}

    def loaders(self, site: str | None) -> dict[str, Any]:
        clocks = self._site_clocks()
        places = {r["asset_guid"]: r for r in self.pool.fetch(self.q.loaders, {"loader_type": LOADER_TYPE,
                                                                                "site": site})}  # fmt: skip
        shifts: dict[str, tuple[datetime, datetime, dict[str, Mapping[str, Any]]]] = {}
        try:
            statuses = {r["loader_asset_guid"]: r for r in self.pool.fetch(self.q.loader_status, {"site": site})}
        except psycopg2.errors.UndefinedTable:
            return {"site": site, "warnings": [self._no_loader_tables()],
                    "loaders": [self._loader_row(guid, place["site_guid"], place, None, None, None)
                                for guid, place in sorted(places.items())]}  # fmt: skip
        for site_guid in {r["site_guid"] for r in (*places.values(), *statuses.values()) if r["site_guid"]}:
            if site_guid in clocks:
                start, end = shift_window(clocks[site_guid], self.settings.shift_starts, self.settings.tz)
                rows = self.pool.fetch(self.q.loader_shift, {"site": site_guid, "start": start, "end": end})
                shifts[site_guid] = (start, end, {r["loader_asset_guid"]: r for r in rows})
        board = []
        for guid in sorted(set(places) | set(statuses)):
            place, status = places.get(guid, {}), statuses.get(guid)
            site_guid = (status or place).get("site_guid")
            now = clocks.get(site_guid)
            board.append(self._loader_row(guid, site_guid, place, status, now, shifts.get(site_guid)))
        return {"site": site, "warnings": [], "loaders": board}

    def _no_loader_tables(self) -> str:
        return (f"schema {self.settings.names.schema} has no loader tables yet (written by the job from the "
                "loader-KPI version on; `asset-cycle db init` adds them): no loader states or hourly figures")

    @staticmethod
    def _loader_row(guid: str, site: str | None, place: Mapping[str, Any], status: Mapping[str, Any] | None,
                    now: datetime | None, shift: tuple[datetime, datetime, dict[str, Mapping[str, Any]]] | None
                    ) -> dict[str, Any]:  # fmt: skip
        def at(truck: str, since: datetime | None) -> dict[str, Any]:
            return {"asset_guid": truck, "since_utc": iso(since), "for_s": seconds_between(since, now)}

        in_service = waiting = idle_since = None
        if status is not None:
            if status["in_service_asset"]:
                in_service = at(status["in_service_asset"], status["in_service_since_utc"])
            waiting = [at(truck, since) for truck, since in parse_waiting(status["waiting"])]
            idle_since = status["idle_since_utc"]
        state = "UNKNOWN" if status is None else ("LOADING" if in_service else "IDLE")
        figures = None
        if shift is not None:
            start, end, rows = shift
            row = rows.get(guid, {})
            figures = {"start_utc": iso(start), "end_utc": iso(end), "loads": int(row.get("loads") or 0),
                       **{k: float(row.get(k) or 0.0) for k in ("busy_seconds", "hang_seconds", "queue_seconds")}}
        return {"loader_asset_guid": guid, "site_guid": site, "asset_name": place.get("asset_name"),
                "latitude": place.get("latitude"), "longitude": place.get("longitude"), "state": state,
                "in_service": in_service, "waiting": waiting or [], "idle_since_utc": iso(idle_since),
                "idle_for_s": seconds_between(idle_since, now),
                "shift": figures}  # fmt: skip

    # -- alerts, KPIs, health -------------------------------------------------------------------------------
    def alerts(self, site: str | None, since: str | None, limit: int) -> dict[str, Any]:
        rows = self.pool.fetch(self.q.alerts, {"site": site, "since": parse_time(since, "since"), "limit": limit})
        return {"alerts": [_row_times(r) for r in rows]}

    def kpis(self, site: str | None, start: str | None, end: str | None) -> dict[str, Any]:
        begin, finish = parse_time(start, "from"), parse_time(end, "to")
        if finish is None:
            clocks = self._site_clocks()
            newest = clocks.get(site) if site else max(clocks.values(), default=None)
            finish = (newest or datetime.now(UTC)).replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
        begin = begin or finish - DEFAULT_KPI_WINDOW
        if finish <= begin:
            raise BadRequest("to must be after from")
        if finish - begin > MAX_KPI_WINDOW:
            raise BadRequest(f"the window from {iso(begin)} to {iso(finish)} is longer than {MAX_KPI_WINDOW.days} days")
        params = {"site": site, "start": begin, "end": finish}
        window = {"from_utc": iso(begin), "to_utc": iso(finish)}
        try:
            return {**window, "warnings": [],
                    "sites": [_row_times(r) for r in self.pool.fetch(self.q.site_hours, params)],
                    "loaders": [_row_times(r) for r in self.pool.fetch(self.q.loader_hours, params)],
                    "trucks": [_row_times(r) for r in self.pool.fetch(self.q.truck_hours, params)]}  # fmt: skip
        except psycopg2.errors.UndefinedTable:
            return {**window, "warnings": [self._no_loader_tables()], "sites": [], "loaders": [], "trucks": []}

    def health(self) -> tuple[int, dict[str, Any]]:
        limit = self.settings.stale_site_s
        try:
            rows = self.pool.fetch(self.q.sites)
        except (DatabaseDown, psycopg2.Error) as exc:
            return 503, {"status": "database_unavailable", "database": _error_text(exc), "stale_after_s": limit,
                         "sites": []}  # fmt: skip
        now = datetime.now(UTC)
        sites = []
        for r in rows:
            age = seconds_between(r["newest_event_utc"], now)
            sites.append({"site_guid": r["site_guid"], "newest_event_utc": iso(r["newest_event_utc"]),
                          "event_age_s": age, "last_write_utc": iso(r["last_write_utc"]),
                          "stale": age is None or age > limit})  # fmt: skip
        stale = any(s["stale"] for s in sites)
        return (503 if stale else 200), {"status": "stale" if stale else "ok", "database": "reachable",
                                         "stale_after_s": limit, "sites": sites}  # fmt: skip


def _error_text(exc: BaseException) -> str:
    """One line: a PostgreSQL error's primary message (without the query excerpt), else the text."""
    diag = getattr(exc, "diag", None)
    text = getattr(diag, "message_primary", None) or str(exc)
    return " ".join(text.split()) or type(exc).__name__


def _one_line_validation(exc: RequestValidationError) -> str:
    first = exc.errors()[0] if exc.errors() else {}
    where = ".".join(str(p) for p in first.get("loc", ())[1:]) or "request"
    got = f" (got {first['input']!r})" if isinstance(first.get("input"), str | int | float) else ""
    return f"{where}: {first.get('msg', 'invalid')}{got}"


def reject_unknown_parameters(request: Request) -> None:
    """A query parameter the route does not take is a 400 naming it (a typo never silently widens a query)."""
    route = request.scope.get("route")
    dependant = getattr(route, "dependant", None)
    known = {p.alias for p in dependant.query_params} if dependant is not None else set()
    unknown = sorted(set(request.query_params) - known)
    if unknown:
        takes = ", ".join(sorted(known)) or "no parameters"
        raise BadRequest(f"unknown parameter {unknown[0]!r} (this endpoint takes {takes})")


def create_app(settings: ServeSettings, pool: ReadOnlyPool, regions: RegionCache) -> FastAPI:
    """The application: routes over a LiveView, error handlers, security middleware, the page's files."""
    view = LiveView(settings, pool, regions)
    app = FastAPI(title="asset-cycle live view", version="1", docs_url=None, redoc_url=None,
                  description="Read-only API over the job's live tables: fleet positions, cycles, loaders, alerts "
                              "and hourly KPIs. Times are ISO 8601 UTC; errors are {\"error\": \"one line\"}.",
                  dependencies=[Depends(reject_unknown_parameters)], default_response_class=Json)  # fmt: skip
    app.add_middleware(SecurityMiddleware, token=settings.token, host=settings.host, tile_url=settings.tile_url)
    errors = {400: {"model": models.ErrorBody}, 503: {"model": models.ErrorBody}}

    def error(status: int, text: str) -> Json:
        return Json({"error": text}, status_code=status, headers={"Cache-Control": "no-store"})

    @app.exception_handler(BadRequest)
    def bad_request(_: Request, exc: BadRequest) -> Json:
        return error(400, str(exc))

    @app.exception_handler(RequestValidationError)
    def invalid(_: Request, exc: RequestValidationError) -> Json:
        return error(400, _one_line_validation(exc))

    @app.exception_handler(NotFound)
    def not_found(_: Request, exc: NotFound) -> Json:
        return error(404, str(exc))

    @app.exception_handler(StarletteHTTPException)
    def http_error(_: Request, exc: StarletteHTTPException) -> Json:
        return error(exc.status_code, str(exc.detail))

    @app.exception_handler(DatabaseDown)
    def database_down(_: Request, exc: DatabaseDown) -> Json:
        return error(503, f"database unavailable: {exc}")

    @app.exception_handler(Exception)
    def internal_error(_: Request, exc: Exception) -> Json:
        log.exception("live view: unexpected error")
        return error(500, f"internal error ({type(exc).__name__}); see the server's log")

    @app.exception_handler(psycopg2.Error)
    def database_error(_: Request, exc: psycopg2.Error) -> Json:
        schema = settings.names.schema
        if isinstance(exc, psycopg2.errors.UndefinedTable):
            return error(503, f"{_error_text(exc)}: create the tables of schema {schema} with `asset-cycle db init "
                              f"--schema {schema}` (or run the job) with this version")  # fmt: skip
        if isinstance(exc, psycopg2.errors.QueryCanceled):
            return error(503, "the database took too long to answer (statement timeout); try again")
        return error(500, f"database error: {_error_text(exc)}")

    def answer(content: dict[str, Any]) -> Json:
        return Json(content, headers={"Cache-Control": "no-store"})

    @app.get("/api/sites", response_model=models.SitesResponse, responses=errors, tags=["api"])
    def sites() -> Json:
        """Every site: trucks, newest event, and its map (regions from Redis, loaders and their radii)."""
        return answer(view.sites())

    @app.get("/api/fleet", response_model=models.FleetResponse, responses=errors, tags=["api"])
    def fleet(site: Text = None) -> Json:
        """Every truck's position, work state, segment, area, current cycle (elapsed), last seen and stale flag."""
        return answer(view.fleet(site))

    @app.get("/api/trucks/{truck_id:path}", response_model=models.TruckResponse,
             responses={**errors, 404: {"model": models.ErrorBody}}, tags=["api"])  # fmt: skip
    def truck(truck_id: str, cycles: Annotated[int, Query(ge=0, le=200)] = 10) -> Json:
        """A truck's position and state, its cycle in progress and its last ``cycles`` closed cycles."""
        if len(truck_id) > MAX_TEXT:
            raise BadRequest(f"truck id longer than {MAX_TEXT} characters")
        return answer(view.truck(truck_id, cycles))

    @app.get("/api/cycles", response_model=models.CyclesResponse, responses=errors, tags=["api"])
    def cycles(site: Text = None, truck: Text = None, loader: Text = None,
               status: Literal["COMPLETE", "INVALID", "OUTLIER"] | None = None,
               start: Annotated[str | None, Query(alias="from", max_length=64)] = None,
               end: Annotated[str | None, Query(alias="to", max_length=64)] = None,
               limit: Annotated[int, Query(ge=1, le=500)] = 50,
               cursor: Annotated[str | None, Query(max_length=600)] = None) -> Json:  # fmt: skip
        """Closed cycles, newest load start first, ``limit`` per page; from/to bound the load start."""
        return answer(view.cycles(site, truck, loader, status, start, end, limit, cursor))

    @app.get("/api/loaders", response_model=models.LoadersResponse, responses=errors, tags=["api"])
    def loaders(site: Text = None) -> Json:
        """Each loader: the truck in service, those waiting (and how long), idle since, this shift's loads,
        queue and hang."""
        return answer(view.loaders(site))

    @app.get("/api/alerts", response_model=models.AlertsResponse, responses=errors, tags=["api"])
    def alerts(site: Text = None, since: Time = None, limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> Json:
        """Alerts, newest event first (since: event time)."""
        return answer(view.alerts(site, since, limit))

    @app.get("/api/kpis", response_model=models.KpisResponse, responses=errors, tags=["api"])
    def kpis(site: Text = None, start: Annotated[str | None, Query(alias="from", max_length=64)] = None,
             end: Annotated[str | None, Query(alias="to", max_length=64)] = None) -> Json:  # fmt: skip
        """Hourly KPIs (UTC hours in [from, to); default: the 12 hours up to the site's newest event): sites
        (match factor), loaders, trucks."""
        return answer(view.kpis(site, start, end))

    @app.get("/health", response_model=models.Health, responses={503: {"model": models.Health}}, tags=["health"])
    def health() -> Json:
        """200 when the database answers and every site's newest event is within the staleness threshold of
        the wall clock; 503 otherwise (with the same body)."""
        status, body = view.health()
        return Json(body, status_code=status, headers={"Cache-Control": "no-store"})

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    app.mount("/vendor/leaflet", StaticFiles(directory=LEAFLET_DIR, check_dir=False), name="leaflet")
    return app


def leaflet_installed() -> bool:
    """Whether `make setup` installed the page's JavaScript library."""
    return (LEAFLET_DIR / "leaflet.js").is_file()
