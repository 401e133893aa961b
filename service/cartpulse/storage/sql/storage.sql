-- Storage shared by both engines: the service's own tables.
-- Every statement is idempotent: `cartpulse init` runs this file at each start.

create schema if not exists cartpulse;

-- The data sources' tables are made from their declarations (storage/ddl.py). These
-- functions served the one data source there was before: its table is now an argument.
drop function if exists cartpulse.ensure_event_partitions(timestamptz[]);
drop function if exists cartpulse.drop_expired_event_partitions(interval);

-- API tokens: only a SHA-256 of each token is stored; the token is shown once.
create table if not exists cartpulse.tokens (
    name        text primary key,
    token_hash  bytea not null unique,
    scopes      text[] not null,
    created_at  timestamptz not null default now(),
    updated_at  timestamptz not null default now()
);

-- Idempotency keys of the Events API (see idempotency.py): inserted in the same
-- transaction as the batch's rows, so "stored" and "key remembered" commit together.
-- A key is scoped to the token's name and the data source; its first answer is replayed.
create table if not exists cartpulse.idempotency_keys (
    token_name  text not null,
    data_source text not null,
    key         text not null,
    body_sha256 bytea not null,
    status      smallint not null,
    response    jsonb not null,
    created_at  timestamptz not null default now(),
    primary key (token_name, data_source, key)
);
create index if not exists idempotency_keys_created_idx on cartpulse.idempotency_keys (created_at);

-- Rate limits: one token bucket per API token, shared by every worker process. UNLOGGED:
-- no WAL, so taking a token costs no disk flush; after a crash the buckets start full.
create unlogged table if not exists cartpulse.rate_limits (
    bucket     bytea primary key,
    tokens     double precision not null,
    allowed    boolean not null,
    updated_at timestamptz not null
);

-- What a bucket holds at `now`: its level at `since`, refilled at `rate` per second,
-- never above `burst`.
create or replace function cartpulse.bucket_level(level float8, since timestamptz, now timestamptz,
                                                  rate float8, burst float8)
returns float8 language sql immutable as $$
    select least(burst, level + rate * greatest(0, extract(epoch from now - since)))
$$;

-- Take up to `p_want` whole requests from a bucket, refilled at `rate` per second up to
-- `burst` (a new bucket starts full); none when less than one is left. The row lock
-- (`for update`) serializes the workers of every process. The clock is read once, before
-- the lock; a call that waited for it may carry an earlier time than the bucket's, which
-- then counts as no time elapsed (as does a clock set back). Returns how many were granted and what is left.
-- (access/ratelimit.py takes a few at once and spends them without asking again.)
drop function if exists cartpulse.take_token(bytea, float8, float8);
create or replace function cartpulse.take_tokens(p_bucket bytea, p_rate float8, p_burst float8, p_want float8,
                                                 out granted float8, out tokens float8)
language plpgsql as $$
declare
    at constant timestamptz := clock_timestamp();
    level float8;
begin
    insert into cartpulse.rate_limits (bucket, tokens, allowed, updated_at)
    values (p_bucket, p_burst, true, at) on conflict (bucket) do nothing;
    select cartpulse.bucket_level(b.tokens, b.updated_at, at, p_rate, p_burst) into level
    from cartpulse.rate_limits b where b.bucket = p_bucket for update;
    granted := case when level >= 1 then least(p_want, floor(level)) else 0 end;
    tokens := level - granted;
    update cartpulse.rate_limits b
    -- A server clock set back by more than a second (not a call that waited for the lock)
    -- re-bases the bucket on the new time: no refill for the jump, and none withheld after it.
    set tokens = take_tokens.tokens, allowed = granted > 0,
        updated_at = case when at < b.updated_at - interval '1 second' then at else greatest(b.updated_at, at) end
    where b.bucket = p_bucket;
end $$;

-- One row per scheduled refresh (scheduler.py): `dbt run`, `dbt source freshness`, VACUUM
-- of the pending table. Written when a run ends (a crashed run leaves no row, only its
-- log); `skipped` means another process held the refresh lock. Purged after
-- REFRESH_RUNS_RETENTION_DAYS by the scheduler itself.
create table if not exists cartpulse.refresh_runs (
    id                bigint generated always as identity primary key,
    started_at        timestamptz not null,
    finished_at       timestamptz not null,
    status            text not null check (status in ('success', 'failed', 'skipped')),
    duration_seconds  double precision not null,
    freshness         text,   -- worst source status: pass, warn, error, runtime error
    freshness_results jsonb,  -- per source: status and max_loaded_at_time_ago_in_s
    error             text,
    host              text not null,
    pid               integer not null
);
create index if not exists refresh_runs_started_idx on cartpulse.refresh_runs (started_at);

-- One row per pipe request by an authenticated caller (stats.py), like Tinybird's
-- pipe_stats_rt: written in batches by a background thread of each worker, so a crash
-- may lose the last second of rows. `params` holds the query string without the token.
-- Purged after PIPE_STATS_RETENTION_DAYS by the scheduler, a minute's worth at a time.
create table if not exists cartpulse.pipe_stats (
    at          timestamptz not null,
    pipe        text not null,
    params      jsonb not null,
    status      smallint not null,
    duration    double precision not null,
    rows_read   bigint not null,
    bytes_read  bigint not null,
    result_rows bigint not null,
    token_name  text,
    error       text
);
create index if not exists pipe_stats_at_idx on cartpulse.pipe_stats (at);

-- The data generation: grows with every change to what the endpoints answer, so that a
-- worker may keep an answer until it changes (serving/result_cache.py). A statement-level
-- trigger on each data source's table (storage/ddl.py) and dbt's `on-run-end` hook bump
-- it, in the transaction that made the change: a reader sees the new generation exactly
-- when it can see the change. Sixteen rows, not one: each transaction bumps the first
-- row no other holds, so concurrent writers do not queue behind one row lock until
-- their commits. Logged, so replicas and crash recovery keep it.
create table if not exists cartpulse.data_generation (
    slot smallint primary key,
    n    bigint not null
);
insert into cartpulse.data_generation select s, 0 from generate_series(0, 15) s on conflict do nothing;

create or replace function cartpulse.touch_data() returns void language sql as $$
    update cartpulse.data_generation set n = n + 1
    where slot = coalesce((select slot from cartpulse.data_generation order by slot limit 1 for update skip locked),
                          pg_backend_pid() % 16)
$$;

create or replace function cartpulse.touch_data_trigger() returns trigger language plpgsql as $$
begin
    perform cartpulse.touch_data();
    return null;
end $$;

-- What a cached answer is valid for: the generation, the partitions or chunks of the
-- data sources' tables (retention drops them without any trigger firing: their count
-- and the newest one's oid), and the server's start (a restored server starts again).
create or replace function cartpulse.data_version(p_schema text) returns text language sql stable as $$
    select concat_ws('/',
        (select sum(n) from cartpulse.data_generation),
        (select count(*) || '.' || coalesce(max(i.inhrelid)::text, '')
         from pg_inherits i join pg_class p on p.oid = i.inhparent
         where p.relnamespace = to_regnamespace(p_schema)),
        pg_postmaster_start_time())
$$;

-- Jobs of the Data Sources API (Tinybird's /v0/jobs): deletes, truncates and replaces,
-- one row each, written in the same transaction as the change it describes, so any
-- worker answers /v0/jobs/<id> and a job reads "done" exactly when its change is there.
create table if not exists cartpulse.jobs (
    id               text primary key,
    kind             text not null,
    datasource       text not null,
    status           text not null,
    delete_condition text,
    rows_affected    bigint,
    error            text,
    token_name       text,
    created_at       timestamptz not null default now(),
    started_at       timestamptz,
    updated_at       timestamptz not null default now()
);
create index if not exists jobs_created_idx on cartpulse.jobs (created_at);
