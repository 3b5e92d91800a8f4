"""The detection server on loopback: correct under concurrency, 4xx for bad requests, keeps serving."""

from __future__ import annotations

import http.client
import json
import socket
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import pytest
import tensorflow as tf

from ssd.config import ModelConfig
from ssd.deploy.export import export_module, frozen_graph_def
from ssd.deploy.frozen_graph import FrozenGraph
from ssd.detections import detection_records
from ssd.modeling.model import build_model_from_config
from ssd.deploy.server import make_server, parse_size, post_image

CLASSES = ("circle", "square", "triangle")
MAX_BYTES = 200_000


@pytest.fixture(scope="module")
def graph(tmp_path_factory) -> FrozenGraph:
    out = tmp_path_factory.mktemp("graph") / "frozen_inference_graph.pb"
    tf.keras.utils.set_random_seed(2)
    config = ModelConfig("vgg300", CLASSES, width=0.125)
    out.write_bytes(frozen_graph_def(export_module(build_model_from_config(config), config,
                                                   max_detections=20)).SerializeToString())
    return FrozenGraph(out)


@pytest.fixture(scope="module")
def server(graph):
    server = make_server(graph, CLASSES, port=0, max_bytes=MAX_BYTES, threshold=0.3)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)


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
