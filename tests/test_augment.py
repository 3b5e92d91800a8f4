"""ssd/augment.py (and ssd/image_io.py, the decode step in front of it)."""

from __future__ import annotations

import colorsys
import pickle

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ssd.data import augment
from ssd.data.augment import (
    Photometric,
    TrainAugmentation,
    crop_boxes,
    distort,
    draw_expand,
    draw_photometric,
    flip_boxes,
    render_patch,
    sample_patch,
    try_patch,
)
from ssd.image_io import read_rgb

NO_PHOTOMETRIC = Photometric()


def np_iou(a, b):
    """Plain IoU of two "xyxy" boxes, written independently of the module."""
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union


def pixel(rgb, params):
    """distort() of a single pixel."""
    return distort(np.array([[rgb]], np.uint8), params)[0, 0].astype(int)


# ---------------------------------------------------------------- photometric


def test_brightness_adds_and_saturates():
    image = np.array([[[100, 0, 250]]], np.uint8)
    np.testing.assert_array_equal(distort(image, Photometric(brightness=20.0))[0, 0], [120, 20, 255])
    np.testing.assert_array_equal(distort(image, Photometric(brightness=-32.0))[0, 0], [68, 0, 218])


def test_contrast_scales_about_zero_and_saturates():
    image = np.array([[[100, 0, 200]]], np.uint8)
    np.testing.assert_array_equal(distort(image, Photometric(contrast=1.5))[0, 0], [150, 0, 255])
    np.testing.assert_array_equal(distort(image, Photometric(contrast=0.5))[0, 0], [50, 0, 100])


def test_brightness_comes_before_contrast_in_both_orders():
    for contrast_first in (True, False):
        params = Photometric(brightness=20.0, contrast=1.5, contrast_first=contrast_first)
        assert pixel((100, 100, 100), params).tolist() == [180] * 3  # (100 + 20) * 1.5


def test_contrast_order_relative_to_hsv_ops():
    # (200, 100, 100): contrast 1.5 first saturates red at 255 before the hue shift; after the
    # hue shift it scales the already-shifted colour. The two orders must differ accordingly.
    base = dict(contrast=1.5, hue=18.0)
    first = pixel((200, 100, 100), Photometric(**base, contrast_first=True))
    last = pixel((200, 100, 100), Photometric(**base, contrast_first=False))
    shifted = pixel((200, 100, 100), Photometric(hue=18.0))
    np.testing.assert_allclose(last, np.clip(np.rint(shifted * 1.5), 0, 255), atol=1)
    scaled = pixel((200, 100, 100), Photometric(contrast=1.5))
    np.testing.assert_allclose(first, pixel(tuple(scaled), Photometric(hue=18.0)), atol=0)
    assert not np.array_equal(first, last)


@pytest.mark.parametrize("delta, expected", [(18.0, (255, 153, 0)), (-18.0, (255, 0, 0)), (-0.4, (255, 0, 0))])
def test_hue_delta_is_in_half_degrees_and_sticks_at_red_below_zero(delta, expected):
    # red is H 0; +18 units = +36 degrees -> G = 255 * 36/60; below 0, H saturates at 0 (Caffe)
    np.testing.assert_array_equal(pixel((255, 0, 0), Photometric(hue=delta)), expected)


def test_hue_above_179_wraps_around():
    # (255, 0, 43) is H 175 (350 degrees); +10 units -> 185, read modulo 180 -> 5 (10 degrees)
    assert cv2.cvtColor(np.array([[[255, 0, 43]]], np.uint8), cv2.COLOR_RGB2HSV)[0, 0, 0] == 175
    np.testing.assert_allclose(pixel((255, 0, 43), Photometric(hue=10.0)), (255, 42.5, 0), atol=1)


@pytest.mark.parametrize("rgb", [(200, 100, 50), (30, 160, 220), (90, 40, 120), (250, 250, 20)])
@pytest.mark.parametrize("delta", [-18.0, -8.0, 12.0, 18.0])
def test_hue_shift_matches_colorsys_rotation(rgb, delta):
    # H is in 2-degree units; a shift below H = 0 stops at 0 (saturation, as Caffe's convertTo)
    h, s, v = colorsys.rgb_to_hsv(*(c / 255 for c in rgb))
    units = max(h * 180 + delta, 0.0)
    expected = np.array(colorsys.hsv_to_rgb((units / 180) % 1.0, s, v)) * 255
    np.testing.assert_allclose(pixel(rgb, Photometric(hue=delta)), expected, atol=5)


@pytest.mark.parametrize("factor, expected", [(1.5, (200, 50, 50)), (0.5, (200, 150, 150))])
def test_saturation_scales_s_channel(factor, expected):
    # (200, 100, 100): V = 200, S = 0.5; the smallest channel is V * (1 - S)
    np.testing.assert_allclose(pixel((200, 100, 100), Photometric(saturation=factor)), expected, atol=2)


def test_hsv_ops_leave_grey_grey():
    grey = np.full((4, 5, 3), 77, np.uint8)
    out = distort(grey, Photometric(saturation=1.5, hue=15.0))
    np.testing.assert_array_equal(out, grey)


def test_distort_works_on_channels_of_a_real_image():
    # A column of colours: each pixel must be shifted on its own (no row/channel mixing).
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (7, 3, 3), dtype=np.uint8)
    params = Photometric(brightness=10.0, saturation=1.3, hue=-11.0, contrast=0.8)
    out = distort(image, params)
    for i in range(7):
        for j in range(3):
            np.testing.assert_array_equal(out[i, j], distort(image[i : i + 1, j : j + 1], params)[0, 0])


def test_draw_photometric_ranges_and_probabilities():
    rng = np.random.default_rng(0)
    draws = [draw_photometric(rng) for _ in range(2000)]
    for name, (lo, hi) in [
        ("brightness", (-32, 32)), ("contrast", (0.5, 1.5)),
        ("saturation", (0.5, 1.5)), ("hue", (-18, 18)),
    ]:  # fmt: skip
        values = [getattr(d, name) for d in draws if getattr(d, name) is not None]
        assert 0.45 < len(values) / len(draws) < 0.55, name
        assert lo <= min(values) and max(values) <= hi
        assert min(values) < lo + 0.1 * (hi - lo) and max(values) > hi - 0.1 * (hi - lo)
    assert 0.45 < np.mean([d.contrast_first for d in draws]) < 0.55


# ---------------------------------------------------------------- geometry


def test_flip_mirrors_rel_boxes():
    boxes = np.array([[0.1, 0.2, 0.4, 0.5], [0.0, 0.0, 1.0, 1.0]], np.float32)
    np.testing.assert_allclose(flip_boxes(boxes), [[0.6, 0.2, 0.9, 0.5], [0.0, 0.0, 1.0, 1.0]], atol=1e-6)
    np.testing.assert_allclose(flip_boxes(flip_boxes(boxes)), boxes, atol=1e-6)


def test_expand_places_image_and_boxes_on_mean_canvas():
    image = np.arange(3 * 4 * 3, dtype=np.uint8).reshape(3, 4, 3)
    fill = np.array([124, 117, 104], np.uint8)
    canvas = render_patch(image, 5, 2, (0, 0, 12, 9), fill, NO_PHOTOMETRIC)
    assert canvas.shape == (9, 12, 3)
    np.testing.assert_array_equal(canvas[2:5, 5:9], image)
    outside = np.ones((9, 12), bool)
    outside[2:5, 5:9] = False
    assert np.all(canvas[outside] == fill)
    # a box on image pixel (1, 2) (x 1..2, y 2..3) moves by (left, top) onto the same content
    box = np.array([[1, 2, 2, 3]], np.float32) + [5, 2, 5, 2]
    x0, y0 = box[0, :2].astype(int)
    np.testing.assert_array_equal(canvas[y0, x0], image[2, 1])


def test_render_patch_crops_and_distorts_only_the_image_part():
    image = np.full((10, 10, 3), 100, np.uint8)
    fill = np.array([124, 117, 104], np.uint8)
    params = Photometric(brightness=30.0)
    patch = render_patch(image, 4, 4, (2, 2, 9, 9), fill, params)  # image occupies canvas 4..13
    assert patch.shape == (7, 7, 3)
    assert np.all(patch[:2] == fill) and np.all(patch[:, :2] == fill)  # mean fill undistorted
    assert np.all(patch[2:, 2:] == 130)
    # a patch inside the image equals cropping the distorted image
    whole = distort(image, params)
    np.testing.assert_array_equal(render_patch(image, 0, 0, (1, 2, 6, 9), fill, params), whole[2:9, 1:6])


def test_render_patch_of_only_mean_fill():
    image = np.zeros((4, 4, 3), np.uint8)
    fill = np.array([124, 117, 104], np.uint8)
    patch = render_patch(image, 10, 10, (0, 2, 6, 7), fill, Photometric(brightness=30.0))
    assert patch.shape == (5, 6, 3) and np.all(patch == fill)


def test_draw_expand_bounds():
    rng = np.random.default_rng(1)
    ratios = []
    for _ in range(500):
        left, top, cw, ch = draw_expand(rng, 50, 30)
        assert 0 <= left <= cw - 50 and 0 <= top <= ch - 30
        assert 50 <= cw <= 200 and 30 <= ch <= 120
        ratios.append(cw / 50)
        assert abs(cw / 50 - ch / 30) < 0.05  # same ratio on both sides
    assert min(ratios) < 1.2 and max(ratios) > 3.8


def test_crop_keeps_boxes_by_centre_and_clips():
    boxes = np.array([[0, 0, 30, 30], [40, 40, 100, 100], [45, 5, 55, 25], [20, 20, 30, 40]], np.float32)
    labels = np.array([1, 2, 3, 4], np.int32)
    kept, kept_labels = crop_boxes(boxes, labels, (10, 10, 50, 50))
    # centres: (15, 15) in; (70, 70) out; (50, 15) on the edge: out; (25, 30) in
    assert kept_labels.tolist() == [1, 4]
    np.testing.assert_array_equal(kept, [[0, 0, 20, 20], [10, 10, 20, 30]])
    unclipped, _ = crop_boxes(boxes, labels, (10, 10, 50, 50), clip=False)
    np.testing.assert_array_equal(unclipped, [[-10, -10, 20, 20], [10, 10, 20, 30]])


def test_crop_drops_zero_size_boxes():
    boxes = np.array([[20, 20, 20, 30], [12, 12, 14, 14]], np.float32)
    kept, labels = crop_boxes(boxes, np.array([1, 2], np.int32), (10, 10, 50, 50))
    assert labels.tolist() == [2] and kept.dtype == np.float32


@pytest.mark.parametrize("min_iou", [0.1, 0.3, 0.5, 0.7, 0.9])
def test_try_patch_honours_min_iou(min_iou):
    boxes = np.array([[20, 20, 250, 180], [200, 10, 240, 60]], np.float32)
    found = 0
    for seed in range(40):
        patch = try_patch(np.random.default_rng(seed), 300, 200, boxes, min_iou)
        if patch is None:
            continue
        found += 1
        x0, y0, x1, y1 = patch
        assert 0 <= x0 < x1 <= 300 and 0 <= y0 < y1 <= 200
        assert max(np_iou(patch, b) for b in boxes) >= min_iou
    assert found > 0


def test_try_patch_scale_and_aspect_ranges():
    rng = np.random.default_rng(3)
    for _ in range(300):
        x0, y0, x1, y1 = try_patch(rng, 400, 300, np.array([[0, 0, 400, 300]], np.float32), 0.0)
        fw, fh = (x1 - x0) / 400, (y1 - y0) / 300  # fractions of the canvas sides
        assert 0.3**2 - 0.01 <= fw * fh <= 1.0  # scale^2
        assert 0.5 - 0.02 <= fw / fh <= 2.0 + 0.02  # aspect ratio relative to the canvas
        assert fw <= 1 and fh <= 1


def test_impossible_constraint_gives_none_and_sample_patch_falls_back():
    tiny = np.array([[500, 500, 501, 501]], np.float32)  # no patch of scale >= 0.3 reaches IoU 0.1
    assert try_patch(np.random.default_rng(0), 1000, 1000, tiny, 0.1) is None
    patches = {sample_patch(np.random.default_rng(seed), 1000, 1000, tiny) for seed in range(40)}
    assert (0, 0, 1000, 1000) in patches and len(patches) > 1  # whole image or any patch (IoU >= 0)


def test_without_boxes_only_the_whole_image_sampler_succeeds():
    # Caffe's constraints look for a ground-truth box; with none, every constrained sampler fails
    none = np.zeros((0, 4), np.float32)
    assert all(try_patch(np.random.default_rng(0), 90, 60, none, iou) is None for iou in (0.0, 0.5))
    assert {sample_patch(np.random.default_rng(seed), 90, 60, none) for seed in range(20)} == {(0, 0, 90, 60)}


class CountingRng:
    """Wraps a Generator and counts how many random numbers are drawn."""

    def __init__(self, seed: int) -> None:
        self.rng, self.drawn = np.random.default_rng(seed), 0

    def __getattr__(self, name):
        method = getattr(self.rng, name)

        def counted(*args, **kwargs):
            out = method(*args, **kwargs)
            self.drawn += np.size(out)
            return out

        return counted


def test_work_per_image_is_bounded():
    image = np.zeros((400, 400, 3), np.uint8)
    tiny = np.array([[200, 200, 201, 201]], np.float32)
    aug = TrainAugmentation(32)
    most = 0
    for seed in range(30):
        rng = CountingRng(seed)
        aug(image, tiny, np.array([1], np.int32), rng)
        most = max(most, rng.drawn)
    # photometric 9 + expand 3 + flip 1 + interpolation 1 + permutation 7 + at most 6 samplers x 50 trials x 4
    assert most <= 9 + 5 + 7 + 6 * 50 * 4
    assert most > 4 * 50  # at least one sampler really tried (and failed) 50 times


# ---------------------------------------------------------------- the whole chain


def painted(height, width, rect, grey):
    image = np.full((height, width, 3), grey, np.uint8)
    x0, y0, x1, y1 = rect
    image[y0:y1, x0:x1] = (0, 255, 0)
    return image


@settings(max_examples=60, deadline=None)
@given(
    height=st.integers(24, 120),
    width=st.integers(24, 120),
    corners=st.tuples(*[st.floats(0, 1)] * 4),
    grey=st.integers(60, 200),
    seed=st.integers(0, 2**32 - 1),
    clip=st.booleans(),
)
def test_box_follows_painted_rectangle(height, width, corners, grey, seed, clip):
    x0, x1 = sorted(int(c * (width - 4)) for c in corners[:2])
    y0, y1 = sorted(int(c * (height - 4)) for c in corners[2:])
    rect = (x0, y0, x1 + 4, y1 + 4)
    size = 64
    out, boxes, labels = TrainAugmentation(size, clip_boxes=clip)(
        painted(height, width, rect, grey), np.array([rect], np.float32), np.array([7], np.int32),
        np.random.default_rng(seed),
    )  # fmt: skip
    assert out.shape == (size, size, 3) and out.dtype == np.uint8
    assert boxes.dtype == np.float32 and labels.dtype == np.int32
    if not len(labels):
        return
    assert labels.tolist() == [7]
    box = boxes[0] * size
    if clip:
        assert np.all(boxes >= 0) and np.all(boxes <= 1)
    # green dominance is > 0 only on the rectangle (grey is 0, the mean fill is negative)
    img = out.astype(int)
    dominance = img[..., 1] - np.maximum(img[..., 0], img[..., 2])
    if dominance.max() <= 20:
        return  # shrunk below a pixel: nothing visible to compare with
    ys, xs = np.nonzero(dominance > dominance.max() / 2)
    seen = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float32)
    tol = 1.5
    assert np.all(seen[:2] >= box[:2] - tol) and np.all(seen[2:] <= box[2:] + tol), (seen, box)
    if clip and min(box[2] - box[0], box[3] - box[1]) >= 3:
        assert np.all(box[:2] >= seen[:2] - tol) and np.all(box[2:] <= seen[2:] + tol), (seen, box)


def test_output_types_and_ranges():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (90, 120, 3), dtype=np.uint8)
    boxes = np.array([[10, 10, 50, 60], [60, 20, 118, 88], [0, 0, 120, 90]], np.float32)
    labels = np.array([1, 2, 3], np.int32)
    aug = TrainAugmentation(48)
    counts = []
    for _ in range(50):
        out, b, lab = aug(image, boxes, labels, rng)
        assert out.shape == (48, 48, 3) and out.dtype == np.uint8 and out.flags.c_contiguous
        assert b.shape == (len(lab), 4) and b.dtype == np.float32 and lab.dtype == np.int32
        assert np.all(b >= 0) and np.all(b <= 1) and np.all(b[:, 2:] > b[:, :2])
        assert set(lab.tolist()) <= {1, 2, 3}
        counts.append(len(lab))
    assert max(counts) == 3


def test_same_seed_same_output_and_seeds_differ():
    rng = np.random.default_rng(5)
    image = rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)
    boxes, labels = np.array([[5, 5, 40, 50]], np.float32), np.array([2], np.int32)
    aug = TrainAugmentation(32)
    a = aug(image, boxes, labels, np.random.default_rng(11))
    b = aug(image, boxes, labels, np.random.default_rng(11))
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    outputs = {aug(image, boxes, labels, np.random.default_rng(s))[0].tobytes() for s in range(10)}
    assert len(outputs) == 10


CV2_INTERPOLATIONS = {"linear": cv2.INTER_LINEAR, "area": cv2.INTER_AREA, "nearest": cv2.INTER_NEAREST,
                      "cubic": cv2.INTER_CUBIC, "lanczos": cv2.INTER_LANCZOS4}


def test_training_resize_draws_each_of_the_five_interpolations_reproducibly():
    # A noise image shrunk by a non-integer factor: the five interpolations give five different outputs.
    image = np.random.default_rng(0).integers(0, 256, (77, 91, 3), dtype=np.uint8)
    boxes, labels = np.array([[5, 5, 60, 50]], np.float32), np.array([1], np.int32)
    assert set(augment.INTERPOLATIONS) == set(CV2_INTERPOLATIONS)
    # No expansion, so no patch is plain mean fill (on which all five agree).
    singles = {name: TrainAugmentation(24, expand_probability=0.0, interpolations=(name,))
               for name in CV2_INTERPOLATIONS}
    drawn = []
    for seed in range(60):
        out = TrainAugmentation(24, expand_probability=0.0)(image, boxes, labels, np.random.default_rng(seed))[0]
        candidates = {name: aug(image, boxes, labels, np.random.default_rng(seed))[0] for name, aug in singles.items()}
        assert len({c.tobytes() for c in candidates.values()}) == 5
        matches = [name for name, c in candidates.items() if np.array_equal(c, out)]
        assert len(matches) == 1  # every other random choice is the same: only the interpolation is drawn
        drawn.append(matches[0])
    counts = {name: drawn.count(name) for name in CV2_INTERPOLATIONS}
    assert min(counts.values()) >= 5, counts  # uniform over five: 12 expected each in 60
    again = [TrainAugmentation(24, expand_probability=0.0)(image, boxes, labels, np.random.default_rng(seed))[0]
             for seed in range(3)]
    for seed, out in enumerate(again):
        np.testing.assert_array_equal(out, singles[drawn[seed]](image, boxes, labels, np.random.default_rng(seed))[0])


def test_unknown_interpolation_is_refused():
    with pytest.raises(ValueError, match="linear.*bicubic"):
        TrainAugmentation(16, interpolations=("bicubic",))
    with pytest.raises(ValueError, match="non-empty"):
        TrainAugmentation(16, interpolations=())


def test_validation_resize_is_linear(tmp_path):
    """Evaluation (and validation) warps with INTER_LINEAR, never a random interpolation."""
    from ssd.evaluation.loop import load_resized_batch
    from ssd.records import Sample

    image = np.random.default_rng(1).integers(0, 256, (41, 53, 3), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "a.png"), image[..., ::-1])
    _, batch, sizes = load_resized_batch([Sample("a", str(tmp_path / "a.png"), 53, 41)], (24, 30))
    assert sizes.tolist() == [[41, 53]]
    for name, flag in CV2_INTERPOLATIONS.items():
        assert np.array_equal(batch[0], cv2.resize(image, (30, 24), interpolation=flag)) == (name == "linear")


def test_photometric_never_touches_geometry():
    rng = np.random.default_rng(2)
    first = rng.integers(0, 256, (70, 90, 3), dtype=np.uint8)
    second = rng.integers(0, 256, (70, 90, 3), dtype=np.uint8)
    boxes = np.array([[5, 5, 40, 50], [30, 20, 88, 69]], np.float32)
    labels = np.array([1, 2], np.int32)
    aug = TrainAugmentation(40)
    for seed in range(20):
        _, b1, l1 = aug(first, boxes, labels, np.random.default_rng(seed))
        _, b2, l2 = aug(second, boxes, labels, np.random.default_rng(seed))
        np.testing.assert_array_equal(b1, b2)
        np.testing.assert_array_equal(l1, l2)


def test_inputs_never_mutated():
    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, (50, 60, 3), dtype=np.uint8)
    boxes = np.array([[5, 5, 40, 45]], np.float32)
    labels = np.array([4], np.int32)
    copies = image.copy(), boxes.copy(), labels.copy()
    for array in (image, boxes, labels):
        array.flags.writeable = False  # any in-place write raises
    for seed in range(30):
        TrainAugmentation(24)(image, boxes, labels, np.random.default_rng(seed))
    for array, copy in zip((image, boxes, labels), copies):
        np.testing.assert_array_equal(array, copy)


def test_empty_image_without_boxes():
    out, boxes, labels = TrainAugmentation(16)(
        np.zeros((20, 30, 3), np.uint8), np.zeros((0, 4), np.float32), np.zeros(0, np.int32),
        np.random.default_rng(0),
    )  # fmt: skip
    assert out.shape == (16, 16, 3) and boxes.shape == (0, 4) and labels.shape == (0,)


def test_bad_inputs_are_refused():
    aug = TrainAugmentation(16)
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="uint8"):
        aug(np.zeros((8, 8, 3), np.float32), np.zeros((0, 4)), np.zeros(0), rng)
    with pytest.raises(ValueError, match="label"):
        aug(np.zeros((8, 8, 3), np.uint8), np.zeros((2, 4)), np.zeros(1), rng)
    with pytest.raises(ValueError, match="image_size"):
        TrainAugmentation(0)


def test_transforms_pickle_round_trip():
    aug = pickle.loads(pickle.dumps(TrainAugmentation(32, clip_boxes=False)))
    assert (aug.image_size, aug.clip_boxes) == (32, False)
    image = np.random.default_rng(0).integers(0, 256, (40, 40, 3), dtype=np.uint8)
    boxes, labels = np.array([[1, 2, 30, 35]], np.float32), np.array([1], np.int32)
    a = aug(image, boxes, labels, np.random.default_rng(4))
    b = TrainAugmentation(32, clip_boxes=False)(image, boxes, labels, np.random.default_rng(4))
    np.testing.assert_array_equal(a[0], b[0])


def test_module_numbers_are_the_papers():
    assert augment.SAMPLERS == (None, 0.1, 0.3, 0.5, 0.7, 0.9, 0.0)
    assert (augment.PATCH_SCALE, augment.PATCH_ASPECT, augment.MAX_TRIALS) == ((0.3, 1.0), (0.5, 2.0), 50)
    assert augment.MAX_EXPAND == 4.0


# ---------------------------------------------------------------- image_io


def test_read_rgb_returns_rgb_order(tmp_path):
    image = np.zeros((6, 8, 3), np.uint8)
    image[..., 0] = 255  # red in RGB
    path = tmp_path / "red.png"  # lossless, so the colour is exact
    cv2.imwrite(str(path), image[..., ::-1])
    out = read_rgb(path)
    assert out.shape == (6, 8, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, image)


def test_read_rgb_refuses_missing_and_broken_files(tmp_path):
    with pytest.raises(ValueError, match="nothere.jpg.*does not exist"):
        read_rgb(tmp_path / "nothere.jpg")
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 not really a jpeg")
    with pytest.raises(ValueError, match="broken.jpg"):
        read_rgb(broken)
