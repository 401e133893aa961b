-- The engine CartPulse runs on in this database, in one place: 'timescaledb' when the
-- timescaledb extension is installed here, else 'postgres'. The service
-- (storage/engine.py) and the dbt models (macros/engine.sql) both ask this function, so
-- they cannot disagree; `cartpulse init` decides whether to install the extension.
create schema if not exists cartpulse;

create or replace function cartpulse.engine() returns text
language sql stable as $$
    select case when exists (select from pg_extension where extname = 'timescaledb')
                then 'timescaledb' else 'postgres' end
$$;
