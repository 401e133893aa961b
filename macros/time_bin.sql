{#- The start of the `width`-wide bucket holding `column` (a timestamptz), in UTC.
    TimescaleDB: time_bucket. PostgreSQL: date_bin, with an origin at a UTC midnight so
    that both engines put every event in the same bucket for widths that divide a day. -#}
{% macro time_bin(width, column) %}
  {%- if cartpulse_engine() == 'timescaledb' -%}
    time_bucket({{ width }}::interval, {{ column }})
  {%- else -%}
    date_bin({{ width }}::interval, {{ column }}, timestamptz '2000-01-01 00:00:00+00')
  {%- endif -%}
{% endmacro %}

{#- The first bucket boundary at or after `column`: `column` itself when it is on a
    boundary. NULL stays NULL. -#}
{% macro time_ceil(width, column) %}
  case when {{ time_bin(width, column) }} = {{ column }} then {{ column }}
       else {{ time_bin(width, column) }} + {{ width }}::interval end
{% endmacro %}
