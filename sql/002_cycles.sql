-- Cycle tables: one in-progress cycle per truck (temporary table) and closed cycles (final
-- table, keyed by truck and load start so that replays are idempotent upserts). Both tables
-- have the same columns: every CycleRecord field, epoch-ms fields as timestamptz "..._utc".
CREATE TABLE IF NOT EXISTS {schema}.{cycle_tmp} (
    asset_guid text NOT NULL,
    site_guid text NOT NULL,
    cycle_status text NOT NULL,
    current_segment text NOT NULL,
    loader_asset_guid text,
    dump_region_guid text,
    load_start_utc timestamptz,
    load_end_utc timestamptz,
    dump_start_utc timestamptz,
    dump_end_utc timestamptz,
    cycle_end_utc timestamptz,
    load_seconds double precision,
    load_travel_seconds double precision,
    dump_seconds double precision,
    empty_travel_seconds double precision,
    total_cycle_seconds double precision,
    invalid_reason text,
    outlier_rule text,
    outlier_seconds double precision,
    travel_idle_seconds double precision NOT NULL DEFAULT 0,
    point_count integer NOT NULL DEFAULT 0,
    load_travel_distance_m double precision NOT NULL DEFAULT 0,
    empty_travel_distance_m double precision NOT NULL DEFAULT 0,
    last_event_utc timestamptz,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (asset_guid)
);

CREATE TABLE IF NOT EXISTS {schema}.{cycle} (
    asset_guid text NOT NULL,
    site_guid text NOT NULL,
    cycle_status text NOT NULL,
    current_segment text NOT NULL,
    loader_asset_guid text,
    dump_region_guid text,
    load_start_utc timestamptz NOT NULL,
    load_end_utc timestamptz,
    dump_start_utc timestamptz,
    dump_end_utc timestamptz,
    cycle_end_utc timestamptz,
    load_seconds double precision,
    load_travel_seconds double precision,
    dump_seconds double precision,
    empty_travel_seconds double precision,
    total_cycle_seconds double precision,
    invalid_reason text,
    outlier_rule text,
    outlier_seconds double precision,
    travel_idle_seconds double precision NOT NULL DEFAULT 0,
    point_count integer NOT NULL DEFAULT 0,
    load_travel_distance_m double precision NOT NULL DEFAULT 0,
    empty_travel_distance_m double precision NOT NULL DEFAULT 0,
    last_event_utc timestamptz,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (asset_guid, load_start_utc)
);

CREATE INDEX IF NOT EXISTS {ix_cycle_site_start} ON {schema}.{cycle} (site_guid, load_start_utc);
CREATE INDEX IF NOT EXISTS {ix_cycle_loader_start} ON {schema}.{cycle} (loader_asset_guid, load_start_utc);
CREATE INDEX IF NOT EXISTS {ix_cycle_status} ON {schema}.{cycle} (cycle_status);
