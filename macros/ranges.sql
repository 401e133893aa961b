{#-
  Splitting a requested time range [start, end) for an endpoint: the whole `width`
  buckets inside it are answered from a rollup, the partial buckets at either end
  from the events table. Either bound may be NULL (open). The pieces never overlap:
    leading edge   [start, first whole bucket)
    whole buckets  [first whole bucket, end of the last whole bucket)
    trailing edge  [end of the last whole bucket, end)
  When the range holds no whole bucket, the leading edge covers it all.

  An edge can itself be split again, with a finer rollup: the whole `fine` buckets of
  the range that are not inside its whole `coarse` buckets form a leading and a trailing
  band (leading_band, trailing_band), read from the finer rollup, and only the
  partial `fine` buckets at the very ends (the edges above, with `fine` as their width)
  from the events table. Day + hour + events:
    [start, first hour) [first hour, first day) [first day, last day) [last day, last hour) [last hour, end)
  Each band is the edge rule applied to the range of whole `fine` buckets instead of
  [start, end), so the same argument shows that the five pieces never overlap and
  cover [start, end) exactly, whichever bounds are NULL or however short the range.

  Each piece ends with the same test on the parameters alone (is the piece empty?): it
  changes no answer, but PostgreSQL evaluates such a condition once, before the piece
  runs, so an empty piece reads nothing even where the rows it filters come from a
  function (Citus's live rows, docs/citus.md) or a generic plan.

  The rollup pieces are given as bounds, [lo, hi) of the rollup's time column
  (whole_buckets, leading_band, trailing_band), so that a model passes the same bounds
  to `within` (its WHERE) and to `live` (on Citus, the live rows' function, which
  cannot see the WHERE: macros/realtime/rollup.sql).
-#}

{% macro range_first(width, start) -%}
  coalesce({{ time_ceil(width, start) }}, '-infinity'::timestamptz)
{%- endmacro %}

{% macro range_last(width, end) -%}
  coalesce({{ time_bin(width, end) }}, 'infinity'::timestamptz)
{%- endmacro %}

{% macro whole_buckets(width, start, end) -%}
  {{ return([range_first(width, start), range_last(width, end)]) }}
{%- endmacro %}

{% macro leading_band(fine, coarse, start, end) -%}
  {{ return([range_first(fine, start), 'least(' ~ range_first(coarse, start) ~ ', ' ~ range_last(fine, end) ~ ')']) }}
{%- endmacro %}

{% macro trailing_band(fine, coarse, start, end) -%}
  {{ return(['greatest(' ~ range_last(coarse, end) ~ ', ' ~ range_first(coarse, start) ~ ', '
             ~ range_first(fine, start) ~ ')', range_last(fine, end)]) }}
{%- endmacro %}

{#- The rows of `column` in [lo, hi), ending with the test on the bounds alone. -#}
{% macro within(column, bounds) -%}
  {{ column }} >= {{ bounds[0] }} and {{ column }} < {{ bounds[1] }}
  and {{ bounds[0] }} < {{ bounds[1] }}
{%- endmacro %}

{#- The events of [start, end) before its first whole `width` bucket (after its last:
    in_trailing_edge), by their time `column`. -#}
{% macro in_leading_edge(width, start, end, column='event_time') -%}
  {{ column }} >= {{ start }} and {{ column }} < least({{ range_first(width, start) }}, {{ end }})
  and {{ start }} < least({{ range_first(width, start) }}, {{ end }})
{%- endmacro %}

{% macro in_trailing_edge(width, start, end, column='event_time') -%}
  {{ column }} >= greatest({{ range_last(width, end) }}, {{ range_first(width, start) }}, {{ start }})
  and {{ column }} < {{ end }}
  and greatest({{ range_last(width, end) }}, {{ range_first(width, start) }}, {{ start }}) < {{ end }}
{%- endmacro %}
