"""mode=replace on POST /v0/datasources: delete-then-append in one transaction, exact at once.

Whole and with ``replace_condition``; the endpoints are compared with Python over what is
left, at once, after absorption and after a full refresh; a replace that fails part-way
changes nothing, and a writer committing around it keeps its rows.
"""

from __future__ import annotations

import gzip
from datetime import datetime, timedelta, timezone

import psycopg
import pytest
from test_absorb import absorb, assert_exact, assert_exact_absorbed_and_rebuilt, in_every_state, insert

from cartpulse.cli.event_generator import EventGenerator
from support import EVENT, ndjson, truncate_events

REPLACE = "/v0/datasources"
QUERY = {"name": "ecommerce_events", "mode": "replace", "format": "ndjson"}
START = datetime(2026, 8, 1, tzinfo=timezone.utc)


def replace(client, auth, events, condition: str | None = None, **headers) -> dict:
    query = QUERY if condition is None else {**QUERY, "replace_condition": condition}
    r = client.post(REPLACE, query_string=query, data=ndjson(events), headers={**auth, **headers})
    assert r.status_code == 200, r.get_json()
    return r.get_json()


@pytest.fixture(scope="module")
def history(app, built, auth):
    """Events absorbed by `dbt run`, absorbed by `cartpulse.absorb()`, and pending."""
    truncate_events(built.database_url)
    client = app.test_client()
    gen = EventGenerator(seed=31, products=40, start=START, span=timedelta(days=3))
    return in_every_state(client, auth, built, gen.events(300), gen.events(200), gen.events(100))


def test_replace_with_a_condition(client, auth, history, built):
    gen = EventGenerator(seed=32, products=10, start=START, span=timedelta(days=3))
    new = gen.events(120)
    spain = [e for e in new if e["country"] == "Spain"] or [{**EVENT, "country": "Spain"}]
    answer = replace(client, auth, new, "country = 'Spain'")
    assert answer["mode"] == "replace" and answer["replaced_rows"] == sum(e["country"] == "Spain" for e in history)
    assert answer["successful_rows"] == len(spain) and answer["discarded_rows"] == len(new) - len(spain)
    history[:] = [e for e in history if e["country"] != "Spain"] + spain
    assert_exact(client, auth, history)
    absorb(built.database_url)
    assert_exact(client, auth, history)


def test_a_failed_replace_changes_nothing(client, auth, history):
    body = gzip.compress(ndjson([{**EVENT, "user_id": f"cut-{i}"} for i in range(50)]))
    r = client.post(REPLACE, query_string=QUERY, data=body[:-30], headers={**auth, "Content-Encoding": "gzip"})
    assert r.status_code == 400, r.get_json()
    assert_exact(client, auth, history)  # nothing deleted, nothing added


def test_replace_needs_an_admin_token(client, auth, history):
    token = client.post("/v0/tokens", query_string={"name": "replace-appender",
                                                    "scope": "DATASOURCES:APPEND:ecommerce_events"}, headers=auth)
    appender = {"Authorization": f"Bearer {token.get_json()['token']}"}
    r = client.post(REPLACE, query_string=QUERY, data=ndjson([EVENT]), headers=appender)
    assert r.status_code == 403, r.get_json()
    client.delete("/v0/tokens/replace-appender", headers=auth)
    assert_exact(client, auth, history)


def test_a_whole_replace_keeps_a_writer_committing_around_it(client, auth, history, built):
    """A writer's transaction open before the replace and committed after it: its rows
    were not visible to the replace's delete, so they stay beside the new rows."""
    url = built.database_url
    during = [{**EVENT, "event_time": "2026-08-02 10:00:00", "user_id": f"around-{i}", "country": "Malta"}
              for i in range(3)]
    new = EventGenerator(seed=33, products=20, start=START, span=timedelta(days=2)).events(150)
    with psycopg.connect(url) as writer:
        insert(writer, during)
        answer = replace(client, auth, new)
        writer.commit()
    assert answer["replaced_rows"] == len(history) and answer["successful_rows"] == len(new)
    history[:] = new + during
    assert_exact_absorbed_and_rebuilt(client, auth, built, history)
