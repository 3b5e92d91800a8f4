"""Tests for ssd.core.postprocess: the graph post-processing against a NumPy brute force and by hand."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from ssd.core.anchors import Anchors
from ssd.core.postprocess import PostprocessOptions, postprocess

VARIANCES = (0.1, 0.1, 0.2, 0.2)


# ---------------------------------------------------------------- NumPy reference (Caffe's rule)
def _iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one "xyxy" box with boxes [N, 4]."""
    iw = np.clip(np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0]), 0, None)
    ih = np.clip(np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1]), 0, None)
    inter = iw * ih
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return inter / ((box[2] - box[0]) * (box[3] - box[1]) + areas - inter)


def _reference_image(deltas, logits, anchors, thr, nms_thr, top_k, max_det):
    """One image: softmax, decode, per class threshold / top-k / greedy NMS, top max_det overall."""
    z = np.exp(logits - logits.max(1, keepdims=True))
    probs = z / z.sum(1, keepdims=True)
    cxy = deltas[:, :2] * np.array(VARIANCES[:2]) * anchors[:, 2:] + anchors[:, :2]
    wh = np.exp(deltas[:, 2:] * np.array(VARIANCES[2:])) * anchors[:, 2:]
    boxes = np.concatenate([cxy - wh / 2, cxy + wh / 2], 1)
    found, suppressed = [], 0  # found: (score, class, box)
    for c in range(1, probs.shape[1]):
        idx = np.flatnonzero(probs[:, c] > thr)
        idx = idx[np.argsort(-probs[idx, c], kind="stable")][:top_k]
        kept: list[int] = []
        for i in idx:
            if not kept or np.all(_iou(boxes[i], boxes[kept]) <= nms_thr):
                kept.append(i)
            else:
                suppressed += 1
        found += [(probs[i, c], c, boxes[i]) for i in kept]
    found.sort(key=lambda f: -f[0])
    return found[:max_det], suppressed


def _random_inputs(seed, batch, num_anchors, num_classes):
    rng = np.random.default_rng(seed)
    anchors = np.concatenate(
        [rng.uniform(0.1, 0.9, (num_anchors, 2)), rng.uniform(0.05, 0.4, (num_anchors, 2))], 1
    ).astype(np.float32)
    deltas = rng.normal(0, 0.7, (batch, num_anchors, 4)).astype(np.float32)
    logits = rng.normal(0, 2.0, (batch, num_anchors, num_classes + 1)).astype(np.float32)
    return deltas, logits, anchors


@pytest.mark.parametrize(
    "seed, top_k, max_det", [(0, 400, 200), (1, 12, 25), (2, 30, 8)], ids=["defaults", "topk-binds", "cap-binds"]
)
def test_matches_numpy_brute_force(seed, top_k, max_det):
    deltas, logits, anchors = _random_inputs(seed, batch=3, num_anchors=120, num_classes=4)
    options = PostprocessOptions(0.05, 0.45, top_k, max_det)
    out = {k: v.numpy() for k, v in postprocess(deltas, logits, Anchors(anchors, VARIANCES), options).items()}
    suppressions = 0
    for b in range(3):
        ref, suppressed = _reference_image(deltas[b].astype(np.float64), logits[b].astype(np.float64), anchors.astype(np.float64),
                               0.05, 0.45, top_k, max_det)
        n = int(out["num_detections"][b])
        assert n == len(ref)
        np.testing.assert_allclose(out["detection_scores"][b, :n], [r[0] for r in ref], atol=1e-5)
        np.testing.assert_array_equal(out["detection_classes"][b, :n], [r[1] for r in ref])
        ref_boxes = np.clip(np.array([r[2] for r in ref]), 0, 1)[:, [1, 0, 3, 2]]
        np.testing.assert_allclose(out["detection_boxes"][b, :n], ref_boxes, atol=1e-5)
        # Padding is zeros.
        assert not out["detection_scores"][b, n:].any() and not out["detection_boxes"][b, n:].any()
        assert not out["detection_classes"][b, n:].any()
        suppressions += suppressed
    assert suppressions > 0  # the random case does exercise NMS


# ---------------------------------------------------------------- hand-worked cases
def _run(boxes_xyxy, probs, **kwargs):
    """Zero deltas decode to the anchors themselves; log-probabilities softmax back to probs."""
    boxes = np.asarray(boxes_xyxy, np.float32)
    anchors = np.concatenate([(boxes[:, :2] + boxes[:, 2:]) / 2, boxes[:, 2:] - boxes[:, :2]], 1)
    logits = np.log(np.maximum(np.asarray(probs, np.float32), 1e-30))[None]
    deltas = np.zeros((1, len(boxes), 4), np.float32)
    out = postprocess(deltas, logits, Anchors(anchors, VARIANCES), PostprocessOptions(**kwargs))
    return {k: v.numpy()[0] for k, v in out.items()}


BOX_A = [0.1, 0.1, 0.5, 0.5]
BOX_B = [0.12, 0.1, 0.52, 0.5]  # IoU with A = 0.38 * 0.4 / (0.16 + 0.16 - 0.152) = 0.905
BOX_C = [0.6, 0.6, 0.9, 0.9]  # disjoint from A and B


def test_overlapping_boxes_of_one_class_keep_the_best():
    out = _run([BOX_A, BOX_B], [[0.1, 0.9, 0.0], [0.2, 0.8, 0.0]], max_detections=5)
    assert out["num_detections"] == 1
    np.testing.assert_allclose(out["detection_scores"], [0.9, 0, 0, 0, 0], atol=1e-6)
    np.testing.assert_array_equal(out["detection_classes"], [1, 0, 0, 0, 0])
    np.testing.assert_allclose(out["detection_boxes"][0], [0.1, 0.1, 0.5, 0.5], atol=1e-6)  # yxyx


def test_same_boxes_of_different_classes_are_both_kept():
    out = _run([BOX_A, BOX_B], [[0.1, 0.9, 0.0], [0.2, 0.0, 0.8]], max_detections=5)
    assert out["num_detections"] == 2
    np.testing.assert_allclose(out["detection_scores"][:2], [0.9, 0.8], atol=1e-6)
    np.testing.assert_array_equal(out["detection_classes"][:2], [1, 2])
    np.testing.assert_allclose(out["detection_boxes"][1], [0.1, 0.12, 0.5, 0.52], atol=1e-6)


def test_scores_at_or_below_threshold_are_dropped():
    out = _run([BOX_A, BOX_C], [[0.995, 0.005, 0.0], [0.5, 0.0, 0.5]], score_threshold=0.01, max_detections=3)
    assert out["num_detections"] == 1
    np.testing.assert_array_equal(out["detection_classes"], [2, 0, 0])


def test_top_k_is_applied_before_nms_as_in_caffe():
    # Class 1: A 0.5, B 0.4 (suppressed by A), C 0.3 (disjoint). With top_k 2 only A and B are
    # NMS candidates, so C never appears; NMS-then-cap would have kept A and C.
    probs = [[0.5, 0.5, 0.0], [0.6, 0.4, 0.0], [0.7, 0.3, 0.0]]
    out = _run([BOX_A, BOX_B, BOX_C], probs, top_k_per_class=2, max_detections=4)
    assert out["num_detections"] == 1
    out = _run([BOX_A, BOX_B, BOX_C], probs, top_k_per_class=3, max_detections=4)
    assert out["num_detections"] == 2
    np.testing.assert_allclose(out["detection_scores"][:2], [0.5, 0.3], atol=1e-6)


def test_max_detections_keeps_the_best_across_classes():
    probs = [[0.1, 0.9, 0.0], [0.3, 0.0, 0.7], [0.2, 0.8, 0.0]]
    out = _run([BOX_A, BOX_C, [0.0, 0.6, 0.2, 0.9]], probs, max_detections=2)
    np.testing.assert_allclose(out["detection_scores"], [0.9, 0.8], atol=1e-6)
    np.testing.assert_array_equal(out["detection_classes"], [1, 1])


def test_no_detections_gives_zero_count_and_zero_padding():
    out = _run([BOX_A, BOX_C], [[0.999, 0.0005, 0.0005], [1.0, 0.0, 0.0]], max_detections=4)
    assert out["num_detections"] == 0
    for key in ("detection_boxes", "detection_scores", "detection_classes"):
        assert not out[key].any()


def test_output_boxes_are_clipped_to_the_image():
    out = _run([[-0.2, 0.5, 0.4, 1.3]], [[0.1, 0.9]], max_detections=2)
    np.testing.assert_allclose(out["detection_boxes"][0], [0.5, 0.0, 1.0, 0.4], atol=1e-6)


# ---------------------------------------------------------------- graph properties
def test_static_shapes_and_dtypes_in_tf_function():
    deltas, logits, anchors = _random_inputs(3, batch=2, num_anchors=50, num_classes=3)
    fn = tf.function(
        lambda d, l: postprocess(d, l, Anchors(anchors, VARIANCES), PostprocessOptions(max_detections=7)),
        input_signature=[tf.TensorSpec([None, 50, 4], tf.float32), tf.TensorSpec([None, 50, 4], tf.float32)],
    )
    graph_out = fn.get_concrete_function().structured_outputs
    assert graph_out["detection_boxes"].shape.as_list() == [None, 7, 4]
    assert graph_out["detection_scores"].shape.as_list() == [None, 7]
    assert graph_out["detection_classes"].shape.as_list() == [None, 7]
    assert graph_out["num_detections"].shape.as_list() == [None]
    out = fn(deltas, logits)
    eager = postprocess(deltas, logits, Anchors(anchors, VARIANCES), PostprocessOptions(max_detections=7))
    for key, value in out.items():
        assert value.dtype == tf.float32
        # Graph and eager may fuse the decode differently: equal up to float32 rounding.
        np.testing.assert_allclose(value.numpy(), eager[key].numpy(), atol=1e-6)
    classes = out["detection_classes"].numpy()
    assert set(np.unique(classes[classes > 0])) <= {1.0, 2.0, 3.0}


def test_inputs_with_mismatched_shapes_are_refused():
    deltas, logits, anchors = _random_inputs(4, batch=1, num_anchors=10, num_classes=2)
    with pytest.raises(ValueError, match="box_deltas"):
        postprocess(deltas[:, :9], logits, Anchors(anchors, VARIANCES))
    with pytest.raises(ValueError, match="class_logits"):
        postprocess(deltas, logits[:, :, :1], Anchors(anchors, VARIANCES))


def test_equal_scores_keep_the_lower_default_box_index():
    # Caffe sorts stably: of two overlapping boxes with the same score the first one survives.
    tie = [[0.5, 0.5, 0.0], [0.5, 0.5, 0.0]]
    np.testing.assert_allclose(_run([BOX_A, BOX_B], tie, max_detections=2)["detection_boxes"][0], [0.1, 0.1, 0.5, 0.5], atol=1e-6)
    np.testing.assert_allclose(_run([BOX_B, BOX_A], tie, max_detections=2)["detection_boxes"][0], [0.1, 0.12, 0.5, 0.52], atol=1e-6)


# ---------------------------------------------------------------- the options value
def test_options_default_to_the_caffe_release_detection_output():
    # ssd_pascal.py: confidence_threshold 0.01, nms_threshold 0.45, top_k 400, keep_top_k 200.
    assert PostprocessOptions() == PostprocessOptions(0.01, 0.45, 400, 200)


@pytest.mark.parametrize("field, value", [
    ("score_threshold", -0.1), ("score_threshold", 1.0), ("iou_threshold", -0.01), ("iou_threshold", 1.5),
    ("top_k_per_class", 0), ("top_k_per_class", 2.5), ("max_detections", 0), ("max_detections", True),
    ("score_threshold", "0.1"), ("iou_threshold", float("nan")),
])
def test_bad_options_are_refused_naming_the_field(field, value):
    with pytest.raises(ValueError, match=rf"PostprocessOptions\.{field} must .* got {value!r}"):
        PostprocessOptions(**{field: value})


def test_iou_threshold_zero_is_allowed_as_in_caffe():
    # Caffe checks nms_threshold >= 0; at 0 any overlap suppresses, disjoint boxes survive.
    out = _run([BOX_A, BOX_B, BOX_C], [[0.1, 0.9, 0.0], [0.2, 0.8, 0.0], [0.3, 0.7, 0.0]],
               iou_threshold=0.0, max_detections=3)
    assert out["num_detections"] == 2
    np.testing.assert_allclose(out["detection_scores"][:2], [0.9, 0.7], atol=1e-6)


def test_options_round_trip_through_a_dict_and_refuse_unknown_keys():
    options = PostprocessOptions(0.2, 0.5, 30, 12)
    assert PostprocessOptions.from_dict(options.to_dict()) == options
    with pytest.raises(ValueError, match="unknown settings \\['nms'\\]"):
        PostprocessOptions.from_dict({"nms": 0.5})


def test_postprocess_without_options_takes_the_one_default(monkeypatch):
    deltas, logits, anchors = _random_inputs(5, batch=1, num_anchors=40, num_classes=2)
    monkeypatch.setattr(PostprocessOptions.__init__, "__defaults__", (0.01, 0.45, 400, 7))
    assert postprocess(deltas, logits, Anchors(anchors, VARIANCES))["detection_scores"].shape == (1, 7)
