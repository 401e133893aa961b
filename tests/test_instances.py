"""Several API processes behind one address, as operators deploy them: two `cartpulse serve`
instances (gunicorn, 2 workers each, state folders of their own) on one database, behind a
round-robin proxy standing in for the load balancer. Whichever instance answers, the
answers are the same; an idempotency key and a token's rate limit hold across instances."""

from __future__ import annotations

import contextlib
import secrets
import threading
from datetime import timedelta

import psycopg
import pytest

import expected
from cartpulse.access import tokens
from cartpulse.cli.event_generator import EventGenerator
from support import (
    EVENT,
    POST,
    ApiServer,
    RoundRobinProxy,
    count,
    datasources,
    ndjson,
    request_burst,
    wait_http,
)

PIPES = {
    "top_products": expected.top_products,
    "events_by_country": expected.events_by_country,
    "total_revenue": expected.total_revenue,
}
RANGE = {"start_date": "2026-10-02 13:17:45", "end_date": "2026-10-03 08:00:01"}  # partial days at both ends
BODY = ndjson([EVENT, {**EVENT, "quantity": -1}, EVENT])  # 2 stored, 1 quarantined


@contextlib.contextmanager
def instances(settings, token: str, tmp_path_factory, **env):
    """Two servers started side by side, and the proxy in front: (A, B, proxy)."""
    servers = [ApiServer(settings, token, tmp_path_factory.mktemp(f"instance-{name}"), WEB_WORKERS="2", **env)
               for name in "ab"]
    proxy = RoundRobinProxy([s.port for s in servers], token)
    try:
        for server in servers:
            server.start(wait=False)
        for server in servers:
            wait_http(f"{server.http.base}/healthz", server.proc)
        proxy.start()
        yield servers[0], servers[1], proxy
    finally:
        proxy.stop()
        for server in servers:
            server.stop()


@pytest.fixture(scope="module")
def pair(built, admin_token, tmp_path_factory):
    with instances(built, admin_token, tmp_path_factory, RATE_LIMIT_RPS="0") as started:
        yield started


def stored(settings):
    return count(settings.database_url), count(settings.database_url, "raw.ecommerce_events_quarantine")


def test_proxy_alternates_backends(pair):
    """The tests' client opens a connection per request: no keep-alive pins it to one backend."""
    *_, proxy = pair
    before = list(proxy.connections)
    for _ in range(10):
        assert proxy.http.request("GET", "/v0/pipes")[0] == 200
    assert [now - then for now, then in zip(proxy.connections, before)] == [5, 5]


def test_every_instance_gives_the_same_answers(pair, empty_events):
    a, b, proxy = pair
    events = EventGenerator(seed=23, products=200, span=timedelta(days=3)).events(2400)
    before = list(proxy.connections)
    for start in range(0, len(events), 300):  # 8 batches: 4 through each instance
        status, body = proxy.http.post_events(events[start:start + 300])
        assert status == 202 and body["successful_rows"] == 300, body
    assert [now - then for now, then in zip(proxy.connections, before)] == [4, 4]
    assert count(empty_events.database_url) == len(events)

    for pipe, compute in PIPES.items():
        for params in ({}, RANGE):
            want = compute(events, **params)
            assert want, (pipe, params)  # a comparison of empty answers would prove little
            answers = {"A": a.http.pipe(pipe, **params), "B": b.http.pipe(pipe, **params),
                       "proxy 1": proxy.http.pipe(pipe, **params), "proxy 2": proxy.http.pipe(pipe, **params)}
            assert all(data == answers["A"] for data in answers.values()), (pipe, params, answers)
            assert expected.same(answers["A"], want), (pipe, params, answers["A"][:5], want[:5])


def test_idempotency_key_replays_on_the_other_instance(pair, empty_events):
    a, b, _ = pair
    key = f"batch-{secrets.token_hex(4)}"
    first = a.http.request("POST", POST, BODY, {"Idempotency-Key": key}, with_headers=True)
    assert first[0] == 202 and first[2].get("Idempotent-Replayed") is None, first[:2]
    again = b.http.request("POST", POST, BODY, {"Idempotency-Key": key}, with_headers=True)
    assert again[:2] == first[:2] and again[2]["Idempotent-Replayed"] == "true"
    assert stored(empty_events) == (2, 1)

    other = b.http.request("POST", POST, ndjson([EVENT]), {"Idempotency-Key": key})  # same key, other body
    assert other[0] == 422 and "different body" in other[1]["error"], other
    assert a.http.request("POST", POST, BODY, {"Idempotency-Key": key})[1] == first[1]
    assert stored(empty_events) == (2, 1)


def test_concurrent_twins_on_both_instances_store_once(pair, empty_events):
    a, b, _ = pair
    key, answers, barrier = f"twins-{secrets.token_hex(4)}", [], threading.Barrier(8)

    def twin(server):
        barrier.wait()
        status, body, headers = server.http.request("POST", POST, BODY, {"Idempotency-Key": key}, with_headers=True)
        answers.append((status, body, headers.get("Idempotent-Replayed")))

    threads = [threading.Thread(target=twin, args=((a, b)[i % 2],)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert {status for status, _, _ in answers} == {202}, answers
    assert len({body["import_id"] for _, body, _ in answers}) == 1
    assert sorted(str(replayed) for _, _, replayed in answers) == ["None"] + ["true"] * 7
    assert stored(empty_events) == (2, 1)


def test_rate_limit_is_shared_across_instances(built, admin_token, tmp_path_factory):
    """4 clients, 40 requests through the proxy, alternating the instances (2 × 2 worker
    processes): a per-process limit would let through about 4 × burst; the shared one
    lets through burst + rate × elapsed."""
    rate, burst = 1, 10
    name = f"rl-{secrets.token_hex(4)}"
    with psycopg.connect(built.database_url) as conn:  # not over the API: the admin token's bucket may be empty
        token = tokens.create(conn, name, ["ADMIN"], datasources())
    try:
        with instances(built, admin_token, tmp_path_factory, RATE_LIMIT_RPS=str(rate),
                       RATE_LIMIT_BURST=str(burst)) as (_, _, proxy):
            answers, elapsed = request_burst(proxy.http, token, clients=4)
            codes = [(code, headers.get("Retry-After"), headers.get("X-RateLimit-Limit")) for code, headers in answers]
            assert proxy.connections == [20, 20]
    finally:
        with psycopg.connect(built.database_url) as conn:
            tokens.delete(conn, name)
    allowed = sum(1 for code, _, _ in codes if code == 200)
    assert {code for code, _, _ in codes} <= {200, 429}, codes
    assert all(limit == str(burst) for _, _, limit in codes)
    assert all(retry for code, retry, _ in codes if code == 429)
    assert burst <= allowed <= burst + rate * elapsed + 1, (allowed, elapsed)
    assert len(codes) - allowed >= 40 - (burst + rate * elapsed + 1)
