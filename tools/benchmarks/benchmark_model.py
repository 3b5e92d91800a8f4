"""Benchmark the SSD network on this CPU against the machine's own matrix-multiply rate.

In one run, interleaved (every repeat times each case once, so a busy neighbour slows all cases
alike): dense matmul GFLOP/s (float32, bfloat16), SSD inference images/s at batch 1 and 8
(float32 and the 'mixed_bfloat16' policy; tf.function, optionally XLA) and training images/s
(forward, MultiBox loss + weight decay, backward, SGD momentum update). Model GFLOP/s come
from the analytic FLOP count of the model's convolutions (a multiply-add = 2 FLOPs).

    python tools/benchmark_model.py [--repeats 5] [--json out.json] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import tensorflow as tf

from ssd.core.losses import multibox_loss, weight_decay_loss
from ssd.engine.distribute import POLICIES
from ssd.modeling.model import build_model, kernel_weights

# The dtypes timed here (float16 is for GPUs); their Keras policies come from the trainer's table.
DTYPES = ("float32", "bfloat16")


@dataclass
class Case:
    """One timed thing: `run()` does one step and waits for its result."""

    name: str
    kind: str  # "matmul", "inference" or "training"
    dtype: str
    batch: int
    flops: float  # per run() call
    run: Callable[[], object]
    variant: str = "graph"


def conv_flops(model: keras.Model) -> float:
    """FLOPs of one image through every Conv2D of `model` (multiply-add = 2, biases ignored)."""
    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D):
            kh, kw, cin, cout = layer.kernel.shape
            _, h, w, _ = layer.output.shape
            total += 2 * h * w * kh * kw * cin * cout
    return float(total)


def matmul_case(n: int, dtype: str) -> Case:
    """Square [n, n] x [n, n] product in a tf.function; reduced to a scalar so nothing is copied."""
    tf_dtype = tf.float32 if dtype == "float32" else tf.bfloat16
    a = tf.cast(tf.random.normal((n, n)), tf_dtype)
    b = tf.cast(tf.random.normal((n, n)), tf_dtype)
    fn = tf.function(lambda: tf.reduce_sum(tf.cast(tf.matmul(a, b), tf.float32)))
    return Case(f"matmul {n} {dtype}", "matmul", dtype, 0, 2.0 * n**3, lambda: fn().numpy())


def build(dtype: str, width: float) -> keras.Model:
    """SSD300 with 21 classes under the dtype's Keras policy (policy is read at build time)."""
    keras.mixed_precision.set_global_policy(POLICIES[dtype])
    try:
        keras.utils.set_random_seed(0)
        return build_model("vgg300", 21, width=width)
    finally:
        keras.mixed_precision.set_global_policy("float32")


def images(batch: int) -> tf.Tensor:
    return tf.constant(np.random.default_rng(batch).integers(0, 256, (batch, 300, 300, 3), np.uint8))


def inference_case(model: keras.Model, dtype: str, batch: int, xla: bool, flops: float) -> Case:
    fn = tf.function(lambda x: model(x, training=False), jit_compile=xla)
    x = images(batch)
    variant = "xla" if xla else "graph"
    return Case(f"inference b{batch} {dtype} {variant}", "inference", dtype, batch, flops * batch,
                lambda: fn(x)["class_logits"].numpy(), variant)


def training_case(model: keras.Model, dtype: str, batch: int, flops: float) -> Case:
    """One SGD step on fixed random targets (about 1% positives, like a real VOC batch)."""
    optimizer = keras.optimizers.SGD(1e-3, momentum=0.9)
    variables = model.trainable_variables
    optimizer.build(variables)
    kernels = kernel_weights(model)
    rng = np.random.default_rng(1)
    anchors = model.output["box_deltas"].shape[1]
    labels = np.where(rng.random((batch, anchors)) < 0.01, rng.integers(1, 21, (batch, anchors)), 0)
    target_labels = tf.constant(labels, tf.int32)
    target_deltas = tf.constant(rng.normal(size=(batch, anchors, 4)), tf.float32)
    x = images(batch)

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            out = model(x, training=True)
            loss = multibox_loss(
                out["box_deltas"], out["class_logits"], target_deltas, target_labels, neg_pos_ratio=3.0, alpha=1.0
            )["loss"]
            loss += weight_decay_loss(kernels, 5e-4)
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        return loss

    # Forward + backward (gradients of activations and of weights) is about 3x the forward.
    return Case(f"training b{batch} {dtype}", "training", dtype, batch, 3 * flops * batch,
                lambda: step().numpy())


def measure(cases: list[Case], repeats: int, warmup: int) -> tuple[dict, dict]:
    """Seconds per run() of each case, warm-up (tracing, compiling) excluded, cases interleaved.

    The first case (the float32 matmul) is also timed right before every other case: on a
    shared machine the load changes from minute to minute, and a ratio of two runs seconds
    apart is steadier than a ratio of medians taken minutes apart.
    """
    for case in cases:
        for _ in range(warmup):
            case.run()
    reference = cases[0]
    times = {case.name: [] for case in cases}
    paired = {case.name: [] for case in cases}  # seconds of the reference run just before
    for r in range(repeats):
        for case in cases:
            if case is not reference:
                start = time.perf_counter()
                reference.run()
                paired[case.name].append(time.perf_counter() - start)
            start = time.perf_counter()
            case.run()
            times[case.name].append(time.perf_counter() - start)
        print(f"  repeat {r + 1}/{repeats} done", file=sys.stderr, flush=True)
    paired[reference.name] = list(times[reference.name])
    return times, paired


def summarise(cases: list[Case], times: dict[str, list[float]], paired: dict[str, list[float]]) -> list[dict]:
    matmul = {c.dtype: c.flops / statistics.median(times[c.name]) for c in cases if c.kind == "matmul"}
    reference = cases[0]
    rows = []
    for case in cases:
        seconds = statistics.median(times[case.name])
        gflops = case.flops / seconds / 1e9
        ratios = [(case.flops / t) / (reference.flops / p) for t, p in zip(times[case.name], paired[case.name])]
        rows.append({
            "case": case.name, "kind": case.kind, "dtype": case.dtype, "batch": case.batch,
            "variant": case.variant, "median_s": seconds, "images_per_s": case.batch / seconds,
            "gflops": gflops, "vs_matmul_float32": gflops * 1e9 / matmul["float32"],
            "vs_matmul_same_dtype": gflops * 1e9 / matmul[case.dtype],
            "vs_matmul_float32_paired": statistics.median(ratios),
            "times_s": times[case.name], "paired_matmul_s": paired[case.name],
        })
    return rows


def targets(rows: list[dict], batch: int) -> dict:
    """The issue's targets at the largest inference batch, best variant of each dtype."""
    def best(dtype):
        cands = [r for r in rows if r["kind"] == "inference" and r["dtype"] == dtype and r["batch"] == batch]
        return max(cands, key=lambda r: r["images_per_s"])

    f32, bf16 = best("float32"), best("bfloat16")
    speedup = bf16["images_per_s"] / f32["images_per_s"]
    return {
        "float32_vs_matmul": f32["vs_matmul_float32"], "float32_vs_matmul_met": f32["vs_matmul_float32"] >= 0.9,
        "float32_vs_matmul_paired": f32["vs_matmul_float32_paired"],
        "bfloat16_speedup": speedup, "bfloat16_speedup_met": speedup >= 1.6,
        "float32_case": f32["case"], "bfloat16_case": bf16["case"],
    }


def print_table(rows: list[dict], flops_per_image: float, goal: dict, width: float) -> None:
    print(f"\nSSD300 (21 classes, width {width}): {flops_per_image / 1e9:.2f} GFLOP per image "
          f"({flops_per_image / 2e9:.2f} G multiply-adds), training counted as 3x forward")
    print(f"{'case':32} {'median s':>9} {'images/s':>9} {'GFLOP/s':>9} {'/mm f32':>8} {'/mm same':>9} "
          f"{'/mm f32 paired':>15}")
    for r in rows:
        ips = f"{r['images_per_s']:9.2f}" if r["batch"] else f"{'-':>9}"
        print(f"{r['case']:32} {r['median_s']:9.3f} {ips} {r['gflops']:9.1f} "
              f"{r['vs_matmul_float32']:8.2f} {r['vs_matmul_same_dtype']:9.2f} {r['vs_matmul_float32_paired']:15.2f}")
    print(f"\ntarget float32 inference >= 0.90 x matmul float32: {goal['float32_vs_matmul']:.2f} "
          f"(paired: {goal['float32_vs_matmul_paired']:.2f}) "
          f"({'met' if goal['float32_vs_matmul_met'] else 'NOT met'}, {goal['float32_case']})")
    print(f"target bfloat16 >= 1.6 x float32 images/s: {goal['bfloat16_speedup']:.2f} "
          f"({'met' if goal['bfloat16_speedup_met'] else 'NOT met'}, {goal['bfloat16_case']})")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per case (median reported)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs per case after tracing")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8], help="inference batch sizes")
    parser.add_argument("--train-batch", type=int, default=8, help="training batch size (0: skip)")
    parser.add_argument("--matmul-size", type=int, default=2048)
    parser.add_argument("--xla", action="store_true", help="also time inference with jit_compile=True")
    parser.add_argument("--width", type=float, default=1.0, help="model width (1.0 = SSD300)")
    parser.add_argument("--threads", type=int, default=0, help="TF intra-op threads (0: TF default)")
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: width 0.125, batches 1 2, matmul 256, 1 repeat")
    args = parser.parse_args(argv)
    if args.quick:
        args.width, args.batches, args.train_batch, args.matmul_size, args.repeats = 0.125, [1, 2], 2, 256, 1
    if args.repeats < 1:
        parser.error(f"--repeats must be >= 1, got {args.repeats}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    tf.get_logger().setLevel("ERROR")  # each case is its own tf.function; retracing notes are noise
    if args.threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    models = {dtype: build(dtype, args.width) for dtype in DTYPES}
    flops = conv_flops(models["float32"])
    cases = [matmul_case(args.matmul_size, dtype) for dtype in DTYPES]
    # Both dtypes of one setting run back to back, so their ratio sees the same machine load.
    for batch in args.batches:
        for xla in (False, True) if args.xla else (False,):
            cases += [inference_case(models[d], d, batch, xla, flops) for d in DTYPES]
    if args.train_batch:
        cases += [training_case(models[d], d, args.train_batch, flops) for d in DTYPES]
    times, paired = measure(cases, args.repeats, args.warmup)
    rows = summarise(cases, times, paired)
    goal = targets(rows, max(args.batches))
    print_table(rows, flops, goal, args.width)
    if args.json:
        args.json.write_text(json.dumps({
            "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                        "tensorflow": tf.__version__, "keras": keras.__version__},
            "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            "flops_per_image": flops, "cases": rows, "targets": goal,
        }, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
