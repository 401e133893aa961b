{#- Which engine the models run on, decided at run time so one project serves both:
    the database's own answer, `cartpulse.engine()` ('timescaledb' when the extension
    is installed there, else 'postgres'), which the service asks too
    (service/cartpulse/storage/engine.py). `cartpulse init` creates the function and
    decides whether to install the extension (the CARTPULSE_ENGINE setting); there is no
    knob here, so a plain `dbt run` picks the service's engine. At parse time (no
    database) 'postgres' stands in: nothing is run then. -#}
{% macro cartpulse_engine() %}
  {%- if not execute -%}
    {{ return('postgres') }}
  {%- endif -%}
  {%- set exists = run_query("select to_regprocedure('cartpulse.engine()') is not null") -%}
  {%- if not exists.columns[0].values()[0] -%}
    {{ exceptions.raise_compiler_error("cartpulse.engine() is missing from this database: create the storage first (cartpulse init)") }}
  {%- endif -%}
  {{ return(run_query("select cartpulse.engine()").columns[0].values()[0]) }}
{% endmacro %}
