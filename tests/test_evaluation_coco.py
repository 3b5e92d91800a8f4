"""ssd/evaluation/coco.py: hand-worked COCO AP, crowd regions, and equality with pycocotools run
directly on the results JSON the evaluator writes (against the synthetic set's own COCO file)."""

from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from ssd_datasets import load_dataset
from ssd_datasets.synthetic import SYNTHETIC_CATEGORY_IDS, generate_synthetic
from ssd.evaluation.coco import STAT_NAMES, COCOEvaluator

IOU_THRESHOLDS = [0.5 + 0.05 * k for k in range(10)]


def test_detections_equal_to_ground_truth_give_ap_one():
    ev = COCOEvaluator(("a", "b"), confidence_levels=(0.0,), category_ids=(7, 90))
    # One small (20x20), one medium (50x50) and one large (120x120) object, two classes.
    boxes = np.array([[10, 10, 30, 30], [100, 100, 150, 150], [200, 20, 320, 140]], np.float64)
    labels = np.array([1, 2, 1])
    ev.process("1", boxes, labels, np.zeros(3, bool), boxes, np.array([0.9, 0.8, 0.7]), labels)
    ev.add_ground_truth("2", np.zeros((0, 4)), np.zeros(0), np.zeros(0))  # an image without objects
    results = ev.evaluate()
    stats = results["stats"][0]
    for name in STAT_NAMES:
        # AR1 allows one detection per image and class: class a finds 1 of its 2 objects.
        assert stats[name] == pytest.approx((0.5 + 1.0) / 2 if name == "AR1" else 1.0), name
    assert results["classes"]["a"]["ap"] == [pytest.approx(1.0)] and results["classes"]["b"]["category_id"] == 90
    assert results["num_images"] == 2


def _shifted(box: list[float], dx: float) -> list[float]:
    return [box[0] + dx, box[1], box[2] + dx, box[3]]


def test_hand_worked_ap_at_every_iou_threshold():
    """Three 100x100 objects, each found once by a box moved right by d pixels:
    IoU = (100 - d) * 100 / (2 * 100 * 100 - (100 - d) * 100) = (100 - d) / (100 + d)."""
    shifts, scores = (2, 13, 23), (0.9, 0.8, 0.7)  # the better the box, the higher its score
    ious = [(100 - d) / (100 + d) for d in shifts]  # 0.961, 0.770, 0.626
    ev = COCOEvaluator(("thing",), confidence_levels=(0.0, 0.75))
    gt = [0.0, 0.0, 100.0, 100.0]
    for k, (d, score) in enumerate(zip(shifts, scores)):
        ev.process(str(k + 1), np.array([gt]), [1], [False], np.array([_shifted(gt, d)]), [score], [1])
    # At threshold t the first n(t) = #{IoU >= t} detections are hits, the rest misses: precision
    # is 1 up to recall n/3, then 0. pycocotools samples the interpolated precision at the 101
    # recalls 0, 0.01, ..., 1: those <= n/3 count (0..0.33: 34, 0..0.66: 67, all: 101).
    points = {0: 0, 1: 34, 2: 67, 3: 101}
    expected = [points[sum(iou >= t for iou in ious)] / 101 for t in IOU_THRESHOLDS]
    assert [sum(iou >= t for iou in ious) for t in IOU_THRESHOLDS] == [3, 3, 3, 2, 2, 2, 1, 1, 1, 1]
    results = ev.evaluate()
    stats = results["stats"][0]
    assert stats["AP_at_iou"] == pytest.approx(expected)
    assert stats["AP50"] == pytest.approx(1.0)
    assert stats["AP75"] == pytest.approx(67 / 101)
    assert stats["AP"] == pytest.approx(np.mean(expected))
    assert stats["AR1"] == pytest.approx(np.mean([sum(iou >= t for iou in ious) / 3 for t in IOU_THRESHOLDS]))
    # The 100x100 boxes are "large" (area > 96^2): no small or medium objects, so those are undefined.
    assert stats["AP_large"] == pytest.approx(stats["AP"]) and stats["AP_small"] is None
    # Level 0.75 keeps the two best detections: the third object is missed at every threshold.
    expected_75 = [points[min(2, sum(iou >= t for iou in ious))] / 101 for t in IOU_THRESHOLDS]
    assert results["stats"][1]["AP"] == pytest.approx(np.mean(expected_75))
    assert results["classes"]["thing"]["ap"] == pytest.approx([np.mean(expected), np.mean(expected_75)])


def test_detection_in_a_crowd_region_is_not_a_false_positive():
    """Ground truth: one object and one difficult (crowd) region; the best-scored detection falls
    in the region. As crowd it is ignored (AP 1); as an ordinary object it would be a hit too, but
    a second detection inside the region is then a false positive ranked first."""
    gt = np.array([[0, 0, 50, 50], [100, 100, 200, 200]], np.float64)
    dets = np.array([[120, 120, 160, 160], [0, 0, 50, 50]], np.float64)
    for crowd, ap50 in ((True, 1.0), (False, None)):
        ev = COCOEvaluator(("a",), confidence_levels=(0.0,))
        ev.process("1", gt, [1, 1], [False, crowd], dets, [0.9, 0.5], [1, 1])
        result = ev.evaluate()
        if crowd:
            assert result["stats"][0]["AP50"] == pytest.approx(ap50)
            assert result["classes"]["a"]["num_ground_truth"] == 1
        else:  # the region box (IoU 0.16 with the first detection) is missed at 0.5: AP50 < 1
            assert result["stats"][0]["AP50"] < 0.6


def test_no_detections_is_ap_zero_not_an_error():
    ev = COCOEvaluator(("a",), confidence_levels=(0.5,))
    ev.process("1", np.array([[0, 0, 50, 50]]), [1], [False], np.zeros((1, 4)), [0.1], [1])
    assert ev.evaluate()["stats"][0]["AP"] == 0.0


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="one unique id per class"):
        COCOEvaluator(("a", "b"), category_ids=(1, 1))
    ev = COCOEvaluator(("a",))
    with pytest.raises(ValueError, match="never added"):
        ev.add_detections("x", np.zeros((0, 4)), [], [])
    ev.add_ground_truth("x", np.zeros((0, 4)), [], [])
    with pytest.raises(ValueError, match="already added"):
        ev.add_ground_truth("x", np.zeros((0, 4)), [], [])
    with pytest.raises(ValueError, match=r"det_labels must be 1 class ids 1..1, got \[2\]"):
        ev.add_detections("x", np.zeros((1, 4)), [0.5], [2])


def pycocotools_stats(ground_truth_json, results_json) -> list[float | None]:
    """pycocotools' 12 bbox numbers straight from the two files (-1 as None)."""
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(ground_truth_json))
        direct = COCOeval(gt, gt.loadRes(str(results_json)), "bbox")
        direct.evaluate()
        direct.accumulate()
        direct.summarize()
    return [None if v < 0 else v for v in direct.stats]


@pytest.fixture(scope="module")
def synthetic_coco(tmp_path_factory):
    root = tmp_path_factory.mktemp("coco")
    generate_synthetic(root, "coco", num_train=1, num_test=12, seed=3, image_size_range=(96, 200))
    return root


def test_numbers_equal_pycocotools_run_directly_on_the_written_results_json(synthetic_coco, tmp_path):
    dataset = load_dataset(synthetic_coco, ["test"])
    assert dataset.category_ids == SYNTHETIC_CATEGORY_IDS
    rng = np.random.default_rng(0)
    ev = COCOEvaluator(dataset.class_names, confidence_levels=(0.0, 0.5), category_ids=dataset.category_ids)
    for sample in dataset.samples:
        # Jittered true boxes (some with the wrong class), plus random false positives.
        n = len(sample.boxes)
        sizes = np.concatenate([sample.boxes[:, 2:] - sample.boxes[:, :2]] * 2, axis=1)
        boxes = sample.boxes + rng.normal(0, 0.08, (n, 4)) * sizes
        labels = np.where(rng.random(n) < 0.15, rng.integers(1, 7, n), sample.labels)
        x0, y0 = rng.uniform(0, sample.width - 20, 3), rng.uniform(0, sample.height - 20, 3)
        noise = np.stack([x0, y0, x0 + rng.uniform(5, 60, 3), y0 + rng.uniform(5, 60, 3)], 1)
        ev.process(sample.image_id, sample.boxes, sample.labels, sample.difficult,
                   np.concatenate([boxes, noise]), rng.random(n + 3), np.concatenate([labels, rng.integers(1, 7, 3)]))
    ours = ev.evaluate()
    path = tmp_path / "detections_test_results.json"
    path.write_text(json.dumps(ev.results_json()))
    direct = pycocotools_stats(synthetic_coco / "annotations" / "instances_test.json", path)
    assert 0.2 < ours["stats"][0]["AP"] < 0.9  # a discriminating case, neither all nor nothing
    assert [ours["stats"][0][name] for name in STAT_NAMES] == direct
    assert ours["stats"][1]["AP"] != ours["stats"][0]["AP"]

