"""Convert a published trained SSD (Caffe .caffemodel, ssd.pytorch .pth, ssd_keras .h5) into a run directory.

    python tools/convert_weights.py VGG_VOC0712_SSD_300x300_iter_120000.caffemodel --run-dir runs/caffe300
    python tools/convert_weights.py ssd300_mAP_77.43_v2.pth --run-dir runs/pytorch300

The run directory (config.json + best/ checkpoint) works with tools/evaluate.py --run-dir,
export_graph.py, detect.py and train_detector.py --init-from. Preset and class count are read
from the file; the VOC models' 20 classes are the default names. No Caffe or PyTorch is needed.
ImageNet bases (VGG_ILSVRC_16_layers_fc_reduced.caffemodel, vgg16_reducedfc.pth) are not
converted: pass them to train_detector.py --base-weights.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ssd_datasets import parse_class_names
from ssd_datasets.voc import VOC_CLASSES
from ssd.cli import configure_logging
from ssd.config import BOX_SETS


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("weights", type=Path, help="a .caffemodel, .pth or ssd_keras .h5 file of a trained SSD300 / SSD512")
    p.add_argument("--run-dir", type=Path, required=True, help="the run directory to create")
    p.add_argument("--classes", help="the model's class names in output order, comma-separated or a file "
                                     "(default: the 20 VOC classes)")
    p.add_argument("--boxes", choices=tuple(BOX_SETS), default="voc",
                   help="the default boxes the model was trained with: the Caffe VOC or COCO configuration "
                        "(default: voc)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging()
    from ssd.modeling.convert.convert import convert_to_run_dir

    try:
        classes = parse_class_names(args.classes) if args.classes else VOC_CLASSES
        lines = convert_to_run_dir(args.weights, args.run_dir, classes, args.boxes)
    except (ValueError, FileNotFoundError) as error:
        print(f"convert_weights.py: error: {error}", file=sys.stderr)
        return 2
    print(f"{args.weights} -> {args.run_dir} ({len(lines)} layers):")
    print("\n".join(f"  {line}" for line in lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
