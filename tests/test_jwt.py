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
    token = mint(admin_token, {"events_by_country": {"category": "shoes"}})
    r = get(client, "/v0/pipes/events_by_country.json", token)
    assert r.status_code == 403 and "category" in r.get_json()["error"]


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


# -- hostile spellings and values (issue: never silently wrong) ----------------------------

def _sign_raw(payload_json: str, secret: str) -> str:
    """A JWT whose payload is exactly this JSON text (NaN, Infinity and 1e309 included)."""
    import hashlib
    import hmac

    header = jwt.b64encode(b'{"alg":"HS256","typ":"JWT"}')
    body = jwt.b64encode(payload_json.encode())
    signature = hmac.new(secret.encode(), f"{header}.{body}".encode(), hashlib.sha256).digest()
    return f"{header}.{body}.{jwt.b64encode(signature)}"


ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def _other_trailing_bits(token: str) -> str:
    """The same signature bytes, spelled with different unused trailing bits (a 32-byte
    signature is 43 characters: the last one carries 2 bits that decode to nothing)."""
    last = ALPHABET.index(token[-1])
    return token[:-1] + ALPHABET[last ^ 1]


@pytest.mark.parametrize("mangle", [
    lambda t: t + "!",                        # a stray character, skipped by lenient decoders
    lambda t: t + "==",                       # padding
    lambda t: t.replace(".", "=.", 1),        # padding inside the header
    _other_trailing_bits,                     # non-canonical trailing bits
    lambda t: t + "A",                        # one character too many
    lambda t: t.replace("-", "+").replace("_", "/") if ("-" in t or "_" in t) else t + "+",  # base64, not base64url
])
def test_a_jwt_has_one_spelling(client, admin_token, loaded, mangle):
    token = mint(admin_token, {"top_products": None})
    assert get(client, "/v0/pipes/top_products.json", token).status_code == 200
    variant = mangle(token)
    assert variant != token
    response = get(client, "/v0/pipes/top_products.json", variant)
    assert response.status_code == 401, (variant, response.get_json())


def test_the_rate_limit_bucket_is_the_tokens_identity(admin_token):
    """Two spellings of the same claims (key order) are the same token to the limiter."""
    claims = {"name": "shop-42", "exp": int(time.time() + 600),
              "scopes": [{"type": "PIPES:READ", "resource": "top_products"}]}
    reordered = dict(reversed(list(claims.items())))
    one, two = jwt.sign(claims, admin_token), jwt.sign(reordered, admin_token)
    assert one != two
    assert jwt.verify(one, admin_token).identity == jwt.verify(two, admin_token).identity
    other = jwt.verify(mint(admin_token, {"top_products": {"country": "Spain"}}), admin_token)
    assert other.identity != jwt.verify(one, admin_token).identity


@pytest.mark.parametrize("exp", ["NaN", "Infinity", "-Infinity", "1e309", "1e300"])
def test_a_signed_jwt_with_an_impossible_exp_is_refused_not_a_500(client, admin_token, loaded, exp):
    token = _sign_raw('{"name":"x","exp":%s,"scopes":[{"type":"PIPES:READ","resource":"top_products"}]}' % exp,
                      admin_token)
    response = get(client, "/v0/pipes/top_products.json", token)
    assert response.status_code == 401
    assert "exp" in response.get_json()["error"]


def test_an_empty_fixed_parameter_binds_as_empty(client, admin_token, loaded):
    """Fixed to country='' the token sees the purchases of country '' (none), never all."""
    token = mint(admin_token, {"events_by_country": {"event_type": ""}, "top_products": {"country": ""}})
    for pipe in ("events_by_country", "top_products"):
        response = get(client, f"/v0/pipes/{pipe}.json?country=France&event_type=purchase", token)
        assert response.status_code == 200, response.get_json()
        assert response.get_json()["data"] == [], pipe
