"""``/v0/tokens/`` as Tinybird's SDKs call it: a JSON body of scope objects, and a JWT
when ``expiration_time`` is given (verified here with the admin token, independently of
the server, and then used). Stored tokens stay hashed; JWTs are not stored at all."""

from __future__ import annotations

import hashlib
import secrets
import time

import psycopg
import pytest

import expected
from cartpulse.access import jwt
from support import EVENT, load_events

EVENTS = [{**EVENT, "product_id": f"{c[:2]}{i}", "country": c, "price": 1.0 + i}
          for i, c in enumerate(["France", "Spain", "Italy"] * 4)]
PIPE = {"type": "PIPES:READ", "resource": "top_products"}


@pytest.fixture(scope="module")
def loaded(app, settings, admin_token):
    return load_events(app, settings, admin_token, EVENTS)


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def stored(settings) -> list[tuple]:
    with psycopg.connect(settings.database_url) as conn:
        return conn.execute("select name, token_hash, scopes from cartpulse.tokens order by name").fetchall()


def test_a_json_body_of_scope_objects_makes_a_stored_token(client, auth, settings, loaded):
    name = "obj-" + secrets.token_hex(4)
    r = client.post("/v0/tokens/", json={"name": name, "scopes": [PIPE, {"type": "DATASOURCES:APPEND",
                                                                        "resource": "ecommerce_events"}]},
                    headers=auth)
    assert r.status_code == 200, r.get_json()
    body = r.get_json()
    assert body["scopes"] == [PIPE, {"type": "DATASOURCES:APPEND", "resource": "ecommerce_events"}]
    row = next(row for row in stored(settings) if row[0] == name)
    assert bytes(row[1]) == hashlib.sha256(body["token"].encode()).digest()  # hashed, as ever
    assert row[2] == ["PIPES:READ:top_products", "DATASOURCES:APPEND:ecommerce_events"]
    assert client.get("/v0/pipes/top_products.json", headers=bearer(body["token"])).status_code == 200
    assert client.get("/v0/pipes/events_by_country.json", headers=bearer(body["token"])).status_code == 403
    listed = next(t for t in client.get("/v0/tokens/", headers=auth).get_json()["tokens"] if t["name"] == name)
    assert listed["scopes"] == body["scopes"] and "token" not in listed
    admin = next(t for t in client.get("/v0/tokens", headers=auth).get_json()["tokens"] if t["name"] == "admin token")
    assert admin["scopes"] == [{"type": "ADMIN"}]


@pytest.mark.parametrize("body", [{"scope": "PIPES:READ:top_products"}, {"scope": ["PIPES:READ:top_products"]},
                                  {"scopes": ["PIPES:READ:top_products"]}])
def test_string_scopes_work_in_a_body_too(client, auth, body):
    r = client.post("/v0/tokens", json={"name": "str-" + secrets.token_hex(4), **body}, headers=auth)
    assert r.status_code == 200 and r.get_json()["scopes"] == [PIPE]


def _jwt(client, auth, scopes, exp_in=3600, **body):
    exp = int(time.time() + exp_in)
    return client.post(f"/v0/tokens/?expiration_time={exp}&from=python-sdk", json={"name": "shop-42", "scopes": scopes,
                                                                                    **body}, headers=auth), exp


@pytest.mark.parametrize("fixed, countries", [("France", ["France"]), (["France", "Spain"], ["France", "Spain"])])
def test_expiration_time_mints_a_jwt_that_reads_its_filter_only(client, auth, admin_token, settings, loaded,
                                                                 fixed, countries):
    before = stored(settings)
    r, exp = _jwt(client, auth, [{**PIPE, "fixed_params": {"country": fixed}}])
    assert r.status_code == 200, r.get_json()
    token = r.get_json()["token"]
    claims = jwt.verify(token, admin_token)  # signed with the admin token, HS256
    assert claims.expires == exp and claims.name == "shop-42"
    assert claims.pipes == {"top_products": {"country": ",".join(countries)}}
    assert stored(settings) == before  # a JWT is not stored
    data = client.get("/v0/pipes/top_products.json?country=Italy&limit=100", headers=bearer(token)).get_json()["data"]
    assert expected.same(data, expected.top_products(loaded, limit=100, country=countries))
    assert client.get("/v0/pipes/events_by_country.json", headers=bearer(token)).status_code == 403


@pytest.mark.parametrize("scopes, extra, words", [
    ([{"type": "DATASOURCES:APPEND", "resource": "ecommerce_events"}], {}, "PIPES:READ only"),
    ([{"type": "PIPES:READ", "resource": "nope"}], {}, "'nope' not found"),
    ([{**PIPE, "fixed_params": {"event_type": "purchase"}}], {}, "'event_type'"),
    ([{**PIPE, "fixed_params": {"limit": "many"}}], {}, "'limit'"),
    ([{**PIPE, "fixed_params": {"country": [{"a": 1}]}}], {}, "fixed_params"),
    ([PIPE], {"limits": {"rps": 10}}, "limits"),
    ([{**PIPE, "filter": "country = 'x'"}], {}, "'filter'"),
    ([], {}, "at least one scope"),
])
def test_what_a_jwt_cannot_do_is_a_400_naming_it(client, auth, scopes, extra, words):
    r, _ = _jwt(client, auth, scopes, **extra)
    assert r.status_code == 400 and words in r.get_json()["error"], r.get_json()


@pytest.mark.parametrize("query", ["expiration_time=12", "expiration_time=soon"])
def test_expiration_time_must_be_a_future_epoch(client, auth, query):
    r = client.post(f"/v0/tokens/?{query}", json={"name": "x", "scopes": [PIPE]}, headers=auth)
    assert r.status_code == 400 and r.get_json()["parameter"] == "expiration_time"


def test_fixed_params_on_a_stored_token_are_refused(client, auth):
    r = client.post("/v0/tokens/", json={"name": "f-" + secrets.token_hex(4),
                                         "scopes": [{**PIPE, "fixed_params": {"country": "France"}}]}, headers=auth)
    assert r.status_code == 400 and "expiration_time" in r.get_json()["error"]


def test_only_an_admin_mints(client, auth):
    reader = client.post("/v0/tokens/", json={"name": "r-" + secrets.token_hex(4), "scopes": [PIPE]},
                         headers=auth).get_json()["token"]
    r, _ = _jwt(client, bearer(reader), [PIPE])
    assert r.status_code == 403
    assert client.post("/v0/tokens/", json={"name": "x", "scopes": [PIPE]}, headers=bearer(reader)).status_code == 403
