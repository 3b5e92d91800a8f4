"""The exported detector as one ONNX model: the network (via tf2onnx) plus post-processing in ONNX ops.

Same contract as the frozen graph: input `image_tensor` uint8 RGB [batch, H, W, 3] (batch and
size dynamic), outputs `detection_boxes` float32 [B, D, 4] "rel_yxyx" clipped to [0, 1],
`detection_scores` [B, D] descending, `detection_classes` [B, D] (ids 1..C as floats),
`num_detections` [B]; rows past num_detections are zeros.

Why not tf2onnx on the frozen graph itself: its CombinedNonMaxSuppression converter handles
only boxes shared across classes, and ours are per class (the Caffe pre-NMS top-k picks
different boxes for every class). So the network and the box decoding (`HeadsModule`) go
through tf2onnx, and the post-processing of `ssd.core.postprocess` is rebuilt here from
standard ONNX ops with the same semantics:

    per class: top `top_k` scores (TopK, stable), their boxes (GatherND)
    NonMaxSuppression with every (image, class) pair as its own "batch" row (strict IoU and
      score thresholds, as TensorFlow's kernel)
    kept scores scattered into a dense [B, C * top_k] matrix (others -1), TopK of it for the
      max_detections best per image; class = column // top_k + 1

ONNX Runtime, OpenVINO (which reads this file) and TensorRT's ONNX parser all implement these
ops, so a GPU user builds an engine from this file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

from ssd.core.postprocess import PostprocessOptions
from ssd.deploy.graph import HeadsModule, freeze
from ssd.detections import INPUT_NAME, OUTPUT_NAMES

OPSET = 17
ONNX_FILE = "model.onnx"
_BOXES, _SCORES = "raw_boxes", "raw_class_scores"  # the heads' outputs, inputs of the post-processing


def heads_to_onnx(heads: HeadsModule) -> onnx.ModelProto:
    """`HeadsModule` (decoded=True) -> ONNX: image_tensor -> raw_boxes, raw_class_scores."""
    import tf2onnx

    frozen = freeze(heads)
    graph_def = frozen.graph.as_graph_def()
    # The frozen function returns its dict flat in sorted-key order: boxes, class_scores.
    output_names = [t.name for t in frozen.outputs]
    model, _ = tf2onnx.convert.from_graph_def(graph_def, input_names=[frozen.inputs[0].name],
                                             output_names=output_names, opset=OPSET)
    rename = {frozen.inputs[0].name: INPUT_NAME, output_names[0]: _BOXES, output_names[1]: _SCORES}
    _rename_values(model.graph, rename)
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "batch"
    return model


def _rename_values(graph: onnx.GraphProto, rename: dict[str, str]) -> None:
    for value in [*graph.input, *graph.output]:
        value.name = rename.get(value.name, value.name)
    for node in graph.node:
        node.input[:] = [rename.get(name, name) for name in node.input]
        node.output[:] = [rename.get(name, name) for name in node.output]


def postprocess_model(num_anchors: int, num_classes: int, options: PostprocessOptions) -> onnx.ModelProto:
    """ONNX post-processing: raw_boxes [B, A, 4] "rel_yxyx", raw_class_scores [B, A, C + 1] -> OD API outputs."""
    k = min(options.top_k_per_class, num_anchors)
    width = max(num_classes * k, options.max_detections)  # dense columns; padded so TopK always has D
    consts = {
        "k": np.array([k], np.int64), "k_scalar": np.array(k, np.int64),
        "max_det": np.array([options.max_detections], np.int64),
        "iou": np.array([options.iou_threshold], np.float32),
        "score_thr": np.array([options.score_threshold], np.float32),
        "fg_start": np.array([1], np.int64), "fg_end": np.array([num_classes + 1], np.int64),
        "axis2": np.array([2], np.int64), "one": np.array(1, np.int64),
        "shape_flat_index": np.array([0, num_classes * k], np.int64),  # 0 copies the batch dim
        "shape_nms_boxes": np.array([-1, k, 4], np.int64), "shape_nms_scores": np.array([-1, 1, k], np.int64),
        "shape_flat": np.array([-1], np.int64), "shape_dense": np.array([-1, num_classes * k], np.int64),
        "pads": np.array([0, 0, 0, width - num_classes * k], np.int64),
        "fill": np.array(-1.0, np.float32), "zero": np.array(0.0, np.float32), "unit": np.array(1.0, np.float32),
        "last_index": np.array(num_classes * k - 1, np.int64), "col1": np.array([1], np.int64),
        "col2": np.array([2], np.int64), "col3": np.array([3], np.int64), "col0": np.array([0], np.int64), "axis1": np.array([1], np.int64),
        "minus_half": np.array(-0.5, np.float32),
    }  # fmt: skip
    n = helper.make_node
    nodes = [
        # Per class top-k candidates and their boxes.
        n("Slice", [_SCORES, "fg_start", "fg_end", "axis2"], ["fg_scores"]),  # [B, A, C]
        n("Transpose", ["fg_scores"], ["class_major"], perm=[0, 2, 1]),  # [B, C, A]
        n("TopK", ["class_major", "k"], ["top_scores", "top_index"], axis=-1, largest=1, sorted=1),  # [B, C, k]
        n("Reshape", ["top_index", "shape_flat_index"], ["top_index_flat"]),
        n("Unsqueeze", ["top_index_flat", "axis2"], ["top_index_nd"]),  # [B, C*k, 1]
        n("GatherND", [_BOXES, "top_index_nd"], ["top_boxes"], batch_dims=1),  # [B, C*k, 4]
        # One NMS "batch" row per (image, class).
        n("Reshape", ["top_boxes", "shape_nms_boxes"], ["nms_boxes"]),  # [B*C, k, 4]
        n("Reshape", ["top_scores", "shape_nms_scores"], ["nms_scores"]),  # [B*C, 1, k]
        n("NonMaxSuppression", ["nms_boxes", "nms_scores", "k", "iou", "score_thr"], ["selected"],
          center_point_box=0),  # [M, 3]: row, 0, candidate
        n("Slice", ["selected", "col0", "col1", "axis1"], ["sel_row"]),
        n("Slice", ["selected", "col2", "col3", "axis1"], ["sel_candidate"]),
        n("Mul", ["sel_row", "k_scalar"], ["sel_base"]),
        n("Add", ["sel_base", "sel_candidate"], ["sel_flat"]),  # [M, 1] index into B*C*k
        n("Reshape", ["top_scores", "shape_flat"], ["flat_scores"]),
        n("GatherND", ["flat_scores", "sel_flat"], ["kept_scores"]),  # [M]
        n("Shape", ["flat_scores"], ["flat_shape"]),
        n("ConstantOfShape", ["flat_shape"], ["minus_ones"], value=helper.make_tensor("v", TensorProto.FLOAT, [1], [-1.0])),
        n("ScatterND", ["minus_ones", "sel_flat", "kept_scores"], ["dense_flat"]),
        n("Reshape", ["dense_flat", "shape_dense"], ["dense_unpadded"]),  # [B, C*k]
        n("Pad", ["dense_unpadded", "pads", "fill"], ["dense"]),  # [B, width]
        # The best max_detections of all classes per image.
        n("TopK", ["dense", "max_det"], ["final_scores", "final_index"], axis=-1, largest=1, sorted=1),
        n("Greater", ["final_scores", "minus_half"], ["valid"]),  # kept scores are >= 0, fill is -1
        n("Div", ["final_index", "k_scalar"], ["class_index"]),
        n("Add", ["class_index", "one"], ["class_id"]),
        n("Cast", ["class_id"], ["class_float"], to=TensorProto.FLOAT),
        n("Where", ["valid", "class_float", "zero"], [OUTPUT_NAMES[2]]),
        n("Where", ["valid", "final_scores", "zero"], [OUTPUT_NAMES[1]]),
        n("Min", ["final_index", "last_index"], ["box_index"]),  # padded columns point past the boxes
        n("Unsqueeze", ["box_index", "axis2"], ["box_index_nd"]),
        n("GatherND", ["top_boxes", "box_index_nd"], ["final_boxes"], batch_dims=1),  # [B, D, 4]
        n("Clip", ["final_boxes", "zero", "unit"], ["clipped_boxes"]),
        n("Unsqueeze", ["valid", "axis2"], ["valid_boxes"]),
        n("Where", ["valid_boxes", "clipped_boxes", "zero"], [OUTPUT_NAMES[0]]),
        n("Cast", ["valid"], ["valid_float"], to=TensorProto.FLOAT),
        n("ReduceSum", ["valid_float", "axis1"], [OUTPUT_NAMES[3]], keepdims=0),
    ]
    initializers = [onnx.numpy_helper.from_array(value, name) for name, value in consts.items()]
    d = options.max_detections
    graph = helper.make_graph(
        nodes, "ssd_postprocess",
        inputs=[helper.make_tensor_value_info(_BOXES, TensorProto.FLOAT, ["batch", num_anchors, 4]),
                helper.make_tensor_value_info(_SCORES, TensorProto.FLOAT, ["batch", num_anchors, num_classes + 1])],
        outputs=[helper.make_tensor_value_info(OUTPUT_NAMES[0], TensorProto.FLOAT, ["batch", d, 4]),
                 helper.make_tensor_value_info(OUTPUT_NAMES[1], TensorProto.FLOAT, ["batch", d]),
                 helper.make_tensor_value_info(OUTPUT_NAMES[2], TensorProto.FLOAT, ["batch", d]),
                 helper.make_tensor_value_info(OUTPUT_NAMES[3], TensorProto.FLOAT, ["batch"])],
        initializer=initializers,
    )  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])


def detector_to_onnx(heads: HeadsModule) -> onnx.ModelProto:
    """The whole detector: `heads_to_onnx(heads)`, then `postprocess_model` with its detector's options; checked."""
    detector = heads.detector
    front = heads_to_onnx(heads)
    post = postprocess_model(len(detector.anchors), len(detector.config.class_names), detector.options)
    post.ir_version = front.ir_version
    model = onnx.compose.merge_models(front, post, io_map=[(_BOXES, _BOXES), (_SCORES, _SCORES)])
    model.graph.name = "ssd_detector"
    onnx.checker.check_model(model)
    return model


def write_onnx(heads: HeadsModule, path: str | Path) -> Path:
    """Write the whole detector of `heads` as ONNX to `path`."""
    path = Path(path)
    path.write_bytes(detector_to_onnx(heads).SerializeToString())
    return path
