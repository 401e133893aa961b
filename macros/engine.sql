{#- Which engine the models run on, decided at run time so one project serves both:
    'timescaledb' when the extension is installed in the database, else 'postgres'.
    `--vars '{engine: postgres}'` forces one. -#}
{% macro cartpulse_engine() %}
  {%- if var('engine', none) -%}
    {{ return(var('engine')) }}
  {%- elif not execute -%}
    {{ return('postgres') }}
  {%- endif -%}
  {%- set found = run_query("select 1 from pg_extension where extname = 'timescaledb'") -%}
  {{ return('timescaledb' if found.rows | length > 0 else 'postgres') }}
{% endmacro %}
