"""`cartpulse generate`: the same seed gives the same events, every one valid for the events
API; with --url they are POSTed to a running server and stored."""

from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

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
    assert capsys.readouterr().err == ""  # nothing said when stdout carries the events
    main(["generate", "--events", "1500", "--seed", "7", "--output", str(tmp_path / "e.ndjson")])
    assert f"wrote 1500 events to {tmp_path / 'e.ndjson'}" in capsys.readouterr().err
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


def test_post_to_a_running_server(live_server, built, capsys):
    truncate_events(built.database_url)
    assert main(["generate", "--events", "2500", "--seed", "5", "--url", live_server.base,
                 "--token", live_server.token]) == 0
    summary = capsys.readouterr().err.strip().splitlines()[-1]
    assert re.fullmatch(rf"cartpulse generate: sent 2500 events to {live_server.base} in [\d.]+ s"
                        r" \(\d+ events/s\): 2500 stored, 0 quarantined, 0 errors", summary), summary
    assert count(built.database_url) == 2500
    assert count(built.database_url, "raw.ecommerce_events_pending") == 2500


def test_live_summary_counts_the_errors_it_retried(capsys):
    """A server that answers 503 once: the batch is sent again with its key, and the
    summary says so (stderr; stdout stays empty)."""
    answers = iter([503])

    class Shop(BaseHTTPRequestHandler):
        def do_POST(self):
            rows = self.rfile.read(int(self.headers["Content-Length"]))
            status = next(answers, 202)
            body = json.dumps({"successful_rows": 10, "quarantined_rows": 0, "import_id": "x"} if status == 202
                              else {"error": "database unavailable"}).encode()
            self.send_response(status)
            self.send_header("Retry-After", "0")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            assert rows

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Shop)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        assert main(["generate", "--events", "10", "--live", "--url", url, "--token", "t"]) == 0
    finally:
        server.shutdown()
        server.server_close()
    out = capsys.readouterr()
    assert out.out == ""
    assert re.search(r"sent 10 events to .* 10 stored, 0 quarantined, 1 error$", out.err.strip()), out.err
