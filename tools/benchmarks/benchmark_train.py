"""Benchmark training throughput: the real shared-memory pipeline against in-memory batches.

For each precision, the same `Trainer.train_step` (vgg300, batch 8 by default) is timed in one
run, interleaved repeat by repeat (a busy neighbour slows both alike):
- in-memory: one batch, already decoded and augmented, fed again and again (the upper bound
  without data loading);
- pipeline: batches from `BatchPipeline` (decode + SSD augmentation in worker processes) on a
  synthetic VOC-format set; "data wait" = time blocked waiting for the next batch / total time.
Reported: median images/s over --repeats, their ratio, and the median data-wait fraction.

    python tools/benchmark_train.py [--width 1.0] [--batch 8] [--workers 2] [--steps 10]
                                    [--repeats 3] [--precisions float32 bfloat16] [--json out.json]
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
from collections.abc import Iterator
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from ssd_datasets.synthetic import generate_synthetic_voc, load_synthetic
from ssd.config import ModelConfig
from ssd.engine.recipe import TrainConfig
from ssd.data.pipeline import Batch, BatchPipeline
from ssd.engine.trainer import Trainer


def endless(pipeline: BatchPipeline) -> Iterator[Batch]:
    epoch = 0
    while True:
        yield from pipeline.epoch(epoch)
        epoch += 1


def time_steps(trainer: Trainer, batches: Iterator[Batch], steps: int) -> tuple[float, float]:
    """(images/s, fraction of the time spent waiting for batches) over `steps` train steps."""
    waited, images = 0.0, 0
    started = time.perf_counter()
    for _ in range(steps):
        asked = time.perf_counter()
        batch = next(batches)
        waited += time.perf_counter() - asked
        trainer.train_step(batch)  # returns floats: the step has finished
        images += len(batch.images)
    elapsed = time.perf_counter() - started
    return images / elapsed, waited / elapsed


def bench_precision(precision: str, args: argparse.Namespace, dataset, run_dir: Path) -> dict:
    model_config = ModelConfig(args.preset, dataset.class_names, width=args.width)
    config = TrainConfig(batch_size=args.batch, from_scratch=True, mixed_precision=precision,
                         workers=args.workers, expand_probability=0.5)
    trainer = Trainer(model_config, config, run_dir / precision, dataset)
    runs: dict[str, list] = {"memory": [], "pipeline": [], "wait": []}
    with trainer.train_pipeline() as pipeline:
        stream = endless(pipeline)
        fixed = next(stream).copy()
        memory = iter(lambda: fixed, None)
        for _ in range(args.warmup):  # tracing, and the pipeline's ring filling up
            trainer.train_step(next(stream))
        for _ in range(args.repeats):
            runs["memory"].append(time_steps(trainer, memory, args.steps)[0])
            rate, wait = time_steps(trainer, stream, args.steps)
            runs["pipeline"].append(rate)
            runs["wait"].append(wait)
    memory_rate, pipeline_rate = statistics.median(runs["memory"]), statistics.median(runs["pipeline"])
    return {"precision": precision, "width": args.width, "batch": args.batch, "workers": args.workers,
            "memory_images_per_s": memory_rate, "pipeline_images_per_s": pipeline_rate,
            "ratio": pipeline_rate / memory_rate, "data_wait": statistics.median(runs["wait"]), "runs": runs}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="vgg300", choices=("vgg300", "vgg512"))
    parser.add_argument("--width", type=float, default=1.0, help="channel multiplier (default: 1.0)")
    parser.add_argument("--batch", type=int, default=8, help="batch size (default: 8)")
    parser.add_argument("--workers", type=int, default=2, help="pipeline worker processes (default: 2)")
    parser.add_argument("--precisions", nargs="+", default=["float32", "bfloat16"],
                        choices=("float32", "bfloat16", "float16"))
    parser.add_argument("--steps", type=int, default=10, help="timed steps per repeat (default: 10)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first (default: 3)")
    parser.add_argument("--repeats", type=int, default=3, help="repeats; medians reported (default: 3)")
    parser.add_argument("--images", type=int, default=64, help="synthetic training images (default: 64)")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="benchmark_train_") as tmp:
        root = Path(tmp) / "synthetic"
        generate_synthetic_voc(root, num_train=args.images, num_test=0)  # VOC-like 300..500 px JPEGs
        dataset = load_synthetic(root, "trainval")
        results = [bench_precision(p, args, dataset, Path(tmp)) for p in args.precisions]

    print(f"\n{args.preset} width {args.width}, batch {args.batch}, {args.workers} pipeline workers, "
          f"{args.steps} steps x {args.repeats} repeats (medians), {os.cpu_count()} CPUs")
    print(f"{'precision':<10} {'in-memory img/s':>16} {'pipeline img/s':>15} {'ratio':>6} {'data wait':>10}")
    for r in results:
        print(f"{r['precision']:<10} {r['memory_images_per_s']:>16.2f} {r['pipeline_images_per_s']:>15.2f} "
              f"{r['ratio']:>6.2f} {100 * r['data_wait']:>9.1f}%")
    if args.json:
        args.json.write_text(json.dumps({"machine": platform.processor() or platform.machine(),
                                         "cpus": os.cpu_count(), "args": {k: str(v) for k, v in vars(args).items()},
                                         "results": results}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
