-- TimescaleDB creates chunks itself; the ingest path calls this on both engines.
create or replace function cartpulse.ensure_event_partitions(months timestamptz[])
returns void language sql as $$ select $$;
