"""Benchmark: `datasets.voc.load_voc` against a naive xml.etree.ElementTree loader, side by side.

Generates a VOC-format tree of N annotation files (VOC07+12 trainval has 16,551) with VOC-like
content (1-6 objects, source/owner blocks), empty JPEG placeholders (the size comes from the
XML), then times both loaders over the same files and reports medians, files/s and the ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import xml.etree.ElementTree as ElementTree
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `python tools/x.py` from anywhere

import numpy as np  # noqa: E402

from datasets.voc import VOC_CLASSES, load_voc  # noqa: E402

_OBJECT = """\t<object>
\t\t<name>{name}</name>
\t\t<pose>Unspecified</pose>
\t\t<truncated>{truncated}</truncated>
\t\t<difficult>{difficult}</difficult>
\t\t<bndbox>
\t\t\t<xmin>{xmin}</xmin>
\t\t\t<ymin>{ymin}</ymin>
\t\t\t<xmax>{xmax}</xmax>
\t\t\t<ymax>{ymax}</ymax>
\t\t</bndbox>
\t</object>
"""
_HEADER = """<annotation>
\t<folder>VOC2007</folder>
\t<filename>{stem}.jpg</filename>
\t<source>
\t\t<database>The VOC2007 Database</database>
\t\t<annotation>PASCAL VOC2007</annotation>
\t\t<image>flickr</image>
\t\t<flickrid>{flickrid}</flickrid>
\t</source>
\t<owner>
\t\t<flickrid>someone</flickrid>
\t\t<name>Someone</name>
\t</owner>
\t<size>
\t\t<width>{width}</width>
\t\t<height>{height}</height>
\t\t<depth>3</depth>
\t</size>
\t<segmented>0</segmented>
"""


def make_tree(root: Path, num_files: int, seed: int = 0) -> None:
    """A VOC-format folder with `num_files` random annotations and empty JPEG placeholders."""
    rng = np.random.default_rng(seed)
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    stems = [f"{i:06d}" for i in range(num_files)]
    for stem in stems:
        width, height = int(rng.integers(300, 501)), int(rng.integers(300, 501))
        parts = [_HEADER.format(stem=stem, flickrid=rng.integers(1e9), width=width, height=height)]
        for _ in range(rng.integers(1, 7)):
            xmin, ymin = int(rng.integers(1, width - 10)), int(rng.integers(1, height - 10))
            parts.append(_OBJECT.format(
                name=VOC_CLASSES[rng.integers(20)], truncated=int(rng.random() < 0.3),
                difficult=int(rng.random() < 0.1), xmin=xmin, ymin=ymin,
                xmax=int(rng.integers(xmin + 1, width + 1)), ymax=int(rng.integers(ymin + 1, height + 1)),
            ))  # fmt: skip
        parts.append("</annotation>\n")
        (root / "Annotations" / f"{stem}.xml").write_text("".join(parts))
        (root / "JPEGImages" / f"{stem}.jpg").touch()
    (root / "ImageSets" / "Main" / "trainval.txt").write_text("".join(s + "\n" for s in stems))


def naive_load(root: Path, split: str) -> list[tuple[str, int, int, np.ndarray, np.ndarray, np.ndarray]]:
    """The obvious loader: ElementTree per file, os.path.exists per image, no validation."""
    class_ids = {name: i + 1 for i, name in enumerate(VOC_CLASSES)}
    ids = (root / "ImageSets" / "Main" / f"{split}.txt").read_text().split()
    samples = []
    for stem in ids:
        if not os.path.exists(root / "JPEGImages" / f"{stem}.jpg"):
            continue
        tree = ElementTree.parse(root / "Annotations" / f"{stem}.xml")
        size = tree.find("size")
        boxes, labels, difficult = [], [], []
        for obj in tree.findall("object"):
            box = obj.find("bndbox")
            boxes.append([float(box.find(t).text) for t in ("xmin", "ymin", "xmax", "ymax")])
            labels.append(class_ids[obj.find("name").text.strip()])
            difficult.append(obj.find("difficult").text == "1")
        boxes = np.array(boxes, np.float32).reshape(-1, 4) - np.array([1, 1, 0, 0], np.float32)
        samples.append((stem, int(size.find("width").text), int(size.find("height").text),
                        boxes, np.array(labels, np.int32), np.array(difficult, bool)))  # fmt: skip
    return samples


def median_seconds(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def run(root: Path, repeats: int) -> dict:
    ours = load_voc(root, ["trainval"])
    naive = naive_load(root, "trainval")
    same = len(ours) == len(naive) and all(
        s.image_id == stem and np.array_equal(s.boxes, boxes) and np.array_equal(s.labels, labels)
        for s, (stem, _, _, boxes, labels, _) in zip(ours.samples, naive)
    )
    if not same:
        raise RuntimeError(f"the two loaders disagree on {root}: the comparison would be meaningless")
    num_files = len(ours)
    t_ours = median_seconds(lambda: load_voc(root, ["trainval"]), repeats)
    t_naive = median_seconds(lambda: naive_load(root, "trainval"), repeats)
    return {
        "num_files": num_files,
        "repeats": repeats,
        "load_voc_s": t_ours,
        "naive_elementtree_s": t_naive,
        "load_voc_files_per_s": num_files / t_ours,
        "naive_files_per_s": num_files / t_naive,
        "speedup": t_naive / t_ours,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--num-files", type=int, default=16551, help="annotation files to generate")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per loader (median reported)")
    parser.add_argument("--workdir", type=Path, default=None, help="where to write the tree (default: a temp dir)")
    parser.add_argument("--json", type=Path, default=None, metavar="PATH", help="also write the results as JSON")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        root = args.workdir or Path(tmp) / "voc"
        if not (root / "ImageSets" / "Main" / "trainval.txt").is_file():
            print(f"writing {args.num_files} annotation files to {root} ...")
            make_tree(root, args.num_files)
        result = run(root, args.repeats)
    print(f"\nVOC annotation parsing, {result['num_files']} files, median of {args.repeats} runs")
    print(f"{'loader':<28}{'seconds':>10}{'files/s':>12}{'ratio':>8}")
    print(f"{'datasets.voc.load_voc (lxml)':<28}{result['load_voc_s']:>10.3f}"
          f"{result['load_voc_files_per_s']:>12,.0f}{result['speedup']:>8.2f}")  # fmt: skip
    print(f"{'naive ElementTree':<28}{result['naive_elementtree_s']:>10.3f}"
          f"{result['naive_files_per_s']:>12,.0f}{1.0:>8.2f}")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
