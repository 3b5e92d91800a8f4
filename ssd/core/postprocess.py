"""Detection output in the graph: softmax, decode, per-class top-k + NMS, top detections per image.

The rule is the Caffe release's DetectionOutput layer: per class (background skipped) keep the
scores above `score_threshold`, take the `top_k_per_class` best, run greedy NMS at
`iou_threshold` on them, then keep the `max_detections` best of all classes per image.

Implementation: `tf.math.top_k` pre-selects the top-k candidates of every class (Caffe's
pre-NMS top-k; `tf.image.combined_non_max_suppression` alone would run NMS over *all*
candidates and cap the survivors instead, which keeps different boxes), then one
`combined_non_max_suppression` call does the threshold, the per-class NMS and the cross-class
top `max_detections` for the whole batch in one C++ kernel. Semantics, as in Caffe:
a candidate is kept only if its score is strictly greater than `score_threshold`, and it is
suppressed by a kept box of the same class only if their IoU is strictly greater than
`iou_threshold`; ties in score go to the lower default-box index (top_k is stable).

Boxes: NMS runs on the unclipped decoded boxes (Caffe decodes without clipping); the returned
boxes are then clipped to [0, 1], as Caffe clips before writing results in pixels
(`OutputBBox`), so `detections_to_pixels` of them lies inside the image.

Only standard TensorFlow ops, static output shapes, no XLA: works eagerly, in a tf.function and
inside an exported frozen graph. Outputs follow the TensorFlow Object Detection API.

`PostprocessOptions` holds the settings once for the detector, every export and every CLI.
TensorFlow is imported on the first `postprocess` call, so a CLI reads the defaults for its
--help without loading it.
"""

from __future__ import annotations

import dataclasses
import numbers
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ssd.core.anchors import Anchors

if TYPE_CHECKING:
    import tensorflow as tf


@dataclass(frozen=True)
class PostprocessOptions:
    """The detection-output settings, one value from the library's detector to every export and CLI.

    Defaults and meaning are the Caffe release's DetectionOutput (ssd_pascal.py): per class keep
    scores > `score_threshold`, the `top_k_per_class` best go to NMS at `iou_threshold`, then
    the `max_detections` best of all classes per image.
    """

    score_threshold: float = 0.01
    iou_threshold: float = 0.45
    top_k_per_class: int = 400
    max_detections: int = 200

    def __post_init__(self) -> None:
        if not (_is(numbers.Real, self.score_threshold) and 0.0 <= self.score_threshold < 1.0):
            raise ValueError(f"PostprocessOptions.score_threshold must be in [0, 1), got {self.score_threshold!r}")
        # Caffe allows 0 (any overlap suppresses); above 1 nothing could be suppressed.
        if not (_is(numbers.Real, self.iou_threshold) and 0.0 <= self.iou_threshold <= 1.0):
            raise ValueError(f"PostprocessOptions.iou_threshold must be in [0, 1], got {self.iou_threshold!r}")
        for name in ("top_k_per_class", "max_detections"):
            value = getattr(self, name)  # the graph's output shapes: static, so no Caffe-style -1 for "all"
            if not (_is(numbers.Integral, value) and value >= 1):
                raise ValueError(f"PostprocessOptions.{name} must be an integer >= 1, got {value!r}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PostprocessOptions:
        """The inverse of `to_dict`; ValueError naming any unknown key."""
        unknown = sorted(set(data) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ValueError(f"PostprocessOptions: unknown settings {unknown}; expected some of "
                             f"{[f.name for f in dataclasses.fields(cls)]}")
        return cls(**data)


def _is(kind: type, value: Any) -> bool:
    """`value` is a number of `kind` (numbers.Real, numbers.Integral), a bool not counting as one."""
    return isinstance(value, kind) and not isinstance(value, bool)


def postprocess(
    box_deltas: tf.Tensor,
    class_logits: tf.Tensor,
    anchors: Anchors,
    options: PostprocessOptions | None = None,
) -> dict[str, tf.Tensor]:
    """Raw head outputs -> padded detections per image.

    Args:
        box_deltas: float [B, A, 4], offsets (tx, ty, tw, th) from the default boxes.
        class_logits: float [B, A, C + 1], class 0 is background.
        anchors: the A default boxes the offsets are from, with their variances.
        options: the thresholds and counts; `PostprocessOptions()` if None.
    Returns:
        dict of
        detection_boxes float32 [B, D, 4], "rel_yxyx" clipped to [0, 1];
        detection_scores float32 [B, D], descending;
        detection_classes float32 [B, D], ids 1..C (float, as the Object Detection API);
        num_detections float32 [B]; rows past num_detections are zeros. D = options.max_detections.
    """
    import tensorflow as tf

    from ssd.core.boxes import xyxy_to_yxyx
    from ssd.core.encoding import decode

    options = options or PostprocessOptions()
    box_deltas = tf.convert_to_tensor(box_deltas, tf.float32)
    class_logits = tf.convert_to_tensor(class_logits, tf.float32)
    _check_shapes(box_deltas, class_logits, len(anchors))
    k = min(options.top_k_per_class, len(anchors))
    max_detections = options.max_detections

    boxes = decode(box_deltas, anchors.boxes, anchors.variances)  # [B, A, 4] "rel_xyxy"
    scores = tf.nn.softmax(class_logits, axis=-1)[..., 1:]  # [B, A, C]
    # Scores at or below the threshold can never be kept; zeroing them first makes top_k about
    # three times faster (few heap insertions) without changing which candidates survive.
    scores = tf.where(scores > options.score_threshold, scores, 0.0)
    # sorted=True: equal scores keep the lower default-box index first, as Caffe's stable sort.
    top_scores, top_index = tf.math.top_k(tf.transpose(scores, [0, 2, 1]), k=k, sorted=True)  # [B, C, k]
    top_boxes = tf.gather(boxes, top_index, batch_dims=1)  # [B, C, k, 4]

    # combined NMS wants boxes [B, N, q, 4] and scores [B, N, C]: candidate n of class c.
    nms = tf.image.combined_non_max_suppression(
        boxes=tf.transpose(top_boxes, [0, 2, 1, 3]),
        scores=tf.transpose(top_scores, [0, 2, 1]),
        max_output_size_per_class=k,
        max_total_size=max_detections,
        iou_threshold=options.iou_threshold,
        score_threshold=options.score_threshold,
        pad_per_class=False,
        clip_boxes=False,
    )
    # The kernel pads boxes, scores and classes with zeros past valid_detections; only the
    # class ids need care, shifting 0..C-1 to 1..C on the valid rows alone.
    num = nms.valid_detections
    valid = tf.range(max_detections)[None, :] < num[:, None]  # [B, max_detections]
    return {
        "detection_boxes": xyxy_to_yxyx(tf.clip_by_value(nms.nmsed_boxes, 0.0, 1.0)),
        "detection_scores": nms.nmsed_scores,
        "detection_classes": tf.where(valid, nms.nmsed_classes + 1.0, 0.0),
        "num_detections": tf.cast(num, tf.float32),
    }


def _check_shapes(box_deltas: tf.Tensor, class_logits: tf.Tensor, num_anchors: int) -> None:
    """Refuse head outputs whose static shapes do not describe the `num_anchors` default boxes."""
    if box_deltas.shape.rank != 3 or box_deltas.shape[1:] != (num_anchors, 4):
        raise ValueError(f"postprocess: box_deltas must be [B, {num_anchors}, 4], got {box_deltas.shape}")
    if class_logits.shape.rank != 3 or class_logits.shape[1] != num_anchors:
        raise ValueError(
            f"postprocess: class_logits must be [B, {num_anchors}, C + 1], got {class_logits.shape}"
        )
    if class_logits.shape[2] is None or class_logits.shape[2] < 2:
        raise ValueError(
            f"postprocess: class_logits needs background plus at least one class, got {class_logits.shape}"
        )
