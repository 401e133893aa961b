"""Small helpers shared by the tests."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import socketserver
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import psycopg

CARTPULSE = str(Path(sys.executable).parent / "cartpulse")
#: What must not be printed when CartPulse stops: gunicorn's words for a worker that had
#: to be SIGKILLed (a hang in the worker, never memory, in CartPulse's case).
MISLEADING_AT_STOP = ("SIGKILL", "Perhaps out of memory")

def as_from_a_terminal() -> None:
    """preexec_fn for a CartPulse process a test will Ctrl-C: SIGINT handled as in a
    terminal. A process started in the background by a non-interactive shell (how a CI
    runner may start the suite) inherits SIGINT ignored, and Python keeps it ignored."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


#: One valid purchase, for tests that need an event and do not care which.
EVENT = {"event_time": "2026-10-05 10:15:00", "event_type": "purchase", "user_id": "u1", "product_id": "p1",
         "category": "shoes", "price": 10.5, "quantity": 2, "session_id": "s1", "country": "France"}
POST = "/v0/events?name=ecommerce_events"

@contextmanager
def server_folder(prefix: str = "cartpulse-server-"):
    """A scratch folder for an embedded PostgreSQL (its data and socket), outside pytest's
    ``tmp_path``. As root, the server runs as another user, which must traverse every
    parent folder (embedded.py opens them up); but each pytest session that starts makes
    /tmp/pytest-of-<user> private again (0700). On a machine where several sessions run at
    once, a server under ``tmp_path`` then becomes unreachable to its own user: initdb or
    the start fail, and ``pg_ctl status`` says it is not running."""
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def skip_on_citus(engine: str, why: str) -> None:
    """Skip a test that cannot hold on Citus, saying why (docs/citus.md lists them)."""
    if engine == "citus":
        import pytest

        pytest.skip(f"not on Citus: {why}")


@contextmanager
def app_with(settings, **overrides):
    """An app of its own, with other settings; its statistics written and its pool closed
    after (a row left queued would open a connection after the pool is gone)."""
    import gc
    from dataclasses import replace

    from cartpulse.app import create_app

    application = create_app(replace(settings, **overrides))
    application.config["TESTING"] = True
    try:
        yield application
    finally:
        application.extensions["cartpulse_stats"].flush()
        application.extensions["cartpulse"].db.dispose()
        gc.collect()  # anything of it left open warns here, in this test, not in a later one


def datasources(raw_schema: str = "raw", project_dir: Path | None = None):
    """The data sources the project declares (default: this repository's, in ``raw``)."""
    from cartpulse.config import PROJECT_DIR
    from cartpulse.project.datasources import declared

    return declared((project_dir or PROJECT_DIR).resolve(), raw_schema)


def truncate_events(url: str, sources=None) -> None:
    """Empty every data source's table, pending rows and quarantine (``sources``: default
    the repository's, in ``raw``) and every rollup, consistently: with everything empty,
    each rollup has absorbed "everything so far"."""
    from psycopg import sql

    tables = [s.table(t) for s in (sources or datasources()).values() for t in (s.name, s.pending, s.quarantine)]
    with psycopg.connect(url) as conn:
        conn.execute("delete from cartpulse.rollup_state where to_regclass(rollup) is null")
        rollups = [r for (r,) in conn.execute(
            "select rollup from cartpulse.rollup_state where to_regclass(rollup) is not null").fetchall()]
        conn.execute(sql.SQL("truncate {}").format(sql.SQL(", ").join(tables + [sql.SQL(r) for r in rollups])))
        conn.execute("update cartpulse.rollup_state set absorbed = pg_current_snapshot()")


def ndjson(events) -> bytes:
    return ("\n".join(json.dumps(e, ensure_ascii=False) for e in events) + "\n").encode()


def load_events(app, settings, admin_token: str, events: list[dict], quarantined: int = 0) -> list[dict]:
    """Start from no events, send ``events`` (all valid, but the last ``quarantined``) and
    check that they were stored: a module's fixture of known rows."""
    truncate_events(settings.database_url)
    r = app.test_client().post(POST, data=ndjson(events), headers={"Authorization": f"Bearer {admin_token}"})
    assert r.get_json()["successful_rows"] == len(events) - quarantined, r.get_json()
    assert r.get_json()["quarantined_rows"] == quarantined
    return events[:len(events) - quarantined]


def count(url: str, table: str = "raw.ecommerce_events") -> int:
    with psycopg.connect(url) as conn:
        return conn.execute(f"select count(*) from {table}").fetchone()[0]


def dbt_ok(settings, *args) -> str:
    """Run dbt against the test database; fail the test with dbt's output if it fails."""
    from cartpulse.ops.dbt_runner import run_dbt

    result = run_dbt(settings, settings.database_url, *args, check=False, capture=True)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


class Http:
    """A minimal HTTP client for a server started by a test (thread-safe: one request per call)."""

    def __init__(self, base: str, token: str):
        self.base, self.token = base, token

    def request(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None,
                with_headers: bool = False, timeout: float = 60):
        """(status, JSON body) — and the response headers with ``with_headers``."""
        import urllib.error
        import urllib.request

        req = urllib.request.Request(self.base + path, data=body, method=method,
                                     headers={"Authorization": f"Bearer {self.token}", **(headers or {})})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                result = resp.status, json.loads(resp.read() or b"null"), resp.headers
        except urllib.error.HTTPError as err:
            result = err.code, json.loads(err.read() or b"null"), err.headers
        return result if with_headers else result[:2]

    def post_events(self, events, headers: dict | None = None):
        return self.request("POST", "/v0/events?name=ecommerce_events", ndjson(events), headers)

    def pipe(self, name: str, **params):
        from urllib.parse import urlencode

        query = ("?" + urlencode(params)) if params else ""
        status, body = self.request("GET", f"/v0/pipes/{name}.json{query}")
        assert status == 200, body
        return body["data"]


def metric_value(text: str, series: str) -> float:
    """One series' value in a Prometheus text scrape (0 when absent)."""
    found = re.search(r"^" + re.escape(series) + r" (\S+)$", text, re.M)
    return float(found.group(1)) if found else 0.0


def request_burst(http: Http, token: str, clients: int, each: int = 10) -> tuple[list[tuple[int, dict]], float]:
    """``clients`` threads at once, each GETting /v0/pipes ``each`` times with ``token``:
    every answer's (status, headers), and the seconds the burst took (rate-limit tests)."""
    answers, lock = [], threading.Lock()

    def client():
        for _ in range(each):
            code, _, headers = http.request("GET", "/v0/pipes", headers={"Authorization": f"Bearer {token}"},
                                            with_headers=True)
            with lock:
                answers.append((code, headers))

    threads = [threading.Thread(target=client) for _ in range(clients)]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return answers, time.monotonic() - started


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, proc: subprocess.Popen, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited with {proc.returncode}")
        try:
            urllib.request.urlopen(url, timeout=1)
            return
        except OSError:
            time.sleep(0.3)
    raise AssertionError(f"{url} did not answer in {seconds}s")


class ApiServer:
    """`cartpulse serve` (gunicorn, 2 workers by default) as the tests start it, in a
    process group of its own so that a fault test can SIGKILL master and workers at once."""

    def __init__(self, settings, admin_token: str, state_dir: Path, port: int | None = None, **env):
        self.port = port or free_port()
        self.state_dir = Path(state_dir)
        self.log_path = self.state_dir / "serve.log"  # read it when a test fails
        self.env = {**os.environ, "DATABASE_URL": settings.database_url, "PORT": str(self.port),
                    "TB_ADMIN_TOKEN": admin_token, "DBT_TARGET_PATH": str(settings.target_dir),
                    "CARTPULSE_STATE_DIR": str(self.state_dir), "WEB_WORKERS": "2", "WEB_THREADS": "8",
                    **env}
        self.http = Http(f"http://127.0.0.1:{self.port}", admin_token)
        self.proc: subprocess.Popen | None = None

    def start(self, wait: bool = True) -> None:
        log = open(self.log_path, "a")
        self.proc = subprocess.Popen([CARTPULSE, "serve"], env=self.env,
                                     stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        if wait:
            wait_http(f"{self.http.base}/healthz", self.proc)

    def kill(self) -> None:
        """SIGKILL the master and its workers (its own process group): no cleanup at all."""
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=30)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


class RoundRobinProxy:
    """Stands in for the load balancer (nginx, HAProxy) operators put in front of several
    `cartpulse serve` processes: a TCP proxy on 127.0.0.1 that hands each client connection
    to the next backend port in turn and pipes bytes both ways until both sides are done.
    ``connections[i]`` counts the connections backend i got. Http opens a connection per
    request (urllib sends ``Connection: close``), so its requests alternate backends."""

    def __init__(self, backend_ports, token: str):
        self.backends, self.connections = list(backend_ports), [0] * len(backend_ports)
        self._lock, self._live, self._turn, self._stopping = threading.Lock(), set(), 0, False
        forward = self._forward

        class Handler(socketserver.BaseRequestHandler):
            def handle(self):
                forward(self.request)

        self._server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True  # and block_on_close: stop() joins them
        self.port = self._server.server_address[1]
        self.http = Http(f"http://127.0.0.1:{self.port}", token)
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _forward(self, client: socket.socket) -> None:
        with self._lock:
            index, self._turn = self._turn % len(self.backends), self._turn + 1
            self.connections[index] += 1
        with socket.create_connection(("127.0.0.1", self.backends[index])) as backend:
            with self._lock:
                if self._stopping:
                    return
                self._live |= {client, backend}
            back = threading.Thread(target=_pipe, args=(backend, client), daemon=True)
            back.start()
            _pipe(client, backend)
            back.join()
            with self._lock:
                self._live -= {client, backend}

    def stop(self) -> None:
        """Stop accepting, cut the connections still open, wait for every thread."""
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join()
        with self._lock:
            self._stopping = True
            for sock in self._live:
                _shutdown(sock, socket.SHUT_RDWR)
        self._server.server_close()


def _shutdown(sock: socket.socket, how: int) -> None:
    try:
        sock.shutdown(how)
    except OSError:  # already closed or reset
        pass


def _pipe(src: socket.socket, dst: socket.socket) -> None:
    """Copy src to dst until src ends, then pass the half-close on; a reset ends both ways."""
    try:
        while data := src.recv(65536):
            dst.sendall(data)
        _shutdown(dst, socket.SHUT_WR)
    except OSError:
        _shutdown(src, socket.SHUT_RDWR)
        _shutdown(dst, socket.SHUT_RDWR)


def copy_project(folder: Path) -> Path:
    """A copy of the dbt project (no service, tests, state or generated models) in ``folder``/project."""
    from cartpulse.config import PROJECT_DIR

    project = folder / "project"
    shutil.copytree(PROJECT_DIR, project, ignore=shutil.ignore_patterns(
        ".venv", ".cartpulse", "target", "logs", ".git", "service", "tests", "bench", "derived", "*.pyc"))
    return project


@contextmanager
def project_database(built, server_url: str, project: Path, folder: Path, prefix: str):
    """``project`` with a database of its own, its storage and the session's admin token
    in it, dropped afterwards; yields its settings (nothing built yet)."""
    import secrets
    from dataclasses import replace

    from psycopg.conninfo import make_conninfo

    from cartpulse.access.auth import ensure_admin_token
    from cartpulse.storage.schema import create_storage

    name = f"{prefix}_{secrets.token_hex(4)}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'create database "{name}"')
    settings = replace(built, database_url=make_conninfo(server_url, dbname=name), project_dir=project,
                       target_dir=folder / "target")
    try:
        create_storage(settings.database_url, settings)
        ensure_admin_token(settings.database_url, settings.state_dir, settings.admin_token)
        yield settings
    finally:
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(f'drop database if exists "{name}" with (force)')


@contextmanager
def built_copy(built, server_url: str, project: Path, folder: Path, prefix: str):
    """``project`` derived and built as `cartpulse build` does, in a database of its own
    (``project_database``); yields its settings."""
    from cartpulse.ops.derive import derive

    with project_database(built, server_url, project, folder, prefix) as settings:
        derive(settings, settings.database_url)
        dbt_ok(settings, "run")
        yield settings
