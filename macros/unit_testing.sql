{#-
  What changes when a model is compiled for a dbt unit test (`unit_tests:` in its yml).

  A unit test runs the model's SQL as a plain SELECT over fixture rows that stand for its
  refs, never through its materialization. So the pieces our materializations supply
  must be stood in for here:
    rollup_input()  the CTE the `rollup` materialization wraps around the model: in a
                    unit test, the staging events (given as fixture rows);
    live(ref(...))  a rollup's `_live` view: in a unit test, the rollup's fixture rows
                    stand for the table and its pending rows together;
    param(name)     a positional `$n` of the endpoint's SQL function: in a unit test, a
                    typed literal of the test's value (`overrides: vars: {params: …}`) or
                    else of the declared default. The declarations come from the test's
                    `overrides: macros: {endpoint_params: …}` (a YAML alias of the model's
                    own `params`, so they cannot drift).
  The engine (macros/engine.sql) is fixed with `overrides: macros: {cartpulse_engine: postgres}`.
-#}

{% macro unit_testing() -%}
  {{ return(model is mapping and model.get('resource_type') == 'unit_test') }}
{%- endmacro %}

{% macro unit_test_param(name, spec) -%}
  {%- set given = var('params', {}) -%}
  {%- if name in given -%}
    {{ return('(' ~ endpoint_default({'type': spec.get('type'), 'default': given[name]}) ~ ')') }}
  {%- endif -%}
  {{ return('(' ~ endpoint_default(spec) ~ ')') }}
{%- endmacro %}
