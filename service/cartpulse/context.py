"""Where a request finds the service, and what earlier steps of the same request learned.

Two objects, each reached through one function, so that no module hands state to
another through string keys on ``flask.g`` or ``current_app.extensions``:

* ``service()`` — the per-process ``Service`` that ``create_app`` built: settings, the
  data sources and endpoints declared in the dbt project, the connection pools, the caches;
* ``request_state()`` — the per-request ``RequestState``: when the request started, who
  is calling and their rate-limit quota (``access/auth.py``), the pipe it reads and the
  result (``serving/pipes.py``); ``ops/metrics.py`` and ``ops/pipe_stats.py`` read them.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from flask import current_app, g

if TYPE_CHECKING:  # types only: the modules below import this one
    from cartpulse.access.auth import Caller, TokenStore
    from cartpulse.access.ratelimit import Quota, RateLimiter
    from cartpulse.config import Settings
    from cartpulse.ingest.idempotency import Purger
    from cartpulse.ingest.writer import PartitionCache
    from cartpulse.project.datasources import DataSource
    from cartpulse.project.endpoints import Catalog
    from cartpulse.serving.pipes import ReadCounters
    from cartpulse.serving.replicas import ReadRouter
    from cartpulse.serving.result_cache import ResultCache
    from cartpulse.storage.db import Database

_EXTENSION = "cartpulse"


@dataclass
class Service:
    """Per-process service state (one per gunicorn worker, built after the fork)."""

    settings: Settings
    db: Database
    tokens: TokenStore
    catalog: Catalog
    datasources: dict[str, DataSource]  # declared in the dbt project (project/datasources.py)
    partitions: PartitionCache
    purger: Purger
    reads: ReadRouter
    read_counters: ReadCounters
    limiter: RateLimiter                          # the shared rate-limit buckets, leased (access/ratelimit.py)
    results: ResultCache | None = None            # pipe answers until the data changes; None: off


@dataclass
class RequestState:
    """What one request has learned so far; each field is set by one module."""

    started: float | None = None                  # perf_counter at the first hook (metrics)
    caller: Caller | None = None                  # the token's identity (auth)
    quota: Quota | None = None                    # its rate-limit bucket after this request (auth)
    pipe: str | None = None                       # the pipe requested, once known to exist (pipes)
    pipe_result: tuple[int, dict] | None = None   # (rows, statistics) of its answer (pipes)
    pipe_params: dict | None = None               # its parameters, query string and body (pipes)
    cache: str | None = None                      # "hit" or "miss" in the result cache (pipes)
    #: Milliseconds spent in each phase of the request (``timed``), for ``Server-Timing``.
    timings: dict[str, float] = field(default_factory=dict)


def install(app, state: Service) -> None:
    app.extensions[_EXTENSION] = state


def service(app=None) -> Service:
    """The service state of ``app`` (default: the current one)."""
    return (app or current_app).extensions[_EXTENSION]


def request_state() -> RequestState:
    """This request's state, created on first use."""
    if "cartpulse" not in g:
        g.cartpulse = RequestState()
    return g.cartpulse


@contextmanager
def timed(phase: str):
    """Add the block's duration to this request's ``phase`` (the ``Server-Timing`` header,
    metrics.py): where a read's time goes, for the benchmark's breakdown and for anyone
    who opens the browser's network panel."""
    started = time.perf_counter()
    try:
        yield
    finally:
        timings = request_state().timings
        timings[phase] = timings.get(phase, 0.0) + (time.perf_counter() - started) * 1000
