"""``cartpulse generate``: synthetic events as NDJSON, or POSTed to a running server.

The events come from ``event_generator.EventGenerator``: the same ``--seed`` gives
byte-identical output. By default it writes NDJSON to stdout (or ``--output FILE``),
which composes with everything (``cartpulse import``, curl, a file for later); with
``--url`` it POSTs batches to a running server's events API instead, each batch with an
``Idempotency-Key`` made of a per-run id and the batch number, so a retried batch (after
a 503 or a lost connection) is stored exactly once, while running it again adds events
again. ``--rate`` paces it (events per second). A progress bar with rate and ETA goes to
stderr when it is a terminal (tqdm). It ends with a summary
line on stderr when it writes to a file or a server.
"""

from __future__ import annotations

import gzip
import json
import sys
import time
import urllib.error
import urllib.request
import uuid

from tqdm import tqdm

#: Events per POST when ``generate --url`` sends them.
POST_BATCH = 1000
RETRIES = 5


def generate(events: int, seed: int, rate: float | None, output: str | None, url: str | None,
             token: str | None, live: bool = False) -> int:
    """Write or POST ``events`` synthetic events; return a process exit status."""
    from datetime import datetime, timezone

    from cartpulse.cli.event_generator import EventGenerator

    generator = EventGenerator(seed=seed)
    started = time.monotonic()
    sink = _Poster(url, token, seed) if url else _Writer(output)
    with tqdm(total=events, unit="ev", unit_scale=True, desc="generate", disable=None, file=sys.stderr) as bar:
        for i in range(events):
            when = datetime.now(timezone.utc) if live else None
            sink.add(generator.event(when))
            bar.update(1)
            if rate:  # pace: event i is due at i / rate seconds after the start
                ahead = (i + 1) / rate - (time.monotonic() - started)
                if ahead > 0:
                    sink.flush()
                    time.sleep(ahead)
        sink.flush()
    sink.close()
    sink.summary(events, time.monotonic() - started)
    return 0


class _Writer:
    def __init__(self, output: str | None):
        self.out = open(output, "w", encoding="utf-8") if output and output != "-" else sys.stdout
        self.lines: list[str] = []

    def add(self, event: dict) -> None:
        self.lines.append(json.dumps(event, ensure_ascii=False))
        if len(self.lines) >= POST_BATCH:
            self.flush()

    def flush(self) -> None:
        if self.lines:
            self.out.write("\n".join(self.lines) + "\n")
            self.lines = []
        self.out.flush()

    def close(self) -> None:
        if self.out is not sys.stdout:
            self.out.close()

    def summary(self, events: int, seconds: float) -> None:
        if self.out is not sys.stdout:  # stdout carries the events themselves
            print(f"cartpulse generate: wrote {events} events to {self.out.name}", file=sys.stderr)


class _Poster:
    """POSTs batches to ``<url>/v0/events``; retries 503s and lost connections with the
    batch's Idempotency-Key (stored once however often it is sent)."""

    def __init__(self, url: str, token: str | None, seed: int):
        if not token:
            raise SystemExit("cartpulse generate --url needs a token: --token or TB_ADMIN_TOKEN")
        self.url, self.token, self.seed = url.rstrip("/"), token, seed
        self.run = uuid.uuid4().hex  # keys are per run: running generate again adds events again
        self.events: list[dict] = []
        self.batches = 0
        self.stored = self.quarantined = self.retried = 0  # for the summary line

    def add(self, event: dict) -> None:
        self.events.append(event)
        if len(self.events) >= POST_BATCH:
            self.flush()

    def flush(self) -> None:
        if not self.events:
            return
        body = ("\n".join(json.dumps(e, ensure_ascii=False) for e in self.events) + "\n").encode()
        self.batches += 1
        key = f"generate-{self.run}-{self.batches}"
        request = urllib.request.Request(
            f"{self.url}/v0/events?name=ecommerce_events", data=gzip.compress(body, 1), method="POST",
            headers={"Authorization": f"Bearer {self.token}", "Content-Encoding": "gzip", "Idempotency-Key": key})
        for attempt in range(1, RETRIES + 1):
            try:
                with urllib.request.urlopen(request, timeout=60) as resp:
                    answer = json.loads(resp.read())
                self.stored += answer["successful_rows"]
                self.quarantined += answer["quarantined_rows"]
                break
            except urllib.error.HTTPError as err:
                if err.code not in (429, 503) or attempt == RETRIES:
                    raise SystemExit(f"cartpulse generate: {err.code} {err.read()[:500].decode(errors='replace')}"
                                     f" ({self.stored} events stored before)")
                self.retried += 1
                time.sleep(float(err.headers.get("Retry-After") or 1))
            except OSError as err:
                if attempt == RETRIES:
                    raise SystemExit(f"cartpulse generate: {self.url} unreachable: {err}"
                                     f" ({self.stored} events stored before)")
                self.retried += 1
                time.sleep(attempt)
        self.events = []

    def close(self) -> None:
        pass

    def summary(self, events: int, seconds: float) -> None:
        """One line on stderr (stdout stays free for pipes): what the server acknowledged,
        the rate achieved, and the errors: failed requests, each retried with its key (a
        batch that fails every retry ends the command with its own message instead)."""
        print(f"cartpulse generate: sent {events} events to {self.url} in {seconds:.1f} s"
              f" ({events / max(seconds, 1e-9):.0f} events/s): {self.stored} stored,"
              f" {self.quarantined} quarantined, {self.retried} error{'' if self.retried == 1 else 's'}",
              file=sys.stderr)

