"""What `make bench` compares CartPulse with: a raw COPY of the same rows (ingest), the
seed's queries on DuckDB (in-process, the same rows loaded from the CSV files), and the
peer issue #24 names, chDB (in-process ClickHouse) answering from materialized views, as
a Tinybird user would set it up (``chdb_ms``). The plain SQL over the raw table is
``bench.sql_median`` over ``bench.naive``."""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import psycopg

from bench import COLUMNS, COUNTRY, NAIVE, naive

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
    """({(pipe, label): median ms of 5 after a warm-up}, DuckDB's version), or ({}, None)."""
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
        for label in ("no params", "7-day range"):
            query = naive("duckdb", pipe, label).replace("raw.ecommerce_events", "raw_ecommerce_events")
            duck.execute(query).fetchall()
            times = []
            for _ in range(5):
                t0 = time.perf_counter()
                duck.execute(query).fetchall()
                times.append(time.perf_counter() - t0)
            out[(pipe, label)] = statistics.median(times) * 1000
    duck.close()
    return out, duckdb.__version__


# --------------------------------------------------------------------------- chDB, the peer

CHDB_INSERT = 5000  # events per insert, as a shop's batches arrive (issue #24)
CHDB_RUNS = 40  # queries per cell after a warm-up; the median is reported
CHDB_TABLE = """create table bench.events (event_time DateTime64(6, 'UTC'), event_type LowCardinality(String),
    user_id String, product_id String, category LowCardinality(String), price Float64, quantity Int64,
    session_id String, country LowCardinality(String))
    engine = MergeTree partition by toYYYYMM(event_time) order by (event_time, product_id)"""
#: One AggregatingMergeTree materialized view per pipe, at the grain that answers both of
#: its cells: a day for the ranged pipes (the 7-day range falls on midnights), the
#: 15-minute bin for total_revenue, the filtered column for the README's example.
CHDB_VIEWS = {
    "top_products": """toStartOfDay(event_time) as day, product_id, sumState(quantity) as s_quantity,
        sumState(price * quantity) as s_revenue from bench.events where event_type = 'purchase'
        group by day, product_id""",
    "events_by_country": "toStartOfDay(event_time) as day, country, countState() as events from bench.events"
                         " group by day, country",
    "total_revenue": """toStartOfFifteenMinutes(event_time) as bin, sumState(price * quantity) as s_revenue
        from bench.events where event_type = 'purchase' group by bin""",
    "events_by_type": "event_type, country, countState() as events from bench.events group by event_type, country",
}
CHDB_KEYS = {"top_products": "day, product_id", "events_by_country": "day, country", "total_revenue": "bin",
             "events_by_type": "event_type, country"}
CHDB_DAYS = "where day >= '2026-10-08 00:00:00' and day < '2026-10-15 00:00:00'"
#: Each endpoint's cells as ClickHouse reads its view (-Merge of the states), the same
#: answer, order and limit as the endpoint's.
CHDB_QUERIES = {
    ("top_products", "no params"): """select product_id, sumMerge(s_quantity) as total_quantity,
        sumMerge(s_revenue) as total_revenue from bench.mv_top_products {where} group by product_id
        order by total_revenue desc, product_id limit 10""",
    ("events_by_country", "no params"): """select country, countMerge(events) as event_count
        from bench.mv_events_by_country {where} group by country order by event_count desc, country""",
    ("total_revenue", "no params"): """select bin as time_bin, sumMerge(s_revenue) as total_revenue
        from bench.mv_total_revenue {where} group by bin order by bin""",
    ("events_by_type", "no params"): """select event_type, countMerge(events) as event_count
        from bench.mv_events_by_type {where} group by event_type""",
}


def _chdb_query(pipe: str, label: str) -> str:
    where = {"no params": "", "7-day range": CHDB_DAYS.replace("day", "bin") if pipe == "total_revenue" else CHDB_DAYS,
             f"country={COUNTRY}": f"where country = '{COUNTRY}'"}[label]
    return CHDB_QUERIES[(pipe, "no params")].format(where=where)


def _chdb_load(sess, files: list[Path]) -> float:
    """The CSV files into the MergeTree in CHDB_INSERT-row inserts (the views fed by each);
    returns events per second."""
    rows, t = 0, time.perf_counter()
    for f in files:
        with open(f.with_suffix(".csv")) as fh:
            while chunk := [line for _, line in zip(range(CHDB_INSERT), fh)]:
                sess.query("insert into bench.events settings date_time_input_format = 'best_effort' format CSV\n"
                           + "".join(chunk))
                rows += len(chunk)
    return rows / (time.perf_counter() - t)


def _chdb_run(files: list[Path], cells: list[tuple[str, str]]) -> tuple[dict, str, float]:
    """In a child process (ClickHouse's merge threads end with it, never running beside the
    later measurements): the table, the views, the load, then each cell's median ms."""
    import chdb
    from chdb import session

    sess = session.Session()
    sess.query("create database if not exists bench engine = Atomic")
    sess.query(CHDB_TABLE)
    for pipe, select in CHDB_VIEWS.items():
        sess.query(f"create materialized view bench.mv_{pipe} engine = AggregatingMergeTree"
                   f" order by ({CHDB_KEYS[pipe]}) as select {select}")
    rate, out = _chdb_load(sess, files), {}
    for pipe, label in cells:
        query = _chdb_query(pipe, label)
        for _ in range(3):  # warm-up
            sess.query(query, "CSV").bytes()
        times = []
        for _ in range(CHDB_RUNS):
            t0 = time.perf_counter()
            sess.query(query, "CSV").bytes()
            times.append(time.perf_counter() - t0)
        out[(pipe, label)] = statistics.median(times) * 1000
    sess.close()
    return out, chdb.__version__, rate


def chdb_ms(files: list[Path], cells: list[tuple[str, str]]) -> tuple[dict, str | None, float]:
    """({(pipe, label): median ms of CHDB_RUNS after a warm-up}, chDB's version, its load in
    events/s), or ({}, None, 0) when chdb is not installed (`make bench` installs it)."""
    import importlib.util
    import multiprocessing

    if importlib.util.find_spec("chdb") is None:
        return {}, None, 0.0
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(_chdb_run, (files, cells))
