"""Benchmark every deployment runtime side by side, post-processing included.

One run, everything made in a temporary directory (or --work): a small synthetic VOC-format set,
for each --widths an SSD300 (untrained, seed 0) exported in every format with INT8 twins
calibrated on the set's training split, and a width --map-width SSD300 trained with
train_detector.py for --epochs (or --run-dir) for the INT8 accuracy check. Printed, and with
--json written:

  ceilings   the machine's fp32 / bf16 / int8 matrix-multiply rates (GOP/s, 2048^3 products):
             fp32 and bf16 through TensorFlow (oneDNN), int8 through ONNX Runtime's MatMulInteger;
             and, per width, the model's heaviest convolution alone at its own shapes (batch 8)
             through OpenVINO at fp32, bf16 and int8: what each precision's kernels reach there
  runtimes   images/s at batch 1 and 8 (uint8 300x300 images of the synthetic test split, the whole
             exported model: resize, network, decoding, NMS; medians of --repeats rounds, each
             round timing one pass of every runtime in turn) for TF fp32 (frozen graph), TF mixed
             bf16 (Keras mixed_bfloat16 policy), ONNX Runtime fp32, OpenVINO fp32 / bf16 / INT8,
             TFLite fp32 / INT8; the ratio to TF fp32; GOP/s of the convolutions at batch 8; for
             OpenVINO the kernel that ran most of the convolutions' time (its exec type, which
             names the instruction set: brgconv_avx512_I8, ..._bf16, ..._amx_int8); the max box and
             score deviation from TF fp32 over the top 10 detections of each image and the share of
             those with the same class
  accuracy   VOC07 11-point mAP (synthetic test split) of the trained model in each runtime, and
             the change of each INT8 model from its fp32 twin; the trained model is also exported
             with --int8 --max-map-drop 0.5 (export_graph.py's report printed) and that INT8 model
             timed beside the plain one
  video      detect.py's pipeline FPS with the fastest runtime against that runtime alone on the
             same frames (model-only FPS)

Targets (reported, not asserted): fastest runtime >= 4x TF fp32 at batch 8 (SSD300 full width);
INT8 mAP change >= -0.5 points; ONNX and OpenVINO fp32 deviation <= 1e-4 with the same classes.

    python tools/benchmark_deploy.py [--widths 1.0,0.125] [--map-width 0.25] [--repeats 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parents[2]

import numpy as np
import tensorflow as tf

from ssd.cli import export as export_graph
from ssd.cli import train as train_detector
from ssd_datasets import load_dataset
from ssd_datasets.synthetic import SYNTHETIC_CLASSES, generate_synthetic_voc
from ssd.config import ModelConfig
from ssd.engine.recipe import TrainConfig
from ssd.deploy.quantization import calibration_images, compare_map
from ssd.deploy.runtimes import load_detector
from ssd.deploy.timing import interleaved_rates
from ssd.deploy.video import detect_video, open_video
from ssd.detections import DetectFn
from ssd.modeling.inference import Detector
from ssd.modeling.model import build_model_from_config
from ssd.engine.run_config import load_run_config
from ssd.modeling.run_dir import load_trained_model, save_run_config
from ssd_datasets.synthetic_video import write_synthetic_video

# (runtime, precision, exported file or None for the Keras bf16 model, OpenVINO precision hint)
RUNTIMES = (
    ("TensorFlow", "fp32", "frozen_inference_graph.pb", "f32"),
    ("TensorFlow", "mixed bf16", None, "f32"),
    ("ONNX Runtime", "fp32", "model.onnx", "f32"),
    ("OpenVINO", "fp32", "model.xml", "f32"),
    ("OpenVINO", "bf16", "model.xml", "bf16"),
    ("OpenVINO", "int8", "model_int8.xml", "f32"),
    ("TFLite", "fp32", "model.tflite", "f32"),
    ("TFLite", "int8", "model_int8.tflite", "f32"),
)
# The trained model's INT8 with an accuracy bound (export_graph.py --max-map-drop), in a subfolder of its export.
MAX_MAP_DROP = 0.5
CHECKED = (("OpenVINO", f"int8 <={MAX_MAP_DROP:g}", "checked/model_int8.xml", "f32"),)
INT8_TWINS = {"model_int8.xml": "model.xml", "model_int8.tflite": "model.tflite", "checked/model_int8.xml": "model.xml"}
TOP = 10  # detections per image compared against TF fp32
EXPORT_FORMATS = "frozen,onnx,openvino,tflite"


# ------------------------------------------------------------------------------------- ceilings


def matmul_rates(n: int = 2048, repeats: int = 3) -> dict[str, float]:
    """GOP/s of an n x n x n matrix product: fp32 and bf16 in TensorFlow, int8 in ONNX Runtime."""
    rng = np.random.default_rng(0)
    rates = {}
    for name, dtype in (("fp32", tf.float32), ("bf16", tf.bfloat16)):
        a = tf.constant(rng.standard_normal((n, n)), dtype)
        product = tf.function(lambda x: tf.reduce_sum(tf.cast(tf.matmul(x, x), tf.float32)))
        rates[name] = 2 * n**3 / _best_seconds(lambda: product(a).numpy(), repeats) / 1e9
    rates["int8"] = 2 * n**3 / _best_seconds(_int8_matmul(n, rng), repeats) / 1e9
    return rates


def _int8_matmul(n: int, rng: np.random.Generator) -> Callable[[], object]:
    import onnxruntime as ort
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", ["a", "b"], ["c"])], "int8_matmul",
        [helper.make_tensor_value_info("a", TensorProto.UINT8, [n, n]),
         helper.make_tensor_value_info("b", TensorProto.INT8, [n, n])],
        [helper.make_tensor_value_info("c", TensorProto.INT32, [n, n])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    feeds = {"a": rng.integers(0, 255, (n, n), np.uint8), "b": rng.integers(-127, 127, (n, n), np.int8)}
    return lambda: session.run(None, feeds)


def _best_seconds(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        tic = time.perf_counter()
        fn()
        times.append(time.perf_counter() - tic)
    return min(times)


def convolutions(ir: Path, batch: int) -> list[dict]:
    """Every Convolution of the IR at input [batch, 300, 300, 3]: name, shapes, attributes, operations (2 x MACs)."""
    import openvino as ov

    model = ov.Core().read_model(str(ir))
    model.reshape({0: [batch, 300, 300, 3]})
    convs = []
    for op in model.get_ops():
        if op.get_type_name() == "Convolution":
            weights = list(op.input_value(1).get_shape())
            convs.append({"name": op.get_friendly_name(), "input": list(op.get_input_shape(0)), "weights": weights,
                          "strides": list(op.get_strides()),
                          "pads": (list(op.get_pads_begin()), list(op.get_pads_end())),
                          "dilations": list(op.get_dilations()),
                          "ops": 2 * int(np.prod(op.get_output_shape(0))) * int(np.prod(weights[1:]))})
    return convs


def model_gops(ir: Path) -> float:
    """Giga-operations (2 x multiply-adds of the convolutions) of one 300x300 image through the IR."""
    return sum(conv["ops"] for conv in convolutions(ir, 1)) / 1e9


def openvino_ceilings(ir: Path, batch: int, repeats: int = 5) -> dict:
    """GOP/s of the IR's heaviest convolution alone, at its shapes in the model at `batch`, through
    OpenVINO's CPU plugin at fp32, bf16 and int8 (FakeQuantize on input and weights, as NNCF marks
    the model): the rate each precision's kernels reach on this machine at the model's own shapes."""
    import openvino as ov
    import openvino.opset13 as ops

    conv = max(convolutions(ir, batch), key=lambda c: c["ops"])
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 4, conv["input"]).astype(np.float32)
    rates = {}
    for precision in ("fp32", "bf16", "int8"):
        data = param = ops.parameter(conv["input"], np.float32)
        weights = ops.constant(rng.standard_normal(conv["weights"]).astype(np.float32))
        if precision == "int8":
            data = ops.fake_quantize(data, *(ops.constant(np.float32(v)) for v in (0, 4, 0, 4)), 256)
            weights = ops.fake_quantize(weights, *(ops.constant(np.float32(v)) for v in (-3, 3, -3, 3)), 255)
        out = ops.convolution(data, weights, conv["strides"], *conv["pads"], conv["dilations"])
        compiled = ov.Core().compile_model(ov.Model([out], [param]), "CPU",
                                           {"INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32"})
        request = compiled.create_infer_request()
        rates[precision] = conv["ops"] / _best_seconds(lambda: request.infer({0: x}), repeats) / 1e9
    return {"layer": conv["name"], "input": conv["input"], "weights": conv["weights"], "gops": rates}


def openvino_kernels(path: Path, hint: str, batch: int = 8) -> str:
    """The kernel (OpenVINO exec type, e.g. brgconv_avx512_I8) that ran most of the convolutions' time."""
    import openvino as ov

    compiled = ov.Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": hint, "PERF_COUNT": True})
    request = compiled.create_infer_request()
    request.infer({0: np.zeros((batch, 300, 300, 3), np.uint8)})
    seconds: dict[str, float] = {}
    for info in request.get_profiling_info():
        if info.node_type == "Convolution":
            seconds[info.exec_type] = seconds.get(info.exec_type, 0.0) + info.real_time.total_seconds()
    return max(seconds, key=seconds.get) if seconds else "?"


# ------------------------------------------------------------------------------ models and data


def make_untrained_run(run_dir: Path, width: float, data: Path) -> Path:
    """A run directory holding an untrained SSD300 (seed 0) whose training split is `data`'s."""
    tf.keras.utils.set_random_seed(0)
    config = ModelConfig("vgg300", SYNTHETIC_CLASSES, width=width)
    save_run_config(run_dir, config, TrainConfig(data_root=str(data), train_splits=("trainval",),
                                                 val_splits=("test",)).to_dict())
    tf.train.CheckpointManager(tf.train.Checkpoint(model=build_model_from_config(config)),
                               str(run_dir / "checkpoints"), 1).save()
    return run_dir


def train_run(run_dir: Path, data: Path, width: float, epochs: int) -> Path:
    """An SSD300 trained with the demo's recipe for the accuracy check."""
    code = train_detector.main([
        "--run-dir", str(run_dir), "--data-root", str(data), "--train-split", "trainval", "--val-split", "test",
        "--width", str(width), "--from-scratch", "--optimizer", "adam", "--lr", "3e-3", "--schedule", "cosine",
        "--warmup-steps", "50", "--expand-probability", "0", "--batch-size", "16", "--epochs", str(epochs),
        "--eval-every", str(epochs), "--checkpoint-every", "1000", "--workers", "2",
    ])  # fmt: skip
    if code != 0:
        raise RuntimeError(f"train_detector.py exited with {code}")
    return run_dir


def export_all(run_dir: Path, out: Path, calibration: int) -> Path:
    """Every format with INT8 twins (export_graph.py's own INT8 check left out: the benchmark does it)."""
    with contextlib.redirect_stdout(io.StringIO()):
        code = export_graph.main(["--run-dir", str(run_dir), "--out", str(out), "--checkpoint", "latest",
                                  "--format", EXPORT_FORMATS, "--int8", "--calibration-images", str(calibration),
                                  "--calibration-check", "1"])
    if code != 0:
        raise RuntimeError(f"export_graph.py exited with {code}")
    return out


def export_checked(run_dir: Path, out: Path, calibration: int) -> str:
    """OpenVINO INT8 within MAX_MAP_DROP of fp32 on the run's validation split; export_graph.py's report."""
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = export_graph.main(["--run-dir", str(run_dir), "--out", str(out), "--checkpoint", "latest",
                                  "--format", "openvino", "--int8", "--calibration-images", str(calibration),
                                  "--max-map-drop", str(MAX_MAP_DROP)])
    if code != 0:
        raise RuntimeError(f"export_graph.py exited with {code}")
    return stdout.getvalue()


def bf16_detector(run_dir: Path) -> DetectFn:
    """The Keras model rebuilt under the mixed_bfloat16 policy (bf16 compute, float32 outputs)."""
    previous = tf.keras.mixed_precision.global_policy()
    tf.keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        model, config = load_trained_model(run_dir, "latest")
    finally:
        tf.keras.mixed_precision.set_global_policy(previous)
    return Detector(model, config).detect  # the exported graph, unfrozen: resize included


def load(export: Path, run_dir: Path, file: str | None, precision: str) -> DetectFn:
    return bf16_detector(run_dir) if file is None else load_detector(export / file, precision)


# ----------------------------------------------------------------------------------- measuring


def deviation(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> dict[str, float]:
    """Max |box| and |score| difference over each image's top TOP rows; share of rows with the same class."""
    rows = slice(0, TOP)
    return {
        "max_box_dev": float(np.abs(got["detection_boxes"][:, rows] - want["detection_boxes"][:, rows]).max()),
        "max_score_dev": float(np.abs(got["detection_scores"][:, rows] - want["detection_scores"][:, rows]).max()),
        "same_class": float((got["detection_classes"][:, rows] == want["detection_classes"][:, rows]).mean()),
    }


def bench_width(width: float, export: Path, run_dir: Path, images: np.ndarray, repeats: int,
                runtimes: tuple = RUNTIMES) -> list[dict]:
    """Every runtime x precision on `images`: images/s at batch 1 and 8, deviation from TF fp32, GOP/s of
    the convolutions, and for OpenVINO the convolution kernel that ran."""
    runtimes = tuple(r for r in runtimes if r[2] is None or (export / r[2]).is_file())
    detectors = {f"{runtime} {precision}": load(export, run_dir, file, hint)
                 for runtime, precision, file, hint in runtimes}
    gops = model_gops(export / "model.xml")
    rows, reference = [], None
    for (runtime, precision, file, hint), detect in zip(runtimes, detectors.values()):
        outputs = {k: np.concatenate([detect(images[i : i + 1])[k] for i in range(len(images))])
                   for k in ("detection_boxes", "detection_scores", "detection_classes")}
        reference = reference or outputs
        kernel = openvino_kernels(export / file, hint) if runtime == "OpenVINO" else "not exposed"
        rows.append({"width": width, "runtime": runtime, "precision": precision, "file": file or "(Keras model)",
                     "kernel": kernel, **deviation(outputs, reference)})
    batch1 = interleaved_rates(detectors, images[:8], 1, repeats)
    batch8 = interleaved_rates(detectors, images, 8, repeats)
    tf_fp32 = batch8[next(iter(detectors))]  # RUNTIMES starts with the baseline
    for row, label in zip(rows, detectors):
        row.update(batch1=batch1[label], batch8=batch8[label], speedup_b8=batch8[label] / tf_fp32,
                   gops_b8=gops * batch8[label])
        print(f"  {row['runtime']:13s} {row['precision']:11s} b1 {row['batch1']:7.2f}  b8 {row['batch8']:7.2f} img/s"
              f"  x{row['speedup_b8']:.2f}  {row['gops_b8']:7.1f} GOP/s  {row['kernel']}  "
              f"box dev {row['max_box_dev']:.1e}  score dev {row['max_score_dev']:.1e}  "
              f"same class {row['same_class']:.0%}", flush=True)
    return rows


def bench_accuracy(export: Path, data: Path) -> dict[str, float | None]:
    """VOC07 mAP of every exported model of the trained run on the synthetic test split."""
    dataset = load_dataset(data, ["test"], SYNTHETIC_CLASSES)
    models = {file: export / file for _, _, file, _ in RUNTIMES + CHECKED
              if file is not None and (export / file).is_file()}
    return compare_map(dict(models), dataset, 300)


def bench_video(detect: DetectFn, video: Path, work: Path, repeats: int) -> dict[str, float]:
    """detect.py's pipeline FPS on `video` against `detect` alone on its frames (batch 8), medians."""
    capture, _ = open_video(str(video))
    frames = []
    while (frame := capture.read()[1]) is not None:
        frames.append(frame[..., ::-1].copy())
    capture.release()
    rgb = np.stack(frames)
    pipeline, model = [], []
    for _ in range(repeats):
        with open(os.devnull, "w") as jsonl:
            report = detect_video(str(video), detect, work / "bench.mp4", jsonl, SYNTHETIC_CLASSES, 0.5, 8,
                                  None, False)
        pipeline.append(report.wall_fps)
        model.append(interleaved_rates({"model": detect}, rgb, 8, 1)["model"])
    return {"pipeline_fps": statistics.median(pipeline), "model_fps": statistics.median(model),
            "ratio": statistics.median(pipeline) / statistics.median(model)}


# ---------------------------------------------------------------------------------------- main


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--widths", default="1.0,0.125", help="SSD300 widths to time (default: 1.0,0.125)")
    p.add_argument("--map-width", type=float, default=0.25, help="width of the trained model (default: 0.25)")
    # 20 epochs of 400 images: VOC07 mAP about 0.73, a model whose INT8 change means something
    # (after 8 epochs, about 0.3: the change was mostly reordering among low scores).
    p.add_argument("--epochs", type=int, default=20, help="training epochs of the accuracy model (default: 20)")
    p.add_argument("--run-dir", type=Path, help="use this trained run (synthetic classes) instead of training one")
    p.add_argument("--train-images", type=int, default=400, help="synthetic trainval images (default: 400)")
    p.add_argument("--test-images", type=int, default=200, help="synthetic test images (default: 200)")
    p.add_argument("--calibration-images", type=int, default=100, help="INT8 calibration images (default: 100)")
    p.add_argument("--images", type=int, default=16, help="timed images per pass (default: 16)")
    p.add_argument("--repeats", type=int, default=3,
                   help="timed rounds, each one pass through every runtime; medians (default: 3)")
    p.add_argument("--frames", type=int, default=96, help="video frames for the pipeline check (default: 96)")
    p.add_argument("--work", type=Path, help="keep everything here instead of a temporary directory")
    p.add_argument("--json", type=Path, help="write every figure as JSON here")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    with contextlib.ExitStack() as stack:
        work = args.work or Path(stack.enter_context(tempfile.TemporaryDirectory()))
        work.mkdir(parents=True, exist_ok=True)
        report = run(args, work)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


def run(args: argparse.Namespace, work: Path) -> dict:
    started = time.perf_counter()
    data = work / "data"
    if not (data / "ImageSets" / "Main" / "test.txt").is_file():
        generate_synthetic_voc(data, args.train_images, args.test_images, seed=0)
    test = load_dataset(data, ["test"], SYNTHETIC_CLASSES)
    images = np.stack(calibration_images(test.samples[: args.images], 300))
    report: dict = {"cpu_count": os.cpu_count(), "images": len(images), "repeats": args.repeats}

    print("=== machine ceilings (GOP/s, 2048^3 matmul)", flush=True)
    report["matmul_gops"] = matmul_rates()
    print("  " + "  ".join(f"{k} {v:8.1f}" for k, v in report["matmul_gops"].items()), flush=True)

    report["runtimes"] = []
    for width in (float(w) for w in args.widths.split(",")):
        print(f"=== SSD300 width {width:g}: export (all formats, INT8 calibrated on "
              f"{args.calibration_images} training images)", flush=True)
        run_dir = make_untrained_run(work / f"run_w{width:g}", width, data)
        export = export_all(run_dir, work / f"export_w{width:g}", args.calibration_images)
        ceilings = openvino_ceilings(export / "model.xml", 8)
        report.setdefault("openvino_ceilings", {})[f"{width:g}"] = ceilings
        print(f"  ceilings: {ceilings['layer']} alone, input {ceilings['input']}, OpenVINO GOP/s "
              + "  ".join(f"{k} {v:.1f}" for k, v in ceilings["gops"].items()), flush=True)
        report["runtimes"] += bench_width(width, export, run_dir, images, args.repeats)

    trained = args.run_dir or train_run(work / "run_trained", data, args.map_width, args.epochs)
    trained_width = load_run_config(trained)[0].width  # --run-dir's may differ from --map-width
    print(f"=== INT8 accuracy: trained width {trained_width:g} model", flush=True)
    export = export_all(trained, work / "export_trained", args.calibration_images)
    report["checked_export"] = export_checked(trained, export / "checked", args.calibration_images)
    print(report["checked_export"], flush=True)
    maps = bench_accuracy(export, data)
    report["accuracy"] = {"run_dir": str(trained), "map_voc07": maps,
                          "int8_change_points": {int8: 100 * (maps[int8] - maps[fp32])
                                                 for int8, fp32 in INT8_TWINS.items() if int8 in maps}}
    for file, value in maps.items():
        print(f"  {file:26s} mAP {100 * value:6.2f}%", flush=True)
    for int8, change in report["accuracy"]["int8_change_points"].items():
        print(f"  {int8:26s} change {change:+.2f} points (target >= -0.5)", flush=True)
    trained_rows = bench_width(trained_width, export, trained, images, args.repeats, RUNTIMES + CHECKED)
    report["runtimes"] += [{**row, "trained": True, "map_voc07": maps.get(row["file"]),
                            "map_change_points": report["accuracy"]["int8_change_points"].get(row["file"])}
                           for row in trained_rows]

    widest = max(float(w) for w in args.widths.split(","))
    full = [r for r in report["runtimes"] if r["width"] == widest and not r.get("trained")]
    fastest = max(full, key=lambda r: r["batch8"])
    print(f"=== video: detect.py pipeline with the fastest runtime ({fastest['runtime']} {fastest['precision']})",
          flush=True)
    video = write_synthetic_video(work / "clip.mp4", num_frames=args.frames)
    export_dir = work / f"export_w{fastest['width']:g}"
    detect = load(export_dir, work / f"run_w{fastest['width']:g}", None if fastest["file"].startswith("(")
                  else fastest["file"], "bf16" if fastest["precision"] == "bf16" else "f32")
    report["video"] = {"runtime": f"{fastest['runtime']} {fastest['precision']}",
                       **bench_video(detect, video, work, max(1, args.repeats - 1))}
    print(f"  pipeline {report['video']['pipeline_fps']:.2f} FPS  model only {report['video']['model_fps']:.2f} FPS"
          f"  ratio {report['video']['ratio']:.2f}", flush=True)
    report["targets"] = {
        "fastest_speedup_b8": fastest["speedup_b8"],
        "fastest": f"{fastest['runtime']} {fastest['precision']}",
        "int8_map_change_min": min(report["accuracy"]["int8_change_points"].values()),
        "fp32_max_box_dev": max(r["max_box_dev"] for r in full if r["runtime"] in ("ONNX Runtime", "OpenVINO")
                                and r["precision"] == "fp32"),
    }
    report["seconds"] = time.perf_counter() - started
    print_table(report)
    return report


def print_table(report: dict) -> None:
    """The README's deployment table; mAP columns on the rows of the trained model."""
    print("\n| width | runtime | precision | images/s b1 | images/s b8 | × TF fp32 (b8) | GOP/s (b8) | "
          "convolution kernel | max box dev | max score dev | same class | mAP | mAP change |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in report["runtimes"]:
        width = f"{r['width']:g}" + (" trained" if r.get("trained") else "")
        map_text = f"{100 * r['map_voc07']:.2f}%" if r.get("map_voc07") is not None else "–"
        change = f"{r['map_change_points']:+.2f}" if r.get("map_change_points") is not None else "–"
        print(f"| {width} | {r['runtime']} | {r['precision']} | {r['batch1']:.2f} | {r['batch8']:.2f} | "
              f"{r['speedup_b8']:.2f} | {r['gops_b8']:.1f} | {r['kernel']} | {r['max_box_dev']:.1e} | "
              f"{r['max_score_dev']:.1e} | {r['same_class']:.0%} | {map_text} | {change} |")
    for width, c in report["openvino_ceilings"].items():
        print(f"\nceiling at width {width}: its heaviest convolution alone ({c['layer']}, input {c['input']}, "
              f"weights {c['weights']}) through OpenVINO: " + ", ".join(f"{k} {v:.1f}" for k, v in c["gops"].items())
              + " GOP/s")
    t = report["targets"]
    print(f"\nfastest at batch 8: {t['fastest']} {t['fastest_speedup_b8']:.2f}x TF fp32 (target >= 4); "
          f"worst INT8 mAP change {t['int8_map_change_min']:+.2f} points (target >= -0.5); "
          f"ONNX/OpenVINO fp32 max box deviation {t['fp32_max_box_dev']:.1e} (target <= 1e-4); "
          f"{report['seconds'] / 60:.1f} min")


if __name__ == "__main__":
    sys.exit(main())
