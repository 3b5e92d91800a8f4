#!/usr/bin/env python3
"""Export a training run for deployment: frozen graph and SavedModel (TF Object Detection API names),
ONNX, OpenVINO IR and TFLite, optionally with INT8 twins.

Every format takes `image_tensor` (uint8 RGB [batch, any height, any width, 3]; TFLite batch 1)
and returns detection_boxes (normalised ymin, xmin, ymax, xmax), detection_scores,
detection_classes (1..C), num_detections, post-processing included:

  frozen       OUT/frozen_inference_graph.pb      saved_model  OUT/saved_model/
  onnx         OUT/model.onnx (NonMaxSuppression in ONNX ops; dynamic batch; TensorRT reads it)
  openvino     OUT/model.xml + model.bin (fp32 weights; precision chosen at load)
  tflite       OUT/model.tflite (TFLite_Detection_PostProcess: no Flex delegate)
plus OUT/label_map.pbtxt, OUT/labels.txt and OUT/export.json (input size, post-processing). Every format bakes in
the same post-processing (--score-threshold, --iou-threshold, --top-k-per-class, --max-detections; defaults the
Caffe release's, as the library's detector). --int8 adds OUT/model_int8.xml (NNCF) and/or
OUT/model_int8.tflite (int8 convolutions but conv4_3's), calibrated on --calibration-images images drawn from the
run's training split (listed in OUT/calibration.json), then prints the VOC07 mAP of each INT8
model next to its fp32 twin's on the run's validation split (or --calibration-check N images).
--max-map-drop D bounds the loss of the reduced precisions on that split (points of the run's metric,
VOC07 mAP or COCO AP): the OpenVINO INT8 model keeps operations float (NNCF accuracy control) until
it is within D, or is left out; the IR at bf16 is checked where the CPU has bf16 units. The checks
go into OUT/export.json, where `--precision auto` of detect.py, serve and evaluate reads them.

Example:
  python export_graph.py --run-dir runs/ssd300 --out export/ssd300
  python export_graph.py --run-dir runs/ssd300 --out export/ssd300 --format onnx,openvino,tflite --int8
  python export_graph.py --run-dir runs/ssd300 --out export/ssd300 --format openvino --int8 --max-map-drop 0.5
  python detect.py --model export/ssd300/model_int8.xml clip.mp4 --out detections/
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
from pathlib import Path

from ssd.cli import configure_logging
from ssd.core.postprocess import PostprocessOptions  # NumPy only until used: fast --help
from ssd.deploy.runtimes import DEFAULT_FORMATS, FORMATS, INT8_FORMATS
from ssd.evaluation.report import percent


def _formats(text: str) -> tuple[str, ...]:
    formats = tuple(f.strip() for f in text.split(",") if f.strip())
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise argparse.ArgumentTypeError(f"expected a comma-separated list of {', '.join(FORMATS)}; got {text!r}")
    return formats


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run-dir", required=True, type=Path, help="training run directory (config.json + checkpoints/)")
    p.add_argument("--out", required=True, type=Path, help="export directory")
    p.add_argument("--checkpoint", choices=("best", "latest"), default="best",
                   help="'best' (validation mAP; falls back to latest) or 'latest' (default: best)")
    p.add_argument("--format", type=_formats, default=DEFAULT_FORMATS,
                   help=f"comma-separated, any of {','.join(FORMATS)} (default: {','.join(DEFAULT_FORMATS)})")
    p.add_argument("--tflite", action="store_true", help="also export tflite (same as adding it to --format)")
    p.add_argument("--int8", action="store_true", help="also write INT8 models of the openvino and tflite formats")
    p.add_argument("--calibration-images", type=int, default=100,
                   help="with --int8: images drawn from the run's training split to calibrate on (default: 100)")
    p.add_argument("--calibration-check", type=int,
                   help="with --int8: compare mAP on this many validation images (default: the whole split)")
    p.add_argument("--max-map-drop", type=float, metavar="POINTS",
                   help="with openvino: INT8 (NNCF accuracy control) and bf16 lose at most this many points of "
                        "the run's validation metric, or are not made the default (negative: must gain)")
    p.add_argument("--data-root", type=Path, help="with --int8: dataset root (default: the run's data_root)")
    p.add_argument("--seed", type=int, default=0, help="with --int8: seed of the calibration draw (default: 0)")
    add_postprocess_arguments(p)
    return p


# The help of each `PostprocessOptions` field's flag (--score-threshold for score_threshold, ...).
POSTPROCESS_HELP = {
    "score_threshold": "per-class score threshold; a score must exceed it",
    "iou_threshold": "NMS IoU threshold",
    "top_k_per_class": "candidates per class going into NMS; TFLite's op has no such cap",
    "max_detections": "detections kept per image",
}


def add_postprocess_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per `PostprocessOptions` field, its default the dataclass's (read when the parser is built)."""
    defaults = PostprocessOptions()
    group = parser.add_argument_group("post-processing, the same in every format")
    for field in dataclasses.fields(PostprocessOptions):
        default = getattr(defaults, field.name)
        group.add_argument(f"--{field.name.replace('_', '-')}", type=type(default), default=default,
                           help=f"{POSTPROCESS_HELP[field.name]} (default: %(default)s)")


def postprocess_options_from(args: argparse.Namespace) -> PostprocessOptions:
    """The `PostprocessOptions` of parsed `add_postprocess_arguments` flags; ValueError naming a bad one."""
    fields = dataclasses.fields(PostprocessOptions)
    return PostprocessOptions(**{field.name: getattr(args, field.name) for field in fields})


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging()
    formats = tuple(dict.fromkeys(args.format + (("tflite",) if args.tflite else ())))
    if args.int8 and not set(INT8_FORMATS) & set(formats):
        print(f"error: --int8 needs {' or '.join(INT8_FORMATS)} in --format", file=sys.stderr)
        return 2
    if args.max_map_drop is not None and ("openvino" not in formats or not math.isfinite(args.max_map_drop)):
        print(f"error: --max-map-drop needs openvino in --format and a finite number, got {args.max_map_drop} "
              f"with {','.join(formats)}", file=sys.stderr)
        return 2
    if args.calibration_images < 1 or (args.calibration_check is not None and args.calibration_check < 1):
        print("error: --calibration-images and --calibration-check must be >= 1", file=sys.stderr)
        return 2
    from ssd.deploy.export import export_run
    from ssd.detections import INPUT_NAME, OUTPUT_NAMES

    try:
        options = postprocess_options_from(args)
        calibration = _calibration(args) if args.int8 else None
        result = export_run(args.run_dir, args.out, args.checkpoint, options, formats,
                            calibration[1] if calibration else None)
        checks = _check_precisions(args, calibration[1] if calibration else None) if args.max_map_drop is not None \
            else None
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"  input        {INPUT_NAME}  uint8 [batch, height, width, 3] RGB")
    print(f"  outputs      {', '.join(OUTPUT_NAMES)}")
    for label, path in result.files.items():
        print(f"{label:14s} {path}")
    print(f"{'labels':14s} {result.label_map_path}, {result.labels_path}  ({len(result.class_names)} classes)")
    if calibration:
        print(f"{'calibration':14s} {calibration[0]}  ({len(calibration[1])} training images)")
        _print_int8_check(args, result.files)
    if checks is not None:
        _print_checks(checks, args.max_map_drop)
    return 0


def _run_data(args: argparse.Namespace):
    """(the run's training and validation sets as training split them, --val-fraction included; model
    config; train config)."""
    from ssd_datasets import load_train_val
    from ssd.engine.run_config import load_run_config

    model_config, train_config = load_run_config(args.run_dir)
    data = load_train_val(args.data_root or Path(train_config.data_root), train_config.train_splits,
                          train_config.val_splits, model_config.class_names, train_config.val_fraction,
                          train_config.seed, data_format=train_config.data_format, image_dir=train_config.image_dir,
                          run_classes=True)
    return data, model_config, train_config


def _validation_dataset(args: argparse.Namespace):
    """(the run's validation set, or its first --calibration-check images, None for a run trained without
    validation; its split names; model config; train config)."""
    from ssd.records import DetectionDataset

    data, model_config, train_config = _run_data(args)
    if data.val is None:
        return None, (), model_config, train_config
    dataset = data.val
    if args.calibration_check is not None:
        dataset = DetectionDataset(dataset.class_names, dataset.samples[: args.calibration_check],
                                   dataset.category_ids)
    return dataset, data.val_splits, model_config, train_config


def _check_precisions(args: argparse.Namespace, calibration):
    """bf16 and (with --int8) accuracy-controlled INT8 checks of the OpenVINO IR within --max-map-drop."""
    from ssd.deploy.quantization import ValidationSet, check_reduced_precisions

    dataset, splits, model_config, train_config = _validation_dataset(args)
    if dataset is None:
        raise ValueError(f"--max-map-drop: the run {args.run_dir} was trained without validation data, which the "
                         "bound is measured on (train with --val-split or --val-fraction)")
    validation = ValidationSet(dataset, model_config.image_size, train_config.eval_metric, splits)
    return check_reduced_precisions(args.out, calibration, validation, args.max_map_drop)


def _print_checks(checks, max_drop: float) -> None:
    """Each check's drop against the bound; for INT8 the speed against plain INT8 and what stayed float."""
    if not any(c.precision == "bf16" for c in checks):
        print("bf16 check     skipped: this CPU has no bf16 units")
    for check in checks:
        print(f"{check.precision} check     {check.model}: {check.summary()}: {'met' if check.met else 'MISSED'}")
        if check.precision != "int8":
            continue
        d = check.details
        rates = d["images_per_second"]
        print(f"  plain INT8 {d['plain_int8']:.2f}% (drop {check.fp32 - d['plain_int8']:.2f} points); "
              f"{d['quantized_operations']} operations INT8, {len(d['kept_float'])} put back to float"
              + (f": {', '.join(d['kept_float'])}" if d["kept_float"] else ""))
        print(f"  images/s ({d['timing']}): fp32 {rates['fp32']:.1f}, plain INT8 {rates['plain_int8']:.1f}, "
              f"this INT8 {rates['int8']:.1f} ({rates['int8'] / rates['plain_int8']:.2f}x plain INT8, "
              f"{rates['int8'] / rates['fp32']:.2f}x fp32)")
        if not check.met:
            print(f"  the INT8 model cannot be kept within {max_drop:g} points: {check.model} was not written; "
                  f"the float model stays the default")


def _calibration(args: argparse.Namespace):
    """(record path, images): --calibration-images drawn from the run's training split, recorded in OUT."""
    from ssd.deploy.quantization import CALIBRATION_FILE, calibration_images, draw_calibration, write_calibration_record

    data, model_config, train_config = _run_data(args)
    root = args.data_root or Path(train_config.data_root)
    samples = draw_calibration(data.train, args.calibration_images, args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    record = write_calibration_record(args.out / CALIBRATION_FILE, samples, str(root), data.train_splits, args.seed)
    return record, calibration_images(samples, model_config.image_size)


def _print_int8_check(args: argparse.Namespace, files: dict[str, Path]) -> None:
    """VOC07 mAP of each INT8 model next to its fp32 twin's, on the run's validation split (OpenVINO's
    only without --max-map-drop, whose checks report it)."""
    from ssd.deploy.quantization import compare_map

    pairs = [pair for pair in (("openvino", "openvino_int8"), ("tflite", "tflite_int8")) if pair[1] in files
             and (pair[0] != "openvino" or args.max_map_drop is None)]
    if not pairs:
        return
    dataset, splits, model_config, _ = _validation_dataset(args)
    if dataset is None:
        print(f"INT8 check skipped: the run {args.run_dir} was trained without validation data")
        return
    maps = compare_map({label: files[label] for pair in pairs for label in pair}, dataset, model_config.image_size)
    print(f"INT8 check: VOC07 mAP on {len(dataset)} images of {', '.join(splits)}")
    for fp32, int8 in pairs:
        if int8 in maps:
            change = (maps[int8] - maps[fp32]) * 100 if None not in (maps[int8], maps[fp32]) else float("nan")
            print(f"  {fp32:9s} fp32 {_pct(maps[fp32])}  int8 {_pct(maps[int8])}  change {change:+.2f} points")


def _pct(value: float | None) -> str:
    return f"{percent(value):>6}"


if __name__ == "__main__":
    sys.exit(main())
