"""The detection server on loopback: correct under concurrency, 4xx for bad requests, keeps serving."""

from __future__ import annotations

import contextlib
import http.client
import json
import select
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import pytest
import tensorflow as tf

from ssd.config import ModelConfig
from ssd.core.postprocess import PostprocessOptions
from ssd.deploy.graph import export_module, frozen_graph_def
from ssd.deploy.frozen_graph import FrozenGraph
from ssd.detections import detection_records
from ssd.modeling.model import build_model_from_config
from ssd.deploy.http_limits import ServerLimits
from ssd.deploy.client import post_image
from ssd.deploy.server import make_server, parse_size
from tests.image_bombs import jpeg_bomb, png_bomb, png_chunk, png_header, zero_png

CLASSES = ("circle", "square", "triangle")
MAX_BYTES = 200_000
STRICT_PIXELS = 300 * 200
STRICT_CONNECTIONS = 6


@pytest.fixture(scope="module")
def graph(tmp_path_factory) -> FrozenGraph:
    out = tmp_path_factory.mktemp("graph") / "frozen_inference_graph.pb"
    tf.keras.utils.set_random_seed(2)
    config = ModelConfig("vgg300", CLASSES, width=0.125)
    out.write_bytes(frozen_graph_def(export_module(build_model_from_config(config), config,
                                                   PostprocessOptions(max_detections=20))).SerializeToString())
    return FrozenGraph(out)


def serving(server):
    """Run `server` on a thread for the duration of a fixture."""
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def server(graph):
    yield from serving(make_server(graph, CLASSES, port=0, limits=ServerLimits(max_bytes=MAX_BYTES), threshold=0.3))


@pytest.fixture(scope="module")
def strict(graph):
    """A server with short deadlines and a small connection cap, for the limit tests."""
    limits = ServerLimits(max_bytes=MAX_BYTES, max_pixels=STRICT_PIXELS, head_timeout=1.0, body_timeout=2.0,
                          idle_timeout=0.5, max_connections=STRICT_CONNECTIONS)
    yield from serving(make_server(graph, CLASSES, port=0, limits=limits))


def jpeg(seed: int, width: int = 120, height: int = 90) -> tuple[bytes, np.ndarray]:
    """Encoded JPEG bytes of a random smooth image, and its decoded RGB pixels."""
    image = np.random.default_rng(seed).integers(0, 256, (height, width, 3), np.uint8)
    image = cv2.GaussianBlur(image, (7, 7), 0)
    data = cv2.imencode(".jpg", image)[1].tobytes()
    return data, cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR_RGB)


def request(server, method: str, path: str, body: bytes | None = None,
            headers: dict | None = None) -> tuple[int, dict]:
    connection = http.client.HTTPConnection(*server.server_address[:2], timeout=30)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


@pytest.mark.slow
def test_concurrent_requests_get_the_detections_of_direct_graph_calls(server, graph):
    cases = [jpeg(seed, 100 + 10 * seed, 90) for seed in range(8)]
    expected = [detection_records(graph(rgb[None]), 0, rgb.shape[1], rgb.shape[0], CLASSES, 0.3)
                for _, rgb in cases]
    assert any(expected), "need some detections to compare"
    with ThreadPoolExecutor(8) as pool:
        replies = list(pool.map(lambda case: post_image(server.url, case[0]), cases))
    for reply, want, (_, rgb) in zip(replies, expected, cases):
        assert reply["status"] == 200
        assert (reply["width"], reply["height"]) == (rgb.shape[1], rgb.shape[0])
        assert reply["detections"] == want


@pytest.mark.slow
def test_bad_requests_get_4xx_json_and_the_server_keeps_serving(server):
    image, _ = jpeg(11)
    cases = [
        ("POST", "/detect", b"", {}, 400),  # empty body
        ("POST", "/detect", b"GIF89a not really an image", {}, 400),
        ("POST", "/detect?threshold=2", image, {}, 400),
        ("GET", "/detect", None, {}, 405),
        ("POST", "/health", image, {}, 405),
        ("DELETE", "/detect", None, {}, 405),
        ("GET", "/nowhere", None, {}, 404),
        ("POST", "/detect", b"x" * (MAX_BYTES + 1), {}, 413),
    ]
    for method, path, body, headers, status in cases:
        got_status, reply = request(server, method, path, body, headers)
        assert (method, path, got_status) == (method, path, status)
        assert reply["error"]
    # No Content-Length at all (http.client would add one): 411.
    assert raw_request(server, b"POST /detect HTTP/1.1\r\nHost: x\r\n\r\n").startswith(b"HTTP/1.1 411")
    # A huge declared body is refused from the header alone, before any body byte is sent.
    huge = b"POST /detect HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000000\r\n\r\n"
    assert raw_request(server, huge).startswith(b"HTTP/1.1 413")
    # Still serving: health counts the errors, and a good image is answered.
    status, health = request(server, "GET", "/health")
    assert status == 200 and health["status"] == "ok" and health["errors"] >= len(cases) + 2
    assert post_image(server.url, image)["status"] == 200


def raw_request(server, data: bytes) -> bytes:
    """Send raw bytes, return the status line and headers the server answers with."""
    with socket.create_connection(server.server_address[:2], timeout=30) as sock:
        sock.sendall(data)
        reply = b""
        while b"\r\n\r\n" not in reply:
            chunk = sock.recv(4096)
            if not chunk:
                break
            reply += chunk
    return reply


def test_parse_size_units():
    assert parse_size("10MB") == 10_000_000
    assert parse_size("512KiB") == 524_288
    assert parse_size("2000") == 2000
    assert parse_size("1.5 GB") == 1_500_000_000
    with pytest.raises(ValueError, match="size must be"):
        parse_size("ten megabytes")


def test_client_reports_an_unreachable_server():
    with socket.socket() as sock:  # a port nobody listens on: bind, read it, close
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(OSError):
        post_image(f"http://127.0.0.1:{port}", b"x", timeout=5)


def test_serve_cli_needs_a_graph(capsys):
    import importlib.util

    spec = importlib.util.spec_from_file_location("serve", Path(__file__).parents[1] / "tools" / "serve.py")
    serve = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(serve)
    assert serve.main([]) == 2
    assert serve.main(["--graph", "g.pb", "--max-bytes", "lots"]) == 2
    assert "--max-bytes" in capsys.readouterr().err
    assert serve.main(["--graph", "g.pb", "--max-pixels", "many"]) == 2
    assert "--max-pixels" in capsys.readouterr().err
    assert serve.main(["--graph", "g.pb", "--head-timeout", "0"]) == 2
    assert "ServerLimits.head_timeout must be > 0" in capsys.readouterr().err


def test_model_names_must_fit_in_a_url_path(graph):
    with pytest.raises(ValueError, match=r"model name must be .* got 'my/model'"):
        make_server(graph, CLASSES, port=0, model_name="my/model")


# --- Issue 13 items 1 and 8: pixels checked from the header, deadlines, framing, methods, caps ---


def exchange(server, data: bytes | list[bytes], half_close: bool = False) -> tuple[int, dict[str, str], bytes, float]:
    """Send raw bytes (a list: in pieces 0.1 s apart), read until the server closes: status, headers,
    body, and the seconds it took."""
    tic = time.monotonic()
    with socket.create_connection(server.server_address, timeout=10) as sock:
        for k, piece in enumerate([data] if isinstance(data, bytes) else data):
            time.sleep(0.1 * (k > 0))
            sock.sendall(piece)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        reply = read_until_closed(sock)
    return (*parse_reply(reply), time.monotonic() - tic)


def read_until_closed(sock: socket.socket) -> bytes:
    reply = b""
    while chunk := sock.recv(65536):
        reply += chunk
    return reply


def parse_reply(reply: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = reply.partition(b"\r\n\r\n")
    if not head:
        return 0, {}, b""
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = dict((key.strip().lower(), value.strip()) for key, value in (line.split(":", 1) for line in lines))
    return int(status_line.split()[1]), headers, body


def json_error(headers: dict[str, str], body: bytes) -> str:
    assert headers["content-type"] == "application/json"
    return json.loads(body)["error"]


def test_pixel_bombs_are_refused_from_the_header_before_decoding(server):
    """Item 1: a 5 KB PNG declaring 50000^2 got a 500 with OpenCV's assertion; now a JSON 413."""
    cases = [
        (png_bomb(50000, 50000), 413, "50000x50000 = 2,500,000,000 pixels"),
        (jpeg_bomb(60000, 40000), 413, "60000x40000"),
        (b"II*\0" + bytes(64), 400, "is not a JPEG, PNG, BMP or WebP image"),  # TIFF: its size is not checked
        (png_bomb(40, 30)[:20], 422, "truncated"),
        (png_header(40, 30) + png_chunk(b"IDAT", b"not deflate") + png_chunk(b"IEND", b""), 422,
         "cannot be decoded"),  # a sane header, broken pixel data
    ]
    for body, status, message in cases:
        reply = post_image(server.url, body)
        assert (reply["status"], message in reply["error"]) == (status, True), reply


def test_the_pixel_limit_is_inclusive(strict):
    assert post_image(strict.url, zero_png(300, 200))["status"] == 200  # exactly STRICT_PIXELS
    reply = post_image(strict.url, zero_png(300, 201))
    assert reply["status"] == 413 and "60,300 pixels" in reply["error"]


def test_trickling_request_heads_are_cut_at_the_head_deadline(strict):
    """Item 8: 5 sockets trickling header lines held 5 threads past 43 s; now 408 at the deadline (1 s)."""

    def trickle() -> tuple[bytes, float]:
        tic = time.monotonic()
        with socket.create_connection(strict.server_address, timeout=10) as sock:
            sock.sendall(b"GET /health HTTP/1.1\r\n")
            for k in range(50):  # 10 s of header lines, unless the server answers
                if select.select([sock], [], [], 0.2)[0]:
                    break
                sock.sendall(b"X-Slow-%d: 1\r\n" % k)
            return read_until_closed(sock), time.monotonic() - tic

    with ThreadPoolExecutor(5) as pool:
        slow = [pool.submit(trickle) for _ in range(5)]
        time.sleep(0.3)
        assert request(strict, "GET", "/health")[0] == 200  # served meanwhile
        results = [future.result() for future in slow]
    for reply, seconds in results:
        status, headers, body = parse_reply(reply)
        assert status == 408 and "not complete within 1 s" in json_error(headers, body)
        assert 0.9 <= seconds < 2.5


def test_idle_connections_are_closed_quietly_at_the_head_deadline(strict):
    status, _, _, seconds = exchange(strict, b"")
    assert status == 0 and 0.9 <= seconds < 2.5


def test_a_trickled_body_is_cut_at_the_body_deadline(strict):
    tic = time.monotonic()
    with socket.create_connection(strict.server_address, timeout=10) as sock:
        sock.sendall(b"POST /detect HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n")
        for _ in range(50):  # 5 bytes every 0.2 s: never idle for 0.5 s, never done
            if select.select([sock], [], [], 0.2)[0]:
                break
            sock.sendall(b"x" * 5)
        status, headers, body = parse_reply(read_until_closed(sock))
    assert status == 408 and "body not complete within 2 s" in json_error(headers, body)
    assert 1.9 <= time.monotonic() - tic < 3.5


@pytest.mark.parametrize("half_close", [True, False])
def test_a_content_length_larger_than_the_body_gets_a_json_400_quickly(strict, half_close):
    """Item 8: this got a 500 after 30 s."""
    head = b"POST /detect HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n"
    status, headers, body, seconds = exchange(strict, head + b"x" * 10, half_close=half_close)
    assert status == 400
    if half_close:  # the client said it is done: answered at once
        assert "ended before the Content-Length" in json_error(headers, body) and seconds < 0.4
    else:  # nothing more for idle_timeout (0.5 s)
        assert "after 10 of the 1000 bytes" in json_error(headers, body) and 0.45 <= seconds < 1.5


def test_conflicting_content_lengths_get_a_json_400_at_once(strict):
    """Item 8: two different Content-Length headers were accepted."""
    data = b"POST /detect HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!"
    status, headers, body, seconds = exchange(strict, data)
    assert status == 400 and "Content-Length" in json_error(headers, body) and seconds < 0.4


@pytest.mark.parametrize("method, path, allowed", [
    ("OPTIONS", "/detect", "POST"), ("TRACE", "/detect", "POST"), ("HEAD", "/detect", "POST"),
    ("OPTIONS", "/health", "GET, HEAD"), ("TRACE", "/health", "GET, HEAD"), ("PATCH", "/health", "GET, HEAD"),
])  # fmt: skip
def test_other_methods_get_a_json_405_naming_the_allowed_ones(strict, method, path, allowed):
    """Item 8: OPTIONS/HEAD/TRACE got HTML 501s."""
    data = f"{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()
    status, headers, body, _ = exchange(strict, data)
    assert status == 405 and headers["allow"] == allowed
    if method == "HEAD":  # a HEAD reply has the headers of the JSON error but no body
        assert headers["content-type"] == "application/json" and body == b""
    else:
        assert json_error(headers, body).startswith(f"{method} {path} is not allowed")


def test_head_of_health_is_answered_without_a_body(strict):
    status, headers, body, _ = exchange(strict, b"HEAD /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert (status, headers["content-type"], body) == (200, "application/json", b"")


@pytest.mark.parametrize("pieces", [1, 2])  # whole (measured by the app) or in pieces (by h11)
def test_oversized_request_lines_and_headers_get_json_414_and_431(strict, pieces):
    """Item 8: these were HTML."""

    def split(data: bytes) -> list[bytes]:
        return [data] if pieces == 1 else [data[:16500], data[16500:]]  # h11 sees 16500 bytes of an incomplete head

    status, headers, body, _ = exchange(strict, split(b"GET /" + b"a" * 17000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"))
    assert status == 414 and "request line longer than 16384 bytes" in json_error(headers, body)
    big = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 17000 + b"\r\n\r\n"
    status, headers, body, _ = exchange(strict, split(big))
    assert status == 431 and "headers longer than 16384 bytes" in json_error(headers, body)
    assert exchange(strict, b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 16000 + b"\r\n\r\n")[0] == 200


def test_connections_beyond_the_cap_get_a_json_503(strict):
    """Item 8: there was no connection cap."""
    time.sleep(0.3)  # the connections of earlier tests are gone
    idle = [socket.create_connection(strict.server_address, timeout=10) for _ in range(STRICT_CONNECTIONS)]
    try:
        time.sleep(0.3)  # accepted by the server
        status, headers, body, seconds = exchange(strict, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        assert status == 503 and f"limit {STRICT_CONNECTIONS}" in json_error(headers, body) and seconds < 0.8
    finally:
        for sock in idle:
            sock.close()
    time.sleep(0.3)
    assert request(strict, "GET", "/health")[0] == 200


def rss_bytes(pid: int, field: str = "VmRSS") -> int:
    """Resident set size of process `pid` (Linux), or with field="VmHWM" its high-water mark."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} for process {pid}")


@contextlib.contextmanager
def serve_process(graph: FrozenGraph, *flags: str) -> Iterator[tuple[subprocess.Popen, str]]:
    """tools/serve.py on a free port in its own process: (the process, its URL), stopped after."""
    serve = Path(__file__).parents[1] / "tools" / "serve.py"
    process = subprocess.Popen([sys.executable, str(serve), "--graph", str(graph.path), "--port", "0", *flags],
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        # "precision fp32 (...)", then "serving ... on http://127.0.0.1:PORT ..."
        lines = [process.stdout.readline() for _ in range(2)]
        line = lines[-1]
        assert lines[0].startswith("precision ") and " on http://127.0.0.1:" in line, lines
        yield process, line.split(" on ")[1].split()[0]
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.mark.slow
def test_server_memory_stays_flat_under_pixel_bombs(graph):
    """Item 1: one 140 KB PNG declaring 12000^2 took the server from 0.8 to 3.5 GB, and it stayed.

    tools/serve.py in its own process: RSS after 20 pixel bombs (decodable 8000^2 PNGs of 190 KB,
    and 12000^2 headers), 4 at a time, stays within 100 MB of its RSS after 20 valid images.
    """
    with serve_process(graph, "--max-bytes", "1MB") as (process, url):
        valid = [jpeg(seed, 640, 480)[0] for seed in range(4)] * 5
        bombs = [zero_png(8000, 8000), png_bomb(12000, 12000)] * 10
        assert len(bombs[0]) < 10**6
        with ThreadPoolExecutor(4) as pool:
            assert [reply["status"] for reply in pool.map(lambda body: post_image(url, body), valid)] == [200] * 20
            after_valid = rss_bytes(process.pid)
            replies = list(pool.map(lambda body: post_image(url, body), bombs))
        after_bombs = rss_bytes(process.pid)
        assert [reply["status"] for reply in replies] == [413] * 20
        assert after_bombs <= after_valid + 100 * 2**20, (after_valid / 2**20, after_bombs / 2**20)


def test_tensorflow_serving_predict_api_gives_the_graph_outputs(strict, graph):
    _, first = jpeg(3, 64, 48)
    _, second = jpeg(4, 64, 48)
    want = graph(np.stack([first, second]))
    path = "/v1/models/ssd:predict"
    status, rows = request(strict, "POST", path, json.dumps({"instances": [first.tolist(), second.tolist()]}).encode())
    assert status == 200 and len(rows["predictions"]) == 2
    columnar = json.dumps({"inputs": {"image_tensor": [second.tolist()]}}).encode()
    status, columns = request(strict, "POST", path, columnar)
    assert status == 200
    for name, value in want.items():
        np.testing.assert_allclose(rows["predictions"][1][name], value[1], rtol=1e-6)
        np.testing.assert_allclose(columns["outputs"][name], value[1:], rtol=1e-6)
    assert request(strict, "GET", "/v1/models/ssd")[1]["model_version_status"][0]["state"] == "AVAILABLE"
    assert request(strict, "POST", path, b'{"instances": [[[1, 2]]]}')[0] == 400
    assert request(strict, "POST", "/v1/models/other:predict", b"{}")[0] == 404


def test_oversized_bodies_are_refused_before_100_continue_and_the_connection_stays_usable(strict):
    """curl asks before sending a large body: the 413 comes instead of 100 Continue."""
    data = b"POST /detect HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000000\r\nExpect: 100-continue\r\n\r\n"
    status, headers, body, _ = exchange(strict, data)
    assert status == 413 and "exceeds the limit of 200000 bytes" in json_error(headers, body)
    # A client that sent the whole body anyway reads its 413, and its next request is served.
    connection = http.client.HTTPConnection(*strict.server_address, timeout=10)
    try:
        connection.request("POST", "/detect", body=b"x" * (MAX_BYTES + 1))
        response = connection.getresponse()
        assert (response.status, "exceeds" in json.loads(response.read())["error"]) == (413, True)
        connection.request("GET", "/health")
        response = connection.getresponse()
        assert (response.status, json.loads(response.read())["status"]) == (200, "ok")
    finally:
        connection.close()


# -- hardening, third round: the predict endpoint and the decoded-pixel bound

PREDICT = "/v1/models/ssd:predict"


def black_predict_body(width: int, height: int) -> bytes:
    """TensorFlow Serving's row format for one black width x height image: 8 bytes of JSON a pixel."""
    row = b"[" + b",".join([b"[0,0,0]"] * width) + b"]"
    return b'{"instances": [[' + b",".join([row] * height) + b"]]}"


@pytest.fixture(scope="module")
def roomy(graph):
    """A server taking 12 MB bodies: room for a 10 MB predict request."""
    yield from serving(make_server(graph, CLASSES, port=0, limits=ServerLimits(max_bytes=12_000_000,
                                                                                max_pixels=4_000_000)))


@pytest.mark.slow
def test_predict_bodies_are_parsed_off_the_event_loop_and_hostile_ones_get_400(roomy):
    """Four 10 MB predict bodies at once: /health still answers within 1 s (it waited 2.9 s behind one
    body parsed on the event loop, 9.4 s behind eight); 10^6-deep JSON and mixed instances are 400."""
    body = black_predict_body(1000, 1250)
    assert len(body) > 10**7
    assert request(roomy, "POST", PREDICT, black_predict_body(2, 2))[0] == 200  # parser processes started
    with ThreadPoolExecutor(4) as pool:
        replies = [pool.submit(request, roomy, "POST", PREDICT, body) for _ in range(4)]
        waits = []
        while not all(reply.done() for reply in replies):
            tic = time.perf_counter()
            assert request(roomy, "GET", "/health")[0] == 200
            waits.append(time.perf_counter() - tic)
            time.sleep(0.02)
    assert [reply.result()[0] for reply in replies] == [200] * 4
    assert len(waits) > 5 and max(waits) < 1.0, waits
    for hostile, words in ((b"[" * 10**6 + b"]" * 10**6, "JSON nested too deeply"),
                           (b'{"instances": [{"image_tensor": [[[0, 0, 0]]]}, 5]}', '"instances" mixes objects')):
        status, reply = request(roomy, "POST", PREDICT, hostile)
        assert status == 400 and words in reply["error"], reply


@pytest.mark.slow
def test_decoded_pixels_stay_within_the_stated_bound(graph):
    """Six concurrent decodable PNGs at --max-pixels: the server's peak RSS rises by at most the bound
    README states: slots x max_pixels x 6 (a decode holds its result and OpenCV's own buffer) +
    max_pixels x 15 (the one graph call at a time copies its input and casts it to float32 before
    the resize) + 32 MiB (thread stacks, bodies, the graph's scratch at a new size). (README said
    slots x max_pixels x 3, while six 40 MP PNGs raised RSS by 824 MB.)"""
    max_pixels, slots = 2000 * 2000, 2
    with serve_process(graph, "--max-bytes", "1MB", "--max-pixels", str(max_pixels),
                       "--decode-slots", str(slots)) as (process, url):
        for seed in range(3):
            assert post_image(url, jpeg(seed, 640, 480)[0])["status"] == 200
        before = rss_bytes(process.pid, "VmHWM")
        big = zero_png(2000, 2000)
        with ThreadPoolExecutor(6) as pool:
            assert [reply["status"] for reply in pool.map(lambda body: post_image(url, body), [big] * 6)] == [200] * 6
        rise = rss_bytes(process.pid, "VmHWM") - before
    bound = slots * max_pixels * 6 + max_pixels * 15 + 32 * 2**20
    assert rise <= bound, (rise / 2**20, bound / 2**20)
