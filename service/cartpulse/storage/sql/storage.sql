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

-- Take one request from a bucket, refilled at `rate` per second up to `burst`, in one
-- statement: the row lock of ON CONFLICT serializes the workers of every process. The
-- clock is read once (excluded.updated_at); a statement that waited for the lock may
-- carry an earlier time than the bucket's, which then counts as no time elapsed.
-- Returns whether the request is allowed and what is left in the bucket.
create or replace function cartpulse.take_token(p_bucket bytea, p_rate float8, p_burst float8,
                                                out allowed boolean, out tokens float8)
language sql as $$
    insert into cartpulse.rate_limits as b (bucket, tokens, allowed, updated_at)
    values (p_bucket, p_burst - 1, true, clock_timestamp())
    on conflict (bucket) do update set
        allowed = cartpulse.bucket_level(b.tokens, b.updated_at, excluded.updated_at, p_rate, p_burst) >= 1,
        tokens = cartpulse.bucket_level(b.tokens, b.updated_at, excluded.updated_at, p_rate, p_burst)
                 - case when cartpulse.bucket_level(b.tokens, b.updated_at, excluded.updated_at, p_rate, p_burst) >= 1
                        then 1 else 0 end,
        updated_at = greatest(b.updated_at, excluded.updated_at)
    returning allowed, tokens
$$;

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
