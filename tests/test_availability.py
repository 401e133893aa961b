"""The database being away: 503 with Retry-After (JSON), never a 500; /healthz vs /readyz;
the service starts without the database and recovers by itself."""

from __future__ import annotations

import time
from dataclasses import replace

import pytest

from cartpulse.app import create_app
from support import EVENT, POST, ApiServer, free_port, ndjson, truncate_events


def test_unreachable_database_is_503_json_with_retry_after(built, admin_token):
    nowhere = f"postgresql://postgres@127.0.0.1:{free_port()}/cartpulse?connect_timeout=2"
    app = create_app(replace(built, database_url=nowhere))
    client = app.test_client()
    auth = {"Authorization": f"Bearer {admin_token}"}
    try:
        assert client.get("/healthz").status_code == 200  # the process is up
        for r in (client.post(POST, data=ndjson([EVENT]), headers=auth),
                  client.get("/v0/pipes/top_products.json", headers=auth),
                  client.get("/v0/tokens", headers=auth),
                  client.get("/readyz")):
            assert r.status_code == 503, r.get_data(as_text=True)
            assert r.is_json and "database" in r.get_json()["error"]
            assert int(r.headers["Retry-After"]) >= 1
        assert client.get("/readyz").get_json()["database"] is False
    finally:
        app.extensions["cartpulse"].db.dispose()


def test_readyz_when_ready_and_when_models_are_missing(client, built, tmp_path):
    assert client.get("/readyz").get_json() == {"status": "ready", "database": True, "storage": True, "models": True,
                                                 "replicas": []}
    unbuilt = create_app(replace(built, target_dir=tmp_path / "no-target"))
    try:
        r = unbuilt.test_client().get("/readyz")
    finally:
        unbuilt.extensions["cartpulse"].db.dispose()
    assert r.status_code == 503 and r.get_json()["models"] is False and "cartpulse build" in r.get_json()["error"]


def wait_for(predicate, seconds: float = 60):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(0.3)
    raise AssertionError("condition not met in time")


@pytest.mark.faults
def test_starts_without_the_database_answers_503_and_recovers(own_server, built, admin_token, tmp_path):
    truncate_events(built.database_url)
    own_server.stop("fast")
    server = ApiServer(built, admin_token, tmp_path)
    try:
        server.start()  # waits for /healthz: the server is up while the database is not
        status, body, headers = server.http.request("POST", POST, ndjson([EVENT]), with_headers=True)
        assert status == 503 and "database" in body["error"] and headers["Retry-After"]
        assert server.http.request("GET", "/readyz")[0] == 503
        wait_for(lambda: "database not reachable yet" in server.log())
        assert "retrying in" in server.log()
        own_server.start()
        # No restart of the API: it reconnects by itself.
        wait_for(lambda: server.http.request("POST", POST, ndjson([EVENT]))[0] == 202)
        assert server.http.request("GET", "/readyz")[0] == 200
        wait_for(lambda: "database reachable" in server.log())
    finally:
        server.stop()
