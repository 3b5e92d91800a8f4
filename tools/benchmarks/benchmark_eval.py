"""Benchmark: graph post-processing vs a plain NumPy decode + greedy NMS, and VOC07-sized evaluation.

    python tools/benchmark_eval.py --json bench_eval.json

Post-processing runs on random vgg300-shaped outputs (8732 boxes x 21 classes) in two regimes:
"trained-like" (most boxes confidently background, a few objects) and "untrained" (near-uniform
scores: every class has thousands of candidates). Evaluation runs on a synthetic VOC07-test-sized
set. All times are medians of --repeats runs.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import tensorflow as tf

from ssd.config import DEFAULT_BOXES
from ssd.core.anchors import Anchors
from ssd.core.postprocess import PostprocessOptions, postprocess
from ssd.evaluation.voc import VOCEvaluator


# ------------------------------------------------------------------ the straightforward NumPy way
def numpy_postprocess(deltas, logits, anchors: Anchors, options: PostprocessOptions):
    """Per image: softmax, decode, per class threshold / sort / top-k / greedy NMS, top max_det."""
    variances, boxes_a = np.asarray(anchors.variances), anchors.boxes
    thr, nms_thr, top_k = options.score_threshold, options.iou_threshold, options.top_k_per_class
    results = []
    for d, lg in zip(deltas, logits):
        e = np.exp(lg - lg.max(1, keepdims=True))
        probs = e / e.sum(1, keepdims=True)
        cxy = d[:, :2] * variances[:2] * boxes_a[:, 2:] + boxes_a[:, :2]
        wh = np.exp(d[:, 2:] * variances[2:]) * boxes_a[:, 2:]
        boxes = np.concatenate([cxy - wh / 2, cxy + wh / 2], 1)
        areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        found = []
        for c in range(1, probs.shape[1]):
            idx = np.flatnonzero(probs[:, c] > thr)
            order = idx[np.argsort(-probs[idx, c], kind="stable")][:top_k]
            while order.size:
                i, rest = order[0], order[1:]
                found.append((probs[i, c], c, i))
                iw = np.clip(np.minimum(boxes[i, 2], boxes[rest, 2]) - np.maximum(boxes[i, 0], boxes[rest, 0]), 0, None)
                ih = np.clip(np.minimum(boxes[i, 3], boxes[rest, 3]) - np.maximum(boxes[i, 1], boxes[rest, 1]), 0, None)
                inter = iw * ih
                order = rest[inter / (areas[i] + areas[rest] - inter) <= nms_thr]
        found.sort(key=lambda f: -f[0])
        found = found[:options.max_detections]
        results.append((np.array([f[0] for f in found]), np.array([f[1] for f in found]),
                        np.clip(boxes[[f[2] for f in found]], 0, 1) if found else np.zeros((0, 4))))
    return results


def make_outputs(rng, batch, num_anchors, num_classes, regime):
    """Random head outputs. trained-like: background logit ~ +7, three objects per image whose
    ~2% of anchors each get a confident class; untrained: all logits ~ N(0, 1)."""
    deltas = rng.normal(0, 1, (batch, num_anchors, 4)).astype(np.float32)
    logits = rng.normal(0, 1, (batch, num_anchors, num_classes + 1)).astype(np.float32)
    if regime == "trained-like":
        logits[..., 0] += 7.0
        for b in range(batch):
            for c in rng.choice(np.arange(1, num_classes + 1), 3, replace=False):
                hit = rng.random(num_anchors) < 0.02
                logits[b, hit, c] = logits[b, hit, 0] + rng.normal(0, 2, hit.sum())
    return deltas, logits


def median_time(fn, repeats):
    fn()  # warm-up (tracing)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def bench_postprocess(batch, regime, repeats, rng):
    anchors, options = Anchors.from_config(DEFAULT_BOXES["vgg300"]), PostprocessOptions()
    deltas, logits = make_outputs(rng, batch, len(anchors), 20, regime)
    graph = tf.function(lambda d, l: postprocess(d, l, anchors, options))
    d_t, l_t = tf.constant(deltas), tf.constant(logits)
    t_graph = median_time(lambda: graph(d_t, l_t)["num_detections"].numpy(), repeats)
    t_numpy = median_time(lambda: numpy_postprocess(deltas, logits, anchors, options), max(3, repeats // 4))
    probs = tf.nn.softmax(logits)[..., 1:].numpy()
    return {
        "batch": batch,
        "regime": regime,
        "candidates_per_class": float((probs > 0.01).sum(1).mean()),
        "detections_per_image": float(graph(d_t, l_t)["num_detections"].numpy().mean()),
        "graph_ms_per_image": 1000 * t_graph / batch,
        "numpy_ms_per_image": 1000 * t_numpy / batch,
        "speedup": t_numpy / t_graph,
    }


def make_voc_sized(rng, num_images, num_classes, dets_per_image, objects_per_image):
    """Synthetic ground truth (~objects_per_image, 10% difficult) and detections: jittered copies
    of the objects with high scores, the rest random boxes with low scores."""
    images = []
    for i in range(num_images):
        n = max(1, rng.poisson(objects_per_image))
        xy = rng.uniform(0, 400, (n, 2))
        gt = np.concatenate([xy, xy + rng.uniform(20, 200, (n, 2))], 1)
        gt_labels = rng.integers(1, num_classes + 1, n)
        difficult = rng.random(n) < 0.1
        m = dets_per_image
        src = rng.integers(0, n, m)
        near = rng.random(m) < 0.3
        boxes = np.where(near[:, None], gt[src] + rng.normal(0, 8, (m, 4)), rng.uniform(0, 500, (m, 4)))
        boxes[:, 2:] = np.maximum(boxes[:, 2:], boxes[:, :2] + 2)
        labels = np.where(near, gt_labels[src], rng.integers(1, num_classes + 1, m))
        scores = np.where(near, rng.uniform(0.3, 1.0, m), rng.uniform(0.01, 0.5, m))
        images.append((f"{i:06d}", gt, gt_labels, difficult, boxes, scores, labels))
    return images


def bench_evaluation(args, rng):
    images = make_voc_sized(rng, args.images, 20, args.detections_per_image, args.objects_per_image)
    evaluator = VOCEvaluator([f"class{c}" for c in range(1, 21)])

    def process():
        evaluator.reset()
        for image in images:
            evaluator.process(*image)

    t_process = median_time(process, args.repeats_eval)
    t_evaluate = median_time(evaluator.evaluate, args.repeats_eval)
    results = evaluator.evaluate()
    return {
        "images": args.images,
        "detections": args.images * args.detections_per_image,
        "process_s": t_process,
        "evaluate_s": t_evaluate,
        "total_s": t_process + t_evaluate,
        "map_voc07_at_0.01": results["map_voc07"][0],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8], help="post-processing batch sizes")
    parser.add_argument("--regimes", nargs="+", default=["trained-like", "untrained"],
                        choices=["trained-like", "untrained"])
    parser.add_argument("--repeats", type=int, default=20, help="timed runs of the graph post-processing")
    parser.add_argument("--images", type=int, default=4952, help="evaluation: number of images (VOC07 test)")
    parser.add_argument("--detections-per-image", type=int, default=200)
    parser.add_argument("--objects-per-image", type=float, default=2.4)
    parser.add_argument("--repeats-eval", type=int, default=5, help="timed runs of the evaluation")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args(argv)
    rng = np.random.default_rng(args.seed)

    post = [bench_postprocess(b, r, args.repeats, rng) for r in args.regimes for b in args.batches]
    print("post-processing, vgg300 (8732 boxes x 21 classes), ms per image (median)")
    print(f"{'regime':<14}{'batch':>6}{'cand/class':>12}{'dets':>7}{'graph':>9}{'numpy':>10}{'speedup':>9}")
    for p in post:
        print(f"{p['regime']:<14}{p['batch']:>6}{p['candidates_per_class']:>12.0f}{p['detections_per_image']:>7.0f}"
              f"{p['graph_ms_per_image']:>9.2f}{p['numpy_ms_per_image']:>10.1f}{p['speedup']:>8.1f}x")

    ev = bench_evaluation(args, rng)
    print(f"\nVOC evaluation: {ev['images']} images, {ev['detections']} detections, 20 classes (median s)")
    print(f"{'process()':<12}{'evaluate()':>12}{'total':>9}")
    print(f"{ev['process_s']:<12.3f}{ev['evaluate_s']:>12.3f}{ev['total_s']:>9.3f}")
    if args.json:
        args.json.write_text(json.dumps({"postprocess": post, "evaluation": ev}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
