"""Reads as users meet them, for `make bench` (bench.py runs these).

* ``latency``: every endpoint (``CELLS``: the seed's three, no parameters and a 7-day
  range, and the README's example, no parameters and a country), one request at a time
  (concurrency 1), each request twice: as a client sends it (a repeat may be answered by
  the worker's result cache, until the data changes) and with ``Cache-Control: no-cache``
  (the endpoint's SQL runs every time: what a request the cache has not seen costs). The cells are interleaved (one request of each, round after round), so
  each cell's samples span the whole measurement: the first answers after a bulk load
  count as much as the later ones, and no cell is measured only once things settled.
  Every answer's ``Server-Timing`` header is kept, for the breakdown of one read.
* ``throughput``: 8 clients for THROUGHPUT_SECONDS, either cycling the 6-query mix, or
  each request a random 7-day window of a random endpoint (no two windows alike: the
  start is drawn to the second, and a drawn start is never drawn again).
"""

from __future__ import annotations

import itertools
import random
import statistics
import threading
import time
from dataclasses import dataclass, field
from datetime import timedelta

from bench import COUNTRY, LABELS, NAIVE, README_ENDPOINT, SPAN, START, Client, percentile

#: The six cells of the seed's endpoints (the throughput mix stays these, as before), then
#: the README's example endpoint, which has no range parameter: its second cell is a country.
SEED_CELLS = [(pipe, label, LABELS[label][0]) for pipe in NAIVE for label in ("no params", "7-day range")]
CELLS = SEED_CELLS + [(README_ENDPOINT, label, LABELS[label][0]) for label in ("no params", f"country={COUNTRY}")]
NO_CACHE = {"Cache-Control": "no-cache"}
#: Server-Timing phases, in the order a request meets them (``app`` is all of them and more).
PHASES = ("auth", "ratelimit", "query", "statistics", "render", "app")


def server_timing(header: str | None) -> dict[str, float]:
    """``auth;dur=0.12, query;dur=3.40`` → {"auth": 0.12, "query": 3.4} (ms)."""
    phases = {}
    for part in (header or "").split(","):
        name, _, rest = part.strip().partition(";")
        for attr in rest.split(";"):
            key, _, value = attr.strip().partition("=")
            if key == "dur" and name:
                phases[name] = float(value)
    return phases


@dataclass
class Cell:
    """One endpoint × parameters at concurrency 1: client latencies and their phases (ms)."""
    ms: list[float] = field(default_factory=list)
    phases: list[dict[str, float]] = field(default_factory=list)
    hits: int = 0  # answers the result cache gave

    def p(self, q: float) -> float:
        return percentile(self.ms, q)

    def breakdown(self) -> dict[str, float]:
        """Median ms of each phase, and of HTTP (client latency − app) per request."""
        out = {name: statistics.median(t.get(name, 0.0) for t in self.phases) for name in PHASES}
        out["http"] = statistics.median(ms - t.get("app", 0.0) for ms, t in zip(self.ms, self.phases))
        out["client"] = statistics.median(self.ms)
        return out


def latency(port: int, token: str, rounds: int, cells: list | None = None
            ) -> tuple[dict[tuple[str, str], Cell], dict[tuple[str, str], Cell]]:
    """``rounds`` requests of every cell (``cells``, else CELLS), interleaved, from one
    keep-alive connection: the cells as sent, and the same with ``Cache-Control:
    no-cache`` (each request right after its twin)."""
    measured = cells or CELLS
    client = Client(port, token)
    sent = {(pipe, label): Cell() for pipe, label, _ in measured}
    query = {(pipe, label): Cell() for pipe, label, _ in measured}
    for _ in range(rounds):
        for pipe, label, params in measured:
            for cells, headers in ((sent, None), (query, NO_CACHE)):
                t0 = time.perf_counter()
                client.get(pipe, params, headers)
                cell = cells[(pipe, label)]
                cell.ms.append((time.perf_counter() - t0) * 1000)
                cell.phases.append(server_timing(client.timing))
                cell.hits += client.cache == "hit"
    return sent, query


@dataclass
class Throughput:
    requests: int
    seconds: float
    ms: list[float]

    @property
    def rate(self) -> float:
        return self.requests / self.seconds


def _load(port: int, token: str, seconds: float, clients: int, next_request, headers: dict | None = None) -> Throughput:
    """``clients`` threads, each on its own connection, sending ``next_request()`` until
    ``seconds`` have passed."""
    latencies: list[float] = []
    lock = threading.Lock()
    conns = [Client(port, token) for _ in range(clients)]
    for c in conns:  # connected before the clock starts
        c.get("events_by_country", {})
    deadline = time.perf_counter() + seconds

    def worker(client: Client):
        while time.perf_counter() < deadline:
            with lock:
                pipe, params = next_request()
            t0 = time.perf_counter()
            client.get(pipe, params, headers)
            ms = (time.perf_counter() - t0) * 1000
            with lock:
                latencies.append(ms)

    t = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(c,)) for c in conns]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return Throughput(len(latencies), time.perf_counter() - t, latencies)


def mix(port: int, token: str, seconds: float, clients: int = 8, headers: dict | None = None) -> Throughput:
    """The 6-query mix (every seed endpoint, no parameters and the fixed 7-day range)."""
    cycle = itertools.cycle([(pipe, params) for pipe, _, params in SEED_CELLS])
    return _load(port, token, seconds, clients, lambda: next(cycle), headers)


def random_windows(port: int, token: str, seconds: float, clients: int = 8, seed: int = 12) -> Throughput:
    """Random 7-day windows inside the data's 30 days, to the second, never one twice."""
    rng = random.Random(seed)
    pipes = list(NAIVE)
    room = int((SPAN - timedelta(days=7)).total_seconds())
    drawn: set[int] = set()

    def next_request():
        while (offset := rng.randrange(room)) in drawn:
            pass
        drawn.add(offset)
        start = START + timedelta(seconds=offset)
        return rng.choice(pipes), {"start_date": f"{start:%Y-%m-%d %H:%M:%S}",
                                   "end_date": f"{start + timedelta(days=7):%Y-%m-%d %H:%M:%S}"}

    result = _load(port, token, seconds, clients, next_request)
    assert len(drawn) >= result.requests  # each request its own window
    return result
