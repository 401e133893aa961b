{#- The measures of the rollups, weighted by the pending row's `sign` (1 for an event, -1
    for a retraction: docs/realtime.md, "Deletes, truncates and replaces"), so that every
    rollup absorbs deletes as it absorbs events; and `events`, the count by which a rollup
    row that reaches 0 is pruned and a live view drops a grain. One place, so that no
    rollup can sum a measure without its sign. -#}

{% macro events_measure() -%}
    sum(sign)::bigint as events
{%- endmacro %}

{% macro revenue_measures() -%}
    sum(sign * revenue::numeric) as revenue,
    {{ events_measure() }}
{%- endmacro %}

{% macro purchase_measures() -%}
    sum(sign * quantity)::bigint as quantity,
    {{ revenue_measures() }}
{%- endmacro %}
