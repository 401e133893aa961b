"""Settings: every environment variable CartPulse reads is read here, and only here.

Every knob is an environment variable so that ``make run``, ``cartpulse serve`` under
systemd and a container all configure CartPulse the same way. Each one is a field of
``Settings`` declared once, with its variable, its default and how its text is parsed
(``setting(…)``); ``Settings.from_env`` reads them all at start, so a bad value stops
CartPulse at once with the variable's name rather than somewhere inside a request or a
policy call. The README documents each variable in one table (its Configuration
section); tests/test_settings.py checks that the table and the fields agree. Tests and
benchmarks pass overrides instead of setting variables.
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

#: The repository root: dbt project, profiles and the local state folder live here.
PROJECT_DIR = Path(__file__).resolve().parents[2]


class SettingError(ValueError):
    """A variable whose value cannot be used; the message starts with ``NAME=value``."""


def split_urls(raw: str | None) -> tuple[str, ...]:
    """``READ_DATABASE_URLS``: URLs separated by commas. A comma inside one URL (libpq's
    multi-host ``postgresql://h1,h2/db``) does not split it: only a comma followed by a new
    ``postgres(ql)://`` does (or, for ``key=value`` conninfo strings, every comma)."""
    if not raw or not raw.strip():
        return ()
    pattern = r",\s*(?=postgres(?:ql)?://)" if "://" in raw else r","
    return tuple(part.strip() for part in re.split(pattern, raw.strip()) if part.strip())


# Parsers: text -> value, or ValueError saying what was expected (from_env adds the name).

def _text(raw: str) -> str:
    return raw


def integer(minimum: int, maximum: int | None = None) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        try:
            value = int(raw)
        except ValueError:
            raise ValueError("expected a whole number") from None
        if value < minimum or (maximum is not None and value > maximum):
            raise ValueError(f"expected a whole number from {minimum}" + (f" to {maximum}" if maximum is not None else " up"))
        return value
    return parse


def number(minimum: float) -> Callable[[str], float]:
    def parse(raw: str) -> float:
        try:
            value = float(raw)
        except ValueError:
            raise ValueError("expected a number") from None
        if not math.isfinite(value) or value < minimum:
            raise ValueError(f"expected a number from {minimum:g} up")
        return value
    return parse


def identifier(raw: str) -> str:
    """A schema name as PostgreSQL folds it: lower-case letters, digits and _, not
    starting with a digit (dbt and the service then name it alike, quoted or not)."""
    if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", raw):
        raise ValueError("expected a schema name (lower-case letters, digits and _, at most 63)")
    return raw


def choice(*allowed: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        if raw.lower() not in allowed:
            raise ValueError(f"expected one of {', '.join(allowed)}")
        return raw.lower()
    return parse


# PostgreSQL's interval units (each spelling the server accepts), longest first so that
# `months` is not read as `m` + garbage.
_UNITS = sorted("""microseconds microsecond usecs usec us milliseconds millisecond msecs msec ms
    seconds second secs sec s minutes minute mins min m hours hour hrs hr h days day d weeks week w
    months month mons mon years year yrs yr y decades decade centuries century millennia millennium""".split(),
                key=len, reverse=True)
_NUMBER = r"\d+(?:\.\d+)?"
_PAIR = rf"{_NUMBER}\s*(?:{'|'.join(_UNITS)})\b"
_CLOCK = r"\d+:\d{2}(?::\d{2}(?:\.\d+)?)?"
_INTERVAL = re.compile(rf"(?:{_PAIR}(?:\s+{_PAIR})*(?:\s+{_CLOCK})?|{_CLOCK})", re.I)


def interval(raw: str) -> str:
    """A positive PostgreSQL interval in its plain form: number-unit pairs (``7 days``,
    ``12 hours``, ``1 year 6 months``, ``30min``), optionally ending in ``HH:MM[:SS]``.
    Checked here so that a typo stops the start with the variable's name; passed on to
    the server as written (a subset of what PostgreSQL accepts, so it always parses)."""
    if not _INTERVAL.fullmatch(raw):
        raise ValueError("expected a PostgreSQL interval such as '7 days' or '12 hours'")
    if not any(float(n) > 0 for n in re.findall(_NUMBER, raw)):
        raise ValueError("expected an interval longer than zero")
    return raw


def address(raw: str) -> str:
    """An IP address or host name to listen on, without scheme or port: ``HOST`` (the URL
    the README's tour exports) is a different variable, and so is ``PORT``."""
    if "/" in raw or (raw.count(":") == 1):
        raise ValueError("expected an address to listen on, such as 127.0.0.1 or 0.0.0.0"
                         " (no scheme, no port: the port is PORT)")
    return raw


def level(raw: str) -> str:
    name = raw.upper()
    if not isinstance(logging.getLevelName(name), int):
        raise ValueError("expected DEBUG, INFO, WARNING, ERROR or CRITICAL")
    return name


def setting(variable: str, default=None, parse: Callable[[str], object] = _text):
    """A field read from the environment variable ``variable`` (unset or empty: ``default``)."""
    return field(default=default, metadata={"variable": variable, "parse": parse})


@dataclass(frozen=True)
class Settings:
    """What a running CartPulse needs to know; defaults suit ``make run`` on a laptop."""

    #: The primary database; unset: the embedded server (storage/embedded.py).
    database_url: str | None = setting("DATABASE_URL")
    #: Streaming replicas that endpoint reads may use (replicas.py); ingest, refresh and
    #: everything else use ``database_url``.
    read_database_urls: tuple[str, ...] = setting("READ_DATABASE_URLS", (), split_urls)
    #: A replica more than this many seconds behind the primary leaves the rotation.
    replica_max_lag_seconds: float = setting("REPLICA_MAX_LAG_SECONDS", 5.0, number(0))
    #: Seconds between two checks of the replicas' positions (each process).
    replica_check_seconds: float = setting("REPLICA_CHECK_SECONDS", 1.0, number(0.01))
    #: How long a read carrying a ``CartPulse-LSN`` waits for a replica before the primary.
    replica_wait_ms: int = setting("REPLICA_WAIT_MS", 100, integer(0))
    project_dir: Path = setting("CARTPULSE_PROJECT_DIR", PROJECT_DIR, Path)
    #: Unset: ``.cartpulse`` and ``target`` in the project folder (see ``from_env``).
    state_dir: Path = setting("CARTPULSE_STATE_DIR", PROJECT_DIR / ".cartpulse", Path)
    target_dir: Path = setting("DBT_TARGET_PATH", PROJECT_DIR / "target", Path)
    admin_token: str | None = setting("TB_ADMIN_TOKEN")
    #: The address gunicorn listens on. Not ``HOST``: the README's tour exports HOST as
    #: the service's URL, and the shell that runs ``make run`` may have it.
    bind_address: str = setting("BIND_ADDRESS", "127.0.0.1", address)
    port: int = setting("PORT", 8000, integer(1, 65535))
    workers: int = setting("WEB_WORKERS", 2, integer(1))
    threads: int = setting("WEB_THREADS", 4, integer(1))
    #: The HTTP front (cli/front.py) reads each request whole before a thread runs it:
    #: the head must arrive within ``head_timeout`` seconds, a body may pause at most
    #: ``body_timeout`` seconds, an idle kept-alive connection is closed after ``keepalive``.
    head_timeout: float = setting("HTTP_HEAD_TIMEOUT", 10.0, number(0.1))
    body_timeout: float = setting("HTTP_BODY_TIMEOUT", 30.0, number(0.1))
    keepalive: float = setting("HTTP_KEEPALIVE", 5.0, number(0.1))
    #: Open connections one worker keeps (fewer when the open-files limit, raised to its
    #: hard limit at start, leaves less room): past it a new one is answered 503 and closed.
    max_connections: int = setting("HTTP_MAX_CONNECTIONS", 2000, integer(1))
    #: Largest request body, after gzip decompression (413 above).
    max_body_bytes: int = setting("MAX_BODY_BYTES", 100 * 1024 * 1024, integer(1))
    #: Most rows (NDJSON lines) in one ``POST /v0/events`` (413 above, nothing stored):
    #: one request is one transaction, and this bounds how long it holds its locks.
    max_rows_per_request: int = setting("MAX_ROWS_PER_REQUEST", 1_000_000, integer(1))
    statement_timeout_ms: int = setting("STATEMENT_TIMEOUT_MS", 30_000, integer(0))
    #: The Query API (``/v0/sql``, ``q=`` on a pipe): time limit of one statement, most
    #: rows in an answer and largest answer (an answer past a limit is an error, never cut).
    query_timeout_ms: int = setting("QUERY_TIMEOUT_MS", 10_000, integer(1))
    query_max_rows: int = setting("QUERY_MAX_ROWS", 100_000, integer(1))
    query_max_bytes: int = setting("QUERY_MAX_BYTES", 64 * 1024 * 1024, integer(1))
    #: Pipe answers each worker keeps until the data changes (serving/result_cache.py),
    #: and the most rows of an answer kept; 0 entries: no cache.
    result_cache_entries: int = setting("RESULT_CACHE_ENTRIES", 1024, integer(0))
    result_cache_max_rows: int = setting("RESULT_CACHE_MAX_ROWS", 10_000, integer(0))
    #: Requests per second each token may make (a token bucket shared by all workers);
    #: 0 turns rate limiting off. The bucket holds ``rate_limit_burst`` requests.
    rate_limit_rps: float = setting("RATE_LIMIT_RPS", 100.0, number(0))
    rate_limit_burst: int = setting("RATE_LIMIT_BURST", 200, integer(1))
    #: How long an ``Idempotency-Key`` is remembered (its first answer is replayed).
    idempotency_ttl_seconds: int = setting("IDEMPOTENCY_TTL_SECONDS", 24 * 3600, integer(1))
    dbt_schema: str = setting("DBT_SCHEMA", "analytics")
    #: The schema of the data sources' tables (the sources yml reads it too, as env_var).
    raw_schema: str = setting("RAW_SCHEMA", "raw", identifier)
    #: Seconds between scheduled refreshes (`dbt run` + freshness + VACUUM); 0: no
    #: scheduler beside `cartpulse run`.
    #: The absorber (``absorb_seconds``) keeps the rollups current between refreshes, so a
    #: refresh (``dbt run``, freshness, maintenance) is needed rarely: the benchmark found
    #: a ``dbt run`` a minute was nine tenths of what keeping the rollups current cost.
    refresh_seconds: int = setting("REFRESH_SECONDS", 600, integer(0))
    #: Seconds between two absorptions of pending events into the rollups by the
    #: scheduler (``cartpulse.absorb()``, no dbt); 0: only ``dbt run`` absorbs.
    absorb_seconds: float = setting("ABSORB_SECONDS", 1.0, number(0))
    #: A request that wrote at least this many rows absorbs them before it answers, so
    #: the reads after a bulk load stay fast; 0: never.
    absorb_after_rows: int = setting("ABSORB_AFTER_ROWS", 10_000, integer(0))
    #: Days of cartpulse.pipe_stats and cartpulse.refresh_runs kept (purged by the scheduler).
    pipe_stats_retention_days: int = setting("PIPE_STATS_RETENTION_DAYS", 7, integer(0))
    refresh_runs_retention_days: int = setting("REFRESH_RUNS_RETENTION_DAYS", 30, integer(0))
    #: Largest bulk import (POST /v0/datasources), after gzip decompression.
    max_import_bytes: int = setting("MAX_IMPORT_BYTES", 10 * 1024**3, integer(1))
    #: When set, GET /metrics needs ``Authorization: Bearer <metrics_token>``.
    metrics_token: str | None = setting("METRICS_TOKEN")
    #: The URL clients reach the API at (behind a proxy: its public URL), for the OpenAPI
    #: document's ``servers``; unset: relative to the page. Never taken from a request's
    #: Host header, which any client may set.
    public_url: str | None = setting("PUBLIC_URL")
    #: prometheus_client's own variable, read here like every other; unset: a temporary
    #: folder. ``ops/multiproc.prepare`` exports the folder for the library.
    prometheus_multiproc_dir: Path | None = setting("PROMETHEUS_MULTIPROC_DIR", None, Path)
    #: Which engine storage is provisioned for (storage/engine.py): auto, postgres or
    #: timescaledb. Applied by ``cartpulse init``; the engine in use is then the database's.
    engine: str = setting("CARTPULSE_ENGINE", "auto", choice("auto", "postgres", "timescaledb"))
    #: TimescaleDB: the events hypertable's chunk interval (chunks created from now on).
    chunk_interval: str = setting("CHUNK_INTERVAL", "1 day", interval)
    #: TimescaleDB: compress chunks older than this; Citus: convert the months older than this to
    #: columnar storage (storage/columnar.py); None: compress nothing more.
    compress_after: str | None = setting("COMPRESS_AFTER", None, interval)
    #: Drop raw events older than this (chunks, or months on PostgreSQL); None: keep all.
    retention: str | None = setting("RETENTION", None, interval)
    #: gunicorn's access log (a path, ``-`` for stdout); None: none.
    access_log: str | None = setting("ACCESS_LOG")
    log_level: str = setting("LOG_LEVEL", "INFO", level)

    @classmethod
    def variables(cls) -> dict[str, str]:
        """Every environment variable read, mapped to its field's name."""
        return {f.metadata["variable"]: f.name for f in fields(cls) if "variable" in f.metadata}

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides) -> "Settings":
        """Defaults, then the environment (``os.environ`` unless given), then explicit
        overrides (tests). Raises SettingError naming the first variable that does not parse."""
        environ = os.environ if environ is None else environ
        values = {}
        for f in fields(cls):
            if "variable" not in f.metadata:
                continue
            raw = (environ.get(f.metadata["variable"]) or "").strip()
            if not raw:
                continue
            try:
                values[f.name] = f.metadata["parse"](raw)
            except ValueError as err:
                raise SettingError(f"{f.metadata['variable']}={raw!r}: {err}") from None
        # The state and target folders live in the project unless placed elsewhere.
        project = values.get("project_dir", PROJECT_DIR)
        values.setdefault("state_dir", project / ".cartpulse")
        values.setdefault("target_dir", project / "target")
        unknown = set(overrides) - {f.name for f in fields(cls)}
        if unknown:
            raise TypeError(f"unknown settings: {sorted(unknown)}")
        return replace(cls(**values), **overrides)
