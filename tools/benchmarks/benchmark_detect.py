"""Benchmark deployment: detect.py's video pipeline against model-only throughput, and the server
against one detect.py process per image.

Everything is made here, in a temporary directory: a run directory with an untrained slim model
(--width), its export (frozen graph), and a synthetic video of moving shapes.

(a) pipeline efficiency = video FPS of the real pipeline (decode -> inference -> draw + mp4
    encode + JSON lines, overlapping threads) / model-only FPS (the same frames pre-decoded in
    memory, graph calls only, same batch size). Target >= 0.9. Repeats are interleaved. Also
    printed: the machine's own bound on that ratio, model-only CPU time / pipeline CPU time (with
    every core busy, the video I/O can only run on CPU taken from the model).
(b) single-image requests/s: tools/serve.py in its own process on loopback, sequential and with
    --clients concurrent clients, against `python detect.py IMAGE` started once per image (the
    process start and graph load the server pays once).

    python tools/benchmark_detect.py [--width 0.25] [--frames 250] [--batch-size 8] [--repeats 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parents[2]

import cv2
import numpy as np
import tensorflow as tf

from ssd_datasets.synthetic import SYNTHETIC_CLASSES
from ssd.config import ModelConfig
from ssd.engine.recipe import TrainConfig
from ssd.deploy.images import draw
from ssd.deploy.video import detect_video, open_video
from ssd.deploy.export import export_run
from ssd.deploy.frozen_graph import FrozenGraph
from ssd.detections import select_detections
from ssd.modeling.model import build_model_from_config
from ssd.modeling.run_dir import save_run_config
from ssd.deploy.client import post_image
from ssd_datasets.synthetic_video import write_synthetic_video


VIDEO_FPS = 25.0


def make_export(work: Path, width: float) -> Path:
    """Throwaway run dir (untrained model, one checkpoint) -> export dir; returns the export dir."""
    tf.keras.utils.set_random_seed(0)
    config = ModelConfig("vgg300", SYNTHETIC_CLASSES, width=width)
    model = build_model_from_config(config)
    save_run_config(work / "run", config, TrainConfig().to_dict())
    tf.train.CheckpointManager(tf.train.Checkpoint(model=model), str(work / "run" / "checkpoints"), 1).save()
    export_run(work / "run", work / "export")
    return work / "export"


def decode_all(video: Path) -> tuple[list[np.ndarray], float]:
    """The video's BGR frames, opened as detect.py opens it, and the CPU ms per frame decoding took."""
    capture, _ = open_video(str(video))
    frames, tic = [], time.thread_time()
    while (frame := capture.read()[1]) is not None:
        frames.append(frame)
    cpu_ms = 1000 * (time.thread_time() - tic) / len(frames)
    capture.release()
    return frames, cpu_ms


def model_only(graph: FrozenGraph, frames: list[np.ndarray], batch_size: int) -> dict:
    """FPS and process CPU seconds of graph calls alone on frames already in memory."""
    batches = [np.stack(frames[i : i + batch_size]) for i in range(0, len(frames), batch_size)]
    cpu, tic = time.process_time(), time.perf_counter()
    for batch in batches:
        graph(batch)
    return {"fps": len(frames) / (time.perf_counter() - tic), "cpu_s": time.process_time() - cpu}


def pipeline_run(graph: FrozenGraph, video: Path, out: Path, batch_size: int, threshold: float) -> dict:
    cpu = time.process_time()
    with open(out / "bench.jsonl", "w") as jsonl:
        report = detect_video(str(video), graph, out / "bench.mp4", jsonl, SYNTHETIC_CLASSES, threshold,
                              batch_size, progress=False)
    if report.error:
        raise RuntimeError(report.error)
    return {"fps": report.wall_fps, "cpu_s": time.process_time() - cpu, "model_s": report.model_s,
            "decode_s": report.decode_s, "draw_encode_s": report.draw_encode_s, "wall_s": report.wall_s,
            "frames": report.frames}


def bench_pipeline(graph: FrozenGraph, video: Path, frames: list[np.ndarray], out: Path, batch_size: int,
                   repeats: int, threshold: float) -> dict:
    """The pipeline on `video` against the graph alone on its decoded RGB `frames`, interleaved."""
    graph(np.stack(frames[:batch_size]))  # warm-up: first call builds kernels
    runs, model = [], []
    for _ in range(repeats):  # interleaved, so a busy neighbour slows both alike
        runs.append(pipeline_run(graph, video, out, batch_size, threshold))
        model.append(model_only(graph, frames, batch_size))
    ratios = [r["fps"] / m["fps"] for r, m in zip(runs, model)]
    # With every core busy, the pipeline can at best run at model CPU / (model + video I/O CPU)
    # of the model-only speed: the machine's own bound on the ratio.
    cpu_bounds = [m["cpu_s"] / r["cpu_s"] for r, m in zip(runs, model)]
    median = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    per_frame = {k: 1000 * median[k] / median["frames"] for k in ("model_s", "decode_s", "draw_encode_s")}
    per_frame["pipeline_cpu"] = 1000 * median["cpu_s"] / len(frames)
    per_frame["model_only_cpu"] = 1000 * statistics.median(m["cpu_s"] for m in model) / len(frames)
    return {"frames": len(frames), "size": f"{frames[0].shape[1]}x{frames[0].shape[0]}", "batch_size": batch_size,
            "pipeline_fps": median["fps"], "model_only_fps": statistics.median(m["fps"] for m in model),
            "ratio": statistics.median(ratios), "ratios": ratios, "cpu_bound": statistics.median(cpu_bounds),
            "per_frame_ms": per_frame}


def io_cpu_per_frame(graph: FrozenGraph, frames: list[np.ndarray], rgb: list[np.ndarray], out: Path,
                      batch_size: int, threshold: float, fps: float) -> dict:
    """CPU ms per frame of drawing + JSON and of mp4v encoding, each alone (what the model gives up).

    `frames` are the decoded BGR frames (drawn on in place, as the pipeline does), `rgb` the same
    frames for the graph.
    """
    height, width = frames[0].shape[:2]
    outputs = [graph(np.stack(rgb[i : i + batch_size])) for i in range(0, len(rgb), batch_size)]
    tic = time.thread_time()
    for k, frame in enumerate(frames):
        detections = select_detections(outputs[k // batch_size], k % batch_size, width, height, threshold)
        draw(frame, detections, SYNTHETIC_CLASSES, bgr=True, in_place=True)
        json.dumps({"frame": k, "detections": detections.records(SYNTHETIC_CLASSES)})
    draw_json = time.thread_time() - tic
    writer = cv2.VideoWriter(str(out / "alone.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    tic = time.thread_time()
    for frame in frames:
        writer.write(frame)
    writer.release()
    encode = time.thread_time() - tic
    return {"draw_json": 1000 * draw_json / len(frames), "encode": 1000 * encode / len(frames)}


def start_server(export: Path) -> tuple[subprocess.Popen, str]:
    """tools/serve.py on a free loopback port; returns the process and its URL."""
    process = subprocess.Popen(
        [sys.executable, "-m", "ssd.cli.serve", "--graph", str(export), "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=ROOT,
    )  # fmt: skip
    process.stdout.readline()  # "precision fp32 (...)": the precision it chose
    line = process.stdout.readline()  # "serving ... on http://127.0.0.1:PORT ..."
    if " on http://" not in line:
        process.kill()
        raise RuntimeError(f"server did not start: {line!r}")
    return process, line.split(" on ")[1].split()[0]


def bench_server(export: Path, images: list[bytes], clients: int, repeats: int) -> dict:
    process, url = start_server(export)
    try:
        post_image(url, images[0])  # warm-up
        sequential, concurrent = [], []
        for _ in range(repeats):
            tic = time.perf_counter()
            for body in images:
                assert post_image(url, body)["status"] == 200
            sequential.append(len(images) / (time.perf_counter() - tic))
            tic = time.perf_counter()
            with ThreadPoolExecutor(clients) as pool:
                statuses = list(pool.map(lambda b: post_image(url, b)["status"], images))
            assert statuses == [200] * len(images)
            concurrent.append(len(images) / (time.perf_counter() - tic))
    finally:
        process.terminate()
        process.wait(timeout=30)
    return {"sequential_rps": statistics.median(sequential), "concurrent_rps": statistics.median(concurrent)}


def bench_process_per_image(export: Path, image_paths: list[Path], out: Path) -> float:
    """Images per second when every image starts `python detect.py` (median seconds per image)."""
    seconds = []
    for path in image_paths:
        tic = time.perf_counter()
        subprocess.run([sys.executable, "-m", "ssd.cli.detect", str(path), "--graph", str(export),
                        "--out", str(out / "per_process"), "--quiet"],
                       check=True, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        seconds.append(time.perf_counter() - tic)
    return 1.0 / statistics.median(seconds)


def table(results: dict) -> str:
    p, s, per_process = results["pipeline"], results["server"], results["process_per_image_rps"]
    per, io = p["per_frame_ms"], p["io_cpu_ms"]
    lines = [
        f"detect.py video pipeline, {p['frames']} frames {p['size']}, batch {p['batch_size']}, "
        f"model {results['model']} (medians of {results['repeats']})",
        f"  {'pipeline (decode->model->draw+encode)':42s} {p['pipeline_fps']:8.1f} FPS",
        f"  {'model only (frames in memory)':42s} {p['model_only_fps']:8.1f} FPS",
        f"  {'ratio pipeline / model-only':42s} {p['ratio']:8.3f}   (target >= 0.9)",
        f"  {'CPU bound: model-only CPU / pipeline CPU':42s} {p['cpu_bound']:8.3f}   "
        f"(CPU per frame {per['model_only_cpu']:.1f} / {per['pipeline_cpu']:.1f} ms)",
        f"  per frame: model {per['model_s']:.1f} ms, decode {per['decode_s']:.1f} ms, "
        f"draw+encode {per['draw_encode_s']:.1f} ms (wall; the last two overlap the model)",
        f"  video I/O alone, CPU per frame: decode {io['decode']:.2f} ms, draw + JSON {io['draw_json']:.2f} ms, "
        f"mp4v encode {io['encode']:.2f} ms",
        f"single-image detection, {results['image_size']} JPEG, {results['images']} images",
        f"  {'server, sequential':42s} {s['sequential_rps']:8.2f} req/s",
        f"  {'server, ' + str(results['clients']) + ' concurrent clients':42s} {s['concurrent_rps']:8.2f} req/s",
        f"  {'detect.py process per image':42s} {per_process:8.2f} img/s",
        f"  {'server sequential / process per image':42s} {s['sequential_rps'] / per_process:8.1f}x",
    ]  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--width", type=float, default=0.25, help="model channel multiplier (default: 0.25)")
    p.add_argument("--graph", type=Path, help="benchmark this export directory (e.g. the demo's trained "
                   "graph, whose detections are realistic) instead of an untrained model of --width")
    p.add_argument("--frames", type=int, default=250, help="video frames (default: 250, 10 s at 25 fps)")
    p.add_argument("--video-size", default="480x360", help="video WxH (default: 480x360)")
    p.add_argument("--batch-size", type=int, default=8, help="frames per graph call (default: 8)")
    p.add_argument("--threshold", type=float, default=0.5, help="drawing threshold (default: 0.5)")
    p.add_argument("--repeats", type=int, default=3, help="repeats per measurement; medians (default: 3)")
    p.add_argument("--images", type=int, default=16, help="images per server measurement (default: 16)")
    p.add_argument("--clients", type=int, default=4, help="concurrent server clients (default: 4)")
    p.add_argument("--process-images", type=int, default=3, help="detect.py processes timed (default: 3)")
    p.add_argument("--json", type=Path, help="also write the results here")
    args = p.parse_args(argv)
    width, height = (int(v) for v in args.video_size.lower().split("x"))
    cv2.setNumThreads(1)  # as detect_video runs OpenCV, so the per-step CPU costs are the pipeline's
    with tempfile.TemporaryDirectory(prefix="bench_detect_") as tmp:
        work = Path(tmp)
        export = args.graph if args.graph else make_export(work, args.width)
        video = write_synthetic_video(work / "shapes.mp4", args.frames, VIDEO_FPS, width, height, seed=1)
        graph = FrozenGraph(export / "frozen_inference_graph.pb")
        frames, decode_ms = decode_all(video)
        rgb = [cv2.cvtColor(frame, cv2.COLOR_BGR2RGB) for frame in frames]
        bodies = [cv2.imencode(".jpg", frame)[1].tobytes() for frame in frames[: args.images]]
        pipeline = bench_pipeline(graph, video, rgb, work, args.batch_size, args.repeats, args.threshold)
        # last: drawing marks the BGR frames
        io_ms = io_cpu_per_frame(graph, frames, rgb, work, args.batch_size, args.threshold, VIDEO_FPS)
        pipeline["io_cpu_ms"] = {"decode": decode_ms, **io_ms}
        paths = []
        for k, body in enumerate(bodies[: args.process_images]):
            paths.append(work / f"image{k}.jpg")
            paths[-1].write_bytes(body)
        server = bench_server(export, bodies, args.clients, args.repeats)
        per_process = bench_process_per_image(export, paths, work)
    results = {
        "model": str(args.graph) if args.graph else f"untrained, width {args.width}", "repeats": args.repeats,
        "pipeline": pipeline, "server": server,
        "process_per_image_rps": per_process, "images": len(bodies), "clients": args.clients,
        "image_size": f"{width}x{height}", "cpu_count": os.cpu_count(), "platform": platform.platform(),
        "tensorflow": tf.__version__,
    }  # fmt: skip
    print(table(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
