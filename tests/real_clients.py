"""Tinybird's own clients, installed where they cannot touch the project's environment.

The Python clients (``tests/clients/requirements.txt``) go into ``.clients/venv`` and the
npm SDK (``tests/clients/package.json`` and its lock) into ``.clients/npm``, both in the
checkout and ignored by git, installed on first use and again whenever the pins change
(a stamp holds the pins' digest). A failed install fails the test that needed it; only a
registry that cannot be reached at all skips, since then nothing here is to blame.

Each client is driven by a small script in ``tests/clients/`` written as its users
write code; it takes an operation and its JSON arguments, calls the client, and prints
the client's result as JSON (or, when the client raised, which error and status).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import pytest

import expected

ROOT = Path(__file__).resolve().parent.parent
PINS = Path(__file__).resolve().parent / "clients"
CACHE = ROOT / ".clients"
VENV = CACHE / "venv"
NPM = CACHE / "npm"
#: A first install pulls the `tinybird` CLI that `tinybird-sdk` depends on: minutes, not seconds.
INSTALL_SECONDS = 900


def _digest(*files: Path) -> str:
    return hashlib.sha256(b"".join(f.read_bytes() for f in files)).hexdigest()


@contextmanager
def _locked():
    """One installer at a time, whatever number of pytest processes share the checkout."""
    CACHE.mkdir(exist_ok=True)
    with open(CACHE / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _reachable(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=15):
            return True
    except urllib.error.HTTPError:
        return True  # it answered: reachable
    except OSError:
        return False


def _install(target: Path, pins: tuple[Path, ...], steps: list[list[str]], registry: str) -> None:
    """Run ``steps`` into a fresh ``target`` unless its stamp matches ``pins``."""
    stamp = target / ".pins"
    digest = _digest(*pins)
    if stamp.exists() and stamp.read_text() == digest:
        return
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    for step in steps:
        done = subprocess.run(step, cwd=target, capture_output=True, text=True, timeout=INSTALL_SECONDS)
        if done.returncode != 0:
            shutil.rmtree(target, ignore_errors=True)
            if not _reachable(registry):
                pytest.skip(f"{registry} cannot be reached: the client tests need it once to install the clients")
            pytest.fail(f"installing the clients failed: {' '.join(step)}\n{done.stdout[-3000:]}{done.stderr[-3000:]}")
    stamp.write_text(digest)


def python_clients() -> Path:
    """The interpreter of ``.clients/venv``, with the pinned Python clients installed."""
    requirements = PINS / "requirements.txt"
    index = os.environ.get("PIP_INDEX_URL", "https://pypi.org/simple/")
    with _locked():
        _install(VENV, (requirements,), [
            [sys.executable, "-m", "venv", str(VENV)],
            [str(VENV / "bin" / "pip"), "install", "--quiet", "--disable-pip-version-check", "-r", str(requirements)],
        ], index)
    return VENV / "bin" / "python"


def node_clients() -> Path:
    """``.clients/npm``, with the pinned npm SDK installed (``npm ci`` from the lock)."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if not node or not npm:
        pytest.fail("the npm client tests need Node.js 20+ (node and npm on PATH)")
    package, lock = PINS / "package.json", PINS / "package-lock.json"
    registry = subprocess.run([npm, "config", "get", "registry"], capture_output=True, text=True).stdout.strip()
    with _locked():
        _install(NPM, (package, lock), [
            ["cp", str(package), str(lock), str(NPM)],
            [npm, "ci", "--no-audit", "--no-fund", "--ignore-scripts", "--loglevel=error"],
        ], registry or "https://registry.npmjs.org/")
    return NPM


#: Variables that send the SDKs elsewhere: a Tinybird URL or token of the developer's own,
#: development mode or a CI preview (a pull request's GITHUB_HEAD_REF, …), where they look
#: for a Tinybird branch to use instead of the server given.
TINYBIRD_ENVIRONMENT = {"NODE_ENV", "TINYBIRD_URL", "TINYBIRD_TOKEN", "TINYBIRD_BRANCH_TOKEN", "TINYBIRD_PREVIEW_MODE",
                        "VERCEL_ENV", "GITHUB_HEAD_REF", "CI_MERGE_REQUEST_SOURCE_BRANCH_NAME"}


class Driver:
    """Runs one client's script against one CartPulse server."""

    def __init__(self, command: list[str], cwd: Path, base_url: str, token: str):
        self.command, self.cwd = command, cwd
        self.base_url, self.token = base_url, token

    def __call__(self, operation: str, token: str | None = None, **arguments):
        """The client's answer to ``operation`` (a dict or list), or ``{"raised": <error
        class>, "status": <HTTP status>, "message": …}`` when the client raised."""
        env = {k: v for k, v in os.environ.items() if k not in TINYBIRD_ENVIRONMENT}
        env.update(CARTPULSE_URL=self.base_url, CARTPULSE_TOKEN=token or self.token)
        done = subprocess.run([*self.command, operation, json.dumps(arguments)], cwd=self.cwd, env=env,
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, f"{operation} crashed:\n{done.stdout[-3000:]}{done.stderr[-3000:]}"
        return json.loads(done.stdout.strip().splitlines()[-1])


def python_driver(script: str, base_url: str, token: str) -> Driver:
    """A driver for one of the Python scripts, run with ``.clients/venv``'s interpreter."""
    return Driver([str(python_clients()), str(PINS / script)], PINS, base_url, token)


def node_driver(script: str, base_url: str, token: str) -> Driver:
    """The script is copied beside ``node_modules`` so that it imports the SDK the way an
    application does (``import … from "@tinybirdco/sdk"``)."""
    folder = node_clients()
    shutil.copy(PINS / script, folder / script)
    return Driver([shutil.which("node"), script], folder, base_url, token)


class Clients:
    """The four clients' drivers against one server (an ``Http`` from support.py), each
    installed on first use: ``clients.tinybird_sdk("query", pipe=…, params=…)``."""

    SCRIPTS = {"tinybird_python_sdk": (python_driver, "tinybird_python_sdk_calls.py"),
               "tinybird_sdk": (python_driver, "tinybird_sdk_calls.py"),
               "verdin": (python_driver, "verdin_calls.py"),
               "ts_sdk": (node_driver, "tinybird_ts_calls.mjs")}

    def __init__(self, server):
        self.server = server

    def __getattr__(self, name: str) -> Driver:
        if name not in self.SCRIPTS:
            raise AttributeError(name)
        make, script = self.SCRIPTS[name]
        driver = make(script, self.server.base, self.server.token)
        setattr(self, name, driver)
        return driver


DS = "ecommerce_events"
#: ecommerce_events' columns in declared order (tests/clients send headerless CSV in it)
COLUMNS = ("event_time", "event_type", "user_id", "product_id", "category", "price", "quantity",
           "session_id", "country")
RANGE = {"start_date": "2026-10-02 00:00:00", "end_date": "2026-10-05 00:00:00"}
PIPES = {"top_products": expected.top_products, "events_by_country": expected.events_by_country,
         "total_revenue": expected.total_revenue}


def sample(n: int, seed: int) -> list[dict]:
    """``n`` events over a week of October 2026, 40 products, reproducible by ``seed``."""
    from cartpulse.cli.event_generator import EventGenerator

    return EventGenerator(seed=seed, products=40, span=timedelta(days=7)).events(n)


def ok(answer):
    """``answer``, after checking the client did not raise."""
    assert not (isinstance(answer, dict) and "raised" in answer), answer
    return answer


def compute(pipe: str, events: list[dict]) -> list[dict]:
    """What ``pipe`` answers over ``events`` without parameters (top_products: 1,000 rows)."""
    return PIPES[pipe](events, limit=1000) if pipe == "top_products" else PIPES[pipe](events)


def assert_pipes_match(server, events) -> None:
    """Every endpoint, read over plain HTTP, answers what Python computes from ``events``."""
    for pipe in PIPES:
        got = server.pipe(pipe, limit=1000) if pipe == "top_products" else server.pipe(pipe)
        want = compute(pipe, events)
        assert expected.same(got, want), (pipe, got[:3], want[:3])
