"""Pascal VOC evaluation (devkit-exact AP, VOC2007 11-point and VOC2010+ area) at several confidence levels.

    python tools/evaluate.py --results-dir results/ --data-root VOCdevkit --split VOC2007:test --out eval/

reads `comp4_det_test_<class>.txt` files (lines `image_id score xmin ymin xmax ymax`, 1-based
pixels), prints AP per class and level, and writes metrics.json and pr_curves.png.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `datasets` (not installed) importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from datasets.voc import VOC_CLASSES, load_voc  # noqa: E402
from ssd.evaluate_loop import evaluate_results_files  # noqa: E402
from ssd.evaluation import VOCEvaluator, format_table, json_ready, save_pr_curves  # noqa: E402
from ssd.results_files import COMP4_PREFIX  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--results-dir", type=Path, required=True,
                        help="folder with one <prefix><class>.txt results file per class")
    parser.add_argument("--prefix", default=COMP4_PREFIX, help="results file name prefix")
    parser.add_argument("--data-root", type=Path, required=True,
                        help="VOC-format dataset: a VOCdevkit folder or one VOC-style folder")
    parser.add_argument("--split", default="VOC2007:test",
                        help='image set: "VOC2007:test" under a VOCdevkit, or "test" for a plain folder')
    parser.add_argument("--class-names", default=",".join(VOC_CLASSES),
                        help="comma-separated classes, ids 1..C in this order")
    parser.add_argument("--confidence-levels", type=float, nargs="+", default=[0.01, 0.1, 0.3, 0.5],
                        help="evaluate the detections with score >= each level")
    parser.add_argument("--iou-threshold", type=float, default=0.5, help="minimum overlap of a true positive")
    parser.add_argument("--json", type=Path, help="write the metrics as JSON here")
    parser.add_argument("--out", type=Path, help="write metrics.json and pr_curves.png into this folder")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    class_names = tuple(n.strip() for n in args.class_names.split(",") if n.strip())
    dataset = load_voc(args.data_root, [args.split], class_names)
    evaluator = VOCEvaluator(class_names, args.confidence_levels, args.iou_threshold)
    results = evaluate_results_files(args.results_dir, dataset, evaluator, args.prefix)
    print(f"{results['num_images']} images, {args.split} of {args.data_root}")
    print(format_table(results))
    metrics = json.dumps(json_ready(results), indent=2) + "\n"
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(metrics)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "metrics.json").write_text(metrics)
        save_pr_curves(results, args.out / "pr_curves.png")
        print(f"wrote {args.out / 'metrics.json'} and {args.out / 'pr_curves.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
