"""What Ctrl-C does to ``cartpulse run`` (and ``cartpulse serve``): a quick, quiet stop.

A terminal's Ctrl-C sends SIGINT to every process of its foreground process group: ``make``,
``cartpulse run``, gunicorn's master and workers, and the ``dbt run`` that builds the models
at start. (The embedded PostgreSQL and the scheduler run in sessions of their own and are
stopped by ``cartpulse run`` in order.) Two of those stopped badly, each with a message
that sent the reader the wrong way; both are handled here.
"""

from __future__ import annotations

import gc
import signal
import subprocess
import sys

from gunicorn.workers import gthread

from cartpulse.ops.dbt_runner import dbt_env, dbt_executable


class ThreadWorker(gthread.ThreadWorker):
    """gunicorn's gthread worker, with a quick stop that cannot deadlock.

    gthread answers SIGQUIT and SIGINT with ``ThreadPoolExecutor.shutdown()`` inside the
    signal handler, which takes the executor's lock. The interrupted main thread may hold
    that lock: in ``submit()`` (CPython issue 121649), or in that same handler when the
    terminal's SIGINT and the master's SIGQUIT arrive together, as they do on every Ctrl-C.
    The worker then waits for itself until the master SIGKILLs it after ``graceful_timeout``
    (10 s) and logs "Worker (pid:…) was sent SIGKILL! Perhaps out of memory?" (3 stops in
    24 under load, when measured).

    Here a worker ignores SIGINT (its master turns a Ctrl-C into SIGQUIT for each worker),
    and SIGQUIT takes no lock: it ends the main loop with SystemExit. Requests already in
    the pool's threads finish, as with gthread (Python joins those threads at exit), and
    atexit handlers run (the pipe_stats queue is flushed). The heap is frozen rather than
    garbage-collected one last time at exit: that collection took about half of the stop
    under load. SIGTERM (a graceful stop) is gthread's own.
    """

    def init_signals(self) -> None:
        super().init_signals()
        signal.signal(signal.SIGINT, signal.SIG_IGN)

    def handle_quit(self, sig, frame) -> None:
        self.alive = False
        gc.freeze()  # the process ends: no last full collection of its heap
        sys.exit(0)


def build_models(settings, url: str, *args: str) -> None:
    """``dbt run`` as ``cartpulse run`` builds the models before serving; raise
    CalledProcessError when it fails.

    On Ctrl-C, ``subprocess.run`` would SIGKILL dbt 0.25 s later. dbt then leaves its
    multiprocessing semaphores to the resource tracker, which warns that "There appear to be
    2 leaked semaphore objects"; and a SIGINT makes dbt print a KeyboardInterrupt traceback.
    So dbt runs in a session of its own, out of the terminal's reach, and a Ctrl-C lets the
    build finish (seconds; the models are left whole) before ``cartpulse run`` stops. A
    second Ctrl-C interrupts it: SIGINT, dbt's own way to cancel its queries.
    """
    command = [dbt_executable(), "run", *args]
    proc = subprocess.Popen(command, cwd=settings.project_dir, env=dbt_env(settings, url), start_new_session=True)
    try:
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
