"""One vocabulary of types (project/types.py): dbt's endpoint macro reads the same table,
answers name types as Tinybird does, OpenAPI schemas and parsers come from it."""

from __future__ import annotations

from datetime import datetime, timezone

import psycopg
import pytest

from cartpulse.config import PROJECT_DIR
from cartpulse.project import types
from cartpulse.serving.render import type_name


def test_the_dbt_macro_is_generated_from_the_vocabulary():
    """macros/types.sql is what `python -m cartpulse.project.types` writes: regenerate it
    after changing the vocabulary."""
    assert (PROJECT_DIR / types.MACRO_PATH).read_text() == types.macro()
    for t in types.DECLARED.values():
        assert f'"{t.name}": "{t.sql}"' in types.macro()


def test_each_declared_type_is_a_postgresql_type(settings):
    """The SQL type of each declared type exists, and its spellings name the same type."""
    with psycopg.connect(settings.database_url) as conn:
        for t in types.RESULT_TYPES:
            canonical = conn.execute("select %s::regtype::text", [t.sql]).fetchone()[0]
            for spelling in t.spellings:
                if spelling in ("_text", "char", "bpchar", "name", "uuid", "character", "character varying"):
                    continue  # different PostgreSQL types that answers write the same way
                assert conn.execute("select %s::regtype::text", [spelling]).fetchone()[0] == canonical, spelling


@pytest.mark.parametrize("sql_type, tinybird", [
    ("bigint", "Int64"), ("double precision", "Float64"), ("text", "String"), ("timestamptz", "DateTime"),
    ("boolean", "UInt8"), ("smallint", "Int16"), ("integer", "Int32"), ("real", "Float32"),
    ("numeric", "Float64"), ("varchar", "String"), ("name", "String"), ("date", "Date"),
    ("timestamp", "DateTime"), ("text[]", "Array(String)"), ("interval", "String"),
])
def test_answers_name_types_as_tinybird(settings, sql_type, tinybird):
    with psycopg.connect(settings.database_url) as conn:
        oid = conn.execute("select %s::regtype::oid::int", [sql_type]).fetchone()[0]
    assert type_name(oid) == tinybird


@pytest.mark.parametrize("data_type, schema", [
    ("bigint", {"type": "integer"}), ("int4", {"type": "integer"}), ("numeric(12,2)", {"type": "number"}),
    ("Double Precision", {"type": "number"}), ("text[]", {"type": "array", "items": {"type": "string"}}),
    ("date", {"type": "string", "format": "date"}), ("bool", {"type": "boolean"}),
])
def test_column_schemas_come_from_the_vocabulary(data_type, schema):
    assert types.of_sql(data_type).schema == schema
    assert types.of_sql("tsvector") is None and types.of_sql(None) is None


@pytest.mark.parametrize("name, text, value", [
    ("DateTime", "2024-05-01", datetime(2024, 5, 1, tzinfo=timezone.utc)),
    ("DateTime", "2024-05-01 10:15:00", datetime(2024, 5, 1, 10, 15, tzinfo=timezone.utc)),
    ("Int", "42", 42), ("Float", "2.5", 2.5), ("String", "France", "France"),
])
def test_parsers_of_query_string_values(name, text, value):
    assert types.DECLARED[name].from_text(text) == value


@pytest.mark.parametrize("name, text, words", [
    ("DateTime", "May 1st", "expected a DateTime"), ("DateTime", "3026-01-01", "expected a DateTime"),
    ("Int", "1.5", "expected an integer"), ("Float", "nan", "finite"), ("String", "a\x00b", "NUL"),
])
def test_parsers_say_why(name, text, words):
    with pytest.raises(types.BadValue, match=words):
        types.DECLARED[name].from_text(text)


def test_an_unknown_type_is_refused_naming_the_vocabulary():
    with pytest.raises(ValueError, match="DateTime, Int, Float, String"):
        types.declared("Int64", "parameter limit")
