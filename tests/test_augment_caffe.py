"""ssd/data/augment.py against a NumPy transcription of the Caffe release's augmentation.

The transcription below is written from weiliu89/caffe, branch `ssd`: the `Adjust*` functions
and `ApplyDistort` of src/caffe/util/im_transforms.cpp, `SampleBBox`, `SatisfySampleConstraint`
and `GenerateBatchSamples` of src/caffe/util/sampler.cpp, `ExpandImage`, `CropImage`,
`TransformAnnotation` and `Transform` of src/caffe/data_transformer.cpp, `load_batch` of
src/caffe/layers/annotated_data_layer.cpp, the box helpers of src/caffe/util/bbox_util.cpp and the
parameters of examples/ssd/ssd_pascal.py. Caffe works on BGR images and on boxes normalised to
the image ([0, 1] "rel_xyxy"), and so does the transcription; it calls OpenCV where Caffe does.
It leaves out the JPEG re-encoding between Caffe's stages (a documented difference).

Photometric ops: for fixed parameters the pixels must be the same. Geometry: over thousands of
seeded draws each side, the patch and the output boxes must have the same distributions: a
two-sample Kolmogorov-Smirnov test (a chi-square test for the number of boxes kept) must not
reject at significance ALPHA for any statistic.
"""

from __future__ import annotations

import itertools
import math

import cv2
import numpy as np
import pytest
from scipy import stats

from ssd.data.augment import Photometric, TrainAugmentation, distort, draw_photometric

ALPHA = 0.001  # per statistic; the seeds are fixed, so each outcome is reproducible
DRAWS = 4000
# Values are compared rounded to 1e-4 (a fifth of a pixel of the largest canvas here): whole-image
# crops put point masses at box coordinates like 0.05, and a float32 ulp on one side would
# otherwise split those ties and look like a difference in distribution.
DECIMALS = 4

# ---------------------------------------------------------------- the transcription


def convert_to(mat: np.ndarray, alpha: float, beta: float) -> np.ndarray:
    """cv::Mat::convertTo(out, -1, alpha, beta) on uint8: saturate_cast<uchar>(alpha * x + beta)."""
    return np.clip(np.rint(mat.astype(np.float64) * alpha + beta), 0, 255).astype(np.uint8)


def adjust_brightness(img: np.ndarray, delta: float) -> np.ndarray:
    return convert_to(img, 1.0, delta) if abs(delta) > 0 else img


def adjust_contrast(img: np.ndarray, delta: float) -> np.ndarray:
    return convert_to(img, delta, 0.0) if abs(delta - 1.0) > 1e-3 else img


def adjust_saturation(img: np.ndarray, delta: float) -> np.ndarray:
    # Caffe's guard reads `fabs(delta - 1.f) != 1e-3`: in effect always true
    hsv = cv2.cvtColor(img, cv2.COLOR_BGR2HSV)
    hsv[..., 1] = convert_to(hsv[..., 1], delta, 0.0)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)


def adjust_hue(img: np.ndarray, delta: float) -> np.ndarray:
    if not abs(delta) > 0:
        return img
    hsv = cv2.cvtColor(img, cv2.COLOR_BGR2HSV)
    hsv[..., 0] = convert_to(hsv[..., 0], 1.0, delta)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)


def apply_distort(img: np.ndarray, first_order: bool, brightness=None, contrast=None, saturation=None, hue=None):
    """ApplyDistort with the random draws made: None is an op whose `prob < *_prob` failed."""
    ops = {
        "b": (adjust_brightness, brightness), "c": (adjust_contrast, contrast),
        "s": (adjust_saturation, saturation), "h": (adjust_hue, hue),
    }  # fmt: skip
    for name in "bcsh" if first_order else "bshc":  # random_order_prob is 0 in ssd_pascal.py
        function, value = ops[name]
        if value is not None:
            img = function(img, value)
    return img


# Boxes are tuples of 4 Python floats, normalised (xmin, ymin, xmax, ymax) as Caffe's NormalizedBBox
# (plain floats, not NumPy scalars: the scalar code is then fast enough for thousands of draws).
def bbox_size(b) -> float:
    return 0.0 if b[2] < b[0] or b[3] < b[1] else (b[2] - b[0]) * (b[3] - b[1])


def clip_bbox(b):
    return tuple(max(min(v, 1.0), 0.0) for v in b)


def jaccard_overlap(a, b) -> float:
    if b[0] > a[2] or b[2] < a[0] or b[1] > a[3] or b[3] < a[1]:
        return 0.0
    iw, ih = min(a[2], b[2]) - max(a[0], b[0]), min(a[3], b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    return inter / (bbox_size(a) + bbox_size(b) - inter)


def project_bbox(src, b):
    """ProjectBBox: `b` in the frame of `src`, clipped; None when it falls outside or is empty."""
    if b[0] >= src[2] or b[2] <= src[0] or b[1] >= src[3] or b[3] <= src[1]:
        return None
    sw, sh = src[2] - src[0], src[3] - src[1]
    proj = clip_bbox([(b[0] - src[0]) / sw, (b[1] - src[1]) / sh, (b[2] - src[0]) / sw, (b[3] - src[1]) / sh])
    return proj if bbox_size(proj) > 0 else None


def transform_annotation(boxes, labels, crop):
    """TransformAnnotation without resize or mirror, with the CENTER emit constraint."""
    out_boxes, out_labels = [], []
    for b, label in zip(boxes, labels):
        cx, cy = (b[0] + b[2]) / 2, (b[1] + b[3]) / 2
        if not (crop[0] <= cx <= crop[2] and crop[1] <= cy <= crop[3]):
            continue
        proj = project_bbox(crop, b)
        if proj is not None:
            out_boxes.append(proj)
            out_labels.append(label)
    return out_boxes, out_labels


# ssd_pascal.py's batch_sampler: (min_scale, max_scale, min_aspect, max_aspect, constraint, trials);
# the constraint is ("min", v) for min_jaccard_overlap, ("max", v) for max_jaccard_overlap.
BATCH_SAMPLERS = [(1.0, 1.0, 1.0, 1.0, None, 1)] + [
    (0.3, 1.0, 0.5, 2.0, ("min", v), 50) for v in (0.1, 0.3, 0.5, 0.7, 0.9)
] + [(0.3, 1.0, 0.5, 2.0, ("max", 1.0), 50)]


def sample_bbox(uniforms, min_scale, max_scale, min_aspect, max_aspect):
    """SampleBBox, given its four U(0, 1) draws."""
    scale = min_scale + (max_scale - min_scale) * uniforms[0]
    aspect = min_aspect + (max_aspect - min_aspect) * uniforms[1]
    aspect = max(aspect, scale**2)
    aspect = min(aspect, 1 / scale**2)
    w, h = scale * math.sqrt(aspect), scale / math.sqrt(aspect)
    w_off, h_off = (1 - w) * uniforms[2], (1 - h) * uniforms[3]
    return (w_off, h_off, w_off + w, h_off + h)


def satisfy(sampled, boxes, constraint) -> bool:
    if constraint is None:
        return True
    kind, value = constraint
    for b in boxes:  # with no box, `found` stays false
        overlap = jaccard_overlap(sampled, b)
        if kind == "min" and overlap < value or kind == "max" and overlap > value:
            continue
        return True
    return False


def generate_batch_samples(rng, boxes):
    samples = []
    for *sampler, constraint, max_trials in BATCH_SAMPLERS:
        for uniforms in rng.random((max_trials, 4)).tolist():  # max_sample 1: stop at the first success
            sampled = sample_bbox(uniforms, *sampler)
            if satisfy(sampled, boxes, constraint):
                samples.append(sampled)
                break
    return samples


def caffe_geometry(rng, width, height, boxes_px, labels, expand_prob=0.5, max_expand_ratio=4.0):
    """load_batch's geometry for one image: (crop x, y, w, h as fractions of the canvas, canvas
    width / image width, output boxes [M, 4] "rel_xyxy", labels [M])."""
    boxes = [(float(b[0]) / width, float(b[1]) / height, float(b[2]) / width, float(b[3]) / height) for b in boxes_px]
    labels = list(labels)
    canvas_w, canvas_h = width, height
    if not rng.uniform(0, 1) > expand_prob:  # ExpandImage
        ratio = rng.uniform(1.0, max_expand_ratio)
        canvas_h, canvas_w = int(height * ratio), int(width * ratio)
        h_off = np.floor(rng.uniform(0, canvas_h - height))
        w_off = np.floor(rng.uniform(0, canvas_w - width))
        expand_bbox = [-w_off / width, -h_off / height, (canvas_w - w_off) / width, (canvas_h - h_off) / height]
        boxes, labels = transform_annotation(boxes, labels, expand_bbox)
    samples = generate_batch_samples(rng, boxes)
    crop = clip_bbox(samples[rng.integers(len(samples))])  # caffe_rng_rand() % size; CropImage
    scaled = (crop[0] * canvas_w, crop[1] * canvas_h, crop[2] * canvas_w, crop[3] * canvas_h)
    x, y = int(scaled[0]), int(scaled[1])
    w, h = int(scaled[2] - scaled[0]), int(scaled[3] - scaled[1])
    boxes, labels = transform_annotation(boxes, labels, crop)
    # Transform: the WARP resize keeps normalised boxes; then the mirror, Rand(2)
    if rng.integers(2):
        boxes = [(1 - b[2], b[1], 1 - b[0], b[3]) for b in boxes]
    patch = (x / canvas_w, y / canvas_h, w / canvas_w, h / canvas_h, canvas_w / width)
    return patch, np.array(boxes, np.float32).reshape(-1, 4), np.array(labels)  # NormalizedBBox holds floats


# ---------------------------------------------------------------- photometric: same pixels


def make_image() -> np.ndarray:
    """Random pixels plus the corners of the RGB cube and greys, BGR."""
    rng = np.random.default_rng(0)
    corners = np.array(list(itertools.product((0, 255), repeat=3)) + [(g, g, g) for g in (1, 77, 128, 254)])
    pixels = np.concatenate([rng.integers(0, 256, (52 * 64 - len(corners), 3)), corners]).astype(np.uint8)
    return pixels.reshape(52, 64, 3)


IMAGE = make_image()

# Two settings per op, one on each side of neutral; values chosen off any rounding tie.
SETTINGS = {
    "brightness": (-23.7, 29.2), "contrast": (0.61, 1.43),
    "saturation": (0.55, 1.37), "hue": (-13.3, 17.6),
}  # fmt: skip


def ours_bgr(image_bgr: np.ndarray, params: Photometric) -> np.ndarray:
    """distort() works on RGB; Caffe on BGR."""
    return distort(np.ascontiguousarray(image_bgr[..., ::-1]), params)[..., ::-1]


@pytest.mark.parametrize("first_order", [True, False])
@pytest.mark.parametrize("side", [0, 1])
@pytest.mark.parametrize("ops", [c for n in range(1, 5) for c in itertools.combinations(SETTINGS, n)])
def test_photometric_ops_give_caffes_pixels(ops, side, first_order):
    values = {name: SETTINGS[name][side] for name in ops}
    expected = apply_distort(IMAGE, first_order, **values)
    np.testing.assert_array_equal(ours_bgr(IMAGE, Photometric(**values, contrast_first=first_order)), expected)


def test_hue_on_a_flat_green_spans_caffes_range():
    # RGB (60, 180, 90) is H 68 (135 degrees); Caffe's +-18 delta spans H 50..86 (+-36 degrees)
    green = np.full((1, 1, 3), (90, 180, 60), np.uint8)  # BGR
    hues = set()
    for delta in np.linspace(-18, 18, 73):
        out = ours_bgr(green, Photometric(hue=float(delta)))
        np.testing.assert_array_equal(out, adjust_hue(green, float(delta)))
        hues.add(int(cv2.cvtColor(out, cv2.COLOR_BGR2HSV)[0, 0, 0]))
    assert min(hues) == 50 and max(hues) == 86


def test_drawn_photometric_parameters_give_caffes_pixels():
    rng = np.random.default_rng(1)
    for _ in range(200):
        p = draw_photometric(rng)
        expected = apply_distort(IMAGE, p.contrast_first, p.brightness, p.contrast, p.saturation, p.hue)
        np.testing.assert_array_equal(ours_bgr(IMAGE, p), expected)


# ---------------------------------------------------------------- geometry: same distributions

WIDTH, HEIGHT = 500, 375  # a typical VOC image: one canvas pixel is small next to the patches
BOXES = np.array([[25, 50, 150, 225], [175, 75, 475, 350], [300, 25, 350, 100]], np.float32)
LABELS = np.array([1, 2, 3], np.int32)


def ours_geometry(draws: int, seed: int):
    """Patch statistics from draw_geometry and output boxes from the whole chain (__call__)."""
    aug = TrainAugmentation(8, interpolations=("linear",))
    rng = np.random.default_rng(seed)
    patches = []
    for _ in range(draws):
        g = aug.draw_geometry(rng, WIDTH, HEIGHT, BOXES)
        x0, y0, x1, y1 = g.patch
        patches.append((x0 / g.canvas_w, y0 / g.canvas_h, (x1 - x0) / g.canvas_w, (y1 - y0) / g.canvas_h,
                        g.canvas_w / WIDTH))
    image = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
    outputs = [aug(image, BOXES, LABELS, rng) for _ in range(draws)]
    return np.array(patches), [o[1] for o in outputs], [o[2] for o in outputs]


def caffe_draws(draws: int, seed: int):
    rng = np.random.default_rng(seed)
    runs = [caffe_geometry(rng, WIDTH, HEIGHT, BOXES, LABELS) for _ in range(draws)]
    return np.array([r[0] for r in runs]), [r[1] for r in runs], [r[2] for r in runs]


def box_statistics(boxes: list[np.ndarray]) -> dict[str, np.ndarray]:
    stacked = np.concatenate(boxes).astype(np.float64)
    values = {
        "xmin": stacked[:, 0], "ymin": stacked[:, 1], "xmax": stacked[:, 2], "ymax": stacked[:, 3],
        "width": stacked[:, 2] - stacked[:, 0], "height": stacked[:, 3] - stacked[:, 1],
    }  # fmt: skip
    return {name: np.round(value, DECIMALS) for name, value in values.items()}


@pytest.fixture(scope="module")
def both_sides():
    return ours_geometry(DRAWS, seed=2), caffe_draws(DRAWS, seed=3)


@pytest.mark.slow
@pytest.mark.parametrize("index, name", enumerate(["x", "y", "width", "height", "expansion"]))
def test_patch_geometry_has_caffes_distribution(both_sides, index, name):
    (ours, _, _), (caffe, _, _) = both_sides
    result = stats.ks_2samp(np.round(ours[:, index], DECIMALS), np.round(caffe[:, index], DECIMALS))
    assert result.pvalue > ALPHA, f"patch {name}: KS D = {result.statistic:.4f}, p = {result.pvalue:.2g}"


@pytest.mark.slow
@pytest.mark.parametrize("name", ["xmin", "ymin", "xmax", "ymax", "width", "height"])
def test_output_boxes_have_caffes_distribution(both_sides, name):
    (_, ours, _), (_, caffe, _) = both_sides
    result = stats.ks_2samp(box_statistics(ours)[name], box_statistics(caffe)[name])
    assert result.pvalue > ALPHA, f"box {name}: KS D = {result.statistic:.4f}, p = {result.pvalue:.2g}"


@pytest.mark.slow
def test_boxes_kept_per_image_and_labels_have_caffes_distribution(both_sides):
    (_, _, ours), (_, _, caffe) = both_sides
    counts = np.zeros((2, len(LABELS) + 1))
    per_label = np.zeros((2, len(LABELS)))
    for row, labels in enumerate((ours, caffe)):
        for kept in labels:
            counts[row, len(kept)] += 1
            for label in kept:
                per_label[row, label - 1] += 1
    for table in (counts, per_label):
        pvalue = stats.chi2_contingency(table[:, table.sum(axis=0) > 0]).pvalue
        assert pvalue > ALPHA, table
    assert counts[0, 0] > 0  # a patch with no box centre is kept, as in Caffe
