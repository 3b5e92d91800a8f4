"""The exported detector as TFLite, post-processing on TFLite's own `TFLite_Detection_PostProcess` op.

The standard interpreter registers that op (it is what the Object Detection API's
export_tflite_ssd_graph emits), so no Flex delegate is needed. It is wired as the Object
Detection API does in TF2: an empty `tf.function` whose `experimental_implements` attribute
names the op and its attributes; the converter replaces it by the op. Its inputs:

    box_encodings      float32 [1, A, 4] (ty, tx, th, tw): our deltas (tx, ty, tw, th) reordered
    class_predictions  float32 [1, A, C + 1] softmax scores, column 0 background
    anchors            float32 [A, 4] (ycenter, xcenter, h, w), a constant

with y/x/h/w scales 10, 10, 5, 5 = 1 / our variances (0.1, 0.1, 0.2, 0.2) and regular
(per-class) NMS. Its outputs keep the op's own convention, as the Object Detection API's TFLite
models do: detection_classes 0..C-1 and boxes unclipped (no ops after the custom op, so INT8
quantization cannot touch them); `to_contract` turns them into the detections contract of
`ssd.detections` (ids 1..C, boxes clipped to [0, 1], zero rows past num_detections). Batch 1.

Differences from `ssd.core.postprocess` (the TF graph): the op's NMS has no pre-NMS top-k per
class (Caffe's 400) and keeps a score >= the threshold (TF: >). On a trained model these
rarely matter; the benchmark reports the deviation.

INT8 (`int8=True`): full-integer post-training quantization calibrated on uint8 images at the
model's input size; the post-processing op stays float (it dequantizes its inputs).
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from ssd.config import ModelConfig
from ssd.deploy.export import HeadsModule, PostprocessOptions, freeze
from ssd.detections import INPUT_NAME, OUTPUT_NAMES

TFLITE_FILE, TFLITE_INT8_FILE = "model.tflite", "model_int8.tflite"


def _implements(num_classes: int, options: PostprocessOptions, variances) -> str:
    """The `experimental_implements` string that the converter turns into TFLite_Detection_PostProcess."""
    attrs = {
        "max_detections": ("i", options.max_detections),
        "max_classes_per_detection": ("i", 1),
        "detections_per_class": ("i", options.max_detections),
        "use_regular_nms": ("b", "true"),
        "nms_score_threshold": ("f", options.score_threshold),
        "nms_iou_threshold": ("f", options.iou_threshold),
        "y_scale": ("f", 1.0 / variances[1]), "x_scale": ("f", 1.0 / variances[0]),
        "h_scale": ("f", 1.0 / variances[3]), "w_scale": ("f", 1.0 / variances[2]),
        "num_classes": ("i", num_classes),
    }  # fmt: skip
    return " ".join(['name: "TFLite_Detection_PostProcess"'] +
                    [f'attr {{ key: "{key}" value {{ {kind}: {value} }} }}' for key, (kind, value) in attrs.items()])


class TFLiteModule(tf.Module):
    """uint8 RGB [1, H, W, 3] -> `HeadsModule` deltas and scores -> TFLite_Detection_PostProcess."""

    def __init__(self, model: keras.Model, config: ModelConfig, options: PostprocessOptions):
        super().__init__(name="ssd_tflite")
        heads = HeadsModule(model, config, batch=1, decoded=False)
        # Weights folded into constants here: the SavedModel route would otherwise keep resource
        # variables, which the interpreter reads as uninitialised (no detections, calibration fails).
        self._heads = freeze(heads)
        self._head_names = sorted(heads.__call__.get_concrete_function().structured_outputs)
        anchors = heads.anchors.numpy()  # "rel_center_xywh"
        self.anchors_yxhw = tf.constant(anchors[:, [1, 0, 3, 2]])

        @tf.function(experimental_implements=_implements(len(config.class_names), options,
                                                         config.default_boxes.variances))
        def detection_postprocess(box_encodings, class_predictions, anchors):  # noqa: ARG001
            # A placeholder body: the converter replaces the whole function by the op.
            zero = tf.constant(0.0, tf.float32)
            return zero, zero, zero, zero

        self._postprocess = detection_postprocess
        self.__call__ = tf.function(
            self._call, input_signature=(tf.TensorSpec([1, None, None, 3], tf.uint8, name=INPUT_NAME),))

    def _call(self, image_tensor: tf.Tensor) -> dict[str, tf.Tensor]:
        heads = dict(zip(self._head_names, self._heads(image_tensor)))
        encodings = tf.gather(heads["box_deltas"], [1, 0, 3, 2], axis=-1)  # (tx, ty, tw, th) -> (ty, tx, th, tw)
        boxes, classes, scores, num = self._postprocess(encodings, heads["class_scores"], self.anchors_yxhw)
        return dict(zip(OUTPUT_NAMES, (boxes, scores, classes, num)))


def to_contract(outputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The op's outputs (classes 0..C-1, boxes unclipped) -> the detections contract (1..C, clipped, zero rows)."""
    valid = np.arange(outputs["detection_scores"].shape[-1])[None, :] < outputs["num_detections"][:, None]
    return {
        "detection_boxes": np.where(valid[..., None], np.clip(outputs["detection_boxes"], 0.0, 1.0), 0.0),
        "detection_scores": np.where(valid, outputs["detection_scores"], 0.0),
        "detection_classes": np.where(valid, outputs["detection_classes"] + 1.0, 0.0),
        "num_detections": outputs["num_detections"],
    }


def convert(module: TFLiteModule, calibration: Iterable[np.ndarray] | None = None) -> bytes:
    """TFLite flatbuffer of `module`; INT8 when `calibration` images (uint8 [H, W, 3]) are given.

    Converted through a SavedModel, as the Object Detection API does: freezing the function
    first would inline the post-processing placeholder and lose its `experimental_implements`.
    """
    with tempfile.TemporaryDirectory() as tmp:
        signature = module.__call__.get_concrete_function()
        tf.saved_model.save(module, tmp, signatures={"serving_default": signature})
        converter = tf.lite.TFLiteConverter.from_saved_model(tmp)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        converter.allow_custom_ops = True  # TFLite_Detection_PostProcess: a custom op the interpreter ships
        if calibration is not None:
            images = [np.asarray(image, np.uint8)[None] for image in calibration]
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.representative_dataset = lambda: ([image] for image in images)
        return converter.convert()


def write_tflite(model: keras.Model, config: ModelConfig, options: PostprocessOptions, path: str | Path,
                 calibration: Iterable[np.ndarray] | None = None) -> Path:
    """Write the TFLite detector (INT8 with `calibration`) to `path`."""
    path = Path(path)
    path.write_bytes(convert(TFLiteModule(model, config, options), calibration))
    return path
