"""Scoped tokens: created, listed, rotated and deleted by the admin (API and CLI); each
token does what its scopes say and nothing else; only hashes are stored."""

from __future__ import annotations

import hashlib
import secrets

import psycopg
import pytest

from cartpulse.access.token_scopes import as_object
from cartpulse.cli import main as cli
from support import EVENT, POST, ndjson, truncate_events


@pytest.fixture(autouse=True)
def _empty(settings):
    truncate_events(settings.database_url)


def create(client, auth, *scopes, name=None):
    name = name or f"t-{secrets.token_hex(4)}"
    query = "&".join(f"scope={s}" for s in scopes)
    r = client.post(f"/v0/tokens?name={name}&{query}", headers=auth)
    assert r.status_code == 200, r.get_json()
    assert r.get_json()["name"] == name and r.get_json()["scopes"] == [as_object(s) for s in scopes]
    return name, {"Authorization": f"Bearer {r.get_json()['token']}"}


def status(client, method, path, headers, **kw):
    return getattr(client, method)(path, headers=headers, **kw).status_code


def test_created_token_is_stored_hashed_and_never_listed(client, auth, settings):
    name, headers = create(client, auth, "PIPES:READ:top_products")
    token = headers["Authorization"][7:]
    listed = client.get("/v0/tokens", headers=auth)
    assert listed.status_code == 200
    entry = next(t for t in listed.get_json()["tokens"] if t["name"] == name)
    assert entry["scopes"] == [{"type": "PIPES:READ", "resource": "top_products"}] and "token" not in entry
    assert token not in listed.get_data(as_text=True)
    with psycopg.connect(settings.database_url) as conn:
        stored = conn.execute("select token_hash from cartpulse.tokens where name = %s", [name]).fetchone()[0]
        dump = conn.execute("select string_agg(t::text, ',') from cartpulse.tokens t").fetchone()[0]
    assert bytes(stored) == hashlib.sha256(token.encode()).digest()
    assert token not in dump


def test_append_token_appends_and_cannot_read(client, auth, settings):
    _, append = create(client, auth, "DATASOURCES:APPEND:ecommerce_events")
    assert status(client, "post", POST, append, data=ndjson([EVENT])) == 202
    for path in ("/v0/pipes/top_products.json", "/v0/datasources/ecommerce_events.json",
                 "/v0/datasources/ecommerce_events_quarantine.json", "/v0/tokens"):
        r = client.get(path, headers=append)
        assert r.status_code == 403 and "scope" in r.get_json()["error"], path
    assert client.get("/v0/pipes", headers=append).get_json() == {"pipes": []}


def test_read_token_reads_its_pipe_only(client, auth, settings):
    _, read = create(client, auth, "PIPES:READ:top_products")
    assert status(client, "get", "/v0/pipes/top_products.json", read) == 200
    assert status(client, "get", "/v0/pipes/events_by_country.json", read) == 403
    assert status(client, "post", POST, read, data=ndjson([EVENT])) == 403
    assert status(client, "post", "/v0/tokens?name=x&scope=ADMIN", read) == 403
    assert [p["name"] for p in client.get("/v0/pipes", headers=read).get_json()["pipes"]] == ["top_products"]
    from support import count

    assert count(settings.database_url) == 0


def test_unknown_token_is_401_and_valid_without_scope_is_403(client, auth):
    _, read = create(client, auth, "PIPES:READ:top_products")
    assert status(client, "get", "/v0/tokens", {"Authorization": "Bearer cp_nope"}) == 401
    assert status(client, "get", "/v0/tokens", read) == 403


def test_refresh_rotates_at_once(client, auth):
    name, old = create(client, auth, "PIPES:READ:top_products")
    assert status(client, "get", "/v0/pipes/top_products.json", old) == 200  # now cached
    r = client.post(f"/v0/tokens/{name}/refresh", headers=auth)
    assert r.status_code == 200 and r.get_json()["scopes"] == [{"type": "PIPES:READ", "resource": "top_products"}]
    new = {"Authorization": f"Bearer {r.get_json()['token']}"}
    assert status(client, "get", "/v0/pipes/top_products.json", old) == 401
    assert status(client, "get", "/v0/pipes/top_products.json", new) == 200


def test_delete_takes_effect_at_once(client, auth):
    name, read = create(client, auth, "PIPES:READ:top_products")
    assert status(client, "get", "/v0/pipes/top_products.json", read) == 200
    assert status(client, "delete", f"/v0/tokens/{name}", auth) == 204
    assert status(client, "get", "/v0/pipes/top_products.json", read) == 401
    assert status(client, "delete", f"/v0/tokens/{name}", auth) == 404
    assert status(client, "post", f"/v0/tokens/{name}/refresh", auth) == 404


@pytest.mark.parametrize("query, code, words", [
    ("name=a&scope=PIPES:WRITE:x", 400, "unknown scope"),
    ("name=a&scope=DATASOURCES:APPEND:other", 400, "does not accept"),
    ("name=a&scope=DATASOURCES:READ:nope", 400, "not found"),
    ("name=a&scope=PIPES:READ:x;drop", 400, "unknown scope"),
    ("name=a", 400, "scope"),
    ("scope=ADMIN", 400, "name"),
    ("name=admin token&scope=ADMIN", 400, "admin token"),
])
def test_bad_token_requests(client, auth, query, code, words):
    r = client.post(f"/v0/tokens?{query}", headers=auth)
    assert r.status_code == code and words in r.get_json()["error"], r.get_json()


def test_duplicate_name_is_409_and_admin_token_is_not_managed_here(client, auth):
    name, _ = create(client, auth, "ADMIN")
    assert status(client, "post", f"/v0/tokens?name={name}&scope=ADMIN", auth) == 409
    assert status(client, "delete", "/v0/tokens/admin token", auth) == 400
    assert status(client, "post", "/v0/tokens/admin token/refresh", auth) == 400
    assert status(client, "get", "/v0/tokens", auth) == 200  # the admin token still works


def test_cli_token_commands(client, settings, monkeypatch, capsys):
    monkeypatch.setenv("DATABASE_URL", settings.database_url)
    name = f"cli-{secrets.token_hex(4)}"
    assert cli.main(["token", "create", name, "--scope", "PIPES:READ:top_products"]) == 0
    token = capsys.readouterr().out.strip()
    assert status(client, "get", "/v0/pipes/top_products.json", {"Authorization": f"Bearer {token}"}) == 200
    assert cli.main(["token", "list"]) == 0
    listing = capsys.readouterr().out
    assert f"{name}\tPIPES:READ:top_products" in listing and token not in listing
    assert cli.main(["token", "refresh", name]) == 0
    rotated = capsys.readouterr().out.strip()
    assert rotated != token
    assert cli.main(["token", "create", name, "--scope", "ADMIN"]) == 2  # exists
    assert "exists" in capsys.readouterr().err
    assert cli.main(["token", "delete", name]) == 0
    assert cli.main(["token", "delete", name]) == 2
    client.application.extensions["cartpulse"].tokens.forget()  # another process: its cache
    for old in (token, rotated):
        assert status(client, "get", "/v0/pipes/top_products.json", {"Authorization": f"Bearer {old}"}) == 401
