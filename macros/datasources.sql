{#- The data sources: source tables whose yml declares `meta: {datasource: …}`
    (service/cartpulse/project/datasources.py reads the same declarations to create their
    tables; each has a `_pending` twin and a `_quarantine`). -#}

{% macro datasources() -%}
  {%- if not execute -%}
    {{ return([]) }}  {#- parsing: the graph is not there yet -#}
  {%- endif -%}
  {%- set found = [] -%}
  {%- for node in graph.sources.values() if node.meta.get('datasource') is not none -%}
    {%- do found.append(node) -%}
  {%- endfor -%}
  {{ return(found) }}
{%- endmacro %}

{#- The declared column names of the data source whose table, or `_pending` twin, is
    `relation`, in their declared order. -#}
{% macro datasource_columns(relation) -%}
  {%- if not execute -%}
    {{ return([]) }}
  {%- endif -%}
  {%- for node in datasources() if node.schema == relation.schema
        and relation.identifier in [node.name, node.name ~ '_pending'] -%}
    {{ return(node.columns.keys() | list) }}
  {%- endfor -%}
  {{ exceptions.raise_compiler_error(relation ~ " is neither a declared data source (meta.datasource) nor its _pending twin") }}
{%- endmacro %}

{#- The `_pending` twin of a data source's graph node, as a relation. -#}
{% macro pending_relation(node) -%}
  {{ return(api.Relation.create(database=node.database, schema=node.schema, identifier=node.name ~ '_pending',
                                type='table')) }}
{%- endmacro %}
