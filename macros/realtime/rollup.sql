{#-
  The `rollup` materialization: pre-aggregated state that stays exact in real time.

  A rollup model is one aggregate query over `{{ rollup_input('<staging model>') }}` (the
  events of a data source, with its staging model's columns and `sign`), grouped by the columns listed in
  its `grain` config; every other column is an additive measure, weighted by `sign`:
  `sum(sign)` counts, `sum(sign * x)` sums. `sign` is 1 for an event and -1 for the
  retraction of a deleted one (a pending row written by a delete, docs/realtime.md), so
  a rollup absorbs deletes exactly as it absorbs additions. Every rollup has a column
  `events` (`sum(sign)`): a row whose `events` reaches 0 holds no event and is removed.
  The shop's rollups take their measures from macros/realtime/measures.sql.

  It builds three things (docs/realtime.md gives the argument for exactness):
    <model>          the table of aggregated rows, unique on the grain;
    <model>_live     a view: the table UNION ALL the same aggregate over the pending
                     rows the table has not absorbed yet. Sums by grain over it are
                     exact for every acknowledged event, at any moment;
    a row in cartpulse.rollup_state: the database snapshot the table has absorbed.

  First build or --full-refresh: aggregate all events while holding a SHARE lock on the
  pending table (ingest waits; nothing commits between the read and the bookkeeping; on
  Citus, two-phase commits a worker missed are finished first).
  Incremental run: take a new snapshot, add the pending rows visible in it but not in
  the previous one (an upsert that adds measures), record the new snapshot; one
  transaction, so readers see the table and its snapshot change together. That step is
  `cartpulse.absorb(<rollup>)` (absorb.sql), the statement the materialization stores in
  the rollup's state row, which the service also runs every second for every rollup.
-#}

{% macro rollup_input(staging) -%}
  {#- The events of the data source whose staging model is `staging` (with `sign`). The
      model's refs (its staging model and that model's `_pending` twin) are what the
      materialization reads (`rollup_sources()`), so a rollup names its input once, here.
      A unit test gives the events as fixture rows (macros/unit_testing.sql). -#}
  {%- if unit_testing() -%}
    {{ return("(select *, 1::smallint as sign from " ~ ref(staging) ~ ") as __rollup_input") }}
  {%- endif -%}
  {%- do ref(staging) -%}
  {%- do ref(staging ~ '_pending') -%}
  __rollup_input
{%- endmacro %}

{#- What the rollup being built reads: (its staging model, that model's pending twin, the
    data source's `_pending` table): the model's one ref whose `_pending` twin it also refs
    (rollup_input() made both). -#}
{% macro rollup_sources() -%}
  {%- set names = model.refs | map(attribute='name') | list -%}
  {%- set inputs = [] -%}
  {%- for name in names if name ~ '_pending' in names -%}
    {%- do inputs.append(name) -%}
  {%- endfor -%}
  {%- if inputs | length != 1 -%}
    {{ exceptions.raise_compiler_error(model.name ~ ": a rollup reads one data source, through {{ rollup_input('<its staging model>') }}") }}
  {%- endif -%}
  {%- set staging = graph.nodes.values() | selectattr('name', 'equalto', inputs[0]) | first -%}
  {%- set sources = [] -%}
  {%- for node in datasources() if node.unique_id in staging.depends_on.nodes -%}
    {%- do sources.append(node) -%}
  {%- endfor -%}
  {%- if sources | length != 1 -%}
    {{ exceptions.raise_compiler_error(model.name ~ ": " ~ inputs[0] ~ " reads no data source (meta.datasource), or several") }}
  {%- endif -%}
  {{ return((ref(inputs[0]), ref(inputs[0] ~ '_pending'), pending_relation(sources[0]))) }}
{%- endmacro %}

{#- A rollup's live rows: its `_live` view. Given `bounds` ([lo, hi) of its time column,
    macros/ranges.sql), on Citus the function behind the view is called with them instead:
    a function's rows cannot be filtered inside it by the caller's WHERE, so the view would
    merge the whole rollup with its pending rows for each piece of each read. -#}
{% macro live(relation, bounds=none) -%}
  {%- if unit_testing() -%}{{ return(relation) }}{%- endif -%}
  {%- if bounds is not none and cartpulse_engine() == 'citus' -%}
    {{ return(adapter.quote(relation.schema) ~ '.' ~ adapter.quote(relation.identifier ~ '_live_in')
              ~ '(' ~ bounds[0] ~ ', ' ~ bounds[1] ~ ')') }}
  {%- endif -%}
  {{ relation.incorporate(path={"identifier": relation.identifier ~ "_live"}) }}
{%- endmacro %}

{#- A pending row the rollup `relation` has not absorbed yet: what its live rows add to
    its table. A derived answer reads its table and these pending rows apart, summing
    them once in its own GROUP BY (project/derived_models.py). -#}
{% macro unabsorbed(relation) -%}
  not pg_visible_in_snapshot(ingest_xid, (select s.absorbed from cartpulse.rollup_state s
  where s.rollup = {{ dbt.string_literal(relation.render()) }}))
{%- endmacro %}

{% macro rollup_wrap(sql, input_sql) -%}
with __rollup_input as (
{{ input_sql }}
)
select * from (
{{ sql }}
) as aggregated
{%- endmacro %}

{#- Store the rollup's absorb statement (absorb.sql) in its state row: its measures are
    the table's columns outside the grain, so the table must exist. -#}
{% macro register_absorb(key, target, sql, input_columns, pending, pending_table, grain) -%}
  {%- set measures = [] -%}
  {%- for column in adapter.get_columns_in_relation(target) if column.name not in grain -%}
    {%- do measures.append(column.name) -%}
  {%- endfor -%}
  update cartpulse.rollup_state
  set absorb_sql = $absorb_sql${{ absorb_statement(target, sql, input_columns, pending, grain, measures) }}$absorb_sql$,
      prune_sql = $prune_sql$delete from {{ target }} where events = 0$prune_sql$,
      pending = {{ dbt.string_literal(pending_table.render()) }}
  where rollup = {{ dbt.string_literal(key) }};
{%- endmacro %}

{% materialization rollup, adapter='postgres' %}
  {%- set grain = config.require('grain') -%}
  {%- set target = this.incorporate(type='table') -%}
  {%- set live_view = this.incorporate(path={"identifier": this.identifier ~ "_live"}, type='view') -%}
  {%- set live_rows = adapter.quote(this.schema) ~ '.' ~ adapter.quote(this.identifier ~ '_live_rows') -%}
  {%- set live_in = adapter.quote(this.schema) ~ '.' ~ adapter.quote(this.identifier ~ '_live_in') -%}
  {%- set build = this.incorporate(path={"identifier": this.identifier ~ "__build"}, type='table') -%}
  {%- set events, pending, pending_table = rollup_sources() -%}
  {%- set key = this.render() -%}
  {%- set input_columns = adapter.get_columns_in_relation(events) | map(attribute='name') | join(', ') -%}

  {{ run_hooks(pre_hooks, inside_transaction=False) }}
  {{ run_hooks(pre_hooks, inside_transaction=True) }}

  {#- Serialize refreshes of this rollup; read what it has absorbed (after any other run committed). -#}
  {%- set state = run_query("select absorbed::text from cartpulse.rollup_state where rollup = " ~ dbt.string_literal(key) ~ " for update") -%}
  {%- set existing = load_cached_relation(this) -%}
  {%- set full = existing is none or should_full_refresh() or state.rows | length == 0 -%}
  {%- if not full and 'events' not in (adapter.get_columns_in_relation(target) | map(attribute='name') | list) -%}
    {#- A table built before rollups counted their events (retractions need the count). -#}
    {%- set full = true -%}
  {%- endif -%}

  {%- set full_input = "select " ~ input_columns ~ ", 1::smallint as sign from " ~ events -%}
  {{ assert_contract(rollup_wrap(sql, full_input)) }}

  {% if full %}
    {% call statement('main') -%}
      lock table {{ pending_table }} in share mode;
      {% if cartpulse_engine() == 'citus' -%}
      {#- A batch whose commit a worker missed (it was down) is committed, and in the
          pending table, but its rows on that worker are still only prepared: finish them
          first, or this build would read the events without them (docs/citus.md). -#}
      select recover_prepared_transactions();
      {%- endif %}
      drop table if exists {{ build }};
      {% if contract_enforced() -%}
      create table {{ build }} {{ get_table_columns_and_constraints() }};
      insert into {{ build }} ({{ adapter.dispatch('get_column_names', 'dbt')() }})
      {{ contract_columns(rollup_wrap(sql, full_input)) }};
      {%- else -%}
      create table {{ build }} as
      {{ rollup_wrap(sql, full_input) }};
      {%- endif %}
      create unique index {{ this.identifier }}__grain_new on {{ build }} ({{ grain | join(', ') }});
      {#- The rows a retraction emptied, found without a scan (absorb.sql prunes them). -#}
      create index {{ this.identifier }}__empty_new on {{ build }} (events) where events = 0;
      drop view if exists {{ live_view }};
      drop function if exists {{ live_rows }}();
      drop function if exists {{ live_in }}(timestamptz, timestamptz);
      drop table if exists {{ target }};
      alter table {{ build }} rename to {{ this.identifier }};
      alter index {{ this.schema }}.{{ this.identifier }}__grain_new rename to {{ this.identifier }}__grain;
      alter index {{ this.schema }}.{{ this.identifier }}__empty_new rename to {{ this.identifier }}__empty;
      analyze {{ target }};
      insert into cartpulse.rollup_state (rollup, absorbed, refreshed_at, rebuilt_at)
      values ({{ dbt.string_literal(key) }}, pg_current_snapshot(), now(), now())
      on conflict (rollup) do update
        set absorbed = excluded.absorbed, refreshed_at = excluded.refreshed_at, rebuilt_at = excluded.rebuilt_at;
    {%- endcall %}
    {% call statement('register_absorb') -%}
      {{ register_absorb(key, target, sql, input_columns, pending, pending_table, grain) }}
    {%- endcall %}
  {% else %}
    {% call statement('main') -%}
      {{ register_absorb(key, target, sql, input_columns, pending, pending_table, grain) }}
      select cartpulse.absorb({{ dbt.string_literal(key) }});
    {%- endcall %}
  {% endif %}

  {%- set columns = adapter.get_columns_in_relation(target) -%}
  {%- set citus = cartpulse_engine() == 'citus' -%}
  {#- On Citus, the rows of [$1, $2) of the grain's time column (NULL: open), filtered
      before the merge: live() passes a read's bounds. -#}
  {%- set times = columns | selectattr('name', 'in', grain)
                          | selectattr('data_type', 'equalto', 'timestamp with time zone') | map(attribute='name') | list -%}
  {%- set bounded = (' where ($1 is null or ' ~ times[0] ~ ' >= $1) and ($2 is null or ' ~ times[0] ~ ' < $2)')
                    if citus and times else '' -%}
  {%- set live_sql -%}
    {#- Merged by grain: a retraction still pending and the absorbed row it cancels make
        no row, exactly as a full build has none for a grain whose events are all gone.
        The columns in the table's order (the Citus function below returns its rows). #}
    select
    {%- for column in columns %}
      {% if column.name in grain %}{{ column.name }}{% else %}sum({{ column.name }})::{{ column.data_type }} as {{ column.name }}{% endif %}{{ "," if not loop.last }}
    {%- endfor %}
    from (
    select * from {{ target }}{{ bounded }}
    union all
    select * from (
    {{ contract_columns(rollup_wrap(sql, "select " ~ input_columns ~ ", sign from " ~ pending ~ " p where "
         ~ unabsorbed(this))) }}
    ) as fresh{{ bounded }}
    ) as signed
    group by {{ grain | join(', ') }}
    having sum(events) <> 0
  {%- endset -%}
  {%- set live_ddl -%}
    {% if cartpulse_engine() == 'citus' -%}
    {#- Citus plans a query that mixes these coordinator tables with the distributed
        events (an endpoint's range edges) by reading each table in a subplan of its own,
        so the table, its absorbed snapshot and the pending rows could be read at
        different moments (docs/citus.md). Inside a PL/pgSQL function they are one
        statement that only PostgreSQL plans: one snapshot, as the argument needs. The
        function and view are the coordinator's alone (workers never read them). It runs
        as its owner, as the view would: readers of the view (analysts) need no access
        to rollup_state or the pending rows (docs/analysts.md). -#}
    set local citus.enable_ddl_propagation = off;
    create or replace function {{ live_in }}(timestamptz, timestamptz) returns setof {{ target }}
    language plpgsql stable security definer set search_path = pg_catalog, pg_temp
    set plan_cache_mode = force_custom_plan
    as $live$
    begin
    return query
    {{ live_sql }};
    end
    $live$;
    create or replace view {{ live_view }} as select * from {{ live_in }}(null, null);
    {#- Before the bounds, the function had none. -#}
    drop function if exists {{ live_rows }}()
    {%- else -%}
    create or replace view {{ live_view }} as
    {{ live_sql }}
    {%- endif %}
  {%- endset -%}
  {#- Replaced only when changed (macros/stable_ddl.sql): readers keep reading it meanwhile. -#}
  {{ replace_if_changed(live_view, live_ddl, name='live_view') }}

  {{ run_hooks(post_hooks, inside_transaction=True) }}
  {% do adapter.commit() %}
  {{ run_hooks(post_hooks, inside_transaction=False) }}
  {{ return({'relations': [target]}) }}
{% endmaterialization %}
