"""Settings, read once from the environment.

Every knob is an environment variable so that ``make run``, ``cartpulse serve`` under
systemd and a container all configure CartPulse the same way; the README documents
each one in a single table. Tests pass overrides to ``create_app`` instead.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, fields, replace
from pathlib import Path

#: The repository root: dbt project, profiles and the local state folder live here.
PROJECT_DIR = Path(__file__).resolve().parents[2]


def split_urls(raw: str | None) -> tuple[str, ...]:
    """``READ_DATABASE_URLS``: URLs separated by commas. A comma inside one URL (libpq's
    multi-host ``postgresql://h1,h2/db``) does not split it: only a comma followed by a new
    ``postgres(ql)://`` does (or, for ``key=value`` conninfo strings, every comma)."""
    if not raw or not raw.strip():
        return ()
    pattern = r",\s*(?=postgres(?:ql)?://)" if "://" in raw else r","
    return tuple(part.strip() for part in re.split(pattern, raw.strip()) if part.strip())


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    return default if raw in (None, "") else int(raw)


@dataclass(frozen=True)
class Settings:
    """What a running CartPulse needs to know; defaults suit ``make run`` on a laptop."""

    database_url: str | None = None
    #: Streaming replicas that endpoint reads may use (replicas.py); ingest, refresh and
    #: everything else use ``database_url``.
    read_database_urls: tuple[str, ...] = ()
    #: A replica more than this many seconds behind the primary leaves the rotation.
    replica_max_lag_seconds: float = 5.0
    #: Seconds between two checks of the replicas' positions (each process).
    replica_check_seconds: float = 1.0
    #: How long a read carrying a ``CartPulse-LSN`` waits for a replica before the primary.
    replica_wait_ms: int = 100
    project_dir: Path = PROJECT_DIR
    state_dir: Path = PROJECT_DIR / ".cartpulse"
    target_dir: Path = PROJECT_DIR / "target"
    admin_token: str | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 2
    threads: int = 4
    max_body_bytes: int = 100 * 1024 * 1024
    max_rows_per_request: int = 1_000_000
    statement_timeout_ms: int = 30_000
    #: Requests per second each token may make (a token bucket shared by all workers);
    #: 0 turns rate limiting off. The bucket holds ``rate_limit_burst`` requests.
    rate_limit_rps: float = 100.0
    rate_limit_burst: int = 200
    #: How long an ``Idempotency-Key`` is remembered (its first answer is replayed).
    idempotency_ttl_seconds: int = 24 * 3600
    dbt_schema: str = "analytics"
    #: The schema of the data sources' tables (dbt's var raw_schema, via ops/dbt_runner.py).
    raw_schema: str = "raw"
    #: Seconds between scheduled refreshes (`dbt run` + freshness + VACUUM); 0: no
    #: scheduler beside `cartpulse run`.
    refresh_seconds: int = 60
    #: Days of cartpulse.pipe_stats and cartpulse.refresh_runs kept (purged by the scheduler).
    pipe_stats_retention_days: int = 7
    refresh_runs_retention_days: int = 30
    #: Largest bulk import (POST /v0/datasources), after gzip decompression.
    max_import_bytes: int = 10 * 1024**3
    #: When set, GET /metrics needs ``Authorization: Bearer <metrics_token>``.
    metrics_token: str | None = None

    @classmethod
    def from_env(cls, **overrides) -> "Settings":
        """Defaults, then the environment, then explicit overrides (tests)."""
        project_dir = Path(os.environ.get("CARTPULSE_PROJECT_DIR") or PROJECT_DIR)
        base = cls(
            database_url=os.environ.get("DATABASE_URL") or None,
            read_database_urls=split_urls(os.environ.get("READ_DATABASE_URLS")),
            replica_max_lag_seconds=float(os.environ.get("REPLICA_MAX_LAG_SECONDS") or 5),
            replica_check_seconds=float(os.environ.get("REPLICA_CHECK_SECONDS") or 1),
            replica_wait_ms=_env_int("REPLICA_WAIT_MS", 100),
            project_dir=project_dir,
            state_dir=Path(os.environ.get("CARTPULSE_STATE_DIR") or project_dir / ".cartpulse"),
            target_dir=Path(os.environ.get("DBT_TARGET_PATH") or project_dir / "target"),
            admin_token=os.environ.get("TB_ADMIN_TOKEN") or None,
            host=os.environ.get("HOST", "127.0.0.1"),
            port=_env_int("PORT", 8000),
            workers=_env_int("WEB_WORKERS", 2),
            threads=_env_int("WEB_THREADS", 4),
            max_body_bytes=_env_int("MAX_BODY_BYTES", 100 * 1024 * 1024),
            max_rows_per_request=_env_int("MAX_ROWS_PER_REQUEST", 1_000_000),
            statement_timeout_ms=_env_int("STATEMENT_TIMEOUT_MS", 30_000),
            rate_limit_rps=float(os.environ.get("RATE_LIMIT_RPS") or 100),
            rate_limit_burst=_env_int("RATE_LIMIT_BURST", 200),
            idempotency_ttl_seconds=_env_int("IDEMPOTENCY_TTL_SECONDS", 24 * 3600),
            dbt_schema=os.environ.get("DBT_SCHEMA", "analytics"),
            raw_schema=os.environ.get("RAW_SCHEMA") or cls.raw_schema,
            refresh_seconds=_env_int("REFRESH_SECONDS", 60),
            pipe_stats_retention_days=_env_int("PIPE_STATS_RETENTION_DAYS", 7),
            refresh_runs_retention_days=_env_int("REFRESH_RUNS_RETENTION_DAYS", 30),
            max_import_bytes=_env_int("MAX_IMPORT_BYTES", 10 * 1024**3),
            metrics_token=os.environ.get("METRICS_TOKEN") or None,
        )
        known = {f.name for f in fields(cls)}
        unknown = set(overrides) - known
        if unknown:
            raise TypeError(f"unknown settings: {sorted(unknown)}")
        return replace(base, **overrides)
