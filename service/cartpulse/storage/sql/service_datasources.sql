-- Tinybird's service data sources, readable through the Query API (serving/sql_query.py)
-- under Tinybird's names and column names: views over CartPulse's own tables. Views run
-- with their owner's privileges, so the Query API's role reads these views and never the
-- tables beneath them.

-- One row per append to a data source (Events API: 'append-hf', bulk import: 'append'),
-- written in the same transaction as the rows it counts (ingest/writer.py, ingest/bulk.py);
-- a failed append is recorded afterwards with result 'error'. Purged with pipe_stats.
create table if not exists cartpulse.datasources_ops_log (
    at              timestamptz not null default now(),
    event_type      text not null,
    datasource      text not null,
    result          text not null check (result in ('ok', 'error')),
    elapsed         double precision not null,
    error           text,
    import_id       text,
    rows            bigint,
    rows_quarantine bigint,
    token_name      text
);
create index if not exists datasources_ops_log_at_idx on cartpulse.datasources_ops_log (at);

create schema if not exists tinybird;

create or replace view tinybird.pipe_stats_rt as
select at as start_datetime,
       pipe as pipe_id,
       pipe as pipe_name,
       duration,
       bytes_read as read_bytes,
       rows_read as read_rows,
       result_rows,
       (status >= 400)::int as error,
       token_name,
       status::int as status_code,
       params as parameters
from cartpulse.pipe_stats;

create or replace view tinybird.datasources_ops_log as
select at as "timestamp",
       event_type,
       datasource as datasource_id,
       datasource as datasource_name,
       result,
       elapsed as elapsed_time,
       error,
       import_id,
       rows,
       rows_quarantine,
       token_name
from cartpulse.datasources_ops_log;
