"""TensorFlow Serving's REST predict API on the SavedModel's contract, so the same client code works.

    POST /v1/models/<name>:predict   {"instances": [image, ...]}           -> {"predictions": [{output: value}, ...]}
                                     {"inputs": [image, ...]} or
                                     {"inputs": {"image_tensor": [...]}}   -> {"outputs": {output: [value, ...]}}
    GET  /v1/models/<name>           -> {"model_version_status": [{"version": "1", "state": "AVAILABLE", ...}]}

An image is the signature's input `image_tensor`: uint8 RGB as nested lists [H][W][3]; the images
of one request share a size (they form one [B, H, W, 3] tensor). The outputs are the four Object
Detection API tensors (`ssd.detections.OUTPUT_NAMES`). Only the "serving_default" signature exists.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from ssd.detections import INPUT_NAME, OUTPUT_NAMES
from ssd.image_header import check_pixels

DEFAULT_MODEL_NAME = "ssd"
SIGNATURE = "serving_default"


def parse_predict_request(body: bytes, max_pixels: int) -> tuple[np.ndarray, bool]:
    """JSON body -> (uint8 images [B, H, W, 3], columnar?); ValueError saying what is wrong."""
    try:
        request = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"the predict request is not JSON: {err}") from err
    except RecursionError:
        raise ValueError("the predict request is JSON nested too deeply (an image is [B][H][W][3])") from None
    if not isinstance(request, dict) or ("instances" in request) == ("inputs" in request):
        raise ValueError('the predict request must be a JSON object with either "instances" or "inputs"')
    if request.get("signature_name", SIGNATURE) != SIGNATURE:
        raise ValueError(f"unknown signature_name {request['signature_name']!r}: the model has only {SIGNATURE!r}")
    columnar = "inputs" in request
    value = request["inputs"] if columnar else request["instances"]
    if isinstance(value, dict):
        value = value.get(INPUT_NAME) if columnar else None
    if not columnar and isinstance(value, list) and value and isinstance(value[0], dict):
        if not all(isinstance(instance, dict) for instance in value):
            kinds = sorted({type(instance).__name__ for instance in value})
            raise ValueError(f'"instances" mixes objects and other values ({", ".join(kinds)}): either every '
                             f'instance is {{"{INPUT_NAME}": image}} or every instance is an image')
        value = [instance.get(INPUT_NAME) for instance in value]  # row format with named inputs
    return _images(value, max_pixels), columnar


def _images(value: Any, max_pixels: int) -> np.ndarray:
    try:
        images = np.asarray(value)
    except (ValueError, TypeError, RecursionError) as err:  # ragged or absurd nesting
        raise ValueError(f"{INPUT_NAME} must be images of one size, [B][H][W][3]: {err}") from None
    if images.ndim != 4 or images.shape[-1] != 3 or 0 in images.shape:
        raise ValueError(f"{INPUT_NAME} must be uint8 RGB images [B][H][W][3], got shape {list(images.shape)}")
    if images.dtype.kind not in "iu" or images.min() < 0 or images.max() > 255:
        raise ValueError(f"{INPUT_NAME} values must be integers in [0, 255], got {images.dtype} values")
    batch, height, width = images.shape[:3]
    check_pixels(width, height * batch, max_pixels, f"{INPUT_NAME} ({batch} images of {width}x{height})")
    return images.astype(np.uint8)


def predict_response(outputs: dict[str, np.ndarray], columnar: bool) -> dict[str, Any]:
    """Graph outputs [B, ...] -> TensorFlow Serving's row ("predictions") or columnar ("outputs") reply."""
    if columnar:
        return {"outputs": {name: outputs[name].tolist() for name in OUTPUT_NAMES}}
    batch = len(outputs[OUTPUT_NAMES[0]])
    return {"predictions": [{name: outputs[name][i].tolist() for name in OUTPUT_NAMES} for i in range(batch)]}


def model_status() -> dict[str, Any]:
    """TensorFlow Serving's GET /v1/models/<name> reply for the one loaded version."""
    return {"model_version_status": [{"version": "1", "state": "AVAILABLE",
                                      "status": {"error_code": "OK", "error_message": ""}}]}
