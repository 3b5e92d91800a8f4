"""Write the synthetic dataset of coloured shapes in VOC, COCO or YOLO format (see datasets/synthetic.py)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ssd_datasets.synthetic import SYNTHETIC_CLASSES, generate_synthetic
from ssd.records import DATA_FORMATS


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=(
            "Generate a dataset of coloured shapes "
            f"({', '.join(SYNTHETIC_CLASSES)}) on textured backgrounds with splits train, val, trainval "
            "and test. voc: JPEGImages/, Annotations/ (VOC XML), ImageSets/Main/<split>.txt; "
            "coco: images/, annotations/instances_<split>.json; yolo: images/, labels/, <split>.txt, "
            "data.yaml. One seed gives the same images and boxes in every format. Read it back with "
            "ssd_datasets.load_dataset(OUT, ['trainval']) or train on it with ssd-train --data-root OUT."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--format", choices=DATA_FORMATS, default="voc", help="annotation format")
    parser.add_argument("--out", type=Path, default=Path("data/synthetic"), help="output folder")
    parser.add_argument("--train", type=int, default=800, help="trainval images (90%% train, 10%% val)")
    parser.add_argument("--test", type=int, default=200, help="test images")
    parser.add_argument("--seed", type=int, default=0, help="same seed, same bytes")
    parser.add_argument("--min-size", type=int, default=300, help="smallest image width/height")
    parser.add_argument("--max-size", type=int, default=500, help="largest image width/height")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        generate_synthetic(
            args.out, args.format, args.train, args.test, args.seed,
            image_size_range=(args.min_size, args.max_size), progress=not args.quiet,
        )  # fmt: skip
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {args.train} trainval + {args.test} test images ({args.format}) to {args.out.resolve()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
