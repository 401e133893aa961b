-- Plain PostgreSQL: monthly partitions, created on demand by the ingest path before a
-- batch is written, so an event from 2019 or 2031 never fails for want of one.

create or replace function cartpulse.ensure_event_partitions(months timestamptz[])
returns void language plpgsql as $$
declare
    m timestamptz;
    part text;
begin
    foreach m in array months loop
        m := date_trunc('month', m at time zone 'UTC') at time zone 'UTC';
        part := 'ecommerce_events_' || to_char(m at time zone 'UTC', 'YYYY"m"MM');
        if to_regclass('raw.' || part) is null then
            -- Serialize creators: two batches may bring the same new month at once.
            perform pg_advisory_xact_lock(hashtext('cartpulse.partition.' || part));
            if to_regclass('raw.' || part) is null then
                execute format(
                    'create table raw.%I partition of raw.ecommerce_events for values from (%L) to (%L)',
                    part, m, m + interval '1 month');
            end if;
        end if;
    end loop;
end $$;
