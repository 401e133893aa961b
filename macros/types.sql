{#- Generated from service/cartpulse/project/types.py by `python -m cartpulse.project.types`:
    do not edit. tests/test_types.py fails when this file and the vocabulary disagree. -#}
{% macro cartpulse_types() -%}
  {{ return({"DateTime": "timestamptz", "Int": "bigint", "Float": "double precision", "String": "text"}) }}
{%- endmacro %}
