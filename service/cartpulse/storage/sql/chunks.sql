-- TimescaleDB creates chunks itself; the ingest path calls this on both engines.
create or replace function cartpulse.ensure_partitions(parent regclass, months timestamptz[])
returns void language sql as $$ select $$;

-- Retention by hand or from a scheduler, the same call on both engines: drop the chunks
-- of `parent` whose whole range is older than `retention`, as the RETENTION policy's job does.
create or replace function cartpulse.drop_expired_partitions(parent regclass, retention interval)
returns setof text language sql as $$
    select drop_chunks(parent, older_than => retention)
$$;
