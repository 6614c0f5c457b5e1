-- Latest processed point per truck (legacy checkpoint table, doubles as live fleet state),
-- dead letters of rejected records, and alerts. Ids of dead letters and alerts are
-- deterministic hashes, so at-least-once replays do not duplicate rows.
CREATE TABLE IF NOT EXISTS {schema}.{process_info} (
    asset_guid text PRIMARY KEY,
    site_guid text,
    last_event_utc timestamptz,
    latitude double precision,
    longitude double precision,
    work_state_id smallint,
    current_segment text,
    area text,
    area_guid text,
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS {schema}.{dead_letter} (
    dead_letter_id text PRIMARY KEY,
    received_utc timestamptz,
    source text,
    reason text NOT NULL,
    detail text,
    asset_guid text,
    event_utc timestamptz,
    raw text,
    raw_size integer
);

CREATE INDEX IF NOT EXISTS {ix_dead_letter_reason} ON {schema}.{dead_letter} (reason, received_utc);

CREATE TABLE IF NOT EXISTS {schema}.{alerts} (
    alert_id text PRIMARY KEY,
    alert_type text,
    asset_guid text,
    site_guid text,
    event_utc timestamptz,
    latitude double precision,
    longitude double precision,
    detail text,
    created_at timestamptz NOT NULL DEFAULT now()
);
