{#-
  What analysts may read (README: Analysts). Their logins are members of one group role
  (var `analyst_role`, made by `cartpulse init`; service/cartpulse/storage/roles.py).
  After every run the project's on-run-end hook grants that role, only where it lacks it
  (so an unchanged project changes no catalog row):
    USAGE on the models' schemas and the data sources' schema;
    SELECT on every model's relations (a rollup's table and its `_live` view too) and on
    every data source's table, except its personal columns: a relation with any column
    named as a data source declares personal (`meta: {personal: true}` in
    models/staging/__sources.yml) gets SELECT on its other columns only, wherever the
    column is (a model that passes user_id through cannot leak it). Analysts read those
    columns pseudonymised, in the analyst schema's views (models/analyst/).
  Nothing else: no INSERT, UPDATE, DELETE, no CREATE (the group is given none), no access
  to the `cartpulse` schema (tokens, the pseudonym key) nor to the pending and quarantine
  tables. A server where the role does not exist (CartPulse's user may not create roles)
  skips all this.
-#}

{% macro personal_columns() -%}
  {%- set names = [] -%}
  {%- for node in datasources() -%}
    {%- for column in node.columns.values()
          if (column.get('config', {}).get('meta', {}).get('personal') or column.get('meta', {}).get('personal'))
          and column.name not in names -%}
      {%- do names.append(column.name) -%}
    {%- endfor -%}
  {%- endfor -%}
  {{ return(names) }}
{%- endmacro %}

{#- The relations analysts may read: every model's (as built) and every data source table. -#}
{% macro analyst_relations() -%}
  {%- set relations = [] -%}
  {%- for node in graph.nodes.values() if node.resource_type == 'model' -%}
    {%- set relation = api.Relation.create(schema=node.schema, identifier=node.alias) -%}
    {%- do relations.append(relation) -%}
    {%- if node.config.materialized == 'rollup' -%}
      {%- do relations.append(live(relation)) -%}
    {%- endif -%}
  {%- endfor -%}
  {%- for node in datasources() -%}
    {%- do relations.append(api.Relation.create(schema=node.schema, identifier=node.name)) -%}
  {%- endfor -%}
  {{ return(relations) }}
{%- endmacro %}

{% macro sql_text_array(items) -%}
  array[{%- for item in items -%}{{ dbt.string_literal(item) }}{{ ", " if not loop.last }}{%- endfor -%}]::text[]
{%- endmacro %}

{% macro grant_analysts() %}
{%- if execute %}
{%- set relations = analyst_relations() %}
{%- set schemas = [] %}
{%- for relation in relations if relation.schema not in schemas %}{% do schemas.append(relation.schema) %}{% endfor %}
do $grant_analysts$
declare
    analysts constant text := {{ dbt.string_literal(var('analyst_role')) }};
    personal constant text[] := {{ sql_text_array(personal_columns()) }};
    item text;
    rel regclass;
    col text;
begin
    if not exists (select from pg_roles where rolname = analysts) then
        return;
    end if;
    foreach item in array {{ sql_text_array(schemas) }} loop
        if to_regnamespace(quote_ident(item)) is not null and not has_schema_privilege(analysts, quote_ident(item), 'usage') then
            execute format('grant usage on schema %I to %I', item, analysts);
        end if;
    end loop;
    foreach item in array {{ sql_text_array(relations | map('string') | list) }} loop
        rel := to_regclass(item);
        continue when rel is null;
        if exists (select from pg_attribute where attrelid = rel and attnum > 0 and not attisdropped
                   and attname = any (personal)) then
            if has_table_privilege(analysts, rel, 'select') then
                execute format('revoke select on %s from %I', rel, analysts);
            end if;
            for col in select attname from pg_attribute where attrelid = rel and attnum > 0 and not attisdropped loop
                if col = any (personal) and has_column_privilege(analysts, rel, col, 'select') then
                    execute format('revoke select (%I) on %s from %I', col, rel, analysts);
                elsif col <> all (personal) and not has_column_privilege(analysts, rel, col, 'select') then
                    execute format('grant select (%I) on %s to %I', col, rel, analysts);
                end if;
            end loop;
        elsif not has_table_privilege(analysts, rel, 'select') then
            execute format('grant select on %s to %I', rel, analysts);
        end if;
    end loop;
end
$grant_analysts$;
{%- endif %}
{% endmacro %}

{#- The key pseudonyms are made with: random, made once per database, readable by the
    views' owner only (the `cartpulse` schema is not the analysts'). Without a key, a
    hash of a guessable id (u123) could be reversed by hashing guesses. -#}
{% macro create_pseudonym_key() %}
create schema if not exists cartpulse;
create table if not exists cartpulse.pseudonym_key (
    singleton boolean primary key default true check (singleton),
    key       text not null
);
insert into cartpulse.pseudonym_key (key)
select encode(sha256(convert_to(gen_random_uuid()::text || clock_timestamp()::text || random()::text, 'UTF8')), 'hex')
on conflict (singleton) do nothing;
{% endmacro %}

{#- A stable pseudonym of `column`: the hex SHA-256 of the key and the value; NULL stays NULL. -#}
{% macro pseudonym(column) -%}
  encode(sha256(convert_to((select k.key from cartpulse.pseudonym_key k) || {{ column }}, 'UTF8')), 'hex')
{%- endmacro %}
