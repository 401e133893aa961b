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
