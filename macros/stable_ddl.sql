{#-
  Views and functions that readers use are replaced only when their definition changed.

  The scheduler runs `dbt run` every minute while endpoints are being read. Replacing a
  view takes an ACCESS EXCLUSIVE lock on it, so every refresh would stall the readers of
  that view, and dbt's default view materialization (build, rename, then drop the old
  view CASCADE) also dropped the `_live` views that depend on the staging view. Readers
  then deadlocked with the swap, or found a `_live` view missing until its rollup model
  re-created it later in the same run. So each definition carries a marker (an MD5 of its
  DDL) as its comment, and an unchanged definition is left alone: no lock, nothing
  replayed on the replicas.
-#}

{% macro ddl_marker(ddl) -%}
  {{ return('cartpulse:' ~ local_md5(ddl)) }}
{%- endmacro %}

{% macro has_ddl_marker(relation, marker) -%}
  {%- if not execute -%}{{ return(false) }}{%- endif -%}
  {%- set found = run_query("select obj_description(to_regclass(" ~ dbt.string_literal(relation.render()) ~ "), 'pg_class')") -%}
  {{ return(found.rows | length > 0 and found.columns[0].values()[0] == marker) }}
{%- endmacro %}

{#- Run ``ddl`` (which creates or replaces ``relation``, a view) as statement ``name``,
    then mark the view with the DDL's marker, unless the view already carries it (and
    ``force`` is false). ``prelude`` runs first, outside the marker. The model's 'main'
    statement must run in every case, so an unchanged 'main' runs a no-op. -#}
{% macro replace_if_changed(relation, ddl, name='main', prelude='', force=false) -%}
  {%- set marker = ddl_marker(ddl) -%}
  {%- if not force and has_ddl_marker(relation, marker) -%}
    {%- if name == 'main' -%}
      {% call statement('main') -%} select 'unchanged' {%- endcall %}
    {%- endif -%}
  {%- else -%}
    {% call statement(name) -%}
      {{ prelude }}
      {{ ddl.strip().rstrip(';') }};
      comment on view {{ relation }} is {{ dbt.string_literal(marker) }};
    {%- endcall %}
  {%- endif -%}
{%- endmacro %}

{#- The `stable_view` materialization (the staging models): CREATE OR REPLACE VIEW, so
    that the views built on it stay, and only when the definition changed. A change
    that CREATE OR REPLACE cannot make (a column removed or retyped) needs
    `dbt run --full-refresh`, which drops the view with its dependents first; the rollup
    models re-create their `_live` views in the same run. -#}
{% materialization stable_view, adapter='postgres' %}
  {%- set target = this.incorporate(type='view') -%}
  {{ assert_contract(sql) }}
  {%- if config.get('meta', {}).get('reads_as_owner') and cartpulse_engine() == 'citus' -%}
    {%- set ddl = owner_rows_view(target, sql) -%}
  {%- else -%}
    {%- set ddl = "create or replace view " ~ target ~ " as\n" ~ sql -%}
  {%- endif -%}
  {{ run_hooks(pre_hooks, inside_transaction=False) }}
  {{ run_hooks(pre_hooks, inside_transaction=True) }}
  {{ replace_if_changed(target, ddl, force=should_full_refresh(),
                        prelude=("drop view if exists " ~ target ~ " cascade;") if should_full_refresh() else "") }}
  {{ run_hooks(post_hooks, inside_transaction=True) }}
  {% do adapter.commit() %}
  {{ run_hooks(post_hooks, inside_transaction=False) }}
  {{ return({'relations': [target]}) }}
{% endmaterialization %}

{#- On Citus, a view whose model reads columns its readers may not (`meta: {reads_as_owner:
    true}`: the analysts' pseudonyms of user_id and session_id). PostgreSQL reads a view's
    tables with its owner's privileges, but Citus reads a distributed table's shards over
    connections made as the reader, whom the workers refuse those columns. So the view
    reads a PL/pgSQL function that runs as its owner (SECURITY DEFINER): the shards are
    then read as the owner, as PostgreSQL would. Its price: the function returns every
    row, so a reader's WHERE no longer reaches the shards (docs/citus.md). -#}
{% macro owner_rows_view(target, sql) -%}
  {%- set rows = adapter.quote(target.schema) ~ '.' ~ adapter.quote(target.identifier ~ '__rows') -%}
  {%- set columns = [] -%}
  {%- for column in model.columns.values() -%}
    {%- do columns.append(adapter.quote(column.name) ~ ' ' ~ column.data_type) -%}
  {%- endfor -%}
  set local citus.enable_ddl_propagation = off;
  drop function if exists {{ rows }}() cascade;
  create function {{ rows }}() returns table ({{ columns | join(', ') }})
  language plpgsql stable security definer set search_path = pg_catalog, pg_temp
  as $rows$
  #variable_conflict use_column
  begin
  return query
{{ sql }}
  ;
  end
  $rows$;
  create or replace view {{ target }} as select * from {{ rows }}()
{%- endmacro %}
