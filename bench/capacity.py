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

* On a Citus cluster (DATABASE_URL a coordinator's database with workers), in a database
  made for the run on every node (cluster.py): CPU per coordinator core, per worker core
  and for all nodes, WAL per event on each node, the events' spread over the workers;
  reads with the answer cache, without it (``Cache-Control: no-cache``) and on random
  7-day windows (the range edges read from the workers); then every partition converted
  to Citus columnar, its bytes per event and the uncached reads again.

Writes its section into bench/results.md (replacing the previous one for this engine).
DATABASE_URL: measure on that server (e.g. TimescaleDB, or a Citus coordinator; the
replica part then is skipped).
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

import cluster
import psutil
import psycopg
import reads

import bench
from cartpulse.config import PROJECT_DIR
from cartpulse.ops.dbt_runner import run_dbt
from cartpulse.ops.derive import derive
from cartpulse.storage.embedded import EmbeddedPostgres

EVENTS = int(os.environ.get("CAPACITY_EVENTS", 1_000_000))
READ_SECONDS = float(os.environ.get("CAPACITY_READ_SECONDS", 20))
CLIENTS, READERS = 4, 8
IDLE_SECONDS = 10  # on a cluster: the nodes' background CPU with no load, before the reads
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
    """CPU seconds of named process trees between start() and stop(); ``others``
    (cluster.OtherDatabases) takes out what other databases' backends spent on a shared
    server (``excluded``)."""

    def __init__(self, others=None, **pids: int):
        self.pids = pids
        self.others = others

    def __enter__(self):
        if self.others is not None:
            self.others.start()
        self.started = {name: tree_cpu(pid) for name, pid in self.pids.items()}
        self.t = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.wall = time.perf_counter() - self.t
        cpu = {name: tree_cpu(pid) - self.started[name] for name, pid in self.pids.items()}
        self.excluded = self.others.stop() if self.others is not None else {}
        self.cpu = {name: seconds - self.excluded.get(name, 0.0) for name, seconds in cpu.items()}


def wal_position(url: str) -> str:
    with psycopg.connect(url) as conn:
        return conn.execute("select pg_current_wal_lsn()::text").fetchone()[0]


def wal_bytes_since(url: str, start: str) -> int:
    with psycopg.connect(url) as conn:
        return int(conn.execute("select pg_wal_lsn_diff(pg_current_wal_lsn(), %s::pg_lsn)", [start]).fetchone()[0])


def read_load(port: int, token: str, seconds: float, headers: dict | None = None) -> tuple[int, list[float], dict]:
    """READERS threads cycling through MIX for ``seconds`` (each request with ``headers``):
    (requests, latencies ms, sources)."""
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
            body = client.get(pipe, params, headers)
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
        else:  # on Citus, the partitions' shards on the workers (the coordinator's tables are empty)
            size = "citus_total_relation_size" if engine == "citus" else "pg_total_relation_size"
            table = conn.execute(
                f"select sum({size}(inhrelid)) from pg_inherits"
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


def post_files(port: int, token: str, files: list[Path]) -> tuple[int, int]:
    """POST the files' events as BATCH-event NDJSON bodies from CLIENTS connections, each
    its share of the batches: (events acknowledged, request bytes)."""
    from concurrent.futures import ThreadPoolExecutor

    work = [body for f in files for body in bench.batches(f.with_suffix(".ndjson"), bench.BATCH)]
    shares = [(bench.Client(port, token), work[c::CLIENTS]) for c in range(CLIENTS)]
    with ThreadPoolExecutor(CLIENTS) as pool:
        acked = sum(pool.map(lambda s: sum(s[0].post(b)["successful_rows"] for b in s[1]), shares))
    expected = sum(1 for f in files for _ in open(f.with_suffix(".ndjson"), "rb"))
    assert acked == expected, (acked, expected)
    return acked, sum(len(b) for b in work)


def measure_reads(part: str, what: str, meter: Meter, load, nodes: list) -> list[tuple[str, str, str]]:
    """Rows for one read load (``load()`` → (requests, latencies ms)) under ``meter``."""
    with meter as m:
        n, ms = load()
    rows = [
        (part, f"requests/s (8 clients, {what}), wall", bench.per_core(n, m.wall)),
        (part, "p50 / p99 latency (ms)", f"{statistics.median(ms):.1f} / {bench.percentile(ms, 99):.1f}"),
        (part, "requests/s per API core", bench.per_core(n, m.cpu["api"])),
    ]
    rows += cluster.cpu_rows(part, "requests/s", n, m, nodes) if nodes else [
        (part, "requests/s per database core", bench.per_core(n, m.cpu["db"]))]
    print(f"{part}: {n} in {m.wall:.1f} s", flush=True)
    return rows


def main() -> int:
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    bench.WORK = WORK  # the data files go here (bench.make_data writes to bench.WORK)
    print(f"capacity: {EVENTS:,} events", flush=True)
    files = bench.make_data(EVENTS, seed=7)
    load_before = os.getloadavg()

    replica = primary = None
    services: list[subprocess.Popen] = []
    admin_url = os.environ.get("DATABASE_URL")
    # On a Citus cluster, a database of its own on every node (dropped at the end).
    fresh = cluster.make_database(admin_url) if cluster.is_cluster(admin_url) else None
    rows: list[tuple[str, str, str]] = []
    try:
        primary, url, token, settings, engine = bench.prepare(WORK, url=fresh[0] if fresh else None)
        with psycopg.connect(url) as conn:
            version = (conn.execute("select extversion from pg_extension where extname = 'timescaledb'").fetchone()
                       or [""])[0]
        nodes = cluster.nodes(url, admin_url) if fresh else []
        databases = {n.name: n.postmaster for n in nodes} or {"db": bench.postmaster_of(url)}
        port = 19000 + secrets.randbelow(500)
        services.append(bench.serve(WORK, port, url, settings, token))
        api = services[0].pid

        def meter() -> Meter:
            """CPU of the API and of each database server (each node of a cluster)."""
            others = cluster.OtherDatabases(cluster.database_name(url), nodes) if nodes else None
            return Meter(others, api=api, **databases)

        # -- ingest --------------------------------------------------------------------
        if not nodes:
            wal_start = wal_position(url)
            with meter() as m:
                acked, body_bytes = post_files(port, token, files)
            rows += [
                ("ingest", "events/s over HTTP (4 clients, 5,000-event batches), wall", f"{EVENTS / m.wall:,.0f}"),
                ("ingest", "events/s per API core (API CPU seconds)", bench.per_core(EVENTS, m.cpu["api"])),
                ("ingest", "events/s per database core (PostgreSQL CPU seconds)", bench.per_core(EVENTS, m.cpu["db"])),
                ("ingest", "request bytes per event (NDJSON)", f"{body_bytes / EVENTS:.0f}"),
                ("ingest", "WAL bytes per event (what each replica receives and replays)",
                 f"{wal_bytes_since(url, wal_start) / EVENTS:.0f}"),
            ]
            print(f"ingest: API {m.cpu['api']:.1f} s CPU, DB {m.cpu['db']:.1f} s CPU, wall {m.wall:.1f} s", flush=True)
        # On a cluster, half the events as Citus comes, half with connections to the workers
        # kept between transactions (the API is restarted to take the setting).
        for half, (part, kept) in enumerate(cluster.INGEST_PARTS if nodes else []):
            if kept:
                cluster.keep_connections(url, kept)
                services[-1].send_signal(signal.SIGTERM)
                services[-1].wait(timeout=60)
                port += 1
                services.append(bench.serve(WORK, port, url, settings, token))
                api = services[-1].pid
            wal_start, opened = cluster.wal_positions(nodes), cluster.sessions(nodes)
            with meter() as m:
                acked, body_bytes = post_files(port, token, files[half::2])
            rows += [(part, "events/s over HTTP (4 clients, 5,000-event batches), wall", f"{acked / m.wall:,.0f}"),
                     (part, "events/s per API core (API CPU seconds)", bench.per_core(acked, m.cpu["api"])),
                     *cluster.cpu_rows(part, "events/s", acked, m, nodes),
                     *cluster.wal_rows(part, cluster.wal_bytes_since(nodes, wal_start), acked, nodes),
                     cluster.sessions_row(part, opened, acked / bench.BATCH, nodes)]
            print(f"{part}: {', '.join(f'{k} {v:.1f}' for k, v in m.cpu.items())} s CPU, wall {m.wall:.1f} s",
                  flush=True)
        if nodes:
            rows += [("ingest", "request bytes per event (NDJSON)", f"{body_bytes / acked:.0f}"),
                     cluster.distribution_row(url, EVENTS)]

        derive(settings, url)  # as `cartpulse build` does, outside the measured refresh
        with meter() as m:
            run_dbt(settings, url, "run", "--quiet", capture=True)
        if nodes:
            rows.append(cluster.refresh_row(EVENTS, m, nodes))
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("vacuum analyze")
            if nodes:  # an unnamed VACUUM stays on the coordinator; a named one reaches the shards
                conn.execute("vacuum analyze raw.ecommerce_events")
        if nodes:  # what the nodes spend with nothing asked of them, part of every read figure below
            with meter() as m:
                time.sleep(IDLE_SECONDS)  # an interval measured, not an event awaited
            rows.append(cluster.idle_row(m, nodes))

        # -- storage -------------------------------------------------------------------
        size = storage_bytes(url, engine, settings.dbt_schema)
        rows += [("storage", "bytes per event: events table + indexes", f"{size['table'] / size['events']:.0f}"),
                 ("storage", "rollups, all (bytes; grow with products × days, not events)",
                  f"{size['rollups'] / 2**20:.1f} MiB")]
        if nodes:
            rows += cluster.storage_rows(url, size["events"], "heap")
        if engine == "timescaledb":
            seconds = compress_all(url)
            packed = storage_bytes(url, engine, settings.dbt_schema)
            rows += [("storage", "bytes per event: compressed (TimescaleDB, every chunk)",
                      f"{packed['table'] / packed['events']:.0f}"),
                     ("storage", "compression ratio; compressing every chunk took",
                      f"{size['table'] / packed['table']:.1f}×; {seconds:.0f} s")]

        # -- reads on the primary alone (the coordinator) ------------------------------
        def mix(headers: dict | None = None):
            def load():
                n, ms, sources = read_load(port, token, READ_SECONDS, headers)
                assert set(sources) == {"primary"}, sources
                return n, ms
            return load

        def windows():
            result = reads.random_windows(port, token, READ_SECONDS)
            return result.requests, result.ms

        if not nodes:
            rows += measure_reads("reads, primary only", "the 6-query mix", meter(), mix(), nodes)
        else:
            rows += measure_reads("reads, cache on", "the 6-query mix", meter(), mix(), nodes)
            rows += measure_reads("reads, no cache", "the 6-query mix, `Cache-Control: no-cache`", meter(),
                                  mix(reads.NO_CACHE), nodes)
            rows += measure_reads("reads, random windows", "random 7-day windows, none twice", meter(), windows, nodes)
            # -- columnar: every partition converted, then the uncached reads again --------
            seconds, converted = cluster.to_columnar(url)
            packed = storage_bytes(url, engine, settings.dbt_schema)
            rows += [("storage", "bytes per event: Citus columnar (every partition, indexes included)",
                      f"{packed['table'] / packed['events']:.0f}"),
                     ("storage", "columnar ratio; converting every partition took",
                      f"{size['table'] / packed['table']:.1f}×; {seconds:.0f} s ({converted} partition(s))")]
            rows += cluster.storage_rows(url, packed["events"], "columnar")
            rows += measure_reads("reads on columnar, no cache", "the 6-query mix, `Cache-Control: no-cache`",
                                  meter(), mix(reads.NO_CACHE), nodes)
            rows += measure_reads("reads on columnar, random windows", "random 7-day windows, none twice", meter(),
                                  windows, nodes)

        # -- reads through a streaming replica -----------------------------------------
        if primary is not None:
            db = databases["db"]
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
                ("reads, via replica", "requests/s per replica core", bench.per_core(n, m.cpu["replica"])),
                ("reads, via replica", "requests/s per API core", bench.per_core(n, m.cpu["api"])),
                ("reads, via replica", "requests/s per primary core (token, rate limit, pipe_stats)",
                 bench.per_core(n, m.cpu["db"])),
                ("reads, via replica", "pg_basebackup of the whole server (s)", f"{copy_s:.1f}"),
            ]
            print(f"reads via the replica: {n} in {m.wall:.1f} s, {sources}", flush=True)
        header = cluster.describe(url, nodes) if nodes else None
    finally:
        for proc in services:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=60)
        for server in (replica, primary):
            if server is not None:
                server.stop()
        if fresh:
            try:
                cluster.drop_database(admin_url, fresh[1])
            except psycopg.Error as exc:  # the figures are kept; the database is named for the operator
                print(f"could not drop the run's database {fresh[1]} on every node: {exc}", flush=True)

    load = f"load average (1 min) {load_before[0]:.2f} before, {os.getloadavg()[0]:.2f} after"
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    server = header or ('embedded PostgreSQL 18 + a streaming replica' if primary else 'DATABASE_URL'
                        + (f", TimescaleDB {version}" if version else ""))
    section = [
        f"<!-- capacity:{engine} -->",
        f"## Capacity figures on {engine} (`make bench`, second part: bench/capacity.py)", "",
        f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC; {EVENTS:,} events (30 days, as above); {os.cpu_count()}"
        f" cores ({cpu}), {load}; {server}; `cartpulse serve` with {bench.WEB_WORKERS} workers × {bench.WEB_THREADS} threads."
        " Per-core figures divide by CPU seconds of that process tree (user + system, exited children"
        " included), so they do not depend on the load generator sharing the machine.", "",
        *([cluster.NOTE, ""] if nodes else []),
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
