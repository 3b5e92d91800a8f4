"""Benchmark tracking: its cost per frame against the model's, and its identities against an IoU-only linker.

(a) Quality, on one video with ground truth (default: a synthetic one made here with
    ssd_datasets.synthetic_video, its gt.txt beside it) and a trained model (--model, any exported
    format): the model runs once over every frame; on those same detections
      - ByteTrack (ssd.deploy.tracking, the paper's thresholds) sees every detection >= its low
        score threshold;
      - the baseline links each detection >= --baseline-threshold to the detection of its class in
        the previous frame with the highest IoU (>= --baseline-iou, each taken once, highest scores
        first), else starts a new id: no motion model, no memory beyond one frame, no low-score pass.
    Both are scored by TrackEval (ssd.evaluation.tracking): HOTA, MOTA, IDF1, ID switches.
(b) Cost: ByteTrack's time per frame (median over frames) on synthetic detection sets of 10, 100
    and 500 boxes per frame (objects moving at constant velocity with jitter, scores spread over
    0.05..1, the demo's 6 classes), against the model's time per frame from (a).

    python tools/benchmarks/benchmark_tracking.py --model export/ [--video clip.mp4 --gt gt.txt] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import cv2
import numpy as np

from ssd.deploy.runtimes import load_model
from ssd.deploy.tracking import ByteTracker, TrackerOptions
from ssd.detections import ImageDetections, select_detections
from ssd.evaluation.tracking import evaluate_mot
from ssd.mot import result_lines
from ssd.overlap import iou_matrix
from ssd_datasets.synthetic_video import write_synthetic_video

QUALITY_FIELDS = ("HOTA", "MOTA", "IDF1", "ID_switches", "misses", "false_positives")


def detect_frames(video: Path, model: Path, batch_size: int,
                  threshold: float) -> tuple[list[ImageDetections], float]:
    """The model's detections (score >= threshold) on every frame, and its median ms per frame."""
    detect, _, _ = load_model(model)
    capture = cv2.VideoCapture(str(video))
    frames = []
    while (frame := capture.read()[1]) is not None:
        frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
    capture.release()
    if not frames:
        raise ValueError(f"video {video} has no decodable frame")
    height, width = frames[0].shape[:2]
    detect(np.stack(frames[:batch_size]))  # warm-up
    detections, per_frame = [], []
    for start in range(0, len(frames), batch_size):
        batch = np.stack(frames[start : start + batch_size])
        tic = time.perf_counter()
        outputs = detect(batch)
        per_frame.append(1000 * (time.perf_counter() - tic) / len(batch))
        detections += [select_detections(outputs, i, width, height, threshold) for i in range(len(batch))]
    return detections, statistics.median(per_frame)


def bytetrack_ids(detections: list[ImageDetections], fps: float) -> list[ImageDetections]:
    tracker = ByteTracker(TrackerOptions(), fps)
    return [d.tracked(tracker.update(d.boxes_xyxy, d.scores, d.class_ids)) for d in detections]


def iou_linker_ids(detections: list[ImageDetections], threshold: float, min_iou: float) -> list[ImageDetections]:
    """The baseline: each detection takes the id of the best-overlapping one of its class in the last frame."""
    out, previous, next_id = [], None, 1
    for d in detections:
        kept = d.tracked((d.scores >= threshold).astype(int))  # the rows at or above the threshold
        ids = np.zeros(len(kept.scores), int)
        if previous is not None and len(ids) and len(previous.scores):
            iou = iou_matrix(kept.boxes_xyxy, previous.boxes_xyxy)
            iou[kept.class_ids[:, None] != previous.class_ids[None, :]] = 0.0
            taken = np.zeros(len(previous.scores), bool)
            for row in np.argsort(-kept.scores, kind="stable"):
                candidates = np.where(taken, -1.0, iou[row])
                best = int(np.argmax(candidates))
                if candidates[best] >= min_iou:
                    ids[row], taken[best] = previous.track_ids[best], True
        for row in np.flatnonzero(ids == 0):
            ids[row], next_id = next_id, next_id + 1
        previous = kept.tracked(ids)
        out.append(previous)
    return out


def score(tracks: list[ImageDetections], gt: Path, work: Path, name: str) -> dict:
    path = work / f"{name}.txt"
    path.write_text("".join(result_lines(k + 1, t.track_ids, t.boxes_xyxy, t.scores) for k, t in enumerate(tracks)))
    summary = evaluate_mot(gt, path, len(tracks))
    return {field: summary[field] for field in QUALITY_FIELDS}


def synthetic_detections(count: int, frames: int, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """`count` boxes per frame moving at constant velocity with jitter on a 1920x1080 frame."""
    rng = np.random.default_rng(seed)
    start = rng.uniform([0, 0], [1880, 1040], (count, 2))
    size = rng.uniform(20, 60, (count, 2))
    velocity = rng.normal(0, 3, (count, 2))
    scores = rng.uniform(0.05, 1.0, count)
    classes = rng.integers(1, 7, count)
    out = []
    for t in range(frames):
        corner = start + velocity * t + rng.normal(0, 1, (count, 2))
        out.append((np.concatenate([corner, corner + size], axis=1), scores, classes))
    return out


def tracking_cost(counts: list[int], frames: int) -> dict[int, float]:
    """Median ms per frame of ByteTracker.update at each detection count (first 10 frames not counted)."""
    result = {}
    for count in counts:
        tracker, times = ByteTracker(), []
        for boxes, scores, classes in synthetic_detections(count, frames):
            tic = time.perf_counter()
            tracker.update(boxes, scores, classes)
            times.append(1000 * (time.perf_counter() - tic))
        result[count] = statistics.median(times[10:])
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, required=True, help="a trained exported model (any format)")
    p.add_argument("--video", type=Path, help="video to track (default: a synthetic one made here)")
    p.add_argument("--gt", type=Path, help="its MOTChallenge ground truth (required with --video)")
    p.add_argument("--frames", type=int, default=300, help="frames of the synthetic video (default: 300)")
    p.add_argument("--objects", type=int, default=6, help="shapes in the synthetic video (default: 6)")
    p.add_argument("--seed", type=int, default=1, help="seed of the synthetic video (default: 1)")
    p.add_argument("--batch-size", type=int, default=8, help="frames per graph call (default: 8)")
    p.add_argument("--baseline-threshold", type=float, default=0.5,
                   help="score threshold of the IoU-only baseline (default: 0.5, detect.py's own)")
    p.add_argument("--baseline-iou", type=float, default=0.3, help="least IoU the baseline links (default: 0.3)")
    p.add_argument("--counts", default="10,100,500", help="detections per frame for the cost table")
    p.add_argument("--cost-frames", type=int, default=200, help="frames per detection count (default: 200)")
    p.add_argument("--json", type=Path, help="also write the results here")
    args = p.parse_args(argv)
    if (args.video is None) != (args.gt is None):
        print("error: --video and --gt go together", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        video, gt, fps = args.video, args.gt, 25.0
        if video is None:
            video, gt = work / "shapes.mp4", work / "gt.txt"
            write_synthetic_video(video, args.frames, fps, seed=args.seed, num_objects=args.objects, gt_path=gt)
        else:
            capture = cv2.VideoCapture(str(video))
            fps = capture.get(cv2.CAP_PROP_FPS) or fps
            capture.release()
        low = TrackerOptions().low_score
        detections, model_ms = detect_frames(video, args.model, args.batch_size, low)
        quality = {"ByteTrack": score(bytetrack_ids(detections, fps), gt, work, "bytetrack"),
                   "IoU-only baseline": score(iou_linker_ids(detections, args.baseline_threshold, args.baseline_iou),
                                              gt, work, "baseline")}
    cost = tracking_cost([int(c) for c in args.counts.split(",")], args.cost_frames)
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else ""
    print(f"{cpu}, {os.cpu_count()} cores; {len(detections)} frames of {video.name}, model {args.model}")
    print(f"\n{'tracker':<18}" + "".join(f"{f:>16}" for f in QUALITY_FIELDS))
    for name, row in quality.items():
        print(f"{name:<18}" + "".join(f"{row[f]:>16.3f}" if isinstance(row[f], float) else f"{row[f]:>16d}"
                                      for f in QUALITY_FIELDS))
    switches = quality["IoU-only baseline"]["ID_switches"] / max(quality["ByteTrack"]["ID_switches"], 1)
    print(f"ID switches: baseline / ByteTrack = {switches:.1f}x (ByteTrack 0 counted as 1)")
    print(f"\nmodel: {model_ms:.2f} ms/frame (median over batches of {args.batch_size})")
    print(f"{'detections/frame':>18}{'tracker ms/frame':>18}{'% of model':>12}")
    for count, ms in cost.items():
        print(f"{count:>18}{ms:>18.3f}{100 * ms / model_ms:>11.1f}%")
    if args.json:
        args.json.write_text(json.dumps({"cpu": cpu, "frames": len(detections), "model_ms_per_frame": model_ms,
                                         "quality": quality, "switch_ratio": switches,
                                         "tracker_ms_per_frame": {str(k): v for k, v in cost.items()}}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
