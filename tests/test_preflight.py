"""What `cartpulse run` checks before it starts anything (cli/preflight.py), and the
banner that shows the admin token only when it is created."""

from __future__ import annotations

import socket
import subprocess
import time
from dataclasses import replace

from cartpulse.cli.main import banner
from cartpulse.cli.preflight import hold_state_lock
from support import CARTPULSE, free_port


def run_refused(tmp_path, env: dict) -> tuple[subprocess.CompletedProcess, float]:
    started = time.monotonic()
    done = subprocess.run([CARTPULSE, "run"], env={"PATH": "/usr/bin:/bin", "CARTPULSE_STATE_DIR": str(tmp_path / "state"),
                                                   "DBT_TARGET_PATH": str(tmp_path / "target"), **env},
                          capture_output=True, text=True, timeout=120)
    return done, time.monotonic() - started


def test_a_port_in_use_is_refused_before_anything_starts(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done, seconds = run_refused(tmp_path, {"PORT": str(port)})
    assert done.returncode == 2, done.stdout + done.stderr
    assert f"cannot listen on 127.0.0.1:{port}" in done.stderr and "PORT=" in done.stderr
    assert not (tmp_path / "state" / "pgdata").exists(), "nothing may start before the check"
    assert "Admin token" not in done.stdout


def test_a_second_run_in_the_same_checkout_is_refused(tmp_path):
    held = hold_state_lock(tmp_path / "state")  # as the first `cartpulse run` holds it
    try:
        done, _ = run_refused(tmp_path, {"PORT": str(free_port())})
    finally:
        held.close()
    assert done.returncode == 2, done.stdout + done.stderr
    assert "another `cartpulse run`" in done.stderr and "CARTPULSE_STATE_DIR" in done.stderr
    assert not (tmp_path / "state" / "pgdata").exists()


def test_the_banner_shows_the_admin_token_only_when_it_is_created(settings):
    quiet = replace(settings, admin_token=None)
    secret = "cp_made-just-now"
    assert secret in banner(quiet, secret, new_token=True)
    later = banner(quiet, secret, new_token=False)
    assert secret not in later and f"kept in {quiet.state_dir / 'admin_token'}" in later
    assert "$(cat " in later  # the export line still works, without the secret in it
    given = banner(replace(settings, admin_token=secret), secret)
    assert secret not in given and "TB_ADMIN_TOKEN, from your environment" in given


def test_the_lock_is_released_when_its_holder_goes(tmp_path):
    first = hold_state_lock(tmp_path)
    first.close()
    hold_state_lock(tmp_path).close()  # free again: no stale lock after a crash or a stop
