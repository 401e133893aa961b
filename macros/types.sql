{#- Generated from service/cartpulse/project/types.py by `python -m cartpulse.project.types`:
    do not edit. tests/test_types.py fails when this file and the vocabulary disagree. -#}
{% macro cartpulse_types() -%}
  {{ return({"DateTime": "timestamptz", "Int": "bigint", "Float": "double precision", "String": "text", "Date": "date", "Boolean": "boolean", "Array(String)": "text[]", "Array(Int)": "bigint[]", "Array(Int32)": "integer[]", "Array(Int64)": "bigint[]", "Array(Float)": "double precision[]", "Array(Float64)": "double precision[]", "Array(DateTime)": "timestamptz[]", "Array(Date)": "date[]"}) }}
{%- endmacro %}
