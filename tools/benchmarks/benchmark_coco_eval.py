"""Benchmark: pycocotools against faster-coco-eval on one COCO-val-sized bbox evaluation, side by side.

Generates ground truth (N images of 640x480, 1-14 objects of 80 categories, 1% crowd) and 100
detections per image (the true boxes jittered, the rest random), then times loadRes + evaluate +
accumulate + summarize for each library and compares their 12 numbers. faster-coco-eval is not a
dependency of this project: its row is skipped unless it is installed (`pip install
faster-coco-eval`). This is the measurement behind keeping pycocotools (see the README).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np


def make_case(num_images: int, seed: int = 0) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(ground truth COCO dataset, results list) with 100 detections per image."""
    rng = np.random.default_rng(seed)
    categories = list(range(1, 81))
    images, annotations, detections = [], [], []
    for image_id in range(1, num_images + 1):
        width, height = 640, 480
        images.append({"id": image_id, "width": width, "height": height})
        n = int(rng.integers(1, 15))
        for _ in range(n):
            x, y = rng.uniform(0, width - 50), rng.uniform(0, height - 50)
            w, h = rng.uniform(5, width - x), rng.uniform(5, height - y)
            category = int(rng.choice(categories))
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": category,
                                "bbox": [x, y, w, h], "area": w * h, "iscrowd": int(rng.random() < 0.01)})
            detections.append({"image_id": image_id, "category_id": category, "score": float(rng.random()),
                               "bbox": [x + rng.normal(0, 5), y + rng.normal(0, 5), w, h]})
        for _ in range(100 - n):
            x, y = rng.uniform(0, width - 50), rng.uniform(0, height - 50)
            detections.append({"image_id": image_id, "category_id": int(rng.choice(categories)),
                               "score": float(rng.random()),
                               "bbox": [x, y, rng.uniform(5, 200), rng.uniform(5, 200)]})
    dataset = {"images": images, "annotations": annotations,
               "categories": [{"id": c, "name": str(c)} for c in categories]}
    return dataset, detections


def run_once(coco_cls, eval_cls, dataset: dict[str, Any], detections: list[dict[str, Any]]) -> tuple[float, np.ndarray]:
    """Seconds of loadRes + evaluate + accumulate + summarize, and the 12 numbers."""
    with contextlib.redirect_stdout(io.StringIO()):
        gt = coco_cls()
        gt.dataset = copy.deepcopy(dataset)
        gt.createIndex()
        results = copy.deepcopy(detections)
        start = time.perf_counter()
        evaluation = eval_cls(gt, gt.loadRes(results), "bbox")
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
        return time.perf_counter() - start, np.array(evaluation.stats)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=5000, help="images (COCO val2017 has 5000)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per library (median reported)")
    parser.add_argument("--json", type=Path, help="also write the results as JSON")
    args = parser.parse_args(argv)
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    libraries = {"pycocotools": (COCO, COCOeval)}
    try:
        from faster_coco_eval import COCO as FastCOCO
        from faster_coco_eval import COCOeval_faster
        libraries["faster-coco-eval"] = (FastCOCO, COCOeval_faster)
    except ImportError:
        print("faster-coco-eval is not installed: timing pycocotools only", file=sys.stderr)
    dataset, detections = make_case(args.images)
    runs = {name: [run_once(*classes, dataset, detections) for _ in range(args.repeats)]
            for name, classes in libraries.items()}
    reference_seconds = statistics.median(t for t, _ in runs["pycocotools"])
    reference_stats = runs["pycocotools"][0][1]
    result = {}
    print(f"\nCOCO bbox evaluation, {args.images} images x 100 detections, median of {args.repeats} runs")
    print(f"{'library':<20}{'seconds':>10}{'ratio':>8}{'max |stats diff|':>18}{'identical':>11}")
    for name, timings in runs.items():
        seconds = statistics.median(t for t, _ in timings)
        stats = timings[0][1]
        result[name] = {"seconds": seconds, "speedup": reference_seconds / seconds, "stats": stats.tolist(),
                        "max_abs_difference": float(np.max(np.abs(stats - reference_stats))),
                        "identical": bool(np.array_equal(stats, reference_stats))}
        r = result[name]
        print(f"{name:<20}{seconds:>10.2f}{r['speedup']:>8.2f}{r['max_abs_difference']:>18.1e}{str(r['identical']):>11}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
