"""One client connection of the HTTP front (``front.py``): read a request whole, then run it.

The loop's side (``HttpConnection``'s protocol methods) keeps the timers and parses: the
bytes go first through ``RequestFramer`` (http_framing.py: RFC 9112's framing, strictly),
which hands h11 one checked message at a time. The app's side (``_respond``, in a pool
thread) calls the WSGI app and hands each piece of the answer back to the loop. h11 is
only ever touched from the loop's thread.
"""

from __future__ import annotations

import asyncio
import datetime
import tempfile
import time
from concurrent.futures import TimeoutError as FutureTimeout
from types import SimpleNamespace

import h11

from cartpulse.cli.http_framing import ChunkOverLimit, Refusal, RequestFramer, head_too_large
from cartpulse.cli.http_request import Limits, content_length, environ_of, error_bytes, path_of
from cartpulse.ingest.transport import cut_off

#: The head (request line and headers) is at most this many bytes (431 over), the request
#: line alone at most ``MAX_LINE`` (414 over; Tinybird's clients POST past 8 KB of URL).
MAX_HEAD = 64 * 1024
MAX_LINE = 16 * 1024
HEAD_TOO_LARGE = head_too_large(MAX_HEAD).message
#: The app's thread waits at most this long for a client to read the answer.
SEND_TIMEOUT = 30.0
#: Seconds the front keeps reading (and dropping) after an error answer, before it closes.
LINGER = 2.0
#: An answer up to this size is handed to the loop whole, in one step.
BUFFER_BYTES = 256 * 1024
#: Bodies up to this size stay in memory; larger ones go to a temporary file.
SPOOL_BYTES = 1 << 20


class HttpConnection(asyncio.Protocol):
    def __init__(self, app, executor, limits: Limits, registry: set, log, full: bool, stopping):
        self.app, self.executor, self.limits, self.registry, self.log = app, executor, limits, registry, log
        self.full, self.stopping = full, stopping
        self.h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
        self.busy = False
        self.timer: asyncio.TimerHandle | None = None
        self.timer_kind: str | None = None  # "head" or "body": which limit the timer enforces
        self.request: h11.Request | None = None
        self.body = None
        self.received = 0
        self.framer = RequestFramer(MAX_LINE, MAX_HEAD)
        self.eof = False  # the client closed its side; h11 learns it once the framer holds nothing
        self.writable = True
        self.refused = False
        self.drained: asyncio.Future | None = None

    # -- the loop's side --------------------------------------------------------------

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.loop = asyncio.get_running_loop()
        self.registry.add(self)
        if self.full:
            self._refuse(503, "too many open connections to this server; retry shortly")
            return
        self._arm(self.limits.keepalive, self._idle_timeout)

    def connection_lost(self, exc) -> None:
        self.registry.discard(self)
        self._arm(None, None)
        if self.drained is not None and not self.drained.done():
            self.drained.set_result(False)
        self._discard_body()

    def data_received(self, data: bytes) -> None:
        if self.refused:
            return  # lingering after an error: what the client still sends is dropped
        if self.request is None and not self.busy:
            if self.timer_kind != "head":
                self._arm(self.limits.head_timeout, self._head_timeout, "head")
        elif self.request is not None and not self.busy:
            self._arm(self.limits.body_timeout, self._body_timeout, "body")
        self.framer.receive(data)
        self._pump()

    def eof_received(self) -> bool:
        if self.refused:
            return False
        self.eof = True
        self._pump()
        return self.busy  # keep the socket open to send the answer of a request in progress

    def _pump(self) -> None:
        """Hand h11 what the framer lets through, a piece at a time, and act on its events.
        The client's end reaches h11 only when the framer holds nothing more of it."""
        while not self.busy and not self.refused and not self.transport.is_closing():
            try:
                piece = self.framer.next_piece()
            except ChunkOverLimit:
                return self._refuse(413, f"request body over the limit of {self.limit} bytes ({self.limit_setting})")
            except Refusal as refusal:
                return self._refuse(refusal.status, refusal.message)
            if not piece:
                break
            self.h11.receive_data(piece)
            self._advance()
        if self.eof and not self.busy and not self.refused and not self.framer.done:
            if self.framer.holding and self.request is None:
                return self._refuse(400, "malformed HTTP request: the connection was closed in the middle of a request head")
            self.h11.receive_data(b"")
            self._advance()

    def pause_writing(self) -> None:
        self.writable = False

    def resume_writing(self) -> None:
        self.writable = True
        if self.drained is not None and not self.drained.done():
            self.drained.set_result(True)

    def close_when_idle(self) -> None:
        if not self.busy:
            self.transport.close()

    def _advance(self) -> None:
        while not self.busy and not self.refused and not self.transport.is_closing():
            try:
                event = self.h11.next_event()
            except h11.RemoteProtocolError as err:
                status = err.error_status_hint
                message = (HEAD_TOO_LARGE if status == 431
                           else f"malformed HTTP request: {err}")
                if self.request is not None:
                    declared = content_length(self.request)
                    message = (cut_off(self.received, declared).message if declared is not None and self.received < declared
                               else f"the body could not be read as sent ({err}); nothing was stored")
                return self._refuse(status, message)
            if event is h11.NEED_DATA or event is h11.PAUSED:
                return
            if isinstance(event, h11.Request):
                self._begin(event)
            elif isinstance(event, h11.Data):
                self._take(event.data)
            elif isinstance(event, h11.EndOfMessage):
                self._dispatch()
            elif isinstance(event, h11.ConnectionClosed):
                if self.request is not None:  # the client left mid-body: nothing reaches the app
                    self.log.info("a request body was cut off by the client: %s %s",
                                  self.request.method.decode(), path_of(self.request))
                self.transport.close()
                return

    def _begin(self, request: h11.Request) -> None:
        self.request, self.received = request, 0
        self.limit, self.limit_setting = self.limits.body(path_of(request))
        self.framer.limit = self.limit
        declared = content_length(request)
        if declared is not None and declared > self.limit:
            return self._refuse(413, f"request body of {declared} bytes over the limit of {self.limit} bytes ({self.limit_setting})")
        self.body = tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES)
        if self.h11.they_are_waiting_for_100_continue:
            self.transport.write(self.h11.send(h11.InformationalResponse(status_code=100, headers=[])))
        self._arm(self.limits.body_timeout, self._body_timeout, "body")

    def _take(self, data: bytes) -> None:
        self.received += len(data)
        if self.received > self.limit:
            return self._refuse(413, f"request body over the limit of {self.limit} bytes ({self.limit_setting})")
        self.body.write(data)

    def _dispatch(self) -> None:
        self._arm(None, None)
        self.busy = True
        self.transport.pause_reading()
        self.body.seek(0)
        environ = environ_of(self.request, self.body, self.received, self.transport)
        self.started = time.monotonic()
        self.executor.submit(self._respond, environ)

    def _finish(self, keep_alive: bool) -> None:
        """The answer was sent: keep the connection for the next request, or close it."""
        self._discard_body()
        self.request, self.busy = None, False
        if self.transport.is_closing():
            return
        if not keep_alive or self.h11.our_state is not h11.DONE or self.stopping():
            self.transport.close()
            return
        try:
            self.h11.start_next_cycle()
        except h11.LocalProtocolError:  # the client's side is not done (it closed, or sent garbage)
            self.transport.close()
            return
        self.framer.next_message()
        self.transport.resume_reading()
        self._arm(self.limits.keepalive, self._idle_timeout)
        if self.framer.holding:  # a pipelined request, already received: its head's timer
            self._arm(self.limits.head_timeout, self._head_timeout, "head")
        self._pump()

    def _refuse(self, status: int, message: str) -> None:
        """Answer an error the front found itself, and close: the stream cannot be trusted."""
        self._arm(None, None)
        body = error_bytes(message)
        headers = [("content-type", "application/json"), ("content-length", str(len(body))), ("connection", "close")]
        try:
            if self.h11.our_state in (h11.IDLE, h11.SEND_RESPONSE):
                self.transport.write(self.h11.send(h11.Response(status_code=status, headers=headers)) + self.h11.send(h11.Data(data=body)))
        except h11.LocalProtocolError:
            pass
        self._discard_body()
        # Close our side only, and drop what the client still sends for a moment: closing
        # with unread bytes would reset the connection, and the client could lose the answer.
        self.refused = True
        if self.transport.can_write_eof():
            self.transport.write_eof()
            self.transport.resume_reading()
            self._arm(LINGER, self.transport.close)
        else:
            self.transport.close()

    def _idle_timeout(self) -> None:
        self.transport.close()

    def _head_timeout(self) -> None:
        self._refuse(408, f"request head not received within {self.limits.head_timeout:g} s (HTTP_HEAD_TIMEOUT)")

    def _body_timeout(self) -> None:
        self._refuse(408, f"request body paused for over {self.limits.body_timeout:g} s (HTTP_BODY_TIMEOUT); nothing was stored")

    def _arm(self, seconds: float | None, callback, kind: str | None = None) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.timer, self.timer_kind = None, None
        if seconds is not None:
            self.timer, self.timer_kind = self.loop.call_later(seconds, callback), kind

    def _discard_body(self) -> None:
        if self.body is not None:
            self.body.close()
            self.body = None

    # -- called in the loop by the app's thread -----------------------------------------

    def _send_now(self, events: list) -> None:
        """Write ``events`` without waiting (a whole small answer: the socket buffers it)."""
        if self.transport.is_closing():
            return
        try:
            self.transport.write(b"".join(self.h11.send(event) or b"" for event in events))
        except h11.LocalProtocolError as err:
            self.log.error("the app's answer does not fit HTTP/1.1: %s", err)
            self.transport.abort()

    async def _send(self, events: list) -> bool:
        """Write ``events``; wait while the client's socket buffer is full."""
        self._send_now(events)
        if self.transport.is_closing():
            return False
        if self.writable:
            return True
        self.drained = self.loop.create_future()
        return await self.drained

    # -- the app's side (a pool thread) -----------------------------------------------

    def _respond(self, environ: dict) -> None:
        state = SimpleNamespace(status="500 Internal Server Error", headers=[], sent=0, head=None,
                                bodiless=environ["REQUEST_METHOD"] == "HEAD")

        def start_response(status, headers, exc_info=None):
            if exc_info and state.head is not None:
                raise exc_info[1].with_traceback(exc_info[2])
            state.status, state.headers = status, headers
            return lambda data: None  # the legacy write(): CartPulse's app never calls it

        keep_alive = False
        result = None
        try:
            result = self.app(environ, start_response)
            keep_alive = self._answer(state, result)
        except Exception:
            self.log.exception("Error handling request %s", environ.get("RAW_URI"))
            if state.head is None:
                state.status, state.headers = "500 Internal Server Error", [("Content-Type", "application/json")]
                self._soon(self._send_now, self._events(state, error_bytes("internal server error"), end=True))
        finally:
            if hasattr(result, "close"):
                result.close()
            self._soon(self._finish, keep_alive)
            self._access_log(state, environ)

    def _answer(self, state, result) -> bool:
        """Send the app's answer; True when it was sent whole. An answer of up to
        ``BUFFER_BYTES`` (nearly all of them) goes to the loop in one hand-over, without
        waiting; a longer one piece by piece, waiting while the client reads."""
        pieces, size = [], 0
        chunks = iter(result)
        for chunk in chunks:
            pieces.append(chunk)
            size += len(chunk)
            if size > BUFFER_BYTES:
                break
        else:
            return self._soon(self._send_now, self._events(state, b"".join(pieces), end=True))
        if not self._await(self._send, self._events(state, b"".join(pieces))):
            return False
        for chunk in chunks:
            if chunk and not self._await(self._send, self._events(state, chunk)):
                return False
        return self._await(self._send, self._events(state, b"", end=True))

    def _events(self, state, body: bytes, end: bool = False) -> list:
        """h11 events for the head (the first time), ``body``, and the end when ``end``."""
        events = []
        if state.head is None:
            headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in state.headers]
            code, _, reason = state.status.partition(" ")
            if end and not state.bodiless and int(code) not in (204, 304) and not any(k.lower() == b"content-length" for k, _ in headers):
                headers.append((b"content-length", str(len(body)).encode()))  # whole: no chunked framing
            state.head = h11.Response(status_code=int(code), reason=reason.encode("latin-1"), headers=headers)
            events.append(state.head)
        if body and not state.bodiless:
            state.sent += len(body)
            events.append(h11.Data(data=body))
        if end:
            events.append(h11.EndOfMessage())
        return events

    def _soon(self, function, *args) -> bool:
        """Run ``function`` in the loop, without waiting for it."""
        try:
            self.loop.call_soon_threadsafe(function, *args)
            return True
        except RuntimeError:  # the loop is closed: the worker is ending
            return False

    def _await(self, coroutine_function, *args) -> bool:
        """Run the coroutine in the loop and wait for its answer, at most ``SEND_TIMEOUT``
        for a client that does not read, and no longer than the loop runs."""
        try:
            future = asyncio.run_coroutine_threadsafe(coroutine_function(*args), self.loop)
        except RuntimeError:
            return False
        deadline = time.monotonic() + SEND_TIMEOUT
        while True:
            try:
                return future.result(0.5)
            except FutureTimeout:
                if not self.loop.is_running():  # the worker is ending (SIGQUIT)
                    return False
                if time.monotonic() > deadline:
                    self._soon(self.transport.abort)
                    return False

    def _access_log(self, state, environ: dict) -> None:
        elapsed = datetime.timedelta(seconds=time.monotonic() - self.started)
        headers = [(k.decode("latin-1").upper(), v.decode("latin-1")) for k, v in environ["cartpulse.front.headers"]]
        self.log.access(SimpleNamespace(status=state.status, sent=state.sent, headers=state.headers),
                        SimpleNamespace(headers=headers), environ, elapsed)
