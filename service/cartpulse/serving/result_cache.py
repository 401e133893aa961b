"""Pipe answers kept by each worker until the data they come from changes.

A dashboard asks the same questions again and again, and between two writes every answer
is the same. Each worker keeps its latest answers (``RESULT_CACHE_ENTRIES``, each at most
``RESULT_CACHE_MAX_ROWS`` rows) together with the *data version* they were computed at:
``cartpulse.data_version()`` (storage/sql/storage.sql), read from the server that answers.
A request reads the version first (one round trip); when an answer for the same endpoint
and parameter values was computed at that very version, it is served without running the
query, otherwise the query runs and its answer is kept at that version.

Why this keeps read-after-acknowledge: the version moves in the transaction of every
change to what endpoints answer (a statement trigger on each data source's table, dbt's
``on-run-end`` hook), so once a write is acknowledged every reader sees a newer version
than any answer computed before it. The query runs after its version was read, so it sees
at least that state: an answer kept at a version is never older than the version.
Absorbing pending events into the rollups does not move it: the answers stay the same.

A cached answer reports ``rows_read`` and ``bytes_read`` 0 (no table was read) and the
header ``CartPulse-Cache: hit`` (``miss`` otherwise). A request with ``Cache-Control:
no-cache`` runs the query whatever is kept.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass

VERSION = "select cartpulse.data_version(%s)"


@dataclass(frozen=True)
class Answer:
    version: str
    meta: list[dict]
    rows: list[tuple]


def answer_key(target: str, endpoint, values: dict) -> tuple:
    """The server, the endpoint and its parameter values (lists as tuples: hashable)."""
    frozen = tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in values.items()))
    return target, endpoint.schema, endpoint.relation, frozen


class ResultCache:
    """Least recently used answers, per worker process; thread-safe."""

    def __init__(self, entries: int, max_rows: int):
        self.entries = entries
        self.max_rows = max_rows
        self._answers: OrderedDict[tuple, Answer] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple, version: str) -> Answer | None:
        """The answer kept for ``key`` if it was computed at ``version``."""
        with self._lock:
            answer = self._answers.get(key)
            if answer is None or answer.version != version:
                return None
            self._answers.move_to_end(key)
            return answer

    def put(self, key: tuple, answer: Answer) -> None:
        if len(answer.rows) > self.max_rows:
            return
        with self._lock:
            self._answers[key] = answer
            self._answers.move_to_end(key)
            while len(self._answers) > self.entries:
                self._answers.popitem(last=False)


def for_settings(settings) -> ResultCache | None:
    """None when caching is off (``RESULT_CACHE_ENTRIES=0``)."""
    if settings.result_cache_entries <= 0:
        return None
    return ResultCache(settings.result_cache_entries, settings.result_cache_max_rows)
