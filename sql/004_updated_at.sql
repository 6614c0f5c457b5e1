-- updated_at is the time of the last write of a row, whoever writes it: the job's upserts set it,
-- and this trigger sets it on every other UPDATE too (reference loaders, manual fixes).
CREATE OR REPLACE FUNCTION {schema}.asset_cycle_touch_updated_at() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at := now();
    RETURN NEW;
END
$$;

DROP TRIGGER IF EXISTS asset_cycle_touch_updated_at ON {schema}.{asset};
CREATE TRIGGER asset_cycle_touch_updated_at BEFORE UPDATE ON {schema}.{asset}
    FOR EACH ROW EXECUTE FUNCTION {schema}.asset_cycle_touch_updated_at();
DROP TRIGGER IF EXISTS asset_cycle_touch_updated_at ON {schema}.{asset_info};
CREATE TRIGGER asset_cycle_touch_updated_at BEFORE UPDATE ON {schema}.{asset_info}
    FOR EACH ROW EXECUTE FUNCTION {schema}.asset_cycle_touch_updated_at();
DROP TRIGGER IF EXISTS asset_cycle_touch_updated_at ON {schema}.{cycle_tmp};
CREATE TRIGGER asset_cycle_touch_updated_at BEFORE UPDATE ON {schema}.{cycle_tmp}
    FOR EACH ROW EXECUTE FUNCTION {schema}.asset_cycle_touch_updated_at();
DROP TRIGGER IF EXISTS asset_cycle_touch_updated_at ON {schema}.{cycle};
CREATE TRIGGER asset_cycle_touch_updated_at BEFORE UPDATE ON {schema}.{cycle}
    FOR EACH ROW EXECUTE FUNCTION {schema}.asset_cycle_touch_updated_at();
DROP TRIGGER IF EXISTS asset_cycle_touch_updated_at ON {schema}.{process_info};
CREATE TRIGGER asset_cycle_touch_updated_at BEFORE UPDATE ON {schema}.{process_info}
    FOR EACH ROW EXECUTE FUNCTION {schema}.asset_cycle_touch_updated_at();
