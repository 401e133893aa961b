"""What Ctrl-C does to ``cartpulse run`` (and ``cartpulse serve``): a quick, quiet stop.

A terminal's Ctrl-C sends SIGINT to every process of its foreground process group: ``make``,
``cartpulse run``, gunicorn's master and workers, and the ``dbt run`` that builds the models
at start. (The embedded PostgreSQL and the scheduler run in sessions of their own and are
stopped by ``cartpulse run`` in order.) Two of those stopped badly, each with a message
that sent the reader the wrong way. The workers' side is in ``front.FrontWorker``: SIGINT
ignored (the master turns it into SIGQUIT for each), SIGQUIT ends at once, taking no lock
(gunicorn's gthread took its pool's lock in the handler and could wait for itself until
the master SIGKILLed it: "Perhaps out of memory?"). The dbt side is here.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
from contextlib import contextmanager

from cartpulse.ops.dbt_runner import dbt_env, dbt_executable


def build_models(settings, url: str, *args: str) -> None:
    """``dbt run`` (see ``dbt_protected``)."""
    dbt_protected(settings, url, "run", *args)


def dbt_protected(settings, url: str, *args: str) -> None:
    """``dbt run`` as ``cartpulse run`` builds the models before serving; raise
    CalledProcessError when it fails.

    On Ctrl-C, ``subprocess.run`` would SIGKILL dbt 0.25 s later. dbt then leaves its
    multiprocessing semaphores to the resource tracker, which warns that "There appear to be
    2 leaked semaphore objects"; and a SIGINT makes dbt print a KeyboardInterrupt traceback.
    So dbt runs in a session of its own, out of the terminal's reach, and a Ctrl-C lets the
    build finish (seconds; the models are left whole) before ``cartpulse run`` stops. A
    second Ctrl-C interrupts it: SIGINT, dbt's own way to cancel its queries.
    """
    command = [dbt_executable(), *args]
    with _ctrl_c_deferred() as interrupted:  # a Ctrl-C inside Popen would lose dbt's handle
        proc = subprocess.Popen(command, cwd=settings.project_dir, env=dbt_env(settings, url), start_new_session=True)
    try:
        if interrupted:
            raise KeyboardInterrupt
        returncode = proc.wait()
    except KeyboardInterrupt:
        print("Stopping when this dbt run is done (Ctrl-C again to interrupt it)…", file=sys.stderr, flush=True)
        try:
            proc.wait()
        except KeyboardInterrupt:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        raise
    if returncode != 0:
        raise subprocess.CalledProcessError(returncode, command)


@contextmanager
def _ctrl_c_deferred():
    """While the block runs, a SIGINT is recorded (the yielded list gets an item) instead of
    raising KeyboardInterrupt; the caller raises it where it can handle it. Used around
    ``Popen``: dbt is already running when Popen returns, and a KeyboardInterrupt raised
    in between left dbt orphaned and ``cartpulse run`` gone without a word. Only where
    SIGINT raises KeyboardInterrupt (a shell that starts us with SIGINT ignored keeps it so),
    and only from the main thread, which is the only one signals reach."""
    interrupted: list[bool] = []
    if threading.current_thread() is not threading.main_thread() or \
            signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        yield interrupted
        return
    signal.signal(signal.SIGINT, lambda signum, frame: interrupted.append(True))
    try:
        yield interrupted
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
