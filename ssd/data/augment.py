"""The SSD training augmentation (the Caffe release's chain) on uint8 images, NumPy + OpenCV.

Order, as in Caffe: photometric distortion -> expand onto a mean-filled canvas -> patch
sampling (crop) -> resize (warp) to the input size, with an interpolation drawn at random among
linear, area, nearest, cubic and Lanczos (Caffe's train `resize_param`; validation and test
resize bilinearly) -> horizontal flip. Boxes travel along in "xyxy" pixels and leave as
"rel_xyxy" of the output image.

Where the work happens (exact, not approximate): the photometric ops are per-pixel maps
(brightness, contrast, and HSV saturation / hue each map one pixel's value to a new value using
only that pixel), so they commute exactly with cropping and with flipping. Caffe distorts the
whole image before expanding, so the mean fill is never distorted. We therefore draw all the
random choices first, then distort only the pixels of the original image that end up inside the
patch and paste them onto the (undistorted) mean canvas of the patch. The result is the same
pixel for pixel as distorting everything first; only work on pixels that are cropped away is
saved. Resizing, in contrast, does not commute with the non-linear ops, so we never distort
after the resize.

Differences from Caffe, on purpose: saturation and hue share one RGB->HSV->RGB round trip
(Caffe converts twice, losing a little more to rounding); the hue shift of +-18 degrees is
+-9 units of OpenCV's 0..179 uint8 hue and wraps around (Caffe saturates); a sampled patch must
keep at least one box centre when the image has boxes (as in most ports; Caffe may emit patches
with no boxes at all).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from ssd.config import CAFFE_BGR_MEAN
from ssd.image_io import resize_rgb
from ssd.overlap import iou_matrix

MEAN_RGB = CAFFE_BGR_MEAN[::-1]  # the canvas fill, in the images' RGB order

# Patch samplers: None is the whole image, a number the minimum IoU with some ground-truth box
# (0.0 = unconstrained). Scale and aspect ratio ranges are the Caffe prototxt's.
SAMPLERS: tuple[float | None, ...] = (None, 0.1, 0.3, 0.5, 0.7, 0.9, 0.0)
PATCH_SCALE = (0.3, 1.0)
PATCH_ASPECT = (0.5, 2.0)
# The training resize's interpolations, drawn uniformly (ssd_pascal.py's train `interp_mode`).
INTERPOLATIONS: dict[str, int] = {
    "linear": cv2.INTER_LINEAR, "area": cv2.INTER_AREA, "nearest": cv2.INTER_NEAREST,
    "cubic": cv2.INTER_CUBIC, "lanczos": cv2.INTER_LANCZOS4,
}
MAX_TRIALS = 50
MAX_EXPAND = 4.0
BRIGHTNESS_DELTA = 32.0
CONTRAST_RANGE = (0.5, 1.5)
SATURATION_RANGE = (0.5, 1.5)
HUE_DELTA_DEGREES = 18.0

_IDENTITY = np.arange(256, dtype=np.float64)


@dataclass(frozen=True)
class Photometric:
    """Drawn photometric parameters; None means the op is off for this image."""

    brightness: float | None = None
    contrast: float | None = None
    saturation: float | None = None
    hue_degrees: float | None = None
    contrast_first: bool = True


def draw_photometric(rng: np.random.Generator) -> Photometric:
    """Each op on with p=0.5; contrast before or after the HSV ops with p=0.5 (Caffe's two orders)."""
    contrast_first = bool(rng.random() < 0.5)

    def maybe(low: float, high: float) -> float | None:
        on = rng.random() < 0.5
        value = rng.uniform(low, high)  # drawn either way: a fixed number of draws per image
        return float(value) if on else None

    return Photometric(
        brightness=maybe(-BRIGHTNESS_DELTA, BRIGHTNESS_DELTA),
        contrast=maybe(*CONTRAST_RANGE),
        saturation=maybe(*SATURATION_RANGE),
        hue_degrees=maybe(-HUE_DELTA_DEGREES, HUE_DELTA_DEGREES),
        contrast_first=contrast_first,
    )


def _to_uint8(values: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)


def distort(image: np.ndarray, params: Photometric) -> np.ndarray:
    """Apply photometric `params` to uint8 [H, W, 3] RGB; returns a new array or `image` itself.

    Brightness adds, contrast multiplies (about 0, like Caffe), both saturating; saturation
    multiplies the HSV S channel; hue adds to the H channel modulo 180 (OpenCV's uint8 hue is
    degrees / 2, so the shift is rounded to 2-degree steps). Adjacent value maps are composed into one cv2.LUT.
    """
    if image.size == 0:
        return image
    use_hsv = params.saturation is not None or params.hue_degrees is not None
    before = _IDENTITY
    if params.brightness is not None:
        before = np.clip(np.rint(before + params.brightness), 0, 255)
    contrast_lut = None
    if params.contrast is not None:
        if params.contrast_first or not use_hsv:
            before = np.clip(np.rint(before * params.contrast), 0, 255)
        else:
            contrast_lut = _to_uint8(_IDENTITY * params.contrast)
    out = image
    if before is not _IDENTITY:
        out = cv2.LUT(out, before.astype(np.uint8))
    if use_hsv:
        # Per-channel LUTs on split planes: cheaper than a 3-channel LUT with an identity V.
        h, s, v = cv2.split(cv2.cvtColor(out, cv2.COLOR_RGB2HSV))
        if params.hue_degrees is not None:
            hue = np.rint(_IDENTITY + params.hue_degrees / 2.0) % 180
            h = cv2.LUT(h, _to_uint8(np.where(_IDENTITY < 180, hue, _IDENTITY)))  # 180+ never occur
        if params.saturation is not None:
            s = cv2.LUT(s, _to_uint8(_IDENTITY * params.saturation))
        out = cv2.cvtColor(cv2.merge((h, s, v)), cv2.COLOR_HSV2RGB)
    if contrast_lut is not None:
        out = cv2.LUT(out, contrast_lut)
    return out


def draw_expand(
    rng: np.random.Generator, width: int, height: int, max_ratio: float = MAX_EXPAND
) -> tuple[int, int, int, int]:
    """Canvas for expand: (left, top, canvas_width, canvas_height), same ratio on both sides."""
    ratio = rng.uniform(1.0, max_ratio)
    canvas_w, canvas_h = int(width * ratio), int(height * ratio)
    left = int(rng.uniform(0.0, canvas_w - width))
    top = int(rng.uniform(0.0, canvas_h - height))
    return left, top, canvas_w, canvas_h


def centres_inside(boxes: np.ndarray, patches: np.ndarray) -> np.ndarray:
    """Whether the centre of each box [N, 4] lies strictly inside each patch [P, 4] -> [P, N]."""
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2.0
    return np.all((centre[None] > patches[:, None, :2]) & (centre[None] < patches[:, None, 2:]), axis=-1)


def try_patch(
    rng: np.random.Generator,
    width: int,
    height: int,
    boxes: np.ndarray,
    min_iou: float,
    max_trials: int = MAX_TRIALS,
) -> tuple[int, int, int, int] | None:
    """One patch sampler: up to `max_trials` random patches, the first that satisfies it.

    A patch of scale s in [0.3, 1] and aspect ratio r in [0.5, 2] (relative to the canvas,
    constrained to [s^2, 1/s^2] so it fits) is s*sqrt(r) of the width by s/sqrt(r) of the height.
    It satisfies the sampler when some box has IoU >= `min_iou` with it and, if there are boxes,
    some box centre lies inside it. All trials are drawn at once (vectorised, bounded work).

    Args:
        boxes: float [N, 4] "xyxy" pixels on the canvas of size width x height.
    Returns:
        the patch as integer "xyxy" pixels (x0, y0, x1, y1) on the canvas, or None.
    """
    scale = rng.uniform(*PATCH_SCALE, max_trials)
    low = np.maximum(PATCH_ASPECT[0], scale**2)
    high = np.minimum(PATCH_ASPECT[1], 1.0 / scale**2)
    aspect = low + (high - low) * rng.random(max_trials)
    w, h = scale * np.sqrt(aspect), scale / np.sqrt(aspect)
    x0 = np.floor(rng.random(max_trials) * (1.0 - w) * width)
    y0 = np.floor(rng.random(max_trials) * (1.0 - h) * height)
    x1 = np.minimum(x0 + np.maximum(np.round(w * width), 1), width)
    y1 = np.minimum(y0 + np.maximum(np.round(h * height), 1), height)
    patches = np.stack([x0, y0, x1, y1], axis=1)
    if len(boxes):
        ok = np.any(iou_matrix(patches, boxes) >= min_iou, axis=1) & np.any(centres_inside(boxes, patches), axis=1)
    else:
        ok = np.full(max_trials, min_iou <= 0.0)
    hits = np.flatnonzero(ok)
    if not len(hits):
        return None
    return tuple(int(v) for v in patches[hits[0]])  # type: ignore[return-value]


def sample_patch(
    rng: np.random.Generator, width: int, height: int, boxes: np.ndarray, max_trials: int = MAX_TRIALS
) -> tuple[int, int, int, int]:
    """Pick a patch like Caffe's batch sampler: integer "xyxy" pixels on the width x height canvas.

    Caffe runs every sampler (each keeping its first success) and then picks one of the
    successes uniformly. Trying the samplers in a random order and taking the first success is
    the same distribution (each success is equally likely to come first) with less work; the
    whole-image sampler always succeeds, so the loop ends there at the latest.
    """
    for index in rng.permutation(len(SAMPLERS)):
        min_iou = SAMPLERS[index]
        if min_iou is None:
            break
        patch = try_patch(rng, width, height, boxes, min_iou, max_trials)
        if patch is not None:
            return patch
    return 0, 0, width, height


def crop_boxes(
    boxes: np.ndarray, labels: np.ndarray, patch: tuple[int, int, int, int], clip: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Boxes whose centre is inside `patch`, in patch pixels; clipped to it when `clip`.

    Args:
        boxes: float32 [N, 4] "xyxy" pixels; labels: int32 [N]; patch: integer "xyxy".
    Returns:
        float32 [M, 4] "xyxy" pixels relative to the patch, int32 [M]; zero-size boxes dropped.
    """
    x0, y0, x1, y1 = patch
    keep = centres_inside(boxes, np.array([patch], np.float64))[0]
    kept = boxes[keep] - np.array([x0, y0, x0, y0], np.float32)
    if clip:
        kept = np.clip(kept, 0.0, np.array([x1 - x0, y1 - y0] * 2, np.float32))
    size_ok = (kept[:, 2] > kept[:, 0]) & (kept[:, 3] > kept[:, 1])
    return kept[size_ok].astype(np.float32), labels[keep][size_ok].astype(np.int32)


def flip_boxes(boxes: np.ndarray) -> np.ndarray:
    """Mirror "rel_xyxy" boxes [N, 4] left-right: (x0, y0, x1, y1) -> (1 - x1, y0, 1 - x0, y1)."""
    return np.stack([1.0 - boxes[:, 2], boxes[:, 1], 1.0 - boxes[:, 0], boxes[:, 3]], axis=1)


def render_patch(
    image: np.ndarray,
    left: int,
    top: int,
    patch: tuple[int, int, int, int],
    fill: np.ndarray,
    params: Photometric,
) -> np.ndarray:
    """Pixels of `patch` on the expand canvas (image at (left, top), `fill` elsewhere).

    Only the part of `image` inside the patch is distorted with `params` (see the module
    docstring for why this equals distorting the whole image first). Returns uint8 [h, w, 3],
    possibly a view of a new array; `image` is never written.
    """
    height, width = image.shape[:2]
    px0, py0, px1, py1 = patch
    ix0, iy0 = max(px0, left), max(py0, top)
    ix1, iy1 = min(px1, left + width), min(py1, top + height)
    if ix1 <= ix0 or iy1 <= iy0:  # the patch shows only mean fill: pad one fill pixel out
        region, ix0, iy0, ix1, iy1 = fill.reshape(1, 1, 3), px0, py0, px0 + 1, py0 + 1
    else:
        region = distort(image[iy0 - top : iy1 - top, ix0 - left : ix1 - left], params)
    if (ix0, iy0, ix1, iy1) == (px0, py0, px1, py1):
        return region
    # One C call writes the mean border around the region (a NumPy fill of [h, w, 3] is slow:
    # its innermost loop is only 3 long).
    return cv2.copyMakeBorder(
        region, iy0 - py0, py1 - iy1, ix0 - px0, px1 - ix1, cv2.BORDER_CONSTANT,
        value=tuple(int(v) for v in fill),
    )  # fmt: skip


def _check_inputs(image: np.ndarray, boxes: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be uint8 [H, W, 3] RGB, got {image.dtype} {image.shape}")
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    labels = np.asarray(labels, np.int32).reshape(-1)
    if len(labels) != len(boxes):
        raise ValueError(f"need one label per box, got {len(labels)} labels for {len(boxes)} boxes")
    return boxes, labels


class TrainAugmentation:
    """The SSD training chain: uint8 RGB + "xyxy" pixel boxes -> uint8 [S, S, 3] + "rel_xyxy".

    A plain class (picklable, for spawned workers); all randomness comes from the `rng` passed
    to each call, so a seed reproduces the output exactly.
    """

    def __init__(
        self,
        image_size: int,
        mean_rgb: tuple[float, float, float] = MEAN_RGB,
        clip_boxes: bool = True,
        expand_probability: float = 0.5,
        interpolations: tuple[str, ...] = tuple(INTERPOLATIONS),
    ) -> None:
        if image_size <= 0:
            raise ValueError(f"image_size must be positive, got {image_size}")
        if not 0.0 <= expand_probability <= 1.0:
            raise ValueError(f"expand_probability must be in [0, 1], got {expand_probability}")
        unknown = [name for name in interpolations if name not in INTERPOLATIONS]
        if unknown or not interpolations:
            raise ValueError(f"interpolations must be a non-empty subset of {tuple(INTERPOLATIONS)}, "
                             f"got {tuple(interpolations)!r}")
        self.interpolations = tuple(interpolations)
        # The paper's 0.5 adds small-object practice for long runs; short runs converge faster without.
        self.expand_probability = float(expand_probability)
        self.image_size = int(image_size)
        self.mean_rgb = tuple(float(m) for m in mean_rgb)
        self.clip_boxes = bool(clip_boxes)

    def __call__(
        self, image: np.ndarray, boxes: np.ndarray, labels: np.ndarray, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Augment one image.

        Args:
            image: uint8 [H, W, 3] RGB; boxes: float32 [N, 4] "xyxy" pixels; labels: int32 [N].
        Returns:
            uint8 [S, S, 3] RGB, float32 [M, 4] "rel_xyxy" (in [0, 1] when clipping), int32 [M].
        """
        boxes, labels = _check_inputs(image, boxes, labels)
        height, width = image.shape[:2]
        params = draw_photometric(rng)
        left, top, canvas_w, canvas_h = 0, 0, width, height
        if rng.random() < self.expand_probability:
            left, top, canvas_w, canvas_h = draw_expand(rng, width, height)
        canvas_boxes = boxes + np.array([left, top, left, top], np.float32)
        patch = sample_patch(rng, canvas_w, canvas_h, canvas_boxes)
        fill = np.rint(np.array(self.mean_rgb)).astype(np.uint8)
        pixels = render_patch(image, left, top, patch, fill, params)
        out_boxes, out_labels = crop_boxes(canvas_boxes, labels, patch, self.clip_boxes)
        flip = rng.random() < 0.5
        # Drawn last, so the other draws of a seed do not depend on the list of interpolations.
        interpolation = INTERPOLATIONS[self.interpolations[rng.integers(len(self.interpolations))]]
        out = resize_rgb(pixels, self.image_size, self.image_size, interpolation)
        patch_w, patch_h = patch[2] - patch[0], patch[3] - patch[1]
        out_boxes = out_boxes / np.array([patch_w, patch_h, patch_w, patch_h], np.float32)
        if flip:
            out, out_boxes = cv2.flip(out, 1), flip_boxes(out_boxes)
        return out, out_boxes.astype(np.float32).reshape(-1, 4), out_labels
