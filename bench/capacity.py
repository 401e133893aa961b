"""`make bench` (second part) or `make bench-capacity`: the figures docs/scaling.md builds on.

Measured in one run, on whatever the machine is: CPU seconds, not wall time, so that a
figure per core does not depend on how many cores the load generator, the API and
PostgreSQL share here.

* Ingest: CAPACITY_EVENTS events (default 1,000,000) over HTTP from 4 clients to
  `cartpulse serve`; CPU seconds of the API's process tree and of PostgreSQL's process
  tree (reaped backends included) → events/s per API core and per database core.
* Storage: bytes per stored event (table + indexes), the rollups' bytes, and on
  TimescaleDB the same after compressing every chunk with CartPulse's settings.
* Reads: a mix of the three pipes (no parameters / 7-day range) at concurrency 8 for
  CAPACITY_READ_SECONDS (default 20), first served by the primary alone, then (embedded
  server only) by a streaming replica made with pg_basebackup, with the API pointed at it
  through READ_DATABASE_URLS → requests/s per replica core, per API core, and what each
  read still costs the primary (token, rate limit, statistics).

Writes its section into bench/results.md (replacing the previous one for this engine).
DATABASE_URL: measure on that server (e.g. TimescaleDB; the replica part then is skipped).
"""

from __future__ import annotations

import itertools
import os
import re
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import psutil
import psycopg

import bench
from cartpulse.config import PROJECT_DIR
from cartpulse.ops.dbt_runner import run_dbt
from cartpulse.storage.embedded import EmbeddedPostgres

EVENTS = int(os.environ.get("CAPACITY_EVENTS", 1_000_000))
READ_SECONDS = float(os.environ.get("CAPACITY_READ_SECONDS", 20))
CLIENTS, READERS = 4, 8
WORK = PROJECT_DIR / ".cartpulse" / "capacity"
RESULTS = bench.out_path()  # results.md, or results-<EVENTS>.md for another EVENTS
MIX = [(pipe, params) for pipe in bench.NAIVE for params in ({}, bench.WEEK)]


def tree_cpu(pid: int) -> float:
    """CPU seconds (user + system) of a process and all its descendants so far,
    including those already exited and reaped (their time is in the parent's
    ``children_*``): PostgreSQL backends, gunicorn workers."""
    try:
        root = psutil.Process(pid)
        t = root.cpu_times()
        total = t.user + t.system + t.children_user + t.children_system
        for child in root.children(recursive=True):
            try:
                c = child.cpu_times()
                total += c.user + c.system
            except psutil.Error:
                pass
        return total
    except psutil.Error:
        return 0.0


class Meter:
    """CPU seconds of named process trees between start() and stop()."""

    def __init__(self, **pids: int):
        self.pids = pids

    def __enter__(self):
        self.started = {name: tree_cpu(pid) for name, pid in self.pids.items()}
        self.t = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.wall = time.perf_counter() - self.t
        self.cpu = {name: tree_cpu(pid) - self.started[name] for name, pid in self.pids.items()}


def wal_position(url: str) -> str:
    with psycopg.connect(url) as conn:
        return conn.execute("select pg_current_wal_lsn()::text").fetchone()[0]


def wal_bytes_since(url: str, start: str) -> int:
    with psycopg.connect(url) as conn:
        return int(conn.execute("select pg_wal_lsn_diff(pg_current_wal_lsn(), %s::pg_lsn)", [start]).fetchone()[0])


def read_load(port: int, token: str, seconds: float) -> tuple[int, list[float], dict]:
    """READERS threads cycling through MIX for ``seconds``: (requests, latencies ms, sources)."""
    deadline = time.perf_counter() + seconds
    latencies: list[float] = []
    sources: dict[str, int] = {}
    lock = threading.Lock()

    def reader(offset: int):
        client = bench.Client(port, token)
        for pipe, params in itertools.islice(itertools.cycle(MIX), offset, None):
            if time.perf_counter() >= deadline:
                return
            t0 = time.perf_counter()
            body = client.get(pipe, params)
            ms = (time.perf_counter() - t0) * 1000
            with lock:
                latencies.append(ms)
                source = body["statistics"]["source"]
                sources[source] = sources.get(source, 0) + 1

    threads = [threading.Thread(target=reader, args=(i,)) for i in range(READERS)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return len(latencies), latencies, sources


def storage_bytes(url: str, engine: str, dbt_schema: str) -> dict:
    with psycopg.connect(url) as conn:
        events = conn.execute("select count(*) from raw.ecommerce_events").fetchone()[0]
        if engine == "timescaledb":
            table = conn.execute("select hypertable_size('raw.ecommerce_events')").fetchone()[0]
        else:
            table = conn.execute(
                "select sum(pg_total_relation_size(inhrelid)) from pg_inherits"
                " where inhparent = 'raw.ecommerce_events'::regclass").fetchone()[0]
        rollups = conn.execute(
            "select coalesce(sum(pg_total_relation_size(c.oid)), 0) from pg_class c join pg_namespace n"
            " on n.oid = c.relnamespace where n.nspname = %s and c.relkind in ('r', 'm')",
            [dbt_schema]).fetchone()[0]
    return {"events": events, "table": int(table), "rollups": int(rollups)}


def compress_all(url: str) -> float:
    """Compress every chunk with CartPulse's compression settings (storage.py); seconds."""
    from cartpulse.config import Settings
    from cartpulse.project.datasources import for_settings
    from cartpulse.storage.schema import _compression

    events = for_settings(Settings.from_env())["ecommerce_events"]

    with psycopg.connect(url, autocommit=True) as conn:
        enabled = conn.execute("select compression_enabled from timescaledb_information.hypertables"
                               " where hypertable_schema = 'raw' and hypertable_name = 'ecommerce_events'").fetchone()
        if not enabled[0]:
            conn.execute(_compression(events))
        t = time.perf_counter()
        conn.execute("select compress_chunk(c, if_not_compressed => true)"
                     " from show_chunks('raw.ecommerce_events') c")
        return time.perf_counter() - t


def per_core(count: float, cpu: float) -> str:
    return f"{count / cpu:,.0f}" if cpu > 0 else "—"


def main() -> int:
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    bench.WORK = WORK  # the data files go here (bench.make_data writes to bench.WORK)
    print(f"capacity: {EVENTS:,} events", flush=True)
    files = bench.make_data(EVENTS, seed=7)

    replica = None
    services: list[subprocess.Popen] = []
    primary, url, token, settings, engine = bench.prepare(WORK)
    with psycopg.connect(url) as conn:
        version = (conn.execute("select extversion from pg_extension where extname = 'timescaledb'").fetchone()
                   or [""])[0]
    rows: list[tuple[str, str, str]] = []
    try:
        port = 19000 + secrets.randbelow(500)
        services.append(bench.serve(WORK, port, url, settings, token))
        api, db = services[0].pid, bench.postmaster_of(url)

        # -- ingest --------------------------------------------------------------------
        work = [body for f in files for body in bench.batches(f.with_suffix(".ndjson"), bench.BATCH)]
        shares = [(bench.Client(port, token), work[c::CLIENTS]) for c in range(CLIENTS)]
        body_bytes = sum(len(b) for b in work)
        from concurrent.futures import ThreadPoolExecutor

        wal_start = wal_position(url)
        with Meter(api=api, db=db) as m, ThreadPoolExecutor(CLIENTS) as pool:
            acked = sum(pool.map(lambda s: sum(s[0].post(b)["successful_rows"] for b in s[1]), shares))
        assert acked == EVENTS, (acked, EVENTS)
        wal_bytes = wal_bytes_since(url, wal_start)
        del work, shares
        rows += [
            ("ingest", "events/s over HTTP (4 clients, 5,000-event batches), wall", f"{EVENTS / m.wall:,.0f}"),
            ("ingest", "events/s per API core (API CPU seconds)", per_core(EVENTS, m.cpu["api"])),
            ("ingest", "events/s per database core (PostgreSQL CPU seconds)", per_core(EVENTS, m.cpu["db"])),
            ("ingest", "request bytes per event (NDJSON)", f"{body_bytes / EVENTS:.0f}"),
            ("ingest", "WAL bytes per event (what each replica receives and replays)", f"{wal_bytes / EVENTS:.0f}"),
        ]
        print(f"ingest: API {m.cpu['api']:.1f} s CPU, DB {m.cpu['db']:.1f} s CPU, wall {m.wall:.1f} s", flush=True)

        run_dbt(settings, url, "run", "--quiet", capture=True)
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("vacuum analyze")

        # -- storage -------------------------------------------------------------------
        size = storage_bytes(url, engine, settings.dbt_schema)
        rows += [("storage", "bytes per event: events table + indexes", f"{size['table'] / size['events']:.0f}"),
                 ("storage", "rollups, all (bytes; grow with products × days, not events)",
                  f"{size['rollups'] / 2**20:.1f} MiB")]
        if engine == "timescaledb":
            seconds = compress_all(url)
            packed = storage_bytes(url, engine, settings.dbt_schema)
            rows += [("storage", "bytes per event: compressed (TimescaleDB, every chunk)",
                      f"{packed['table'] / packed['events']:.0f}"),
                     ("storage", "compression ratio; compressing every chunk took",
                      f"{size['table'] / packed['table']:.1f}×; {seconds:.0f} s")]

        # -- reads on the primary alone ------------------------------------------------
        with Meter(api=api, db=db) as m:
            n, ms, sources = read_load(port, token, READ_SECONDS)
        assert set(sources) == {"primary"}, sources
        rows += [
            ("reads, primary only", "requests/s (8 clients, the 6-query mix), wall", f"{n / m.wall:,.0f}"),
            ("reads, primary only", "p50 / p99 latency (ms)",
             f"{statistics.median(ms):.1f} / {bench.percentile(ms, 99):.1f}"),
            ("reads, primary only", "requests/s per API core", per_core(n, m.cpu["api"])),
            ("reads, primary only", "requests/s per database core", per_core(n, m.cpu["db"])),
        ]
        print(f"reads on the primary: {n} in {m.wall:.1f} s", flush=True)

        # -- reads through a streaming replica -----------------------------------------
        if primary is not None:
            replica = EmbeddedPostgres(WORK / "replica", settings={"hot_standby_feedback": "on"})
            t = time.perf_counter()
            replica.follow(primary)
            copy_s = time.perf_counter() - t
            replica.start()
            services[0].send_signal(signal.SIGTERM)
            services[0].wait(timeout=60)
            port = port + 500
            services.append(bench.serve(WORK, port, url, settings, token, READ_DATABASE_URLS=replica.url))
            api, standby = services[-1].pid, bench.postmaster_of(replica.url)
            bench.Client(port, token).get("events_by_country", {})
            time.sleep(3)  # every worker's monitor has put the replica in rotation
            with Meter(api=api, db=db, replica=standby) as m:
                n, ms, sources = read_load(port, token, READ_SECONDS)
            on_replica = sources.get("replica-1", 0)
            rows += [
                ("reads, via replica", "requests/s (same mix), wall; answered by the replica",
                 f"{n / m.wall:,.0f}; {on_replica / n:.1%}"),
                ("reads, via replica", "p50 / p99 latency (ms)",
                 f"{statistics.median(ms):.1f} / {bench.percentile(ms, 99):.1f}"),
                ("reads, via replica", "requests/s per replica core", per_core(n, m.cpu["replica"])),
                ("reads, via replica", "requests/s per API core", per_core(n, m.cpu["api"])),
                ("reads, via replica", "requests/s per primary core (token, rate limit, pipe_stats)",
                 per_core(n, m.cpu["db"])),
                ("reads, via replica", "pg_basebackup of the whole server (s)", f"{copy_s:.1f}"),
            ]
            print(f"reads via the replica: {n} in {m.wall:.1f} s, {sources}", flush=True)
    finally:
        for proc in services:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=60)
        for server in (replica, primary):
            if server is not None:
                server.stop()

    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    section = [
        f"<!-- capacity:{engine} -->",
        f"## Capacity figures on {engine} (`make bench`, second part: bench/capacity.py)", "",
        f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC; {EVENTS:,} events (30 days, as above); {os.cpu_count()}"
        f" cores ({cpu}); {'embedded PostgreSQL 18 + a streaming replica' if primary else 'DATABASE_URL'}"
        + (f", TimescaleDB {version}" if version else "") + f"; `cartpulse serve` with {bench.WEB_WORKERS} workers × {bench.WEB_THREADS} threads."
        " Per-core figures divide by CPU seconds of that process tree (user + system, exited children"
        " included), so they do not depend on the load generator sharing the machine.", "",
        "| part | measure | value |", "|---|---|---|",
        *[f"| {a} | {b} | {c} |" for a, b, c in rows],
        f"<!-- /capacity:{engine} -->",
    ]
    text = "\n".join(section)
    print("\n" + text + "\n")
    write_section(RESULTS, engine, text)
    print(f"written to {RESULTS}")
    return 0


def write_section(path: Path, engine: str, text: str) -> None:
    """Replace this engine's capacity section in the results file, or add it at the end."""
    old = path.read_text() if path.exists() else "# Benchmark results\n"
    pattern = re.compile(rf"<!-- capacity:{engine} -->.*?<!-- /capacity:{engine} -->", re.S)
    new = pattern.sub(lambda _: text, old) if pattern.search(old) else old.rstrip("\n") + "\n\n" + text + "\n"
    path.write_text(new)


def kept_sections(path: Path) -> str:
    """The capacity sections of a results file (bench.py keeps them when it rewrites it)."""
    if not path.exists():
        return ""
    found = re.findall(r"<!-- capacity:\w+ -->.*?<!-- /capacity:\w+ -->", path.read_text(), re.S)
    return "".join("\n" + block + "\n" for block in found)


if __name__ == "__main__":
    sys.exit(main())
