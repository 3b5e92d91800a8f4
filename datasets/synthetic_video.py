"""Write an mp4 of synthetic shapes moving over a textured background, and its tracking ground truth.

Frames use the synthetic dataset's own drawing (datasets/synthetic.py: its textured
low-saturation backgrounds, class shapes and class hues, sensor grain), so a model trained on
that set detects the shapes here. What a tracker finds hard happens on purpose: the first two
shapes are of one class and cross each other head-on (the later one drawn over the earlier);
every shape changes speed and heading now and then; every third shape (the third, sixth, ...)
leaves the frame completely once and comes back (it turns round a little outside the first
border it reaches); otherwise shapes turn round with at most a third of themselves outside; later
shapes pass over earlier ones.

`--gt FILE` writes each object's identity per frame in MOTChallenge's gt.txt layout
(`ssd.mot`: frame, id, bb_left, bb_top, bb_width, bb_height, consider, class, visibility; 1-based).
Boxes bound the visible pixels, as the synthetic dataset annotates (and as the detector learns);
visibility is the visible share of the shape; class is the dataset's class id (1..6, its
classes.txt order). The boxes the dataset would call difficult -- less than half visible, or
smaller than its small side -- get consider = 0: evaluations ignore them.

    python tools/make_synthetic_video.py --out shapes.mp4 --gt shapes_gt.txt --frames 150
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ssd.mot import gt_lines

# The dataset's drawing helpers and its notion of a difficult object, so the video looks like its images.
from ssd_datasets.synthetic import (
    MIN_VISIBLE,
    SMALL_SIDE,
    SYNTHETIC_CLASSES,
    background_texture,
    object_colour,
    shape_mask,
)

_OUTSIDE = 0.3  # how far (share of its size) a leaving shape goes beyond the border before turning round
_INSIDE = 2 / 3  # the share of itself another shape keeps inside the frame
_STAYS, _LEAVES, _RETURNS = 0, 1, 2  # a shape's phases: it leaves the frame once, then stays
_MIN_SPEED, _MAX_SPEED = 0.5, 8.0  # pixels per frame


@dataclass
class _Mover:
    """One shape: mask (bool [h, w]), RGB colour, top-left position, velocity (pixels), next speed
    change, whether it leaves the frame."""

    name: str
    mask: np.ndarray
    colour: np.ndarray
    position: np.ndarray
    velocity: np.ndarray
    next_change: int
    phase: int  # _LEAVES: turns round outside the frame at the next border; _RETURNS: coming back; _STAYS


@dataclass(frozen=True)
class FrameTruth:
    """The objects visible in one frame (K rows each)."""

    ids: np.ndarray  # int [K], 1-based object identities, stable over the video
    boxes_xyxy: np.ndarray  # float64 [K, 4], 0-based pixels of the visible part
    class_ids: np.ndarray  # int [K], 1..6 in SYNTHETIC_CLASSES order
    visibilities: np.ndarray  # float64 [K], visible share of the whole shape
    considered: np.ndarray  # bool [K]: False for what the dataset would mark difficult

    @property
    def names(self) -> list[str]:
        return [SYNTHETIC_CLASSES[c - 1] for c in self.class_ids]


def _movers(rng: np.random.Generator, width: int, height: int, count: int) -> list[_Mover]:
    movers = []
    smaller = min(width, height)
    crossing = SYNTHETIC_CLASSES[rng.integers(len(SYNTHETIC_CLASSES))]
    for k in range(count):
        name = crossing if k < 2 else SYNTHETIC_CLASSES[rng.integers(len(SYNTHETIC_CLASSES))]
        side = rng.uniform(min(40.0, 0.25 * smaller), 0.45 * smaller)
        mask = shape_mask(name, side, side * rng.uniform(0.8, 1.25), rng)
        h, w = mask.shape
        speed = rng.uniform(1.5, 4.0)
        if k < 2:  # head-on from the left and right edges, a little apart vertically
            y = height / 2 - h / 2 + (k - 0.5) * 0.15 * h
            position = np.array([0.0 if k == 0 else width - w, y])
            velocity = np.array([speed if k == 0 else -speed, 0.0])
        else:
            position = np.array([rng.uniform(0, max(width - w, 1)), rng.uniform(0, max(height - h, 1))])
            angle = rng.uniform(0, 2 * np.pi)
            velocity = speed * np.array([np.cos(angle), np.sin(angle)])
        colour = object_colour(name, rng).astype(np.float32)
        movers.append(_Mover(name, mask.astype(bool), colour, position, velocity, int(rng.integers(30, 60)),
                             phase=_LEAVES if k % 3 == 2 else _STAYS))
    return movers


def synthetic_scene(
    num_frames: int, width: int, height: int, seed: int = 0, num_objects: int = 4
) -> Iterator[tuple[np.ndarray, FrameTruth]]:
    """Frames of moving shapes with their ground truth: (uint8 [H, W, 3] RGB, FrameTruth)."""
    if num_frames < 1 or width < 64 or height < 64 or num_objects < 1:
        raise ValueError(f"need num_frames >= 1, width and height >= 64, num_objects >= 1; "
                         f"got {num_frames}, {width}x{height}, {num_objects}")
    rng = np.random.default_rng(seed)
    background = background_texture(width, height, rng)  # float32 [3, H, W]
    movers = _movers(rng, width, height, num_objects)
    for t in range(num_frames):
        planes = background.copy()
        owner = np.full((height, width), -1, np.int16)  # which shape each pixel shows
        for k, mover in enumerate(movers):
            _paint(planes, owner, k, mover, width, height)
        truth = _truth(owner, movers)
        for mover in movers:
            _step(mover, width, height, t, rng)
        planes += rng.standard_normal((height, width), dtype=np.float32) * np.float32(4.0)  # grain
        yield cv2.merge(list(np.clip(planes, 0, 255).astype(np.uint8))), truth


def synthetic_frames(
    num_frames: int, width: int, height: int, seed: int = 0, num_objects: int = 4
) -> Iterator[tuple[np.ndarray, np.ndarray, list[str]]]:
    """`synthetic_scene` as (uint8 [H, W, 3] RGB, visible boxes float [K, 4] "xyxy" pixels, class names)."""
    for frame, truth in synthetic_scene(num_frames, width, height, seed, num_objects):
        yield frame, truth.boxes_xyxy, truth.names


def _paint(planes: np.ndarray, owner: np.ndarray, index: int, mover: _Mover, width: int, height: int) -> None:
    """Draw the shape into the float [3, H, W] planes and mark its pixels in `owner`."""
    h, w = mover.mask.shape
    left, top = (int(round(v)) for v in mover.position)
    x0, y0, x1, y1 = max(left, 0), max(top, 0), min(left + w, width), min(top + h, height)
    if x1 <= x0 or y1 <= y0:
        return
    visible = mover.mask[y0 - top : y1 - top, x0 - left : x1 - left]
    planes[:, y0:y1, x0:x1][:, visible] = mover.colour[:, None]
    owner[y0:y1, x0:x1][visible] = index


def _truth(owner: np.ndarray, movers: list[_Mover]) -> FrameTruth:
    """The visible part of each shape (painted last wins) as boxes, visibilities and difficulty."""
    ids, boxes, classes, visibilities, considered = [], [], [], [], []
    for k, mover in enumerate(movers):
        ys, xs = np.nonzero(owner == k)
        if len(xs) == 0:
            continue
        box = (float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1))
        visibility = len(xs) / np.count_nonzero(mover.mask)
        ids.append(k + 1)
        boxes.append(box)
        classes.append(SYNTHETIC_CLASSES.index(mover.name) + 1)
        visibilities.append(visibility)
        considered.append(visibility >= MIN_VISIBLE and min(box[2] - box[0], box[3] - box[1]) >= SMALL_SIDE)
    return FrameTruth(np.array(ids, int), np.array(boxes, np.float64).reshape(-1, 4), np.array(classes, int),
                      np.array(visibilities, np.float64), np.array(considered, bool))


def _step(mover: _Mover, width: int, height: int, t: int, rng: np.random.Generator) -> None:
    """Move one frame on: now and then a new speed and heading; turn round at the borders."""
    if t == mover.next_change:
        speed = np.clip(np.hypot(*mover.velocity) * rng.uniform(0.4, 2.5), _MIN_SPEED, _MAX_SPEED)
        angle = np.arctan2(mover.velocity[1], mover.velocity[0]) + np.deg2rad(rng.uniform(-40, 40))
        mover.velocity = speed * np.array([np.cos(angle), np.sin(angle)])
        mover.next_change = t + int(rng.integers(20, 50))
    h, w = mover.mask.shape
    mover.position += mover.velocity
    inner_lo = np.array([-(1 - _INSIDE) * w, -(1 - _INSIDE) * h])
    inner_hi = np.array([width - _INSIDE * w, height - _INSIDE * h])
    if mover.phase == _RETURNS and np.all((inner_lo <= mover.position) & (mover.position <= inner_hi)):
        mover.phase = _STAYS
    if mover.phase == _STAYS:
        lo, hi = inner_lo, inner_hi
    else:  # leaving or coming back: turn round only beyond the border
        lo = np.array([-(1 + _OUTSIDE) * w, -(1 + _OUTSIDE) * h])
        hi = np.array([width + _OUTSIDE * w, height + _OUTSIDE * h])
    for axis in range(2):
        if not lo[axis] <= mover.position[axis] <= hi[axis]:
            mover.velocity[axis] = -mover.velocity[axis]
            mover.position[axis] = np.clip(mover.position[axis], lo[axis], hi[axis])
            if mover.phase == _LEAVES:
                mover.phase = _RETURNS


def write_synthetic_video(
    path: str | Path, num_frames: int = 120, fps: float = 25.0, width: int = 480, height: int = 360,
    seed: int = 0, num_objects: int = 4, gt_path: str | Path | None = None,
) -> Path:
    """Write `synthetic_scene` as an mp4 ('mp4v') at `path`, or an .avi (Motion JPEG); returns the path.

    With `gt_path`, also the ground truth there (MOTChallenge gt.txt layout, see the module docstring).

    mp4 needs even sizes (OpenCV's FFmpeg writer would silently drop an odd last column or row);
    OpenCV's own Motion JPEG writer keeps any size, so an odd-sized clip is refused as .mp4 and
    written as .avi.
    """
    path = Path(path)
    if path.suffix.lower() != ".avi" and (width % 2 or height % 2):
        raise ValueError(f"{path}: an mp4 holds even sizes only, {width}x{height} would be written as "
                         f"{width - width % 2}x{height - height % 2}; choose even sizes or an .avi file (any size)")
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".avi":
        writer = cv2.VideoWriter(str(path), cv2.CAP_OPENCV_MJPEG, cv2.VideoWriter_fourcc(*"MJPG"), fps, (width, height))
    else:
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    if not writer.isOpened():
        raise ValueError(f"cannot write video {path} (mp4v, {width}x{height} @ {fps})")
    lines = []
    try:
        for t, (frame, truth) in enumerate(synthetic_scene(num_frames, width, height, seed, num_objects)):
            writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
            lines.append(gt_lines(t + 1, truth.ids, truth.boxes_xyxy, truth.considered.astype(int), truth.class_ids,
                                  truth.visibilities))
    finally:
        writer.release()
    if gt_path is not None:
        Path(gt_path).parent.mkdir(parents=True, exist_ok=True)
        Path(gt_path).write_text("".join(lines))
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("shapes.mp4"),
                   help="mp4 to write, or .avi for Motion JPEG (any size; mp4 needs even sizes) (default: shapes.mp4)")
    p.add_argument("--frames", type=int, default=120, help="number of frames (default: 120)")
    p.add_argument("--fps", type=float, default=25.0, help="frame rate (default: 25)")
    p.add_argument("--width", type=int, default=480, help="frame width (default: 480)")
    p.add_argument("--height", type=int, default=360, help="frame height (default: 360)")
    p.add_argument("--objects", type=int, default=4, help="moving shapes (default: 4)")
    p.add_argument("--seed", type=int, default=0, help="same seed, same video (default: 0)")
    p.add_argument("--gt", type=Path, help="also write the objects' identities per frame here (MOTChallenge gt.txt)")
    args = p.parse_args(argv)
    try:
        write_synthetic_video(args.out, args.frames, args.fps, args.width, args.height, args.seed, args.objects,
                              args.gt)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {args.frames} frames {args.width}x{args.height} @ {args.fps:g} fps to {args.out}"
          + (f", ground truth to {args.gt}" if args.gt else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
