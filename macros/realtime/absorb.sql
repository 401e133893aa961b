{#-
  Absorbing pending events without dbt: `cartpulse.absorb()`.

  An incremental `dbt run` of a rollup adds the pending rows visible in a new snapshot
  and not in the one it absorbed before, and records the new snapshot (rollup.sql). That
  statement depends only on the model, so the materialization stores it in the rollup's
  `cartpulse.rollup_state` row (`absorb_sql`, with $1 the new snapshot and $2 the previous
  one), and this function runs it: for every rollup at once, with one snapshot, in one
  transaction, then deletes the pending rows every rollup has absorbed. Pending rows
  carry a sign (-1: the retraction of a deleted event), and a rollup row whose count of
  events falls to 0 is removed (`prune_sql`), so an absorbed delete leaves the table as
  a full build would. The service calls
  it every second (ABSORB_SECONDS) and after a large batch, so the pending rows a read
  aggregates are about a second's worth; dbt's incremental run calls it for its one
  rollup, so both paths run the same SQL (docs/realtime.md has the argument for
  exactness, which is unchanged: the same steps, under the same row lock).

  A rollup whose row another transaction holds (a `dbt run` of it in progress) is
  skipped, not waited for: `for update skip locked`. Called with a rollup's name, only
  that rollup is absorbed and the pending rows are left to dbt's on-run-end hook.
-#}

{% macro create_absorb_function() %}
{%- set ddl -%}
create or replace function cartpulse.absorb(only_rollup text default null)
returns bigint
language plpgsql
as $absorb$
declare
  locked text[];
  current_snapshot pg_snapshot;
  r record;
  pending_table text;
  deleted bigint;
  absorbed_events bigint := 0;
begin
  select array_agg(s.rollup order by s.rollup) into locked from (
    select rs.rollup from cartpulse.rollup_state rs
    where rs.absorb_sql is not null and to_regclass(rs.rollup) is not null
      and (only_rollup is null or rs.rollup = only_rollup)
    order by rs.rollup
    for update skip locked
  ) s;
  if locked is null then
    return 0;
  end if;
  -- After the locks: every earlier absorption of these rollups has committed.
  current_snapshot := pg_current_snapshot();
  for r in select rs.rollup, rs.absorbed, rs.absorb_sql, rs.prune_sql from cartpulse.rollup_state rs
           where rs.rollup = any(locked) order by rs.rollup loop
    execute r.absorb_sql using current_snapshot, r.absorbed;
    if r.prune_sql is not null then
      execute r.prune_sql;  -- rows a retraction emptied (events = 0)
    end if;
    update cartpulse.rollup_state set absorbed = current_snapshot, refreshed_at = now()
    where rollup = r.rollup;
  end loop;
  if only_rollup is not null then
    return 0;
  end if;
  for pending_table in select distinct rs.pending from cartpulse.rollup_state rs
                       where rs.pending is not null and to_regclass(rs.pending) is not null loop
    execute format(
      'delete from %s p where not exists (select 1 from cartpulse.rollup_state s'
      ' where not pg_visible_in_snapshot(p.ingest_xid, s.absorbed))', pending_table);
    get diagnostics deleted = row_count;
    absorbed_events := absorbed_events + deleted;
  end loop;
  return absorbed_events;
end
$absorb$
{%- endset -%}
{#- Replaced only when its definition changed (a marker in its comment, as stable_ddl.sql
    does for views): concurrent runs then do not race to replace it. -#}
{%- set marker = ddl_marker(ddl) -%}
do $replace$
begin
  if coalesce(obj_description(to_regprocedure('cartpulse.absorb(text)'), 'pg_proc'), '') <> '{{ marker }}' then
    execute $ddl${{ ddl }}$ddl$;
    execute format('comment on function cartpulse.absorb(text) is %L', '{{ marker }}');
  end if;
end
$replace$;
{% endmacro %}

{#- The statement that absorbs pending rows into ``target`` ($1: the new snapshot, $2:
    the previous one): the aggregate of those rows, added to the rows of the same grain,
    its columns in the contract's order (contracts.sql), as the table was built. -#}
{% macro absorb_statement(target, sql, input_columns, pending, grain, measures) -%}
insert into {{ target }} as t
{{ contract_columns(rollup_wrap(sql, "select " ~ input_columns ~ ", sign from " ~ pending ~ " p"
     ~ " where pg_visible_in_snapshot(p.ingest_xid, $1) and not pg_visible_in_snapshot(p.ingest_xid, $2)")) }}
on conflict ({{ grain | join(', ') }}) do update set
{%- for m in measures %}
  {{ m }} = t.{{ m }} + excluded.{{ m }}{{ "," if not loop.last }}
{%- endfor %}
{%- endmacro %}
