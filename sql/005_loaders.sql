-- The loader stage (docs/cycle-rules.md, Loaders): each closed cycle's queue, every load visit in its
-- loader's order of service, loaders' hourly figures and live status, trucks' hourly figures, and two
-- views over them (trucks' hours with their queue; sites' hours with the match factor).
ALTER TABLE {schema}.{cycle_tmp} ADD COLUMN IF NOT EXISTS queue_seconds double precision;
ALTER TABLE {schema}.{cycle} ADD COLUMN IF NOT EXISTS queue_seconds double precision;

CREATE TABLE IF NOT EXISTS {schema}.{load_visit} (
    asset_guid text NOT NULL,
    load_start_utc timestamptz NOT NULL,
    site_guid text NOT NULL,
    loader_asset_guid text NOT NULL,
    first_stop_utc timestamptz NOT NULL,
    arrival_utc timestamptz NOT NULL,
    service_start_utc timestamptz,
    departure_utc timestamptz NOT NULL,
    open_at_end smallint NOT NULL DEFAULT 0,
    queue_seconds double precision NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (asset_guid, load_start_utc)
);

CREATE INDEX IF NOT EXISTS {ix_load_visit_loader} ON {schema}.{load_visit} (loader_asset_guid, departure_utc);

CREATE TABLE IF NOT EXISTS {schema}.{loader_hour} (
    loader_asset_guid text NOT NULL,
    hour_start_utc timestamptz NOT NULL,
    site_guid text NOT NULL,
    loads integer NOT NULL,
    busy_seconds double precision NOT NULL,
    hang_seconds double precision NOT NULL,
    queue_seconds double precision NOT NULL,
    trucks_served integer NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (loader_asset_guid, hour_start_utc)
);

CREATE INDEX IF NOT EXISTS {ix_loader_hour_site} ON {schema}.{loader_hour} (site_guid, hour_start_utc);

CREATE TABLE IF NOT EXISTS {schema}.{loader_status} (
    loader_asset_guid text PRIMARY KEY,
    site_guid text NOT NULL,
    in_service_asset text,
    in_service_since_utc timestamptz,
    waiting_count integer NOT NULL,
    waiting text NOT NULL,
    oldest_wait_since_utc timestamptz,
    idle_since_utc timestamptz,
    event_utc timestamptz NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS {schema}.{truck_hour} (
    asset_guid text NOT NULL,
    hour_start_utc timestamptz NOT NULL,
    site_guid text NOT NULL,
    working_seconds double precision NOT NULL,
    idle_seconds double precision NOT NULL,
    loaded_distance_m double precision NOT NULL,
    empty_distance_m double precision NOT NULL,
    cycles_closed integer NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (asset_guid, hour_start_utc)
);

CREATE INDEX IF NOT EXISTS {ix_truck_hour_site} ON {schema}.{truck_hour} (site_guid, hour_start_utc);

-- A truck's hour with the queue of the visits whose service started in it.
CREATE OR REPLACE VIEW {schema}.{truck_hour_kpi} AS
SELECT h.asset_guid, h.site_guid, h.hour_start_utc, h.working_seconds, h.idle_seconds, h.loaded_distance_m,
       h.empty_distance_m, h.cycles_closed, COALESCE(q.queue_seconds, 0) AS queue_seconds
FROM {schema}.{truck_hour} h
LEFT JOIN (
    SELECT asset_guid, date_trunc('hour', service_start_utc, 'UTC') AS hour_start_utc,
           sum(queue_seconds) AS queue_seconds
    FROM {schema}.{load_visit}
    WHERE service_start_utc IS NOT NULL
    GROUP BY 1, 2
) q ON q.asset_guid = h.asset_guid AND q.hour_start_utc = h.hour_start_utc;

-- A site's hour: its trucks and loaders at work and the match factor
-- (trucks x mean loader service time) / (loaders x mean truck cycle time), with the mean cycle time of
-- the COMPLETE cycles that ended in the hour.
CREATE OR REPLACE VIEW {schema}.{site_hour_kpi} AS
WITH loaders AS (
    SELECT site_guid, hour_start_utc, count(*) FILTER (WHERE loads > 0) AS loaders, sum(loads) AS loads,
           sum(busy_seconds) AS busy_seconds, sum(hang_seconds) AS hang_seconds, sum(queue_seconds) AS queue_seconds
    FROM {schema}.{loader_hour}
    GROUP BY 1, 2
), trucks AS (
    SELECT site_guid, hour_start_utc, count(*) AS trucks
    FROM {schema}.{truck_hour}
    WHERE working_seconds + idle_seconds > 0
    GROUP BY 1, 2
), cycles AS (
    SELECT site_guid, date_trunc('hour', cycle_end_utc, 'UTC') AS hour_start_utc,
           avg(total_cycle_seconds) AS mean_cycle_seconds, count(*) AS complete_cycles
    FROM {schema}.{cycle}
    WHERE cycle_status = 'COMPLETE'
    GROUP BY 1, 2
)
SELECT l.site_guid, l.hour_start_utc, t.trucks, l.loaders, l.loads, l.busy_seconds, l.hang_seconds, l.queue_seconds,
       c.complete_cycles, c.mean_cycle_seconds,
       CASE WHEN l.loads > 0 THEN l.busy_seconds / l.loads END AS mean_service_seconds,
       CASE WHEN l.loads > 0 AND l.loaders > 0 AND c.mean_cycle_seconds > 0
            THEN (t.trucks * (l.busy_seconds / l.loads)) / (l.loaders * c.mean_cycle_seconds) END AS match_factor
FROM loaders l
LEFT JOIN trucks t ON t.site_guid = l.site_guid AND t.hour_start_utc = l.hour_start_utc
LEFT JOIN cycles c ON c.site_guid = l.site_guid AND c.hour_start_utc = l.hour_start_utc;
