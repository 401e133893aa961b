"""Signed JWT read tokens: HS256 with the admin token as secret, exp, scopes with
fixed_params. A token fixed to country=France only ever sees France."""

from __future__ import annotations

import json
import time

import pytest

import expected
from cartpulse.access import jwt
from support import ndjson, truncate_events

POST = "/v0/events?name=ecommerce_events"


def event(i: int, country: str) -> dict:
    return {"event_time": f"2026-10-05 10:{i % 60:02d}:00", "event_type": "purchase", "user_id": f"u{i}",
            "product_id": f"{country[:2]}{i % 4}", "category": "c", "price": 10 + i, "quantity": 1 + i % 3,
            "session_id": f"s{i}", "country": country}


EVENTS = [event(i, c) for i in range(12) for c in ("France", "Spain", "Italy")]


@pytest.fixture(scope="module")
def loaded(app, settings, auth):
    truncate_events(settings.database_url)
    assert app.test_client().post(POST, data=ndjson(EVENTS), headers=auth).status_code == 202


def mint(secret: str, pipes: dict, exp_in: float = 600, **extra) -> str:
    scopes = [{"type": "PIPES:READ", "resource": p, **({"fixed_params": f} if f else {})} for p, f in pipes.items()]
    return jwt.sign({"name": "shop-42", "exp": int(time.time() + exp_in), "scopes": scopes, **extra}, secret)


def get(client, path, token):
    return client.get(path, headers={"Authorization": f"Bearer {token}"})


@pytest.mark.parametrize("query", ["", "?country=Spain", "?country=", "?country=Italy&country=Spain",
                                   "?limit=100&country=Spain' or '1'='1", "?COUNTRY=Spain"])
def test_fixed_country_only_ever_sees_france(client, loaded, admin_token, query):
    token = mint(admin_token, {"top_products": {"country": "France"}})
    r = get(client, f"/v0/pipes/top_products.json{query}", token)
    assert r.status_code == 200, r.get_json()
    data = r.get_json()["data"]
    limit = 100 if "limit=100" in query else 10
    assert expected.same(data, expected.top_products(EVENTS, limit=limit, country="France"))
    assert data and all(row["product_id"].startswith("Fr") for row in data)


def test_token_in_query_string_works_too(client, loaded, admin_token):
    token = mint(admin_token, {"top_products": {"country": "Spain"}})
    data = client.get(f"/v0/pipes/top_products.json?token={token}&country=France").get_json()["data"]
    assert expected.same(data, expected.top_products(EVENTS, country="Spain"))


def test_jwt_reads_its_pipes_only_and_cannot_append(client, loaded, admin_token, settings):
    token = mint(admin_token, {"top_products": None})
    assert get(client, "/v0/pipes/top_products.json", token).status_code == 200
    assert get(client, "/v0/pipes/events_by_country.json", token).status_code == 403
    assert client.post(POST, data=ndjson(EVENTS[:1]), headers={"Authorization": f"Bearer {token}"}).status_code == 403
    assert get(client, "/v0/tokens", token).status_code == 403
    assert [p["name"] for p in get(client, "/v0/pipes", token).get_json()["pipes"]] == ["top_products"]


def test_fixed_param_the_pipe_does_not_take_is_refused(client, loaded, admin_token):
    token = mint(admin_token, {"events_by_country": {"country": "France"}})
    r = get(client, "/v0/pipes/events_by_country.json", token)
    assert r.status_code == 403 and "country" in r.get_json()["error"]


def _tamper(token: str) -> str:
    header, payload, signature = token.split(".")
    claims = json.loads(jwt._b64decode(payload))
    claims["scopes"][0]["fixed_params"]["country"] = "Spain"
    return f"{header}.{jwt.b64encode(json.dumps(claims).encode())}.{signature}"


@pytest.mark.parametrize("make, words", [
    (lambda s: mint(s, {"top_products": None}, exp_in=-5), "expired"),
    (lambda s: mint("not-the-admin-token", {"top_products": None}), "signature"),
    (lambda s: _tamper(mint(s, {"top_products": {"country": "France"}})), "signature"),
    (lambda s: jwt.b64encode(b'{"alg":"none","typ":"JWT"}') + "."
     + jwt.b64encode(json.dumps({"exp": time.time() + 60, "scopes": []}).encode()) + ".", "HS256"),
    (lambda s: jwt.sign({"scopes": [{"type": "PIPES:READ", "resource": "top_products"}]}, s), "exp"),
    (lambda s: "a.b.c", "invalid token"),
])
def test_bad_jwts_are_401(client, loaded, admin_token, make, words):
    r = get(client, "/v0/pipes/top_products.json", make(admin_token))
    assert r.status_code == 401 and words in r.get_json()["error"], r.get_json()


def test_a_jwt_cannot_claim_admin(client, loaded, admin_token):
    token = jwt.sign({"exp": time.time() + 60, "scopes": [{"type": "ADMIN", "resource": "x"}], "ADMIN": True},
                     admin_token)
    assert get(client, "/v0/tokens", token).status_code == 403
    assert get(client, "/v0/pipes/top_products.json", token).status_code == 403
