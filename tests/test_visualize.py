"""ssd/visualize.py and the JSON records of ssd/frozen_graph.py, against hand-worked values."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from ssd.detections import detection_records
from ssd.visualize import class_colour, draw_detections

CLASSES = ("circle", "square", "triangle")


def test_box_outline_has_the_class_colour_and_its_inside_is_untouched():
    image = np.zeros((120, 200, 3), np.uint8)
    out = draw_detections(image, np.array([[20.4, 50.0, 120.0, 100.0]]), np.array([2]), np.array([0.9]), CLASSES)
    colour = class_colour(2)
    assert tuple(out[75, 20]) == colour  # left edge (x 20.4 rounds to 20), mid-height
    assert tuple(out[100, 70]) == colour  # bottom edge
    assert not out[60:95, 25:115].any()  # inside the box (below the label) stays black
    assert not image.any(), "the default draws on a copy"


def test_bgr_drawing_equals_rgb_drawing_with_channels_swapped():
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (90, 160, 3), dtype=np.uint8)
    boxes = np.array([[5, 30, 60, 80], [70.6, 10.2, 150, 70]], np.float64)
    classes, scores = np.array([1, 3]), np.array([0.51, 0.987])
    expected = cv2.cvtColor(draw_detections(rgb, boxes, classes, scores, CLASSES), cv2.COLOR_RGB2BGR)
    bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    drawn = draw_detections(bgr, boxes, classes, scores, CLASSES, bgr=True, in_place=True)
    assert drawn is bgr
    np.testing.assert_array_equal(drawn, expected)


def draw_directly(image: np.ndarray, boxes, classes, scores) -> np.ndarray:
    """Reference: each label rendered straight onto the image with OpenCV (no cached patches)."""
    out = image.copy()
    for (x1, y1, x2, y2), cls, score in zip(np.rint(boxes).astype(int).tolist(), classes, scores):
        colour = class_colour(cls)
        cv2.rectangle(out, (x1, y1), (x2, y2), colour, 1)
        text = f"{CLASSES[cls - 1]} {score:.2f}"
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.4, 1)
        top = max(y1 - th - base, 0)
        cv2.rectangle(out, (x1, top), (x1 + tw, top + th + base), colour, -1)
        cv2.putText(out, text, (x1, top + th), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    return out


@pytest.mark.parametrize("box", [
    [40, 50, 120, 100],  # label fully inside, above the box
    [40, 3, 120, 100],  # label pushed down to the top edge
    [170, 50, 199, 100],  # label runs past the right edge
    [-30, 50, 60, 100],  # box (and label) start left of the image
    [250, 50, 300, 100],  # box entirely outside
])  # fmt: skip
def test_pasted_labels_equal_labels_rendered_in_place(box):
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (120, 200, 3), dtype=np.uint8)
    boxes = np.array([box, [60, 40, 100, 90]], np.float64)  # the second label overlaps the first box
    classes, scores = [3, 1], [0.876, 0.5]
    np.testing.assert_array_equal(draw_detections(image, boxes, np.array(classes), np.array(scores), CLASSES),
                                  draw_directly(image, boxes, classes, scores))


def test_records_keep_scores_at_the_threshold_in_pixels_and_normalised_xyxy():
    outputs = {
        "detection_boxes": np.array([[[0.1, 0.2, 0.5, 0.6], [0.0, 0.0, 1.0, 1.0], [0.3, 0.3, 0.4, 0.4]]], np.float32),
        "detection_scores": np.array([[0.9, 0.5, 0.49]], np.float32),
        "detection_classes": np.array([[2.0, 4.0, 1.0]], np.float32),
        "num_detections": np.array([3.0], np.float32),
    }
    records = detection_records(outputs, 0, 200, 100, CLASSES, threshold=0.5)
    assert records == [
        {"class_id": 2, "class_name": "square", "score": 0.9,
         "box_xyxy": [40.0, 10.0, 120.0, 50.0], "box_rel_xyxy": [0.2, 0.1, 0.6, 0.5]},
        {"class_id": 4, "class_name": "4", "score": 0.5,  # an id without a name shows the id
         "box_xyxy": [0.0, 0.0, 200.0, 100.0], "box_rel_xyxy": [0.0, 0.0, 1.0, 1.0]},
    ]  # fmt: skip
    assert all(type(v) is float for r in records for v in r["box_xyxy"] + r["box_rel_xyxy"] + [r["score"]])


@pytest.mark.parametrize("num", [0, 1])
def test_records_stop_at_num_detections(num):
    outputs = {
        "detection_boxes": np.full((1, 2, 4), 0.5, np.float32),
        "detection_scores": np.ones((1, 2), np.float32),
        "detection_classes": np.ones((1, 2), np.float32),
        "num_detections": np.array([num], np.float32),
    }
    assert len(detection_records(outputs, 0, 10, 10, CLASSES, 0.0)) == num
