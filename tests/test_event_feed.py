"""`cartpulse generate`: the same seed gives the same events, every one valid for the events
API; with --url they are POSTed to a running server and stored."""

from __future__ import annotations

import json

from cartpulse.cli.main import main
from cartpulse.ingest.rows import validate
from support import count, datasources, truncate_events


def generated(capsys, *args) -> str:
    assert main(["generate", *args]) == 0
    return capsys.readouterr().out


def test_same_seed_same_events(capsys, tmp_path):
    first = generated(capsys, "--events", "1500", "--seed", "7")
    assert first == generated(capsys, "--events", "1500", "--seed", "7")
    assert first != generated(capsys, "--events", "1500", "--seed", "8")
    assert generated(capsys, "--events", "1500", "--seed", "7", "--output", str(tmp_path / "e.ndjson")) == ""
    assert (tmp_path / "e.ndjson").read_text() == first
    lines = first.splitlines()
    assert len(lines) == 1500
    events = [json.loads(line) for line in lines]
    source = datasources()["ecommerce_events"]
    for event in events:
        validate(event, source)  # raises on any invalid field
    assert {e["event_type"] for e in events} == {"view", "add_to_cart", "remove_from_cart", "purchase"}


def test_rate_paces_the_output(capsys):
    import time

    started = time.monotonic()
    generated(capsys, "--events", "20", "--rate", "40")
    assert time.monotonic() - started >= 0.45


def test_post_to_a_running_server(live_server, built):
    truncate_events(built.database_url)
    assert main(["generate", "--events", "2500", "--seed", "5", "--url", live_server.base,
                 "--token", live_server.token]) == 0
    assert count(built.database_url) == 2500
    assert count(built.database_url, "raw.ecommerce_events_pending") == 2500
