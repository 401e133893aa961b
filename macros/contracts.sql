{#-
  Enforced contracts (`contract: {enforced: true}`, set per folder in dbt_project.yml) for
  our own materializations. dbt checks a contract only where the materialization asks it
  to, as its `table` and `view` do: before building, `get_assert_columns_equivalent`
  runs the model's SQL with `where false limit 0` and compares the names and types of its
  columns with the yml's `columns` (each with a `data_type`); any difference fails the
  model with dbt's contract error, and nothing is replaced. Then the built relation takes
  the declared columns, in the declared order (`get_select_subquery`), so a model cannot
  swap two columns of one type unnoticed.
-#}

{% macro contract_enforced() -%}
  {{ return(config.get('contract') is not none and config.get('contract').enforced) }}
{%- endmacro %}

{#- Fail the model unless `sql` yields the declared columns. -#}
{% macro assert_contract(sql) -%}
  {%- if contract_enforced() -%}
    {%- do get_assert_columns_equivalent(sql) -%}
  {%- endif -%}
{%- endmacro %}

{#- `sql` with the declared columns in their declared order (as is, without a contract). -#}
{% macro contract_columns(sql) -%}
  {%- if contract_enforced() -%}
    {{ return(get_select_subquery(sql)) }}
  {%- endif -%}
  {{ return(sql) }}
{%- endmacro %}

{#- An endpoint's SQL reads its parameters as `$n`, which only its function binds: for the
    check, each becomes a NULL of its declared type (the last first, so `$1` never eats
    the start of `$12`). -#}
{% macro endpoint_contract_sql(sql) -%}
  {%- set names = endpoint_params().keys() | list -%}
  {%- set checked = namespace(sql=sql) -%}
  {%- for name in names | reverse -%}
    {%- set n = names | length - loop.index0 -%}
    {%- set checked.sql = checked.sql | replace('$' ~ n, '(null::' ~ endpoint_sql_type(endpoint_params()[name].get('type')) ~ ')') -%}
  {%- endfor -%}
  {{ return(checked.sql) }}
{%- endmacro %}

{#- The declared columns as a query, for the check (dbt's own asks the same, but warns on
    every `numeric` without a scale: the rollups' revenue is such a column on purpose, an
    exact sum of any size, and the scheduler would log that warning every minute). -#}
{% macro postgres__get_empty_schema_sql(columns) -%}
  {%- set missing = [] -%}
  {%- for name, column in columns.items() if not column.get('data_type') -%}
    {%- do missing.append(name) -%}
  {%- endfor -%}
  {%- if missing -%}
    {{ exceptions.column_type_missing(column_names=missing) }}
  {%- endif -%}
  select
  {%- for name, column in columns.items() %}
    cast(null as {{ column['data_type'] }}) as {{ adapter.quote(name) if column.get('quote') else name }}{{ "," if not loop.last }}
  {%- endfor %}
{%- endmacro %}
