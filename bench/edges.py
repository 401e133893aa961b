"""What a read of an arbitrary range costs in the database: before/after for issue #12's
random 7-day windows (bench/edges.md holds a run's output).

Loads EVENTS events (default 1,000,000; 30 days from 2026-10-01, EventGenerator seed 1)
by COPY into a fresh embedded server (or DATABASE_URL), then for each dbt project given
(BEFORE, a git revision of this repository, exported with `git archive`, then this
checkout) builds the models with `dbt run --full-refresh`, VACUUM ANALYZEs, and calls
each endpoint's SQL function over one connection (a unix socket): RUNS random 7-day
windows to the second (never one twice), the fixed week and no parameters. It prints
the median and p90 wall time of a call and the database backend's CPU per call (from
/proc, over all the calls of a cell), and EXPLAIN (ANALYZE, BUFFERS)'s planning and
execution times. Nothing here goes over HTTP: the service's share is in `make bench`.

    BEFORE=main EVENTS=1000000 .venv/bin/python bench/edges.py | tee bench/edges.md
"""

from __future__ import annotations

import os
import random
import re
import shutil
import statistics
import subprocess
import tempfile
import time
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path

import psycopg
from refresh_cost import backend_cpu

from bench import COLUMNS, SPAN, START, WEEK, prepare
from cartpulse.cli.event_generator import EventGenerator
from cartpulse.config import PROJECT_DIR
from cartpulse.ops.dbt_runner import run_dbt
from cartpulse.ops.derive import derive

EVENTS = int(os.environ.get("EVENTS", 1_000_000))
RUNS = int(os.environ.get("RUNS", 300))
BEFORE = os.environ.get("BEFORE")
WORK = PROJECT_DIR / ".cartpulse" / "edges"
PIPES = ("top_products", "events_by_country", "total_revenue")


def load(url: str, events: int) -> None:
    """EVENTS generated events, COPYed into the events table (not the pending one: they
    are all in the rollups after the full refresh that follows)."""
    gen = EventGenerator(seed=1, start=START, span=SPAN)
    columns = COLUMNS.split(", ")
    with psycopg.connect(url) as conn:
        conn.execute("select cartpulse.ensure_partitions('raw.ecommerce_events',"
                     " array(select generate_series(%s::timestamptz, %s, interval '1 day')))",
                     [START, START + SPAN])
        with conn.cursor().copy(f"copy raw.ecommerce_events ({COLUMNS}) from stdin") as copy:
            for _ in range(events):
                e = gen.event()
                copy.write_row([e[c] for c in columns])


def windows(seed: int = 12):
    """Random 7-day windows inside the data's 30 days, to the second, never one twice."""
    rng = random.Random(seed)
    room = int((SPAN - timedelta(days=7)).total_seconds())
    drawn: set[int] = set()
    while True:
        while (offset := rng.randrange(room)) in drawn:
            pass
        drawn.add(offset)
        start = START + timedelta(seconds=offset)
        yield {"start_date": start, "end_date": start + timedelta(days=7)}


def call_sql(pipe: str, params: dict) -> str:
    """The call the service makes: the endpoint's derived answer (docs/realtime.md)."""
    args = ", ".join(f"{name} => %({name})s" for name in params)
    return f"select * from analytics.{pipe}__derived({args})"


def measure(conn, pipe: str, draws, prepare: bool = False) -> tuple[float, float, float]:
    """(median ms, p90 ms, backend CPU ms per call) over RUNS calls, each with the
    parameters ``draws`` gives; ``prepare``: as a prepared statement (with the session's
    plan_cache_mode)."""
    backend = conn.execute("select pg_backend_pid()").fetchone()[0]
    params = next(draws)
    conn.execute(call_sql(pipe, params), params or None, prepare=prepare).fetchall()  # warm-up
    calls = [next(draws) for _ in range(RUNS)]
    times = []
    cpu = backend_cpu(backend)
    for params in calls:
        t = time.perf_counter()
        conn.execute(call_sql(pipe, params), params or None, prepare=prepare).fetchall()
        times.append((time.perf_counter() - t) * 1000)
    cpu = (backend_cpu(backend) - cpu) * 1000 / RUNS
    times.sort()
    return statistics.median(times), times[int(len(times) * 0.9)], cpu


def explain(conn, pipe: str, params: dict) -> str:
    plan = "\n".join(r[0] for r in conn.execute("explain (analyze, buffers) " + call_sql(pipe, params),
                                                 params or None).fetchall())
    timings = re.findall(r"(Planning|Execution) Time: ([\d.]+) ms", plan)
    hits = re.search(r"Buffers: shared hit=(\d+)", plan)
    return ", ".join(f"{kind.lower()} {ms} ms" for kind, ms in timings) + (f", {hits[1]} buffers" if hits else "")


def report(url: str, label: str) -> None:
    week = {k: datetime.fromisoformat(v).replace(tzinfo=timezone.utc) for k, v in WEEK.items()}
    print(f"\n### {label}\n")
    print("| endpoint | parameters | median ms | p90 ms | database CPU ms per call | EXPLAIN ANALYZE"
          " | prepared, generic plan: median ms | its CPU ms per call |")
    print("|---|---|---|---|---|---|---|---|")
    # As the service connects (storage/db.py): no parallel workers, never prepared.
    with psycopg.connect(url, autocommit=True, options="-c TimeZone=UTC -c max_parallel_workers_per_gather=0") as conn:
        conn.prepare_threshold = None
        for pipe in PIPES:
            for name, draws, sample in [("random 7-day windows", windows(), next(windows(99))),
                                        ("fixed 7-day range", iter(lambda: week, None), week),
                                        ("no params", iter(lambda: {}, None), {})]:
                p50, p90, cpu = measure(conn, pipe, draws)
                plans = explain(conn, pipe, sample)
                conn.execute("set plan_cache_mode = force_generic_plan")
                generic, _, generic_cpu = measure(conn, pipe, draws, prepare=True)
                conn.execute("reset plan_cache_mode")
                print(f"| {pipe} | {name} | {p50:.2f} | {p90:.2f} | {cpu:.2f} | {plans} | {generic:.2f} | {generic_cpu:.2f} |",
                      flush=True)


def sizes(url: str) -> None:
    with psycopg.connect(url) as conn:
        rows = conn.execute("""select c.relname, c.reltuples::bigint, pg_total_relation_size(c.oid)
            from pg_class c join pg_namespace n on n.oid = c.relnamespace
            where n.nspname = 'analytics' and c.relkind = 'r' and c.relname like 'rollup%' order by 1""").fetchall()
    print("\n| rollup | rows | size (MB) |\n|---|---|---|")
    for name, count, size in rows:
        print(f"| {name} | {count:,} | {size / 2**20:.1f} |")


def build(settings, url: str, label: str) -> None:
    derive(settings, url)
    run_dbt(settings, url, "run", "--full-refresh", "--quiet", capture=True)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("vacuum analyze")
    report(url, label)
    sizes(url)


def main() -> int:
    WORK.mkdir(parents=True, exist_ok=True)
    server, url, _token, settings, engine = prepare(WORK)
    try:
        t = time.perf_counter()
        load(url, EVENTS)
        print(f"# Reads of arbitrary ranges: {EVENTS:,} events on {engine}, {RUNS} calls per cell\n")
        print(f"Loaded by COPY in {time.perf_counter() - t:.0f} s; medians of each endpoint's SQL function,"
              " one connection over a unix socket, after `dbt run --full-refresh` and VACUUM ANALYZE.")
        if BEFORE:
            with tempfile.TemporaryDirectory() as folder:
                archive = subprocess.run(["git", "archive", BEFORE], cwd=PROJECT_DIR, check=True,
                                         capture_output=True).stdout
                subprocess.run(["tar", "-x", "-C", folder], input=archive, check=True)
                before = replace(settings, project_dir=Path(folder), target_dir=WORK / "target-before")
                build(before, url, f"before ({BEFORE}, {subprocess.run(['git', 'rev-parse', '--short', BEFORE], cwd=PROJECT_DIR, capture_output=True, text=True).stdout.strip()})")
        build(settings, url, "after (this checkout)")
    finally:
        if server is not None:
            server.stop()
            shutil.rmtree(WORK / "pgdata", ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
