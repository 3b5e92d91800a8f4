"""The floor under every export format: the graphs the writers convert, and freezing them.

    ExportModule   `image_tensor` uint8 RGB [batch, any H, any W, 3] -> `Detector` (the in-graph
                   resize, the network, `postprocess`) -> the Object Detection API outputs, named;
                   what the frozen graph and the SavedModel hold
    HeadsModule    the same input -> the network without NMS, for the runtimes whose own ops do
                   the post-processing (ONNX, TFLite)
    freeze         a module's concrete function with its variables folded into constants

The writers (`ssd.deploy.export`, `ssd.deploy.onnx_export`, `ssd.deploy.tflite_export`) import
this module; it imports none of them.
"""

from __future__ import annotations

import keras
import tensorflow as tf
from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

from ssd.config import ModelConfig
from ssd.core.boxes import xyxy_to_yxyx
from ssd.core.encoding import decode
from ssd.core.postprocess import PostprocessOptions
from ssd.detections import INPUT_NAME, OUTPUT_NAMES
from ssd.modeling.inference import Detector


def image_signature(batch: int | None = None) -> tuple[tf.TensorSpec]:
    """The input of every exported graph: uint8 RGB [batch, any H, any W, 3] named `image_tensor`."""
    return (tf.TensorSpec([batch, None, None, 3], tf.uint8, name=INPUT_NAME),)


class ExportModule(tf.Module):
    """`detector` behind the export's input signature, its outputs under the Object Detection API names."""

    def __init__(self, detector: Detector):
        super().__init__(name="ssd_export")
        self.detector = detector

    @tf.function(input_signature=image_signature())
    def __call__(self, image_tensor: tf.Tensor) -> dict[str, tf.Tensor]:
        outputs = self.detector(image_tensor)
        # Named identities give the frozen graph the Object Detection API's tensor names.
        return {name: tf.identity(outputs[name], name=name) for name in OUTPUT_NAMES}


def export_module(model: keras.Model, config: ModelConfig, options: PostprocessOptions | None = None) -> ExportModule:
    """The exported graph of `model` as a tf.Module (before freezing), `options` baked in."""
    return ExportModule(Detector(model, config, options))


class HeadsModule(tf.Module):
    """`detector`'s network without NMS, for runtimes whose own op does the post-processing.

    uint8 RGB [batch, any H, any W, 3] -> resize -> model -> `class_scores` float32 [B, A, C + 1]
    (softmax, column 0 is background) and, with decoded=True, `boxes` float32 [B, A, 4]
    "rel_yxyx" (unclipped), else `box_deltas` float32 [B, A, 4] (tx, ty, tw, th) of
    `detector.anchors`. batch=None leaves the batch dynamic.
    """

    def __init__(self, detector: Detector, batch: int | None = None, decoded: bool = True):
        super().__init__(name="ssd_heads")
        self.detector, self.decoded = detector, decoded
        self.__call__ = tf.function(self._call, input_signature=image_signature(batch))

    def _call(self, image_tensor: tf.Tensor) -> dict[str, tf.Tensor]:
        outputs = self.detector.head_outputs(image_tensor)
        scores = tf.nn.softmax(outputs["class_logits"], axis=-1)
        if not self.decoded:
            return {"box_deltas": outputs["box_deltas"], "class_scores": scores}
        anchors = self.detector.anchors
        return {"boxes": xyxy_to_yxyx(decode(outputs["box_deltas"], anchors.boxes, anchors.variances)),
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
