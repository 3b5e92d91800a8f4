"""Export a trained run as the TensorFlow Object Detection API does: frozen graph, SavedModel, and other formats.

The exported graph (`ssd.deploy.graph.ExportModule`) is the library's `ssd.modeling.inference.Detector`:
it takes `image_tensor` (uint8 RGB [batch, any H, any W, 3]), warps every image to the model's
S x S input inside the graph (bilinear, no antialiasing: training's cv2.resize INTER_LINEAR),
runs the network and `ssd.core.postprocess` with the export's `PostprocessOptions`, and returns

    detection_boxes    float32 [batch, max_detections, 4], "rel_yxyx" (normalised ymin, xmin, ymax, xmax)
    detection_scores   float32 [batch, max_detections], descending
    detection_classes  float32 [batch, max_detections], ids 1..C
    num_detections     float32 [batch]

Boxes are normalised, so they apply unchanged to the original (un-resized) image.

    out_dir/frozen_inference_graph.pb   GraphDef, variables folded into constants
    out_dir/saved_model/                signature "serving_default", same names
    out_dir/label_map.pbtxt, labels.txt class names (ids 1..C)
    out_dir/export.json                 the input size S, preset and the PostprocessOptions of every format
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

import numpy as np
import tensorflow as tf

from ssd.core.postprocess import PostprocessOptions
from ssd.deploy.graph import ExportModule, HeadsModule, frozen_graph_def
from ssd.deploy.runtimes import DEFAULT_FORMATS, FORMATS, INT8_FORMATS, IR_FILE, IR_INT8_FILE
from ssd.detections import EXPORT_INFO_FILE, GRAPH_FILE, LABEL_MAP_FILE, LABELS_FILE, SAVED_MODEL_DIR
from ssd.modeling.inference import Detector
from ssd.modeling.model import fold_channel_flip
from ssd.modeling.run_dir import load_trained_model


def write_label_map(path: str | Path, class_names: tuple[str, ...]) -> None:
    """TF Object Detection API label map (pbtxt): item { id: 1 name: 'circle' display_name: 'circle' }."""
    items = []
    for class_id, name in enumerate(class_names, start=1):
        quoted = name.replace("\\", "\\\\").replace("'", "\\'")
        items.append(f"item {{\n  id: {class_id}\n  name: '{quoted}'\n  display_name: '{quoted}'\n}}\n")
    Path(path).write_text("".join(items))


def write_export_info(path: str | Path, detector: Detector) -> None:
    """The graph's input size, preset and the post-processing every format bakes in, as JSON (`EXPORT_INFO_FILE`)."""
    config = detector.config
    info = {"image_size": config.image_size, "preset": config.preset, "width": config.width,
            "postprocess": detector.options.to_dict()}
    Path(path).write_text(json.dumps(info, indent=2) + "\n")


def write_labels(path: str | Path, class_names: tuple[str, ...]) -> None:
    """One class name per line; line k (1-based) is class id k."""
    Path(path).write_text("".join(f"{name}\n" for name in class_names))


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
    model, config = load_trained_model(run_dir, checkpoint)
    detector = Detector(fold_channel_flip(model), config, options)
    result = ExportResult(Path(out_dir), tuple(config.class_names))
    result.out_dir.mkdir(parents=True, exist_ok=True)
    write_label_map(result.label_map_path, result.class_names)
    write_labels(result.labels_path, result.class_names)
    write_export_info(result.info_path, detector)
    if {"frozen", "saved_model"} & set(formats):
        result.files.update(write_tf_formats(ExportModule(detector), result.out_dir, formats))
    if {"onnx", "openvino"} & set(formats):
        from ssd.deploy.onnx_export import ONNX_FILE, write_onnx

        result.files["onnx"] = write_onnx(HeadsModule(detector), result.out_dir / ONNX_FILE)
    if "openvino" in formats:
        from ssd.deploy.openvino_export import write_int8_ir, write_ir

        result.files["openvino"] = write_ir(result.files["onnx"], result.out_dir / IR_FILE)
        if calibration is not None:
            result.files["openvino_int8"] = write_int8_ir(result.files["openvino"], result.out_dir / IR_INT8_FILE,
                                                          calibration)
    if "tflite" in formats:
        from ssd.deploy.tflite_export import TFLITE_FILE, TFLITE_INT8_FILE, write_tflite

        result.files["tflite"] = write_tflite(detector, result.out_dir / TFLITE_FILE)
        if calibration is not None:
            result.files["tflite_int8"] = write_tflite(detector, result.out_dir / TFLITE_INT8_FILE, calibration)
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
