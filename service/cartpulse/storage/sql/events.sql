-- The events table of the `ecommerce_events` data source. storage.py fills in
-- {partitioning}: `partition by range (event_time)` on plain PostgreSQL (monthly
-- partitions, see partitions.sql); nothing on TimescaleDB, which then makes it a
-- hypertable chunked on event_time.

create table if not exists raw.ecommerce_events (
    event_time  timestamptz not null,
    event_type  text not null,
    user_id     text not null,
    product_id  text not null,
    category    text not null,
    price       double precision not null,
    quantity    bigint not null,
    session_id  text not null,
    country     text not null
) {partitioning};

create index if not exists ecommerce_events_time_product_idx
    on raw.ecommerce_events (event_time, product_id);

-- Events acknowledged but not yet absorbed by every rollup (see docs/realtime.md).
-- Written in the same transaction as the events table; each row carries the id of the
-- transaction that wrote it, so a rollup can tell exactly which rows a snapshot of the
-- database contained. `dbt run` absorbs these rows into the rollups, then deletes them.
create table if not exists raw.ecommerce_events_pending (
    like raw.ecommerce_events,
    ingest_xid  xid8 not null default pg_current_xact_id()
);

-- Rows are deleted in bulk after every refresh; vacuum soon after, whatever the table's
-- size, so that endpoint queries do not scan dead rows.
alter table raw.ecommerce_events_pending
    set (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 10000);
