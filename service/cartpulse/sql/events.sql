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
