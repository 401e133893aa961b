"""What the HTTP front (``front.py``) needs of a request besides parsing it: the limits
it is read within, the WSGI environ (PEP 3333) the app gets, and the error body."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from urllib.parse import unquote_to_bytes

import h11

from cartpulse.cli.http_framing import origin_form
from cartpulse.errors import error_body

#: The Data Sources API takes bulk imports (MAX_IMPORT_BYTES); every other route MAX_BODY_BYTES.
IMPORT_PREFIX = "/v0/datasources"
#: gzip can make a body slightly larger than what it holds: room for that over the limit.
_GZIP_SLACK = 1.01


@dataclass(frozen=True)
class Limits:
    """The front's limits, from the settings (``HTTP_*_TIMEOUT``, ``HTTP_KEEPALIVE``, body sizes)."""

    max_body: int
    max_import: int
    head_timeout: float
    body_timeout: float
    keepalive: float

    @classmethod
    def from_settings(cls, settings) -> Limits:
        return cls(settings.max_body_bytes, settings.max_import_bytes,
                   settings.head_timeout, settings.body_timeout, settings.keepalive)

    def body(self, path: str) -> tuple[int, str]:
        """The largest body a route takes as sent (before gzip decoding), and its setting."""
        if path.startswith(IMPORT_PREFIX):
            return int(self.max_import * _GZIP_SLACK) + 65536, "MAX_IMPORT_BYTES"
        return int(self.max_body * _GZIP_SLACK) + 65536, "MAX_BODY_BYTES"


def error_bytes(message: str) -> bytes:
    return json.dumps(error_body(message)).encode()


def path_of(request: h11.Request) -> str:
    return origin_form(request.target)[0].split(b"?", 1)[0].decode("latin-1")


def content_length(request: h11.Request) -> int | None:
    for name, value in request.headers:
        if name == b"content-length":
            return int(value)
    return None


def environ_of(request: h11.Request, body, length: int, transport) -> dict:
    """The WSGI environ (PEP 3333) of a request read whole: the body is plain bytes, so
    ``CONTENT_LENGTH`` is its length and any ``Transfer-Encoding`` is already undone."""
    target, authority = origin_form(request.target)  # absolute-form: its path, its authority the Host
    raw_path, _, query = target.partition(b"?")
    peer = transport.get_extra_info("peername") or ("", 0)
    sock = transport.get_extra_info("sockname") or ("", 0)
    environ = {
        "REQUEST_METHOD": request.method.decode("ascii"),
        "SCRIPT_NAME": "",
        "PATH_INFO": unquote_to_bytes(raw_path).decode("latin-1"),
        "QUERY_STRING": query.decode("latin-1"),
        "RAW_URI": request.target.decode("latin-1"),
        "SERVER_NAME": str(sock[0]), "SERVER_PORT": str(sock[1]),
        "SERVER_PROTOCOL": "HTTP/" + request.http_version.decode("ascii"),
        "REMOTE_ADDR": str(peer[0]), "REMOTE_PORT": str(peer[1]),
        "CONTENT_LENGTH": str(length) if length or request.method not in (b"GET", b"HEAD") else "",
        "wsgi.version": (1, 0), "wsgi.url_scheme": "http", "wsgi.input": body,
        "wsgi.errors": sys.stderr, "wsgi.multithread": True, "wsgi.multiprocess": True,
        "wsgi.run_once": False, "wsgi.input_terminated": True,
        "cartpulse.front.headers": request.headers,
    }
    for name, value in request.headers:
        key = name.decode("latin-1").upper().replace("-", "_")
        if key in ("CONTENT_LENGTH", "TRANSFER_ENCODING"):
            continue
        key = key if key == "CONTENT_TYPE" else "HTTP_" + key
        text = value.decode("latin-1")
        environ[key] = f"{environ[key]},{text}" if key in environ else text
    if authority is not None:
        environ["HTTP_HOST"] = authority.decode("latin-1")  # RFC 9112 §3.2.2: the Host header is ignored
    return environ
