"""Export a trained run as the TensorFlow Object Detection API does: frozen graph, SavedModel, TFLite.

The exported graph takes `image_tensor` (uint8 RGB [batch, any H, any W, 3]), warps every image
to the model's S x S input inside the graph (bilinear, no antialiasing: training's
cv2.resize INTER_LINEAR), runs `ssd.modeling.inference.Detector` and returns

    detection_boxes    float32 [batch, max_detections, 4], "rel_yxyx" (normalised ymin, xmin, ymax, xmax)
    detection_scores   float32 [batch, max_detections], descending
    detection_classes  float32 [batch, max_detections], ids 1..C
    num_detections     float32 [batch]

Boxes are normalised, so they apply unchanged to the original (un-resized) image.

    out_dir/frozen_inference_graph.pb   GraphDef, variables folded into constants
    out_dir/saved_model/                signature "serving_default", same names
    out_dir/label_map.pbtxt, labels.txt class names (ids 1..C)
    out_dir/export.json                 the graph's input size S, preset and baked-in thresholds
    out_dir/model.tflite                optional: the whole graph; needs the Flex delegate (Select TF ops)
    out_dir/model_core.tflite           optional: TFLite builtins only, no resize and no NMS (see `CoreModule`)
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

from ssd.config import ModelConfig
from ssd.core.anchors import default_boxes
from ssd.core.boxes import xyxy_to_yxyx
from ssd.core.encoding import decode
from ssd.detections import (
    EXPORT_INFO_FILE, GRAPH_FILE, INPUT_NAME, LABEL_MAP_FILE, LABELS_FILE, OUTPUT_NAMES, SAVED_MODEL_DIR,
)
from ssd.modeling.inference import Detector
from ssd.modeling.run_dir import load_trained_model

TFLITE_FILE, TFLITE_CORE_FILE = "model.tflite", "model_core.tflite"
INPUT_SIGNATURE = (tf.TensorSpec([None, None, None, 3], tf.uint8, name=INPUT_NAME),)


class ExportModule(tf.Module):
    """Any-size uint8 RGB images -> resize to the model input -> `Detector`; the exported graph."""

    def __init__(self, detector: Detector):
        super().__init__(name="ssd_export")
        self.detector = detector
        self.image_size = detector.config.image_size

    @tf.function(input_signature=INPUT_SIGNATURE)
    def __call__(self, image_tensor: tf.Tensor) -> dict[str, tf.Tensor]:
        outputs = self.detector(resize_in_graph(image_tensor, self.image_size))
        # Named identities give the frozen graph the Object Detection API's tensor names.
        return {name: tf.identity(outputs[name], name=name) for name in OUTPUT_NAMES}


def resize_in_graph(images: tf.Tensor, size: int) -> tf.Tensor:
    """uint8 [B, H, W, 3] -> uint8 [B, size, size, 3], as `ssd.image_io.resize_rgb` does on the CPU.

    half_pixel_centers bilinear without antialias is cv2's INTER_LINEAR; rounding back to uint8
    gives the model the same integer pixels evaluation feeds it (within 1 grey level). A float
    input keeps the resize a TFLite builtin (a uint8 ResizeBilinear is a Flex op).
    """
    resized = tf.image.resize(tf.cast(images, tf.float32), [size, size], method="bilinear", antialias=False)
    return tf.cast(tf.round(tf.clip_by_value(resized, 0.0, 255.0)), tf.uint8)


def export_module(
    model: keras.Model,
    config: ModelConfig,
    score_threshold: float = 0.01,
    iou_threshold: float = 0.45,
    max_detections: int = 100,
) -> ExportModule:
    """The exported graph as a tf.Module (before freezing); thresholds are baked in."""
    _check_options(score_threshold, iou_threshold, max_detections)
    detector = Detector(model, config, score_threshold=score_threshold, iou_threshold=iou_threshold,
                        max_detections=max_detections)
    return ExportModule(detector)


class CoreModule(tf.Module):
    """The TFLite-builtins part: uint8 [1, S, S, 3] -> decoded boxes and softmax scores, no NMS.

    Outputs `detection_boxes` float32 [1, A, 4] "rel_yxyx" (unclipped) and `detection_scores`
    float32 [1, A, C + 1] (column 0 is background); the caller resizes and runs NMS.
    """

    def __init__(self, model: keras.Model, config: ModelConfig):
        super().__init__(name="ssd_core")
        self.model, self.variances = model, config.default_boxes.variances
        self.anchors = tf.constant(default_boxes(config.default_boxes))
        size = config.image_size
        self.__call__ = tf.function(
            self._call, input_signature=(tf.TensorSpec([1, size, size, 3], tf.uint8, name=INPUT_NAME),)
        )

    def _call(self, image_tensor: tf.Tensor) -> dict[str, tf.Tensor]:
        outputs = self.model(image_tensor, training=False)
        boxes = decode(outputs["box_deltas"], self.anchors, self.variances)
        return {"detection_boxes": xyxy_to_yxyx(boxes),
                "detection_scores": tf.nn.softmax(outputs["class_logits"], axis=-1)}


def freeze(module: tf.Module):
    """The module's `__call__` concrete function with every variable folded into a constant."""
    return convert_variables_to_constants_v2(module.__call__.get_concrete_function())


def frozen_graph_def(module: ExportModule) -> tf.compat.v1.GraphDef:
    """The module's graph with variables folded into constants; input `image_tensor`, OD API outputs."""
    graph_def = freeze(module).graph.as_graph_def()
    check_graph_names(graph_def)
    return graph_def


def check_graph_names(graph_def: tf.compat.v1.GraphDef) -> None:
    """Import `graph_def` as a TF1 consumer would and look up every OD API tensor by name."""
    with tf.Graph().as_default() as graph:
        tf.graph_util.import_graph_def(graph_def, name="")
        for name in (INPUT_NAME, *OUTPUT_NAMES):
            graph.get_tensor_by_name(f"{name}:0")  # KeyError names the missing tensor


def write_label_map(path: str | Path, class_names: tuple[str, ...]) -> None:
    """TF Object Detection API label map (pbtxt): item { id: 1 name: 'circle' display_name: 'circle' }."""
    items = []
    for class_id, name in enumerate(class_names, start=1):
        quoted = name.replace("\\", "\\\\").replace("'", "\\'")
        items.append(f"item {{\n  id: {class_id}\n  name: '{quoted}'\n  display_name: '{quoted}'\n}}\n")
    Path(path).write_text("".join(items))


def write_export_info(path: str | Path, module: ExportModule) -> None:
    """The graph's input size, preset and baked-in thresholds as JSON (see `EXPORT_INFO_FILE`)."""
    config = module.detector.config
    info = {"image_size": module.image_size, "preset": config.preset, "width": config.width,
            **module.detector.options}
    Path(path).write_text(json.dumps(info, indent=2) + "\n")


def write_labels(path: str | Path, class_names: tuple[str, ...]) -> None:
    """One class name per line; line k (1-based) is class id k."""
    Path(path).write_text("".join(f"{name}\n" for name in class_names))


def convert_tflite(module: tf.Module, select_tf_ops: bool) -> bytes:
    """TFLite flatbuffer of `module.__call__` (frozen first, one "serving_default" signature).

    Freezing first matters: converted directly, Keras variables stay resource variables that
    the interpreter never initialises (NaN outputs). `select_tf_ops` allows TensorFlow kernels
    (Flex delegate) for ops without a TFLite builtin, such as CombinedNonMaxSuppression.
    """
    frozen = freeze(module)
    # The frozen function returns a flat list, in tf.nest order (sorted keys) of the module's dict.
    names = sorted(module.__call__.get_concrete_function().structured_outputs)

    @tf.function(input_signature=module.__call__.input_signature, autograph=False)
    def serving_default(image_tensor):
        return dict(zip(names, frozen(image_tensor)))

    root = tf.Module()
    root.serving_default = serving_default
    converter = tf.lite.TFLiteConverter.from_concrete_functions([serving_default.get_concrete_function()], root)
    ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    converter.target_spec.supported_ops = ops + [tf.lite.OpsSet.SELECT_TF_OPS] if select_tf_ops else ops
    return converter.convert()


def tflite_runs(flatbuffer: bytes, image: np.ndarray) -> str | None:
    """None if this TensorFlow's `tf.lite.Interpreter` runs the model on `image`, else the reason."""
    try:
        interpreter = tf.lite.Interpreter(model_content=flatbuffer)
        interpreter.get_signature_runner()(**{INPUT_NAME: image})
    except (RuntimeError, ValueError) as err:
        return str(err)
    return None


@dataclass
class ExportResult:
    """Paths written by `export_run` and the frozen graph's size."""

    out_dir: Path
    graph_path: Path
    saved_model_dir: Path
    label_map_path: Path
    labels_path: Path
    info_path: Path
    graph_mb: float
    tflite_paths: list[Path] = field(default_factory=list)
    tflite_notes: list[str] = field(default_factory=list)
    class_names: tuple[str, ...] = field(default_factory=tuple)


def export_run(
    run_dir: str | Path,
    out_dir: str | Path,
    checkpoint: str = "best",
    score_threshold: float = 0.01,
    iou_threshold: float = 0.45,
    max_detections: int = 100,
    tflite: bool = False,
) -> ExportResult:
    """Export the run's `checkpoint` ("best" or "latest") to `out_dir`; see the module docstring."""
    model, config = load_trained_model(run_dir, checkpoint)
    module = export_module(model, config, score_threshold, iou_threshold, max_detections)
    result = export_module_to(module, config.class_names, out_dir)
    if tflite:
        export_tflite(module, CoreModule(model, config), result)
    return result


def export_module_to(module: ExportModule, class_names: tuple[str, ...], out_dir: str | Path) -> ExportResult:
    """Write the frozen graph, SavedModel, label files and optionally TFLite of `module`."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    graph_path = out_dir / GRAPH_FILE
    graph_path.write_bytes(frozen_graph_def(module).SerializeToString())
    saved_model_dir = out_dir / SAVED_MODEL_DIR
    if saved_model_dir.exists():
        shutil.rmtree(saved_model_dir)  # a stale variables/ folder must not survive a re-export
    signature = module.__call__.get_concrete_function()
    tf.saved_model.save(module, str(saved_model_dir), signatures={"serving_default": signature})
    result = ExportResult(
        out_dir=out_dir, graph_path=graph_path, saved_model_dir=saved_model_dir,
        label_map_path=out_dir / LABEL_MAP_FILE, labels_path=out_dir / LABELS_FILE, info_path=out_dir / EXPORT_INFO_FILE,
        graph_mb=graph_path.stat().st_size / 2**20, class_names=tuple(class_names),
    )  # fmt: skip
    write_label_map(result.label_map_path, result.class_names)
    write_labels(result.labels_path, result.class_names)
    write_export_info(result.info_path, module)
    return result


def export_tflite(module: ExportModule, core: CoreModule, result: ExportResult) -> None:
    """Write model.tflite (whole graph, Select TF ops) and model_core.tflite (builtins only).

    Each is converted, then run once here; what fails is recorded in `result.tflite_notes`
    instead of raised, so the frozen graph and SavedModel stay usable.
    """
    size = module.image_size
    probe = np.zeros((1, size, size, 3), np.uint8)
    for name, mod, select in ((TFLITE_FILE, module, True), (TFLITE_CORE_FILE, core, False)):
        try:
            flatbuffer = convert_tflite(mod, select)
        except Exception as err:  # the converter raises many types; report and keep going
            result.tflite_notes.append(f"{name}: conversion failed: {type(err).__name__}: {err}")
            continue
        path = result.out_dir / name
        path.write_bytes(flatbuffer)
        result.tflite_paths.append(path)
        reason = tflite_runs(flatbuffer, probe)
        if reason is None:
            result.tflite_notes.append(f"{name}: runs in tf.lite.Interpreter")
        else:
            flex_ops = sorted(set(re.findall(r"Flex\w+", reason))) or [reason]
            result.tflite_notes.append(f"{name}: written, but this tf.lite.Interpreter cannot run it: it needs "
                                       f"the Flex delegate (Select TF ops) for {', '.join(flex_ops)}; "
                                       f"{TFLITE_CORE_FILE} runs anywhere (resize and NMS left to the caller)")


def _check_options(score_threshold: float, iou_threshold: float, max_detections: int) -> None:
    if not 0.0 <= score_threshold < 1.0:
        raise ValueError(f"score_threshold must be in [0, 1), got {score_threshold}")
    if not 0.0 < iou_threshold <= 1.0:
        raise ValueError(f"iou_threshold must be in (0, 1], got {iou_threshold}")
    if max_detections < 1:
        raise ValueError(f"max_detections must be >= 1, got {max_detections}")
