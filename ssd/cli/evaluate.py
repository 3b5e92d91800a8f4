"""Pascal VOC (devkit-exact AP, VOC2007 11-point and VOC2010+ area) and COCO (pycocotools)
evaluation at several confidence levels, on a VOC, COCO or YOLO dataset.

Evaluate one of:
  a trained run directory      python tools/evaluate.py --run-dir runs/ssd300 --data-root VOCdevkit --split VOC2007:test
  an exported model (any format) python tools/evaluate.py --model export/ssd300/model_int8.xml --data-root VOCdevkit --split VOC2007:test
  any detector's results files python tools/evaluate.py --results-dir results/ --data-root VOCdevkit --split VOC2007:test

Results files are `comp4_det_test_<class>.txt` (lines `image_id score xmin ymin xmax ymax`,
1-based pixels). Prints AP per class and level; --out writes metrics.json and pr_curves.png,
--write-results writes the detections as results files for the VOC evaluation server,
--coco-results as the COCO results JSON (the dataset's own category ids) for the COCO server.

  COCO metrics on COCO val2017   python tools/evaluate.py --run-dir runs/coco --data-root coco --split val2017 --metric coco
  both on a YOLO dataset         python tools/evaluate.py --run-dir runs/mine --data-root mine --split val.txt --metric voc07 coco
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ssd_datasets import load_splits
from ssd_datasets.exports import recognise
from ssd.cli import add_model_arguments, configure_logging
from ssd.cli.precision import load_chosen_model
from ssd.evaluation.loop import evaluate_detector, evaluate_results_files
from ssd.config import EVAL_METRICS
from ssd.evaluation.metrics import EvaluatorGroup, make_evaluator
from ssd.evaluation.report import format_coco_table, format_table, save_pr_curves
from ssd.records import DATA_FORMATS
from ssd.evaluation.results_files import COMP4_PREFIX, write_results_files


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--run-dir", type=Path, help="a training run directory (config.json + checkpoints)")
    add_model_arguments(parser, required=False, group=source)
    source.add_argument("--results-dir", type=Path, help="folder with one <prefix><class>.txt file per class")
    parser.add_argument("--checkpoint", choices=("best", "latest"), default="best",
                        help="with --run-dir: which checkpoint (default: best, else latest)")
    parser.add_argument("--image-size", type=int,
                        help="with --model: warp images to this size before the graph, which must be the "
                        "model's own input size (default: feed original images; the graph resizes them once)")
    parser.add_argument("--batch-size", type=int, default=16, help="images per detector call (default: 16)")
    parser.add_argument("--prefix", default=COMP4_PREFIX, help=f"results file name prefix (default: {COMP4_PREFIX})")
    parser.add_argument("--data-root", "--data", dest="data_root", type=Path, required=True,
                        help="the dataset as a tool exported it, a folder or a file: Ultralytics data.yaml, a COCO "
                             "folder or .json (Roboflow, CVAT, Label Studio result.json), a YOLO folder, a "
                             "VOCdevkit, a VOC folder or a LabelImg folder of XML files")
    parser.add_argument("--data-format", choices=DATA_FORMATS, help="the dataset's format (default: recognised)")
    parser.add_argument("--images", dest="image_dir", type=Path, metavar="DIR",
                        help="COCO: the folder the file_names are relative to (default: looked up)")
    parser.add_argument("--split", help='the split to evaluate: the export\'s name for it ("VOC2007:test", "val", '
                             '"valid"), a COCO JSON file or a YOLO list file / image folder (default: the export\'s '
                             'validation split; all of a one-split export)')
    parser.add_argument("--metric", nargs="+", choices=EVAL_METRICS, default=["voc07", "voc10"],
                        help="metrics to compute from one detector pass; voc07 and voc10 come together "
                             "(default: voc07 voc10)")
    parser.add_argument("--classes", help="class names, comma-separated or a file (default: the run's or "
                        "graph's labels, matched to the dataset's classes by name; else the dataset's own)")
    parser.add_argument("--confidence-levels", type=float, nargs="+", default=[0.01, 0.1, 0.3, 0.5],
                        help="evaluate the detections with score >= each level (default: 0.01 0.1 0.3 0.5)")
    parser.add_argument("--iou-threshold", type=float, default=0.5, help="minimum overlap of a true positive")
    parser.add_argument("--json", type=Path, help="write the metrics as JSON here")
    parser.add_argument("--out", type=Path, help="write metrics.json and pr_curves.png into this folder")
    parser.add_argument("--write-results", type=Path, help="with --run-dir/--model: also write comp4 results files here")
    parser.add_argument("--coco-results", type=Path, metavar="JSON",
                        help="with --metric coco: also write the COCO results JSON here")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--strict", action="store_true",
                        help="refuse the split on the first bad annotation (default: skip it and report)")
    parser.add_argument("--verbose", action="store_true", help="list every skipped annotation problem; "
                        "full tracebacks")
    return parser


def _detector(args: argparse.Namespace):
    """(detector callable, its class names or None, the input size it is fed at (None: original
    images), category ids or None)."""
    if args.run_dir:
        from ssd.modeling.inference import Detector
        from ssd.modeling.run_dir import load_trained_model

        model, config = load_trained_model(args.run_dir, args.checkpoint)
        return Detector(model, config).detect, config.class_names, config.image_size, config.category_ids
    from ssd.detections import EXPORT_INFO_FILE
    from ssd.deploy.frozen_graph import graph_input_size

    detector, class_names, path = load_chosen_model(args.model, args.precision)
    size = graph_input_size(path)
    if args.image_size is not None and size is not None and args.image_size != size:
        raise ValueError(f"--image-size {args.image_size}: the model {path} resizes to its input size {size} "
                         f"({EXPORT_INFO_FILE}), so images would be resized twice; omit --image-size or pass {size}")
    return detector, class_names or None, args.image_size, None


def evaluate(args: argparse.Namespace) -> tuple[dict, EvaluatorGroup]:
    """Load the split, run the chosen source through the metrics' evaluators; {family: results} and them."""
    if args.results_dir and "coco" in args.metric:
        raise ValueError("--results-dir holds VOC results files: use --metric voc07 voc10 with it")
    detector, class_names, size, category_ids = (None,) * 4 if args.results_dir else _detector(args)
    export = recognise(args.data_root, args.data_format, args.image_dir)
    splits = [export.split(args.split)] if args.split else (export.default_splits()[1] or export.default_splits()[0])
    args.split = ", ".join(s.name for s in splits)
    dataset = load_splits(export, splits, args.classes or class_names, strict=args.strict, verbose=args.verbose,
                          allow_missing=not args.classes, what="--classes" if args.classes else "the model's classes")
    evaluator = make_evaluator(args.metric, dataset.class_names, args.confidence_levels,
                               dataset.category_ids or category_ids, args.iou_threshold)
    if args.results_dir:
        voc = evaluator.evaluators["voc"]
        return {"voc": evaluate_results_files(args.results_dir, dataset, voc, args.prefix)}, evaluator
    results = evaluate_detector(detector, dataset, size, args.batch_size, evaluator, progress=not args.no_progress)
    if args.write_results and "voc" in evaluator.evaluators:
        paths = write_results_files(args.write_results, dataset.class_names,
                                    *evaluator.evaluators["voc"].devkit_detections(), prefix=args.prefix)
        print(f"wrote {len(paths)} results files to {args.write_results}")
    if args.coco_results and "coco" in evaluator.evaluators:
        args.coco_results.parent.mkdir(parents=True, exist_ok=True)
        args.coco_results.write_text(json.dumps(evaluator.evaluators["coco"].results_json()))
        print(f"wrote COCO results to {args.coco_results}")
    return results, evaluator


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args.verbose)
    try:
        return _run(args)
    except (ValueError, OSError) as error:  # bad data, graph, run directory or --out: one line, not a traceback
        if args.verbose:
            raise
        print(f"evaluate.py: error: {error}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    results, evaluator = evaluate(args)
    voc, coco = results.get("voc"), results.get("coco")
    print(f"{(voc or coco)['num_images']} images, {args.split} of {args.data_root}")
    if voc:
        print(format_table(voc))
    if coco:
        print(format_coco_table(coco))
    # VOC's numbers at the top level (as before COCO existed), COCO's under "coco".
    metrics = json.dumps({**(voc or {}), **({"coco": coco} if coco else {})}, indent=2) + "\n"
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(metrics)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "metrics.json").write_text(metrics)
        print(f"wrote {args.out / 'metrics.json'}")
        if voc:
            save_pr_curves(voc, evaluator.evaluators["voc"].pr_curves(), args.out / "pr_curves.png")
            print(f"wrote {args.out / 'pr_curves.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
