"""Reads while the shop writes, for `make bench` (issue #24: "while 1,000 events/s arrive
as 100 POSTs/s of 10 events").

A live shop posts small batches all the time, so every read follows a write: the data
version has moved and a cached answer is no longer valid. This moment measures that: a
writer *process* (its own interpreter, so its work never delays the reader's clock in
this one) posts WRITE_BATCH-event NDJSON bodies WRITE_POSTS times a second to
``/v0/events`` over WRITE_CONNECTIONS keep-alive connections, on a clock (a late POST is
sent at once, none is skipped, so the rate holds on average), while ``reads.latency``
measures every cell with one keep-alive reader, as sent and with ``Cache-Control:
no-cache``. ``cartpulse scheduler`` runs meanwhile, as ``cartpulse run`` starts it: its
absorber folds the pending events into the rollups every second, as in a live deployment.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import reads
from cartpulse.cli.event_generator import EventGenerator
from refresh_cost import scheduler

from bench import SPAN, START, Client, percentile

WRITE_POSTS = int(os.environ.get("WRITE_POSTS", "100"))  # POSTs a second
WRITE_BATCH = int(os.environ.get("WRITE_BATCH", "10"))  # events per POST
WRITE_CONNECTIONS = int(os.environ.get("WRITE_CONNECTIONS", "4"))  # keep-alive connections sharing the POSTs
WRITE_WARMUP = float(os.environ.get("WRITE_WARMUP", "3"))  # seconds of writes before the first read


@dataclass
class Stream:
    """What the writer did while the reads were measured."""
    posts: int = 0
    events: int = 0
    seconds: float = 0.0
    post_ms: list[float] = field(default_factory=list)
    pending: int | None = None  # events pending (not yet absorbed) when the last read was answered

    @property
    def rate(self) -> float:
        """POSTs a second, achieved."""
        return self.posts / self.seconds if self.seconds else 0.0

    def describe(self) -> str:
        if not self.posts:
            return "no POST measured"
        pending = "" if self.pending is None else f"; {self.pending:,} events pending at the last read"
        return (f"{self.rate:.0f} POSTs/s, {self.events / self.seconds:,.0f} events/s achieved over {self.seconds:.0f} s;"
                f" POST p50 {percentile(self.post_ms, 50):.1f} ms, p99 {percentile(self.post_ms, 99):.1f} ms{pending}")


def _body(gen: EventGenerator, size: int) -> bytes:
    import json

    return "".join(json.dumps(e) + "\n" for e in gen.events(size)).encode()


def _post_slots(port: int, token: str, slot: int, t0: float, stop, stream: Stream, lock, seed: int) -> None:
    """One connection's share: the POSTs numbered ``slot``, ``slot`` + WRITE_CONNECTIONS, …,
    each at its time on the shared clock (sent at once when late, none skipped)."""
    gen, client, n = EventGenerator(seed=seed, start=START, span=SPAN), Client(port, token), slot
    body = _body(gen, WRITE_BATCH)
    while not stop.is_set():
        pause = t0 + n / WRITE_POSTS - time.perf_counter()
        if pause > 0:
            time.sleep(pause)
        t = time.perf_counter()
        events = client.post(body)["successful_rows"]
        ms = (time.perf_counter() - t) * 1000
        with lock:
            stream.events, stream.posts = stream.events + events, stream.posts + 1
            stream.post_ms.append(ms)
        n += WRITE_CONNECTIONS
        body = _body(gen, WRITE_BATCH)  # the next one, made while waiting for its time


def _writer(port: int, token: str, stop, results, seed: int = 96) -> None:
    """The writer process: WRITE_POSTS POSTs a second from WRITE_CONNECTIONS keep-alive
    connections (one alone cannot keep the pace once a POST takes over 1/WRITE_POSTS s, as
    it does on 2 busy cores) until ``stop`` is set; puts a ``Stream`` on ``results``. Events
    are spread over the data's 30 days, as late events are, so the 7-day range's rollup
    rows change too, not only the data version."""
    stream, lock, t0 = Stream(), threading.Lock(), time.perf_counter()
    threads = [threading.Thread(target=_post_slots, args=(port, token, slot, t0, stop, stream, lock, seed + slot))
               for slot in range(WRITE_CONNECTIONS)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    stream.seconds = time.perf_counter() - t0
    results.put(stream)


@contextmanager
def writing(port: int, token: str):
    """The writer process running; yields a ``Stream`` that is filled in when it stops."""
    ctx = multiprocessing.get_context("spawn")  # the bench has threads: no fork
    stop, results, stream = ctx.Event(), ctx.Queue(), Stream()
    proc = ctx.Process(target=_writer, args=(port, token, stop, results), daemon=True)
    proc.start()
    try:
        yield stream
    finally:
        stop.set()
        done = results.get(timeout=60)
        proc.join(timeout=60)
        stream.__dict__.update(done.__dict__)


def under_writes(port: int, token: str, rounds: int, url: str, env: dict, log: Path, cells: list | None = None):
    """(cells as sent, cells with no cache, the writer's ``Stream``): ``reads.latency``
    (of ``cells``) while WRITE_POSTS POSTs/s of WRITE_BATCH events arrive and the absorber runs."""
    with scheduler(url, env, log), writing(port, token) as stream:
        time.sleep(WRITE_WARMUP)  # the writer connected and at its pace before the first read
        sent, query = reads.latency(port, token, rounds, cells)
        pending = pending_events(url)
    stream.pending = pending  # set after the writer's own figures are copied in
    return sent, query, stream


def pending_events(url: str) -> int:
    """Events the absorber has not folded in yet: every uncached read aggregates them live."""
    with psycopg.connect(url) as conn:
        table = os.environ.get("BENCH_DATASOURCE", "ecommerce_events") + "_pending"
        return conn.execute(f'select count(*) from raw."{table}"').fetchone()[0]
