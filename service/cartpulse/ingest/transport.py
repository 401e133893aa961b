"""Request bodies, all or nothing: read whole and exactly as sent, or refused with a 400.

Every write path reads its body through here, so the same three rules hold for the
Events API and for bulk import:

* **A cut-off body is refused.** A body that ends before its ``Content-Length`` (the
  client died, a proxy gave up) or whose chunked encoding is broken is a 400 and stores
  nothing, so the client's retry with the same ``Idempotency-Key`` stores the whole body
  once. Read as far as it went, it would store the complete lines it had and make the
  retry a conflicting body (422).
* **gzip is decoded whole and strictly.** Every member of a multi-member stream (what
  ``cat a.gz b.gz`` or a parallel compressor produces) is decoded; anything after the
  last member other than another member is a 400, as is a truncated stream.
* **Decompression is bounded.** Decoding is streamed; the output is limited in size
  (``MAX_BODY_BYTES`` for events, ``MAX_IMPORT_BYTES`` for imports) and in ratio to
  the input (``MAX_RATIO``), so a small bomb is refused after a few megabytes of work,
  never after gigabytes of memory.
"""

from __future__ import annotations

import io
import zlib
from typing import BinaryIO

from cartpulse.errors import ApiError

#: Most decompressed bytes per compressed byte accepted. Shop events compress 5-20:1,
#: an NDJSON of one event repeated ~200:1; deflate's ceiling is ~1032:1, where bombs live.
MAX_RATIO = 400
#: A ratio is only judged past this much output: tiny bodies compress oddly either way.
RATIO_GRACE_BYTES = 1 << 20
_MAGIC = b"\x1f\x8b"
_READ = 1 << 16


class BodyError(ApiError):
    """A body that cannot be read as sent (400) or is too large once decoded (413)."""


def cut_off(got: int, declared: int) -> BodyError:
    return BodyError(400, f"body cut off: {got} of the {declared} bytes its Content-Length announced"
                          " arrived; nothing was stored (resend it whole, with the same Idempotency-Key)")


class ExactStream(io.RawIOBase):
    """The request's byte stream, checked: a read the server fails (broken chunked
    encoding, a reset connection) and an end before ``declared`` bytes are 400s."""

    def __init__(self, raw: BinaryIO, declared: int | None):
        self.raw, self.declared, self.count = raw, declared, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        wanted = len(buffer)
        if self.declared is not None:
            wanted = min(wanted, self.declared - self.count)
            if wanted <= 0:
                return 0
        try:
            data = self.raw.read(wanted)
        except Exception as err:  # the HTTP server's own errors (gunicorn's NoMoreData, InvalidChunkSize…)
            raise BodyError(400, f"the body could not be read as sent ({type(err).__name__}: {err});"
                                 " nothing was stored") from None
        if not data and self.declared is not None and self.count < self.declared:
            raise cut_off(self.count, self.declared)
        buffer[:len(data)] = data
        self.count += len(data)
        return len(data)


class Gunzip(io.RawIOBase):
    """Streaming gzip decoding of every member, strict about what follows, bounded."""

    def __init__(self, raw: BinaryIO, limit: int | None, what: str = "body", setting: str = "MAX_BODY_BYTES"):
        self.raw, self.limit, self.what, self.setting = raw, limit, what, setting
        self.inflater = zlib.decompressobj(wbits=31)
        self.pending = b""      # compressed bytes read but not yet given to the inflater
        self.consumed = 0       # compressed bytes read from raw (pending included)
        self.produced = 0       # decompressed bytes given out

    def readable(self) -> bool:
        return True

    def _fill(self) -> bool:
        chunk = self.raw.read(_READ)
        self.consumed += len(chunk)
        self.pending += chunk
        return bool(chunk)

    def readinto(self, buffer) -> int:
        while True:
            if self.inflater.eof:  # a member ended: the stream ends, or another member begins
                while len(self.pending) < 2 and self._fill():
                    pass
                if not self.pending:
                    return 0
                if self.pending[:2] != _MAGIC:
                    raise BodyError(400, f"{self.what} is not valid gzip: bytes after the end of the gzip"
                                         " stream; nothing was stored")
                self.inflater = zlib.decompressobj(wbits=31)
            if not self.pending and not self._fill():
                why = "empty" if self.consumed == 0 else "truncated stream"
                raise BodyError(400, f"{self.what} is not valid gzip: {why}; nothing was stored")
            try:
                out = self.inflater.decompress(self.pending, len(buffer))
            except zlib.error as err:
                raise BodyError(400, f"{self.what} is not valid gzip: {err}; nothing was stored") from None
            self.pending = self.inflater.unconsumed_tail or self.inflater.unused_data
            if out:
                self._count(len(out))
                buffer[:len(out)] = out
                return len(out)

    def _count(self, n: int) -> None:
        self.produced += n
        if self.limit is not None and self.produced > self.limit:
            raise BodyError(413, f"decompressed {self.what} over the limit of {self.limit} bytes ({self.setting}); nothing was stored")
        # Judged on the compressed bytes the inflater has taken, not those read ahead: a bomb
        # read in one 64 KiB gulp would otherwise inflate to 400 times the gulp first.
        inflated_from = self.consumed - len(self.pending)
        if self.produced > RATIO_GRACE_BYTES and self.produced > MAX_RATIO * max(inflated_from, 1):
            raise BodyError(413, f"{self.what} expands more than {MAX_RATIO}:1 when decompressed (a gzip bomb?);"
                                 " nothing was stored")


def request_stream(request, gzipped: bool, limit: int | None) -> io.BufferedReader:
    """The request body as a checked, decoded stream (see the module docstring)."""
    return decoded(ExactStream(request.stream, request.content_length), gzipped, limit)


def decoded(raw: io.RawIOBase, gzipped: bool, limit: int | None, what: str = "body",
            setting: str = "MAX_BODY_BYTES") -> io.BufferedReader:
    """``raw`` gunzipped when ``gzipped`` (strictly, bounded by ``limit``, the value of
    ``setting``), buffered for line reads."""
    return io.BufferedReader(Gunzip(raw, limit, what, setting) if gzipped else raw, buffer_size=1 << 20)


def is_gzipped(request) -> bool:
    """Does the request say its body is gzip (``Content-Encoding: gzip``)?"""
    return request.headers.get("Content-Encoding", "").lower() == "gzip"


def read_body(request, gzipped: bool, limit: int) -> bytes:
    """The whole body, decoded, at most ``limit`` bytes (413 past it), or a 400."""
    stream = request_stream(request, gzipped, limit)
    body = stream.read(limit + 1)
    if len(body) > limit:
        raise BodyError(413, f"body over the limit of {limit} bytes (MAX_BODY_BYTES); nothing was stored")
    return body
