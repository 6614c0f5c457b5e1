-- Reference tables (legacy dx.asset / dx.asset_info). Names in braces are identifiers that
-- job.db.apply_migrations substitutes with psycopg2.sql.Identifier (schema and tables are
-- configurable). Every statement is idempotent.
CREATE TABLE IF NOT EXISTS {schema}.{asset} (
    asset_guid text PRIMARY KEY,
    site_guid text NOT NULL,
    asset_type text NOT NULL,
    asset_name text,
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX IF NOT EXISTS {ix_asset_type_site} ON {schema}.{asset} (asset_type, site_guid);

-- Loader positions.
CREATE TABLE IF NOT EXISTS {schema}.{asset_info} (
    asset_guid text PRIMARY KEY REFERENCES {schema}.{asset} (asset_guid) ON DELETE CASCADE,
    site_guid text,
    latitude double precision,
    longitude double precision,
    updated_at timestamptz NOT NULL DEFAULT now()
);
