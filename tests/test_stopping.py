"""Ctrl-C of `cartpulse run` (what `make run` calls): quick, and no message that misleads.

A terminal's Ctrl-C is a SIGINT to its whole foreground process group, so these tests
start `cartpulse run` in a session of its own and signal the group, as a terminal does
(``stop.py``'s docstrings say what went wrong before). A stop of the running server, under
requests, is checked at the end of ``test_readme.py``, which has one running already.
"""

from __future__ import annotations

import gc
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import psycopg
import pytest

from cartpulse.cli.front import FrontWorker
from cartpulse.storage.embedded import EmbeddedPostgres
from support import CARTPULSE, MISLEADING_AT_STOP, as_from_a_terminal, free_port


def test_a_worker_quits_at_once_from_its_signal_handler():
    """SIGQUIT (what the master sends each worker on Ctrl-C) ends the worker from inside the
    handler, taking no lock: gunicorn's gthread shut its pool down there, took the pool's
    lock, and waited for itself when the signal landed while its main thread held it."""
    worker = FrontWorker.__new__(FrontWorker)  # the handler needs no more than this
    worker.alive = True
    ended = []
    try:
        worker.handle_quit(signal.SIGQUIT, None)
    except SystemExit as exit_:
        ended.append(exit_.code)
    finally:
        gc.unfreeze()  # the handler freezes the heap of a process about to end: not this one
    assert ended == [0] and not worker.alive


def test_a_ctrl_c_while_dbt_starts_is_kept_for_after_popen():
    """A SIGINT between dbt's start and `build_models` holding its handle is recorded, not
    raised there (it left dbt orphaned and the run gone without a word); SIGINT raises
    again once the block ends."""
    from cartpulse.cli.stopping import _ctrl_c_deferred

    # SIGINT as a terminal has it, whatever the suite was started with (a CI runner's
    # shell may pass it down ignored).
    inherited = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with _ctrl_c_deferred() as interrupted:
            os.kill(os.getpid(), signal.SIGINT)
            signal.pthread_kill(threading.main_thread().ident, 0)  # the handler has run by now
        assert interrupted == [True]
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGINT, inherited)


def dbt_child(parent: int) -> int | None:
    """The pid of a `dbt run` whose parent is ``parent``, if one runs (not the `dbt compile`
    of the derivation before it)."""
    for proc in Path("/proc").iterdir():
        try:
            ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (proc / "cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError, IndexError):
            continue
        if ppid == parent and any(part.endswith(b"/dbt") for part in cmdline) and b"run" in cmdline:
            return int(proc.name)
    return None


@pytest.mark.embedded
def test_ctrl_c_during_the_start_up_dbt_run(server_tmp):
    """A first Ctrl-C lets the start-up `dbt run` finish, then stops without serving: dbt is
    out of the terminal's reach, so it is neither killed (resource_tracker: "leaked
    semaphore objects") nor interrupted (a KeyboardInterrupt traceback). A second Ctrl-C
    interrupts dbt on purpose, and still leaves no leaked semaphore behind.

    The test holds a lock on a rollup, so that dbt waits for it: "dbt still runs" is then
    a fact when the Ctrl-Cs come, not a bet on how fast dbt is."""
    if os.environ.get("CARTPULSE_TEST_DATABASE_URL"):
        pytest.skip("engine-independent: exercised in the embedded-PostgreSQL pass")
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "TB_ADMIN_TOKEN", "HOST")}
    env.update(PORT=str(free_port()), CARTPULSE_STATE_DIR=str(server_tmp / "state"),
               DBT_TARGET_PATH=str(server_tmp / "target"), REFRESH_SECONDS="0")
    for command in (["init"], ["build", "--quiet"]):  # the database, left running, and the models
        done = subprocess.run([CARTPULSE, *command], env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    url = EmbeddedPostgres(server_tmp / "state" / "pgdata").url

    def interrupted(times: int) -> str:
        with psycopg.connect(url) as holder:
            holder.execute("lock table analytics.rollup_purchases_daily_by_country in access exclusive mode")
            proc = subprocess.Popen([CARTPULSE, "run"], preexec_fn=as_from_a_terminal, env=env,
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    text=True, start_new_session=True)
            try:
                deadline = time.monotonic() + 120
                while (dbt := dbt_child(proc.pid)) is None:
                    assert proc.poll() is None and time.monotonic() < deadline, "no dbt run started"
                    time.sleep(0.02)
                os.killpg(proc.pid, signal.SIGINT)
                said = [proc.stdout.readline()]
                while "Ctrl-C again" not in said[-1]:
                    assert said[-1], "cartpulse run ended without saying what it waits for"
                    said.append(proc.stdout.readline())
                assert dbt_child(proc.pid) == dbt, "dbt is let run after the first Ctrl-C"
                if times == 1:
                    holder.commit()  # the lock: dbt goes on to the end
                else:
                    os.killpg(proc.pid, signal.SIGINT)  # dbt must give up its wait for the lock
                out = "".join(said) + proc.communicate(timeout=120)[0]
            finally:
                if proc.poll() is None:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
        assert proc.returncode == 0, out[-3000:]
        assert "stopping the embedded database" not in out, out[-3000:]  # `cartpulse init` started it
        assert "is serving" not in out
        for words in (*MISLEADING_AT_STOP, "leaked semaphore"):
            assert words not in out, out[-3000:]
        return out

    try:
        out = interrupted(1)
        assert "Stopping when this dbt run is done" in out
        assert "Traceback" not in out and "KeyboardInterrupt" not in out
        assert "Completed successfully" in out  # the models were built whole
        assert "Completed successfully" not in interrupted(2)
    finally:
        subprocess.run([CARTPULSE, "db", "stop"], env=env, capture_output=True, timeout=120)
