"""Every SQL statement of the live view. Each is static text: table names are identifiers from the
settings (``psycopg2.sql.Identifier``), every value from a request is a bound parameter. Optional filters
are written ``(%(x)s IS NULL OR column = %(x)s)``; psycopg2 binds the values client-side, so PostgreSQL
plans each query with the filters that apply."""

from __future__ import annotations

from psycopg2 import sql

from state_machine.model import LOADER
from stores.postgres import TableNames, column_names

LOADER_TYPE = LOADER
ISO = "to_char({column} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')"
"""A timestamptz as the API's ISO 8601 UTC text (what web.app.iso makes of a datetime)."""


class Queries:
    """The statements over one set of tables (composed once)."""

    def __init__(self, names: TableNames) -> None:
        self.names = names
        t = {kind: names.table(kind) for kind in ("asset", "asset_info", "cycle_tmp", "cycle", "process_info",
                                                   "alerts", "loader_status", "loader_hour", "truck_hour_kpi",
                                                   "site_hour_kpi")}  # fmt: skip
        cycle_columns = sql.SQL(", ").join(sql.Identifier(c) for c in column_names("cycle"))

        self.sites = sql.SQL(
            "SELECT site_guid, count(*) AS trucks, max(last_event_utc) AS newest_event_utc, "
            "max(updated_at) AS last_write_utc FROM {pi} WHERE site_guid IS NOT NULL GROUP BY site_guid "
            "ORDER BY site_guid").format(pi=t["process_info"])  # fmt: skip

        self.loaders = sql.SQL(
            "SELECT a.asset_guid, COALESCE(i.site_guid, a.site_guid) AS site_guid, a.asset_name, i.latitude, "
            "i.longitude FROM {asset} a LEFT JOIN {info} i ON i.asset_guid = a.asset_guid "
            "WHERE a.asset_type = %(loader_type)s "
            "AND (%(site)s::text IS NULL OR COALESCE(i.site_guid, a.site_guid) = %(site)s) "
            "ORDER BY a.asset_guid").format(asset=t["asset"], info=t["asset_info"])  # fmt: skip

        # the fleet's hot path: times formatted and durations computed by PostgreSQL (no datetime objects)
        self.fleet = sql.SQL(
            "WITH newest AS (SELECT site_guid, max(last_event_utc) AS newest FROM {pi} GROUP BY site_guid) "
            "SELECT p.asset_guid, p.site_guid, " + ISO.format(column="p.last_event_utc") + " AS last_event_utc, "
            "p.latitude, p.longitude, p.work_state_id, p.current_segment, p.area, p.area_guid, "
            "round(extract(epoch FROM n.newest - p.last_event_utc), 3)::float8 AS silent_s, "
            "c.asset_guid IS NOT NULL AS has_cycle, " + ISO.format(column="c.load_start_utc") + " AS load_start_utc, "
            "c.loader_asset_guid, c.dump_region_guid, c.invalid_reason, c.outlier_rule, "
            "round(extract(epoch FROM p.last_event_utc - c.load_start_utc), 3)::float8 AS elapsed_s "
            "FROM {pi} p LEFT JOIN newest n ON n.site_guid = p.site_guid "
            "LEFT JOIN {tmp} c ON c.asset_guid = p.asset_guid "
            "WHERE (%(site)s::text IS NULL OR p.site_guid = %(site)s) "
            "AND (%(truck)s::text IS NULL OR p.asset_guid = %(truck)s) "
            "ORDER BY p.site_guid, p.asset_guid").format(pi=t["process_info"], tmp=t["cycle_tmp"])  # fmt: skip

        self.truck_current_cycle = sql.SQL(
            "SELECT {cols} FROM {tmp} WHERE asset_guid = %(truck)s").format(cols=cycle_columns, tmp=t["cycle_tmp"])
        self.truck_asset = sql.SQL(
            "SELECT asset_guid, site_guid, asset_type, asset_name FROM {asset} WHERE asset_guid = %(truck)s"
        ).format(asset=t["asset"])

        self.cycles = sql.SQL(
            "SELECT {cols} FROM {cycle} "
            "WHERE (%(site)s::text IS NULL OR site_guid = %(site)s) "
            "AND (%(truck)s::text IS NULL OR asset_guid = %(truck)s) "
            "AND (%(loader)s::text IS NULL OR loader_asset_guid = %(loader)s) "
            "AND (%(status)s::text IS NULL OR cycle_status = %(status)s) "
            "AND (%(start)s::timestamptz IS NULL OR load_start_utc >= %(start)s) "
            "AND (%(end)s::timestamptz IS NULL OR load_start_utc < %(end)s) "
            "AND (%(after_start)s::timestamptz IS NULL OR (load_start_utc, asset_guid) < (%(after_start)s, "
            "%(after_truck)s)) "
            "ORDER BY load_start_utc DESC, asset_guid DESC LIMIT %(limit)s").format(cols=cycle_columns,
                                                                                     cycle=t["cycle"])  # fmt: skip

        self.alerts = sql.SQL(
            "SELECT alert_id, alert_type, asset_guid, site_guid, event_utc, latitude, longitude, detail "
            "FROM {alerts} WHERE (%(site)s::text IS NULL OR site_guid = %(site)s) "
            "AND (%(since)s::timestamptz IS NULL OR event_utc >= %(since)s) "
            "ORDER BY event_utc DESC, alert_id LIMIT %(limit)s").format(alerts=t["alerts"])  # fmt: skip

        self.loader_status = sql.SQL(
            "SELECT loader_asset_guid, site_guid, in_service_asset, in_service_since_utc, waiting_count, waiting, "
            "oldest_wait_since_utc, idle_since_utc, event_utc FROM {status} "
            "WHERE (%(site)s::text IS NULL OR site_guid = %(site)s)").format(status=t["loader_status"])  # fmt: skip

        self.loader_shift = sql.SQL(
            "SELECT loader_asset_guid, sum(loads) AS loads, sum(busy_seconds) AS busy_seconds, "
            "sum(hang_seconds) AS hang_seconds, sum(queue_seconds) AS queue_seconds FROM {hour} "
            "WHERE site_guid = %(site)s AND hour_start_utc >= %(start)s AND hour_start_utc < %(end)s "
            "GROUP BY loader_asset_guid").format(hour=t["loader_hour"])  # fmt: skip

        window = "WHERE (%(site)s::text IS NULL OR site_guid = %(site)s) AND hour_start_utc >= %(start)s " \
                 "AND hour_start_utc < %(end)s "  # fmt: skip
        self.loader_hours = sql.SQL(
            "SELECT loader_asset_guid, site_guid, hour_start_utc, loads, busy_seconds, hang_seconds, queue_seconds, "
            "trucks_served FROM {hour} " + window + "ORDER BY hour_start_utc, loader_asset_guid"
        ).format(hour=t["loader_hour"])
        self.truck_hours = sql.SQL(
            "SELECT asset_guid, site_guid, hour_start_utc, working_seconds, idle_seconds, loaded_distance_m, "
            "empty_distance_m, cycles_closed, queue_seconds FROM {view} " + window
            + "ORDER BY hour_start_utc, asset_guid").format(view=t["truck_hour_kpi"])
        self.site_hours = sql.SQL(
            "SELECT site_guid, hour_start_utc, trucks, loaders, loads, busy_seconds, hang_seconds, queue_seconds, "
            "complete_cycles, mean_cycle_seconds, mean_service_seconds, match_factor FROM {view} " + window
            + "ORDER BY hour_start_utc, site_guid").format(view=t["site_hour_kpi"])
