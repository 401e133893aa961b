"""Load test: 16 concurrent clients, mixed ingest and reads, against `cartpulse serve`.

    make loadtest                     # 60 s on a fresh embedded PostgreSQL
    DURATION=10 make loadtest         # shorter
    DATABASE_URL=postgresql://… make loadtest   # on your server (it adds events there)

Each client has its own token (append + read), as a shop's services would, and keeps one
HTTP connection open. Half of its requests POST a batch of events (with an
Idempotency-Key), half read a pipe with random parameters.

Two phases of DURATION each: the normal clients alone, then the same clients with
HOSTILE (200) connections beside them that hold the server's sockets as attackers and
broken clients do: idle connections, heads sent a byte a second (slowloris), bodies
that stop half-way. Each hostile connection the server closes (its timeouts) is opened
again at once. The report compares the normal clients' p50/p99 in both phases.

At the end the events stored must equal the events acknowledged; the run fails on any
5xx or a mismatch. The figures are printed and written to bench/loadtest.md.

    make loadtest-limits              # LIMITS=1: resources under hostile load instead

With LIMITS=1 the phases are the normal clients alone, then beside 2,000 hostile
connections (the open-files limit raised, 503 past HTTP_MAX_CONNECTIONS), then with every
connection slot of PostgreSQL taken for the first half of the phase (new database
connections refused: 503 with Retry-After, then recovery). A 503 is expected there and
counted, any other 5xx fails the run; the figures go to bench/limits.md.
"""

from __future__ import annotations

import http.client
import json
import os
import random
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import urlencode

import psycopg

from cartpulse.access.auth import ensure_admin_token
from cartpulse.config import Settings
from cartpulse.ops.dbt_runner import run_dbt
from cartpulse.ops.derive import derive
from cartpulse.storage.embedded import EmbeddedPostgres
from cartpulse.storage.schema import create_storage

HERE = Path(__file__).resolve().parent
CLIENTS = int(os.environ.get("CLIENTS", "16"))
DURATION = float(os.environ.get("DURATION", "60"))
WORKERS = os.environ.get("WEB_WORKERS", "4")
THREADS = os.environ.get("WEB_THREADS", "4")
BATCH = int(os.environ.get("BATCH", "50"))
HOSTILE = int(os.environ.get("HOSTILE", "200"))
LIMITS = os.environ.get("LIMITS") == "1"
PIPES = {
    "top_products": lambda r: {"limit": r.choice([5, 10, 50]), "country": r.choice(["", "France", "Spain"])},
    "events_by_country": lambda r: {"event_type": r.choice(["", "purchase", "view"])},
    "total_revenue": lambda r: {"interval": r.choice(["15 minutes", "1 hour", "1 day"])},
}
BASE = datetime(2026, 6, 1, tzinfo=timezone.utc)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Client(threading.Thread):
    def __init__(self, n: int, port: int, token: str, stop_at: float):
        super().__init__(daemon=True)
        self.n, self.port, self.token, self.stop_at = n, port, token, stop_at
        self.rng = random.Random(n)
        self.latencies: dict[str, list[float]] = {"ingest": [], "read": []}
        self.statuses: dict[int, int] = {}
        self.acknowledged = 0
        self.errors: list[str] = []

    def _request(self, conn, method, path, body=None, headers=None):
        started = time.perf_counter()
        conn.request(method, path, body=body, headers={"Authorization": f"Bearer {self.token}", **(headers or {})})
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, data, time.perf_counter() - started

    def batch(self) -> bytes:
        r = self.rng
        lines = []
        for _ in range(BATCH):
            when = BASE + timedelta(seconds=r.randrange(30 * 86400))
            lines.append(json.dumps({
                "event_time": when.strftime("%Y-%m-%d %H:%M:%S"),
                "event_type": r.choice(["view", "view", "add_to_cart", "purchase"]),
                "user_id": f"u{r.randrange(5000)}", "product_id": f"p{r.randrange(500)}",
                "category": r.choice(["shoes", "books", "toys", "garden"]), "price": round(r.uniform(1, 300), 2),
                "quantity": r.randint(1, 5), "session_id": f"s{r.randrange(10**6)}",
                "country": r.choice(["France", "Spain", "Italy", "Germany", "Japan", "Brazil"])}))
        return ("\n".join(lines) + "\n").encode()

    def run(self):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        i = 0
        while time.monotonic() < self.stop_at:
            i += 1
            try:
                if self.rng.random() < 0.5:
                    kind = "ingest"
                    status, data, took = self._request(conn, "POST", "/v0/events?name=ecommerce_events", self.batch(),
                                                       {"Idempotency-Key": f"c{self.n}-{i}"})
                    if status in (200, 202):
                        self.acknowledged += json.loads(data)["successful_rows"]
                else:
                    kind = "read"
                    pipe = self.rng.choice(list(PIPES))
                    params = {k: v for k, v in PIPES[pipe](self.rng).items() if v != ""}
                    status, data, took = self._request(conn, "GET", f"/v0/pipes/{pipe}.json?{urlencode(params)}")
            except (OSError, http.client.HTTPException) as err:
                self.errors.append(repr(err))
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
                continue
            self.latencies[kind].append(took)
            self.statuses[status] = self.statuses.get(status, 0) + 1
            if status >= 500:  # what the server said, for the report
                self.errors.append(f"{status} on {kind}: {data[:200].decode(errors='replace')}")
        conn.close()


class Hostile(threading.Thread):
    """HOSTILE connections kept open until ``stop``: a third idle, a third sending their
    head a byte per second, a third with a complete head and a body stopped half-way."""

    HEAD = b"GET /v0/pipes/top_products.json HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 10_000

    def __init__(self, port: int, count: int):
        super().__init__(daemon=True)
        self.port, self.count = port, count
        self.stop = threading.Event()
        self.reopened = 0
        self.slots: list[tuple[str, socket.socket | None, int]] = []

    def _open(self, kind: str) -> tuple[str, socket.socket | None, int]:
        try:
            sock = socket.create_connection(("127.0.0.1", self.port), timeout=5)
            sock.setblocking(False)
            if kind == "body":
                sock.send(b"POST /v0/events?name=ecommerce_events HTTP/1.1\r\nHost: x\r\n"
                          b"Content-Length: 100000\r\n\r\n" + b"{" * 100)
            return kind, sock, 0
        except OSError:
            return kind, None, 0

    def run(self):
        kinds = ["idle", "slowloris", "body"]
        self.slots = [self._open(kinds[i % 3]) for i in range(self.count)]
        while not self.stop.wait(1.0):
            for i, (kind, sock, sent) in enumerate(self.slots):
                try:
                    if sock is None or sock.recv(65536) == b"":
                        raise ConnectionError  # the server closed it: open another
                except BlockingIOError:
                    if kind == "slowloris":
                        sock.send(self.HEAD[sent % len(self.HEAD): sent % len(self.HEAD) + 1])
                        self.slots[i] = (kind, sock, sent + 1)
                    continue
                except OSError:
                    pass
                if sock is not None:
                    sock.close()
                self.reopened += 1
                self.slots[i] = self._open(kind)
        for _, sock, _ in self.slots:
            if sock is not None:
                sock.close()


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


class SlotsTaken(threading.Thread):
    """Every connection slot of PostgreSQL taken for ``seconds``, then given back."""

    def __init__(self, url: str, seconds: float):
        super().__init__(daemon=True)
        self.url, self.seconds, self.taken = url, seconds, 0

    def run(self):
        held = []
        try:
            while len(held) < 2000:
                try:
                    held.append(psycopg.connect(self.url, connect_timeout=5))
                except psycopg.OperationalError:
                    break
            self.taken = len(held)
            time.sleep(self.seconds)
        finally:
            for conn in held:
                conn.close()


def run_phase(port: int, tokens: list[str], hostile_count: int, seed: int, slots_url: str | None = None) -> dict:
    hostile = Hostile(port, hostile_count) if hostile_count else None
    if hostile:
        hostile.start()
    slots = SlotsTaken(slots_url, DURATION / 2) if slots_url else None
    if slots:
        slots.start()
    started = time.monotonic()
    clients = [Client(seed + n, port, tokens[n], started + DURATION) for n in range(CLIENTS)]
    for c in clients:
        c.start()
    for c in clients:
        c.join()
    elapsed = time.monotonic() - started
    if hostile:
        hostile.stop.set()
        hostile.join()
    if slots:
        slots.join()
    return {"clients": clients, "elapsed": elapsed, "reopened": hostile.reopened if hostile else 0,
            "expected": {503} if slots else set(), "slots": slots.taken if slots else 0}


def main() -> int:
    if LIMITS:
        from cartpulse.cli.open_files import raise_soft_limit

        raise_soft_limit()  # 2,000 hostile sockets of our own
    work = Path(tempfile.mkdtemp(prefix="cartpulse-loadtest-"))
    embedded = None
    url = os.environ.get("DATABASE_URL")
    if not url:
        embedded = EmbeddedPostgres(work / "pgdata")
        embedded.start()
        url = embedded.url
    server = scheduler = None
    try:
        admin = "loadtest-admin-" + secrets.token_hex(8)
        settings = Settings.from_env(database_url=url, state_dir=work / "state", target_dir=work / "target",
                                     admin_token=admin)
        engine = create_storage(url, settings)
        ensure_admin_token(url, settings.state_dir, admin)
        print(f"building the models ({engine})…", flush=True)
        derive(settings, url)
        run_dbt(replace(settings), url, "run", "--quiet")
        with psycopg.connect(url) as conn:
            stored_before = conn.execute("select count(*) from raw.ecommerce_events").fetchone()[0]
        port = free_port()
        env = {**os.environ, "DATABASE_URL": url, "PORT": str(port), "TB_ADMIN_TOKEN": admin,
               "DBT_TARGET_PATH": str(settings.target_dir), "CARTPULSE_STATE_DIR": str(settings.state_dir),
               "WEB_WORKERS": WORKERS, "WEB_THREADS": THREADS}
        log = open(work / "serve.log", "w")
        server = subprocess.Popen([str(Path(sys.executable).parent / "cartpulse"), "serve"], env=env,
                                  stdout=log, stderr=subprocess.STDOUT)
        # As under `cartpulse run`: the scheduler absorbs pending events while the load runs.
        scheduler = subprocess.Popen([str(Path(sys.executable).parent / "cartpulse"), "scheduler"],
                                     env={**env, "REFRESH_SECONDS": os.environ.get("REFRESH_SECONDS", "10")},
                                     stdout=log, stderr=subprocess.STDOUT)
        admin_conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        for _ in range(300):  # until /readyz says 200
            try:
                admin_conn.request("GET", "/readyz")
                resp = admin_conn.getresponse()
                resp.read()
                if resp.status == 200:
                    break
            except (OSError, http.client.HTTPException):
                admin_conn.close()
            time.sleep(0.2)
        else:
            raise SystemExit(f"the server did not become ready: see {work / 'serve.log'}")
        tokens = []
        for n in range(CLIENTS):
            scopes = "&".join(f"scope={s}" for s in ["DATASOURCES:APPEND:ecommerce_events",
                                                      *(f"PIPES:READ:{p}" for p in PIPES)])
            admin_conn.request("POST", f"/v0/tokens?name=loadtest-{n}-{secrets.token_hex(3)}&{scopes}",
                               headers={"Authorization": f"Bearer {admin}"})
            resp = admin_conn.getresponse()
            tokens.append(json.loads(resp.read())["token"])
        phases = {}
        plan = ([("normal clients alone", 0, None), ("beside 2,000 hostile connections", 2000, None),
                 ("PostgreSQL at max_connections (first half)", 0, url)] if LIMITS else
                [("normal clients alone", 0, None), (f"with {HOSTILE} idle and slow connections", HOSTILE, None)])
        for name, hostile_count, slots_url in plan:
            print(f"{CLIENTS} clients for {DURATION:g} s against `cartpulse serve` "
                  f"({WORKERS} workers × {THREADS} threads), {name}…", flush=True)
            phases[name] = run_phase(port, tokens, hostile_count, seed=len(phases) * CLIENTS, slots_url=slots_url)
        with psycopg.connect(url) as conn:
            stored = conn.execute("select count(*) from raw.ecommerce_events").fetchone()[0] - stored_before
    finally:
        for proc in (server, scheduler):
            if proc is not None:
                proc.terminate()
                proc.wait(timeout=60)
        if embedded is not None:
            embedded.stop("fast")
        log_path = work / "serve.log"
        warnings = [line for line in (log_path.read_text(errors="replace").splitlines() if log_path.exists() else [])
                    if " WARNING " in line or " ERROR " in line]
        shutil.rmtree(work, ignore_errors=True)

    ms = lambda v: f"{v * 1000:.1f}"  # noqa: E731
    measures: dict[str, list[str]] = {}
    five_xx, errors, answered_5xx, acknowledged = 0, [], [], 0
    for name, phase in phases.items():
        clients, elapsed = phase["clients"], phase["elapsed"]
        statuses: dict[int, int] = {}
        for c in clients:
            for code, n in c.statuses.items():
                statuses[code] = statuses.get(code, 0) + n
        ingest = [x for c in clients for x in c.latencies["ingest"]]
        reads = [x for c in clients for x in c.latencies["read"]]
        everything = ingest + reads
        phase_acknowledged = sum(c.acknowledged for c in clients)
        acknowledged += phase_acknowledged
        errors += [e for c in clients for e in c.errors if not e[:1].isdigit()]  # connection errors
        answered_5xx += [e for c in clients for e in c.errors if e[:1].isdigit() and int(e[:3]) not in phase["expected"]]
        five_xx += sum(n for code, n in statuses.items() if code >= 500 and code not in phase["expected"])
        for measure, value in [
            ("requests", f"{len(everything)} ({len(ingest)} ingest of {BATCH} events, {len(reads)} reads)"),
            ("requests/s", f"{len(everything) / elapsed:.1f}"),
            ("events ingested/s", f"{phase_acknowledged / elapsed:.0f}"),
            ("p50 / p99 latency, all (ms)", f"{ms(percentile(everything, 50))} / {ms(percentile(everything, 99))}"),
            ("p50 / p99 latency, ingest (ms)", f"{ms(percentile(ingest, 50))} / {ms(percentile(ingest, 99))}"),
            ("p50 / p99 latency, reads (ms)", f"{ms(percentile(reads, 50))} / {ms(percentile(reads, 99))}"),
            ("statuses", ", ".join(f"{code}: {n}" for code, n in sorted(statuses.items()))),
            ("hostile connections the server closed (reopened at once)", str(phase["reopened"])),
            *([("PostgreSQL connection slots taken", str(phase["slots"]))] if LIMITS else []),
        ]:
            measures.setdefault(measure, []).append(value)
    names = list(phases)
    rest = [""] * (len(names) - 1)
    measures["5xx (all phases; 503 expected at max_connections)" if LIMITS else "5xx (both phases)"] = [str(five_xx), *rest]
    measures["connection errors of the normal clients"] = [str(len(errors)), *rest]
    measures["events acknowledged / stored (all phases)" if LIMITS else
             "events acknowledged / stored (both phases)"] = [f"{acknowledged} / {stored}", *rest]
    table = "\n".join([f"| measure | {' | '.join(names)} |", "|---" * (len(names) + 1) + "|",
                       *(f"| {k} | {' | '.join(v)} |" for k, v in measures.items())])
    ok = five_xx == 0 and not errors and acknowledged == stored
    setup = (f"{CLIENTS} clients, {DURATION:.0f} s per phase, `cartpulse serve` with {WORKERS} workers × {THREADS} threads, "
             f"{'DATABASE_URL' if os.environ.get('DATABASE_URL') else 'embedded PostgreSQL'} ({engine}), "
             f"{os.cpu_count()} CPUs, rate limits on (each client its own token)")
    title = "Resources under hostile load (`make loadtest-limits`)" if LIMITS else "Load test (`make loadtest`)"
    report = (f"## {title}\n\n{setup}; "
              f"{datetime.now(timezone.utc):%Y-%m-%d}.\n\n{table}\n\n"
              f"Result: {'PASS' if ok else 'FAIL'} (zero 5xx, stored = acknowledged).\n")
    print("\n" + table + "\n")
    print("PASS" if ok else "FAIL", "— zero 5xx and stored == acknowledged" if ok else (errors + answered_5xx)[:5])
    if not ok:
        print("the server's warnings and errors (last 30):", *warnings[-30:], sep="\n")
    (HERE / ("limits.md" if LIMITS else "loadtest.md")).write_text(report)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
