#!/usr/bin/env python3
"""Export a training run as a frozen inference graph (TF Object Detection API names), SavedModel and TFLite.

Writes OUT/frozen_inference_graph.pb, OUT/saved_model/, OUT/label_map.pbtxt, OUT/labels.txt,
OUT/export.json (the graph's input size) and with --tflite OUT/model.tflite and OUT/model_core.tflite.
The graph takes `image_tensor` (uint8 RGB [batch, any height, any width, 3]) and returns
detection_boxes (normalised ymin, xmin, ymax, xmax), detection_scores, detection_classes, num_detections.

Example:
  python export_graph.py --run-dir runs/ssd300 --out export/ssd300
  python detect.py --graph export/ssd300 clip.mp4 --out detections/
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ssd.cli import configure_logging


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run-dir", required=True, type=Path, help="training run directory (config.json + checkpoints/)")
    p.add_argument("--out", required=True, type=Path, help="export directory")
    p.add_argument("--checkpoint", choices=("best", "latest"), default="best",
                   help="'best' (validation mAP; falls back to latest) or 'latest' (default: best)")
    p.add_argument("--score-threshold", type=float, default=0.01,
                   help="per-class score threshold baked into the graph (default: 0.01, as in the paper)")
    p.add_argument("--iou-threshold", type=float, default=0.45, help="NMS IoU threshold (default: 0.45)")
    p.add_argument("--max-detections", type=int, default=100, help="detections kept per image (default: 100)")
    p.add_argument("--tflite", action="store_true", help="also write model.tflite and model_core.tflite")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging()
    from ssd.deploy.export import export_run
    from ssd.detections import INPUT_NAME, OUTPUT_NAMES

    try:
        result = export_run(args.run_dir, args.out, args.checkpoint, args.score_threshold,
                            args.iou_threshold, args.max_detections, args.tflite)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"frozen graph   {result.graph_path}  ({result.graph_mb:.2f} MB)")
    print(f"  input        {INPUT_NAME}:0  uint8 [batch, height, width, 3] RGB")
    print(f"  outputs      {', '.join(f'{n}:0' for n in OUTPUT_NAMES)}")
    print(f"saved model    {result.saved_model_dir}  (signature serving_default, same names)")
    print(f"labels         {result.label_map_path}, {result.labels_path}  ({len(result.class_names)} classes)")
    for note in result.tflite_notes:
        print(f"tflite         {note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
