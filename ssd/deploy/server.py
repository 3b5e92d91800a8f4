"""A small HTTP detection server on the standard library, and its client.

    POST /detect[?threshold=0.3]   body: JPEG/PNG bytes  -> 200 {"width", "height", "detections": [...], "model_ms"}
    GET  /health                                         -> 200 {"status": "ok", "graph", "classes", "requests", ...}

The graph is loaded once; requests are handled on threads (`ThreadingHTTPServer`) that decode
their image concurrently and take turns at the graph behind one lock (on a CPU the graph call
already uses every core). The request size is checked from Content-Length before any body
byte is read (413); any malformed request gets a 4xx JSON {"error": message}, and an
unexpected failure a 500, after which the server keeps serving.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


from ssd.detections import DetectFn, detection_records
from ssd.image_io import decode_rgb

log = logging.getLogger(__name__)

DEFAULT_MAX_BYTES = 10 * 10**6
_DRAIN_BYTES, _DRAIN_SECONDS = 16 * 2**20, 1.0  # see _Handler.finish
_UNITS = {"": 1, "B": 1, "K": 10**3, "KB": 10**3, "KIB": 2**10, "M": 10**6, "MB": 10**6, "MIB": 2**20,
          "G": 10**9, "GB": 10**9, "GIB": 2**30}


def parse_size(text: str) -> int:
    """'10MB' -> 10_000_000, '512KiB' -> 524_288, '2000' -> 2000; ValueError on anything else."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*", str(text))
    if not match or match.group(2).upper() not in _UNITS:
        raise ValueError(f"size must be a number with an optional unit (B, KB, MB, GB, KiB, MiB, GiB), got {text!r}")
    return int(float(match.group(1)) * _UNITS[match.group(2).upper()])


class HTTPError(Exception):
    """A request the server refuses: HTTP status and a message for the JSON body."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class DetectionServer(ThreadingHTTPServer):
    """HTTP server holding one detection callable (e.g. `FrozenGraph`), shared by all requests."""

    daemon_threads = True  # a stuck client never keeps the process alive on shutdown
    allow_reuse_address = True

    def __init__(
        self,
        address: tuple[str, int],
        detect: DetectFn,
        class_names: Sequence[str] = (),
        max_bytes: int = DEFAULT_MAX_BYTES,
        threshold: float = 0.5,
        graph_name: str = "",
    ):
        if max_bytes < 1 or not 0.0 <= threshold <= 1.0:
            raise ValueError(f"max_bytes must be >= 1 and threshold in [0, 1], got {max_bytes}, {threshold}")
        super().__init__(address, _Handler)
        self.detect, self.class_names = detect, tuple(class_names)
        self.max_bytes, self.threshold, self.graph_name = max_bytes, threshold, graph_name
        self.graph_lock = threading.Lock()
        self.counts_lock = threading.Lock()
        self.requests = self.errors = 0
        self.started = time.time()

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"

    def count(self, ok: bool) -> None:
        with self.counts_lock:
            self.requests += 1
            self.errors += not ok

    def detect_image(self, body: bytes, threshold: float) -> dict[str, Any]:
        """JPEG/PNG bytes -> the response dict; HTTPError 400 if they are not an image."""
        image = decode_rgb(body)
        if image is None:
            raise HTTPError(400, f"the body ({len(body)} bytes) is not a decodable image: send JPEG or PNG bytes")
        height, width = image.shape[:2]
        with self.graph_lock:
            tic = time.perf_counter()
            outputs = self.detect(image[None])
            model_ms = 1000 * (time.perf_counter() - tic)
        records = detection_records(outputs, 0, width, height, self.class_names, threshold)
        return {"width": width, "height": height, "num_detections": len(records), "detections": records,
                "model_ms": round(model_ms, 2)}

    def health(self) -> dict[str, Any]:
        return {"status": "ok", "graph": self.graph_name, "classes": list(self.class_names),
                "threshold": self.threshold, "max_bytes": self.max_bytes, "requests": self.requests,
                "errors": self.errors, "uptime_s": round(time.time() - self.started, 1)}


class _Handler(BaseHTTPRequestHandler):
    server: DetectionServer
    server_version = "ssd-detect/1.0"
    protocol_version = "HTTP/1.1"  # keep-alive for clients that reuse connections
    timeout = 30  # seconds a client may stall mid-request before its thread gives up

    def handle_expect_100(self) -> bool:
        """Refuse an oversized body before the client sends it (curl asks first for large uploads)."""
        declared = self.headers.get("Content-Length", "")
        if declared.strip().isdigit() and int(declared) > self.server.max_bytes:
            self.close_connection = True
            self._send(413, {"error": f"body of {declared} bytes exceeds the limit of {self.server.max_bytes} bytes"})
            return False
        return super().handle_expect_100()

    def do_GET(self) -> None:
        self._answer({"/health": self.server.health}, allowed={"/detect": "POST"})

    def do_POST(self) -> None:
        self._answer({"/detect": self._detect}, allowed={"/health": "GET"})

    def do_PUT(self) -> None:
        self._answer({}, allowed={"/detect": "POST", "/health": "GET"})

    do_DELETE = do_PATCH = do_PUT

    def _answer(self, routes: dict[str, Callable[[], dict]], allowed: dict[str, str]) -> None:
        """Route, run, and always reply with JSON: the result, a 4xx message or a 500."""
        path = urlsplit(self.path).path
        try:
            if path in routes:
                self._send(200, routes[path]())
                return
            if path in allowed:
                raise HTTPError(405, f"{self.command} {path} is not allowed: use {allowed[path]} {path}")
            raise HTTPError(404, f"no such path {path!r}: use POST /detect or GET /health")
        except HTTPError as err:
            self._send(err.status, {"error": str(err)})
        except Exception as err:  # keep serving whatever went wrong in one request
            log.exception("request %s %s failed", self.command, self.path)
            self._send(500, {"error": f"internal error: {type(err).__name__}: {err}"})

    def _detect(self) -> dict[str, Any]:
        threshold = self._threshold()
        return self.server.detect_image(self._body(), threshold)

    def _threshold(self) -> float:
        values = parse_qs(urlsplit(self.path).query).get("threshold")
        if not values:
            return self.server.threshold
        try:
            threshold = float(values[0])
        except ValueError:
            threshold = -1.0
        if not 0.0 <= threshold <= 1.0:
            raise HTTPError(400, f"threshold must be a number in [0, 1], got {values[0]!r}")
        return threshold

    def _body(self) -> bytes:
        """The request body, refused before reading if its declared size is missing or too large."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self.close_connection = True
            raise HTTPError(411, "chunked bodies are not accepted: send Content-Length")
        declared = self.headers.get("Content-Length")
        if declared is None:
            self.close_connection = True
            raise HTTPError(411, "Content-Length is required: POST the image bytes as the body")
        if not declared.strip().isdigit():
            self.close_connection = True
            raise HTTPError(400, f"Content-Length must be a non-negative integer, got {declared!r}")
        length = int(declared)
        if length == 0:
            raise HTTPError(400, "empty body: POST the JPEG/PNG bytes, e.g. curl --data-binary @img.jpg")
        if length > self.server.max_bytes:
            self.close_connection = True  # the unread body must not be parsed as the next request
            self._unread = length
            raise HTTPError(413, f"body of {length} bytes exceeds the limit of {self.server.max_bytes} bytes")
        body = self.rfile.read(length)
        if len(body) < length:
            self.close_connection = True
            raise HTTPError(400, f"body ended after {len(body)} of the {length} bytes declared")
        return body

    def _send(self, status: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode()
        self.server.count(status < 400)
        if status >= 400:
            # The request may have been refused before its body was read: never parse the rest
            # of that body as the next request on this connection.
            self.close_connection = True
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(data)

    _unread = 0  # body bytes a refused request left on the socket

    def finish(self) -> None:
        """After a 413, discard a bounded part of the unread body so the client reads the reply.

        Closing a socket with unread input makes the kernel send a reset, which can destroy the
        413 reply before a client that sends its body first ever reads it.
        """
        super().finish()
        budget, deadline = min(self._unread, _DRAIN_BYTES), time.monotonic() + _DRAIN_SECONDS
        try:
            self.connection.settimeout(_DRAIN_SECONDS)
            while budget > 0 and time.monotonic() < deadline:
                chunk = self.connection.recv(min(budget, 65536))
                if not chunk:
                    break
                budget -= len(chunk)
        except OSError:
            pass

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        log.info("%s %s", self.address_string(), format % args)


def make_server(
    detect: DetectFn,
    class_names: Sequence[str] = (),
    host: str = "127.0.0.1",
    port: int = 8080,
    max_bytes: int = DEFAULT_MAX_BYTES,
    threshold: float = 0.5,
    graph_name: str = "",
) -> DetectionServer:
    """A bound server (port 0 picks a free port; see `.url`); call `.serve_forever()` to run it."""
    return DetectionServer((host, port), detect, class_names, max_bytes, threshold, graph_name)


def post_image(url: str, body: bytes, threshold: float | None = None, timeout: float = 60.0) -> dict[str, Any]:
    """Client: POST image bytes to `url` (server root or .../detect); the JSON reply, errors included.

    A 4xx/5xx reply is returned as its JSON body plus "status"; connection errors raise OSError.
    """
    base = url.rstrip("/")
    target = base if base.endswith("/detect") else base + "/detect"
    if threshold is not None:
        target += f"?threshold={threshold}"
    request = urllib.request.Request(target, data=body, method="POST",
                                     headers={"Content-Type": "application/octet-stream"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return {"status": response.status, **json.loads(response.read())}
    except urllib.error.HTTPError as err:
        return {"status": err.code, **json.loads(err.read() or b"{}")}
