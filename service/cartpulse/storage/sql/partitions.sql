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
            -- Serialize creators: two batches may bring the same new month at once. The
            -- one that waited may still see the catalog as it was, hence the handler.
            perform pg_advisory_xact_lock(hashtext('cartpulse.partition.' || part));
            begin
                -- Create, then attach: ATTACH PARTITION takes only a SHARE UPDATE EXCLUSIVE
                -- lock on the parent, so it neither waits for nor blocks readers and
                -- writers of other months (CREATE ... PARTITION OF would lock them all out).
                execute format('create table raw.%I (like raw.ecommerce_events including defaults)', part);
                execute format(
                    'alter table raw.ecommerce_events attach partition raw.%I for values from (%L) to (%L)',
                    part, m, m + interval '1 month');
            exception when duplicate_table then
                null;  -- another batch created it first
            end;
        end if;
    end loop;
end $$;

-- Retention (RETENTION, see storage.py): drop the monthly partitions whose whole month
-- ended more than `retention` ago, as TimescaleDB's retention policy drops whole chunks;
-- returns their names. Rollups keep what they absorbed from those events. A late event
-- for a dropped month recreates its partition (ingest retries once it finds it gone).
create or replace function cartpulse.drop_expired_event_partitions(retention interval)
returns setof text language plpgsql as $$
declare
    part text;
begin
    for part in
        select c.relname from pg_inherits i join pg_class c on c.oid = i.inhrelid
        where i.inhparent = 'raw.ecommerce_events'::regclass
          and c.relname ~ '^ecommerce_events_[0-9]{4}m[0-9]{2}$'
          and (to_date(right(c.relname, 7), 'YYYY"m"MM') + interval '1 month') at time zone 'UTC'
              <= now() - retention
        order by c.relname
    loop
        -- The creators' lock: a batch bringing this month waits, then finds it gone.
        perform pg_advisory_xact_lock(hashtext('cartpulse.partition.' || part));
        execute format('drop table raw.%I', part);
        return next part;
    end loop;
end $$;
