"""What ``cartpulse run`` and ``cartpulse serve`` check before they start anything.

Both checks fail at once, with a message that says what to do, instead of after the
database has started and the models were built (or, worse, half-way):

* **One ``cartpulse run`` per state folder.** A second one in the same checkout would
  share the first one's embedded database and stop it when it ends, under the first.
  The first holds an exclusive lock on ``<state>/run.lock`` (released by the kernel
  when it exits, however it exits); the second is refused, naming the first's pid.
* **A free port.** The address and port are bound once, then released: a port in use
  is reported before anything else starts.
"""

from __future__ import annotations

import fcntl
import os
import socket
from pathlib import Path


class Refused(RuntimeError):
    """A reason not to start; the CLI prints it and exits 2."""


def hold_state_lock(state_dir: Path):
    """Take ``<state_dir>/run.lock`` for this process's life; Refused if another holds it.
    Returns the open file: the lock lasts as long as it stays open."""
    state_dir.mkdir(parents=True, exist_ok=True)
    handle = open(state_dir / "run.lock", "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "?"
        handle.close()
        raise Refused(f"another `cartpulse run` (pid {holder}) is using this state folder ({state_dir}) and its"
                      " database: stop it first, or give this one a folder and port of its own"
                      " (CARTPULSE_STATE_DIR=… PORT=…)") from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle


def check_port_free(address: str, port: int) -> None:
    """Refused when ``address:port`` cannot be bound (in use, or not an address here)."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server binds
        try:
            probe.bind((address, port))
        except OSError as err:
            raise Refused(f"cannot listen on {address}:{port} ({err.strerror}): another server uses it?"
                          " Stop it, or choose another port: PORT=8001 make run") from None
