"""Prometheus multiprocess mode for gunicorn, set up before prometheus_client is imported.

Each gunicorn worker is its own process with its own counters; a scrape reaches one
worker at random. prometheus_client's multiprocess mode makes every worker write its
values to memory-mapped files in ``PROMETHEUS_MULTIPROC_DIR`` and sums them at scrape
time, so ``/metrics`` is the same whichever worker answers. The library decides the mode
when it is first imported, from its own environment variable, which is why this module
must not import it at the top: the directory is exported in the master, before the
workers are forked and build the app. The variable is read, like every setting, by
``config.Settings`` (``prometheus_multiproc_dir``); ``prepare`` is the one place that
writes it, for the library.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

ENV = "PROMETHEUS_MULTIPROC_DIR"


def prepare(given: Path | None) -> Path:
    """Use ``given`` (the PROMETHEUS_MULTIPROC_DIR setting; emptied: files of a previous
    server would be added to this one's counts) or a fresh temporary folder, removed when
    this process exits; export it for prometheus_client and return it."""
    if given:
        folder = Path(given)
        folder.mkdir(parents=True, exist_ok=True)
        for stale in folder.glob("*.db"):
            stale.unlink()
    else:
        folder = Path(tempfile.mkdtemp(prefix="cartpulse-metrics-"))
        atexit.register(_remove, folder, os.getpid())
    os.environ[ENV] = str(folder)
    return folder


def _remove(folder: Path, owner: int) -> None:
    """Remove the folder at exit of the process that made it, only: gunicorn's workers are
    forked from it with its atexit handlers, and a worker that exits (restarted after a
    timeout, a crash, SIGTERM) must not take every worker's files with it. It did: the
    next metric update in the new worker was a 500, and /metrics was empty."""
    if os.getpid() == owner:
        shutil.rmtree(folder, ignore_errors=True)


def worker_exited(server, worker) -> None:
    """gunicorn's child_exit hook, installed after ``prepare``: drop the live-gauge files
    of a dead worker (its counters stay: they are totals)."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)
