"""Hostile input against the HTTP layer (hypothesis): no 500, always the JSON error shape,
and no data beyond what the token may see. Bounded to run in seconds."""

from __future__ import annotations

import json
import string
import time
from urllib.parse import quote, urlencode

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cartpulse.access import jwt
from support import count, ndjson, truncate_events

POST = "/v0/events?name=ecommerce_events"
FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                         HealthCheck.function_scoped_fixture])
HOSTILE = st.sampled_from(["' or '1'='1", "1; drop table raw.ecommerce_events; --", "\x00", "%00", "France\x00",
                           "NaN", "Infinity", "-1", "99999999999999999999", "1e309", "2026-13-45 99:99:99",
                           "$1", "%(country)s", "{}", "[]", "../../etc/passwd", "\ud800", "é" * 3000, "",
                           "2026-10-05", "15 minutes", "Spain", "country", "null"])
TEXT = st.one_of(HOSTILE, st.text(max_size=60))
PARAM_NAMES = st.one_of(st.sampled_from(["limit", "start_date", "end_date", "country", "category", "interval",
                                         "event_type", "token", "q", "format", "offset", "import_id"]),
                        st.text(max_size=20))


def event(country: str, i: int) -> dict:
    return {"event_time": f"2026-10-05 10:{i:02d}:00", "event_type": "purchase", "user_id": f"u{i}",
            "product_id": f"{country}-p{i}", "category": "c", "price": 5 + i, "quantity": 1, "session_id": "s",
            "country": country}


@pytest.fixture(scope="module")
def loaded(app, settings, auth):
    truncate_events(settings.database_url)
    events = [event(c, i) for i in range(5) for c in ("France", "Spain")]
    assert app.test_client().post(POST, data=ndjson(events), headers=auth).status_code == 202
    return events


def query(params) -> str:
    """The query string as raw bytes would send it: lone surrogates become invalid UTF-8."""
    raw = [(k.encode("utf-8", "surrogatepass"), v.encode("utf-8", "surrogatepass")) for k, v in params]
    return "?" + urlencode(raw)


def assert_json_answer(r, allowed: set[int]):
    assert r.status_code in allowed, (r.status_code, r.get_data(as_text=True)[:300])
    if r.status_code >= 400:
        assert r.is_json and isinstance(r.get_json().get("error"), str)


@FUZZ
@given(pipe=st.sampled_from(["top_products", "events_by_country", "total_revenue"]),
       fmt=st.sampled_from(["json", "csv", "ndjson"]),
       params=st.lists(st.tuples(PARAM_NAMES, TEXT), max_size=5))
def test_hostile_pipe_params(client, auth, loaded, pipe, fmt, params):
    r = client.get(f"/v0/pipes/{pipe}.{fmt}" + query(params), headers=auth)
    assert_json_answer(r, {200, 400})


@FUZZ
@given(params=st.lists(st.tuples(PARAM_NAMES, TEXT), max_size=5))
def test_jwt_fixed_to_france_never_sees_spain(client, admin_token, loaded, params):
    token = jwt.sign({"exp": int(time.time()) + 600,
                      "scopes": [{"type": "PIPES:READ", "resource": "top_products",
                                  "fixed_params": {"country": "France"}}]}, admin_token)
    r = client.get("/v0/pipes/top_products.json" + query(params), headers={"Authorization": f"Bearer {token}"})
    assert_json_answer(r, {200, 400})
    if r.status_code == 200:
        assert all(row["product_id"].startswith("France-") for row in r.get_json()["data"])


@FUZZ
@given(path=st.one_of(st.sampled_from(["/v0/pipes/top_products.json", "/v0/tokens", "/v0/events",
                                       "/v0/datasources/ecommerce_events_quarantine.json"]),
                      st.text(alphabet=string.printable, max_size=40).map(lambda s: "/v0/" + quote(s))),
       token=st.one_of(TEXT, st.builds(lambda a, b, c: f"{a}.{b}.{c}", *(st.text(max_size=30),) * 3)))
def test_hostile_tokens_and_paths_never_500_and_never_200(client, loaded, path, token):
    if any(not (32 <= ord(c) < 127) for c in token):  # not a valid HTTP header: the query string only
        attempts = [({}, query([("token", token)]))]
    else:
        attempts = [({"Authorization": f"Bearer {token}"}, ""), ({}, query([("token", token)]))]
    for headers, qs in attempts:
        r = client.get(path + qs, headers=headers)
        assert_json_answer(r, {401, 404, 405})


JSON_VALUES = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), TEXT),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
                           max_leaves=8)
FIELDS = st.sampled_from(["event_time", "event_type", "user_id", "product_id", "category", "price", "quantity",
                          "session_id", "country"])


def body_lines():
    good = event("Fuzzland", 1)
    mutated = st.builds(lambda changes: {**good, **changes}, st.dictionaries(FIELDS, JSON_VALUES, max_size=3))
    line = st.one_of(mutated.map(lambda o: json.dumps(o, allow_nan=True).encode()),
                     JSON_VALUES.map(lambda v: json.dumps(v, allow_nan=True).encode()), st.binary(max_size=60))
    return st.lists(line, min_size=0, max_size=6).map(lambda lines: b"\n".join(lines))


@FUZZ
@given(body=body_lines(), gz=st.booleans())
def test_hostile_bodies_store_exactly_what_is_acknowledged(client, auth, settings, body, gz):
    before = count(settings.database_url), count(settings.database_url, "raw.ecommerce_events_quarantine")
    headers = {**auth, "Content-Encoding": "gzip"} if gz else auth
    r = client.post(POST, data=body, headers=headers)
    assert_json_answer(r, {202, 400, 413})
    after = count(settings.database_url), count(settings.database_url, "raw.ecommerce_events_quarantine")
    if r.status_code == 202:
        answer = r.get_json()
        assert after == (before[0] + answer["successful_rows"], before[1] + answer["quarantined_rows"])
    else:
        assert after == before
