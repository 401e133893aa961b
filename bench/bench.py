"""`make bench`: CartPulse at EVENTS events (default 10,000,000), measured in one run.

Each figure is measured as a user meets it, on the same machine in the same run
(issue #24's table, and issue #12's before it):

1. latency at concurrency 1, every endpoint (the seed's three, and the README's example
   ``events_by_type``, added to the bench's copy of the project as the README shows it),
   no parameters and a 7-day range (a country for the README's example, which has no
   range), as sent and with ``Cache-Control: no-cache`` (p50, p99, and the ratio to the
   plain SQL over the raw table, measured at the same moment): (a) after a refresh, (b)
   immediately after a bulk load of BULK_EVENTS more events through the HTTP API (bulk
   imports of BULK_IMPORT_ROWS rows), no refresh in between, (c) while 1,000 events/s
   arrive as 100 POSTs/s of 10 events, the absorber running (writes.py);
2. throughput at concurrency 8: the 6-query mix, and random 7-day windows (reads.py);
3. refresh cost: a minute of events at MINUTE_RATE/s absorbed by one
   ``cartpulse.absorb()``; an absorption with nothing new (CPU seconds, service plus
   database backend); ``cartpulse scheduler`` under MINUTE_RATE events/s for
   ABSORBER_SECONDS (CPU of its process tree and backends; refresh_cost.py);
4. ingest over HTTP against a raw COPY of the same rows;
5. the breakdown of one read from each answer's Server-Timing header;
6. beside a peer: chDB (in-process ClickHouse) answering every cell from materialized
   views over the same events (baselines.chdb_ms), against the uncached p50 over HTTP;
and beside them: DuckDB on the same rows, freshness, `dbt run` after a backfill and with
--full-refresh, peak memory. Writes bench/results.md (report.py), or
bench/results-<EVENTS>.md when EVENTS is not the default.

Environment: EVENTS, CLIENTS (ingest clients, 4), BATCH (events per POST, 5000),
REQUESTS (rounds of the latency cells, 200), MINUTE_RATE (1000), MINUTE_SECONDS (60), BULK_EVENTS (1,000,000),
BULK_IMPORT_ROWS (250,000), THROUGHPUT_SECONDS (20), ABSORBER_SECONDS (300), IDLE_RUNS (20),
WEB_WORKERS/WEB_THREADS (the service's defaults, 2/4), WRITE_POSTS/WRITE_BATCH/WRITE_CONNECTIONS
(the writes moment: 100, 10, 4), WRITE_WARMUP (its seconds of writes before the first read, 3),
BENCH_OUT (the results file),
DATABASE_URL (else a fresh embedded server under .cartpulse/bench).
"""

from __future__ import annotations

import http.client
import json
import os
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from multiprocessing import Pool
from pathlib import Path
from urllib.parse import urlencode

import psutil
import psycopg

from cartpulse.cli.event_generator import EventGenerator
from cartpulse.config import PROJECT_DIR, Settings
from cartpulse.ops.dbt_runner import run_dbt
from cartpulse.ops.derive import derive
from cartpulse.storage.embedded import EmbeddedPostgres
from cartpulse.storage.schema import create_storage

DEFAULT_EVENTS = 10_000_000
EVENTS = int(os.environ.get("EVENTS", DEFAULT_EVENTS))
CLIENTS = int(os.environ.get("CLIENTS", 4))
BATCH = int(os.environ.get("BATCH", 5000))
REQUESTS = int(os.environ.get("REQUESTS", 200))
MINUTE_RATE = int(os.environ.get("MINUTE_RATE", 1000))
MINUTE_SECONDS = int(os.environ.get("MINUTE_SECONDS", 60))  # "a minute of events"; shorter only for a smoke run
BULK_EVENTS = int(os.environ.get("BULK_EVENTS", 1_000_000))
BULK_IMPORT_ROWS = int(os.environ.get("BULK_IMPORT_ROWS", 250_000))
THROUGHPUT_SECONDS = float(os.environ.get("THROUGHPUT_SECONDS", 20))
ABSORBER_SECONDS = float(os.environ.get("ABSORBER_SECONDS", 300))
IDLE_RUNS = int(os.environ.get("IDLE_RUNS", 20))
WEB_WORKERS = os.environ.get("WEB_WORKERS", "2")  # the service's defaults (README: configuration)
WEB_THREADS = os.environ.get("WEB_THREADS", "4")
START = datetime(2026, 10, 1, tzinfo=timezone.utc)
SPAN = timedelta(days=30)
WEEK = {"start_date": "2026-10-08 00:00:00", "end_date": "2026-10-15 00:00:00"}
HERE = Path(__file__).resolve().parent
WORK = PROJECT_DIR / ".cartpulse" / "bench"
COLUMNS = "event_time, event_type, user_id, product_id, category, price, quantity, session_id, country"

# --------------------------------------------------------------------------- data


def _write_part(args) -> int:
    """Generate one part of the data set as NDJSON and as CSV (the same rows)."""
    part, count, seed, start, prefix = args
    gen = EventGenerator(seed=seed, start=start, span=SPAN)
    countries = {}
    with open(WORK / f"{prefix}-{part}.ndjson", "w") as nd, open(WORK / f"{prefix}-{part}.csv", "w") as csv:
        for _ in range(count):
            e = gen.event()
            c = e["country"]
            if c not in countries:
                countries[c] = (json.dumps(c), '"' + c.replace('"', '""') + '"')
            nd.write(f'{{"event_time":"{e["event_time"]}","event_type":"{e["event_type"]}",'
                     f'"user_id":"{e["user_id"]}","product_id":"{e["product_id"]}","category":"{e["category"]}",'
                     f'"price":{e["price"]!r},"quantity":{e["quantity"]},"session_id":"{e["session_id"]}",'
                     f'"country":{countries[c][0]}}}\n')
            csv.write(f'{e["event_time"]}+00,{e["event_type"]},{e["user_id"]},{e["product_id"]},{e["category"]},'
                      f'{e["price"]!r},{e["quantity"]},{e["session_id"]},{countries[c][1]}\n')
    return count


def make_data(events: int, parts: int = 2, seed: int = 1, start: datetime = START, prefix: str = "events") -> list[Path]:
    """<prefix>-<n>.ndjson/.csv under WORK, reused when already made for this size."""
    stamp = WORK / f"{prefix}-data-{events}-{seed}.done"
    files = [WORK / f"{prefix}-{p}" for p in range(parts)]
    if not stamp.exists():
        for old in WORK.glob(f"{prefix}-data-*.done"):
            old.unlink()
        sizes = [events // parts + (1 if p < events % parts else 0) for p in range(parts)]
        with Pool(parts) as pool:
            pool.map(_write_part, [(p, n, seed * 100 + p, start, prefix) for p, n in enumerate(sizes)])
        stamp.touch()
    return files


def batches(path: Path, size: int):
    """NDJSON bodies of `size` lines from a file."""
    with open(path, "rb") as fh:
        lines = []
        for line in fh:
            lines.append(line)
            if len(lines) == size:
                yield b"".join(lines)
                lines = []
        if lines:
            yield b"".join(lines)


# --------------------------------------------------------------------------- HTTP


class Client:
    """One keep-alive HTTP connection (one per thread)."""

    def __init__(self, port: int, token: str):
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
        self.headers = {"Authorization": f"Bearer {token}"}
        self.timing: str | None = None  # the last answer's Server-Timing header
        self.cache: str | None = None  # and its CartPulse-Cache header (hit, miss)
        #: Where posts go: BENCH_DATASOURCE (tinybird.py's imported data source) or the seed's.
        self.datasource = os.environ.get("BENCH_DATASOURCE", "ecommerce_events")

    def _send(self, method: str, path: str, body: bytes | None = None, **headers):
        """One request; reconnects once if the server closed the idle connection."""
        for attempt in (1, 2):
            try:
                self.conn.request(method, path, body=body, headers={**self.headers, **headers})
                resp = self.conn.getresponse()
                return resp, resp.read()
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                self.conn.close()
                if attempt == 2:
                    raise

    def post(self, body: bytes) -> dict:
        resp, data = self._send("POST", f"/v0/events?name={self.datasource}", body)
        if resp.status not in (200, 202):
            raise RuntimeError(f"ingest answered {resp.status}: {data[:300]!r}")
        return json.loads(data)

    def bulk_import(self, body: bytes) -> dict:
        """A bulk import (``POST /v0/datasources``, mode=append) of an NDJSON body."""
        resp, data = self._send("POST", f"/v0/datasources?name={self.datasource}&mode=append&format=ndjson", body,
                                **{"Content-Type": "application/x-ndjson"})
        if resp.status != 200:
            raise RuntimeError(f"bulk import answered {resp.status}: {data[:300]!r}")
        return json.loads(data)

    def metadata(self, pipe: str) -> dict:
        """``GET /v0/pipes/<pipe>``: the pipe's description, its ``derivation`` included."""
        resp, data = self._send("GET", f"/v0/pipes/{pipe}")
        if resp.status != 200:
            raise RuntimeError(f"{pipe}'s metadata answered {resp.status}: {data[:300]!r}")
        return json.loads(data)

    def get(self, pipe: str, params: dict, headers: dict | None = None) -> dict:
        query = ("?" + urlencode(params)) if params else ""
        resp, data = self._send("GET", f"/v0/pipes/{pipe}.json{query}", **(headers or {}))
        if resp.status != 200:
            raise RuntimeError(f"{pipe} answered {resp.status}: {data[:300]!r}")
        self.timing = resp.getheader("Server-Timing")
        self.cache = resp.getheader("CartPulse-Cache")
        return json.loads(data)


def per_core(count: float, seconds: float) -> str:
    """``count`` per CPU second (per busy core) or per second of wall time, formatted (a
    decimal below 100); — when nothing was measured."""
    if seconds <= 0:
        return "—"
    rate = count / seconds
    return f"{rate:,.0f}" if rate >= 100 else f"{rate:.1f}"


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


# --------------------------------------------------------------------------- memory


class MemoryWatch(threading.Thread):
    """Peak proportional set size (PSS: shared pages split fairly) of two process trees."""

    def __init__(self, service_pid: int, postgres_pid: int | None):
        super().__init__(daemon=True)
        self.pids = {"service": service_pid, "postgres": postgres_pid}
        self.peak = {"service": 0, "postgres": 0}
        self.stop = threading.Event()

    @staticmethod
    def _tree_pss(pid: int | None) -> int:
        if pid is None:
            return 0
        try:
            root = psutil.Process(pid)
            total = 0
            for proc in [root, *root.children(recursive=True)]:
                try:
                    info = proc.memory_full_info()
                    total += getattr(info, "pss", info.rss)
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    pass
            return total
        except psutil.NoSuchProcess:
            return 0

    def run(self):
        while not self.stop.is_set():
            for name, pid in self.pids.items():
                self.peak[name] = max(self.peak[name], self._tree_pss(pid))
            time.sleep(0.5)


# --------------------------------------------------------------------------- the run


def sql_median(url: str, query: str, params=None, runs: int = 5, options: str = "") -> float:
    """Median seconds of ``runs`` executions after a warm-up, in a session opened with
    ``options`` (libpq's: ``-c name=value``…)."""
    times = []
    with psycopg.connect(url, options=options) as conn:
        conn.execute(query, params).fetchall()  # warm-up
        for _ in range(runs):
            t = time.perf_counter()
            conn.execute(query, params).fetchall()
            times.append(time.perf_counter() - t)
    return statistics.median(times)


NAIVE = {
    "top_products": """select product_id, sum(quantity) as total_quantity, sum(price * quantity) as total_revenue
        from raw.ecommerce_events where event_type = 'purchase' {range}
        group by product_id order by total_revenue desc limit 10""",
    "events_by_country": """select country, count(*) as event_count from raw.ecommerce_events
        where true {range} group by country order by event_count desc""",
    "total_revenue": """select {bin} as time_bin, sum(price * quantity) as total_revenue
        from raw.ecommerce_events where event_type = 'purchase' {range} group by 1 order by 1""",
}
PG_BIN = "date_bin('15 minutes', event_time, timestamptz '2000-01-01')"
DUCK_BIN = "time_bucket(interval '15 minutes', event_time, timestamptz '2000-01-01')"
RANGE_SQL = "and event_time >= '2026-10-08 00:00:00+00' and event_time < '2026-10-15 00:00:00+00'"
#: The README's example endpoint ("Adding an endpoint"), measured beside the seed's three
#: (issue #24: every endpoint a user adds the README's way must be fast too). It declares
#: no range parameter, only ``country``: its second cell filters on that instead.
README_ENDPOINT = "events_by_type"
README_NAIVE = {README_ENDPOINT: """select event_type, count(*)::bigint as event_count from raw.ecommerce_events
        where true {range} group by event_type"""}
COUNTRY = "France"
#: Each cell's label → its request parameters and the filter its plain SQL adds.
LABELS = {"no params": ({}, ""), "7-day range": (WEEK, RANGE_SQL),
          f"country={COUNTRY}": ({"country": COUNTRY}, f"and country = '{COUNTRY}'")}


def naive(engine: str, pipe: str, label: str) -> str:
    """The plain SQL of ``pipe`` over the raw table, with the filter of the cell ``label``."""
    sql = {**NAIVE, **README_NAIVE}[pipe]
    return sql.format(range=LABELS[label][1], bin=DUCK_BIN if engine == "duckdb" else PG_BIN)


def dbt_timed(settings: Settings, url: str, *args) -> tuple[float, float]:
    """(wall seconds of the dbt command, seconds spent in its models and hooks)."""
    t = time.perf_counter()
    result = run_dbt(settings, url, *args, capture=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"dbt {' '.join(args)} failed:\n{result.stdout[-3000:]}{result.stderr[-2000:]}")
    wall = time.perf_counter() - t
    results = json.loads((settings.target_dir / "run_results.json").read_text())
    return wall, sum(r["execution_time"] for r in results["results"])


def postmaster_of(url: str) -> int | None:
    """The server's postmaster, to watch its whole process tree (a local server only).

    Read while the connection is open: once it closes, its backend exits."""
    with psycopg.connect(url) as conn:
        backend = conn.execute("select pg_backend_pid()").fetchone()[0]
        try:
            return psutil.Process(backend).ppid()
        except psutil.Error:
            return None


def readme_files(readme: Path = PROJECT_DIR / "README.md") -> dict[str, str]:
    """The files README's "Adding an endpoint" shows (``<!-- readme-test: file PATH -->``
    before a fenced block), read from the README itself so the bench serves exactly what a
    user following it writes (tests/test_readme.py builds the same blocks)."""
    files, lines = {}, readme.read_text().splitlines()
    for i, line in enumerate(lines):
        if line.startswith("<!-- readme-test: file "):
            path = line.split("file ", 1)[1].removesuffix("-->").strip()
            end = lines.index("```", i + 2)
            files[path] = "\n".join(lines[i + 2:end]) + "\n"
    return files


def project_copy(work: Path) -> Path:
    """The dbt project copied to ``work``/project with the README's example endpoint added
    (a model file and its yml, nothing else), so the bench never writes into the checkout
    and its derived models (ops/derive.py writes them beside the models) stay its own."""
    project = work / "project"
    shutil.rmtree(project, ignore_errors=True)
    shutil.copytree(PROJECT_DIR, project, ignore=shutil.ignore_patterns(
        ".venv", ".cartpulse", "target", "logs", ".git", "service", "tests", "bench", "derived", "*.pyc"))
    for path, text in readme_files().items():
        (project / path).write_text(text)
    return project


def prepare(work: Path, url: str | None = None, project: Path | None = None
            ) -> tuple[EmbeddedPostgres | None, str, str, Settings, str]:
    """A database with storage, an admin token and the models built, from a copy of the
    project with the README's example endpoint (``project_copy``): ``url`` when given
    (capacity.py's fresh Citus database), else DATABASE_URL when set, else a new embedded
    server under ``work``; ``project`` instead of that copy (tinybird.py's, with an
    import). Returns (server or None, url, token, settings, engine)."""
    from cartpulse.access.auth import ensure_admin_token

    server = None
    url = url or os.environ.get("DATABASE_URL")
    if not url:
        shutil.rmtree(work / "pgdata", ignore_errors=True)
        server = EmbeddedPostgres(work / "pgdata")
        url = server.start()
    token = "bench-" + secrets.token_hex(12)
    settings = Settings.from_env(database_url=url, state_dir=work / "state", target_dir=work / "target",
                                 admin_token=token, project_dir=project or project_copy(work))
    engine = create_storage(url, settings)
    ensure_admin_token(url, settings.state_dir, token)
    derive(settings, url)  # the endpoints' rollups and answers, as `cartpulse build` writes them
    run_dbt(settings, url, "run", "--quiet", capture=True)
    return server, url, token, settings, engine


def service_env(port: int, url: str, settings: Settings, token: str, **env) -> dict:
    """The environment of the bench's `cartpulse serve` and `cartpulse scheduler`. The rate
    limiter stays on (its cost is part of every request) but high enough that no benchmark
    client is ever throttled."""
    return {**os.environ, "DATABASE_URL": url, "PORT": str(port), "TB_ADMIN_TOKEN": token,
            "DBT_TARGET_PATH": str(settings.target_dir), "CARTPULSE_STATE_DIR": str(settings.state_dir),
            "CARTPULSE_PROJECT_DIR": str(settings.project_dir),
            "WEB_WORKERS": WEB_WORKERS, "WEB_THREADS": WEB_THREADS,
            "RATE_LIMIT_RPS": os.environ.get("RATE_LIMIT_RPS", "1000000"),
            "RATE_LIMIT_BURST": os.environ.get("RATE_LIMIT_BURST", "1000000"), **env}


def serve(work: Path, port: int, url: str, settings: Settings, token: str, **env) -> subprocess.Popen:
    """`cartpulse serve` on ``port``, answering when this returns (``env`` overrides its
    environment)."""
    environment = service_env(port, url, settings, token, **env)
    proc = subprocess.Popen([str(Path(sys.executable).parent / "cartpulse"), "serve"], env=environment,
                            stdout=open(work / f"serve-{port}.log", "w"), stderr=subprocess.STDOUT)
    for _ in range(200):
        try:
            Client(port, token).get("events_by_country", {})
            return proc
        except (OSError, RuntimeError):
            time.sleep(0.2)
    proc.terminate()
    raise RuntimeError(f"cartpulse serve on port {port} did not answer: see {work / f'serve-{port}.log'}")


def out_path() -> Path:
    """BENCH_OUT, else bench/results.md at the default size and bench/results-<EVENTS>.md
    at any other (a quick run never overwrites the 10M results)."""
    if os.environ.get("BENCH_OUT"):
        return Path(os.environ["BENCH_OUT"])
    return HERE / ("results.md" if EVENTS == DEFAULT_EVENTS else f"results-{EVENTS}.md")


def naive_all(url: str) -> dict:
    """The plain SQL over the raw table of every latency cell (median ms)."""
    from reads import CELLS

    return {(pipe, label): sql_median(url, naive("postgres", pipe, label)) * 1000 for pipe, label, _ in CELLS}


def dead_rows(conn) -> dict[str, int]:
    """Dead row versions (not yet vacuumed) in the pending table and in the rollups, from
    the cumulative statistics (backends report them within about a second: an estimate
    that may miss the last second's)."""
    return dict(conn.execute(
        "select case when relname like '%\\_pending' then 'pending table' else 'rollups' end, sum(n_dead_tup)::bigint"
        " from pg_stat_user_tables where relname like '%\\_pending' or relname like 'rollup\\_%' group by 1").fetchall())


def ingest(port: int, token: str, files: list[Path]) -> float:
    """Seconds to post the files as BATCH-event NDJSON bodies from CLIENTS connections."""
    work = [body for f in files for body in batches(f.with_suffix(".ndjson"), BATCH)]
    # Each thread owns one connection and every CLIENTS-th batch.
    shares = [(Client(port, token), work[c::CLIENTS]) for c in range(CLIENTS)]
    t = time.perf_counter()
    with ThreadPoolExecutor(CLIENTS) as pool:
        acked = sum(pool.map(lambda share: sum(share[0].post(b)["successful_rows"] for b in share[1]), shares))
    seconds = time.perf_counter() - t
    expected = sum(1 for f in files for _ in open(f.with_suffix(".ndjson"), "rb"))
    assert acked == expected, (acked, expected)
    return seconds


def bulk_load(port: int, token: str, files: list[Path]) -> tuple[float, int]:
    """(seconds, rows) to bulk-import the files, BULK_IMPORT_ROWS lines per import, as a
    user loads history (each import absorbs its rows before it answers)."""
    client, rows = Client(port, token), 0
    t = time.perf_counter()
    for f in files:
        for body in batches(f.with_suffix(".ndjson"), BULK_IMPORT_ROWS):
            answer = client.bulk_import(body)
            assert answer["quarantined_rows"] == 0, answer
            rows += answer["successful_rows"]
    return time.perf_counter() - t, rows


def freshness(client: Client) -> tuple[float, int]:
    """(median ms from acknowledgement to the event in an answer, times it was in the very next one of 20)."""
    fresh, first_try = [], 0
    for i in range(20):
        event = {"event_time": "2026-10-20 12:00:00", "event_type": "purchase", "user_id": "fresh",
                 "product_id": f"fresh-{i}", "category": "bench", "price": 1e9,  # the declared maximum
                 "quantity": i + 1, "session_id": "fresh", "country": "France"}
        client.post(json.dumps(event).encode())
        acked_at = time.perf_counter()
        tries = 0
        while tries < 1000:  # bounded: a miss shows as a count below 20, not a hang
            tries += 1
            top = client.get("top_products", {"limit": 1})["data"]
            if top and top[0]["product_id"] == event["product_id"]:
                break
        fresh.append((time.perf_counter() - acked_at) * 1000)
        first_try += tries == 1
    return statistics.median(fresh), first_try


def main() -> int:
    import baselines
    import reads
    import refresh_cost
    import report
    import writes
    from capacity import Meter

    WORK.mkdir(parents=True, exist_ok=True)
    run = report.Run(events=EVENTS, load_before=os.getloadavg())
    print(f"CartPulse benchmark: {EVENTS:,} events", flush=True)
    t = time.perf_counter()
    files = make_data(EVENTS)
    bulk_files = make_data(BULK_EVENTS, seed=2, prefix="bulk")
    print(f"data ready in {time.perf_counter() - t:.0f}s", flush=True)

    server, url, token, settings, engine = prepare(WORK)
    run.engine, run.embedded = engine, server is not None
    port = 18000 + secrets.randbelow(1000)
    service = serve(WORK, port, url, settings, token)
    run.derivation = {pipe: Client(port, token).metadata(pipe)["derivation"] for pipe in dict.fromkeys(
        pipe for pipe, _, _ in reads.CELLS)}
    postmaster = postmaster_of(url)
    memory = MemoryWatch(service.pid, postmaster)
    memory.start()
    try:
        # -- 4. ingest over HTTP, against a raw COPY of the same rows -------------------
        run.ingest_s = ingest(port, token, files)
        run.ingest_bytes = sum(f.with_suffix(".ndjson").stat().st_size for f in files)
        print(f"ingest: {EVENTS / run.ingest_s:,.0f} events/s", flush=True)
        run.copy_s = baselines.raw_copy_seconds(url, engine, files)
        print(f"raw COPY: {EVENTS / run.copy_s:,.0f} rows/s", flush=True)

        # -- 1a. after a refresh ---------------------------------------------------------
        run.first_dbt = dbt_timed(settings, url, "run")
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("vacuum analyze")
        print(f"dbt run after ingest: {run.first_dbt[0]:.1f}s", flush=True)
        run.latency["after a refresh"], run.latency["after a refresh, no cache"] = reads.latency(port, token, REQUESTS)
        run.naive["after a refresh"] = naive_all(url)
        print("latency after a refresh done", flush=True)

        # -- 2. throughput at concurrency 8 ----------------------------------------------
        with Meter(api=service.pid, database=postmaster) as meter:
            run.mix = reads.mix(port, token, THROUGHPUT_SECONDS)
        run.mix_cpu = meter.cpu
        with Meter(api=service.pid, database=postmaster) as meter:
            run.mix_query = reads.mix(port, token, THROUGHPUT_SECONDS, headers=reads.NO_CACHE)
        run.mix_query_cpu = meter.cpu
        run.windows = reads.random_windows(port, token, THROUGHPUT_SECONDS)
        print(f"throughput: mix {run.mix.rate:.0f}/s (no cache {run.mix_query.rate:.0f}/s), random windows {run.windows.rate:.0f}/s", flush=True)

        run.duck, run.duck_version = baselines.duckdb_ms(files)
        run.chdb, run.chdb_version, run.chdb_rate = baselines.chdb_ms(files, [(p, label) for p, label, _ in reads.CELLS])
        print(f"chDB views: {run.chdb}", flush=True)
        run.fresh = freshness(Client(port, token))

        # -- 1b. immediately after a bulk load of BULK_EVENTS more, no refresh ------------
        run.bulk = bulk_load(port, token, bulk_files)
        with psycopg.connect(url) as conn:  # what the reads below still aggregate live
            run.pending_after_bulk = conn.execute("select count(*) from raw.ecommerce_events_pending").fetchone()[0]
            run.dead_after_bulk = dead_rows(conn)
        run.latency["after a bulk load"], run.latency["after a bulk load, no cache"] = reads.latency(port, token, REQUESTS)
        run.naive["after a bulk load"] = naive_all(url)
        print(f"bulk load: {run.bulk[1] / run.bulk[0]:,.0f} events/s; latency after it done", flush=True)

        # -- 1c. while the writes stream (100 POSTs/s of 10 events), the absorber running ---
        env = service_env(port, url, settings, token)
        run.latency[report.WRITES], run.latency[f"{report.WRITES}, no cache"], run.stream = writes.under_writes(
            port, token, REQUESTS, url, env, WORK / "scheduler-writes.log")
        print(f"latency while the writes stream done: {run.stream.describe()}", flush=True)

        # -- 3. refresh cost -------------------------------------------------------------
        client = Client(port, token)
        run.minute_events = refresh_cost.post_at_rate(client, MINUTE_RATE, MINUTE_SECONDS)
        run.minute_absorb = refresh_cost.absorb_wall(url)
        run.idle_absorb, run.idle_runs = refresh_cost.idle_absorb_cpu(url, IDLE_RUNS), IDLE_RUNS
        run.idle_dbt = dbt_timed(settings, url, "run")
        print(f"absorb after a minute: {run.minute_absorb[0]:.3f}s; idle: {run.idle_absorb}", flush=True)
        run.window = refresh_cost.absorber_window(url, env, port, token, ABSORBER_SECONDS, MINUTE_RATE,
                                                  WORK / "scheduler.log", postmaster)
        print(f"absorber window: {run.window.total:.2f} CPU s over {run.window.seconds:.0f} s", flush=True)

        # -- dbt, as analysts keep using it --------------------------------------------------
        backfill = max(1000, EVENTS // 10)
        old = EventGenerator(seed=98, start=datetime(2026, 8, 1, tzinfo=timezone.utc), span=timedelta(days=31))
        for start in range(0, backfill, BATCH):
            client.post("".join(json.dumps(e) + "\n" for e in old.events(min(BATCH, backfill - start))).encode())
        run.backfill = (backfill, *dbt_timed(settings, url, "run"))
        run.full_refresh = dbt_timed(settings, url, "run", "--full-refresh")
    finally:
        memory.stop.set()
        memory.join()
        service.send_signal(signal.SIGTERM)
        service.wait(timeout=60)
        if server is not None:
            server.stop()
    run.memory = dict(memory.peak)
    run.load_after = os.getloadavg()

    text = report.render(run)
    print("\n" + text)
    out = out_path()
    from capacity import (
        kept_sections,  # capacity.py's sections (per engine) stay in the file
    )

    out.write_text(text + kept_sections(out))
    print(f"written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
