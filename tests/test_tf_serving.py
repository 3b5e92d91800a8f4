"""TensorFlow Serving's REST predict format: requests parsed to the signature's uint8 images, replies in its layout."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from ssd.deploy.tf_serving import model_status, parse_predict_request, predict_response
from ssd.image_header import TooManyPixels


def images(batch: int = 2, height: int = 3, width: int = 4) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (batch, height, width, 3), np.uint8)


def body(payload) -> bytes:
    return json.dumps(payload).encode()


@pytest.mark.parametrize(
    "payload, columnar",
    [
        ({"instances": images().tolist()}, False),  # row format, one unnamed input
        ({"instances": [{"image_tensor": image} for image in images().tolist()]}, False),  # row format, named
        ({"inputs": images().tolist()}, True),  # columnar, unnamed
        ({"inputs": {"image_tensor": images().tolist()}, "signature_name": "serving_default"}, True),
    ],
)
def test_requests_give_the_uint8_batch(payload, columnar):
    parsed, got_columnar = parse_predict_request(body(payload), max_pixels=100)
    assert parsed.dtype == np.uint8 and got_columnar == columnar
    np.testing.assert_array_equal(parsed, images())


@pytest.mark.parametrize(
    "data, message",
    [
        (b"\xff not json", "not JSON"),
        (body([1, 2]), 'either "instances" or "inputs"'),
        (body({"instances": [], "inputs": []}), 'either "instances" or "inputs"'),
        (body({"instances": images().tolist(), "signature_name": "detect"}), "unknown signature_name 'detect'"),
        (body({"instances": [images()[0].tolist(), images(1, 2, 4)[0].tolist()]}), "one size"),  # ragged
        (body({"instances": images()[0].tolist()}), "got shape [3, 4, 3]"),  # one image without the batch
        (body({"instances": (images() / 255).tolist()}), "integers in [0, 255]"),
        (body({"instances": [[[[0, 0, 256]]]]}), "integers in [0, 255]"),
        (body({"inputs": {"images": images().tolist()}}), "got shape []"),  # wrong input name
    ],
)
def test_bad_requests_say_what_is_wrong(data, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_predict_request(data, max_pixels=100)


def test_the_pixel_limit_counts_the_whole_batch():
    parse_predict_request(body({"instances": images(2, 3, 4).tolist()}), max_pixels=24)
    with pytest.raises(TooManyPixels, match=r"2 images of 4x3"):
        parse_predict_request(body({"instances": images(2, 3, 4).tolist()}), max_pixels=23)


def test_replies_in_row_and_columnar_layout():
    outputs = {
        "detection_boxes": np.arange(16, dtype=np.float32).reshape(2, 2, 4) / 16,
        "detection_scores": np.array([[0.9, 0.5], [0.25, 0.125]], np.float32),
        "detection_classes": np.array([[1, 2], [3, 1]], np.float32),
        "num_detections": np.array([2, 1], np.float32),
    }
    rows = predict_response(outputs, columnar=False)["predictions"]
    assert len(rows) == 2
    assert rows[1] == {"detection_boxes": [[0.5, 0.5625, 0.625, 0.6875], [0.75, 0.8125, 0.875, 0.9375]],
                       "detection_scores": [0.25, 0.125], "detection_classes": [3.0, 1.0], "num_detections": 1.0}
    columns = predict_response(outputs, columnar=True)["outputs"]
    assert columns["num_detections"] == [2.0, 1.0] and columns["detection_classes"] == [[1.0, 2.0], [3.0, 1.0]]
    np.testing.assert_allclose(columns["detection_scores"], [[0.9, 0.5], [0.25, 0.125]], rtol=1e-6)
    assert model_status()["model_version_status"][0]["state"] == "AVAILABLE"


@pytest.mark.parametrize("data, message", [
    (b"[" * 10**6 + b"]" * 10**6, "JSON nested too deeply"),
    (body({"instances": [{"image_tensor": images()[0].tolist()}, 5]}), '"instances" mixes objects and other values'),
    (body({"instances": [[[[[[[[[0]]]]]]]]] * 2}), "got shape [2, 1, 1, 1, 1, 1, 1, 1, 1]"),
])
def test_hostile_bodies_say_what_is_wrong(data, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_predict_request(data, max_pixels=100)
