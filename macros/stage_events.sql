{#- The staging select over an events relation (a data source's table or its pending
    twin): the data source's declared columns (models/staging/__sources.yml), plus
    revenue = price × quantity. `extra` lists further columns to pass through (the
    pending table's ingest_xid). -#}
{% macro stage_events(relation, extra=[]) %}
with source as (
    select * from {{ relation }}
),

final as (
    select
        {%- for column in datasource_columns(relation) %}
        {{ adapter.quote(column) }},
        {%- endfor %}
        price * quantity as revenue
        {%- for column in extra %},
        {{ column }}
        {%- endfor %}
    from source
)

select * from final
{% endmacro %}
