{#- The staging select over an events relation (the events table or its pending twin):
    the stored columns, renamed and cast where needed, plus revenue = price × quantity.
    `extra` lists further columns to pass through (the pending table's ingest_xid). -#}
{% macro stage_events(relation, extra=[]) %}
with source as (
    select * from {{ relation }}
),

final as (
    select
        event_time,
        event_type,
        user_id,
        product_id,
        category,
        price,
        quantity,
        session_id,
        country,
        price * quantity as revenue
        {%- for column in extra %},
        {{ column }}
        {%- endfor %}
    from source
)

select * from final
{% endmacro %}
