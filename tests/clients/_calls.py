"""What every driver script shares: read the operation, print the answer as JSON.

Run by tests/real_clients.py with the clients' own interpreter (``.clients/venv``), never
the project's: these scripts import only the client under test and the standard library.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from datetime import date, datetime


def _plain(value):
    if dataclasses.is_dataclass(value):
        return dataclasses.asdict(value)
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode()
    raise TypeError(f"cannot print {type(value).__name__}")


def run(operations: dict, errors: tuple[type, ...], status) -> None:
    """Call ``operations[argv[1]](**json(argv[2]))``; print its result, or the client's
    error (``errors``) with the HTTP status ``status(err)`` reads from it."""
    operation, arguments = sys.argv[1], json.loads(sys.argv[2])
    try:
        result = operations[operation](**arguments)
    except errors as err:
        result = {"raised": type(err).__name__, "status": status(err), "message": str(err)[:500]}
    print(json.dumps(result, default=_plain))


def server() -> tuple[str, str]:
    """The CartPulse base URL and token the test gives."""
    return os.environ["CARTPULSE_URL"], os.environ["CARTPULSE_TOKEN"]
