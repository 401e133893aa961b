{#-
  The `endpoint` materialization: a model served as /v0/pipes/<model>.json.

  Its SQL may read typed parameters with {{ param('name') }}; the parameters are
  declared in the model's yml, under config.meta.endpoint.params, each with a `type`
  (DateTime, Int, Float or String: macros/types.sql) and optionally `default`, `description`, `min`,
  `max`, `enum`, `max_length`, `after`. The output columns are the yml's columns, each
  with a `data_type`.

  It builds:
    a SQL function <model>(<params>) returning the columns: the service calls it with
      the request's parameters bound by name (absent ones take their default). It is a
      single STABLE SELECT, so PostgreSQL inlines it and plans with the values (on
      Citus, a PL/pgSQL RETURN QUERY of the same SELECT: docs/citus.md). A derived
      answer (meta.derived_of, ops/derive.py) calls such a twin too, planned once per
      connection (a generic plan): its pieces are switched by tests on the parameters
      alone, which the executor decides before reading anything, while planning the
      union of every piece anew cost more than running it (docs/realtime.md);
    a view <model> = <model>() with every default, for analysts' SQL.
-#}

{% macro endpoint_params() -%}
  {%- set declared = config.get('meta', {}).get('endpoint') -%}
  {{ return(declared.get('params', {}) if declared is mapping else {}) }}
{%- endmacro %}

{% macro param(name) -%}
  {#- The parameter's positional reference ($n) in the function body. -#}
  {%- if not execute -%}{{ return('null') }}{%- endif -%}
  {%- set names = endpoint_params().keys() | list -%}
  {%- if name not in names -%}
    {{ exceptions.raise_compiler_error("param('" ~ name ~ "') is not declared under config.meta.endpoint.params of " ~ model.name) }}
  {%- endif -%}
  {%- if unit_testing() -%}
    {{ return(unit_test_param(name, endpoint_params()[name])) }}
  {%- endif -%}
  ${{ names.index(name) + 1 }}
{%- endmacro %}

{% macro endpoint_sql_type(type) -%}
  {#- The SQL type of a declared type: the vocabulary of service/cartpulse/project/types.py,
      generated into macros/types.sql. -#}
  {%- set types = cartpulse_types() -%}
  {%- if type not in types -%}
    {{ exceptions.raise_compiler_error("unknown parameter type " ~ type ~ " (use " ~ (types.keys() | join(', ')) ~ ")") }}
  {%- endif -%}
  {{ return(types[type]) }}
{%- endmacro %}

{% macro endpoint_default(spec) -%}
  {%- set value = spec.get('default') -%}
  {%- if value is none -%}null
  {%- elif value is number -%}{{ value }}
  {%- elif value is not string and value is iterable -%}array[{% for v in value %}{{ endpoint_literal(v) }}{{ ", " if not loop.last }}{% endfor %}]
  {%- else -%}{{ endpoint_literal(value) }}
  {%- endif -%}::{{ endpoint_sql_type(spec.get('type')) }}
{%- endmacro %}

{#- One value of a default (or a unit test's parameter) as an SQL literal: an Array
    parameter's value is a YAML list of them. -#}
{% macro endpoint_literal(value) -%}
  {%- if value is number -%}{{ value }}
  {%- else -%}{{ dbt.string_literal(value | string | replace("'", "''")) }}
  {%- endif -%}
{%- endmacro %}

{% materialization endpoint, adapter='postgres' %}
  {%- set target = this.incorporate(type='view') -%}
  {%- set args = [] -%}
  {%- for name, spec in endpoint_params().items() -%}
    {%- do args.append(adapter.quote(name) ~ ' ' ~ endpoint_sql_type(spec.get('type')) ~ ' default ' ~ endpoint_default(spec)) -%}
  {%- endfor -%}
  {%- set columns = [] -%}
  {%- for column in model.columns.values() -%}
    {%- if not column.data_type -%}
      {{ exceptions.raise_compiler_error("endpoint " ~ this.identifier ~ ": column " ~ column.name ~ " needs a data_type in its yml") }}
    {%- endif -%}
    {%- do columns.append(adapter.quote(column.name) ~ ' ' ~ column.data_type) -%}
  {%- endfor -%}
  {%- if not columns -%}
    {{ exceptions.raise_compiler_error("endpoint " ~ this.identifier ~ " declares no columns in its yml") }}
  {%- endif -%}

  {{ assert_contract(endpoint_contract_sql(sql)) }}
  {%- set ddl -%}
    drop view if exists {{ target }};
    drop function if exists {{ target }};
    {%- set meta = config.get('meta', {}) -%}
    {%- set derived = meta.get('derived_of') is not none or meta.get('merged_of') is not none -%}
    {%- set generic = derived and cartpulse_engine() != 'citus' -%}
    {%- set fast_paths = meta.get('fast_paths', []) if generic else [] -%}
    {% if cartpulse_engine() == 'citus' or generic -%}
    {#- Citus plans no parameterized SQL function over a distributed table; PL/pgSQL's
        RETURN QUERY it does (docs/citus.md). The SQL function keeps the named
        parameters and calls a PL/pgSQL twin whose parameters are positional only (its
        output columns are variables: a named parameter of the same name would clash).
        The twin is always planned with its call's values: Citus cannot make a generic
        plan of a parameterized query over a distributed table, so a session set to
        plan_cache_mode = force_generic_plan (a pooler's, say) would fail every call.
        A derived answer's twin elsewhere is the opposite: always the generic plan. -#}
    {%- set twin = adapter.quote(this.schema) ~ '.' ~ adapter.quote(this.identifier ~ ('__generic' if generic else '__citus')) -%}
    drop function if exists {{ twin }};
    create function {{ twin }}({% for name, spec in endpoint_params().items() %}{{ endpoint_sql_type(spec.get('type')) }}{{ ", " if not loop.last }}{% endfor %})
    returns table ({{ columns | join(', ') }})
    language plpgsql stable parallel safe
    set plan_cache_mode = {{ 'force_generic_plan' if generic else 'force_custom_plan' }}
    {%- if generic %}
    {#- A generic plan estimates each piece's rows from default selectivities (a range of
        parameters: a few hundred rows where a 7-day range reads 27,000 at 10M events),
        and on those sorts the pieces to group them. Hashing is the faster way at every
        size a rollup has; without sorts to choose, the plan keeps only those it cannot do
        without (ORDER BY). Measured at 10M events: top_products for 7 days 25.2 → 18.6
        ms, the other answers unchanged (docs/realtime.md). #}
    set enable_sort = off
    {%- endif %}
    {%- if derived %}
    {#- A derived answer sums rollup buckets on UTC midnights, so the endpoint's own
        date_trunc must cut in UTC too: what the service's sessions use (docs/realtime.md). #}
    set timezone = 'UTC'
    {%- endif %}
    as $endpoint$
    #variable_conflict use_column
    begin
    {%- for fast in fast_paths %}
    {#- The requests a fast path answers row for row (project/merged_answers.py): a
        statement of its own, so each keeps its generic plan. #}
    if {{ fast.when }} then
    return query select * from {{ adapter.quote(this.schema) }}.{{ adapter.quote(fast.model ~ '__generic') }}({% for name in endpoint_params() %}${{ loop.index }}{{ ", " if not loop.last }}{% endfor %});
    return;
    end if;
    {%- endfor %}
    return query
{{ contract_columns(sql) }}
    ;
    end
    $endpoint$;
    create function {{ target }}({{ args | join(', ') }})
    returns table ({{ columns | join(', ') }})
    language sql stable parallel safe
    as $endpoint$
    select * from {{ twin }}({% for name in endpoint_params() %}${{ loop.index }}{{ ", " if not loop.last }}{% endfor %})
    $endpoint$;
    {%- else -%}
    create function {{ target }}({{ args | join(', ') }})
    returns table ({{ columns | join(', ') }})
    language sql stable parallel safe
    as $endpoint$
{{ contract_columns(sql) }}
    $endpoint$;
    {%- endif %}
    create view {{ target }} as select * from {{ target }}();
  {%- endset -%}
  {#- Replaced only when changed (macros/stable_ddl.sql): a request in flight never finds
      its function dropped under it. The marker is on the view, made with the function. -#}

  {{ run_hooks(pre_hooks, inside_transaction=False) }}
  {{ run_hooks(pre_hooks, inside_transaction=True) }}
  {{ replace_if_changed(target, ddl) }}
  {{ run_hooks(post_hooks, inside_transaction=True) }}
  {% do adapter.commit() %}
  {{ run_hooks(post_hooks, inside_transaction=False) }}
  {{ return({'relations': [target]}) }}
{% endmaterialization %}
