"""Request framing held to RFC 9112, checked on the raw bytes before h11 parses them.

A request's framing (where its body ends, hence where the next request starts) is where
request smuggling lives: two parsers on one path that disagree on it let a body carry a
second request. So the front does not let h11 read the byte stream on its own.
``RequestFramer`` reads it first and hands h11 one message at a time, and only the bytes
it has checked: the head whole, then the body as it arrives. Bytes after the end of a
message (a pipelined request) stay here until the answer to that message is sent; after
a refusal nothing more is ever handed on, so no byte that follows is read as a request.

Refused (``Refusal``: 400 unless said otherwise; the front answers it and closes):

- a line that does not end in CRLF (a bare LF or CR), an obs-fold (a line starting with
  whitespace), whitespace before a header's colon, a header name that is not a token, a
  header value or chunk extension or trailer with a control character (RFC 9110 §5.5:
  NUL, CR, LF and the rest of 0x00-0x1F and 0x7F; HTAB is allowed);
- a request line that is not ``method SP target SP HTTP/1.x`` with single spaces, a target
  with a byte outside 0x21-0x7E; HTTP versions other than 1.0 and 1.1 (505);
- a method the API has no route for (501: TRACE, CONNECT, WebDAV's...);
- targets: origin-form (``/path?query``) and absolute-form (``http://host/path``, served as
  its path, its authority as the Host: RFC 9112 §3.2.2) are served; authority-form is only
  CONNECT's (501 above: CartPulse is no proxy) and ``OPTIONS *`` is a 501 (no server-wide
  options); any other target is a 400;
- HTTP/1.1 without exactly one Host, or any request with more than one;
- Content-Length together with Transfer-Encoding; Content-Length repeated, a list, signed
  or anything but 1 to 18 decimal digits;
- Transfer-Encoding on HTTP/1.0; Transfer-Encoding whose codings are not exactly one
  final ``chunked`` (400 when chunked is not last or appears twice, 501 for another coding
  before it: CartPulse decodes no transfer coding but chunked);
- a chunk size of more than 16 hex digits (at the 17th digit, without waiting for the
  line's end), a chunk-size line past 4 KiB, one that is not ``hex [extensions]``, chunk
  data not followed by CRLF, and (413) a chunk that would take the body past the route's
  limit, at once.
"""

from __future__ import annotations

import re

#: Characters of a token (RFC 9110 §5.6.2): methods, header names, codings, extension names.
_TOKEN = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_QUOTED = rb'"(?:[\t !#-\[\]-~\x80-\xff]|\\[\t -~\x80-\xff])*"'
REQUEST_LINE = re.compile(rb"(" + _TOKEN + rb") ([\x21-\x7e]+) HTTP/([0-9])\.([0-9])")
TOKEN = re.compile(_TOKEN)
#: A header value after its surrounding whitespace is trimmed: no control character but HTAB.
FIELD_VALUE = re.compile(rb"[\t\x20-\x7e\x80-\xff]*")
CHUNK_LINE = re.compile(rb"([0-9A-Fa-f]{1,16})((?:[ \t]*;[ \t]*" + _TOKEN + rb"(?:[ \t]*=[ \t]*(?:" + _TOKEN + rb"|" + _QUOTED + rb"))?)*)")
ABSOLUTE_FORM = re.compile(rb"(?i:https?)://([^/?#@\s]+)([/?][\x21-\x7e]*)?")
#: The methods the API has routes for (HEAD and OPTIONS answered by Flask); any other is a 501.
METHODS = {b"GET", b"HEAD", b"POST", b"PUT", b"PATCH", b"DELETE", b"OPTIONS"}
HEX = b"0123456789abcdefABCDEF"
#: Longest chunk size in hex digits (2**64 - 1), and longest chunk-size line with its extensions.
MAX_CHUNK_DIGITS = 16
MAX_CHUNK_LINE = 4096
#: Longest Content-Length in digits: any body this front takes is far shorter.
MAX_LENGTH_DIGITS = 18
MALFORMED = "malformed HTTP request: "
BROKEN_BODY = "the chunked body could not be read as sent ({}); nothing was stored"


class Refusal(Exception):
    """A request the front answers itself with ``status`` and closes the connection after."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


def line_too_long(max_line: int) -> Refusal:
    return Refusal(414, f"request line over {max_line} bytes: send a URL that long as a POST with a form body")


def head_too_large(max_head: int) -> Refusal:
    return Refusal(431, f"request head (request line and headers) over {max_head} bytes")


def malformed(why: str, status: int = 400) -> Refusal:
    return Refusal(status, MALFORMED + why)


def broken_body(why: str) -> Refusal:
    return Refusal(400, BROKEN_BODY.format(why))


def origin_form(target: bytes) -> tuple[bytes, bytes | None]:
    """(the target as origin-form, the authority of an absolute-form target or None)."""
    absolute = ABSOLUTE_FORM.fullmatch(target)
    if absolute is None:
        return target, None
    path = absolute.group(2) or b"/"
    return (path if path.startswith(b"/") else b"/" + path), absolute.group(1)


def check_field_line(line: bytes, where: str) -> tuple[bytes, bytes]:
    """(lower-cased name, trimmed value) of one header or trailer line, or a Refusal."""
    if line[:1] in (b" ", b"\t"):
        raise malformed(f"a {where} line starts with whitespace (obs-fold, RFC 9112 §5.2)")
    name, colon, value = line.partition(b":")
    if not colon:
        raise malformed(f"a {where} line without a colon")
    if name[-1:] in (b" ", b"\t"):
        raise malformed(f"whitespace between a {where} name and its colon (RFC 9112 §5.1)")
    if not TOKEN.fullmatch(name):
        raise malformed(f"a {where} name with a byte RFC 9110 §5.1 forbids")
    value = value.strip(b" \t")
    if not FIELD_VALUE.fullmatch(value):
        raise malformed(f"a control character in the {where} {name.decode('latin-1')} (RFC 9110 §5.5)")
    return name.lower(), value


def check_head(head: bytes, max_line: int) -> int | None:
    """Check a whole head (its lines, CRLF-separated, without the final empty line);
    answer the body's length (0: none) or None for a chunked body, or raise a Refusal."""
    request_line, *lines = head.split(b"\r\n")
    if len(request_line) > max_line:
        raise line_too_long(max_line)
    parsed = REQUEST_LINE.fullmatch(request_line)
    if parsed is None:
        raise malformed("the request line is not 'METHOD SP target SP HTTP/1.x' (RFC 9112 §3)")
    method, target, version = parsed.group(1), parsed.group(2), parsed.group(3, 4)
    if version not in ((b"1", b"1"), (b"1", b"0")):
        raise malformed("only HTTP/1.0 and HTTP/1.1 are served", 505)
    check_target(method, target)
    fields = [check_field_line(line, "header") for line in lines]
    values = {}
    for name, value in fields:
        values.setdefault(name, []).append(value)
    hosts = values.get(b"host", [])
    if len(hosts) > 1 or (version == (b"1", b"1") and not hosts):
        raise malformed("an HTTP/1.1 request needs exactly one Host header (RFC 9112 §3.2)")
    lengths, codings = values.get(b"content-length"), values.get(b"transfer-encoding")
    if lengths and codings:
        raise malformed("both Content-Length and Transfer-Encoding: the body's end is ambiguous (RFC 9112 §6.1)")
    if codings:
        if version == (b"1", b"0"):
            raise malformed("Transfer-Encoding on HTTP/1.0 (RFC 9112 §6.1)")
        check_codings(codings)
        return None
    if lengths:
        if len(lengths) > 1 or not lengths[0].isdigit() or len(lengths[0]) > MAX_LENGTH_DIGITS:
            raise malformed("Content-Length must be one plain decimal number (RFC 9112 §6.3)")
        return int(lengths[0])
    return 0


def check_target(method: bytes, target: bytes) -> None:
    if method not in METHODS:
        reason = "CartPulse is no proxy" if method == b"CONNECT" else f"the API takes {b', '.join(sorted(METHODS)).decode()}"
        raise Refusal(501, f"the method {method.decode()} is not implemented: {reason}")
    if target == b"*" and method == b"OPTIONS":
        raise Refusal(501, "OPTIONS * is not implemented: ask OPTIONS of a path")
    if not target.startswith(b"/") and ABSOLUTE_FORM.fullmatch(target) is None:
        raise malformed("the request target must be a path or an absolute http(s) URL (RFC 9112 §3.2)")


def check_codings(fields: list[bytes]) -> None:
    """The Transfer-Encoding fields: exactly one final chunked, or a Refusal."""
    codings = [coding.strip(b" \t").lower() for field in fields for coding in field.split(b",")]
    if not all(TOKEN.fullmatch(coding) for coding in codings):
        raise malformed("Transfer-Encoding must be a list of codings (RFC 9112 §6.1)")
    if codings[-1] != b"chunked" or codings.count(b"chunked") > 1:
        raise malformed("Transfer-Encoding must end in chunked, once (RFC 9112 §6.3)")
    if len(codings) > 1:
        raise Refusal(501, f"the transfer coding {codings[0].decode()} is not implemented: only chunked is")


class RequestFramer:
    """Split a connection's bytes into requests, strictly; what passes goes to h11.

    ``receive`` adds bytes; ``next_piece`` answers the next bytes h11 may read (b"" when
    it needs more, or when the message is complete: ``next_message`` then starts the
    next one) or raises a ``Refusal``. ``limit`` (the route's body limit) is set by the
    front once it knows the route.
    """

    def __init__(self, max_line: int, max_head: int):
        self.max_line, self.max_head = max_line, max_head
        self.buffer = bytearray()
        self.scanned = 0  # head bytes already checked for bare CR and LF
        self.state = "head"
        self.remaining = 0  # bytes left in the body or the chunk; in the trailers, their bytes so far
        self.body = 0  # chunk sizes declared so far
        self.limit: int | None = None

    def receive(self, data: bytes) -> None:
        self.buffer += data

    @property
    def holding(self) -> bool:
        """Bytes received and not handed on (a partial line, or a pipelined request)."""
        return bool(self.buffer)

    @property
    def done(self) -> bool:
        return self.state == "done"

    @property
    def between_messages(self) -> bool:
        return self.state == "head" and not self.buffer

    def next_message(self) -> None:
        self.state, self.scanned, self.body, self.limit = "head", 0, 0, None

    def next_piece(self) -> bytes:
        step = getattr(self, "_" + self.state)
        return step()

    def _take(self, size: int) -> bytes:
        piece = bytes(self.buffer[:size])
        del self.buffer[:size]
        return piece

    def _done(self) -> bytes:
        return b""

    def _head(self) -> bytes:
        end = self.buffer.find(b"\r\n\r\n", max(0, self.scanned - 3))
        self._check_line_ends(len(self.buffer) if end < 0 else end + 4)
        if end < 0:
            first = self.buffer.find(b"\r\n")
            if (first if first >= 0 else len(self.buffer)) > self.max_line:
                raise line_too_long(self.max_line)
            if len(self.buffer) > self.max_head:
                raise head_too_large(self.max_head)
            return b""
        if end + 4 > self.max_head:
            raise head_too_large(self.max_head)
        length = check_head(bytes(self.buffer[:end]), self.max_line)
        self.state, self.remaining = ("size", 0) if length is None else ("length", length) if length else ("done", 0)
        return self._take(end + 4)

    def _check_line_ends(self, upto: int) -> None:
        """Every LF in the head comes after a CR, every CR before an LF (RFC 9112 §2.2)."""
        data = self.buffer
        start = self.scanned
        for byte in (b"\n", b"\r"):
            at = data.find(byte, start, upto)
            while at >= 0:
                if byte == b"\n" and (at == 0 or data[at - 1] != 13):
                    raise malformed("a line ends in a bare LF, not CRLF (RFC 9112 §2.2)")
                if byte == b"\r" and at + 1 < len(data) and data[at + 1] != 10:
                    raise malformed("a bare CR (RFC 9112 §2.2)")
                at = data.find(byte, at + 1, upto)
        # a CR last in the buffer is checked again when its next byte comes
        self.scanned = upto - 1 if upto and data[upto - 1] == 13 else upto

    def _length(self) -> bytes:
        return self._counted("done")

    def _counted(self, then: str) -> bytes:
        """Up to ``remaining`` bytes of body or chunk data, then the state ``then``."""
        piece = self._take(self.remaining)
        self.remaining -= len(piece)
        if not self.remaining:
            self.state = then
        return piece

    def _size(self) -> bytes:
        digits = 0
        while digits < len(self.buffer) and self.buffer[digits] in HEX:
            digits += 1
        if digits > MAX_CHUNK_DIGITS:
            raise broken_body(f"a chunk size of more than {MAX_CHUNK_DIGITS} hex digits")
        if digits == 0 and self.buffer:
            raise broken_body("a chunk-size line that does not start with a hex digit")
        end = self.buffer.find(b"\n")
        if end < 0:
            if len(self.buffer) > MAX_CHUNK_LINE:
                raise broken_body(f"a chunk-size line over {MAX_CHUNK_LINE} bytes")
            if self.buffer.find(b"\r") >= 0 and self.buffer[-1] != 13:
                raise broken_body("a bare CR in a chunk-size line")
            return b""
        if end == 0 or self.buffer[end - 1] != 13:
            raise broken_body("a chunk-size line ending in a bare LF")
        line = CHUNK_LINE.fullmatch(bytes(self.buffer[:end - 1]))
        if line is None:
            raise broken_body("a chunk-size line that is not 'hex-size [; extensions]', or one with a control character")
        size = int(line.group(1), 16)
        self.body += size
        if self.limit is not None and self.body > self.limit:
            raise ChunkOverLimit(self.limit)
        self.state, self.remaining = ("data", size) if size else ("trailer", 0)
        return self._take(end + 1)

    def _data(self) -> bytes:
        return self._counted("data_end")

    def _data_end(self) -> bytes:
        if self.buffer[:2] not in (b"\r\n", b"\r", b""):
            raise broken_body("chunk data not followed by CRLF")
        if len(self.buffer) < 2:
            return b""
        self.state = "size"
        return self._take(2)

    def _trailer(self) -> bytes:
        end = self.buffer.find(b"\n")
        if (len(self.buffer) if end < 0 else end) + self.remaining > self.max_head:
            raise broken_body(f"trailers over {self.max_head} bytes")
        if end < 0:
            return b""
        if end == 0 or self.buffer[end - 1] != 13 or self.buffer.find(b"\r", 0, end - 1) >= 0:
            raise broken_body("a trailer line not ending in CRLF")
        line = bytes(self.buffer[:end - 1])
        if line:
            try:
                check_field_line(line, "trailer")
            except Refusal as refusal:
                raise broken_body(refusal.message.removeprefix(MALFORMED)) from None
        else:
            self.state = "done"
        self.remaining += end + 1  # the trailers' bytes so far
        return self._take(end + 1)


class ChunkOverLimit(Refusal):
    """A chunk whose size takes the body past the route's limit: a 413 the front words."""

    def __init__(self, limit: int):
        super().__init__(413, f"request body over the limit of {limit} bytes")
