{#- The staging select over an events relation (a data source's table or its pending
    twin): the data source's declared columns (models/staging/__sources.yml), plus
    revenue = price × quantity. `extra` lists further columns to pass through (the
    pending table's ingest_xid and sign).

    Columns keep the places they have in the view already built, and columns declared
    since come last: CREATE OR REPLACE VIEW may only add columns at the end, so a column
    added to the data source (schema evolution, storage/ddl.py) reaches the staging view
    in a plain `dbt run`, with no drop of the views built on it. -#}
{% macro stage_events(relation, extra=[]) %}
{%- set wanted = datasource_columns(relation) + ['revenue'] + extra -%}
{%- set order = [] -%}
{%- if execute and not unit_testing() and load_cached_relation(this) is not none -%}
  {%- for column in adapter.get_columns_in_relation(this) if column.name in wanted -%}
    {%- do order.append(column.name) -%}
  {%- endfor -%}
{%- endif -%}
{%- for name in wanted if name not in order -%}
  {%- do order.append(name) -%}
{%- endfor -%}
with source as (
    select * from {{ relation }}
),

final as (
    select
        {%- for column in order %}
        {% if column == 'revenue' %}price * quantity as revenue{% elif column in extra %}{{ column }}{% else %}{{ adapter.quote(column) }}{% endif %}{{ "," if not loop.last }}
        {%- endfor %}
    from source
)

select * from final
{% endmacro %}
