"""The HTTP detection server (uvicorn + Starlette), and its client.

    POST /detect[?threshold=0.3]    body: JPEG/PNG/BMP/WebP bytes
                                    -> 200 {"width", "height", "detections": [...], "model_ms"}
    GET  /health                    -> 200 {"status": "ok", "graph", "classes", "requests", ...}
    POST /v1/models/<name>:predict  TensorFlow Serving's REST predict API on the SavedModel's contract
    GET  /v1/models/<name>          its model status

Every answer is JSON; an error is {"error": message} with its status. The graph is loaded once.
Requests run on uvicorn's event loop; each image is decoded and run through the graph on a worker
thread (a predict body is parsed from JSON in a parser process, `JsonParsers`), at most
`limits.decode_slots` at a time, and the graph calls take turns behind one lock (on a CPU one call
already uses every core). Memory held at once in the server process is then bounded by (README,
"the server's limits"): the bodies being received (connections x max_bytes), decoded images
(decode_slots x max_pixels x 3 bytes), and one graph call's input copy and its float32 cast
before the resize (max_pixels x 15 bytes); each parser process holds at most one body's lists
(about 33 x max_bytes).

Before an image is decoded: its declared body size is checked against `max_bytes` (413, from
Content-Length, before a body byte is read), the body must arrive within `body_timeout` with no
pause over `idle_timeout` (408 / 400), and its width x height, read from the image header, must
not exceed `max_pixels` (413); formats other than JPEG, PNG, BMP and WebP are refused (400), a
header or pixel data the decoder rejects is 422. The limits below the application (connection
cap, request-head deadline, head size) are in `ssd.deploy.http_limits`.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging
import multiprocessing
import platform
import re
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

import anyio
import numpy as np
import uvicorn
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from ssd.deploy import tf_serving
from ssd.deploy.http_limits import HeadSizeLimit, LimitedH11Protocol, ServerLimits
from ssd.detections import DetectFn, detection_records
from ssd.image_header import ImageHeaderError, TooManyPixels, UnknownImageFormat, check_pixels, image_size
from ssd.image_io import decode_rgb

log = logging.getLogger(__name__)

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

    def __init__(self, status: int, message: str, close: bool = False):
        super().__init__(message)
        self.status, self.close = status, close


class DetectionService:
    """The application: one detection callable (e.g. `FrozenGraph`) shared by all requests."""

    def __init__(self, detect: DetectFn, class_names: Sequence[str], limits: ServerLimits, threshold: float,
                 graph_name: str, model_name: str):
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], got {threshold}")
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", model_name):
            raise ValueError(f"model name must be letters, digits, '_', '.' or '-' (it is part of a URL path), "
                             f"got {model_name!r}")
        self.detect, self.class_names, self.limits = detect, tuple(class_names), limits
        self.threshold, self.graph_name, self.model_name = threshold, graph_name, model_name
        self.graph_lock = threading.Lock()
        self.decode_slots = threading.BoundedSemaphore(limits.decode_slots)
        self.parsers = JsonParsers(limits.decode_slots)
        self.counts_lock = threading.Lock()
        self.requests = self.errors = 0
        self.started = time.time()
        self._routes = [("/detect", "POST", self._detect), ("/health", "GET", self._health),
                        (f"/v1/models/{model_name}:predict", "POST", self._predict),
                        (f"/v1/models/{model_name}", "GET", self._status)]
        self._paths = {path: method for path, method, _ in self._routes}

    def app(self) -> Starlette:
        routes = [Route(path, _json_endpoint(self, handler), methods=[method])
                  for path, method, handler in self._routes]
        return Starlette(routes=routes, exception_handlers={HTTPException: self._routing_error})

    def count(self, ok: bool) -> None:
        with self.counts_lock:
            self.requests += 1
            self.errors += not ok

    def health(self) -> dict[str, Any]:
        limits = self.limits
        return {"status": "ok", "graph": self.graph_name, "model": self.model_name, "classes": list(self.class_names),
                "threshold": self.threshold, "max_bytes": limits.max_bytes, "max_pixels": limits.max_pixels,
                "requests": self.requests, "errors": self.errors, "uptime_s": round(time.time() - self.started, 1)}

    async def _health(self, request: Request) -> dict[str, Any]:
        return self.health()

    async def _status(self, request: Request) -> dict[str, Any]:
        return tf_serving.model_status()

    async def _detect(self, request: Request) -> dict[str, Any]:
        threshold = self._threshold(request)
        body = await read_body(request, self.limits)
        return await anyio.to_thread.run_sync(self.detect_image, body, threshold)

    async def _predict(self, request: Request) -> dict[str, Any]:
        body = await read_body(request, self.limits)
        return await anyio.to_thread.run_sync(self.predict, body)

    def predict(self, body: bytes) -> dict[str, Any]:
        """A TensorFlow Serving JSON body -> its reply; parsed and run in a decode slot, on a worker thread."""
        with self.decode_slots:  # the parsed lists and the uint8 batch count like decoded pixels
            try:
                images, columnar = self.parsers.parse(body, self.limits.max_pixels)
            except TooManyPixels as err:
                raise HTTPError(413, str(err)) from err
            except ValueError as err:
                raise HTTPError(400, str(err)) from err
            outputs, _ = self._run_graph(images)
        return tf_serving.predict_response(outputs, columnar)

    def detect_image(self, body: bytes, threshold: float) -> dict[str, Any]:
        """Image bytes -> the response dict; 400/413/422 HTTPError for bytes that are refused."""
        try:
            check_pixels(*image_size(body, name="the image"), self.limits.max_pixels, "the image")
        except TooManyPixels as err:
            raise HTTPError(413, f"{err}: send a smaller image") from err
        except UnknownImageFormat as err:
            raise HTTPError(400, f"the body ({len(body)} bytes): {err}") from err
        except ImageHeaderError as err:
            raise HTTPError(422, str(err)) from err
        with self.decode_slots:  # decoded pixels held at once: decode_slots x max_pixels x 3 bytes
            image = decode_rgb(body)
            if image is None:
                raise HTTPError(422, f"the image ({len(body)} bytes) has a valid header but cannot be decoded")
            height, width = image.shape[:2]
            outputs, model_ms = self._run_graph(image[None])
        records = detection_records(outputs, 0, width, height, self.class_names, threshold)
        return {"width": width, "height": height, "num_detections": len(records), "detections": records,
                "model_ms": round(model_ms, 2)}

    def _run_graph(self, images: np.ndarray) -> tuple[dict[str, np.ndarray], float]:
        """The graph's outputs for uint8 RGB [B, H, W, 3], and the milliseconds the call took."""
        with self.graph_lock:
            tic = time.perf_counter()
            outputs = self.detect(images)
            return outputs, 1000 * (time.perf_counter() - tic)

    def _threshold(self, request: Request) -> float:
        text = request.query_params.get("threshold")
        if text is None:
            return self.threshold
        try:
            threshold = float(text)
        except ValueError:
            threshold = -1.0
        if not 0.0 <= threshold <= 1.0:
            raise HTTPError(400, f"threshold must be a number in [0, 1], got {text!r}")
        return threshold

    async def _routing_error(self, request: Request, exc: HTTPException) -> JSONResponse:
        """Starlette's 404 / 405 as JSON naming what to use instead."""
        path = request.url.path
        headers = exc.headers
        if exc.status_code == 405:
            message = f"{request.method} {path} is not allowed: use {self._paths[path]} {path}"
            headers = {"Allow": ", ".join(sorted(headers["Allow"].split(", ")))}  # Starlette's comes from a set
        else:
            message = f"no such path {path!r}: use " + ", ".join(f"{m} {p}" for p, m in self._paths.items())
        self.count(False)
        return JSONResponse({"error": message}, exc.status_code, headers=headers)


class JsonParsers:
    """Processes that parse predict bodies (`tf_serving.parse_predict_request`), one per decode slot.

    json.loads and NumPy's list conversion hold the GIL for their whole run (1.4 s for a 10 MB
    body here), so on a thread they would still stall the event loop; in their own process they
    cannot, and the Python lists they build (up to ~33x the body) never grow the server's heap.
    Started on first use with "spawn" (TensorFlow's threads make fork unsafe), so, as for
    `BatchPipeline`'s workers, a script that starts the server must do so under
    `if __name__ == "__main__":` (the console scripts do).
    """

    def __init__(self, workers: int):
        self.workers = workers
        self._pool: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()

    def parse(self, body: bytes, max_pixels: int) -> tuple[np.ndarray, bool]:
        """(uint8 images [B, H, W, 3], columnar?); ValueError / TooManyPixels as the parser raises them."""
        with self._lock:
            if self._pool is None:
                self._pool = ProcessPoolExecutor(self.workers, multiprocessing.get_context("spawn"))
            pool = self._pool
        try:
            return pool.submit(tf_serving.parse_predict_request, body, max_pixels).result()
        except BrokenProcessPool:  # a parser died (killed for memory?): the next request gets a new pool
            with self._lock:
                if self._pool is pool:
                    self._pool = None
            pool.shutdown(wait=False, cancel_futures=True)
            raise HTTPError(503, "the JSON parser process died while parsing this body; retry, or send the image "
                                 "to POST /detect") from None

    def close(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)


def _json_endpoint(service: DetectionService, handler: Callable[[Request], Awaitable[dict]]):
    """A Starlette endpoint that answers the handler's dict, its HTTPError, or a 500 - always JSON."""

    @functools.wraps(handler)
    async def endpoint(request: Request) -> JSONResponse:
        headers = {}
        try:
            status, payload = 200, await handler(request)
        except HTTPError as err:
            status, payload = err.status, {"error": str(err)}
            if err.close:  # the rest of the body must not be read as the next request
                headers["connection"] = "close"
        except Exception as err:  # keep serving whatever went wrong in one request
            log.exception("request %s %s failed", request.method, request.url.path)
            status, payload = 500, {"error": f"internal error: {type(err).__name__}: {err}"}
        service.count(status < 400)
        return JSONResponse(payload, status, headers=headers)

    return endpoint


async def read_body(request: Request, limits: ServerLimits) -> bytes:
    """The request body, refused before reading if its declared size is missing or too large.

    Must arrive within `limits.body_timeout` seconds with no pause over `limits.idle_timeout`.
    (h11 has already refused a malformed or conflicting Content-Length.)
    """
    if "chunked" in request.headers.get("transfer-encoding", "").lower():
        raise HTTPError(411, "chunked bodies are not accepted: send Content-Length")
    declared = request.headers.get("content-length")
    if declared is None:
        raise HTTPError(411, "Content-Length is required: POST the image bytes as the body")
    length = int(declared)
    if length == 0:
        raise HTTPError(400, "empty body: POST the image bytes, e.g. curl --data-binary @img.jpg")
    if length > limits.max_bytes:  # answered before the body is read; uvicorn discards it
        raise HTTPError(413, f"body of {length} bytes exceeds the limit of {limits.max_bytes} bytes")
    chunks, received = [], 0
    deadline = time.monotonic() + limits.body_timeout
    while True:
        left = deadline - time.monotonic()
        with anyio.move_on_after(min(limits.idle_timeout, left)) as waited:
            message = await request.receive()
        if waited.cancelled_caught:
            if left <= limits.idle_timeout:
                raise HTTPError(408, f"body not complete within {limits.body_timeout:g} s "
                                     f"({received} of {length} bytes arrived)", close=True)
            raise HTTPError(400, f"body ended after {received} of the {length} bytes declared "
                                 f"(nothing more for {limits.idle_timeout:g} s)", close=True)
        if message["type"] == "http.disconnect":
            raise HTTPError(400, "the client went away before sending its body", close=True)
        chunks.append(message.get("body", b""))
        received += len(chunks[-1])
        if not message.get("more_body", False):
            return b"".join(chunks)


_M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter (malloc.h)


def return_large_buffers_to_the_os(threshold: int = 1 << 20) -> bool:
    """Make glibc serve every allocation of `threshold` bytes or more by its own mmap, unmapped on free.

    By default glibc raises that threshold (up to 32 MB) each time a large block is freed, after
    which decoded images and graph inputs come from per-thread heaps that keep the memory once
    freed: six concurrent 4 MP PNGs then left the server 116 MB larger than one did. A fixed
    threshold keeps resident memory at what is live. True if applied (glibc only).
    """
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    return bool(libc.mallopt(_M_MMAP_THRESHOLD, threshold))


class DetectionServer:
    """uvicorn serving a `DetectionService` on a socket bound at construction (port 0: a free port)."""

    def __init__(self, address: tuple[str, int], service: DetectionService):
        return_large_buffers_to_the_os()  # the decoded-pixel bound holds for resident memory too
        self.service, self.limits = service, service.limits
        self.socket = socket.create_server(address, backlog=2 * self.limits.max_connections)
        self.server_address = self.socket.getsockname()[:2]
        on_error = functools.partial(service.count, False)
        protocol = functools.partial(LimitedH11Protocol, limits=self.limits, on_error=on_error)
        app = HeadSizeLimit(service.app(), self.limits, on_error)
        config = uvicorn.Config(app, http=protocol, lifespan="off", log_config=None,
                                timeout_keep_alive=self.limits.head_timeout,
                                h11_max_incomplete_event_size=self.limits.max_head_bytes,
                                timeout_graceful_shutdown=5)
        self._uvicorn = uvicorn.Server(config)
        self._stopped = threading.Event()
        self._stopped.set()

    @property
    def url(self) -> str:
        host, port = self.server_address
        return f"http://{host}:{port}"

    def serve_forever(self) -> None:
        """Serve until `shutdown()` (from another thread) or Ctrl-C."""
        self._stopped.clear()
        try:
            self._uvicorn.run(sockets=[self.socket])
        finally:
            self.service.parsers.close()
            self._stopped.set()

    def shutdown(self, timeout: float = 10.0) -> None:
        """Stop serving_forever and wait for it to return."""
        self._uvicorn.should_exit = True
        self._stopped.wait(timeout)

    def server_close(self) -> None:
        self.socket.close()


def make_server(
    detect: DetectFn,
    class_names: Sequence[str] = (),
    host: str = "127.0.0.1",
    port: int = 8080,
    limits: ServerLimits = ServerLimits(),
    threshold: float = 0.5,
    graph_name: str = "",
    model_name: str = tf_serving.DEFAULT_MODEL_NAME,
) -> DetectionServer:
    """A bound server (port 0 picks a free port; see `.url`); call `.serve_forever()` to run it."""
    service = DetectionService(detect, class_names, limits, threshold, graph_name, model_name)
    return DetectionServer((host, port), service)
