"""gunicorn's access log without secrets: a ``?token=`` in a logged URL is redacted.

Tinybird's clients (and CartPulse's dashboard) may pass the token in the query string,
and an access log is read by more people, and kept longer, than the tokens it would
leak. The request line (``%(r)s``) and the query string (``%(q)s``) are rewritten
before the line is formatted; the ``Authorization`` header is never logged by the
default format.
"""

from __future__ import annotations

import re

from gunicorn.glogging import Logger

#: ``token=`` as a query parameter (at the start, or after ``?``, ``&`` or ``;``).
_TOKEN = re.compile(r"((?:^|[?&;])token=)[^&;#\s]*", re.IGNORECASE)
REDACTED = "[redacted]"


def redact(text: str) -> str:
    return _TOKEN.sub(lambda m: m.group(1) + REDACTED, text)


class RedactingLogger(Logger):
    """gunicorn's logger, with tokens taken out of the access log's URL atoms."""

    def atoms(self, resp, req, environ, request_time):
        atoms = super().atoms(resp, req, environ, request_time)
        for key in ("r", "q"):
            if atoms.get(key):
                atoms[key] = redact(atoms[key])
        return atoms
