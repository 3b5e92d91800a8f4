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
quantization cannot touch them); the runtime (`ssd.deploy.runtimes.tflite_to_contract`) turns them
into the detections contract of `ssd.detections` (ids 1..C, boxes clipped to [0, 1], zero rows past
num_detections). Batch 1.

Differences from `ssd.core.postprocess` (the TF graph): the op's NMS has no pre-NMS top-k per
class (Caffe's 400) and keeps a score >= the threshold (TF: >). On a trained model these
rarely matter; the benchmark reports the deviation.

INT8 (`convert(..., calibration)`): post-training quantization calibrated on uint8 images at the
model's input size, every convolution int8 but conv4_3. Kept float (`FLOAT_OPS`, and conv4_3),
with the VOC07 mAP points that quantizing each one alone cost a trained width-0.25 model (against
TFLite fp32's 32.67; with all of them float the INT8 model scores +0.26):

    L2_NORMALIZATION  conv4_3's: TFLite's int8 kernel has a fixed output scale of 1/128, while
                      the values after normalising are ~0.04 (5.6 points).
    conv4_3           its int8 output leaves the pixels of small norm a few levels, which the
                      normalisation then scales up to unit length (6.9 points).
    SUB               the mean subtraction: in float, conv1_1's input is rounded once.
    REVERSE_V2        the RGB -> BGR flip, in a model whose flip is not folded into conv1_1
                      (`ssd.modeling.model.fold_channel_flip`; exports fold it). Quantized, it
                      copies its int8 bytes but declares another scale than its input's: the
                      network saw about 1.5 * (pixel - 83) instead of the pixel (3.8 points).

The post-processing op stays float too (it dequantizes its inputs), and so does the resize in front
of the network. conv4_3 in float costs the full-width INT8 model about a fifth of its speed.
"""

from __future__ import annotations

import tempfile
import warnings
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import tensorflow as tf

from ssd.core.anchors import Anchors
from ssd.core.postprocess import PostprocessOptions
from ssd.deploy.graph import HeadsModule, freeze, image_signature
from ssd.detections import OUTPUT_NAMES
from ssd.modeling.inference import Detector

TFLITE_FILE, TFLITE_INT8_FILE = "model.tflite", "model_int8.tflite"
# TFLite builtin ops kept float in the INT8 model (see the module docstring); conv4_3 too, found
# as the op feeding L2_NORMALIZATION (`_feeding`).
FLOAT_OPS = ("L2_NORMALIZATION", "SUB", "REVERSE_V2")


def _implements(num_classes: int, options: PostprocessOptions, anchors: Anchors) -> str:
    """The `experimental_implements` string that the converter turns into TFLite_Detection_PostProcess."""
    variances = anchors.variances
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

    def __init__(self, detector: Detector):
        super().__init__(name="ssd_tflite")
        heads = HeadsModule(detector, batch=1, decoded=False)
        # Weights folded into constants here: the SavedModel route would otherwise keep resource
        # variables, which the interpreter reads as uninitialised (no detections, calibration fails).
        self._heads = freeze(heads)
        self._head_names = sorted(heads.__call__.get_concrete_function().structured_outputs)
        self.anchors_yxhw = tf.constant(detector.anchors.boxes[:, [1, 0, 3, 2]])  # from "rel_center_xywh"

        @tf.function(experimental_implements=_implements(len(detector.config.class_names), detector.options,
                                                         detector.anchors))
        def detection_postprocess(box_encodings, class_predictions, anchors):  # noqa: ARG001
            # A placeholder body: the converter replaces the whole function by the op.
            zero = tf.constant(0.0, tf.float32)
            return zero, zero, zero, zero

        self._postprocess = detection_postprocess
        self.__call__ = tf.function(self._call, input_signature=image_signature(batch=1))

    def _call(self, image_tensor: tf.Tensor) -> dict[str, tf.Tensor]:
        heads = dict(zip(self._head_names, self._heads(image_tensor)))
        encodings = tf.gather(heads["box_deltas"], [1, 0, 3, 2], axis=-1)  # (tx, ty, tw, th) -> (ty, tx, th, tw)
        boxes, classes, scores, num = self._postprocess(encodings, heads["class_scores"], self.anchors_yxhw)
        return dict(zip(OUTPUT_NAMES, (boxes, scores, classes, num)))


def convert(module: TFLiteModule, calibration: Iterable[np.ndarray] | None = None) -> bytes:
    """TFLite flatbuffer of `module`; INT8 when `calibration` images (uint8 [H, W, 3]) are given.

    Converted through a SavedModel, as the Object Detection API does: freezing the function
    first would inline the post-processing placeholder and lose its `experimental_implements`.
    """
    images = None if calibration is None else [np.asarray(image, np.uint8)[None] for image in calibration]
    if images is not None and not images:
        raise ValueError("INT8 calibration needs at least one image, got none")
    with tempfile.TemporaryDirectory() as tmp:
        signature = module.__call__.get_concrete_function()
        tf.saved_model.save(module, tmp, signatures={"serving_default": signature})
        converter = tf.lite.TFLiteConverter.from_saved_model(tmp)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        converter.allow_custom_ops = True  # TFLite_Detection_PostProcess: a custom op the interpreter ships
        if images is None:
            return converter.convert()
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([image] for image in images)
        return _quantize_all_but_float_ops(converter, images)


def _quantize_all_but_float_ops(converter: tf.lite.TFLiteConverter, images: list[np.ndarray]) -> bytes:
    """Calibrate with `converter`, then quantize every op but `FLOAT_OPS` and the convolution feeding the L2 norm.

    The QuantizationDebugger is TFLite's route to selective quantization. It calibrates once, on
    construction, and keeps the calibrated float model, from which the convolution's output tensor
    name is read; setting its options then quantizes again from the same calibration.
    """
    debug_options = tf.lite.experimental.QuantizationDebugOptions
    with warnings.catch_warnings():  # the debugger runs tf.lite.Interpreter inside: deprecated, no LiteRT twin
        warnings.filterwarnings("ignore", "(?s).*tf.lite.Interpreter is deprecated", UserWarning)
        debugger = tf.lite.experimental.QuantizationDebugger(
            converter=converter, debug_dataset=lambda: ([image] for image in images),
            debug_options=debug_options(denylisted_ops=list(FLOAT_OPS)))
        conv4_3 = _feeding(debugger.calibrated_model, "L2_NORMALIZATION")
        if len(conv4_3) != 1:  # the converter no longer fuses conv4_3_norm: INT8 would silently lose mAP
            raise RuntimeError(f"expected one op feeding TFLite's L2_NORMALIZATION (conv4_3), found {len(conv4_3)}")
        debugger.options = debug_options(denylisted_ops=list(FLOAT_OPS), denylisted_nodes=conv4_3)
        return debugger.get_nondebug_quantized_model()


def _feeding(model_content: bytes, op_name: str) -> list[str]:
    """Output tensor names of the ops whose outputs feed an `op_name` op in a TFLite flatbuffer."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=model_content)
    # The op list is private API, but the only one; the QuantizationDebugger reads it too.
    ops, tensors = interpreter._get_ops_details(), interpreter.get_tensor_details()  # noqa: SLF001
    wanted = {i for op in ops if op["op_name"] == op_name for i in op["inputs"]}
    return [tensors[op["outputs"][0]]["name"] for op in ops if wanted & set(op["outputs"])]


def write_tflite(detector: Detector, path: str | Path, calibration: Iterable[np.ndarray] | None = None) -> Path:
    """Write `detector` as TFLite (INT8 with `calibration`) to `path`, its options on the op."""
    path = Path(path)
    path.write_bytes(convert(TFLiteModule(detector), calibration))
    return path
