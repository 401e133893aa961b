"""Array parameters (``Array(String)`` …): declared in the yml, given as ``a,b`` or as
repeated keys, bound as PostgreSQL arrays, each element checked; a scalar given twice is
refused. Answers are compared with expected.py's computation over the same events."""

from __future__ import annotations

import psycopg
import pytest
from werkzeug.datastructures import MultiDict

import expected
from cartpulse.errors import ApiError
from cartpulse.project import types
from cartpulse.project.params import Param, parse_request
from support import EVENT, load_events

COUNTRIES = ["France", "Germany", "Spain", "日本"]
EVENTS = [{**EVENT, "product_id": f"p{i}", "country": COUNTRIES[i % 4], "price": float(i + 1),
           "quantity": 1 + i % 3, "event_time": f"2026-10-05 1{i % 10}:00:00"} for i in range(24)]


@pytest.fixture(scope="module")
def loaded(app, settings, admin_token):
    return load_events(app, settings, admin_token, EVENTS)


@pytest.mark.parametrize("query", ["country=France,Spain", "country=France&country=Spain",
                                   "country=France,Spain&country=Spain", "country=Spain&country=&country=France"])
@pytest.mark.parametrize("pipe", ["top_products", "events_by_country", "total_revenue"])
def test_both_spellings_bind_the_same_list(client, auth, loaded, pipe, query):
    r = client.get(f"/v0/pipes/{pipe}.json?{query}&limit=1000"
                   if pipe == "top_products" else f"/v0/pipes/{pipe}.json?{query}", headers=auth)
    assert r.status_code == 200, r.get_json()
    extra = {"limit": 1000} if pipe == "top_products" else {}
    want = getattr(expected, pipe)(loaded, country=["France", "Spain"], **extra)
    assert want and expected.same(r.get_json()["data"], want)
    # Two countries are more than one: the filter really is a list, not the last value.
    only_spain = getattr(expected, pipe)(loaded, country="Spain", **extra)
    assert not expected.same(r.get_json()["data"], only_spain)


def test_one_value_still_works_and_a_date_range_combines(client, auth, loaded):
    r = client.get("/v0/pipes/top_products.json?country=日本&start_date=2026-10-05 12:00:00"
                   "&end_date=2026-10-05 18:00:00", headers=auth)
    want = expected.top_products(loaded, country="日本", start_date="2026-10-05 12:00:00",
                                 end_date="2026-10-05 18:00:00")
    assert want and expected.same(r.get_json()["data"], want)


def test_values_are_bound_not_pasted(client, auth, loaded):
    r = client.get("/v0/pipes/events_by_country.json", query_string={"country": "France') or ('1'='1"}, headers=auth)
    assert r.status_code == 200 and r.get_json()["data"] == []


@pytest.mark.parametrize("query, element", [
    ("country=France,,Spain", ""),
    ("country=France&country=" + "x" * 1001, "x" * 100),
])
def test_a_bad_element_is_a_400_naming_the_parameter_and_the_element(client, auth, query, element):
    r = client.get(f"/v0/pipes/top_products.json?{query}", headers=auth)
    assert r.status_code == 400
    body = r.get_json()
    assert body["parameter"] == "country" and body["element"] == element
    assert "'country'" in body["error"] and "element 2" in body["error"]


@pytest.mark.parametrize("query, name", [("limit=3&limit=5", "limit"), ("event_type=purchase&event_type=view",
                                                                       "event_type")])
def test_a_scalar_given_twice_is_a_400(client, auth, query, name):
    pipe = "top_products" if name == "limit" else "events_by_country"
    r = client.get(f"/v0/pipes/{pipe}.json?{query}", headers=auth)
    assert r.status_code == 400 and r.get_json()["parameter"] == name and "2 times" in r.get_json()["error"]


@pytest.mark.parametrize("declared, raws, want", [
    ("Array(Int32)", ["1,2", "-3"], [1, 2, -3]),
    ("Array(Int)", ["9223372036854775807"], [2**63 - 1]),
    ("Array(Float64)", ["1.5,2"], [1.5, 2.0]),
    ("Array(Date)", ["2024-05-01,2024-05-02"], ["2024-05-01", "2024-05-02"]),
    ("Array(DateTime)", ["2024-05-01 10:00:00"], ["2024-05-01 10:00:00+00:00"]),
])
def test_each_element_type_parses(declared, raws, want):
    param = Param.declared("p", {"type": declared})
    got = parse_request((param,), MultiDict([("p", raw) for raw in raws]))["p"]
    assert [str(v) if not isinstance(v, (int, float)) else v for v in got] == want


@pytest.mark.parametrize("declared, raw, words", [
    ("Array(Int32)", "1,2147483648", "Int32"), ("Array(Int)", "1,x", "integer"),
    ("Array(Date)", "2024-05-01,2024-02-30", "YYYY-MM-DD"), ("Array(Float)", "1,inf", "finite"),
])
def test_each_element_is_checked(declared, raw, words):
    with pytest.raises(ApiError) as err:
        parse_request((Param.declared("p", {"type": declared}),), MultiDict([("p", raw)]))
    assert err.value.status == 400 and "element 2" in err.value.message and words in err.value.message


def test_bounds_apply_to_each_element():
    param = Param.declared("n", {"type": "Array(Int)", "min": 1, "max": 5, "enum": None})
    assert parse_request((param,), MultiDict([("n", "1,5")])) == {"n": [1, 5]}
    with pytest.raises(ApiError, match="element 2 .* at most 5"):
        parse_request((param,), MultiDict([("n", "1,6")]))


def test_bound_as_postgresql_arrays_of_the_declared_type(settings):
    """Each array type's SQL type exists, and an array bound with it round-trips."""
    with psycopg.connect(settings.database_url) as conn:
        for t in types.ARRAYS.values():
            assert conn.execute("select %s::regtype::text", [t.sql]).fetchone()[0].endswith("[]")
        got = conn.execute("select %s::bigint[] @> array[2::bigint]", [[1, 2]]).fetchone()[0]
    assert got is True


def test_an_unknown_type_is_refused_at_declaration():
    with pytest.raises(ValueError, match="Array\\(Map\\)"):
        Param.declared("p", {"type": "Array(Map)"})


def test_arrays_are_described_in_openapi_and_the_listing(client, auth):
    spec = client.get("/v0/openapi.json").get_json()
    country = next(p for p in spec["paths"]["/v0/pipes/top_products.json"]["get"]["parameters"]
                   if p["name"] == "country")
    assert country["schema"]["type"] == "array" and country["schema"]["items"]["maxLength"] == 1000
    assert country["explode"] is True
    pipes = {p["name"]: p for p in client.get("/v0/pipes", headers=auth).get_json()["pipes"]}
    assert {p["name"]: p["type"] for p in pipes["events_by_country"]["params"]}["country"] == "Array(String)"


def test_the_dbt_data_test_holds_and_compares_something(built, loaded, settings):
    """data-tests/array_parameters_filter_on_each_element.sql: dbt checks the same
    property on whatever data it is run on (here: four countries, two picked)."""
    from support import dbt_ok

    out = dbt_ok(built, "test", "--select", "array_parameters_filter_on_each_element")
    assert "PASS array_parameters_filter_on_each_element" in out and "ERROR=0" in out
    with psycopg.connect(settings.database_url) as conn:
        picked = conn.execute(f"select count(*) from (select 1 from {settings.dbt_schema}.events_by_country"
                              f"(country => array['France', 'Spain'])) t").fetchone()[0]
    assert picked == 2
