-- A database left by the original Go suite has INTEGER ids and naive TIMESTAMPs (written in the
-- server's time zone by now()). Widen them in place; on our own schema this changes nothing.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM information_schema.columns
               WHERE table_schema = current_schema() AND table_name = 'object'
                 AND column_name = 'id' AND data_type <> 'bigint') THEN
        ALTER TABLE object ALTER COLUMN id TYPE BIGINT;
    END IF;
    IF EXISTS (SELECT 1 FROM information_schema.columns
               WHERE table_schema = current_schema() AND table_name = 'object'
                 AND column_name = 'last_seen' AND data_type = 'timestamp without time zone') THEN
        ALTER TABLE object ALTER COLUMN last_seen TYPE TIMESTAMPTZ;
    END IF;
END
$$;
CREATE INDEX IF NOT EXISTS object_last_seen_idx ON object (last_seen);
