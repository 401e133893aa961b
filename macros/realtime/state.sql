{#- Bookkeeping of the rollups, run by the project's on-run-start and on-run-end hooks. -#}

{% macro create_rollup_state() %}
create schema if not exists cartpulse;
create table if not exists cartpulse.rollup_state (
    rollup        text primary key,        -- the rollup table, schema-qualified
    absorbed      pg_snapshot not null,    -- pending rows visible in it are in the table
    refreshed_at  timestamptz not null,
    rebuilt_at    timestamptz not null
);
-- What cartpulse.absorb() runs for the rollup (macros/realtime/absorb.sql), and the
-- pending table it reads.
alter table cartpulse.rollup_state
  add column if not exists absorb_sql text,
  add column if not exists prune_sql text,
  add column if not exists pending text;
{{ create_absorb_function() }}
{% endmacro %}

{% macro clean_pending() %}
{#- Forget rollups whose table is gone, then delete, from the pending table of every data
    source (macros/datasources.sql), the rows every remaining rollup has absorbed. A
    rollup built later starts from the events table, not from pending rows, so nothing
    it needs is lost. -#}
delete from cartpulse.rollup_state where to_regclass(rollup) is null;
{%- for node in datasources() %}
delete from {{ pending_relation(node) }} p
where not exists (
    select 1 from cartpulse.rollup_state s
    where not pg_visible_in_snapshot(p.ingest_xid, s.absorbed)
);
{%- endfor %}
{% endmacro %}

{% macro touch_data() %}
{#- Tell the service's workers that what the endpoints answer may have changed (a model's
    SQL, a full refresh, a seed): each keeps answers until the data generation moves
    (service/cartpulse/serving/result_cache.py). The function is the service's
    (storage.sql); a database the service never set up has no cached answers to forget. -#}
do $$
begin
    if to_regprocedure('cartpulse.touch_data()') is not null then
        perform cartpulse.touch_data();
    end if;
end $$
{% endmacro %}
