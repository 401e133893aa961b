{#-
  Splitting a requested time range [start, end) for an endpoint: the whole `width`
  buckets inside it are answered from a rollup, the partial buckets at either end
  from the events table. Either bound may be NULL (open). The pieces never overlap:
    leading edge   [start, first whole bucket)
    whole buckets  [first whole bucket, end of the last whole bucket)
    trailing edge  [end of the last whole bucket, end)
  When the range holds no whole bucket, the leading edge covers it all.
-#}

{% macro range_first(width, start) -%}
  coalesce({{ time_ceil(width, start) }}, '-infinity'::timestamptz)
{%- endmacro %}

{% macro range_last(width, end) -%}
  coalesce({{ time_bin(width, end) }}, 'infinity'::timestamptz)
{%- endmacro %}

{% macro in_whole_buckets(column, width, start, end) -%}
  {{ column }} >= {{ range_first(width, start) }} and {{ column }} < {{ range_last(width, end) }}
{%- endmacro %}

{% macro in_leading_edge(width, start, end) -%}
  event_time >= {{ start }} and event_time < least({{ range_first(width, start) }}, {{ end }})
{%- endmacro %}

{% macro in_trailing_edge(width, start, end) -%}
  event_time >= greatest({{ range_last(width, end) }}, {{ range_first(width, start) }}, {{ start }})
  and event_time < {{ end }}
{%- endmacro %}
