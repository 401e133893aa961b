-- The engine CartPulse runs on in this database, in one place: 'timescaledb' when the
-- timescaledb extension is installed here, 'citus' when the citus extension is (a Citus
-- coordinator's database: the operator made the cluster, docs/citus.md), else 'postgres'. The service
-- (storage/engine.py) and the dbt models (macros/engine.sql) both ask this function, so
-- they cannot disagree; `cartpulse init` decides whether to install the extension.
create schema if not exists cartpulse;

create or replace function cartpulse.engine() returns text
language sql stable as $$
    select case when exists (select from pg_extension where extname = 'timescaledb') then 'timescaledb'
                when exists (select from pg_extension where extname = 'citus') then 'citus'
                else 'postgres' end
$$;
