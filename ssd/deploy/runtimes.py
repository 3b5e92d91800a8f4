"""One interface over every exported format: `load_detector(path)` -> a detection callable.

Every runtime returns the detections contract of `ssd.detections` (NumPy float32 dict of
detection_boxes [B, N, 4] "rel_yxyx", detection_scores [B, N], detection_classes [B, N],
num_detections [B]) for uint8 RGB images [B, H, W, 3]. The format follows from the path:

    export directory             its frozen_inference_graph.pb (TensorFlow)
    *.pb                         frozen graph (TensorFlow)
    directory with saved_model.pb  SavedModel, signature serving_default (TensorFlow)
    *.onnx                       ONNX Runtime, CPU provider
    *.xml                        OpenVINO IR, compiled for the CPU at `precision` ("f32" or "bf16")
    *.tflite                     LiteRT's interpreter (builtin ops only), one image per call; the op's
                                 0-based classes shifted to 1..C (`tflite_to_contract`)

Each runtime is imported only when its format is loaded: an ONNX or TFLite model runs without
loading TensorFlow.

`choose_precision(path, "auto")` picks the fastest precision an export offers on this CPU: its INT8
model when export.json records an INT8 accuracy check within its bound, else the OpenVINO IR at
bf16 when the CPU has bf16 units and a bf16 check within its bound is recorded, else fp32.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ssd.deploy.accuracy_checks import read_accuracy_checks
from ssd.detections import EXPORT_INFO_FILE, GRAPH_FILE, INPUT_NAME, OUTPUT_NAMES, DetectFn

IR_FILE, IR_INT8_FILE = "model.xml", "model_int8.xml"  # the OpenVINO IR files an export holds
FORMATS = ("frozen", "saved_model", "onnx", "openvino", "tflite")
DEFAULT_FORMATS = ("frozen", "saved_model")  # what export_graph.py writes unless told otherwise
INT8_FORMATS = ("openvino", "tflite")  # the formats that get an INT8 twin
PRECISIONS = ("f32", "bf16")
CHOICES = ("auto", *PRECISIONS)  # what --precision takes


def model_format(path: str | os.PathLike) -> str:
    """The export format of `path` (one of FORMATS); ValueError naming the path otherwise."""
    path = Path(path)
    if path.is_dir():
        return "saved_model" if (path / "saved_model.pb").is_file() else "frozen"
    by_suffix = {".pb": "frozen", ".onnx": "onnx", ".xml": "openvino", ".tflite": "tflite"}
    if path.suffix.lower() in by_suffix:
        return by_suffix[path.suffix.lower()]
    raise ValueError(f"model {path}: cannot tell its format; expected an export directory, a SavedModel "
                     f"directory, or a file ending in {', '.join(by_suffix)}")


def model_file(path: str | os.PathLike) -> Path:
    """The file or directory a runtime opens: an export directory means its frozen graph."""
    path = Path(path)
    if model_format(path) == "frozen" and path.is_dir():
        path = path / GRAPH_FILE
    if not path.exists():
        raise FileNotFoundError(f"model {path} does not exist")
    return path


def load_detector(path: str | os.PathLike, precision: str = "f32") -> DetectFn:
    """The exported model at `path` as a detection callable (see the module docstring)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    path = model_file(path)
    loaders = {"frozen": _frozen_graph, "saved_model": _saved_model, "onnx": _onnx,
               "openvino": lambda p: _openvino(p, precision), "tflite": _tflite}
    return loaders[model_format(path)](path)


def _check_images(images: np.ndarray) -> np.ndarray:
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"detector: images must be uint8 [B, H, W, 3] RGB, got {images.dtype} {images.shape}")
    return images


def _contract(outputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {name: np.asarray(outputs[name], np.float32) for name in OUTPUT_NAMES}


def _frozen_graph(path: Path) -> DetectFn:
    from ssd.deploy.frozen_graph import FrozenGraph

    return FrozenGraph(path)


def _saved_model(path: Path) -> DetectFn:
    import tensorflow as tf

    signature = tf.saved_model.load(str(path)).signatures["serving_default"]

    def detect(images: np.ndarray) -> dict[str, np.ndarray]:
        outputs = signature(**{INPUT_NAME: tf.constant(_check_images(images))})
        return _contract({name: value.numpy() for name, value in outputs.items()})

    return detect


def _onnx(path: Path) -> DetectFn:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])

    def detect(images: np.ndarray) -> dict[str, np.ndarray]:
        return _contract(dict(zip(OUTPUT_NAMES, session.run(list(OUTPUT_NAMES), {INPUT_NAME: _check_images(images)}))))

    return detect


def decline_openvino_telemetry() -> None:
    """Keep OpenVINO's converter and NNCF from sending usage telemetry (they do unless a user opted out).

    Both ask `openvino_telemetry`'s consent check when they start (NNCF at import); answering
    "declined" for this process is what `opt_in_out --opt_out` stores, without writing to the home.
    """
    from openvino_telemetry.utils import opt_in_checker

    opt_in_checker.OptInChecker.check = lambda *args, **kwargs: opt_in_checker.ConsentCheckResult.DECLINED


def _openvino(path: Path, precision: str) -> DetectFn:
    decline_openvino_telemetry()
    import openvino as ov

    return openvino_detector(ov.Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": precision}))


def openvino_detector(compiled) -> DetectFn:
    """An `openvino.CompiledModel` of an exported detector behind the contract."""
    outputs = {name: compiled.output(name) for name in OUTPUT_NAMES}
    local = threading.local()  # an infer request is not thread-safe; one per calling thread

    def detect(images: np.ndarray) -> dict[str, np.ndarray]:
        if not hasattr(local, "request"):
            local.request = compiled.create_infer_request()
        result = local.request.infer({0: _check_images(images)})
        return _contract({name: result[port] for name, port in outputs.items()})

    return detect


def _tflite(path: Path) -> DetectFn:
    return _TFLiteDetector(path)


class _TFLiteDetector:
    """LiteRT's interpreter behind the contract: one image per invocation, the op's outputs mapped."""

    def __init__(self, path: Path):
        from ai_edge_litert.interpreter import Interpreter

        # Default threads: with num_threads=2 TensorFlow's interpreter returned other (wrong)
        # scores for a 6-class model, with no error.
        self.interpreter = Interpreter(model_path=str(path))
        self.runner = self.interpreter.get_signature_runner()
        self.lock = threading.Lock()  # the interpreter holds one set of tensors

    def __call__(self, images: np.ndarray) -> dict[str, np.ndarray]:
        images = _check_images(images)
        with self.lock:  # TFLite_Detection_PostProcess has batch 1; the runner resizes its input per shape
            results = [self.runner(**{INPUT_NAME: images[i : i + 1]}) for i in range(len(images))]
        outputs = {name: np.concatenate([r[name] for r in results]) for name in OUTPUT_NAMES}
        return _contract(tflite_to_contract(outputs))


def tflite_to_contract(outputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """TFLite_Detection_PostProcess's outputs (classes 0..C-1, boxes unclipped) -> the detections
    contract (ids 1..C, boxes clipped to [0, 1], zero rows past num_detections)."""
    valid = np.arange(outputs["detection_scores"].shape[-1])[None, :] < outputs["num_detections"][:, None]
    return {
        "detection_boxes": np.where(valid[..., None], np.clip(outputs["detection_boxes"], 0.0, 1.0), 0.0),
        "detection_scores": np.where(valid, outputs["detection_scores"], 0.0),
        "detection_classes": np.where(valid, outputs["detection_classes"] + 1.0, 0.0),
        "num_detections": outputs["num_detections"],
    }


@dataclass(frozen=True)
class PrecisionChoice:
    """The model file to open, the precision to compile it at ("f32" or "bf16"), what it runs as, and why."""

    path: Path
    precision: str
    label: str  # "int8", "bf16" or "fp32"
    reason: str


def cpu_has_bf16() -> bool:
    """Whether OpenVINO's CPU plugin reports bf16 units on this machine (AVX512_BF16 or AMX)."""
    decline_openvino_telemetry()
    import openvino as ov

    return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def choose_precision(path: str | os.PathLike, precision: str = "auto") -> PrecisionChoice:
    """The model and precision to run for `path` (an export directory or a model file) and `precision`.

    "f32" and "bf16" are taken as given. "auto" (see the module docstring) reads the accuracy
    checks in export.json beside the model; for an export directory it may open its
    model_int8.xml or model.xml instead of the frozen graph.
    """
    if precision not in CHOICES:
        raise ValueError(f"precision must be one of {CHOICES}, got {precision!r}")
    if precision != "auto":
        return PrecisionChoice(model_file(path), precision, "fp32" if precision == "f32" else precision,
                               f"--precision {precision}")
    path = Path(path)
    export_dir = path.is_dir() and model_format(path) == "frozen"
    given = path / GRAPH_FILE if export_dir else model_file(path)
    if not export_dir and model_format(given) != "openvino":
        return PrecisionChoice(given, "f32", "fp32", f"{given.name}: this format runs at fp32 (only OpenVINO "
                               "models have INT8 and bf16 variants here)")
    checks = {(c.model, c.precision): c for c in read_accuracy_checks(given.parent)}
    why_not = []
    for name, hint, label in ((IR_INT8_FILE, "f32", "int8"), (IR_FILE, "bf16", "bf16")):
        candidate, check = given.parent / name, checks.get((name, label))
        if not export_dir and given.name != name:
            continue
        if check is None:
            why_not.append(f"no {label} accuracy check in {given.parent / EXPORT_INFO_FILE} (export_graph.py "
                           f"--format openvino{' --int8' * (label == 'int8')} --max-map-drop POINTS)")
        elif not check.met:
            why_not.append(f"{label} missed its bound ({check.summary()})")
        elif not candidate.is_file():
            why_not.append(f"{candidate} passed its {label} check but does not exist")
        elif label == "bf16" and not cpu_has_bf16():
            why_not.append("this CPU has no bf16 units")
        else:
            return PrecisionChoice(candidate, hint, label, "; ".join([f"{name} at {label}: {check.summary()}",
                                                                      *why_not]))
    if export_dir and not given.is_file() and (given.parent / IR_FILE).is_file():
        given = given.parent / IR_FILE  # an OpenVINO-only export: its fp32 IR
    label = "int8" if given.name == IR_INT8_FILE else "fp32"
    return PrecisionChoice(model_file(given), "f32", label, f"{given.name} at {label}: {'; '.join(why_not)}")


def load_model(path: str | os.PathLike, precision: str = "f32",
               labels: str | os.PathLike | None = None) -> tuple[DetectFn, tuple[str, ...], Path]:
    """(detector, class names from `labels` or labels.txt beside the model, the file opened)."""
    from ssd.deploy.frozen_graph import labels_for

    path = model_file(path)
    return load_detector(path, precision), labels_for(path, labels), path
