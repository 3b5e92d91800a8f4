"""The whole pipeline on the embedded synthetic dataset, as a newcomer's first command (`make demo`).

synthetic VOC-format dataset -> train a slim SSD300 -> VOC mAP at several confidence levels and
PR curves -> frozen inference graph and OpenVINO INT8 (calibrated on training images, its mAP
checked against fp32) -> annotate and track a synthetic video with detect.py with each, printing
both FPS, and score the tracks against the video's ground truth (TrackEval: HOTA, MOTA, IDF1).
On a 2-core CPU it takes about 10 minutes; --quick runs a tiny version in about one.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import re
import sys
import time
from pathlib import Path

from ssd.cli import detect, evaluate, make_synthetic_dataset
from ssd.cli import export as export_graph
from ssd.cli import train as train_detector
from ssd.evaluation.report import percent
from ssd.evaluation.tracking import evaluate_mot, format_summary
from ssd_datasets import synthetic_video as make_synthetic_video

# The demo's recipe: a slim network from scratch with Adam converges on the shapes in minutes;
# the zoom-out augmentation is left out because it pays off only over long runs.
FULL = dict(train=1000, test=200, epochs=15, frames=150, calibration=100)
QUICK = dict(train=48, test=16, epochs=1, frames=12, calibration=8)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("demo_output"), help="where everything goes (default: demo_output/ in the current directory)")
    p.add_argument("--quick", action="store_true", help="a tiny dataset and one epoch: checks the plumbing only")
    p.add_argument("--epochs", type=int, help="training epochs (default: 15, or 1 with --quick)")
    p.add_argument("--width", type=float, default=0.125, help="channel multiplier of the SSD300 (default: 0.125)")
    p.add_argument("--workers", type=int, default=2, help="data worker processes (default: 2)")
    return p


def _step(title: str) -> float:
    print(f"\n=== {title}", flush=True)
    return time.perf_counter()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    sizes = dict(QUICK if args.quick else FULL)
    epochs = args.epochs or sizes["epochs"]
    out = args.out
    data, run, evaluation, export, videos = (out / "data", out / "run", out / "evaluation",
                                             out / "export", out / "video")
    started = time.perf_counter()

    _step("1/5 synthetic VOC-format dataset")
    if (data / "ImageSets" / "Main" / "test.txt").is_file():
        print(f"reusing {data}")
    else:
        make_synthetic_dataset.main(["--out", str(data), "--train", str(sizes["train"]),
                                     "--test", str(sizes["test"]), "--seed", "0"])

    _step(f"2/5 train a slim SSD300 (width {args.width}) for {epochs} epochs")
    code = train_detector.main([
        "--run-dir", str(run), "--data-root", str(data), "--train-split", "trainval",
        "--val-split", "test", "--width", str(args.width), "--from-scratch",
        "--optimizer", "adam", "--lr", "3e-3", "--schedule", "cosine", "--warmup-steps", "100",
        "--expand-probability", "0", "--batch-size", "16", "--epochs", str(epochs),
        "--eval-every", "5", "--checkpoint-every", "200", "--workers", str(args.workers),
    ])
    if code != 0:
        return code

    _step("3/5 Pascal VOC mAP on the test split")
    evaluate.main(["--run-dir", str(run), "--checkpoint", "latest", "--data-root", str(data), "--split", "test",
                   "--out", str(evaluation), "--write-results", str(evaluation / "results"), "--no-progress"])

    _step("4/5 export the frozen inference graph, and OpenVINO IR with its INT8 twin")
    export_graph.main(["--run-dir", str(run), "--checkpoint", "latest", "--out", str(export),
                       "--format", "frozen,saved_model,openvino", "--int8",
                       "--calibration-images", str(sizes["calibration"])])

    _step("5/5 annotate and track a synthetic video with detect.py: frozen graph (TF fp32), then OpenVINO INT8")
    video, gt = videos / "shapes.mp4", videos / "shapes_gt.txt"
    make_synthetic_video.main(["--out", str(video), "--gt", str(gt), "--frames", str(sizes["frames"])])
    runs = (("TensorFlow fp32 (frozen graph)", export, "annotated"),
            ("OpenVINO INT8", export / "model_int8.xml", "annotated_int8"))
    fps = {label: _detect_fps(["--model", str(model), str(video), "--out", str(videos / folder), "--track",
                               "--mot", str(videos / folder / "mot")])
           for label, model, folder in runs}
    tracking = {label: evaluate_mot(gt, videos / folder / "mot" / "shapes.txt", sizes["frames"])
                for label, _, folder in runs if (videos / folder / "mot" / "shapes.txt").is_file()}

    metrics = json.loads((evaluation / "metrics.json").read_text())
    levels = ", ".join(f"{percent(m)} @ {c:g}" for c, m in zip(metrics["confidence_levels"], metrics["map_voc07"]))
    print(f"\n=== done in {(time.perf_counter() - started) / 60:.1f} min")
    print(f"VOC07 mAP on the synthetic test split: {levels}")
    print("video FPS (whole detect.py pipeline, tracking included): "
          + ", ".join(f"{label} {value:.1f}" for label, value in fps.items()))
    for label, summary in tracking.items():
        print(f"tracking the video, {label} (TrackEval against {gt.name}):\n  "
              + format_summary(summary).replace("\n", "\n  "))
    for name, path in [("dataset", data), ("run directory (TensorBoard: logs/)", run),
                       ("metrics and PR curves", evaluation), ("frozen graph, SavedModel, OpenVINO IR", export),
                       ("annotated video, JSON lines, MOT files", videos / "annotated"),
                       ("the same with the INT8 model", videos / "annotated_int8")]:
        print(f"  {name:<36} {path}")
    return 0


def _detect_fps(argv: list[str]) -> float:
    """Run detect.py on one video, echo its report, return its wall FPS (the "total wall" line)."""
    captured = io.StringIO()
    with contextlib.redirect_stdout(captured):
        detect.main(argv)
    print(captured.getvalue(), end="")
    found = re.search(r"total wall .*?([\d.]+) FPS", captured.getvalue())
    return float(found.group(1)) if found else float("nan")


if __name__ == "__main__":
    sys.exit(main())
