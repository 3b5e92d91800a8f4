"""Tests for ssd.evaluation.voc and ssd.evaluation.results_files: the VOC devkit's AP, by hand and by transcription."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import tensorflow as tf

from ssd.core.boxes import pairwise_iou
from ssd.detections import detections_to_pixels
from ssd.evaluation.report import format_table, save_pr_curves
from ssd.evaluation.voc import VOCEvaluator, devkit_overlap
from ssd.evaluation.results_files import read_results_files, results_path, write_results_files

NAMES = ("cat", "dog")
NONE = np.zeros((0, 4))


def _box(x, w=10.0):
    """A "xyxy" box at column x, 10 pixels tall."""
    return [x, 0.0, x + w, 10.0]


def _evaluate(images, levels=(0.0,), names=NAMES):
    """images: list of (image_id, gt_boxes, gt_labels, gt_difficult, det_boxes, det_scores, det_labels)."""
    ev = VOCEvaluator(names, confidence_levels=levels)
    for image in images:
        ev.process(*image)
    return ev.evaluate()


def _ap(results, name="cat", level=0):
    c = results["classes"][name]
    return c["ap_voc07"][level], c["ap_voc10"][level]


# ---------------------------------------------------------------- a literal transcription of the devkit
# VOCevaldet.m, line by line, on 1-based inclusive boxes; MATLAB's stable sort; MATLAB's max ignores
# NaN and returns NaN when all are NaN; `for t=0:0.1:1` with MATLAB's colon (see test below).
MATLAB_T = [0.0, 0.1, 0.2, 3 * 0.1, 0.4, 0.5, 1 - 4 * 0.1, 1 - 3 * 0.1, 1 - 2 * 0.1, 1 - 1 * 0.1, 1.0]


def _devkit(gt, dets, minoverlap=0.5):
    """gt: {image: (BB [n,4] 1-based, diff [n])}; dets: list of (image, confidence, bb 1-based)."""
    npos = sum(int((~d).sum()) for _, d in gt.values())
    det_flags = {i: np.zeros(len(d), bool) for i, (_, d) in gt.items()}
    order = np.argsort([-c for _, c, _ in dets], kind="stable")
    tp, fp = np.zeros(len(dets)), np.zeros(len(dets))
    for d, k in enumerate(order):
        image, _, bb = dets[k]
        BB, diff = gt[image]
        ovmax, jmax = -math.inf, -1
        for j in range(len(BB)):
            bbgt = BB[j]
            bi = [max(bb[0], bbgt[0]), max(bb[1], bbgt[1]), min(bb[2], bbgt[2]), min(bb[3], bbgt[3])]
            iw = bi[2] - bi[0] + 1
            ih = bi[3] - bi[1] + 1
            if iw > 0 and ih > 0:
                ua = (bb[2] - bb[0] + 1) * (bb[3] - bb[1] + 1) + (bbgt[2] - bbgt[0] + 1) * (bbgt[3] - bbgt[1] + 1) - iw * ih
                ov = iw * ih / ua
                if ov > ovmax:
                    ovmax, jmax = ov, j
        if ovmax >= minoverlap:
            if not diff[jmax]:
                if not det_flags[image][jmax]:
                    tp[d] = 1
                    det_flags[image][jmax] = True
                else:
                    fp[d] = 1
        else:
            fp[d] = 1
    fp, tp = np.cumsum(fp), np.cumsum(tp)
    rec = tp / npos
    with np.errstate(invalid="ignore"):
        prec = tp / (fp + tp)
    ap07 = 0.0
    for t in MATLAB_T:
        p = prec[rec >= t]
        ap07 += (0.0 if len(p) == 0 else (np.nan if np.all(np.isnan(p)) else np.nanmax(p))) / 11
    mrec = np.concatenate([[0], rec, [1]])
    mpre = np.concatenate([[0], prec, [0]])
    for i in range(len(mpre) - 2, -1, -1):
        mpre[i] = np.nanmax([mpre[i], mpre[i + 1]])
    i = np.flatnonzero(mrec[1:] != mrec[:-1]) + 1
    ap10 = float(np.sum((mrec[i] - mrec[i - 1]) * mpre[i]))
    return ap07, ap10, int(tp[-1]) if len(tp) else 0


def _random_scene(seed, num_images=12):
    """Integer boxes (so both conventions are exact), clustered so that detections hit, miss,
    duplicate and land on difficult objects; a few repeated scores make ties."""
    rng = np.random.default_rng(seed)
    images = []
    for i in range(num_images):
        n = rng.integers(0, 5)
        gt = rng.integers(0, 60, (n, 2))
        gt_boxes = np.concatenate([gt, gt + rng.integers(8, 30, (n, 2))], 1).astype(float)
        gt_labels = rng.integers(1, 3, n)
        difficult = rng.random(n) < 0.25
        m = rng.integers(0, 12)
        src = rng.integers(0, max(n, 1), m)
        base = gt_boxes[src] if n else rng.integers(0, 60, (m, 4)).astype(float)
        det_boxes = base + rng.integers(-4, 5, (m, 4))
        det_boxes[:, 2:] = np.maximum(det_boxes[:, 2:], det_boxes[:, :2] + 1)
        det_labels = np.where(rng.random(m) < 0.8, gt_labels[src] if n else 1, rng.integers(1, 3, m))
        scores = rng.choice([0.05, 0.2, 0.35, 0.5, 0.65, 0.8, 0.95], m) if i % 3 == 0 else rng.random(m)
        images.append((f"im{i:03d}", gt_boxes, gt_labels, difficult, det_boxes, scores, det_labels))
    return images


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_matches_literal_devkit_transcription(seed):
    images = _random_scene(seed)
    levels = (0.0, 0.3, 0.6)
    results = _evaluate(images, levels)
    kinds = {"tp": 0, "fp": 0}
    for label, name in enumerate(NAMES, start=1):
        gt = {im[0]: (im[1][im[2] == label] + [1, 1, 0, 0], im[3][im[2] == label]) for im in images}
        for k, level in enumerate(levels):
            dets = [(im[0], s, b + [1, 1, 0, 0]) for im in images for b, s, l in zip(im[4], im[5], im[6])
                    if l == label and s >= level]
            ap07, ap10, tp = _devkit(gt, dets)
            assert results["classes"][name]["num_true_positives"][k] == tp
            assert results["classes"][name]["ap_voc07"][k] == pytest.approx(ap07, abs=1e-12)
            assert results["classes"][name]["ap_voc10"][k] == pytest.approx(ap10, abs=1e-12)
            kinds["tp"] += tp
            kinds["fp"] += len(dets) - tp
    assert kinds["tp"] > 5 and kinds["fp"] > 5  # the scenes exercise both outcomes


def test_devkit_overlap_equals_continuous_iou_on_integer_boxes():
    rng = np.random.default_rng(5)
    xy = rng.integers(1, 40, (200, 2))
    one_based = np.concatenate([xy, xy + rng.integers(0, 25, (200, 2))], 1).astype(float)  # inclusive
    continuous = one_based - [1, 1, 0, 0]  # the library's "xyxy"
    a, b = one_based[:100], one_based[100:]
    devkit = devkit_overlap(a[:, None], b[None])
    # The continuous IoU in float64 NumPy: the same number, bit for bit, on integer boxes.
    ca, cb = continuous[:100, None], continuous[None, 100:]
    iw = np.minimum(ca[..., 2], cb[..., 2]) - np.maximum(ca[..., 0], cb[..., 0])
    ih = np.minimum(ca[..., 3], cb[..., 3]) - np.maximum(ca[..., 1], cb[..., 1])
    area = lambda c: (c[..., 2] - c[..., 0]) * (c[..., 3] - c[..., 1])  # noqa: E731
    with np.errstate(divide="ignore", invalid="ignore"):
        cont = np.where((iw > 0) & (ih > 0), iw * ih / (area(ca) + area(cb) - iw * ih), -np.inf)
    np.testing.assert_array_equal(devkit, cont)
    # And the library's TF IoU agrees wherever the boxes intersect.
    lib = pairwise_iou(tf.constant(continuous[:100], tf.float32), tf.constant(continuous[100:], tf.float32)).numpy()
    hit = np.isfinite(devkit)
    assert hit.sum() > 100 and (~hit).sum() > 100
    np.testing.assert_allclose(lib[hit], devkit[hit], atol=1e-6)
    assert np.all(lib[~hit] == 0)


# ---------------------------------------------------------------- hand-worked APs
def test_duplicate_detection_of_one_object_is_false_positive():
    # gt: two cats. Ranked: hit G1 (TP), hit G1 again (FP), hit G2 (TP).
    # recall 0.5 0.5 1.0, precision 1 0.5 2/3.
    # VOC07: t = 0..0.5 (6 thresholds) -> 1; t = 0.6..1 (5) -> 2/3; (6 + 10/3) / 11 = 0.848484...
    # VOC10: 0.5 * 1 + 0.5 * 2/3 = 0.833333...
    image = ("a", [_box(0), _box(20)], [1, 1], [False, False], [_box(0), _box(0), _box(20)], [0.9, 0.8, 0.7], [1, 1, 1])
    ap07, ap10 = _ap(_evaluate([image]))
    assert ap07 == pytest.approx((6 + 10 / 3) / 11)
    assert ap10 == pytest.approx(0.5 + 1 / 3)


def test_equal_scores_keep_processing_order():
    # One cat in image "b". Image "a" has a false positive with the same score as the hit.
    # Order a, b -> ranked FP, TP: recall 0 1, precision 0 0.5 -> AP 0.5 by both metrics.
    # Order b, a -> ranked TP, FP: recall 1 1, precision 1 0.5 -> AP 1.
    a = ("a", NONE, [], [], [_box(0)], [0.8], [1])
    b = ("b", [_box(0)], [1], [False], [_box(0)], [0.8], [1])
    assert _ap(_evaluate([a, b])) == pytest.approx((0.5, 0.5))
    assert _ap(_evaluate([b, a])) == pytest.approx((1.0, 1.0))


def test_detection_of_difficult_object_is_ignored():
    # G1 difficult, G2 not: the hit on G1 counts neither way, the hit on G2 is the only TP -> AP 1.
    # (Counted as FP it would give precision 0.5 at full recall: AP 0.5.)
    image = ("a", [_box(0), _box(30)], [1, 1], [True, False], [_box(0), _box(30)], [0.9, 0.8], [1, 1])
    results = _evaluate([image])
    assert _ap(results) == pytest.approx((1.0, 1.0))
    assert results["classes"]["cat"]["num_ground_truth"] == 1
    assert results["classes"]["cat"]["num_difficult"] == 1


def test_best_match_difficult_wins_over_a_good_non_difficult_match():
    # The detection equals difficult G1 (IoU 1) and overlaps G2 with IoU 80/120 = 0.67 >= 0.5; the
    # devkit only looks at the best overlap, so it is ignored and G2 is never found: AP 0, not NaN.
    image = ("a", [_box(0), _box(2)], [1, 1], [True, False], [_box(0)], [0.9], [1])
    assert _ap(_evaluate([image])) == (0.0, 0.0)


def test_detection_in_image_without_ground_truth_is_false_positive():
    # Ranked: FP (image without cats) at 0.9, TP at 0.5: recall 0 1, precision 0 0.5 -> AP 0.5.
    empty = ("a", NONE, [], [], [_box(0)], [0.9], [1])
    one = ("b", [_box(0)], [1], [False], [_box(0)], [0.5], [1])
    assert _ap(_evaluate([empty, one])) == pytest.approx((0.5, 0.5))


def test_eleven_point_edges_follow_matlab_colon():
    # 10 cats; ranked TP TP TP FP TP: recall .1 .2 .3 .3 .4, precision 1 1 1 .75 .8.
    # Devkit thresholds are MATLAB's 0:0.1:1, whose 4th element is 3*0.1 = 0.30000000000000004:
    # recall exactly 0.3 does not reach it, so t=0.3 takes the precision at recall 0.4 (0.8),
    # while recall exactly 0.4 does count for t=0.4.
    # VOC07 = (1 + 1 + 1 + 0.8 + 0.8 + 0 * 6) / 11 = 4.6 / 11;  VOC10 = 0.3 * 1 + 0.1 * 0.8 = 0.38.
    gts = [_box(20 * k) for k in range(10)]
    dets = [_box(0), _box(20), _box(40), _box(500), _box(60)]
    image = ("a", gts, [1] * 10, [False] * 10, dets, [0.9, 0.8, 0.7, 0.6, 0.5], [1] * 5)
    results = _evaluate([image], levels=(0.0, 0.75))
    assert _ap(results) == pytest.approx((4.6 / 11, 0.38))
    # At confidence 0.75 only the first two remain: recall .1 .2 at precision 1 -> 3/11 and 0.2.
    assert _ap(results, level=1) == pytest.approx((3 / 11, 0.2))
    assert results["classes"]["cat"]["num_detections"] == [5, 2]
    assert results["classes"]["cat"]["num_true_positives"] == [4, 2]


def test_class_without_detections_scores_zero_and_class_without_ground_truth_is_excluded():
    # Cats exist but nobody detects them: AP 0. No dog exists: excluded, AP None, mAP = cat's AP.
    image = ("a", [_box(0)], [1], [False], [_box(0)], [0.9], [2])
    results = _evaluate([image])
    assert _ap(results) == (0.0, 0.0)
    assert _ap(results, "dog") == (None, None)
    assert results["excluded_classes"] == ["dog"]
    assert results["map_voc07"] == [0.0] and results["map_voc10"] == [0.0]


def test_degenerate_inputs_are_never_nan():
    no_detections = _evaluate([("a", [_box(0)], [1], [False], NONE, [], []), ("b", NONE, [], [], NONE, [], [])])
    assert no_detections["map_voc07"] == [0.0] and no_detections["map_voc10"] == [0.0]
    nothing = _evaluate([])
    assert nothing["map_voc07"] == [None] and nothing["excluded_classes"] == list(NAMES)
    empty_image = _evaluate([("a", NONE, [], [], NONE, [], [])])
    assert empty_image["num_images"] == 1 and empty_image["map_voc10"] == [None]
    for results in (no_detections, nothing, empty_image):
        for c in results["classes"].values():
            assert not any(isinstance(v, float) and math.isnan(v) for v in c["ap_voc07"] + c["ap_voc10"])
        assert "nan" not in format_table(results).lower()


def test_confidence_level_equals_prefiltered_detections():
    images = _random_scene(7, num_images=20)
    levels = (0.0, 0.25, 0.5, 0.9)
    together = _evaluate(images, levels)
    for k, level in enumerate(levels):
        filtered = [(i, gb, gl, gd, db[s >= level], s[s >= level], dl[s >= level]) for i, gb, gl, gd, db, s, dl in images]
        alone = _evaluate(filtered, (0.0,))
        for name in NAMES:
            for key in ("ap_voc07", "ap_voc10", "num_detections", "num_true_positives"):
                assert together["classes"][name][key][k] == alone["classes"][name][key][0]
        assert together["map_voc10"][k] == alone["map_voc10"][0]


# ---------------------------------------------------------------- results files
def test_results_files_round_trip_is_exact(tmp_path):
    images = _random_scene(3)
    rng = np.random.default_rng(0)
    images = [(i, gb, gl, gd, db + rng.random(db.shape) * 0.7, s, dl) for i, gb, gl, gd, db, s, dl in images]
    ev = VOCEvaluator(NAMES, confidence_levels=(0.0, 0.5))
    for image in images:
        ev.process(*image)
    paths = write_results_files(tmp_path, NAMES, *ev.devkit_detections())
    assert [p.name for p in paths] == ["comp4_det_test_cat.txt", "comp4_det_test_dog.txt"]
    again = VOCEvaluator(NAMES, confidence_levels=(0.0, 0.5))
    for image_id, gb, gl, gd, *_ in images:
        again.add_ground_truth(image_id, gb, gl, gd)
    read = read_results_files(tmp_path, NAMES)
    again.add_devkit_detections(*read)
    original, restored = ev.evaluate(), again.evaluate()
    assert original == restored
    for name, curve in ev.pr_curves().items():
        for key, values in curve.items():
            np.testing.assert_array_equal(values, again.pr_curves()[name][key])
    assert sum(len(i[5]) for i in images) == len(read[0])


def test_results_file_line_format(tmp_path):
    ev = VOCEvaluator(NAMES)
    ev.process("000005", NONE, [], [], [[10.5, 20.0, 30.0, 40.25]], [0.5], [2])
    write_results_files(tmp_path, NAMES, *ev.devkit_detections())
    assert results_path(tmp_path, "cat").read_text() == ""
    # 1-based: xmin + 1, ymin + 1, xmax, ymax.
    assert results_path(tmp_path, "dog").read_text() == "000005 0.5 11.5 21.0 30.0 40.25\n"


def test_malformed_results_file_names_file_and_line(tmp_path):
    results_path(tmp_path, "cat").write_text("000005 0.5 1 2 3 4\n000006 0.4 1 2 x 4\n")
    results_path(tmp_path, "dog").write_text("")
    with pytest.raises(ValueError, match=r"comp4_det_test_cat.txt:2"):
        read_results_files(tmp_path, NAMES)
    results_path(tmp_path, "cat").write_text("000005 0.5 1 2 3 4\n")
    with pytest.raises(FileNotFoundError, match="bird"):
        read_results_files(tmp_path, NAMES + ("bird",))


# ---------------------------------------------------------------- helpers and errors
def test_detections_to_pixels():
    boxes = np.array([[[0.1, 0.2, 0.5, 1.0]], [[0.0, 0.0, 1.0, 0.5]]])  # [2, 1, 4] rel_yxyx
    pixels = detections_to_pixels(boxes, width=[100, 40], height=[50, 10])
    np.testing.assert_allclose(pixels, [[[20, 5, 100, 25]], [[0, 0, 20, 10]]])
    np.testing.assert_allclose(detections_to_pixels(boxes[0], 100, 50), [[20, 5, 100, 25]])


def test_bad_inputs_are_refused_with_names():
    ev = VOCEvaluator(NAMES)
    ev.add_ground_truth("a", NONE, [], [])
    with pytest.raises(ValueError, match="'b'"):
        ev.add_detections("b", [_box(0)], [0.5], [1])
    with pytest.raises(ValueError, match="det_labels must be class ids 1..2"):
        ev.add_detections("a", [_box(0)], [0.5], [3])
    with pytest.raises(ValueError, match="already added"):
        ev.add_ground_truth("a", NONE, [], [])
    with pytest.raises(ValueError, match="gt_boxes must be"):
        ev.add_ground_truth("c", [[1, 2, 3]], [1], [False])


def test_reset_forgets_everything_and_inputs_are_not_mutated():
    gt = np.array([_box(0)])
    det = np.array([_box(0)])
    ev = VOCEvaluator(NAMES)
    ev.process("a", gt, [1], [False], det, [0.9], [1])
    assert det.tolist() == [_box(0)] and gt.tolist() == [_box(0)]
    ev.reset()
    assert ev.evaluate()["num_images"] == 0


def test_evaluate_is_plain_json_and_curves_follow_the_ranking():
    ev = VOCEvaluator(NAMES)
    # cat: a hit (0.9), a miss (0.8), a duplicate of the hit (0.7); one more cat never found.
    ev.process("a", np.array([_box(0), _box(50)]), [1, 1], [False, False],
               np.array([_box(0), _box(100), _box(0)]), [0.9, 0.8, 0.7], [1, 1, 1])
    results = ev.evaluate()
    assert json.loads(json.dumps(results)) == results
    curve = ev.pr_curves()["cat"]
    np.testing.assert_allclose(curve["scores"], [0.9, 0.8, 0.7])
    np.testing.assert_allclose(curve["recall"], [0.5, 0.5, 0.5])
    np.testing.assert_allclose(curve["precision"], [1.0, 0.5, 1 / 3])


def test_save_pr_curves_writes_png(tmp_path):
    ev = VOCEvaluator(NAMES, confidence_levels=(0.0, 0.5))
    for image in _random_scene(1):
        ev.process(*image)
    save_pr_curves(ev.evaluate(), ev.pr_curves(), tmp_path / "pr.png")
    assert (tmp_path / "pr.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_table_shows_percentages_with_their_unit_and_the_numbers_stay_fractions():
    results = {"confidence_levels": [0.01], "excluded_classes": [], "map_voc07": [0.6512], "map_voc10": [None],
               "classes": {"cat": {"num_ground_truth": 3, "ap_voc07": [0.6512], "ap_voc10": [1.0]}}}
    lines = format_table(results).splitlines()
    assert lines[2].split() == ["cat", "3", "65.12%", "100.00%"]
    assert lines[-1].split() == ["mAP", "65.12%", "—"]
    assert json.loads(json.dumps(results))["map_voc07"] == [0.6512]  # what metrics.json holds
