"""Input pipeline throughput: the shared-memory ring against keras PyDataset and tf.data.

All paths run the same work per image — decode a 500x375 JPEG, the full SSD training
augmentation (`ssd.data.augment.TrainAugmentation`) to 300x300, boxes padded to max_boxes — and
deliver batches of 32 to a Python loop:

    ring        BatchPipeline views (no copy after the worker's write into shared memory)
    ring-tf    as_tf_dataset(BatchPipeline): one copy into tf tensors, as a tf.data source
    pydataset   keras.utils.PyDataset(workers=N, use_multiprocessing=True), iterated the way
                model.fit does on the TensorFlow backend (PyDatasetAdapter.get_tf_dataset)
    tf.data     Dataset.range -> map(tf.numpy_function, num_parallel_calls=N) -> batch -> prefetch

and, as the machine's own limit, `ceiling`: N independent processes doing only that per-image
work (no batching, no hand-over, no consumer). No pipeline with N workers can beat it, so
ceiling/tf.data bounds the ratio any pipeline could reach against tf.data on this machine.

Each run starts a path afresh: start-up (construction to first batch) is timed apart from the
steady-state rate over a --seconds window after --warmup batches; medians over --repeats runs,
interleaved across paths, are reported. A serial profile of the per-image work
(decode, augmentation, copy into a slot) shows what the workers spend their time on.

    python tools/benchmark_pipeline.py --workers 1 2 --images 200 --seconds 4 --json out.json
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
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import cv2
import numpy as np


from ssd.data.augment import TrainAugmentation
from ssd.image_io import read_rgb
from ssd.data.pipeline import BatchPipeline, as_tf_dataset, sample_rng
from ssd.records import Sample

WIDTH, HEIGHT = 500, 375
IMAGE_SIZE, BATCH_SIZE, MAX_BOXES, SEED = 300, 32, 100, 0
PATHS = ("ring", "ring-tf", "pydataset", "tf.data", "ceiling")
CEILING_START_S = 4.0  # lets the ceiling's processes start and warm up before the window opens


def write_images(folder: Path, count: int, seed: int = 0) -> list[Sample]:
    """`count` random-textured 500x375 JPEGs with 1..6 filled rectangles and their boxes."""
    rng = np.random.default_rng(seed)
    samples = []
    for i in range(count):
        coarse = rng.integers(0, 256, (HEIGHT // 8, WIDTH // 8, 3), dtype=np.uint8)
        image = cv2.resize(coarse, (WIDTH, HEIGHT), interpolation=cv2.INTER_CUBIC).astype(np.int16)
        image += rng.integers(-20, 21, image.shape, dtype=np.int16)  # fine texture
        n = int(rng.integers(1, 7))
        x0, y0 = rng.uniform(0, WIDTH - 60, n), rng.uniform(0, HEIGHT - 60, n)
        x1, y1 = x0 + rng.uniform(20, 200, n), y0 + rng.uniform(20, 200, n)
        boxes = np.stack([x0, y0, np.minimum(x1, WIDTH), np.minimum(y1, HEIGHT)], 1).astype(np.float32)
        for box, colour in zip(boxes.astype(int), rng.integers(0, 256, (n, 3))):
            image[box[1]:box[3], box[0]:box[2]] = colour
        path = folder / f"{i:06d}.jpg"
        cv2.imwrite(str(path), np.clip(image, 0, 255).astype(np.uint8), [cv2.IMWRITE_JPEG_QUALITY, 90])
        samples.append(Sample(f"{i:06d}", str(path), WIDTH, HEIGHT, boxes,
                              rng.integers(1, 21, n).astype(np.int32), np.zeros(n, bool)))
    return samples


def load_padded(samples: Sequence[Sample], transform: Callable, index: int, epoch: int = 0):
    """Decode + augment sample `index`; boxes/labels zero-padded to MAX_BOXES (the ring's layout)."""
    sample = samples[index]
    image, boxes, labels = transform(read_rgb(sample.image_path), sample.boxes, sample.labels,
                                     sample_rng(SEED, epoch, index))
    n = min(len(boxes), MAX_BOXES)
    padded_boxes = np.zeros((MAX_BOXES, 4), np.float32)
    padded_labels = np.zeros((MAX_BOXES,), np.int32)
    padded_boxes[:n], padded_labels[:n] = boxes[:n], labels[:n]
    return image, padded_boxes, padded_labels, np.int32(n)


# ------------------------------------------------------------------------------ the four paths


def ring_batches(samples, workers: int) -> tuple[Iterator, Callable[[], None]]:
    pipe = BatchPipeline(samples, TrainAugmentation(IMAGE_SIZE), BATCH_SIZE, IMAGE_SIZE,
                         MAX_BOXES, num_workers=workers, seed=SEED, drop_remainder=True)

    def batches():
        for epoch in range(10**9):
            for batch in pipe.epoch(epoch):
                yield len(batch.images)

    return batches(), pipe.close


def ring_tf_batches(samples, workers: int) -> tuple[Iterator, Callable[[], None]]:
    pipe = BatchPipeline(samples, TrainAugmentation(IMAGE_SIZE), BATCH_SIZE, IMAGE_SIZE,
                         MAX_BOXES, num_workers=workers, seed=SEED, drop_remainder=True)
    dataset = as_tf_dataset(pipe, epochs=range(10**9)).prefetch(2)
    batches = (int(e["images"].shape[0]) for e in dataset)

    def close():
        batches.close()  # end the tf.data iterator (and its prefetch thread) first
        pipe.close()

    return batches, close


def pydataset_batches(samples, workers: int) -> tuple[Iterator, Callable[[], None]]:
    import keras
    from keras.src.trainers.data_adapters.py_dataset_adapter import PyDatasetAdapter

    class Augmented(keras.utils.PyDataset):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.transform = TrainAugmentation(IMAGE_SIZE)

        def __len__(self):
            return len(samples) // BATCH_SIZE

        def __getitem__(self, index):
            rows = [load_padded(samples, self.transform, i)
                    for i in range(index * BATCH_SIZE, (index + 1) * BATCH_SIZE)]
            images, boxes, labels, counts = (np.stack(c) for c in zip(*rows))
            return images, {"boxes": boxes, "labels": labels, "counts": counts}

    # model.fit on the TensorFlow backend wraps a PyDataset in this adapter and iterates
    # get_tf_dataset() between on_epoch_begin/on_epoch_end: the enqueuer's Pool pickles each
    # batch back to the parent, then from_generator copies it into tensors.
    adapter = PyDatasetAdapter(Augmented(workers=workers, use_multiprocessing=True), shuffle=True)

    def batches():
        while True:
            adapter.on_epoch_begin()
            for images, _ in adapter.get_tf_dataset():
                yield int(images.shape[0])
            adapter.on_epoch_end()

    def close():
        if adapter.enqueuer is not None:
            adapter.enqueuer.stop()

    return batches(), close


def tf_data_batches(samples, workers: int) -> tuple[Iterator, Callable[[], None]]:
    import tensorflow as tf

    transform = TrainAugmentation(IMAGE_SIZE)

    def load(index):
        return load_padded(samples, transform, int(index))

    def load_tf(index):
        image, boxes, labels, count = tf.numpy_function(
            load, [index], [tf.uint8, tf.float32, tf.int32, tf.int32])
        image.set_shape((IMAGE_SIZE, IMAGE_SIZE, 3))
        boxes.set_shape((MAX_BOXES, 4))
        labels.set_shape((MAX_BOXES,))
        count.set_shape(())
        return image, boxes, labels, count

    dataset = (tf.data.Dataset.range(len(samples)).shuffle(len(samples), seed=SEED).repeat()
               .map(load_tf, num_parallel_calls=workers)
               .batch(BATCH_SIZE, drop_remainder=True).prefetch(2))
    return (int(images.shape[0]) for images, *_ in dataset), lambda: None


def _ceiling_process(samples, first: int, step: int, start_at: float, seconds: float, results) -> None:
    """Decode + augment + copy into a private slot row, over and over, alone; report the window."""
    cv2.setNumThreads(1)  # as in the ring's workers
    transform = TrainAugmentation(IMAGE_SIZE)
    slot = np.zeros((BATCH_SIZE, IMAGE_SIZE, IMAGE_SIZE, 3), np.uint8)
    index, images, cpu, ready = first, 0, 0.0, None
    while True:
        now = time.time()
        if now >= start_at + seconds:
            break
        if images == 0 and now >= start_at:
            cpu = time.process_time()
        image, *_ = load_padded(samples, transform, index % len(samples))
        slot[index % BATCH_SIZE] = image
        ready = ready or time.time()
        index += step
        images += now >= start_at
    results.put((images, time.process_time() - cpu, ready))


def measure_ceiling(samples, workers: int, seconds: float) -> dict:
    """`workers` spawned processes doing only the per-image work over one shared time window."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    begin = time.time()
    start_at = begin + CEILING_START_S
    procs = [ctx.Process(target=_ceiling_process, args=(samples, k, workers, start_at, seconds, results))
             for k in range(workers)]
    for proc in procs:
        proc.start()
    counts = [results.get(timeout=CEILING_START_S + seconds + 60) for _ in procs]
    for proc in procs:
        proc.join()
    images = sum(n for n, _, _ in counts)
    return {"startup_s": max(ready for _, _, ready in counts) - begin, "images_per_s": images / seconds,
            "cpu_ms_per_image": 1000 * sum(c for _, c, _ in counts) / images}


MAKERS = {"ring": ring_batches, "ring-tf": ring_tf_batches, "pydataset": pydataset_batches,
          "tf.data": tf_data_batches}


# ------------------------------------------------------------------------------ measuring


def tree_cpu_seconds() -> float:
    """User + system CPU seconds of this process and its live descendants (Linux /proc; else 0)."""
    parent_of, cpu = {}, {}
    ticks = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    for entry in os.listdir("/proc") if os.path.isdir("/proc") else []:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # not a process, or it just exited
        parent_of[int(entry)] = int(fields[1])
        cpu[int(entry)] = (int(fields[11]) + int(fields[12])) / ticks
    me, total = os.getpid(), 0.0
    for pid, seconds in cpu.items():
        ancestor = pid
        while ancestor not in (me, 0, 1) and ancestor in parent_of:
            ancestor = parent_of[ancestor]
        total += seconds if ancestor == me else 0.0
    return total


def measure(path: str, samples, workers: int, seconds: float, warmup: int) -> dict:
    """One run of one path: start-up to the first batch, steady-state images/s and CPU per image.

    CPU per image (all processes of the path) barely depends on what else loads the machine,
    unlike images/s.
    """
    if path == "ceiling":
        return measure_ceiling(samples, workers, seconds)
    start = time.perf_counter()
    batches, close = MAKERS[path](samples, workers)
    try:
        next(batches)
        startup = time.perf_counter() - start
        for _ in range(warmup):
            next(batches)
        images, begin, cpu = 0, time.perf_counter(), tree_cpu_seconds()
        while time.perf_counter() - begin < seconds:
            images += next(batches)
        elapsed, cpu = time.perf_counter() - begin, tree_cpu_seconds() - cpu
        return {"startup_s": startup, "images_per_s": images / elapsed,
                "cpu_ms_per_image": 1000 * cpu / images}
    finally:
        close()


def profile(samples, count: int) -> dict:
    """Serial per-image milliseconds: JPEG decode, TrainAugmentation, copy into a slot row.

    OpenCV runs single-threaded here, as in the ring's workers.
    """
    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    transform = TrainAugmentation(IMAGE_SIZE)
    linear = TrainAugmentation(IMAGE_SIZE, interpolations=("linear",))  # side by side: the random resize's cost
    slot = np.zeros((IMAGE_SIZE, IMAGE_SIZE, 3), np.uint8)
    decode, augment, augment_linear, copy = [], [], [], []
    for i in range(count):
        s = samples[i % len(samples)]
        t0 = time.perf_counter()
        image = read_rgb(s.image_path)
        t1 = time.perf_counter()
        out, _, _ = transform(image, s.boxes, s.labels, sample_rng(SEED, 0, i))
        t2 = time.perf_counter()
        slot[...] = out
        t3 = time.perf_counter()
        linear(image, s.boxes, s.labels, sample_rng(SEED, 0, i))
        decode.append(t1 - t0)
        augment.append(t2 - t1)
        copy.append(t3 - t2)
        augment_linear.append(time.perf_counter() - t3)
    cv2.setNumThreads(threads)
    ms = {k: 1000 * statistics.median(v) for k, v in
          (("decode_ms", decode), ("augment_ms", augment), ("slot_copy_ms", copy))}
    ms["total_ms"] = sum(ms.values())
    ms["augment_linear_only_ms"] = 1000 * statistics.median(augment_linear)
    ms["serial_images_per_s"] = 1000 / ms["total_ms"]
    return ms


def print_table(results: list[dict], workers: Sequence[int], prof: dict) -> None:
    print(f"\nper image, serial, one core (median): decode {prof['decode_ms']:.2f} ms, "
          f"TrainAugmentation {prof['augment_ms']:.2f} ms, copy into a slot "
          f"{prof['slot_copy_ms']:.3f} ms -> {prof['serial_images_per_s']:.0f} images/s")
    print(f"TrainAugmentation with the random interpolation {prof['augment_ms']:.2f} ms against linear only "
          f"{prof['augment_linear_only_ms']:.2f} ms: {prof['augment_ms'] / prof['augment_linear_only_ms']:.2f}x")
    cell = {(r["path"], r["workers"]): r for r in results}
    print("\nmedian steady-state images/s | CPU ms per image (all processes) | start-up s")
    print(f"{'path':<11}" + "".join(f"{f'{w} worker(s)':>28}" for w in workers))
    for path in PATHS:
        row = [f"{c['images_per_s']:6.0f} | {c['cpu_ms_per_image']:5.2f} | {c['startup_s']:4.1f}"
               if (c := cell.get((path, w))) else "-" for w in workers]
        print(f"{path:<11}" + "".join(f"{r:>28}" for r in row))
    print("\nratios (images/s of ring over each path)")
    for w in workers:
        if ("ring", w) not in cell:
            continue
        ring = cell[("ring", w)]["images_per_s"]
        parts = [f"ring/{p} {ring / cell[(p, w)]['images_per_s']:.2f}x"
                 for p in PATHS[1:] if (p, w) in cell]
        print(f"{w} worker(s): ring {ring:.0f} images/s = {ring / w:.0f} per worker; "
              + ", ".join(parts))
    for w in workers:
        if ("ceiling", w) in cell and ("tf.data", w) in cell:
            bound = cell[("ceiling", w)]["images_per_s"] / cell[("tf.data", w)]["images_per_s"]
            print(f"{w} worker(s): no pipeline can exceed ceiling/tf.data = {bound:.2f}x here")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--images", type=int, default=200, help="distinct JPEGs to generate")
    parser.add_argument("--epoch-size", type=int, default=4096,
                        help="samples per epoch (the JPEGs repeated), long enough to be steady")
    parser.add_argument("--seconds", type=float, default=4.0, help="timed window of one run")
    parser.add_argument("--repeats", type=int, default=3, help="runs per path; medians reported")
    parser.add_argument("--warmup", type=int, default=3, help="batches dropped after the first")
    parser.add_argument("--paths", nargs="+", default=list(PATHS), choices=PATHS)
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    with tempfile.TemporaryDirectory(prefix="ssd_bench_") as folder:
        files = write_images(Path(folder), args.images)
        samples = [files[i % len(files)] for i in range(args.epoch_size)]
        prof = profile(files, min(len(files), 100))
        conditions = {"cpus": os.cpu_count(), "loadavg_before": os.getloadavg(),
                      "python": platform.python_version()}
        runs: dict[tuple[str, int], list[dict]] = {}
        # Runs of all paths interleave (repeat after repeat) so that load from other processes
        # on the machine drifts over all of them alike.
        for repeat in range(args.repeats):
            for workers in args.workers:
                for path in args.paths:
                    run = measure(path, samples, workers, args.seconds, args.warmup)
                    runs.setdefault((path, workers), []).append(run)
                    print(f"run {repeat + 1}/{args.repeats} {path:<10} workers={workers}: "
                          f"{run['images_per_s']:7.1f} images/s, {run['cpu_ms_per_image']:5.2f} "
                          f"CPU ms/image, start-up {run['startup_s']:.2f} s", flush=True)
        results = [{"path": path, "workers": workers,
                    **{key: statistics.median(r[key] for r in rs) for key in rs[0]},
                    "runs_images_per_s": [r["images_per_s"] for r in rs]}
                   for (path, workers), rs in runs.items()]
        conditions["loadavg_after"] = os.getloadavg()
    print_table(results, args.workers, prof)
    print(f"\nconditions: {conditions}")
    if args.json:
        args.json.write_text(json.dumps({"profile": prof, "results": results,
                                         "conditions": conditions}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
