"""Pascal VOC evaluation (devkit-exact AP, VOC2007 11-point and VOC2010+ area) at several confidence levels.

Evaluate one of:
  a trained run directory      python tools/evaluate.py --run-dir runs/ssd300 --data-root VOCdevkit --split VOC2007:test
  an exported frozen graph     python tools/evaluate.py --graph export/ssd300 --data-root VOCdevkit --split VOC2007:test
  any detector's results files python tools/evaluate.py --results-dir results/ --data-root VOCdevkit --split VOC2007:test

Results files are `comp4_det_test_<class>.txt` (lines `image_id score xmin ymin xmax ymax`,
1-based pixels). Prints AP per class and level; --out writes metrics.json and pr_curves.png,
--write-results writes the detections as results files for the VOC evaluation server.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `datasets` (not installed) importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from datasets import load_dataset  # noqa: E402
from ssd.cli import configure_logging  # noqa: E402
from ssd.evaluation.loop import evaluate_detector, evaluate_results_files  # noqa: E402
from ssd.evaluation.report import format_table, save_pr_curves  # noqa: E402
from ssd.evaluation.voc import VOCEvaluator  # noqa: E402
from ssd.evaluation.results_files import COMP4_PREFIX, write_results_files  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--run-dir", type=Path, help="a training run directory (config.json + checkpoints)")
    source.add_argument("--graph", type=Path, help="an export directory or its frozen_inference_graph.pb")
    source.add_argument("--results-dir", type=Path, help="folder with one <prefix><class>.txt file per class")
    parser.add_argument("--checkpoint", choices=("best", "latest"), default="best",
                        help="with --run-dir: which checkpoint (default: best, else latest)")
    parser.add_argument("--image-size", type=int, default=300,
                        help="with --graph: the size images are batched at (default: 300)")
    parser.add_argument("--batch-size", type=int, default=16, help="images per detector call (default: 16)")
    parser.add_argument("--prefix", default=COMP4_PREFIX, help=f"results file name prefix (default: {COMP4_PREFIX})")
    parser.add_argument("--data-root", type=Path, required=True,
                        help="VOC-format dataset: a VOCdevkit folder or one VOC-style folder")
    parser.add_argument("--split", default="VOC2007:test",
                        help='image set: "VOC2007:test" under a VOCdevkit, or "test" for a plain folder')
    parser.add_argument("--classes", help="class names, comma-separated or a file (default: the run's or "
                        "graph's labels, else <data-root>/classes.txt, else the 20 VOC classes)")
    parser.add_argument("--confidence-levels", type=float, nargs="+", default=[0.01, 0.1, 0.3, 0.5],
                        help="evaluate the detections with score >= each level (default: 0.01 0.1 0.3 0.5)")
    parser.add_argument("--iou-threshold", type=float, default=0.5, help="minimum overlap of a true positive")
    parser.add_argument("--json", type=Path, help="write the metrics as JSON here")
    parser.add_argument("--out", type=Path, help="write metrics.json and pr_curves.png into this folder")
    parser.add_argument("--write-results", type=Path, help="with --run-dir/--graph: also write comp4 results files here")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def _detector(args: argparse.Namespace):
    """(detector callable, its class names or None, the input size it is batched at)."""
    if args.run_dir:
        from ssd.modeling.inference import Detector
        from ssd.modeling.run_dir import load_trained_model

        model, config = load_trained_model(args.run_dir, args.checkpoint)
        return Detector(model, config).detect, config.class_names, config.image_size
    from ssd.deploy.frozen_graph import FrozenGraph, labels_for, resolve_graph_path

    path = resolve_graph_path(args.graph)
    return FrozenGraph(path), labels_for(path) or None, args.image_size


def evaluate(args: argparse.Namespace) -> tuple[dict, VOCEvaluator]:
    """Load the split, run the chosen source through a VOCEvaluator; its results and itself."""
    detector, class_names, size = (None, None, None) if args.results_dir else _detector(args)
    dataset = load_dataset(args.data_root, [args.split], args.classes or class_names)
    evaluator = VOCEvaluator(dataset.class_names, args.confidence_levels, args.iou_threshold)
    if args.results_dir:
        return evaluate_results_files(args.results_dir, dataset, evaluator, args.prefix), evaluator
    results = evaluate_detector(detector, dataset, size, args.batch_size, evaluator, progress=not args.no_progress)
    if args.write_results:
        paths = write_results_files(args.write_results, dataset.class_names, *evaluator.devkit_detections(),
                                    prefix=args.prefix)
        print(f"wrote {len(paths)} results files to {args.write_results}")
    return results, evaluator


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging()
    results, evaluator = evaluate(args)
    print(f"{results['num_images']} images, {args.split} of {args.data_root}")
    print(format_table(results))
    metrics = json.dumps(results, indent=2) + "\n"
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(metrics)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "metrics.json").write_text(metrics)
        save_pr_curves(results, evaluator.pr_curves(), args.out / "pr_curves.png")
        print(f"wrote {args.out / 'metrics.json'} and {args.out / 'pr_curves.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
