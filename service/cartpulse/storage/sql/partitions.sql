-- Plain PostgreSQL: monthly partitions of a data source's table (`parent`, partitioned by
-- range of its partition key), created on demand by the ingest path before a batch is
-- written, so an event from 2019 or 2031 never fails for want of one. A partition is
-- named <table>_YYYYmMM, in the table's schema.

create or replace function cartpulse.ensure_partitions(parent regclass, months timestamptz[])
returns void language plpgsql as $$
declare
    m timestamptz;
    nsp text;
    rel text;
    part text;
begin
    select n.nspname, c.relname into nsp, rel
    from pg_class c join pg_namespace n on n.oid = c.relnamespace where c.oid = parent;
    foreach m in array months loop
        m := date_trunc('month', m at time zone 'UTC') at time zone 'UTC';
        part := rel || '_' || to_char(m at time zone 'UTC', 'YYYY"m"MM');
        if to_regclass(format('%I.%I', nsp, part)) is null then
            -- Serialize creators: two batches may bring the same new month at once. The
            -- one that waited may still see the catalog as it was, hence the handler.
            perform pg_advisory_xact_lock(hashtext('cartpulse.partition.' || nsp || '.' || part));
            begin
                -- Create, then attach: ATTACH PARTITION takes only a SHARE UPDATE EXCLUSIVE
                -- lock on the parent, so it neither waits for nor blocks readers and
                -- writers of other months (CREATE ... PARTITION OF would lock them all out).
                execute format('create table %I.%I (like %s including defaults)', nsp, part, parent);
                execute format('alter table %s attach partition %I.%I for values from (%L) to (%L)',
                               parent, nsp, part, m, m + interval '1 month');
            exception when duplicate_table then
                null;  -- another batch created it first
            end;
        end if;
    end loop;
end $$;

-- Retention (RETENTION, see schema.py): drop the monthly partitions of `parent` whose
-- whole month ended more than `retention` ago, as TimescaleDB's retention policy drops
-- whole chunks; returns their names. Rollups keep what they absorbed from those events. A
-- late event for a dropped month recreates its partition (ingest retries once it finds
-- it gone).
create or replace function cartpulse.drop_expired_partitions(parent regclass, retention interval)
returns setof text language plpgsql as $$
declare
    nsp text;
    part text;
begin
    for nsp, part in
        select n.nspname, c.relname from pg_inherits i
        join pg_class c on c.oid = i.inhrelid join pg_namespace n on n.oid = c.relnamespace
        join pg_class p on p.oid = i.inhparent
        where i.inhparent = parent
          and left(c.relname, length(p.relname) + 1) = p.relname || '_'
          and substr(c.relname, length(p.relname) + 2) ~ '^[0-9]{4}m[0-9]{2}$'
          and (to_date(right(c.relname, 7), 'YYYY"m"MM') + interval '1 month') at time zone 'UTC'
              <= now() - retention
        order by c.relname
    loop
        -- The creators' lock: a batch bringing this month waits, then finds it gone.
        perform pg_advisory_xact_lock(hashtext('cartpulse.partition.' || nsp || '.' || part));
        execute format('drop table %I.%I', nsp, part);
        return next part;
    end loop;
end $$;
