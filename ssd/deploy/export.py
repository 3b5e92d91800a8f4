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
    out_dir/model.onnx                  ONNX, post-processing in ONNX ops (`ssd.deploy.onnx_export`)
    out_dir/model.xml + .bin            OpenVINO IR, fp32 weights (`ssd.deploy.openvino_export`)
    out_dir/model.tflite                TFLite, batch 1, builtin post-processing op (`ssd.deploy.tflite_export`)
    out_dir/model_int8.xml, model_int8.tflite   the INT8 twins, with calibration images
"""

from __future__ import annotations

import json
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
from ssd.deploy.runtimes import DEFAULT_FORMATS, FORMATS, INT8_FORMATS
from ssd.detections import (
    EXPORT_INFO_FILE, GRAPH_FILE, INPUT_NAME, LABEL_MAP_FILE, LABELS_FILE, OUTPUT_NAMES, SAVED_MODEL_DIR,
)
from ssd.modeling.inference import Detector
from ssd.modeling.model import fold_channel_flip
from ssd.modeling.run_dir import load_trained_model

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
    top_k_per_class: int = 400,
) -> ExportModule:
    """The exported graph as a tf.Module (before freezing); thresholds are baked in."""
    _check_options(score_threshold, iou_threshold, max_detections)
    detector = Detector(model, config, score_threshold=score_threshold, iou_threshold=iou_threshold,
                        top_k_per_class=top_k_per_class, max_detections=max_detections)
    return ExportModule(detector)


class HeadsModule(tf.Module):
    """The network without NMS, for runtimes whose own op does the post-processing.

    uint8 RGB [batch, any H, any W, 3] -> resize -> model -> `class_scores` float32 [B, A, C + 1]
    (softmax, column 0 is background) and, with decoded=True, `boxes` float32 [B, A, 4]
    "rel_yxyx" (unclipped), else `box_deltas` float32 [B, A, 4] (tx, ty, tw, th) of the
    default boxes `self.anchors` ("rel_center_xywh"). batch=None leaves the batch dynamic.
    """

    def __init__(self, model: keras.Model, config: ModelConfig, batch: int | None = None, decoded: bool = True):
        super().__init__(name="ssd_heads")
        self.model, self.variances, self.decoded = model, config.default_boxes.variances, decoded
        self.image_size = config.image_size
        self.anchors = tf.constant(default_boxes(config.default_boxes))
        self.__call__ = tf.function(
            self._call, input_signature=(tf.TensorSpec([batch, None, None, 3], tf.uint8, name=INPUT_NAME),)
        )

    def _call(self, image_tensor: tf.Tensor) -> dict[str, tf.Tensor]:
        outputs = self.model(resize_in_graph(image_tensor, self.image_size), training=False)
        scores = tf.nn.softmax(outputs["class_logits"], axis=-1)
        if not self.decoded:
            return {"box_deltas": outputs["box_deltas"], "class_scores": scores}
        return {"boxes": xyxy_to_yxyx(decode(outputs["box_deltas"], self.anchors, self.variances)),
                "class_scores": scores}


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


@dataclass(frozen=True)
class PostprocessOptions:
    """The post-processing baked into every export (see `ssd.core.postprocess.postprocess`)."""

    score_threshold: float = 0.01
    iou_threshold: float = 0.45
    top_k_per_class: int = 400
    max_detections: int = 100

    def __post_init__(self) -> None:
        _check_options(self.score_threshold, self.iou_threshold, self.max_detections)


@dataclass
class ExportResult:
    """What `export_run` wrote: model files by label ("frozen", "onnx", "openvino_int8", ...), label files."""

    out_dir: Path
    class_names: tuple[str, ...]
    files: dict[str, Path] = field(default_factory=dict)

    @property
    def label_map_path(self) -> Path:
        return self.out_dir / LABEL_MAP_FILE

    @property
    def labels_path(self) -> Path:
        return self.out_dir / LABELS_FILE

    @property
    def info_path(self) -> Path:
        return self.out_dir / EXPORT_INFO_FILE


def export_run(
    run_dir: str | Path,
    out_dir: str | Path,
    checkpoint: str = "best",
    options: PostprocessOptions | None = None,
    formats: tuple[str, ...] = DEFAULT_FORMATS,
    calibration: list[np.ndarray] | None = None,
) -> ExportResult:
    """Export the run's `checkpoint` ("best" or "latest") to `out_dir` in each of `formats`.

    With `calibration` (uint8 RGB images), the OpenVINO and TFLite exports also get an INT8 twin.
    Each format's converter is imported only when that format is asked for.
    """
    unknown = sorted(set(formats) - set(FORMATS))
    if unknown or not formats:
        raise ValueError(f"formats must be some of {', '.join(FORMATS)}; got {', '.join(formats) or 'none'}")
    if calibration is not None and not set(formats) & set(INT8_FORMATS):
        raise ValueError(f"INT8 export needs a format among {', '.join(INT8_FORMATS)}; got {', '.join(formats)}")
    options = options or PostprocessOptions()
    model, config = load_trained_model(run_dir, checkpoint)
    model = fold_channel_flip(model)
    result = ExportResult(Path(out_dir), tuple(config.class_names))
    result.out_dir.mkdir(parents=True, exist_ok=True)
    write_label_map(result.label_map_path, result.class_names)
    write_labels(result.labels_path, result.class_names)
    module = export_module(model, config, options.score_threshold, options.iou_threshold,
                           options.max_detections, options.top_k_per_class)
    write_export_info(result.info_path, module)
    if {"frozen", "saved_model"} & set(formats):
        result.files.update(write_tf_formats(module, result.out_dir, formats))
    if {"onnx", "openvino"} & set(formats):
        from ssd.deploy.onnx_export import ONNX_FILE, write_onnx

        result.files["onnx"] = write_onnx(HeadsModule(model, config), len(config.class_names), options,
                                          result.out_dir / ONNX_FILE)
    if "openvino" in formats:
        from ssd.deploy.openvino_export import IR_FILE, IR_INT8_FILE, write_int8_ir, write_ir

        result.files["openvino"] = write_ir(result.files["onnx"], result.out_dir / IR_FILE)
        if calibration is not None:
            result.files["openvino_int8"] = write_int8_ir(result.files["openvino"], result.out_dir / IR_INT8_FILE,
                                                          calibration)
    if "tflite" in formats:
        from ssd.deploy.tflite_export import TFLITE_FILE, TFLITE_INT8_FILE, write_tflite

        result.files["tflite"] = write_tflite(model, config, options, result.out_dir / TFLITE_FILE)
        if calibration is not None:
            result.files["tflite_int8"] = write_tflite(model, config, options, result.out_dir / TFLITE_INT8_FILE,
                                                       calibration)
    if "onnx" not in formats and "onnx" in result.files:  # only the IR's intermediate: keep the folder to what was asked
        result.files.pop("onnx").unlink()
    return result


def write_tf_formats(module: ExportModule, out_dir: Path, formats: tuple[str, ...]) -> dict[str, Path]:
    """The frozen graph and/or the SavedModel of `module` in `out_dir`."""
    files: dict[str, Path] = {}
    if "frozen" in formats:
        files["frozen"] = out_dir / GRAPH_FILE
        files["frozen"].write_bytes(frozen_graph_def(module).SerializeToString())
    if "saved_model" in formats:
        files["saved_model"] = out_dir / SAVED_MODEL_DIR
        if files["saved_model"].exists():
            shutil.rmtree(files["saved_model"])  # a stale variables/ folder must not survive a re-export
        signature = module.__call__.get_concrete_function()
        tf.saved_model.save(module, str(files["saved_model"]), signatures={"serving_default": signature})
    return files


def _check_options(score_threshold: float, iou_threshold: float, max_detections: int) -> None:
    if not 0.0 <= score_threshold < 1.0:
        raise ValueError(f"score_threshold must be in [0, 1), got {score_threshold}")
    if not 0.0 < iou_threshold <= 1.0:
        raise ValueError(f"iou_threshold must be in (0, 1], got {iou_threshold}")
    if max_detections < 1:
        raise ValueError(f"max_detections must be >= 1, got {max_detections}")
