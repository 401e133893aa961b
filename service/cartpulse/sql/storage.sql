-- Storage shared by both engines: schemas, the quarantine and the service's own tables.
-- Every statement is idempotent: `cartpulse init` runs this file at each start.

create schema if not exists raw;
create schema if not exists cartpulse;

-- Rows that failed validation, kept with their original values as text (Tinybird's
-- quarantine columns: c__error_column, c__error, c__import_id, insertion_date).
create table if not exists raw.ecommerce_events_quarantine (
    event_time      text,
    event_type      text,
    user_id         text,
    product_id      text,
    category        text,
    price           text,
    quantity        text,
    session_id      text,
    country         text,
    c__error_column text[] not null,
    c__error        text[] not null,
    c__import_id    text not null,
    c__line         bigint not null,
    c__raw          text,
    insertion_date  timestamptz not null default now()
);
create index if not exists ecommerce_events_quarantine_insertion_idx
    on raw.ecommerce_events_quarantine (insertion_date);

-- API tokens: only a SHA-256 of each token is stored; the token is shown once.
create table if not exists cartpulse.tokens (
    name        text primary key,
    token_hash  bytea not null unique,
    scopes      text[] not null,
    created_at  timestamptz not null default now(),
    updated_at  timestamptz not null default now()
);
