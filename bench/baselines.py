"""What `make bench` compares CartPulse with: a raw COPY of the same rows (ingest), and
the seed's queries on DuckDB (in-process, the same rows loaded from the CSV files). The
seed's plain SQL over the raw table is ``bench.sql_median`` over ``bench.NAIVE``."""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import psycopg

from bench import COLUMNS, NAIVE, naive

DUCK_TYPES = ["timestamptz", "varchar", "varchar", "varchar", "varchar", "double", "bigint", "varchar", "varchar"]


def raw_copy_seconds(url: str, engine: str, files: list[Path]) -> float:
    """Seconds to COPY the CSV files into a table of the events table's layout (then dropped)."""
    with psycopg.connect(url) as conn:
        conn.execute("drop table if exists raw.bench_copy")
        conn.execute("create table raw.bench_copy (like raw.ecommerce_events including indexes)"
                     if engine == "timescaledb" else
                     "create table raw.bench_copy (like raw.ecommerce_events) partition by range (event_time)")
        if engine == "timescaledb":
            conn.execute("select create_hypertable('raw.bench_copy', 'event_time', chunk_time_interval =>"
                         " interval '1 day', create_default_indexes => false)")
        else:
            conn.execute("create index on raw.bench_copy (event_time, product_id)")
            for month in ("2026-10-01", "2026-11-01"):
                name = "bench_copy_" + month[:7].replace("-", "_")
                conn.execute(f"create table raw.{name} partition of raw.bench_copy for values from"
                             f" ('{month}') to ('{month}'::date + interval '1 month')")
    t = time.perf_counter()
    with psycopg.connect(url) as conn:
        with conn.cursor() as cur, cur.copy(f"copy raw.bench_copy ({COLUMNS}) from stdin (format csv)") as copy:
            for f in files:
                with open(f.with_suffix(".csv"), "rb") as fh:
                    while chunk := fh.read(1 << 20):
                        copy.write(chunk)
    seconds = time.perf_counter() - t
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("drop table raw.bench_copy")
    return seconds


def duckdb_ms(files: list[Path]) -> tuple[dict, str | None]:
    """({(pipe, ranged): median ms of 5 after a warm-up}, DuckDB's version), or ({}, None)."""
    try:
        import duckdb
    except ImportError:
        return {}, None
    out = {}
    duck = duckdb.connect()
    duck.execute("set TimeZone = 'UTC'")
    names = [c.strip() for c in COLUMNS.split(",")]
    duck.execute(f"create table raw_ecommerce_events ({', '.join(f'{c} {t}' for c, t in zip(names, DUCK_TYPES))})")
    columns = "{" + ", ".join(f"'{c}': '{t}'" for c, t in zip(names, DUCK_TYPES)) + "}"
    for f in files:
        duck.execute(f"insert into raw_ecommerce_events select * from read_csv('{f.with_suffix('.csv')}',"
                     f" header = false, columns = {columns})")
    for pipe in NAIVE:
        for ranged in (False, True):
            query = naive("duckdb", pipe, ranged).replace("raw.ecommerce_events", "raw_ecommerce_events")
            duck.execute(query).fetchall()
            times = []
            for _ in range(5):
                t0 = time.perf_counter()
                duck.execute(query).fetchall()
                times.append(time.perf_counter() - t0)
            out[(pipe, ranged)] = statistics.median(times) * 1000
    duck.close()
    return out, duckdb.__version__
