"""The server's limits, and uvicorn's h11 protocol enforcing those that live below the application.

uvicorn (through h11) already bounds a request head that is still incomplete after a read,
rejects malformed framing (two conflicting Content-Length headers, bad chunking) and closes idle
keep-alive connections. This protocol adds what it lacks, per connection:

- a connection cap: connection `max_connections + 1` is answered a JSON 503 at once and closed;
- a request-head deadline: the request line and headers must be complete within `head_timeout`
  seconds of the connection opening (or of the previous response), however slowly the bytes
  trickle in (uvicorn's only timer, the keep-alive one, stops at the first byte of a request);
- JSON bodies on the errors it answers itself: 400 (malformed), 414 (request line too long),
  431 (headers too large), 408 (head deadline), 503 (cap), and a 400 at once when a client
  closes its side before sending the body its Content-Length promised;
- `HeadSizeLimit`, an ASGI wrapper, applies the 414 / 431 limits to a head that arrived whole.

The body deadlines, body size and pixel limits are the application's (`ssd.deploy.server`).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

import h11
from starlette.responses import JSONResponse
from uvicorn.protocols.http.h11_impl import H11Protocol

from ssd.image_header import DEFAULT_MAX_PIXELS

DEFAULT_MAX_BYTES = 10 * 10**6
_LINGER_SECONDS = 0.5  # after refusing a connection, how long its further input is read and discarded


@dataclass(frozen=True)
class ServerLimits:
    """Every bound of the detection server; each is a CLI flag of tools/serve.py."""

    max_bytes: int = DEFAULT_MAX_BYTES  # request body (413)
    max_pixels: int = DEFAULT_MAX_PIXELS  # width x height declared by the image header (413)
    max_head_bytes: int = 16 * 2**10  # request line + headers (414 / 431)
    head_timeout: float = 10.0  # seconds for a complete request head; also the keep-alive idle time (408)
    body_timeout: float = 60.0  # seconds for the whole body (408)
    idle_timeout: float = 5.0  # longest pause inside a body before it counts as shorter than declared (400)
    max_connections: int = 64  # open connections (503 beyond)
    decode_slots: int = 2  # images decoded or run through the graph at once: the memory bound

    def __post_init__(self):
        for name in ("max_bytes", "max_pixels", "max_head_bytes", "max_connections", "decode_slots"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"ServerLimits.{name} must be an integer >= 1, got {getattr(self, name)!r}")
        for name in ("head_timeout", "body_timeout", "idle_timeout"):
            if not getattr(self, name) > 0:
                raise ValueError(f"ServerLimits.{name} must be > 0 seconds, got {getattr(self, name)!r}")


def json_response_bytes(status: int, message: str) -> bytes:
    """A complete HTTP/1.1 response {"error": message} that closes the connection."""
    body = json.dumps({"error": message}).encode()
    head = (f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n")
    return head.encode("latin-1") + body


class HeadSizeLimit:
    """ASGI wrapper: 414 / 431 JSON for a request line / head over `max_head_bytes` that arrived whole.

    h11 bounds only a head still incomplete after a read; one that arrived in a single read is
    measured here, before the application sees it.
    """

    def __init__(self, app: Callable, limits: ServerLimits, on_error: Callable[[], None] = lambda: None):
        self.app, self.limits, self._on_error = app, limits, on_error

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] == "http":
            error = self._check(scope)
            if error is not None:
                self._on_error()
                status, message = error
                await JSONResponse({"error": message}, status, headers={"connection": "close"})(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def _check(self, scope: dict) -> tuple[int, str] | None:
        limit = self.limits.max_head_bytes
        # "METHOD TARGET HTTP/1.1\r\n", then "name: value\r\n" per header and a blank line.
        line = len(scope["method"]) + len(scope["raw_path"]) + len(scope["query_string"]) + 12
        head = line + sum(len(name) + len(value) + 4 for name, value in scope["headers"]) + 2
        if line > limit:
            return 414, f"request line longer than {limit} bytes"
        if head > limit:
            return 431, f"request headers longer than {limit} bytes"
        return None


class LimitedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol plus a connection cap, a request-head deadline and JSON errors.

    Built by uvicorn with functools.partial(LimitedH11Protocol, limits=..., on_error=...) as
    `Config(http=...)`; `on_error` counts the refusals made here.
    """

    def __init__(self, *args: Any, limits: ServerLimits, on_error: Callable[[], None] = lambda: None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.limits, self._on_error = limits, on_error
        self._head_timer = None
        self._head_bytes = 0
        self._refused = False

    def connection_made(self, transport) -> None:  # type: ignore[override]
        if len(self.connections) >= self.limits.max_connections:
            self.transport = transport  # all the base class would set that _refuse and connection_lost use
            self._refuse(503, f"too many open connections (limit {self.limits.max_connections}): retry later")
            return
        super().connection_made(transport)
        self._arm_head_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_head_deadline()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:  # answered and closing: discard
            return
        self._head_bytes += len(data)
        super().data_received(data)

    def handle_events(self) -> None:
        cycle = self.cycle
        super().handle_events()
        if self.cycle is not cycle:  # a request head was complete: the application takes over
            self._disarm_head_deadline()

    def on_response_complete(self) -> None:
        # Armed before the base class looks at pipelined requests, which disarm it again. After a
        # response sent before its request body was read (e.g. 413), uvicorn discards the rest of
        # that body while keeping the connection: this deadline bounds that drain too.
        self._arm_head_deadline()
        super().on_response_complete()

    def eof_received(self) -> bool | None:
        if self._refused:
            return None
        if self.cycle is not None and self.cycle.more_body and not self.cycle.response_started:
            self._refuse(400, "the request body ended before the Content-Length it declared")
        return None

    def send_400_response(self, msg: str) -> None:
        """Called by uvicorn inside its `except h11.RemoteProtocolError`: answer in JSON, with h11's status."""
        error = sys.exc_info()[1]
        status = getattr(error, "error_status_hint", 400)
        message = f"malformed HTTP request: {error or msg}"
        if status == 431:
            pending, _ = self.conn.trailing_data
            if b"\n" not in pending:  # the request line alone is too long
                status, message = 414, f"request line longer than {self.limits.max_head_bytes} bytes"
            else:
                message = f"request headers longer than {self.limits.max_head_bytes} bytes"
        self._refuse(status, message)

    def _refuse(self, status: int, message: str) -> None:
        """Answer and close; what the client still sends meanwhile is discarded for a moment.

        Closing a socket with unread input makes the kernel send a reset, which can destroy the
        reply before a client that was still sending reads it.
        """
        if self.transport.is_closing() or self._refused:
            return
        self._refused = True
        self._on_error()
        self.transport.write(json_response_bytes(status, message))
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.loop.call_later(_LINGER_SECONDS, self.transport.close)

    def _arm_head_deadline(self) -> None:
        self._disarm_head_deadline()
        self._head_bytes = 0
        self._head_timer = self.loop.call_later(self.limits.head_timeout, self._head_deadline)

    def _disarm_head_deadline(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_deadline(self) -> None:
        """No complete request head in time: 408 to a client that started one; an idle one is just closed."""
        self._head_timer = None
        if self.transport.is_closing():
            return
        if self._head_bytes and self.conn.their_state is h11.IDLE:
            self._refuse(408, f"request head (line and headers) not complete within {self.limits.head_timeout:g} s")
        else:
            self.transport.close()
