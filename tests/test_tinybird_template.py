"""Tinybird's template language: parsed and checked, translated (static) or rendered per
request, and each answer run on PostgreSQL and compared with Python over generated rows."""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone

import psycopg
import pytest
from cartpulse.errors import ApiError
from cartpulse.project import tinybird_template as tt
from cartpulse.project.params import Param, parse_request
from cartpulse.project.tinybird_render import render
from cartpulse.project.tinybird_static import NotStatic, static
from cartpulse.serving.tinybird_sql import bound, postgres

UTC = timezone.utc
COLUMNS = frozenset({"ts", "country", "kind", "amount"})
ROWS = [(datetime(2024, 5, 1, tzinfo=UTC) + timedelta(minutes=random.Random(i).randrange(60 * 24 * 5)),
         random.Random(i + 1).choice(["DE", "US", "FR", "ES"]), random.Random(i + 2).choice(["view", "purchase"]),
         random.Random(i + 3).randrange(1, 50)) for i in range(400)]

PIPE = """%
SELECT country, count() AS events, sum(amount) AS total FROM events WHERE 1 = 1
{% if defined(country) %} AND country IN {{Array(country, 'String', description="Only these countries")}} {% end %}
{% if defined(since) %} and ts >= {{DateTime(since)}} {% end %}
{% if not defined(kind) %}{{ error('kind is required', 400) }}{% end %}
AND kind = {{String(kind, required=True)}} AND amount >= {{Int32(least, 1)}}
GROUP BY country ORDER BY events DESC, country LIMIT {{Int32(limit, 10)}}
"""


@pytest.fixture(scope="module")
def events(database_url):
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("drop table if exists tb_template_events")
        conn.execute("create table tb_template_events (ts timestamptz, country text, kind text, amount bigint)")
        with conn.cursor().copy("copy tb_template_events from stdin") as copy:
            for row in ROWS:
                copy.write_row(row)
    yield database_url


def run(url: str, sql: str, binds: dict) -> list[tuple]:
    with psycopg.connect(url) as conn:
        return conn.execute(sql.replace("FROM events", "FROM tb_template_events"), binds).fetchall()


def expected(country=None, since=None, kind="view", least=1, limit=10):
    counts: dict[str, list] = {}
    for ts, c, k, amount in ROWS:
        if (country is None or c in country) and (since is None or ts >= since) and k == kind and amount >= least:
            counts.setdefault(c, [0, 0])
            counts[c][0] += 1
            counts[c][1] += amount
    return sorted(((c, n, t) for c, (n, t) in counts.items()), key=lambda r: (-r[1], r[0]))[:limit]


def test_parameters_are_declared_with_their_types_defaults_and_descriptions():
    declared = tt.params(tt.parse(PIPE))
    assert {n: p.type for n, p in declared.items()} == {"country": "Array(String)", "since": "DateTime", "kind": "String",
                                                       "least": "Int", "limit": "Int"}
    assert declared["limit"].default == 10 and (declared["limit"].min, declared["limit"].max) == (-(2**31), 2**31 - 1)
    assert declared["country"].description == "Only these countries" and declared["kind"].required


@pytest.mark.parametrize("given", [{"kind": "view"}, {"kind": "purchase", "country": ["DE", "FR"]},
                                   {"kind": "view", "since": datetime(2024, 5, 3, tzinfo=UTC), "least": 20, "limit": 2}])
def test_static_and_rendered_routes_answer_as_python(events, given):
    tree = tt.parse(PIPE)
    translated = static(tree)
    declared = {name: Param.declared(name, p.spec()) for name, p in translated.params.items()}
    values = parse_request(tuple(declared.values()), {k: _text(v) for k, v in given.items()})
    # the static route: one SQL, every parameter bound (null when absent, else its default)
    by_name = {p.name: values.get(p.name, p.default) for p in declared.values()}
    sql = postgres(translated.sql, {m: translated.params[n].type for m, n in translated.markers.items()})
    binds = {m: by_name[n] for m, n in translated.markers.items()}
    assert run(events, sql, binds) == expected(**given)
    # the per-request route gives the same answer
    assert run(events, *bound(render(tree, values, translated.params, COLUMNS))) == expected(**given)


def _text(value):
    if isinstance(value, list):
        return ",".join(value)
    return value.strftime("%Y-%m-%d %H:%M:%S") if isinstance(value, datetime) else str(value)


def test_a_missing_required_parameter_is_a_400_with_the_error_message():
    translated = static(tt.parse(PIPE))
    declared = tuple(Param.declared(n, p.spec()) for n, p in translated.params.items())
    with pytest.raises(ApiError) as err:
        parse_request(declared, {})
    assert (err.value.status, err.value.message) == (400, "kind is required")
    with pytest.raises(tt.TemplateError, match="kind is required"):
        render(tt.parse(PIPE), {}, translated.params, COLUMNS)


def test_columns_and_symbols_come_only_from_declared_columns(events):
    tree = tt.parse("%SELECT {{columns(cols, 'country')}}, count() AS n FROM events GROUP BY {{column(group_by, 'country')}}"
                    " ORDER BY {{symbol(group_by)}}")
    sql, binds = bound(render(tree, {"cols": "kind", "group_by": "kind"}, {}, COLUMNS))
    assert run(events, sql, binds) == sorted(
        (k, sum(1 for r in ROWS if r[2] == k)) for k in {r[2] for r in ROWS})
    with pytest.raises(tt.TemplateError, match="not a column"):
        render(tree, {"cols": "kind; drop table x", "group_by": "kind"}, {}, COLUMNS)
    with pytest.raises(NotStatic):
        static(tree)


def test_sql_and_split_to_array_and_date_differences(events):
    tree = tt.parse("%{% set c = split_to_array(String(cs, 'DE,US')) %}"
                    "SELECT count() AS n FROM events WHERE {{sql_and(country__in=c, amount__gte=Int32(low))}}"
                    "{% if day_diff(DateTime(a, '2024-05-01 00:00:00'), DateTime(b, '2024-05-03 12:00:00')) == 2 %}"
                    " AND kind = 'view'{% end %}")
    declared = tt.params(tree)
    sql, binds = bound(render(tree, {"low": 10}, declared, COLUMNS))
    assert run(events, sql, binds) == [(sum(1 for r in ROWS if r[1] in ("DE", "US") and r[3] >= 10 and r[2] == "view"),)]
    assert render(tt.parse("%SELECT {{Int32(x)}}"), {}, {}, COLUMNS).sql.strip() == "SELECT __tbp_1"
    hours = tt.parse("%{% if date_diff_in_hours(DateTime(a), DateTime(b)) > 24 %}{{error('at most a day', 400)}}{% end %}x")
    assert render(hours, {"a": "2024-05-01 00:00:00", "b": "2024-05-01 20:00:00"}, tt.params(hours), COLUMNS).sql == "x"
    with pytest.raises(tt.TemplateError, match="at most a day"):
        render(hours, {"a": "2024-05-01 00:00:00", "b": "2024-05-03 00:00:00"}, tt.params(hours), COLUMNS)
    for unit, seconds in (("seconds", 1), ("minutes", 60), ("days", 86400)):
        t = tt.parse(f"%{{% if date_diff_in_{unit}(DateTime(a), DateTime(b)) == 3 %}}yes{{% else %}}no{{% end %}}")
        end = (datetime(2024, 5, 1) + timedelta(seconds=3 * seconds)).strftime("%Y-%m-%d %H:%M:%S")
        assert render(t, {"a": "2024-05-01 00:00:00", "b": end}, tt.params(t), COLUMNS).sql == "yes"


def test_date_diff_options_are_refused_not_ignored():
    tree = tt.parse("%{% if day_diff(DateTime(a), DateTime(b), '%Y%m%d') > 1 %}x{% end %}")
    with pytest.raises(tt.TemplateError) as err:
        render(tree, {"a": "2024-05-01 00:00:00", "b": "2024-05-03 00:00:00"}, tt.params(tree), COLUMNS)
    assert err.value.construct == "day_diff"


@pytest.mark.parametrize("template, construct", [
    ("%{{ sql_unescape(String(x), '%') }}", "sql_unescape"),
    ("%{{ enum_with_default(x, 'a') }}", "enum_with_default"),
    ("%{{ __import__('os') }}", "__import__"),
    ("%{{ x.__class__ }}", "Attribute"),
    ("%{{ [c for c in x] }}", "ListComp"),
    ("%{% for c in x %}{% end %}", "for"),
    ("%{% import os %}", "import"),
    ("%{{ String(x, format='%d') }}", "format"),
    ("%{{ Array(x, 'UUID') }}", "Array(, 'UUID')"),
    ("%{% if defined(x) %} AND a = {{String(x)}}", "if"),
])
def test_refused_constructs_are_named(template, construct):
    with pytest.raises(tt.TemplateError) as err:
        tt.params(tt.parse(template))
    assert err.value.construct == construct, str(err.value)


def test_shape_changing_templates_are_not_static():
    for template in ("%SELECT 1 {% if defined(x) %} , {{String(x)}} {% end %}",
                     "%SELECT 1 WHERE 1 {% if defined(x) %} AND a = {{String(x)}} {% else %} AND b {% end %}",
                     "%SELECT 1 WHERE 1 {% if Int32(x, 1) > 2 %} AND b {% end %}"):
        with pytest.raises(NotStatic):
            static(tt.parse(template))


def test_a_predicate_whose_else_is_an_error_is_static_and_requires_its_parameters():
    """`{% if defined(a) and defined(b) %} AND … {% else %}{{ error() }}{% end %}` (as
    Tinybird's starter kits write a required range): both required, with the message,
    their defaults dropped, and the predicate applies always."""
    out = static(tt.parse("%SELECT 1 FROM events WHERE 1 {% if defined(a) and defined(b) %} AND ts BETWEEN "
                          "{{Date(a, '2020-01-01', required=True)}} AND {{Date(b, '2020-01-02')}} {% else %}"
                          " {{ error('Must supply a & b') }} {% end %}"))
    assert {n: (p.required, p.required_message, p.default) for n, p in out.params.items()} == {
        "a": (True, "Must supply a & b", None), "b": (True, "Must supply a & b", None)}
    assert " ".join(out.sql.split()) == "SELECT 1 FROM events WHERE 1 AND (ts BETWEEN __tbp_1 AND __tbp_2)"
